//! Prometheus metrics (DESIGN.md §3, a contract). Every family is prefixed `leasegate_` and
//! labelled only with low-cardinality values (database, role, protocol, reason, state,
//! direction) — never a lease id or a user name; those go to the audit log.
//!
//! Counters and histograms are updated where things happen (`Metrics`, cloned into tasks).
//! Gauges that are computed at scrape time come from their owners as collectors (the lease
//! gauges from `lease::collector`), so this module depends on no other and they can never
//! drift from the truth.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DbLabels {
    pub database: String,
}

/// An issuer's answer to a sidecar: which sidecar rule, for which client (empty for status),
/// which call, and `ok`, `refused` (4xx) or `failed` (5xx).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    pub sidecar: String,
    pub client: String,
    pub call: String,
    pub outcome: String,
}

/// A sidecar's call to its issuers, for one database: `ok`, `refused` (the issuer said no),
/// `unreachable` (no issuer answered).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerCallLabels {
    pub database: String,
    pub call: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub database: String,
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndLabels {
    pub database: String,
    pub role: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    pub database: String,
    pub protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub database: String,
    pub reason: String,
}

/// A failed client authentication: how the client was to prove itself, and why it failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    pub database: String,
    /// "password", "peer", "jwt", "cert"; "unknown" before the client said who it is.
    pub method: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub database: String,
    pub direction: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms … ~8 s
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The families updated by the code paths that observe events.
#[derive(Clone)]
pub struct Metrics {
    pub leases_granted: Family<RoleLabels, Counter>,
    pub leases_ended: Family<EndLabels, Counter>,
    pub revoke_failures: Family<RoleLabels, Counter>,
    pub mint_seconds: HistogramFamily<DbLabels>,
    pub revoke_seconds: HistogramFamily<DbLabels>,
    pub connections_active: Family<ConnLabels, Gauge>,
    pub connections: Family<ConnLabels, Counter>,
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    pub bytes_forwarded: Family<DirectionLabels, Counter>,
    pub sessions_closed: Family<ReasonLabels, Counter>,
    /// Issuer side: what it answered sidecars.
    pub issuer_requests: Family<IssuerLabels, Counter>,
    /// Sidecar side: its calls to the issuers.
    pub issuer_calls: Family<IssuerCallLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            leases_granted: Family::default(),
            leases_ended: Family::default(),
            revoke_failures: Family::default(),
            mint_seconds: Family::new_with_constructor(latency_histogram),
            revoke_seconds: Family::new_with_constructor(latency_histogram),
            connections_active: Family::default(),
            connections: Family::default(),
            auth_failures: Family::default(),
            bytes_forwarded: Family::default(),
            sessions_closed: Family::default(),
            issuer_requests: Family::default(),
            issuer_calls: Family::default(),
        }
    }
}

impl Metrics {
    /// Creates, at zero, the series a dashboard takes rates and quantiles of, for every
    /// configured database and role. A series whose first scrape already holds its first
    /// events is invisible to `rate()` and `increase()` (they need two samples), so without
    /// this the mints of a leasegate's first seconds never show in a latency panel.
    /// `roles` are (database, role) pairs. Takes names, not the config, so that `metrics`
    /// needs nothing from `config`.
    pub fn prime<'a>(&self, databases: impl IntoIterator<Item = &'a str>, roles: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for database in databases {
            let labels = DbLabels { database: database.to_string() };
            // Creating the child is the point; the guard it returns is dropped at once.
            drop(self.mint_seconds.get_or_create(&labels));
            drop(self.revoke_seconds.get_or_create(&labels));
        }
        for (database, role) in roles {
            drop(self.leases_granted.get_or_create(&RoleLabels { database: database.to_string(), role: role.to_string() }));
        }
    }

    /// A registry with every family, plus `lease_gauges` (what `LeaseManager::collector` gives).
    /// Counter names carry no `_total`: the encoder adds it.
    pub fn registry(&self, lease_gauges: Box<dyn Collector>) -> Registry {
        let mut r = Registry::with_prefix("leasegate");
        r.register("leases_granted", "Leases granted (database users minted)", self.leases_granted.clone());
        r.register("leases_ended", "Leases ended, by reason", self.leases_ended.clone());
        r.register("revoke_failures", "Failed revocation attempts (each is retried)", self.revoke_failures.clone());
        r.register_with_unit("mint_duration", "Time to create a database user", Unit::Seconds, self.mint_seconds.clone());
        r.register_with_unit("revoke_duration", "Time to revoke a lease, retries included", Unit::Seconds, self.revoke_seconds.clone());
        r.register("client_connections_active", "Client connections open now", self.connections_active.clone());
        r.register("client_connections", "Client connections accepted", self.connections.clone());
        r.register("auth_failures", "Failed client authentications, by method and reason", self.auth_failures.clone());
        r.register_with_unit("forwarded", "Bytes forwarded after authentication", Unit::Bytes, self.bytes_forwarded.clone());
        r.register("sessions_closed", "Sessions closed by leasegate (lease ended, max TTL, shutdown)", self.sessions_closed.clone());
        r.register(
            "issuer_requests",
            "Requests sidecars made of this issuer, by sidecar, client, call and outcome",
            self.issuer_requests.clone(),
        );
        r.register("issuer_calls", "Calls this sidecar made to its issuers, by database, call and outcome", self.issuer_calls.clone());
        r.register_collector(lease_gauges);
        r
    }
}

/// Renders the registry in the Prometheus text format (0.0.4).
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
