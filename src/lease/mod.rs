//! Leases: a minted database user and how long it may live.
//!
//! `manager` grants leases (mint), joins identity-scoped ones, renews them while they have
//! sessions, rolls them over at max TTL and ends them (revoke, retried until it succeeds);
//! `scheduler` holds every deadline; `journal` makes all of it survive a crash; `recovery`
//! revokes what a previous run left and sweeps orphans. A [`Lease`] is shared by the sessions
//! that use it; each holds a [`SessionGuard`] whose drop tells the manager the session is gone.

mod collector;
pub mod journal;
pub mod manager;
#[cfg(test)]
pub mod memory;
pub mod recovery;
pub mod scheduler;
pub mod store;

pub use manager::{LeaseError, LeaseManager, RenewError};
pub use store::{JournalError, JournalRow, LeaseStore};

use crate::auth::Identity;
use crate::secret::Secret;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
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

impl LeaseState {
    /// The journal's (and later the API's) name for the state.
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseState::Minting => "minting",
            LeaseState::Active => "active",
            LeaseState::Revoking => "revoking",
            LeaseState::RevokeFailed(_) => "revoke_failed",
            LeaseState::Ended => "ended",
        }
    }
}

/// What changes over a lease's life, behind one lock so checks and updates are atomic.
struct Mutable {
    state: LeaseState,
    sessions: usize,
    expires_at: SystemTime,
    used_databases: BTreeSet<String>,
}

pub struct Lease {
    pub id: String,
    pub identity: Identity,
    /// The `[[database]]` this lease belongs to.
    pub database: String,
    /// The minted database user.
    pub user: String,
    pub password: Secret,
    /// The client address that caused the grant (none for recovered leases), for the audit log.
    pub peer: Option<std::net::SocketAddr>,
    pub granted_at: SystemTime,
    /// Hard end: no renewal goes past it.
    pub max_expires_at: SystemTime,
    pub max_deadline: Instant,
    /// Cancelled when the lease ends: its sessions close now.
    pub ended: CancellationToken,
    /// Cancelled at max TTL or shutdown: its sessions close at their next idle point.
    pub drain: CancellationToken,
    /// Why `drain` was cancelled: `DRAIN_SHUTDOWN` or `DRAIN_MAX_TTL`.
    drain_reason: AtomicU8,
    /// Holds one unit of its role's `max_leases` count (released exactly once).
    counted: AtomicBool,
    /// Revocation was asked for while the user was still being created; the minting task
    /// starts it as soon as the user exists.
    revoke_requested: AtomicBool,
    mutable: Mutex<Mutable>,
}

const DRAIN_MAX_TTL: u8 = 1;
const DRAIN_SHUTDOWN: u8 = 2;

/// Why sessions are asked to close at their next idle point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    MaxTtl,
    Shutdown,
}

impl Lease {
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: String,
        identity: Identity,
        database: String,
        user: String,
        password: Secret,
        state: LeaseState,
        expires_at: SystemTime,
        max_expires_at: SystemTime,
        max_deadline: Instant,
        peer: Option<std::net::SocketAddr>,
    ) -> Arc<Lease> {
        Arc::new(Lease {
            id,
            identity,
            database,
            user,
            password,
            peer,
            granted_at: SystemTime::now(),
            max_expires_at,
            max_deadline,
            ended: CancellationToken::new(),
            drain: CancellationToken::new(),
            drain_reason: AtomicU8::new(0),
            counted: AtomicBool::new(false),
            revoke_requested: AtomicBool::new(false),
            mutable: Mutex::new(Mutable { state, sessions: 0, expires_at, used_databases: BTreeSet::new() }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.mutable.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> LeaseState {
        self.lock().state.clone()
    }

    fn set_state(&self, state: LeaseState) {
        self.lock().state = state;
    }

    pub fn expires_at(&self) -> SystemTime {
        self.lock().expires_at
    }

    fn set_expires_at(&self, at: SystemTime) {
        self.lock().expires_at = at;
    }

    pub fn live_sessions(&self) -> usize {
        self.lock().sessions
    }

    /// Adds a session if the lease is active and not draining; returns how many it had.
    fn try_join(&self) -> Option<usize> {
        let mut m = self.lock();
        if m.state == LeaseState::Active && !self.drain.is_cancelled() {
            m.sessions += 1;
            Some(m.sessions - 1)
        } else {
            None
        }
    }

    fn set_counted(&self) {
        self.counted.store(true, Ordering::Release);
    }

    /// True exactly once after `set_counted`.
    fn take_counted(&self) -> bool {
        self.counted.swap(false, Ordering::AcqRel)
    }

    fn revoke_requested(&self) -> bool {
        self.revoke_requested.load(Ordering::Acquire)
    }

    /// Asks its sessions to close at their next idle point.
    pub fn start_draining(&self, reason: DrainReason) {
        let code = if reason == DrainReason::Shutdown { DRAIN_SHUTDOWN } else { DRAIN_MAX_TTL };
        let _ = self.drain_reason.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.drain.cancel();
    }

    pub fn drain_reason(&self) -> DrainReason {
        if self.drain_reason.load(Ordering::Acquire) == DRAIN_SHUTDOWN { DrainReason::Shutdown } else { DrainReason::MaxTtl }
    }

    /// The minting session's own place on its new lease.
    fn attach_first(&self) {
        self.lock().sessions += 1;
    }

    /// Removes a session; returns how many are left.
    fn leave(&self) -> usize {
        let mut m = self.lock();
        m.sessions = m.sessions.saturating_sub(1);
        m.sessions
    }

    /// Minting → Active (revocation never takes over a minting lease; see `begin_revoking`).
    fn begin_active(&self) {
        let mut m = self.lock();
        if m.state == LeaseState::Minting {
            m.state = LeaseState::Active;
        }
    }

    /// Active → Revoking, once; with `only_if_idle`, only when no session is attached (checked
    /// under the same lock a joining session takes). A lease still minting is not taken over —
    /// its user may not exist yet — but marked, and its minting task revokes it once it does.
    fn begin_revoking(&self, only_if_idle: bool) -> bool {
        let mut m = self.lock();
        if only_if_idle && m.sessions > 0 {
            return false;
        }
        match m.state {
            LeaseState::Active => {
                m.state = LeaseState::Revoking;
                true
            }
            LeaseState::Minting => {
                self.revoke_requested.store(true, Ordering::Release);
                false
            }
            _ => false,
        }
    }

    /// Records a database the lease's sessions use; true when it is new.
    pub fn note_database(&self, database: &str) -> bool {
        self.lock().used_databases.insert(database.to_string())
    }

    pub fn used_databases(&self) -> BTreeSet<String> {
        self.lock().used_databases.clone()
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

    /// Records the database the session uses (journaled, for clean-up at revocation).
    pub async fn note_database(&self, database: &str) {
        if self.lease.note_database(database) {
            self.manager.journal_databases(&self.lease).await;
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
