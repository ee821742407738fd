//! What the lease engine asks of a database server — create a user, move its expiry, end its
//! sessions, drop it — whatever the server's kind. The SQL lives with each protocol
//! (`pg/provision.rs`, `mysql/provision.rs`); this enum only dispatches, so the lease engine
//! is written once.

use crate::config::RoleConfig;
use crate::mysql::provision::MyProvisioner;
use crate::pg::provision::PgProvisioner;
use crate::secret::Secret;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// No admin connection could be had: the statement was never sent.
    #[error("admin connection to {addr} failed: {message}")]
    Unreachable { addr: String, message: String },
    /// The admin connection was lost or stalled while a statement ran: its outcome is unknown.
    #[error("admin connection to {addr} failed: {message}")]
    Connect { addr: String, message: String },
    /// The server refused a statement (missing privilege, template error, …). `code` is the
    /// SQLSTATE (Postgres) or the error number (MySQL).
    #[error("{step} failed: {message} ({code})")]
    Statement { step: &'static str, code: String, message: String },
    /// Sessions of the user were still alive after they were told to terminate.
    #[error("sessions of the user did not end within {0:?}")]
    SessionsLinger(Duration),
}

/// Postgres SQLSTATE undefined_object: "role … does not exist".
const PG_UNDEFINED_OBJECT: &str = "42704";
/// MySQL ER_CANNOT_USER: "Operation ALTER USER failed for …" (no such user).
const MY_CANNOT_USER: &str = "1396";

impl ProvisionError {
    /// True when the failure means the user is already gone: revocation is complete.
    pub fn user_is_gone(&self) -> bool {
        matches!(self, ProvisionError::Statement { code, .. } if code == PG_UNDEFINED_OBJECT || code == MY_CANNOT_USER)
    }
}

pub enum Provisioner {
    Postgres(std::sync::Arc<PgProvisioner>),
    Mysql(std::sync::Arc<MyProvisioner>),
}

/// Calls the same method on whichever provisioner this is.
macro_rules! each {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Provisioner::Postgres($p) => $e,
            Provisioner::Mysql($p) => $e,
        }
    };
}

impl Provisioner {
    /// Opens an admin connection and runs a trivial query: the health check used at start.
    pub async fn check(&self) -> Result<(), ProvisionError> {
        each!(self, p => p.check().await)
    }

    /// The longest user name the server accepts (MySQL: probed once from the server).
    pub async fn max_user_len(&self) -> Result<usize, ProvisionError> {
        match self {
            Provisioner::Postgres(_) => Ok(crate::pg::provision::MAX_USER_LEN),
            Provisioner::Mysql(p) => p.max_user_len().await,
        }
    }

    /// False when a failed mint may have left the user behind (MySQL DDL commits statement by
    /// statement; a Postgres batch is one transaction).
    pub fn mint_is_atomic(&self) -> bool {
        matches!(self, Provisioner::Postgres(_))
    }

    pub async fn mint(&self, role: &RoleConfig, user: &str, password: &Secret, valid_until: SystemTime) -> Result<(), ProvisionError> {
        each!(self, p => p.mint(role, user, password, valid_until).await)
    }

    pub async fn renew(&self, role: &RoleConfig, user: &str, valid_until: SystemTime) -> Result<(), ProvisionError> {
        each!(self, p => p.renew(role, user, valid_until).await)
    }

    pub async fn users_with_prefix(&self, prefix: &str) -> Result<Vec<String>, ProvisionError> {
        each!(self, p => p.users_with_prefix(prefix).await)
    }

    pub async fn rollback(&self, role: &RoleConfig, user: &str) -> Result<(), ProvisionError> {
        each!(self, p => p.rollback(role, user).await)
    }

    pub async fn stop_sessions(&self, user: &str) -> Result<(), ProvisionError> {
        each!(self, p => p.stop_sessions(user).await)
    }

    pub async fn wait_sessions_gone(&self, user: &str, limit: Duration) -> Result<(), ProvisionError> {
        each!(self, p => p.wait_sessions_gone(user, limit).await)
    }

    pub async fn drop_user(&self, role: &RoleConfig, user: &str, used: &BTreeSet<String>) -> Result<(), ProvisionError> {
        each!(self, p => p.drop_user(role, user, used).await)
    }

    pub async fn close(&self) {
        each!(self, p => p.close().await)
    }
}
