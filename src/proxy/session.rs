//! One client connection, start to end, as a short list of named steps:
//! handshake → authenticate → grant lease → connect upstream → relay → release.
//!
//! Each step returns what the next consumes; any failure becomes one reply to the client
//! (mapped in `error.rs`) and the session ends. Releasing is by drop: the lease's
//! [`SessionGuard`] ends a connection-scoped lease, the cancel registration removes the key.

use super::error::{Reply, SessionError};
use crate::app::{App, Database};
use crate::audit;
use crate::auth::{self, Identity};
use crate::lease::{DrainReason, Lease, SessionGuard};
use crate::metrics::{ConnLabels, DirectionLabels, ReasonLabels};
use crate::net::pump::{Closed, Observer, Pump, PumpError, Transferred};
use crate::net::stream::Stream;
use crate::pg::backend::ServerConn;
use crate::pg::frontend::{self, ClientConn, Opened};
use crate::pg::idle::PgIdle;
use crate::pg::message::ErrorResponse;
use crate::pg::scram;
use crate::pg::sqlstate;
use prometheus_client::metrics::gauge::Gauge;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// Serves one connection accepted on a Postgres listener. `slot` is its place under
/// `max_client_connections` (`Err`: the listener is full).
pub async fn run(app: App, db: Arc<Database>, socket: TcpStream, peer: SocketAddr, slot: Result<Option<OwnedSemaphorePermit>, ()>) {
    let _active = ActiveConnection::new(&app, &db);
    // One deadline for everything the client drives: TLS, startup and authentication.
    let deadline = tokio::time::Instant::now() + db.config.handshake_timeout;
    let mut client = match handshake(&db, socket, deadline).await {
        Ok(Some(client)) => client,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "client handshake failed");
            note_auth_failure(&app, &db, &e, "", peer);
            return;
        }
    };
    let login = client.user().to_string();
    let Ok(_slot) = slot else {
        tracing::warn!(%peer, login, limit = ?db.config.max_client_connections, "refused: max_client_connections reached");
        client.send_error(&ErrorResponse::fatal(sqlstate::TOO_MANY_CONNECTIONS, "sorry, too many clients already")).await;
        return;
    };
    let result = async {
        let identity = authenticate(&db, &mut client, deadline).await?;
        let guard = grant(&app, &identity, peer).await?;
        let server = connect_upstream(&db, &guard, &client).await?;
        Ok::<_, SessionError>((identity, guard, server))
    }
    .await;
    let (identity, guard, server) = match result {
        Ok(parts) => parts,
        Err(e) => {
            note_auth_failure(&app, &db, &e, &login, peer);
            refuse(&mut client, &e, &login, peer).await;
            return;
        }
    };
    relay(&app, &db, client, server, guard, &identity, peer).await;
}

/// Counts an open client connection for as long as it lives.
pub(super) struct ActiveConnection(Gauge);

impl ActiveConnection {
    pub(super) fn new(app: &App, db: &Database) -> Self {
        let protocol = match db.config.kind {
            crate::config::DbKind::Postgres => "postgres",
            crate::config::DbKind::Mysql => "mysql",
        };
        let labels = ConnLabels { database: db.config.name.clone(), protocol: protocol.into() };
        app.metrics.connections.get_or_create(&labels).inc();
        let gauge = app.metrics.connections_active.get_or_create(&labels).clone();
        gauge.inc();
        ActiveConnection(gauge)
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Metrics and audit for a failed client authentication (not for server-side refusals).
pub(super) fn note_auth_failure(app: &App, db: &Database, error: &SessionError, login: &str, peer: SocketAddr) {
    let Some(reason) = error.auth_failure_reason() else { return };
    app.metrics.auth_failures.get_or_create(&ReasonLabels { database: db.config.name.clone(), reason: reason.into() }).inc();
    app.audit.record(&audit::Event {
        event: "auth_failed",
        client: (!login.is_empty()).then_some(login),
        database: Some(&db.config.name),
        peer: Some(peer),
        reason: Some(reason),
        ..Default::default()
    });
}

/// TLS, startup and protocol negotiation, bounded by `handshake_timeout` with authentication.
/// A CancelRequest is served here and yields `None`.
async fn handshake(db: &Database, socket: TcpStream, deadline: tokio::time::Instant) -> Result<Option<ClientConn>, SessionError> {
    let limit = db.config.handshake_timeout;
    let opened = tokio::time::timeout_at(deadline, frontend::open(socket, db.client_tls.as_ref(), db.config.client_tls_mode()))
        .await
        .map_err(|_| SessionError::HandshakeTimeout(limit))??;
    match opened {
        Opened::Session(client) => Ok(Some(client)),
        Opened::Cancel(key) => {
            db.cancels.forward(&key, &db.target).await;
            Ok(None)
        }
        Opened::Gone => Ok(None),
    }
}

/// SCRAM against the client's verifier; an unknown client or role runs a mock exchange.
async fn authenticate(db: &Database, client: &mut ClientConn, deadline: tokio::time::Instant) -> Result<Identity, SessionError> {
    let login = client.user().to_string();
    let (identity, verifier) = match auth::lookup(&db.app_config, &db.config.name, &login) {
        auth::Lookup::Known { identity, credential } => (Some(identity), credential.scram.clone()),
        auth::Lookup::Refused { credential } => (None, credential.scram.clone()),
        auth::Lookup::Unknown { client } => (None, scram::mock_verifier(client, &db.mock_key)),
    };
    let limit = db.config.handshake_timeout;
    tokio::time::timeout_at(deadline, client.authenticate(&verifier, identity.is_some()))
        .await
        .map_err(|_| SessionError::HandshakeTimeout(limit))??;
    // authenticate() fails for every unknown login, so identity is set here.
    identity.ok_or(SessionError::Client(frontend::FrontendError::Scram(scram::ScramError::Proof)))
}

pub(super) async fn grant(app: &App, identity: &Identity, peer: SocketAddr) -> Result<SessionGuard, SessionError> {
    Ok(app.leases.grant(identity, Some(peer)).await?)
}

/// Logs in to the server as the lease's user with the client's startup parameters.
async fn connect_upstream(db: &Database, guard: &SessionGuard, client: &ClientConn) -> Result<ServerConn, SessionError> {
    let lease = guard.lease();
    let server = db.target.login(&lease.user, &lease.password, &client.startup.params).await?;
    // Only a database the user really got into can hold objects it creates (the server's
    // default database is the user name).
    guard.note_database(client.startup.param("database").unwrap_or(&lease.user)).await;
    Ok(server)
}

/// Tells the client why it is refused, and logs it.
async fn refuse(client: &mut ClientConn, error: &SessionError, login: &str, peer: SocketAddr) {
    match error {
        SessionError::Client(_) | SessionError::HandshakeTimeout(_) => {
            tracing::warn!(%peer, login, error = %error, "client authentication failed");
        }
        // The server refusing the client's own request (unknown database…) is not our fault.
        SessionError::Upstream(crate::pg::backend::BackendError::Server { .. }) => {
            tracing::warn!(%peer, login, error = %error, "session refused by the server")
        }
        _ => tracing::error!(%peer, login, error = %error, "session refused"),
    }
    match error.to_pg(login) {
        Reply::Error(e) => client.send_error(&e).await,
        Reply::Relay(raw) => client.send_raw(&raw).await,
        Reply::Nothing => {}
    }
}

/// Hands the client its AuthenticationOk and the server's greeting, then copies bytes until
/// either side closes or the lease ends.
async fn relay(
    app: &App,
    db: &Database,
    client: ClientConn,
    server: ServerConn,
    guard: SessionGuard,
    identity: &Identity,
    peer: SocketAddr,
) {
    let lease = guard.lease().clone();
    let _cancel = server.cancel_key.as_ref().map(|k| db.cancels.register(k));
    let ServerConn { stream: mut server_io, read_ahead, greeting, .. } = server;
    let (mut client_io, client_ahead) = match client.finish(&greeting).await {
        Ok(parts) => parts,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "client left before the session started");
            return;
        }
    };
    tracing::info!(%peer, client = %identity.client, role = %identity.role, user = %lease.user, lease = %lease.id, "session started");
    // Nothing read ahead during the handshake may be lost.
    if let Err(e) = forward_read_ahead(&mut client_io, &client_ahead, &mut server_io, &read_ahead).await {
        tracing::debug!(%peer, error = %e, "connection closed during hand-off");
        return;
    }
    // The observer must see every byte, the ones forwarded during the hand-off too.
    let mut idle = PgIdle::default();
    idle.client_bytes(&client_ahead);
    idle.server_bytes(&read_ahead);
    let outcome = drive(app, db, &lease, Pump::new(&mut client_io, &mut server_io, idle), peer).await;
    if let Some(Ok(Closed::Idle)) = outcome {
        say_goodbye(&mut client_io, &mut server_io, lease.drain_reason()).await;
    }
    // A TLS client gets close_notify; bounded so a stuck peer cannot hold the task.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client_io.shutdown()).await;
    drop(guard);
}

async fn forward_read_ahead(client: &mut Stream, client_ahead: &[u8], server: &mut Stream, server_ahead: &[u8]) -> std::io::Result<()> {
    if !client_ahead.is_empty() {
        server.write_all(client_ahead).await?;
        server.flush().await?;
    }
    if !server_ahead.is_empty() {
        client.write_all(server_ahead).await?;
        client.flush().await?;
    }
    Ok(())
}

/// At an idle point after max TTL: the client gets the FATAL a server sends when it terminates a
/// session (so a pool discards the connection and opens a new one), the server a Terminate.
async fn say_goodbye(client: &mut Stream, server: &mut Stream, why: DrainReason) {
    let mut out = bytes::BytesMut::new();
    let message = match why {
        DrainReason::MaxTtl => "terminating connection because its database credentials reached their max TTL",
        DrainReason::Shutdown => "terminating connection because leasegate is shutting down",
    };
    ErrorResponse::fatal(sqlstate::ADMIN_SHUTDOWN, message).encode(&mut out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client.write_all(&out)).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), server.write_all(b"X\0\0\0\x04")).await;
}

/// Runs the pump until either side closes (`Some`) or the lease ends (`None`), closing at the
/// next idle point once the lease drains (max TTL, shutdown); then counts and logs the end.
pub(super) async fn drive<C, S, O>(app: &App, db: &Database, lease: &Lease, mut pump: Pump<'_, C, S, O>, peer: SocketAddr) -> Outcome
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
    O: Observer + Unpin,
{
    let mut bytes_metric = ByteCounter::new(app, db);
    let mut report = tokio::time::interval(BYTES_REPORT_INTERVAL);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            r = &mut pump => break Some(r),
            _ = lease.ended.cancelled() => break None,
            // Max TTL: finish at the next idle point so no transaction is cut.
            _ = lease.drain.cancelled(), if !pump.closing_at_idle() => pump.close_at_idle(),
            // Long sessions show up in the byte counters while they run, not only at the end.
            _ = report.tick() => bytes_metric.report(pump.transferred()),
        }
    };
    let bytes = pump.transferred();
    bytes_metric.report(bytes);
    log_end(&outcome, bytes, &lease.user, peer);
    count_end(app, db, &outcome, lease.drain_reason());
    outcome
}

/// How a relayed session ended: a side closed or failed (`Some`), or the lease ended (`None`).
pub(super) type Outcome = Option<Result<Closed, PumpError>>;

const BYTES_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Adds a session's forwarded bytes to the counters as they grow.
struct ByteCounter {
    up: prometheus_client::metrics::counter::Counter,
    down: prometheus_client::metrics::counter::Counter,
    reported: Transferred,
}

impl ByteCounter {
    fn new(app: &App, db: &Database) -> Self {
        let family = &app.metrics.bytes_forwarded;
        let labels = |direction: &str| DirectionLabels { database: db.config.name.clone(), direction: direction.into() };
        // One get_or_create per statement: its read guard must be gone before the next one
        // (which may take the write lock) or the family deadlocks.
        let up = family.get_or_create(&labels("client_to_server")).clone();
        let down = family.get_or_create(&labels("server_to_client")).clone();
        ByteCounter { up, down, reported: Transferred::default() }
    }

    fn report(&mut self, now: Transferred) {
        self.up.inc_by(now.client_to_server - self.reported.client_to_server);
        self.down.inc_by(now.server_to_client - self.reported.server_to_client);
        self.reported = now;
    }
}

fn count_end(app: &App, db: &Database, outcome: &Option<Result<Closed, PumpError>>, why: DrainReason) {
    let m = &app.metrics;
    let database = db.config.name.clone();
    let closed_by_us = match outcome {
        None => Some("lease_ended"),
        Some(Ok(Closed::Idle)) if why == DrainReason::Shutdown => Some("shutdown"),
        Some(Ok(Closed::Idle)) => Some("idle_after_max_ttl"),
        _ => None,
    };
    if let Some(reason) = closed_by_us {
        m.sessions_closed.get_or_create(&ReasonLabels { database, reason: reason.into() }).inc();
    }
}

fn log_end(outcome: &Option<Result<Closed, PumpError>>, bytes: Transferred, user: &str, peer: SocketAddr) {
    let (up, down) = (bytes.client_to_server, bytes.server_to_client);
    match outcome {
        Some(Ok(closed)) => {
            let closed_by = match closed {
                Closed::Client => "client",
                Closed::Server => "server",
                Closed::Idle => "leasegate_at_idle_point",
            };
            tracing::info!(%peer, %user, closed_by, bytes_up = up, bytes_down = down, "session ended")
        }
        Some(Err(e)) => tracing::info!(%peer, %user, error = %e, bytes_up = up, bytes_down = down, "session ended"),
        None => tracing::info!(%peer, %user, bytes_up = up, bytes_down = down, "session closed: lease ended"),
    }
}
