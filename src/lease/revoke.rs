//! Ending leases. Ending stops new logins, ends the user's server sessions, closes the client
//! sockets leasegate holds and drops the user. It runs in a background task that retries with
//! capped exponential backoff (1 s → 5 min) until the user is gone: each failure is logged,
//! journaled, counted, audited and shown as `RevokeFailed`; it is never dropped silently. A
//! user that is already gone counts as dropped.

use super::store::JournalError;
use super::{EndReason, Lease, LeaseManager, LeaseState};
use crate::config::RoleConfig;
use crate::provision::{ProvisionError, Provisioner};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How long revocation waits for terminated server sessions to exit before dropping anyway.
const SESSION_EXIT_WAIT: Duration = Duration::from_secs(2);
/// How often the waiting callers look whether their leases are gone.
const REVOKE_AND_WAIT_POLL: Duration = Duration::from_millis(10);
const REVOKE_ALL_POLL: Duration = Duration::from_millis(20);
/// How often a revocation asked of another instance is looked up in the shared store.
const REVOKE_ELSEWHERE_POLL: Duration = Duration::from_millis(100);

impl LeaseManager {
    /// Starts ending `lease` (once); the revocation runs in the background until it succeeds.
    /// A lease still minting is ended as soon as its user exists.
    pub fn end(&self, lease: &Arc<Lease>, reason: EndReason) {
        if lease.begin_revoking(false) {
            self.spawn_revocation(lease, reason);
        }
    }

    /// Ends the lease only if no session is attached (a session may join concurrently).
    pub(super) fn end_if_idle(&self, lease: &Arc<Lease>, reason: EndReason) {
        if lease.begin_revoking(true) {
            self.spawn_revocation(lease, reason);
        }
    }

    /// Takes over a lease a previous run left unfinished (or an orphan) and revokes it.
    pub(super) fn adopt_for_revocation(&self, lease: Arc<Lease>, reason: EndReason) {
        self.inner.leases.insert(lease.id.clone(), lease.clone());
        self.spawn_revocation(&lease, reason);
    }

    /// Runs the revocation of a lease already in `Revoking`.
    pub(super) fn spawn_revocation(&self, lease: &Arc<Lease>, reason: EndReason) {
        self.cancel_timers(lease);
        self.inner.current.remove_if(&lease.identity, |_, current| current.id == lease.id);
        let manager = self.clone();
        let lease = lease.clone();
        self.inner.tasks.spawn(async move { manager.revoke(lease, reason).await });
    }

    /// Revokes until it succeeds, then records the end and forgets the lease.
    async fn revoke(&self, lease: Arc<Lease>, reason: EndReason) {
        let Some(provisioner) = self.provisioner(&lease.database) else {
            tracing::error!(lease = %lease.id, user = %lease.user, database = %lease.database, "no [[database]] for this lease; cannot revoke");
            return;
        };
        // A role removed from the config since is revoked with the default statements.
        let role = self.role(&lease.identity.role).cloned().unwrap_or_else(|| RoleConfig::fallback(&lease.database));
        if let Err(JournalError::NotOwner) = self.record_state_checked(&lease).await {
            tracing::warn!(lease = %lease.id, user = %lease.user, "lease taken over by another instance; it revokes it, this one only closes its sessions");
            return self.relinquish(&lease);
        }
        let started = std::time::Instant::now();
        let mut delay = FIRST_RETRY;
        let mut attempt = 1u32;
        loop {
            if !self.wait_until_may_act(&lease).await {
                return;
            }
            let Err(e) = revoke_once(provisioner.as_ref(), &role, &lease).await else { break };
            tracing::warn!(lease = %lease.id, user = %lease.user, attempt, retry_in = ?delay, error = %e, "revocation failed; will retry");
            lease.revoke_failed(e.to_string());
            self.record_revoke_failed(&lease, &e.to_string()).await;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY);
            attempt += 1;
        }
        let counted = lease.finish();
        self.record_ended(&lease, reason, attempt, started.elapsed()).await;
        self.remove(&lease, counted);
    }

    /// With a shared store cut off past `takeover_after`, another instance may have taken the
    /// lease over: wait until the store confirms this instance alive again (or the lease was let
    /// go of meanwhile: false) before dropping anything, so nothing is revoked twice.
    async fn wait_until_may_act(&self, lease: &Lease) -> bool {
        let mut told = false;
        while !self.journal().may_act() {
            if lease.state() == LeaseState::Ended {
                return false;
            }
            if !std::mem::replace(&mut told, true) {
                tracing::warn!(lease = %lease.id, "revocation waits: the shared store has not confirmed this instance alive lately");
            }
            tokio::time::sleep(FIRST_RETRY).await;
        }
        lease.state() != LeaseState::Ended
    }

    /// Ends `lease` and waits until its user is dropped, or `limit` passes.
    pub async fn revoke_and_wait(&self, lease: &Arc<Lease>, limit: Duration) -> LeaseState {
        self.end(lease, EndReason::Revoked);
        let deadline = Instant::now() + limit;
        while self.get(&lease.id).is_some() && Instant::now() < deadline {
            tokio::time::sleep(REVOKE_AND_WAIT_POLL).await;
        }
        lease.state()
    }

    /// Asks the owner of a lease another instance holds (shared store) to revoke it, and waits
    /// up to `limit` for the store to show it ended: true when it did.
    pub async fn revoke_elsewhere(&self, id: &str, limit: Duration) -> Result<bool, JournalError> {
        let Some(fleet) = self.journal().fleet() else { return Ok(false) };
        if !fleet.request_revoke(id).await? {
            return Ok(true); // no open lease by this id: ended already
        }
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            tokio::time::sleep(REVOKE_ELSEWHERE_POLL).await;
            if self.journal().get(id).await?.is_none_or(|r| r.state == "ended") {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Ends every lease with `reason` and waits up to `limit` for the users to be dropped;
    /// returns how many leases were still not ended then.
    pub async fn revoke_all(&self, reason: EndReason, limit: Duration) -> usize {
        for lease in self.list() {
            // A mint in flight is marked here; the granting task sees it and drops its user.
            self.end(&lease, reason);
        }
        let deadline = Instant::now() + limit;
        while !self.inner.leases.is_empty() && Instant::now() < deadline {
            // A mint that was past its checks when shutdown began is ended as it appears.
            for lease in self.list() {
                if lease.state().is_live() {
                    self.end(&lease, reason);
                }
            }
            tokio::time::sleep(REVOKE_ALL_POLL).await;
        }
        self.inner.leases.len()
    }
}

/// One revocation attempt: stop logins and sessions, close our sockets, clean up and drop.
async fn revoke_once(p: &dyn Provisioner, role: &RoleConfig, lease: &Lease) -> Result<(), ProvisionError> {
    match p.stop_sessions(&lease.user).await {
        Err(e) if e.user_is_gone() => {
            lease.close_sessions();
            return Ok(());
        }
        other => other?,
    }
    // Terminated backends send their client a FATAL on their own; give them a moment to do so
    // through the pump before closing the sockets we hold.
    let waited = p.wait_sessions_gone(&lease.user, SESSION_EXIT_WAIT).await;
    lease.close_sessions();
    waited?;
    p.drop_user(role, &lease.user, &lease.used_databases()).await
}
