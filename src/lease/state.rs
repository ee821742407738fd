//! One lease's life: the [`LeaseState`] it is in, behind the lease's one lock together with
//! what changes with it (sessions attached, expiry, databases used, the `max_leases` unit it
//! holds), and every transition. Nothing else writes a state or fires a [`Signal`]: the manager
//! decides *when* (timers, sessions, the API) and acts on what a transition answers (spawn a
//! revocation, journal the new state). No lock is held across an `.await`.
//!
//! ```text
//!           minted                        max TTL, shutdown
//! Minting ─────────▶ Active ─────────────────────────────────▶ Draining
//!  │   │               │ end (API, expiry, shutdown), last           │ end, last session,
//!  │   │ user may      │ session, idle grace over                    │ hard close
//!  │   │ exist         ▼                                             │
//!  │   └──────────▶ Revoking ◀───────────────────────────────────────┘
//!  │                  │   │ attempt failed
//!  │                  │   ▼
//!  │                  │ RevokeFailed ⟲ retried with backoff (1 s … 5 min)
//!  │ nothing created  ▼   │ user dropped (or already gone)
//!  └──────────────▶ Ended ◀┘
//! ```
//!
//! A revocation asked for while the user is being created cannot run yet (the user may not
//! exist); it is remembered in `Minting { revoke_pending }` and started as soon as it does.
//! A drain asked for then is remembered the same way and fires when the lease is minted.

use super::Lease;
use std::collections::BTreeSet;
use std::sync::{MutexGuard, OnceLock};
use std::time::SystemTime;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Where a lease is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Intent recorded; the user is being created. What was asked meanwhile waits for it.
    Minting {
        revoke_pending: bool,
        drain_pending: Option<DrainReason>,
    },
    /// The user exists; sessions may join; it is renewed while they live.
    Active,
    /// Max TTL or shutdown: no session joins; those attached close at their next idle point.
    /// Shown as `active` (the journal and API names are a contract).
    Draining(DrainReason),
    /// Ending: sessions are being stopped and the user dropped.
    Revoking,
    /// A revocation attempt failed; it is retried with backoff. Holds the last error.
    RevokeFailed(String),
    Ended,
}

impl LeaseState {
    /// The journal's and the API's name for the state.
    pub fn as_str(&self) -> &'static str {
        match self {
            LeaseState::Minting { .. } => "minting",
            LeaseState::Active | LeaseState::Draining(_) => "active",
            LeaseState::Revoking => "revoking",
            LeaseState::RevokeFailed(_) => "revoke_failed",
            LeaseState::Ended => "ended",
        }
    }

    /// The user exists and the lease is not ending: `Active` or `Draining`.
    pub fn is_live(&self) -> bool {
        matches!(self, LeaseState::Active | LeaseState::Draining(_))
    }
}

/// Why sessions are asked to close at their next idle point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainReason {
    MaxTtl,
    Shutdown,
}

/// A one-shot signal sessions wait on, with why it fired. Only this module fires it.
pub struct Signal<T = ()> {
    token: CancellationToken,
    why: OnceLock<T>,
}

impl<T: Copy> Signal<T> {
    pub(super) fn new() -> Self {
        Signal { token: CancellationToken::new(), why: OnceLock::new() }
    }

    /// Resolves once the signal has fired.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why it fired (the first reason given), if it has.
    pub fn reason(&self) -> Option<T> {
        self.why.get().copied()
    }

    fn fire(&self, why: T) {
        let _ = self.why.set(why);
        self.token.cancel();
    }
}

/// What the lease's lock guards.
pub(super) struct Life {
    state: LeaseState,
    sessions: usize,
    /// When the lease expires unless renewed (Tokio time; see `Lease::wall`).
    expires: Instant,
    used_databases: BTreeSet<String>,
    /// Holds one unit of its role's `max_leases`, given back once on the way to `Ended`.
    counted: bool,
}

impl Life {
    pub(super) fn minting(expires: Instant) -> Life {
        let state = LeaseState::Minting { revoke_pending: false, drain_pending: None };
        Life { state, sessions: 1, expires, used_databases: BTreeSet::new(), counted: true }
    }

    /// A live lease taken over from a dead instance (issued to a remote sidecar): `Active`,
    /// holding a unit of its role's `max_leases` here now.
    pub(super) fn adopted(expires: Instant) -> Life {
        Life { state: LeaseState::Active, sessions: 0, expires, used_databases: BTreeSet::new(), counted: true }
    }

    pub(super) fn unfinished(expires: Instant) -> Life {
        Life { state: LeaseState::Revoking, sessions: 0, expires, used_databases: BTreeSet::new(), counted: false }
    }
}

impl Lease {
    fn life(&self) -> MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> LeaseState {
        self.life().state.clone()
    }

    pub fn expires_at(&self) -> SystemTime {
        let expires = self.life().expires;
        self.wall(expires)
    }

    pub(super) fn expiry_deadline(&self) -> Instant {
        self.life().expires
    }

    pub(super) fn set_expiry(&self, at: Instant) {
        self.life().expires = at;
    }

    pub fn live_sessions(&self) -> usize {
        self.life().sessions
    }

    /// Records a database the lease's sessions use; true when it is new.
    pub fn note_database(&self, database: &str) -> bool {
        self.life().used_databases.insert(database.to_string())
    }

    pub fn used_databases(&self) -> BTreeSet<String> {
        self.life().used_databases.clone()
    }

    /// Why `drain` fired (max TTL when it has not).
    pub fn drain_reason(&self) -> DrainReason {
        self.drain.reason().unwrap_or(DrainReason::MaxTtl)
    }

    /// Adds a session if the lease is `Active`; returns how many it had.
    pub(super) fn try_join(&self) -> Option<usize> {
        let mut life = self.life();
        if life.state != LeaseState::Active {
            return None;
        }
        life.sessions += 1;
        Some(life.sessions - 1)
    }

    /// Removes a session; returns how many are left.
    pub(super) fn leave(&self) -> usize {
        let mut life = self.life();
        life.sessions = life.sessions.saturating_sub(1);
        life.sessions
    }

    /// Asks its sessions to close at their next idle point: `Active` → `Draining`; remembered
    /// while minting; the signal still reaches the sessions of a lease being revoked.
    pub fn start_draining(&self, reason: DrainReason) {
        let mut life = self.life();
        match &mut life.state {
            LeaseState::Minting { drain_pending, .. } => {
                drain_pending.get_or_insert(reason);
            }
            LeaseState::Active => {
                life.state = LeaseState::Draining(reason);
                self.drain.fire(reason);
            }
            LeaseState::Draining(_) | LeaseState::Ended => {}
            LeaseState::Revoking | LeaseState::RevokeFailed(_) => self.drain.fire(reason),
        }
    }

    /// The user exists: `Minting` → `Active` (or `Draining`, if a drain was asked meanwhile).
    /// True when a revocation was asked meanwhile: the caller starts it now.
    pub(super) fn minted(&self) -> bool {
        let mut life = self.life();
        let LeaseState::Minting { revoke_pending, drain_pending } = life.state else { return false };
        match drain_pending {
            Some(reason) => {
                life.state = LeaseState::Draining(reason);
                self.drain.fire(reason);
            }
            None => life.state = LeaseState::Active,
        }
        revoke_pending
    }

    /// A mint failed and may have left the user behind: `Minting` → `Revoking`, so it is
    /// revoked like any lease until surely gone.
    pub(super) fn mint_uncertain(&self) {
        let mut life = self.life();
        if matches!(life.state, LeaseState::Minting { .. }) {
            life.state = LeaseState::Revoking;
        }
    }

    /// `Active`/`Draining` → `Revoking`, once; true when this call made that change (the caller
    /// then runs the revocation). With `only_if_idle`, only when no session is attached
    /// (checked under the lock a joining session takes). A lease still minting is not taken
    /// over — its user may not exist yet — but marked: its minting task revokes it.
    pub(super) fn begin_revoking(&self, only_if_idle: bool) -> bool {
        let mut life = self.life();
        if only_if_idle && life.sessions > 0 {
            return false;
        }
        match &mut life.state {
            LeaseState::Active | LeaseState::Draining(_) => {
                life.state = LeaseState::Revoking;
                true
            }
            LeaseState::Minting { revoke_pending, .. } => {
                *revoke_pending = true;
                false
            }
            _ => false,
        }
    }

    /// Revocation has stopped the server sessions (or is failing): close the client sockets.
    pub(super) fn close_sessions(&self) {
        self.ended.fire(());
    }

    /// A revocation attempt failed: `Revoking`/`RevokeFailed` → `RevokeFailed(error)`; the
    /// sessions leasegate holds are closed regardless.
    pub(super) fn revoke_failed(&self, error: String) {
        let mut life = self.life();
        if matches!(life.state, LeaseState::Revoking | LeaseState::RevokeFailed(_)) {
            life.state = LeaseState::RevokeFailed(error);
        }
        self.ended.fire(());
    }

    /// The user is dropped, or was never created: → `Ended`. True exactly once for a lease
    /// that held a `max_leases` unit: the caller gives it back.
    pub(super) fn finish(&self) -> bool {
        let mut life = self.life();
        life.state = LeaseState::Ended;
        self.ended.fire(());
        std::mem::take(&mut life.counted)
    }
}
