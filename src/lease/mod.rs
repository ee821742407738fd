//! Leases: a minted database user and how long it may live.
//!
//! A [`Lease`] is shared by the sessions that use it; each holds a [`SessionGuard`] whose drop
//! tells the [`LeaseManager`] the session is gone. Who owns what in here:
//!
//! - `state`: one lease's life — the [`LeaseState`] behind the lease's one lock, every
//!   transition, and the [`Signal`]s sessions wait on (fired only by those transitions);
//! - `manager`: the manager handle, what it shares between tasks, lookups, shutdown's gate;
//! - `grant`: admission (shutdown, `max_leases`, mint slots), joining an identity's lease,
//!   minting, and undoing a mint that failed;
//! - `deadlines`: each lease's timers (renew, expire, max TTL, hard close, idle grace) and what
//!   happens when one fires or a session leaves;
//! - `renew`: moving expiry forward, automatically while sessions live and through the API;
//! - `revoke`: ending leases (stop sessions, drop the user), retried with backoff until done;
//! - `records`: what is written about a lease — store rows, audit events, counters;
//! - `collector`: the lease gauges, computed at scrape time;
//! - `store` (the [`LeaseStore`] trait), `journal` (SQLite, one instance), `pg_journal`
//!   (Postgres, shared by many), `memory` (tests);
//! - `fleet`: heartbeats, taking over dead instances' leases, being fenced, revocation requests;
//! - `scheduler`: the one timer structure; `recovery`: what a previous run left behind.
//!
//! Left to others: the SQL and its dialects (`provision` and each protocol's provisioner), the
//! byte relay (`proxy`, which waits on `ended` and `drain`), generated names (`name`),
//! readiness of the admin connections (`provision::admin_connections_ok`).

mod collector;
mod deadlines;
mod error;
mod fleet;
mod grant;
pub mod journal;
mod manager;
#[cfg(test)]
pub mod memory;
pub mod pg_journal;
mod records;
pub mod recovery;
mod renew;
mod revoke;
pub mod scheduler;
mod state;
pub mod store;
#[cfg(test)]
mod tests;

pub use error::{LeaseError, RenewError};
pub use manager::LeaseManager;
pub use state::{DrainReason, LeaseState, Signal};
pub use store::{JournalError, JournalRow, LeaseStore, StoreHealth};

use crate::auth::Identity;
use crate::secret::Secret;
use state::Life;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Why a lease ended (the contract's `reason` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Expired,
    MaxTtl,
    Closed,
    Revoked,
    Shutdown,
    Recovered,
    Orphan,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::MaxTtl => "max_ttl",
            EndReason::Closed => "closed",
            EndReason::Revoked => "revoked",
            EndReason::Shutdown => "shutdown",
            EndReason::Recovered => "recovered",
            EndReason::Orphan => "orphan",
        }
    }
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub struct Lease {
    pub id: String,
    pub identity: Identity,
    /// The `[[database]]` this lease belongs to.
    pub database: String,
    /// The minted database user.
    pub user: String,
    pub password: Secret,
    /// Who caused the grant and how they proved it (none for recovered leases), for the audit log.
    pub origin: Option<crate::auth::Origin>,
    pub granted_at: SystemTime,
    /// Hard end: no renewal goes past it.
    pub max_expires_at: SystemTime,
    /// Fired when the lease ends: its sessions close now.
    pub ended: Signal,
    /// Fired at max TTL or shutdown: its sessions close at their next idle point.
    pub drain: Signal<DrainReason>,
    /// Tokio time at `granted_at`. Deadlines are Tokio instants (so paused-time tests drive
    /// them); the wall-clock times shown and journaled are derived from them through this pair.
    granted: Instant,
    max_deadline: Instant,
    life: Mutex<Life>,
}

/// What a new lease is made of.
struct NewLease {
    id: String,
    identity: Identity,
    database: String,
    user: String,
    password: Secret,
    origin: Option<crate::auth::Origin>,
    ttl: Duration,
    max_ttl: Duration,
}

impl Lease {
    /// A lease about to be minted (`Minting`), with the minting session attached and one unit
    /// of its role's `max_leases` held.
    fn minting(new: NewLease) -> Arc<Lease> {
        let granted = Instant::now();
        let expires = granted + new.ttl.min(new.max_ttl);
        Lease::build(new, granted, Life::minting(expires))
    }

    /// A lease for a user this process did not mint (`Revoking`, no session): it only exists
    /// to be revoked (recovery, orphans).
    fn unfinished(id: String, identity: Identity, database: String, user: String) -> Arc<Lease> {
        let new = NewLease {
            id,
            identity,
            database,
            user,
            password: Secret::new(""),
            origin: None,
            ttl: Duration::ZERO,
            max_ttl: Duration::ZERO,
        };
        let granted = Instant::now();
        Lease::build(new, granted, Life::unfinished(granted))
    }

    /// A live lease another instance issued to a remote sidecar, taken over when that
    /// instance died: its times are the row's (wall clock turned into Tokio instants now).
    fn adopted(row: &JournalRow) -> Arc<Lease> {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let at = |t: SystemTime| now + t.duration_since(wall).unwrap_or_default();
        let granted = now.checked_sub(wall.duration_since(row.granted_at).unwrap_or_default()).unwrap_or(now);
        Arc::new(Lease {
            id: row.id.clone(),
            identity: Identity { client: row.client.clone(), role: row.role.clone() },
            database: row.database.clone(),
            user: row.db_user.clone(),
            // Not needed: renewal and revocation run as the admin; the sidecar has the password.
            password: Secret::new(""),
            origin: None,
            granted_at: row.granted_at,
            max_expires_at: row.max_expires_at,
            ended: Signal::new(),
            drain: Signal::new(),
            granted,
            max_deadline: at(row.max_expires_at),
            life: Mutex::new(Life::adopted(at(row.expires_at))),
        })
    }

    fn build(new: NewLease, granted: Instant, life: Life) -> Arc<Lease> {
        let granted_at = SystemTime::now();
        Arc::new(Lease {
            id: new.id,
            identity: new.identity,
            database: new.database,
            user: new.user,
            password: new.password,
            origin: new.origin,
            granted_at,
            max_expires_at: granted_at + new.max_ttl,
            ended: Signal::new(),
            drain: Signal::new(),
            granted,
            max_deadline: granted + new.max_ttl,
            life: Mutex::new(life),
        })
    }

    /// The wall-clock time of the Tokio instant `at` (for the journal, API and audit log).
    fn wall(&self, at: Instant) -> SystemTime {
        self.granted_at + at.saturating_duration_since(self.granted)
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).field("identity", &self.identity).field("user", &self.user).finish_non_exhaustive()
    }
}

/// Held by each session using a lease; dropping it tells the manager the session is gone.
pub struct SessionGuard {
    lease: Arc<Lease>,
    manager: LeaseManager,
    detached: bool,
}

impl SessionGuard {
    fn new(lease: Arc<Lease>, manager: LeaseManager) -> SessionGuard {
        SessionGuard { lease, manager, detached: false }
    }

    pub fn lease(&self) -> &Arc<Lease> {
        &self.lease
    }

    /// Lets the lease live on without this session (credentials handed out for direct use):
    /// it then ends at its expiry, is not renewed, and can be revoked through the API.
    pub fn detach(mut self) -> Arc<Lease> {
        self.detached = true;
        self.lease.leave();
        self.lease.clone()
    }

    /// Records the database the session uses (journaled, for clean-up at revocation). The
    /// journal write runs in the background: it is not on the login's path (a shared store is
    /// a network round trip away), and revocation finds the databases that hold something of
    /// the user from `pg_shdepend` anyway.
    pub fn note_database(&self, database: &str) {
        if self.lease.note_database(database) {
            let (manager, lease) = (self.manager.clone(), self.lease.clone());
            self.manager.inner.tasks.spawn(async move { manager.journal_databases(&lease).await });
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        self.manager.session_closed(&self.lease);
    }
}
