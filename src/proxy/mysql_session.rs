//! One MySQL client connection, start to end. The same steps as `session.rs`, in the order the
//! MySQL protocol imposes (the server speaks first, and the client must see its greeting):
//! connect upstream → handshake → authenticate → grant lease → log in upstream → relay.
//!
//! Releasing is by drop, as for Postgres: the [`SessionGuard`] ends a connection-scoped lease,
//! the thread registration removes the connection id.

use super::error::SessionError;
use super::session::{ActiveConnection, drive, grant, note_auth_failure};
use crate::app::{App, Database};
use crate::auth::{self, Identity};
use crate::lease::SessionGuard;
use crate::mysql::backend::{self, Pending};
use crate::mysql::frontend::{self, ClientConn};
use crate::mysql::gate::{Gate, Kill, KillHandler};
use crate::mysql::idle::MyIdle;
use crate::mysql::packet;
use crate::net::pump::Closed;
use crate::net::pump::Pump;
use crate::net::stream::Stream;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

/// Serves one connection accepted on a MySQL listener.
pub async fn run(app: App, db: Arc<Database>, mut socket: TcpStream, peer: SocketAddr, slot: Result<Option<OwnedSemaphorePermit>, ()>) {
    let _active = ActiveConnection::new(&app, &db);
    let host = peer.ip().to_string();
    let Ok(_slot) = slot else {
        tracing::warn!(%peer, limit = ?db.config.max_client_connections, "refused: max_client_connections reached");
        frontend::refuse_at_once(&mut socket, &packet::err_payload(1040, "08004", "Too many connections")).await;
        return;
    };
    let deadline = tokio::time::Instant::now() + db.config.handshake_timeout;
    // The client's greeting is the server's, so the server connection comes first.
    let upstream = match backend::connect(&db.target).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(%peer, error = %e, "cannot reach the server");
            if let Some(err) = SessionError::from(e).to_mysql("", &host) {
                frontend::refuse_at_once(&mut socket, &err).await;
            }
            return;
        }
    };
    let mut client = match handshake(&db, socket, &upstream, deadline).await {
        Ok(client) => client,
        Err((e, reply_to)) => {
            upstream.abandon();
            tracing::debug!(%peer, error = %e, "client handshake failed");
            note_auth_failure(&app, &db, &e, "", peer);
            if let (Some(reply_to), Some(err)) = (reply_to, e.to_mysql("", &host)) {
                reply_to.answer(&err).await;
            }
            return;
        }
    };
    let admitted = async {
        let identity = authenticate(&db, &mut client, deadline).await?;
        let guard = grant(&app, &identity, peer).await?;
        Ok::<_, SessionError>((identity, guard))
    }
    .await;
    let (identity, guard) = match admitted {
        Ok(parts) => parts,
        Err(e) => {
            upstream.abandon();
            refuse(&app, &db, &mut client, &e, peer).await;
            return;
        }
    };
    let (server, ok) = match log_in_upstream(&db, &guard, &client, upstream).await {
        Ok(parts) => parts,
        Err(e) => {
            refuse(&app, &db, &mut client, &e, peer).await;
            return;
        }
    };
    relay(&app, &db, client, server, &ok, guard, &identity, peer).await;
}

/// The greeting and the client's HandshakeResponse41 (through TLS if asked), within the
/// handshake deadline. On failure, the way to answer the client when it can still read one.
async fn handshake(
    db: &Database,
    socket: TcpStream,
    upstream: &Pending,
    deadline: tokio::time::Instant,
) -> Result<ClientConn, (SessionError, Option<frontend::ReplyTo>)> {
    let limit = db.config.handshake_timeout;
    let wanted = match db.config.client_auth_plugin.as_deref() {
        Some(frontend::NATIVE) => Some(frontend::NATIVE),
        Some(frontend::CACHING_SHA2) => Some(frontend::CACHING_SHA2),
        _ => None,
    };
    let opened = frontend::open(socket, &upstream.hello, db.client_tls.as_ref(), db.config.client_tls_mode(), wanted);
    match tokio::time::timeout_at(deadline, opened).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(failed)) => Err((failed.error.into(), failed.reply_to)),
        Err(_) => Err((SessionError::HandshakeTimeout(limit), None)),
    }
}

/// Checks the client's proof; an unknown client or a refused role runs the same exchange.
async fn authenticate(db: &Database, client: &mut ClientConn, deadline: tokio::time::Instant) -> Result<Identity, SessionError> {
    if db.config.client_tls_mode() == crate::config::ClientTlsMode::Required && !client.is_tls() {
        return Err(crate::mysql::frontend::FrontendError::TlsRequired.into());
    }
    let login = client.hello.user.clone();
    let (identity, credential) = match auth::lookup(&db.app_config, &db.config.name, &login) {
        auth::Lookup::Known { identity, credential } => (Some(identity), Some(credential.clone())),
        auth::Lookup::Refused { credential } => (None, Some(credential.clone())),
        auth::Lookup::Unknown { .. } => (None, None),
    };
    let limit = db.config.handshake_timeout;
    tokio::time::timeout_at(deadline, client.authenticate(credential.as_ref(), identity.is_some()))
        .await
        .map_err(|_| SessionError::HandshakeTimeout(limit))??;
    identity.ok_or(SessionError::MyClient(crate::mysql::frontend::FrontendError::Denied { using_password: true }))
}

async fn log_in_upstream(
    db: &Database,
    guard: &SessionGuard,
    client: &ClientConn,
    upstream: Pending,
) -> Result<(Stream, Vec<u8>), SessionError> {
    let lease = guard.lease();
    Ok(upstream.login(&lease.user, &lease.password, &client.hello, db.config.connect_timeout * 2).await?)
}

async fn refuse(app: &App, db: &Database, client: &mut ClientConn, error: &SessionError, peer: SocketAddr) {
    let login = client.hello.user.clone();
    note_auth_failure(app, db, error, &login, peer);
    match error {
        SessionError::MyClient(_) | SessionError::HandshakeTimeout(_) => {
            tracing::warn!(%peer, login, error = %error, "client authentication failed")
        }
        SessionError::MyUpstream(crate::mysql::backend::BackendError::Server { .. }) => {
            tracing::warn!(%peer, login, error = %error, "session refused by the server")
        }
        _ => tracing::error!(%peer, login, error = %error, "session refused"),
    }
    if let Some(err) = error.to_mysql(&login, &peer.ip().to_string()) {
        client.send_error(&err).await;
    }
}

/// Hands the client the server's OK, then copies bytes (through the command gate) until either
/// side closes or the lease ends.
#[allow(clippy::too_many_arguments)]
async fn relay(
    app: &App,
    db: &Database,
    client: ClientConn,
    server: Stream,
    ok: &[u8],
    guard: SessionGuard,
    identity: &Identity,
    peer: SocketAddr,
) {
    let lease = guard.lease().clone();
    // The server thread of this session: the connection id both legs saw in the greeting.
    let thread = client.connection_id;
    let query_attributes = client.hello.capabilities.contains(CapabilityFlags::CLIENT_QUERY_ATTRIBUTES);
    let deprecate_eof = client.hello.capabilities.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let session_track = client.hello.capabilities.contains(CapabilityFlags::CLIENT_SESSION_TRACK);
    // With MariaDB's metadata cache or MySQL's optional metadata a result set may come without
    // its column definitions: the response tracker does not follow those sessions.
    let trackable = !client.hello.mariadb_capabilities.contains(MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA)
        && !client.hello.capabilities.contains(CapabilityFlags::CLIENT_OPTIONAL_RESULTSET_METADATA);
    let mut client_io = match client.finish(ok).await {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "client left before the session started");
            return;
        }
    };
    let _registered = db.threads.register(thread, &identity.client);
    tracing::info!(%peer, client = %identity.client, role = %identity.role, user = %lease.user, lease = %lease.id, thread, "session started");
    // After max TTL (or at shutdown) the session closes between commands, outside a transaction.
    let login_status = ok.get(1..).and_then(crate::mysql::idle::ok_status_after_header).unwrap_or(0);
    let idle = MyIdle::new(login_status, deprecate_eof, trackable);
    let on_kill = kill_handler(db, &identity.client, thread);
    let mut server_io = Gate::new(server, query_attributes, session_track, idle.shared(), on_kill);
    let outcome = drive(app, db, &lease, Pump::new(&mut client_io, &mut server_io, idle), peer).await;
    if let Some(Ok(Closed::Idle)) = outcome {
        // Between commands: the server gets COM_QUIT; the client sees the connection close, as
        // after a server's wait_timeout, and a pool opens a new one (with a new user).
        packet::write_last(server_io.get_mut(), 0, &[packet::command::QUIT]).await;
    }
    // A lease that ended under the session needs no word from leasegate: revocation KILLs the
    // server thread first, and the server's own error (1927) has come through the pump. Writing
    // one here could land inside a server packet.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), server_io.get_mut().shutdown()).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), client_io.shutdown()).await;
    drop(guard);
}

/// Runs a client's KILL aimed at one of its own other sessions through the admin connection.
fn kill_handler(db: &Database, client: &str, own: u32) -> KillHandler {
    let threads = db.threads.clone();
    let admin = db.mysql_admin.clone();
    let client = client.to_string();
    Box::new(move |k: Kill| {
        // Its own thread: the server allows that already.
        if k.thread == own {
            return None;
        }
        let owner = threads.owner(k.thread)?;
        if owner != client {
            let msg = format!("You are not owner of thread {}", k.thread);
            return Some(Box::pin(async move { Err(packet::err_payload(1095, "HY000", &msg)) }));
        }
        let admin = admin.clone()?;
        Some(Box::pin(async move {
            admin.kill(k.thread, k.query_only).await.map_err(|e| {
                tracing::warn!(thread = k.thread, error = %e, "KILL for a client failed");
                packet::err_payload(1094, "HY000", &format!("Unknown thread id: {}", k.thread))
            })
        }))
    })
}
