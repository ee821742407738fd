//! Leases: a minted database user and how long it may live.
//!
//! `manager` grants leases (mint), ends them (revoke, retried until it succeeds) and times them
//! out. A [`Lease`] is shared by the sessions that use it; each session holds a [`SessionGuard`],
//! and a connection-scoped lease ends when its guard drops.

pub mod manager;
pub mod name;

pub use manager::{LeaseError, LeaseManager};

use crate::auth::Identity;
use crate::secret::Secret;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Intent recorded; the user is being created.
    Minting,
    Active,
    /// Ending: sessions are being stopped and the user dropped.
    Revoking,
    /// A revocation attempt failed; it is retried with backoff. Holds the last error.
    RevokeFailed(String),
    Ended,
}

pub struct Lease {
    pub id: String,
    pub identity: Identity,
    /// The `[[database]]` this lease belongs to.
    pub database: String,
    /// The minted database user.
    pub user: String,
    pub password: Secret,
    pub granted_at: SystemTime,
    /// Hard end: the user's `VALID UNTIL`, and when leasegate closes its sessions.
    pub max_expires_at: SystemTime,
    pub max_deadline: Instant,
    /// Cancelled when the lease ends: sessions using it close.
    pub ended: CancellationToken,
    state: Mutex<LeaseState>,
    sessions: AtomicUsize,
    /// Databases (Postgres `database` parameter) its sessions used; revocation cleans up in each.
    used_databases: Mutex<BTreeSet<String>>,
}

impl Lease {
    pub fn state(&self) -> LeaseState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_state(&self, state: LeaseState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }

    /// Moves Active/Minting → Revoking once; false if the lease is already ending.
    fn begin_revoking(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match *s {
            LeaseState::Minting | LeaseState::Active => {
                *s = LeaseState::Revoking;
                true
            }
            _ => false,
        }
    }

    pub fn note_database(&self, database: &str) {
        self.used_databases.lock().unwrap_or_else(|e| e.into_inner()).insert(database.to_string());
    }

    pub fn used_databases(&self) -> BTreeSet<String> {
        self.used_databases.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn live_sessions(&self) -> usize {
        self.sessions.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).field("identity", &self.identity).field("user", &self.user).finish_non_exhaustive()
    }
}

/// Held by each session using a lease; dropping it tells the manager the session is gone.
pub struct SessionGuard {
    lease: std::sync::Arc<Lease>,
    manager: LeaseManager,
}

impl SessionGuard {
    pub fn lease(&self) -> &std::sync::Arc<Lease> {
        &self.lease
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        if self.lease.sessions.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.manager.last_session_closed(&self.lease);
        }
    }
}
