//! The lease store: where every lease is recorded before its user is created (intent) and at
//! every state change, so a restart knows every user leasegate may have created. What the
//! lease engine needs of it is the [`LeaseStore`] trait; `journal` (SQLite, one instance per
//! file) is the real one, `memory` an in-memory one for unit tests under paused time (where
//! sqlx's SQLite worker thread would make the runtime skip time ahead while it waits).
//!
//! States are the contract's names (`minting`, `active`, `revoking`, `revoke_failed`,
//! `ended`), as `LeaseState::as_str` gives them.
//!
//! Two stores are real: `journal` (SQLite, one instance per file, which owns every row) and
//! `pg_journal` (Postgres, shared by many instances, DESIGN §2b). In the shared one every row
//! has an owning instance and that owner's epoch (its fencing token); a write by an instance
//! that no longer owns the row is refused with [`JournalError::NotOwner`], and what only a
//! shared store does (heartbeats, taking over a dead instance's leases, revocation requests
//! between instances) is behind [`LeaseStore::fleet`].

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
    /// The shared store says another instance owns this lease now (it took it over when this
    /// one was silent), or this instance was declared dead: the write was not made.
    #[error("lease journal: this lease belongs to another instance now")]
    NotOwner,
    /// The store is unreachable; the write is queued and made, in order, when it answers.
    #[error("lease journal: the store is unreachable; the write is queued")]
    Queued,
}

/// What the store's reachability looks like, for `/readyz` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreHealth {
    /// The last round trip to the store succeeded.
    pub reachable: bool,
    /// Writes waiting for the store to come back.
    pub queued_writes: usize,
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
    /// The instance that owns the lease (the one whose sessions use it, or that revokes it).
    pub instance: String,
    /// The remote sidecar the lease was issued to (an issuer's lease): its sessions live there,
    /// so an instance taking it over keeps it (a shared store only).
    pub held_by: Option<String>,
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
    /// The remote sidecar it is issued to, if any.
    pub held_by: Option<&'a str>,
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

    /// Every lease not ended, of every instance sharing the store (the admin API's list).
    fn open_leases(&self) -> StoreFuture<'_, Vec<JournalRow>>;

    /// The instances whose marks the orphan sweep may act on: this one, and with a shared
    /// store every instance registered in it (their open leases are all in `open_users`).
    fn known_instances(&self) -> StoreFuture<'_, HashSet<String>> {
        Box::pin(async move { Ok(HashSet::from([self.instance().to_string()])) })
    }

    /// Reachability and queued writes; a local file is always reachable.
    fn health(&self) -> StoreHealth {
        StoreHealth { reachable: true, queued_writes: 0 }
    }

    /// Whether this instance may still act on its leases without asking the store: true
    /// unless a shared store has not confirmed this instance alive for `takeover_after`
    /// (another instance may have taken its leases over by now).
    fn may_act(&self) -> bool {
        true
    }

    /// What only a store shared by many instances does.
    fn fleet(&self) -> Option<&dyn FleetStore> {
        None
    }

    /// Closes the store (shutdown); every write has already been made durable.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// This instance is registered and alive, at its current epoch.
    Alive,
    /// This instance was declared dead (its leases are being taken over), or another process
    /// registered with its id: it owns nothing any more.
    Fenced,
}

/// A lease claimed from a dead instance: the row and who owned it.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub row: JournalRow,
    pub from: String,
}

/// The shared store's part: instances, heartbeats on the store's clock, takeover, revocation
/// requests between instances.
pub trait FleetStore: Send + Sync {
    /// Renews this instance's heartbeat (and flushes queued writes first).
    fn heartbeat(&self) -> StoreFuture<'_, Beat>;

    /// Declares dead every instance silent for `after`, then claims (moves to this instance,
    /// row-locked, `SKIP LOCKED`) the unfinished leases of dead instances, at most `limit`.
    fn claim_dead(&self, after: Duration, limit: i64) -> StoreFuture<'_, Vec<Claimed>>;

    /// Registers this instance again with a new epoch (after it was fenced).
    fn reregister(&self) -> StoreFuture<'_, ()>;

    /// Leases of this instance that another instance's API asked to revoke.
    fn revoke_requests(&self) -> StoreFuture<'_, Vec<String>>;

    /// Asks the owner of an open lease to revoke it; false when no open lease has this id.
    fn request_revoke<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;

    /// This instance stopped cleanly: its row says so (nothing is left to take over).
    fn deregister(&self) -> StoreFuture<'_, ()>;

    /// The open lease of `db_user`, whichever instance owns it.
    fn find_user<'a>(&'a self, db_user: &'a str) -> StoreFuture<'a, Option<JournalRow>>;

    /// Moves an active lease's expiry (never earlier) for an instance that renewed it without
    /// owning it; the owner reads it before expiring the lease. False when it is not active.
    fn extend<'a>(&'a self, id: &'a str, expires_at: SystemTime) -> StoreFuture<'a, bool>;
}
