//! The lease store: where every lease is recorded before its user is created (intent) and at
//! every state change, so a restart knows every user leasegate may have created. What the
//! lease engine needs of it is the [`LeaseStore`] trait; `journal` (SQLite, one instance per
//! file) is the real one, `memory` an in-memory one for unit tests under paused time (where
//! sqlx's SQLite worker thread would make the runtime skip time ahead while it waits).
//!
//! States are the contract's names (`minting`, `active`, `revoking`, `revoke_failed`,
//! `ended`), as `LeaseState::as_str` gives them.
//!
//! Shaped for a shared store too (DESIGN §2b: a Postgres journal for many instances): rows are
//! keyed by lease id alone, every method is one self-contained write or read, and
//! [`LeaseStore::unfinished`] means "the leases *this instance* must revoke at start". A shared
//! store will add the owning instance to the intent, heartbeats and takeover; the single-file
//! store owns every row.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The database behind the store failed (SQLite: file unwritable, locked past its busy
    /// timeout, corrupt).
    #[error("lease journal: {0}")]
    Sql(#[from] sqlx::Error),
    /// The store could not take the write for a reason of its own (the in-memory store told to
    /// fail, in tests).
    #[error("lease journal: {0}")]
    Unavailable(String),
}

/// What a journal row says about a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    pub id: String,
    pub database: String,
    pub role: String,
    pub client: String,
    pub db_user: String,
    pub state: String,
    pub end_reason: Option<String>,
    pub last_error: Option<String>,
    pub used_databases: BTreeSet<String>,
    pub granted_at: SystemTime,
    pub expires_at: SystemTime,
    pub max_expires_at: SystemTime,
}

/// What is written when a lease is granted.
#[derive(Clone, Copy)]
pub struct Intent<'a> {
    pub id: &'a str,
    pub database: &'a str,
    pub role: &'a str,
    pub client: &'a str,
    pub db_user: &'a str,
    pub granted_at: SystemTime,
    pub expires_at: SystemTime,
    pub max_expires_at: SystemTime,
}

/// What every store method returns: boxed so the trait stays dyn-compatible.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, JournalError>> + Send + 'a>>;

/// Every write is durable when its future resolves: the engine relies on the intent being
/// stored before it creates the user.
pub trait LeaseStore: Send + Sync {
    /// The id this instance marks on the users it mints (the sweep drops only users with it).
    fn instance(&self) -> &str;

    /// Records a lease in state `minting`, before its user is created.
    fn intent<'a>(&'a self, intent: &'a Intent<'a>) -> StoreFuture<'a, ()>;

    /// Records a user found with our prefix that no lease knew (state `revoking`), before it is
    /// dropped.
    fn orphan_intent<'a>(&'a self, id: &'a str, database: &'a str, role: &'a str, db_user: &'a str) -> StoreFuture<'a, ()>;

    /// A new state; `last_error` replaces the stored error when given, keeps it otherwise.
    fn set_state<'a>(&'a self, id: &'a str, state: &'a str, last_error: Option<&'a str>) -> StoreFuture<'a, ()>;

    fn renewed<'a>(&'a self, id: &'a str, expires_at: SystemTime) -> StoreFuture<'a, ()>;

    /// The databases the lease's sessions used (clean-up at revocation needs them).
    fn used_databases<'a>(&'a self, id: &'a str, databases: &'a BTreeSet<String>) -> StoreFuture<'a, ()>;

    /// State `ended`, with the contract's reason.
    fn ended<'a>(&'a self, id: &'a str, reason: &'a str) -> StoreFuture<'a, ()>;

    /// Every lease not ended that this instance must revoke at start, oldest first.
    fn unfinished(&self) -> StoreFuture<'_, Vec<JournalRow>>;

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<JournalRow>>;

    /// Users that a lease not yet ended may own, on any database and of any instance (Postgres
    /// roles are cluster-wide, so two `[[database]]`s on one server see each other's users).
    fn open_users(&self) -> StoreFuture<'_, HashSet<String>>;

    /// Deletes leases that ended more than `retain` ago; returns how many.
    fn prune(&self, retain: Duration) -> StoreFuture<'_, u64>;

    /// Closes the store (shutdown); every write has already been made durable.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}
