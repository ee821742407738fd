//! The lease engine's timing and failure paths under paused Tokio time, against the stand-in
//! provisioner (`fake`) and the in-memory store: every deadline, the revocation backoff, mint
//! failures and revocation while minting. End-to-end behaviour against real servers is in
//! `tests/`.

mod deadlines;
mod fake;
mod minting;
mod revocation;

use super::memory::MemoryStore;
use super::{Lease, LeaseManager, SessionGuard};
use crate::audit::Audit;
use crate::auth::Identity;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::provision::Provisioner;
use fake::FakeProvisioner;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const DATABASE: &str = r#"
[[database]]
name = "main"
kind = "postgres"
listen = "127.0.0.1:6432"
upstream = "127.0.0.1:5432"
admin_user = "admin"
admin_password_env = "LEASEGATE_UNIT_TEST_UNUSED"
name_prefix = "lg_"
"#;

/// Paused time moves in steps this long, every task running to idle after each, so deadlines
/// that fall on a step (all of these tests') fire exactly on time.
const STEP: Duration = Duration::from_millis(100);

struct Harness {
    manager: LeaseManager,
    fake: Arc<FakeProvisioner>,
    store: Arc<MemoryStore>,
    start: Instant,
}

impl Harness {
    /// A manager over one database with `roles` (TOML `[[role]]` tables).
    fn new(roles: &str) -> Harness {
        Harness::with(roles, FakeProvisioner::new(true))
    }

    fn with(roles: &str, fake: Arc<FakeProvisioner>) -> Harness {
        let config = Config::from_toml_str(&format!("{DATABASE}{roles}")).unwrap();
        let store = Arc::new(MemoryStore::default());
        let provisioners = [("main".to_string(), fake.clone() as Arc<dyn Provisioner>)].into_iter().collect();
        let manager = LeaseManager::new(Arc::new(config), provisioners, store.clone(), Metrics::default(), Audit::default());
        Harness { manager, fake, store, start: Instant::now() }
    }

    async fn grant(&self, client: &str, role: &str) -> SessionGuard {
        self.manager.grant(&identity(client, role), None).await.unwrap()
    }

    /// Moves paused time to `secs` after the start (what was started now runs first, now).
    async fn at(&self, secs: f64) {
        let target = self.start + Duration::from_secs_f64(secs);
        settle().await;
        while Instant::now() < target {
            tokio::time::advance(STEP.min(target - Instant::now())).await;
            settle().await;
        }
    }

    /// The state name of lease `id` now (`ended` once it has left the manager).
    fn state(&self, id: &str) -> String {
        self.manager.get(id).map_or("ended".into(), |l| l.state().as_str().into())
    }

    /// The store's (state, end reason, last error) of lease `id`.
    fn row(&self, id: &str) -> (String, Option<String>, Option<String>) {
        let r = self.store.row(id).unwrap();
        (r.state, r.end_reason, r.last_error)
    }
}

fn identity(client: &str, role: &str) -> Identity {
    Identity { client: client.into(), role: role.into() }
}

/// Lets every task that can run do so, without moving time.
async fn settle() {
    for _ in 0..32 {
        tokio::task::yield_now().await;
    }
}

fn secs(v: &[f64]) -> Vec<Duration> {
    v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
}

/// `lease`'s expiry, as time after `granted_at`.
fn expiry(lease: &Lease) -> Duration {
    lease.expires_at().duration_since(lease.granted_at).unwrap()
}
