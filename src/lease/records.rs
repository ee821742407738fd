//! What is written about a lease, in one place: its rows in the lease store (intent, state
//! changes, renewals, used databases, end), its audit events (granted, renewed, revoke_failed,
//! ended, orphan_dropped), its counters and histograms, and the log lines that go with them.
//! A failed store write after the intent is logged, never fatal: the intent is what recovery
//! needs, and the state it finds is revoked either way.

use super::store::{Intent, JournalError};
use super::{EndReason, Lease, LeaseManager};
use crate::audit::Event;
use crate::config::RoleConfig;
use crate::metrics::{DbLabels, EndLabels, RoleLabels};
use std::time::{Duration, SystemTime};

impl LeaseManager {
    /// The intent, before the user is created. Its failure refuses the grant.
    pub(super) async fn record_minting(&self, lease: &Lease, role: &RoleConfig) -> Result<(), JournalError> {
        let intent = Intent {
            id: &lease.id,
            database: &lease.database,
            role: &role.name,
            client: &lease.identity.client,
            db_user: &lease.user,
            granted_at: lease.granted_at,
            expires_at: lease.expires_at(),
            max_expires_at: lease.max_expires_at,
            held_by: lease.origin.as_ref().filter(|o| o.auth_method == "sidecar").and_then(|o| o.subject.as_deref()),
        };
        self.inner.store.intent(&intent).await
    }

    /// The lease's current state, and `error` as its last error when given.
    pub(super) async fn record_state(&self, lease: &Lease, error: Option<&str>) {
        let state = lease.state();
        logged(lease, self.inner.store.set_state(&lease.id, state.as_str(), error).await);
    }

    /// Like `record_state`, and says what the store answered (a shared store refuses the write
    /// of a lease another instance owns now).
    pub(super) async fn record_state_checked(&self, lease: &Lease) -> Result<(), JournalError> {
        let written = self.inner.store.set_state(&lease.id, lease.state().as_str(), None).await;
        match &written {
            Ok(()) | Err(JournalError::NotOwner) => {}
            Err(JournalError::Queued) => tracing::debug!(lease = %lease.id, "journal write queued until the store answers"),
            Err(e) => tracing::error!(lease = %lease.id, error = %e, "journal write failed"),
        }
        written
    }

    /// The user exists.
    pub(super) fn record_granted(&self, lease: &Lease, role: &RoleConfig, mint_took: Duration) {
        tracing::info!(
            lease = %lease.id, user = %lease.user, client = %lease.identity.client, role = %role.name,
            ttl = ?role.default_ttl.min(role.max_ttl), max_ttl = ?role.max_ttl, mint_ms = millis3(mint_took), "lease granted"
        );
        let m = &self.inner.metrics;
        m.leases_granted.get_or_create(&RoleLabels { database: lease.database.clone(), role: role.name.clone() }).inc();
        m.mint_seconds.get_or_create(&DbLabels { database: lease.database.clone() }).observe(mint_took.as_secs_f64());
        self.audit(lease, "granted", None, Some(lease.expires_at()));
    }

    /// The new expiry; `reason` is `Some("api")` for an operator's renewal.
    pub(super) async fn record_renewed(&self, lease: &Lease, reason: Option<&str>) {
        let expires_at = lease.expires_at();
        logged(lease, self.inner.store.renewed(&lease.id, expires_at).await);
        if reason.is_none() {
            tracing::info!(lease = %lease.id, user = %lease.user, expires_at = %humantime::format_rfc3339_seconds(expires_at), "lease renewed");
        }
        self.audit(lease, "renewed", reason, Some(expires_at));
    }

    /// The databases the lease's sessions use (clean-up at revocation needs them).
    pub(super) async fn journal_databases(&self, lease: &Lease) {
        logged(lease, self.inner.store.used_databases(&lease.id, &lease.used_databases()).await);
    }

    /// A revocation attempt failed (the lease is `RevokeFailed` now).
    pub(super) async fn record_revoke_failed(&self, lease: &Lease, error: &str) {
        self.record_state(lease, Some(error)).await;
        let labels = RoleLabels { database: lease.database.clone(), role: lease.identity.role.clone() };
        self.inner.metrics.revoke_failures.get_or_create(&labels).inc();
        self.audit(lease, "revoke_failed", Some(error), None);
    }

    /// The user is dropped after `attempts` attempts that took `took` in all.
    pub(super) async fn record_ended(&self, lease: &Lease, reason: EndReason, attempts: u32, took: Duration) {
        logged(lease, self.inner.store.ended(&lease.id, reason.as_str()).await);
        tracing::info!(
            lease = %lease.id, user = %lease.user, reason = %reason, attempts,
            revoke_ms = millis3(took), "lease ended"
        );
        let m = &self.inner.metrics;
        let labels = EndLabels { database: lease.database.clone(), role: lease.identity.role.clone(), reason: reason.as_str().into() };
        m.leases_ended.get_or_create(&labels).inc();
        m.revoke_seconds.get_or_create(&DbLabels { database: lease.database.clone() }).observe(took.as_secs_f64());
        let event = if reason == EndReason::Orphan { "orphan_dropped" } else { "ended" };
        self.audit(lease, event, Some(reason.as_str()), None);
    }

    /// A lease whose user was never created ended (`why` is kept as its last error).
    pub(super) async fn record_forgotten(&self, lease: &Lease, why: &str) {
        logged(lease, self.inner.store.set_state(&lease.id, "ended", Some(why)).await);
    }

    fn audit(&self, lease: &Lease, event: &str, reason: Option<&str>, expires_at: Option<SystemTime>) {
        let nonempty = |s: &str| -> Option<String> { (!s.is_empty()).then(|| s.to_string()) };
        let (client, role) = (nonempty(&lease.identity.client), nonempty(&lease.identity.role));
        self.inner.audit.record(&Event {
            event,
            lease_id: Some(&lease.id),
            client: client.as_deref(),
            role: role.as_deref(),
            database: Some(&lease.database),
            db_user: Some(&lease.user),
            peer: lease.origin.as_ref().and_then(|o| o.peer),
            auth_method: lease.origin.as_ref().map(|o| o.auth_method),
            subject: lease.origin.as_ref().and_then(|o| o.subject.as_deref()),
            reason,
            expires_at: expires_at.map(crate::audit::rfc3339),
        });
    }
}

/// Logs a failed store write (a queued one only at debug level: the store's outage is logged
/// once, where it is noticed).
fn logged(lease: &Lease, written: Result<(), JournalError>) {
    match written {
        Ok(()) => {}
        Err(JournalError::Queued) => tracing::debug!(lease = %lease.id, "journal write queued until the store answers"),
        Err(JournalError::NotOwner) => tracing::warn!(lease = %lease.id, "journal write refused: another instance owns this lease now"),
        Err(e) => tracing::error!(lease = %lease.id, error = %e, "journal write failed"),
    }
}

/// Milliseconds with three decimals, for logs.
fn millis3(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}
