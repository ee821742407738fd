//! The running service: `run(config, listeners, shutdown)` is what `main` and the tests drive.
//!
//! Shutdown order (STYLE rule 7), on the first SIGTERM/SIGINT:
//! 1. `/readyz` turns unready; stop accepting (the accept loops watch the signal);
//! 2. stop granting (new logins already past accept are refused with 57P03);
//! 3. drain: every session closes at its next idle point, idle ones at once, for at most
//!    `[service].shutdown_grace` (a second signal ends the wait);
//! 4. revoke every lease — this terminates the remaining server sessions and closes their
//!    client sockets — and wait (bounded) for the users to be dropped;
//! 5. close admin pools and the journal (every transition was already written synchronously;
//!    the audit log is flushed per event); stop the admin API.
//!
//! Start-up order: open the journal, revoke the leases a previous run left (in the
//! background), start the orphan sweep, then accept connections.

use crate::admin::AdminState;
use crate::audit::Audit;
use crate::config::JournalStore;
use crate::config::{Config, DatabaseConfig, DbKind, Problem};
use crate::lease::LeaseStore;
use crate::lease::journal::Journal;
use crate::lease::pg_journal::PgJournal;
use crate::lease::{EndReason, LeaseManager, recovery};
use crate::metrics::Metrics;
use crate::mysql::Mysql;
use crate::net::listener::{Bound, accept_loop};
use crate::net::tls;
use crate::net::upstream::Target;
use crate::pg::Postgres;
use crate::provision::{Provisioner, Provisioners};
use crate::proxy::protocol::{Admission, Listener, Minter, Protocol};
use crate::service::App;
use crate::shutdown::{Shutdown, Signals};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for revocations before giving up (the journal keeps the leases, the
/// next start revokes them, and VALID UNTIL bounds them meanwhile).
const SHUTDOWN_REVOKE_LIMIT: Duration = Duration::from_secs(30);
/// The same, when a second signal already cut the drain short.
const HURRIED_REVOKE_LIMIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Secrets or certificates the config names cannot be used (exit 64).
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Config(Vec<Problem>),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    /// Shutdown ended with users that could not be dropped (exit 1); the journal still lists
    /// them, so the next start revokes them.
    #[error("{0} lease(s) could not be revoked before exit; the next start revokes them")]
    Unrevoked(usize),
    /// The shutdown task failed (panicked); leases may be left, the next start revokes them.
    #[error("shutdown failed: {0}; the next start revokes what is left")]
    ShutdownFailed(String),
    /// The lease journal cannot be opened or read: leasegate will not mint without it.
    #[error("{path}: {source}")]
    Journal { path: String, source: crate::lease::JournalError },
}

/// One `[[database]]` ready to serve: what its accept loop needs once the app exists.
struct Prepared {
    name: String,
    provisioner: Arc<dyn Provisioner>,
    /// A sidecar database's issuer client, whose watcher ends what the issuer ended.
    remote: Option<Arc<crate::issuer::remote::RemoteProvisioner>>,
    /// The client leg's TLS, watched for file changes while the service runs.
    client_tls: Option<crate::net::reload::ReloadableTls>,
    serve: Box<dyn Fn(App, Bound, Shutdown, TaskTracker) -> tokio::task::JoinHandle<()> + Send>,
}

/// The sockets `start` serves: those of each `[[database]]` (by name) and the admin API's.
pub struct Listeners {
    pub databases: HashMap<String, Vec<Bound>>,
    pub admin: Option<TcpListener>,
    /// `[issuer].listen`: the API sidecars call.
    pub issuer: Option<TcpListener>,
}

/// Binds every `[[database]].listen` and `[admin].listen`.
pub async fn bind(config: &Config) -> Result<Listeners, AppError> {
    let mut databases = HashMap::new();
    for db in &config.databases {
        let mut bound = Vec::new();
        for addr in &db.listen.0 {
            bound.push(Bound::bind(addr, &db.unix_socket).await.map_err(|source| AppError::Bind { addr: addr.to_string(), source })?);
        }
        databases.insert(db.name.clone(), bound);
    }
    let admin = match &config.admin {
        Some(a) => Some(TcpListener::bind(a.listen).await.map_err(|source| AppError::Bind { addr: a.listen.to_string(), source })?),
        None => None,
    };
    let issuer = match &config.issuer {
        Some(i) => Some(TcpListener::bind(i.listen).await.map_err(|source| AppError::Bind { addr: i.listen.to_string(), source })?),
        None => None,
    };
    Ok(Listeners { databases, admin, issuer })
}

/// Runs until `signals.begin` is cancelled, then shuts down in the order above.
pub async fn run(config: Config, listeners: Listeners, signals: Signals) -> Result<(), AppError> {
    match start(config, listeners, signals).await?.finished().await? {
        0 => Ok(()),
        left => Err(AppError::Unrevoked(left)),
    }
}

/// A started service: its shared state, and the task that shuts it down.
pub struct Running {
    pub app: App,
    task: tokio::task::JoinHandle<usize>,
}

impl Running {
    /// Resolves when shutdown has completed, with the number of leases left unrevoked.
    pub async fn finished(self) -> Result<usize, AppError> {
        // A shutdown that panicked revoked who knows what: never a clean exit.
        self.task.await.map_err(|e| AppError::ShutdownFailed(e.to_string()))
    }
}

/// Starts the listeners; returns once they accept connections.
pub async fn start(config: Config, listeners: Listeners, signals: Signals) -> Result<Running, AppError> {
    let config = Arc::new(config);
    let metrics = Metrics::default();
    let databases = build_databases(&config, &metrics)?;
    let provisioners: Provisioners = databases.iter().map(|d| (d.name.clone(), d.provisioner.clone())).collect();
    for (name, p) in &provisioners {
        match p.check().await {
            Ok(()) => tracing::info!(database = %name, "admin connection works"),
            Err(e) => tracing::warn!(database = %name, error = %e, "admin connection failed; logins will fail until it works"),
        }
    }
    let (journal, journal_name) = open_store(&config).await?;
    let journal_err = |source| AppError::Journal { path: journal_name.clone(), source };
    let audit_path = config.audit.as_ref().map(|a| a.path.clone());
    let audit = Audit::open(audit_path.as_deref())
        .map_err(|e| AppError::Config(vec![Problem::new("audit.path", format!("{}: {e}", audit_path.unwrap_or_default().display()))]))?;
    metrics.prime(config.databases.iter().map(|d| d.name.as_str()), config.roles.iter().map(|r| (r.database.as_str(), r.name.as_str())));
    let leases = LeaseManager::new(config.clone(), provisioners.clone(), journal, metrics.clone(), audit.clone());
    let jwt = crate::identity::jwt::Verifiers::new(&config.jwt_issuers)
        .map_err(|e| AppError::Config(vec![Problem::new("jwt_issuer", e.to_string())]))?;
    // The first fetch of keys from URLs; a failure is logged and retried on the refresh.
    jwt.start().await;
    drop(jwt.spawn_refresh(signals.stopped.clone()));
    let app = App { config: config.clone(), leases, metrics, audit, jwt };
    // Users a previous run left: revoked in the background, retrying until each is gone.
    let recovered = recovery::recover(&app.leases).await.map_err(journal_err)?;
    if !recovered.is_empty() {
        tracing::info!(leases = recovered.len(), "revoking leases left by a previous run");
    }
    let sweeps: Vec<_> = config.databases.iter().map(|db| tokio::spawn(recovery::sweep_orphans(app.leases.clone(), db.clone()))).collect();
    tokio::spawn(prune_journal(app.leases.clone(), config.journal_retention(), signals.stopped.clone()));
    tokio::spawn(app.leases.clone().live_in_fleet(config.journal_takeover_after(), signals.stopped.clone()));
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(become_ready(app.leases.clone(), recovered, sweeps, ready.clone(), signals.begin.clone()));
    let admin = match listeners.admin {
        Some(listener) => {
            Some(tokio::spawn(crate::admin::serve(listener, admin_state(&app, &ready, &provisioners)?, signals.stopped.clone())))
        }
        None => None,
    };
    for db in &databases {
        if let Some(tls) = &db.client_tls {
            tokio::spawn(tls.clone().watch(db.name.clone(), signals.stopped.clone()));
        }
        if let Some(remote) = &db.remote {
            let watch = crate::issuer::remote::watch(app.leases.clone(), db.name.clone(), remote.clone(), signals.stopped.clone());
            tokio::spawn(watch);
        }
    }
    if let (Some(listener), Some(section)) = (listeners.issuer, &config.issuer) {
        let t = &section.tls;
        let tls = tls::server_tls_with(&t.cert, &t.key, t.client_ca.as_deref(), &[b"http/1.1"])
            .map_err(|e| AppError::Config(vec![Problem::new("issuer.tls", e.to_string())]))?;
        tokio::spawn(crate::issuer::server::serve(listener, tls, app.clone(), signals.stopped.clone()));
    }
    let connections = TaskTracker::new();
    let loops = spawn_listeners(&app, databases, listeners.databases, &signals, &connections);

    let running_app = app.clone();
    let task = tokio::spawn(async move {
        signals.begin.cancelled().await;
        ready.store(false, Ordering::Release);
        let left = shut_down(app, loops, connections, provisioners, &signals).await;
        signals.stopped.cancel();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        left
    });
    Ok(Running { app: running_app, task })
}

/// Opens the lease store the config names: the SQLite file, or the shared Postgres store (its
/// URL read from `url_file`/`url_env`). Returns it and a name for errors (never the URL: it may
/// carry a password).
async fn open_store(config: &Config) -> Result<(Arc<dyn LeaseStore>, String), AppError> {
    match config.journal_store() {
        JournalStore::Sqlite(path) => {
            let name = path.display().to_string();
            match Journal::open(&path, config.journal_instance()).await {
                Ok(j) => Ok((Arc::new(j), name)),
                Err(source) => Err(AppError::Journal { path: name, source }),
            }
        }
        JournalStore::Postgres(source) => {
            let name = "the shared store ([journal] url)".to_string();
            let url = source.load().map_err(|e| AppError::Config(vec![Problem::new("journal.url_file", e.to_string())]))?;
            let instance = config.journal_instance().map_or_else(crate::lease::pg_journal::generated_instance, str::to_string);
            match PgJournal::open(url.expose(), &instance, config.journal_takeover_after()).await {
                Ok(j) => Ok((Arc::new(j), name)),
                Err(source) => Err(AppError::Journal { path: name, source }),
            }
        }
    }
}

/// Deletes long-ended leases from the journal at start and then hourly, so it stays small.
async fn prune_journal(leases: LeaseManager, retain: Duration, stopped: crate::shutdown::Shutdown) {
    loop {
        match leases.journal().prune(retain).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, retain = ?retain, "pruned ended leases from the journal"),
            Err(e) => tracing::warn!(error = %e, "pruning the journal failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stopped.cancelled() => return,
        }
    }
}

/// `/readyz` turns ready once what a previous run left is revoked and the orphan sweep is
/// done (unless shutdown began meanwhile).
async fn become_ready(
    leases: LeaseManager,
    recovered: Vec<String>,
    sweeps: Vec<tokio::task::JoinHandle<()>>,
    ready: Arc<AtomicBool>,
    begin: crate::shutdown::Shutdown,
) {
    for sweep in sweeps {
        let _ = sweep.await;
    }
    while recovered.iter().any(|id| leases.get(id).is_some()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !begin.is_cancelled() {
        ready.store(true, Ordering::Release);
        tracing::info!("ready: recovery and orphan sweep done");
    }
}

fn admin_state(app: &App, ready: &Arc<AtomicBool>, provisioners: &Provisioners) -> Result<AdminState, AppError> {
    let token = app.config.admin_token().map_err(|p| AppError::Config(vec![p]))?.map(Arc::new);
    let registry = Arc::new(app.metrics.registry(app.leases.collector()));
    Ok(AdminState { app: app.clone(), token, registry, ready: ready.clone(), provisioners: provisioners.clone(), checked: Arc::default() })
}

/// Starts one accept loop per prepared `[[database]]`.
fn spawn_listeners(
    app: &App,
    databases: Vec<Prepared>,
    mut listeners: HashMap<String, Vec<Bound>>,
    signals: &Signals,
    connections: &TaskTracker,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut loops = Vec::new();
    for db in databases {
        for listener in listeners.remove(&db.name).unwrap_or_default() {
            loops.push((db.serve)(app.clone(), listener, signals.begin.clone(), connections.clone()));
        }
    }
    loops
}

/// The accept loop of one listener of protocol `P`: every connection runs the session pipeline.
fn serve<P: Protocol>(
    l: Arc<Listener<P>>,
    app: App,
    listener: Bound,
    stop: Shutdown,
    tasks: TaskTracker,
    limit: Option<Arc<Semaphore>>,
) -> tokio::task::JoinHandle<()> {
    tracing::info!(database = %l.db.name, addr = %listener.describe(), upstream = %l.db.upstream, "listening");
    tokio::spawn(accept_loop(listener, stop, tasks, move |socket, peer| {
        // Over the limit the client is turned away by the protocol, as a full server does.
        let slot = limit.as_ref().map(|l| l.clone().try_acquire_owned());
        let admission = if matches!(slot, Some(Err(_))) { Admission::Full } else { Admission::Admit };
        let (app, l) = (app.clone(), l.clone());
        async move {
            let _slot = slot;
            crate::proxy::session::run(app, l, socket, peer, admission).await
        }
    }))
}

/// Shutdown, in the order the module docs give.
async fn shut_down(
    app: App,
    loops: Vec<tokio::task::JoinHandle<()>>,
    connections: TaskTracker,
    provisioners: Provisioners,
    signals: &Signals,
) -> usize {
    let grace = app.config.service.shutdown_grace;
    tracing::info!(grace = ?grace, "shutting down: no new connections or leases; sessions close at their next idle point");
    for l in loops {
        let _ = l.await;
    }
    app.leases.stop_granting();
    // Drain: every session closes at its next idle point (idle ones at once).
    for lease in app.leases.list() {
        lease.start_draining(crate::lease::DrainReason::Shutdown);
    }
    connections.close();
    tokio::select! {
        _ = connections.wait() => {}
        _ = tokio::time::sleep(grace) => tracing::warn!("shutdown grace over; closing the remaining sessions"),
        _ = signals.hurry.cancelled() => tracing::warn!("second signal; closing the remaining sessions now"),
    }
    // Bounded, and a further signal ends it (after a signal has already cut the drain short,
    // the bound is shorter).
    let hurried = signals.hurry.is_cancelled();
    let limit = if hurried { HURRIED_REVOKE_LIMIT } else { SHUTDOWN_REVOKE_LIMIT };
    let left = tokio::select! {
        left = app.leases.revoke_all(EndReason::Shutdown, limit) => left,
        _ = signals.hurry.cancelled(), if !hurried => app.leases.list().len(),
    };
    if left > 0 {
        tracing::error!(leases = left, "shutdown: some users could not be dropped; they are revoked at the next start");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
    for p in provisioners.values() {
        p.close().await;
    }
    if left == 0
        && let Some(fleet) = app.leases.journal().fleet()
        && let Err(e) = fleet.deregister().await
    {
        tracing::warn!(error = %e, "could not mark this instance stopped in the shared store; others will find it silent and own nothing");
    }
    app.leases.journal().close().await;
    tracing::info!("shutdown complete");
    left
}

/// Every database's provisioner (admin connections open lazily), built as `serve` builds them:
/// what `leasegate doctor` checks.
pub fn provisioners(config: &Arc<Config>) -> Result<Vec<crate::provision::Named>, AppError> {
    Ok(build_databases(config, &Metrics::default())?.into_iter().map(|p| (p.name, p.provisioner)).collect())
}

fn build_databases(config: &Arc<Config>, metrics: &Metrics) -> Result<Vec<Prepared>, AppError> {
    let mut problems = Vec::new();
    let mut prepared = Vec::new();
    for (i, db) in config.databases.iter().enumerate() {
        // The one line per protocol: which implementation serves which `kind`.
        let built = match db.kind {
            DbKind::Postgres => prepare::<Postgres>(config, db, i, metrics),
            DbKind::Mysql => prepare::<Mysql>(config, db, i, metrics),
        };
        match built {
            Ok(p) => prepared.push(p),
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() { Ok(prepared) } else { Err(AppError::Config(problems)) }
}

/// Loads the database's secrets and certificates and builds its listener and provisioner.
fn prepare<P: Protocol>(config: &Arc<Config>, db: &DatabaseConfig, i: usize, metrics: &Metrics) -> Result<Prepared, Vec<Problem>> {
    let at = format!("database[{i}]");
    let mut problems = Vec::new();
    // A sidecar database asks its issuer; any other holds its admin password.
    let remote = db.issuer.as_ref().and_then(|issuer| {
        crate::issuer::remote::RemoteProvisioner::new(db, issuer, metrics.issuer_calls.clone())
            .map_err(|e| problems.push(Problem::new(format!("{at}.issuer"), e)))
            .ok()
            .map(Arc::new)
    });
    let admin_password = match &db.admin_password {
        Some(source) => {
            if matches!(source, crate::config::SecretSource::Inline(_)) {
                tracing::warn!(database = %db.name, "admin_password is inline in the config; use admin_password_file or admin_password_env outside dev");
            }
            source.load().map_err(|e| problems.push(Problem::new(format!("{at}.admin_password"), e.to_string()))).ok()
        }
        None => None,
    };
    let client_tls = match &db.client_tls {
        Some(t) if db.client_tls_mode() != crate::config::ClientTlsMode::Disabled => match (&t.cert, &t.key) {
            (Some(cert), Some(key)) => crate::net::reload::ReloadableTls::load(cert.clone(), key.clone(), t.client_ca.clone(), P::ALPN)
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
    if !problems.is_empty() {
        return Err(problems);
    }
    let minter = match (&admin_password, &remote) {
        (Some(password), _) => Minter::Admin(password),
        (None, Some(remote)) => Minter::Issuer(remote.clone()),
        (None, None) => return Err(vec![Problem::new(at, "neither admin credentials nor an issuer")]),
    };
    let target = Target {
        addr: db.upstream.clone(),
        server_name: upstream_tls.server_name.clone().unwrap_or_else(|| host.clone()),
        host,
        port,
        tls_mode: upstream_tls.mode,
        tls: connector,
        connect_timeout: db.connect_timeout,
        allow_trust: db.allow_upstream_trust,
    };
    let (state, provisioner) = P::prepare(config, db, minter);
    let handshakes = crate::net::handshakes::Handshakes::new(db.max_handshakes);
    let listener =
        Arc::new(Listener::<P> { db: db.clone(), config: config.clone(), client_tls: client_tls.clone(), target, handshakes, state });
    let limit = db.max_client_connections.map(|n| Arc::new(Semaphore::new(n)));
    Ok(Prepared {
        name: db.name.clone(),
        provisioner,
        remote,
        client_tls,
        // One bound on connections for all of the listener's addresses.
        serve: Box::new(move |app, socket, stop, tasks| serve(listener.clone(), app, socket, stop, tasks, limit.clone())),
    })
}
