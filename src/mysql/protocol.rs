//! MySQL/MariaDB as a [`Protocol`] of the session pipeline: the client leg (`frontend.rs`), the
//! server leg (`backend.rs`), the command gate (`gate.rs`), the idle tracker (`idle.rs`) and
//! the error map (`errcode.rs`) wired to the pipeline's steps.
//!
//! The server speaks first and its greeting carries what a client keeps (connection id,
//! version, capabilities): `open` greets from the last server greeting (`greeting.rs`), so the
//! client authenticates before any server connection is opened for it, in Postgres's order.
//! Only the first client after start, before any greeting was seen, waits for one.

use super::backend::{self, BackendError, Pending};
use super::errcode;
use super::frontend::{self, ClientConn, FrontendError, ReplyTo};
use super::gate::{Gate, Kill, KillHandler};
use super::greeting::{self, GreetingCache};
use super::idle::MyIdle;
use super::packet::{command, err_payload};
use super::packet_io;
use super::provision::MyProvisioner;
use super::threads::{Registration, Threads};
use crate::auth::PasswordCheck;
use crate::config::{Config, DatabaseConfig};
use crate::lease::{DrainReason, SessionGuard};
use crate::net::hold::Holdable;
use crate::net::stream::Stream;
use crate::provision::Provisioner;
use crate::proxy::protocol::{Admission, Listener, Live, Minter, Opened, Protocol, RefusalOf};
use crate::proxy::refusal::{Denial, Refusal, ServerSaid};
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities};
use std::sync::Arc;
use tokio::time::Instant;

/// MySQL 8 and MariaDB clients and servers (protocol 4.1).
pub struct Mysql;

/// A MySQL listener's own state.
pub struct MyState {
    /// The server threads of live sessions, for KILL from a client's other connection.
    pub threads: Threads,
    /// The greeting new clients get.
    pub greeting: GreetingCache,
    /// The admin connection that runs such a KILL (none on a sidecar, which holds no admin
    /// credential: there a KILL of another session answers "Unknown thread id").
    pub admin: Option<Arc<MyProvisioner>>,
}

/// A greeted client, and the server connection whose greeting it got when it was not greeted
/// from the cache.
pub struct MyClient {
    conn: ClientConn,
    upstream: Option<Pending>,
}

/// A server connection logged in as the lease's user, and its OK for the client.
pub struct MyServer {
    stream: Stream,
    ok: Vec<u8>,
    user: String,
    /// The server's id for this session's thread.
    thread: u32,
}

impl Protocol for Mysql {
    const NAME: &'static str = "mysql";
    // MySQL clients send no ALPN.
    const ALPN: &'static [&'static [u8]] = &[];
    type State = MyState;
    type Client = MyClient;
    type Reply = ReplyTo;
    type Server = MyServer;
    type ClientIo = Stream;
    type ServerIo = Gate<Holdable<Stream>>;
    type Observer = MyIdle;
    type Registration = Registration;
    type ClientError = FrontendError;
    type UpstreamError = BackendError;

    fn prepare(_config: &Config, db: &DatabaseConfig, minter: Minter<'_>) -> (MyState, Arc<dyn Provisioner>) {
        let (admin, provisioner): (Option<Arc<MyProvisioner>>, Arc<dyn Provisioner>) = match minter {
            Minter::Admin(password) => {
                let admin = Arc::new(MyProvisioner::new(db, password));
                (Some(admin.clone()), admin)
            }
            Minter::Issuer(remote) => (None, remote),
        };
        (MyState { threads: Threads::default(), greeting: GreetingCache::default(), admin }, provisioner)
    }

    async fn open(l: &Listener<Self>, socket: Stream, admission: Admission, deadline: Instant) -> Opened<Self> {
        if admission == Admission::Full {
            return Opened::Failed(Refusal::TooManyClients, Some(ReplyTo::instead_of_greeting(socket)));
        }
        // Greeted from the cache: no server connection until the client has proven itself.
        // Before any server was seen, the server connection comes first.
        let (hello, upstream) = match l.state.greeting.greeting() {
            Some(hello) => (hello, None),
            None => match backend::connect(&l.target).await {
                Ok(p) => {
                    l.state.greeting.remember(&p.hello);
                    (p.hello.clone(), Some(p))
                }
                Err(e) => return Opened::Failed(upstream_refusal(e), Some(ReplyTo::instead_of_greeting(socket))),
            },
        };
        let wanted = l.db.client_auth_plugin.map(|p| p.name());
        let tls = l.client_tls.as_ref().map(|t| t.current());
        let opened = frontend::open(socket, &hello, tls.as_deref(), l.db.client_tls_mode(), wanted);
        let outcome = tokio::time::timeout_at(deadline, opened).await;
        match outcome {
            Ok(Ok(conn)) => return Opened::Client(MyClient { conn, upstream }),
            _ => {
                if let Some(upstream) = upstream {
                    upstream.abandon();
                }
            }
        }
        match outcome {
            Ok(Err(failed)) => Opened::Failed(refusal(failed.error), failed.reply_to),
            _ => Opened::Failed(Refusal::HandshakeTimeout(l.db.handshake_timeout), None),
        }
    }

    fn login(c: &MyClient) -> &str {
        &c.conn.hello.user
    }

    fn is_tls(c: &MyClient) -> bool {
        c.conn.is_tls()
    }

    fn client_certificate(c: &MyClient) -> Option<&[u8]> {
        c.conn.peer_certificate()
    }

    /// mysql_native_password or caching_sha2_password against the client's hashes; an unknown
    /// client runs the same exchange against a random hash.
    async fn check_password(_l: &Listener<Self>, c: &mut MyClient, check: PasswordCheck<'_>) -> Result<(), RefusalOf<Self>> {
        let (credential, allowed) = match check {
            PasswordCheck::Genuine(credential) => (Some(credential), true),
            PasswordCheck::Refused(credential) => (Some(credential), false),
            PasswordCheck::Mock(_) => (None, false),
        };
        c.conn.authenticate(credential, allowed).await.map_err(refusal)
    }

    async fn read_cleartext(c: &mut MyClient) -> Result<zeroize::Zeroizing<Vec<u8>>, RefusalOf<Self>> {
        c.conn.read_cleartext().await.map_err(refusal)
    }

    async fn connect_upstream(l: &Listener<Self>, c: &mut MyClient, guard: &SessionGuard) -> Result<MyServer, RefusalOf<Self>> {
        let lease = guard.lease();
        let upstream = match c.upstream.take() {
            Some(upstream) => upstream,
            None => {
                let upstream = backend::connect(&l.target).await.map_err(upstream_refusal)?;
                l.state.greeting.remember(&upstream.hello);
                // Greeted from the cache: the server must still frame packets as the client expects.
                if let Err(why) = greeting::fits(&c.conn.hello, &upstream.hello) {
                    upstream.abandon();
                    return Err(Refusal::Upstream(BackendError::Protocol(why)));
                }
                upstream
            }
        };
        let thread = upstream.hello.connection_id;
        let (stream, ok) =
            upstream.login(&lease.user, &lease.password, &c.conn.hello, l.target.login_timeout()).await.map_err(upstream_refusal)?;
        Ok(MyServer { stream, ok, user: lease.user.clone(), thread })
    }

    /// A server connection not logged in yet is ended with a failed login, not a dropped
    /// socket (see `Pending::abandon`).
    fn reply_to(c: MyClient) -> ReplyTo {
        if let Some(upstream) = c.upstream {
            upstream.abandon();
        }
        c.conn.into_reply()
    }

    async fn refuse(to: ReplyTo, why: &RefusalOf<Self>, login: &str, peer: &crate::peer::Peer) {
        if let Some(err) = errcode::render(why, login, &peer.host()) {
            to.answer(&err).await;
        }
    }

    /// The server's OK, then the gate (COM_CHANGE_USER, KILL) and the idle tracker.
    async fn hand_off(l: &Listener<Self>, c: MyClient, s: MyServer, client: &str) -> Option<Live<Self>> {
        let hello = &c.conn.hello;
        // The session's thread: the id the client's greeting showed, and the server's own.
        let (seen, thread) = (c.conn.connection_id, s.thread);
        let query_attributes = hello.capabilities.contains(CapabilityFlags::CLIENT_QUERY_ATTRIBUTES);
        let deprecate_eof = hello.capabilities.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
        let session_track = hello.capabilities.contains(CapabilityFlags::CLIENT_SESSION_TRACK);
        // With MariaDB's metadata cache or MySQL's optional metadata a result set may come without
        // its column definitions: the response tracker does not follow those sessions.
        let trackable = !hello.mariadb_capabilities.contains(MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA)
            && !hello.capabilities.contains(CapabilityFlags::CLIENT_OPTIONAL_RESULTSET_METADATA);
        let client_io = c.conn.finish(&s.ok).await.ok()?;
        // After max TTL (or at shutdown) the session closes between commands, outside a transaction.
        let login_status = s.ok.get(1..).and_then(super::idle::ok_status_after_header).unwrap_or(0);
        let observer = MyIdle::new(login_status, deprecate_eof, trackable);
        let registration = l.state.threads.register(seen, thread, client, &s.user, observer.activity());
        let on_kill = kill_handler(&l.state, client, seen, thread);
        let server = Holdable::new(s.stream, observer.activity());
        let server = Gate::new(server, query_attributes, session_track, observer.shared(), on_kill);
        Some(Live { client: client_io, server, observer, registration })
    }

    /// Between commands: the server gets COM_QUIT; the client sees the connection close, as
    /// after a server's wait_timeout, and a pool opens a new one (with a new user).
    async fn goodbye(_client: &mut Stream, server: &mut Gate<Holdable<Stream>>, _why: DrainReason) {
        packet_io::write_last(server.get_mut(), 0, &[command::QUIT]).await;
    }
}

/// A client-leg error in the pipeline's terms.
fn refusal(e: FrontendError) -> RefusalOf<Mysql> {
    match e {
        FrontendError::Io(_) | FrontendError::Closed => Refusal::ClientGone,
        FrontendError::Denied { using_password: true } => Refusal::Denied(Denial::WrongCredential),
        FrontendError::Denied { using_password: false } => Refusal::Denied(Denial::NoCredential),
        FrontendError::FullAuthNeedsTls => Refusal::Denied(Denial::NeedsTls),
        e => Refusal::Client(e),
    }
}

/// The server's own ERR passes through intact; anything else is an upstream fault.
fn upstream_refusal(e: BackendError) -> RefusalOf<Mysql> {
    match e {
        BackendError::Server { code, message, payload } => {
            Refusal::ServerSaid(ServerSaid { code: code.to_string(), message, raw: payload.into() })
        }
        e => Refusal::Upstream(e),
    }
}

/// Runs a client's KILL aimed at one of its own other sessions through the admin connection.
/// A `KILL QUERY` runs only while that session is inside a command it was sent before the
/// KILL (an idle session has no query to end; run late, it could end the next one), and that
/// session's next command waits until the KILL is done.
/// The session's own thread by its server id goes to the server as sent (it allows that); by the
/// id its greeting showed, which the server does not know, it runs through the admin connection
/// like any other of the client's threads.
fn kill_handler(state: &MyState, client: &str, seen: u32, own: u32) -> KillHandler {
    let threads = state.threads.clone();
    let admin = state.admin.clone();
    let client = client.to_string();
    Box::new(move |k: Kill| {
        if k.thread == own {
            return None;
        }
        // Its own query, by the greeting's id: the only command running is this KILL.
        if k.thread == seen && k.query_only {
            return Some(Box::pin(async { Ok(()) }));
        }
        let target = threads.get(k.thread)?;
        if target.client != client {
            let msg = format!("You are not owner of thread {}", k.thread);
            return Some(Box::pin(async move { Err(err_payload(errcode::KILL_DENIED, "HY000", &msg)) }));
        }
        // Read just now: a command sent later is not the one this KILL was meant for.
        if k.query_only && !target.activity.runs_request_sent_before(Instant::now()) {
            tracing::debug!(thread = k.thread, "KILL QUERY for an idle session: nothing to end");
            return Some(Box::pin(async { Ok(()) }));
        }
        let Some(admin) = admin.clone() else {
            tracing::info!(thread = k.thread, "KILL of another session on a sidecar: no admin connection here to run it");
            let msg = format!("Unknown thread id: {}", k.thread);
            return Some(Box::pin(async move { Err(err_payload(errcode::NO_SUCH_THREAD, "HY000", &msg)) }));
        };
        Some(Box::pin(async move {
            let _held = target.activity.hold();
            admin.kill(target.real, k.query_only, &target.user).await.map_err(|e| {
                tracing::warn!(thread = k.thread, error = %e, "KILL for a client failed");
                err_payload(errcode::NO_SUCH_THREAD, "HY000", &format!("Unknown thread id: {}", k.thread))
            })
        }))
    })
}
