//! `App`: the running service's shared state (config, leases, metrics, audit), cloned into
//! every task (STYLE rule 6). A leaf module: the wiring in `app.rs`, the session pipeline and
//! the admin API all take it, and it imports none of them.

use crate::audit::Audit;
use crate::config::Config;
use crate::identity::jwt::Verifiers;
use crate::lease::LeaseManager;
use crate::metrics::Metrics;
use std::sync::Arc;

/// Shared state cloned into every task.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub leases: LeaseManager,
    pub metrics: Metrics,
    pub audit: Audit,
    /// Checks the tokens of `jwt` clients against their issuers' keys.
    pub jwt: Verifiers,
}
