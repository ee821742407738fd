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

    /// Renews a lease another instance owns (shared store: an issuer asked by a sidecar whose
    /// lease another issuer granted): the server's expiry moves here, with this instance's admin
    /// connection, and the store's row tells the owner, which reads it before expiring the lease.
    pub async fn renew_elsewhere(&self, row: &super::JournalRow, until: SystemTime) -> Result<SystemTime, RenewError> {
        let fleet = self.journal().fleet().ok_or(RenewError::NotActive("not shared"))?;
        if row.state != "active" {
            return Err(RenewError::NotActive("not active"));
        }
        let role = self.role(&row.role).cloned().ok_or(RenewError::NotActive("unknown role"))?;
        let provisioner = self.provisioner(&row.database).ok_or(RenewError::NotActive("unknown database"))?;
        let until = until.min(row.max_expires_at);
        provisioner.renew(&role, &row.db_user, until).await.map_err(RenewError::Provision)?;
        match fleet.extend(&row.id, until).await {
            Ok(true) => {
                tracing::info!(lease = %row.id, owner = %row.instance, expires_at = %humantime::format_rfc3339_seconds(until), "renewed a lease another instance owns");
                Ok(until)
            }
            Ok(false) => Err(RenewError::NotActive("ended meanwhile")),
            Err(e) => Err(RenewError::Provision(crate::provision::ProvisionError::Unreachable {
                addr: "lease store".into(),
                message: e.to_string(),
            })),
        }
    }

    /// The Expire deadline passed. With a shared store another instance may have renewed the
    /// lease meanwhile ([`LeaseManager::renew_elsewhere`]): then its expiry moves instead.
    pub(super) fn expire(&self, lease: Arc<Lease>) {
        if self.journal().fleet().is_none() {
            return self.end(&lease, super::EndReason::Expired);
        }
        let manager = self.clone();
        self.inner.tasks.spawn(async move {
            let row = manager.journal().get(&lease.id).await.ok().flatten();
            let later = row.map(|r| r.expires_at).filter(|t| *t > lease.expires_at() && *t > SystemTime::now());
            match later {
                Some(t) => {
                    let deadline = Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default();
                    lease.set_expiry(deadline.min(lease.max_deadline));
                    manager.inner.timers.set(Timer::Expire.key(&lease), deadline.min(lease.max_deadline));
                }
                None => manager.end(&lease, super::EndReason::Expired),
            }
        });
    }
}
