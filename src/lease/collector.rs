//! The lease gauges (`leases_active` by role and state, `lease_remaining`, the store's
//! `journal_up` and `journal_queued_writes`), computed from the
//! manager's leases on each scrape so they can never drift from the truth. The families that
//! code paths update as things happen live in `metrics`; this collector is handed to
//! `Metrics::registry` through [`LeaseManager::collector`].

use super::LeaseManager;
use crate::metrics::DbLabels;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use std::collections::BTreeMap;
use std::time::SystemTime;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseLabels {
    database: String,
    role: String,
    state: String,
}

/// Lease gauges computed from the manager on each scrape.
pub(super) struct LeaseCollector {
    pub(super) leases: LeaseManager,
}

impl std::fmt::Debug for LeaseCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseCollector")
    }
}

impl Collector for LeaseCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut counts: BTreeMap<(String, String, &'static str), i64> = BTreeMap::new();
        let remaining: Family<DbLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new([60.0, 300.0, 900.0, 1800.0, 3600.0, 4.0 * 3600.0, 12.0 * 3600.0, 86400.0]));
        let now = SystemTime::now();
        for lease in self.leases.list() {
            let state = lease.state();
            *counts.entry((lease.database.clone(), lease.identity.role.clone(), state.as_str())).or_default() += 1;
            if state.is_live() {
                let left = lease.expires_at().duration_since(now).unwrap_or_default().as_secs_f64();
                remaining.get_or_create(&DbLabels { database: lease.database.clone() }).observe(left);
            }
        }
        let active: Family<LeaseLabels, Gauge> = Family::default();
        for ((database, role, state), n) in counts {
            active.get_or_create(&LeaseLabels { database, role, state: state.to_string() }).set(n);
        }
        let e = encoder.encode_descriptor(
            "leases_active",
            "Leases alive now, by role and state (revoke_failed included)",
            None,
            active.metric_type(),
        )?;
        active.encode(e)?;
        let unit = Unit::Seconds;
        let e = encoder.encode_descriptor(
            "lease_remaining",
            "Time left until expiry of active leases",
            Some(&unit),
            remaining.metric_type(),
        )?;
        remaining.encode(e)?;
        // The lease store: whether it answers and what waits for it (a shared store's outage
        // shows here; a local file always answers).
        let health = self.leases.journal().health();
        let up: Gauge = Gauge::default();
        up.set(i64::from(health.reachable));
        let e = encoder.encode_descriptor("journal_up", "1 when the lease store answered its last round trip", None, up.metric_type())?;
        up.encode(e)?;
        let queued: Gauge = Gauge::default();
        queued.set(health.queued_writes as i64);
        let e = encoder.encode_descriptor(
            "journal_queued_writes",
            "Lease state changes waiting for the lease store to answer",
            None,
            queued.metric_type(),
        )?;
        queued.encode(e)?;
        Ok(())
    }
}
