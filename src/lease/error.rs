//! The lease engine's errors: why a grant is refused (mapped to wire errors in
//! `proxy/error.rs`) and why an API renewal is (mapped to HTTP statuses in `admin/leases.rs`).

use super::store::JournalError;
use crate::provision::ProvisionError;

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    /// Only an active lease can be renewed (HTTP 409).
    #[error("lease is {0}, not active")]
    NotActive(&'static str),
    /// The renew statements failed (HTTP 503).
    #[error(transparent)]
    Provision(ProvisionError),
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// leasegate is shutting down and grants no new lease (SQLSTATE 57P03).
    #[error("leasegate is shutting down")]
    ShuttingDown,
    /// `max_leases` of the role reached, or no mint slot freed within `connect_timeout`
    /// (SQLSTATE 53300, what a server says when it has too many connections).
    #[error("too many leases: {0}")]
    TooMany(&'static str),
    /// The role or its database vanished from the config (cannot happen after validation).
    #[error("role {0:?} is not configured")]
    UnknownRole(String),
    /// The journal could not record the intent, so no user was created.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The user could not be created; the cause is in `source`.
    #[error("could not create a database user: {source}")]
    Mint { source: ProvisionError },
}
