//! The running service: `run(config, listeners, shutdown)` is what `main` and the tests drive.
//!
//! Shutdown order (STYLE rule 7):
//! 1. stop accepting (the accept loops watch the shutdown token);
//! 2. stop granting (new logins already past accept are refused with 57P03);
//! 3. revoke every lease — this terminates its server sessions and closes its client sockets;
//! 4. wait (bounded) for connection tasks and revocations to finish, then close admin pools;
//! 5. close the journal (every transition was already written synchronously).
//!
//! Start-up order: open the journal, revoke the leases a previous run left (in the
//! background), start the orphan sweep, then accept connections.

use crate::config::{Config, DatabaseConfig, DbKind, Problem};
use crate::lease::journal::Journal;
use crate::lease::{EndReason, LeaseManager, recovery};
use crate::net::listener::accept_loop;
use crate::net::tls::{self, ServerTls};
use crate::pg::backend::Target;
use crate::pg::cancel::CancelRegistry;
use crate::pg::provision::PgProvisioner;
use crate::shutdown::Shutdown;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for revocations before giving up (users then expire by VALID UNTIL).
const SHUTDOWN_REVOKE_LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Secrets or certificates the config names cannot be used (exit 64).
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Config(Vec<Problem>),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// The lease journal cannot be opened or read: leasegate will not mint without it.
    #[error("{path}: {source}")]
    Journal { path: String, source: crate::lease::journal::JournalError },
}

/// Shared state cloned into every task.
#[derive(Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub leases: LeaseManager,
}

/// One `[[database]]` at run time: its listener's TLS, its upstream and its cancel keys.
pub struct Database {
    pub config: DatabaseConfig,
    pub app_config: Arc<Config>,
    pub client_tls: Option<ServerTls>,
    pub target: Target,
    pub cancels: CancelRegistry,
    /// Keys the mock SCRAM salts of unknown logins (stable per process).
    pub mock_key: [u8; 32],
}

/// Binds every `[[database]].listen`, by database name.
pub async fn bind(config: &Config) -> Result<HashMap<String, TcpListener>, AppError> {
    let mut listeners = HashMap::new();
    for db in &config.databases {
        let listener = TcpListener::bind(db.listen).await.map_err(|source| AppError::Bind { addr: db.listen.to_string(), source })?;
        listeners.insert(db.name.clone(), listener);
    }
    Ok(listeners)
}

/// Runs until `shutdown` is cancelled, then shuts down in the order above.
pub async fn run(config: Config, listeners: HashMap<String, TcpListener>, shutdown: Shutdown) -> Result<(), AppError> {
    start(config, listeners, shutdown).await?.finished().await;
    Ok(())
}

/// A started service: its shared state, and the task that shuts it down.
pub struct Running {
    pub app: App,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Resolves when shutdown has completed.
    pub async fn finished(self) {
        let _ = self.task.await;
    }
}

/// Starts the listeners; returns once they accept connections.
pub async fn start(config: Config, listeners: HashMap<String, TcpListener>, shutdown: Shutdown) -> Result<Running, AppError> {
    let config = Arc::new(config);
    let mut problems = Vec::new();
    let mut provisioners = HashMap::new();
    let mut databases = Vec::new();
    for (i, db) in config.databases.iter().enumerate() {
        match build_database(&config, db, i) {
            Ok((runtime, provisioner)) => {
                provisioners.insert(db.name.clone(), provisioner);
                databases.push(Arc::new(runtime));
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    if !problems.is_empty() {
        return Err(AppError::Config(problems));
    }
    for (name, p) in &provisioners {
        match p.check().await {
            Ok(()) => tracing::info!(database = %name, "admin connection works"),
            Err(e) => tracing::warn!(database = %name, error = %e, "admin connection failed; logins will fail until it works"),
        }
    }
    let journal_path = config.journal_path();
    let journal_err = |source| AppError::Journal { path: journal_path.display().to_string(), source };
    let journal = Journal::open(&journal_path).await.map_err(journal_err)?;
    let app = App { config: config.clone(), leases: LeaseManager::new(config.clone(), provisioners.clone(), journal) };
    // Users a previous run left: revoked in the background, retrying until each is gone.
    let recovered = recovery::recover(&app.leases).await.map_err(journal_err)?;
    if recovered > 0 {
        tracing::info!(leases = recovered, "revoking leases left by a previous run");
    }
    for db in &config.databases {
        tokio::spawn(recovery::sweep_orphans(app.leases.clone(), db.clone()));
    }
    let connections = TaskTracker::new();
    let mut listeners = listeners;
    let mut loops = Vec::new();
    for db in databases {
        let Some(listener) = listeners.remove(&db.config.name) else {
            continue;
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(database = %db.config.name, %addr, upstream = %db.config.upstream, "listening");
        }
        let (app, tasks) = (app.clone(), connections.clone());
        loops.push(tokio::spawn(accept_loop(listener, shutdown.clone(), tasks, move |socket, peer| {
            crate::proxy::session::run(app.clone(), db.clone(), socket, peer)
        })));
    }

    let running_app = app.clone();
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        shut_down(app, loops, connections, provisioners).await;
    });
    Ok(Running { app: running_app, task })
}

async fn shut_down(
    app: App,
    loops: Vec<tokio::task::JoinHandle<()>>,
    connections: TaskTracker,
    provisioners: HashMap<String, Arc<PgProvisioner>>,
) {
    tracing::info!("shutting down: no new connections or leases");
    for l in loops {
        let _ = l.await;
    }
    app.leases.stop_granting();
    let left = app.leases.revoke_all(EndReason::Shutdown, SHUTDOWN_REVOKE_LIMIT).await;
    if left > 0 {
        tracing::error!(leases = left, "shutdown: some users could not be dropped; they expire at their VALID UNTIL");
    }
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
    for p in provisioners.values() {
        p.close().await;
    }
    app.leases.journal().close().await;
    tracing::info!("shutdown complete");
}

fn build_database(config: &Arc<Config>, db: &DatabaseConfig, i: usize) -> Result<(Database, Arc<PgProvisioner>), Vec<Problem>> {
    let at = format!("database[{i}]");
    let mut problems = Vec::new();
    if db.kind != DbKind::Postgres {
        problems.push(Problem::new(format!("{at}.kind"), "only postgres is supported by this build"));
    }
    let admin_password =
        db.admin_password.load().map_err(|e| problems.push(Problem::new(format!("{at}.admin_password"), e.to_string()))).ok();
    if matches!(db.admin_password, crate::config::SecretSource::Inline(_)) {
        tracing::warn!(database = %db.name, "admin_password is inline in the config; use admin_password_file or admin_password_env outside dev");
    }
    let client_tls = match &db.client_tls {
        Some(t) if db.client_tls_mode() != crate::config::ClientTlsMode::Disabled => match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => tls::server_tls(cert, key, &[b"postgresql"])
                .map_err(|e| problems.push(Problem::new(format!("{at}.client_tls"), e.to_string())))
                .ok(),
            _ => None,
        },
        _ => None,
    };
    let upstream_tls = db.upstream_tls.clone().unwrap_or_default();
    let connector = tls::client_tls(upstream_tls.mode, upstream_tls.ca.as_deref())
        .map_err(|e| problems.push(Problem::new(format!("{at}.upstream_tls"), e.to_string())))
        .ok()
        .flatten();
    let (host, port) = db.upstream_host_port().unwrap_or_default();
    let (Some(admin_password), true) = (admin_password, problems.is_empty()) else {
        return Err(problems);
    };
    let target = Target {
        addr: db.upstream.clone(),
        server_name: upstream_tls.server_name.clone().unwrap_or_else(|| host.clone()),
        host,
        port,
        tls_mode: upstream_tls.mode,
        tls: connector,
        connect_timeout: db.connect_timeout,
    };
    let provisioner = Arc::new(PgProvisioner::new(db, &admin_password));
    let runtime = Database {
        config: db.clone(),
        app_config: config.clone(),
        client_tls,
        target,
        cancels: CancelRegistry::default(),
        mock_key: rand::random(),
    };
    Ok((runtime, provisioner))
}
