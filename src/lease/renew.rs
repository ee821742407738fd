//! Renewal: moving a lease's expiry forward by one TTL (never past max TTL) while it has
//! sessions — at 2/3 of the TTL, and at once when a session rejoins an idle identity lease —
//! and by an operator's increment through the admin API. An idle lease is not renewed: it runs
//! out at its expiry. Decisions use Tokio time; the server and the journal get the wall-clock
//! time derived from it.

use super::deadlines::Timer;
use super::{Lease, LeaseManager, LeaseState, RenewError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// Bounds on how soon a failed renewal is retried (a sixth of the TTL, within these).
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

impl LeaseManager {
    /// Renews `lease` in the background if it has sessions.
    pub(super) fn spawn_renewal(&self, lease: Arc<Lease>) {
        let Some(role) = self.role(&lease.identity.role).cloned() else { return };
        let Some(provisioner) = self.provisioner(&lease.database) else { return };
        let manager = self.clone();
        self.inner.tasks.spawn(async move {
            if lease.live_sessions() == 0 || !lease.state().is_live() {
                return; // an idle lease runs out at its expiry
            }
            let ttl = role.default_ttl.min(role.max_ttl);
            let now = Instant::now();
            let deadline = (now + ttl).min(lease.max_deadline);
            let current = lease.expiry_deadline();
            if deadline <= current {
                // Already renewed further (through the API): never shorten; look again later.
                let left = current.saturating_duration_since(now);
                manager.inner.timers.set(Timer::Renew.key(&lease), now + left.saturating_sub(ttl / 3));
                return;
            }
            match provisioner.renew(&role, &lease.user, lease.wall(deadline)).await {
                Ok(()) => {
                    lease.set_expiry(deadline);
                    manager.schedule_expiry(&lease, &role, now);
                    manager.record_renewed(&lease, None).await;
                }
                Err(e) => {
                    // Try again soon; if it keeps failing the lease expires at its current end.
                    let retry = (ttl / 6).clamp(RETRY_MIN, RETRY_MAX);
                    tracing::warn!(lease = %lease.id, user = %lease.user, error = %e, retry_in = ?retry, "renewal failed");
                    manager.inner.timers.set(Timer::Renew.key(&lease), Instant::now() + retry);
                }
            }
        });
    }

    /// Moves an active lease's expiry to now + `increment`, clamped to its max (admin API).
    pub async fn renew_by(&self, lease: &Arc<Lease>, increment: Duration) -> Result<SystemTime, RenewError> {
        let state = lease.state();
        if state != LeaseState::Active {
            return Err(RenewError::NotActive(state.as_str()));
        }
        let role = self.role(&lease.identity.role).cloned().ok_or(RenewError::NotActive("unknown role"))?;
        let provisioner = self.provisioner(&lease.database).ok_or(RenewError::NotActive("unknown database"))?;
        // Clamped to max TTL; an increment no clock can add ends there too (never a panic).
        let deadline = Instant::now().checked_add(increment).map_or(lease.max_deadline, |d| d.min(lease.max_deadline));
        let expires_at = lease.wall(deadline);
        provisioner.renew(&role, &lease.user, expires_at).await.map_err(RenewError::Provision)?;
        lease.set_expiry(deadline);
        if deadline < lease.max_deadline {
            self.inner.timers.set(Timer::Expire.key(lease), deadline);
        } else {
            self.inner.timers.cancel(&Timer::Expire.key(lease));
        }
        self.record_renewed(lease, Some("api")).await;
        Ok(expires_at)
    }
}
