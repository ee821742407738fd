//! Postgres as a [`Protocol`] of the session pipeline: the client leg (`frontend.rs`), the
//! server leg (`backend.rs`), cancel keys (`cancel.rs`) and the error map (`sqlstate.rs`)
//! wired to the pipeline's steps.

use super::backend::{BackendError, ServerConn};
use super::cancel::{CancelRegistry, Registration};
use super::frontend::{self, ClientConn, FrontendError, OpenError};
use super::idle::PgIdle;
use super::message::ErrorResponse;
use super::provision::PgProvisioner;
use super::scram::{MockSalts, ScramError};
use super::sqlstate;
use crate::auth::PasswordCheck;
use crate::config::{Config, DatabaseConfig};
use crate::lease::{DrainReason, SessionGuard};
use crate::net::framed::Framed;
use crate::net::hold::{Activity, Holdable};
use crate::net::stream::Stream;
use crate::provision::Provisioner;
use crate::proxy::protocol::{Admission, Listener, Live, Minter, Opened, Protocol, RefusalOf};
use crate::proxy::refusal::{Denial, Refusal, ServerSaid};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// Postgres clients and servers (protocol 3.0).
pub struct Postgres;

/// CancelRequests relayed upstream at once per listener; more are dropped (a flood of them
/// would otherwise open as many server connections).
const CANCELS_IN_FLIGHT: usize = 64;

/// A Postgres listener's own state.
pub struct PgState {
    /// Keys of the sessions live on this listener: only their CancelRequests are relayed.
    pub cancels: CancelRegistry,
    /// Places for cancels being relayed ([`CANCELS_IN_FLIGHT`]).
    relaying: Arc<tokio::sync::Semaphore>,
    /// How unknown logins are mocked (the same on every listener and after a restart).
    pub mocks: MockSalts,
}

impl PgState {
    pub fn new(config: &Config) -> Self {
        let mocks = MockSalts::from_clients(config.clients.iter().filter_map(|c| Some((c.name.as_str(), &c.password.as_ref()?.scram))));
        PgState { cancels: CancelRegistry::default(), relaying: Arc::new(tokio::sync::Semaphore::new(CANCELS_IN_FLIGHT)), mocks }
    }
}

const LAST_WORD: Duration = Duration::from_secs(1);

impl Protocol for Postgres {
    const NAME: &'static str = "postgres";
    // PG 17 direct TLS (`sslnegotiation=direct`) requires it.
    const ALPN: &'static [&'static [u8]] = &[b"postgresql"];
    type State = PgState;
    type Client = ClientConn;
    type Reply = Framed<Stream>;
    type Server = ServerConn;
    type ClientIo = Stream;
    type ServerIo = Holdable<Stream>;
    type Observer = PgIdle;
    type Registration = Option<Registration>;
    type ClientError = FrontendError;
    type UpstreamError = BackendError;

    fn prepare(config: &Config, db: &DatabaseConfig, minter: Minter<'_>) -> (PgState, Arc<dyn Provisioner>) {
        let provisioner: Arc<dyn Provisioner> = match minter {
            Minter::Admin(password) => Arc::new(PgProvisioner::new(db, password)),
            Minter::Issuer(remote) => remote,
        };
        (PgState::new(config), provisioner)
    }

    async fn open(l: &Listener<Self>, socket: Stream, admission: Admission, deadline: Instant) -> Opened<Self> {
        let tls = l.client_tls.as_ref().map(|t| t.current());
        let opened = frontend::open(socket, tls.as_deref(), l.db.client_tls_mode());
        match tokio::time::timeout_at(deadline, opened).await {
            Err(_) => Opened::Failed(Refusal::HandshakeTimeout(l.db.handshake_timeout), None),
            Ok(Err(OpenError { error, reply_to })) => Opened::Failed(refusal(error), reply_to),
            Ok(Ok(frontend::Opened::Gone)) => Opened::Done,
            Ok(Ok(frontend::Opened::Cancel(key))) => {
                let asked = Instant::now();
                match l.state.relaying.try_acquire() {
                    Ok(_relaying) => drop(l.state.cancels.forward(&key, asked, &l.target).await),
                    Err(_) => tracing::warn!(pid = key.pid, limit = CANCELS_IN_FLIGHT, "cancel request dropped: too many being relayed"),
                }
                Opened::Done
            }
            // Over the limit the client is told so right after its startup packet (53300).
            Ok(Ok(frontend::Opened::Session(client))) if admission == Admission::Full => {
                Opened::Failed(Refusal::TooManyClients, Some(client.into_reply()))
            }
            Ok(Ok(frontend::Opened::Session(client))) => Opened::Client(client),
        }
    }

    fn login(c: &ClientConn) -> &str {
        c.user()
    }

    fn is_tls(c: &ClientConn) -> bool {
        c.is_tls()
    }

    fn client_certificate(c: &ClientConn) -> Option<&[u8]> {
        c.peer_certificate()
    }

    /// SCRAM-SHA-256(-PLUS) against the client's verifier; an unknown client runs a mock
    /// exchange with a salt derived from its name, a refused role the real one.
    async fn check_password(l: &Listener<Self>, c: &mut ClientConn, check: PasswordCheck<'_>) -> Result<(), RefusalOf<Self>> {
        let (verifier, genuine) = match check {
            PasswordCheck::Genuine(credential) => (credential.scram.clone(), true),
            PasswordCheck::Refused(credential) => (credential.scram.clone(), false),
            PasswordCheck::Mock(client) => (l.state.mocks.verifier(client), false),
        };
        c.authenticate(&verifier, genuine).await.map_err(refusal)
    }

    async fn read_cleartext(c: &mut ClientConn) -> Result<zeroize::Zeroizing<Vec<u8>>, RefusalOf<Self>> {
        c.read_cleartext().await.map_err(refusal)
    }

    async fn connect_upstream(l: &Listener<Self>, c: &mut ClientConn, guard: &SessionGuard) -> Result<ServerConn, RefusalOf<Self>> {
        let lease = guard.lease();
        let server = l.target.login(&lease.user, &lease.password, &c.startup.params).await.map_err(upstream_refusal)?;
        // Only a database the user really got into can hold objects it creates (the server's
        // default database is the user name).
        guard.note_database(c.startup.param("database").unwrap_or(&lease.user));
        Ok(server)
    }

    fn reply_to(c: ClientConn) -> Framed<Stream> {
        c.into_reply()
    }

    async fn refuse(mut to: Framed<Stream>, why: &RefusalOf<Self>, login: &str, _peer: &crate::peer::Peer) {
        if let Some(bytes) = sqlstate::render(why, login) {
            let _ = tokio::time::timeout(LAST_WORD, to.write_all(&bytes)).await;
        }
    }

    /// AuthenticationOk and the server's greeting; whatever either side sent ahead is
    /// forwarded, and the idle tracker sees those bytes too.
    async fn hand_off(l: &Listener<Self>, c: ClientConn, s: ServerConn, _client: &str) -> Option<Live<Self>> {
        let activity = Arc::new(Activity::default());
        let registration = s.cancel_key.as_ref().map(|k| l.state.cancels.register(k, activity.clone()));
        let ServerConn { stream: mut server, read_ahead, greeting, .. } = s;
        let (mut client, client_ahead) = c.finish(&greeting).await.ok()?;
        if !client_ahead.is_empty() {
            server.write_all(&client_ahead).await.ok()?;
            server.flush().await.ok()?;
        }
        if !read_ahead.is_empty() {
            client.write_all(&read_ahead).await.ok()?;
            client.flush().await.ok()?;
        }
        let mut observer = PgIdle::new(activity.clone());
        crate::net::pump::Observer::client_bytes(&mut observer, &client_ahead);
        crate::net::pump::Observer::server_bytes(&mut observer, &read_ahead);
        Some(Live { client, server: Holdable::new(server, activity), observer, registration })
    }

    /// The FATAL a server sends when it terminates a session, then a Terminate upstream.
    async fn goodbye(client: &mut Stream, server: &mut Holdable<Stream>, why: DrainReason) {
        let message = match why {
            DrainReason::MaxTtl => "terminating connection because its database credentials reached their max TTL",
            DrainReason::Shutdown => "terminating connection because leasegate is shutting down",
        };
        let mut out = bytes::BytesMut::new();
        ErrorResponse::fatal(sqlstate::ADMIN_SHUTDOWN, message).encode(&mut out);
        let _ = tokio::time::timeout(LAST_WORD, client.write_all(&out)).await;
        let _ = tokio::time::timeout(LAST_WORD, server.write_all(b"X\0\0\0\x04")).await;
    }
}

/// A client-leg error in the pipeline's terms.
fn refusal(e: FrontendError) -> RefusalOf<Postgres> {
    match e {
        FrontendError::Io(_) | FrontendError::Closed => Refusal::ClientGone,
        FrontendError::Scram(ScramError::Proof) => Refusal::Denied(Denial::WrongCredential),
        FrontendError::Scram(ScramError::ChannelBinding(detail)) => Refusal::Denied(Denial::ChannelBinding(detail)),
        e => Refusal::Client(e),
    }
}

/// The server's own refusal passes through intact; anything else is an upstream fault.
fn upstream_refusal(e: BackendError) -> RefusalOf<Postgres> {
    match e {
        BackendError::Server { code, message, raw } => Refusal::ServerSaid(ServerSaid { code, message, raw }),
        e => Refusal::Upstream(e),
    }
}
