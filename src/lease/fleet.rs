//! Living among other instances (a shared store, DESIGN §2b): one task heartbeats at a fifth of
//! `takeover_after`, and on each beat
//!
//! - alive: takes over the leases of instances silent for `takeover_after` (revoking them as a
//!   restart revokes its own, reason `recovered`) — only once its own heartbeats have all
//!   succeeded for `takeover_after`, so a store outage never makes every instance look dead —
//!   and revokes the leases of its own that another instance's API asked to revoke;
//! - fenced (this instance was declared dead while frozen or cut off, or another process took
//!   its id): it owns nothing any more. Every lease it holds is let go of — sessions closed,
//!   nothing revoked, since the taker does that — then it registers again with a new epoch and
//!   revokes whatever of its old epoch nobody claimed;
//! - store unreachable: nothing changes for live sessions; grants already fail at the intent.

use super::store::Beat;
use super::{EndReason, Lease, LeaseManager};
use crate::auth::Identity;
use std::time::Duration;
use tokio::time::Instant;

/// Leases claimed from dead instances per beat (the rest on the next beats).
const CLAIM_BATCH: i64 = 500;

impl LeaseManager {
    /// Runs until `stopped` fires; does nothing for a store that is not shared.
    pub async fn live_in_fleet(self, takeover_after: Duration, stopped: crate::shutdown::Shutdown) {
        if self.journal().fleet().is_none() {
            return;
        }
        let every = takeover_after / 5;
        // Since when this instance's heartbeats have all succeeded. Another instance's silence
        // only means it is dead if this one could have heard it for a whole `takeover_after`:
        // after a store outage every heartbeat is old, and judging then would kill them all.
        let mut heard_since: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = stopped.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let Some(fleet) = self.journal().fleet() else { return };
            match fleet.heartbeat().await {
                Ok(Beat::Alive) => {
                    let since = *heard_since.get_or_insert_with(Instant::now);
                    // Shutting down, it keeps heartbeating while it revokes its own leases (so
                    // nobody takes them over meanwhile), but takes on no one else's.
                    if since.elapsed() >= takeover_after && self.is_granting() {
                        self.take_over_and_serve_requests(takeover_after).await;
                    }
                }
                Ok(Beat::Fenced) => {
                    heard_since = None;
                    self.fenced().await;
                }
                Err(e) => {
                    heard_since = None;
                    tracing::debug!(error = %e, "heartbeat failed");
                }
            }
        }
    }

    async fn take_over_and_serve_requests(&self, takeover_after: Duration) {
        let Some(fleet) = self.journal().fleet() else { return };
        match fleet.claim_dead(takeover_after, CLAIM_BATCH).await {
            Ok(claimed) => {
                for c in claimed {
                    let row = c.row;
                    // Issued to a remote sidecar, whose sessions did not die with the issuer:
                    // kept, to be renewed, released or expired here.
                    if row.held_by.is_some() && row.state == "active" && row.expires_at > std::time::SystemTime::now() {
                        tracing::info!(lease = %row.id, user = %row.db_user, from = %c.from, held_by = ?row.held_by, "took over a dead issuer's live lease");
                        self.adopt_live(&row).await;
                        continue;
                    }
                    tracing::info!(lease = %row.id, user = %row.db_user, from = %c.from, "took over a dead instance's lease; revoking it");
                    let lease = Lease::unfinished(row.id, Identity { client: row.client, role: row.role }, row.database, row.db_user);
                    for db in &row.used_databases {
                        lease.note_database(db);
                    }
                    self.adopt_for_revocation(lease, EndReason::Recovered);
                }
            }
            Err(e) => tracing::warn!(error = %e, "taking over dead instances' leases failed; will retry"),
        }
        match fleet.revoke_requests().await {
            Ok(ids) => {
                for id in ids {
                    if let Some(lease) = self.get(&id) {
                        tracing::info!(lease = %id, "revoking a lease another instance's API asked to revoke");
                        self.end(&lease, EndReason::Revoked);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading revocation requests failed; will retry"),
        }
    }

    /// This instance was declared dead: let go of everything, come back with a new epoch.
    async fn fenced(&self) {
        let held = self.list();
        tracing::error!(
            instance = %self.journal().instance(), leases = held.len(),
            "this instance was declared dead by the fleet (it was silent past takeover_after): its leases are another instance's now; closing their sessions without revoking"
        );
        for lease in held {
            self.relinquish(&lease);
        }
        let Some(fleet) = self.journal().fleet() else { return };
        if let Err(e) = fleet.reregister().await {
            tracing::warn!(error = %e, "registering again failed; will retry at the next heartbeat");
            return;
        }
        // What of the old epoch no live instance claimed yet is this instance's to revoke again.
        if let Err(e) = super::recovery::recover(self).await {
            tracing::warn!(error = %e, "revoking what the fenced epoch left failed");
        }
    }

    /// Keeps a live lease taken over from a dead issuer: its deadlines here, its row active
    /// under this instance.
    async fn adopt_live(&self, row: &super::JournalRow) {
        let lease = Lease::adopted(row);
        for db in &row.used_databases {
            lease.note_database(db);
        }
        if let Some(count) = self.inner.role_leases.get(&row.role) {
            count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        self.inner.leases.insert(lease.id.clone(), lease.clone());
        self.inner.timers.set(super::deadlines::Timer::Expire.key(&lease), lease.expiry_deadline());
        self.inner.timers.set(super::deadlines::Timer::MaxTtl.key(&lease), lease.max_deadline);
        self.record_state(&lease, None).await;
    }

    /// Lets go of a lease another instance owns now: its sessions close, nothing is revoked
    /// or journaled here (the owner does both).
    pub(super) fn relinquish(&self, lease: &std::sync::Arc<Lease>) {
        self.cancel_timers(lease);
        self.inner.current.remove_if(&lease.identity, |_, current| current.id == lease.id);
        let counted = lease.finish();
        self.remove(lease, counted);
    }
}
