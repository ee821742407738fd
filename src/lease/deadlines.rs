//! Each lease's deadlines and what happens when one passes or a session leaves: renewal at 2/3
//! of the TTL, expiry, max TTL (drain: sessions close at their next idle point), hard close at
//! `max_ttl + hard_close_grace`, and the idle grace of identity-scoped leases. All of them are
//! Tokio instants in the one [`Scheduler`](super::scheduler::Scheduler) the manager's task
//! serves, so paused-time tests drive them.

use super::{DrainReason, EndReason, Lease, LeaseManager};
use crate::config::{RoleConfig, Scope};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The deadlines a lease can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Timer {
    Renew,
    Expire,
    MaxTtl,
    HardClose,
    IdleEnd,
}

pub(super) type TimerKey = (Arc<str>, Timer);

impl Timer {
    const ALL: [Timer; 5] = [Timer::Renew, Timer::Expire, Timer::MaxTtl, Timer::HardClose, Timer::IdleEnd];

    /// This deadline of `lease`.
    pub(super) fn key(self, lease: &Lease) -> TimerKey {
        (lease.id.as_str().into(), self)
    }
}

impl LeaseManager {
    /// Renewal at 2/3 of the TTL and expiry at its end, unless max TTL comes first.
    pub(super) fn schedule_expiry(&self, lease: &Lease, role: &RoleConfig, from: Instant) {
        let ttl = role.default_ttl.min(role.max_ttl);
        let expires = (from + ttl).min(lease.max_deadline);
        if expires < lease.max_deadline {
            self.inner.timers.set(Timer::Renew.key(lease), from + ttl * 2 / 3);
            self.inner.timers.set(Timer::Expire.key(lease), expires);
        } else {
            self.inner.timers.cancel(&Timer::Renew.key(lease));
            self.inner.timers.cancel(&Timer::Expire.key(lease));
        }
    }

    /// Every deadline of `lease` is void: it is ending.
    pub(super) fn cancel_timers(&self, lease: &Lease) {
        for timer in Timer::ALL {
            self.inner.timers.cancel(&timer.key(lease));
        }
    }

    pub(super) fn on_timer(&self, (id, timer): TimerKey) {
        let Some(lease) = self.get(&id) else { return };
        match timer {
            Timer::Renew => self.spawn_renewal(lease),
            Timer::Expire => self.expire(lease),
            Timer::MaxTtl => self.begin_drain(&lease),
            Timer::HardClose => self.end(&lease, EndReason::MaxTtl),
            Timer::IdleEnd => self.end_if_idle(&lease, EndReason::Closed),
        }
    }

    /// Max TTL: no session joins any more; sessions close at their next idle point, and at
    /// `hard_close_grace` later regardless; a lease with none ends now.
    fn begin_drain(&self, lease: &Arc<Lease>) {
        lease.start_draining(DrainReason::MaxTtl);
        self.inner.current.remove_if(&lease.identity, |_, current| current.id == lease.id);
        self.inner.timers.cancel(&Timer::Renew.key(lease));
        self.inner.timers.cancel(&Timer::Expire.key(lease));
        let grace = self.role(&lease.identity.role).map_or(Duration::ZERO, |r| r.hard_close_grace);
        tracing::info!(lease = %lease.id, user = %lease.user, sessions = lease.live_sessions(), "lease reached max TTL; closing its sessions at their next idle point");
        self.inner.timers.set(Timer::HardClose.key(lease), lease.max_deadline + grace);
        self.end_if_idle(lease, EndReason::MaxTtl);
    }

    /// A session's guard dropped. The last one ends the lease: at once for connection scope,
    /// a drained lease or at shutdown; after `idle_grace` for identity scope.
    pub(super) fn session_closed(&self, lease: &Arc<Lease>) {
        if lease.leave() > 0 {
            return;
        }
        let role = self.role(&lease.identity.role);
        if !self.is_granting() {
            self.end_if_idle(lease, EndReason::Shutdown);
        } else if lease.drain.is_cancelled() {
            self.end_if_idle(lease, EndReason::MaxTtl);
        } else if role.map_or(Scope::Connection, |r| r.scope) == Scope::Connection {
            self.end_if_idle(lease, EndReason::Closed);
        } else {
            let grace = role.map_or(Duration::ZERO, |r| r.idle_grace);
            self.inner.timers.set(Timer::IdleEnd.key(lease), Instant::now() + grace);
        }
    }
}
