//! The seam between the one session pipeline (`session.rs`) and a wire protocol (`pg/`,
//! `mysql/`). A protocol says how to open a client connection, check its proof, log in upstream,
//! answer a refusal, hand the client over to the byte pump and say goodbye at an idle point;
//! the pipeline decides the order, the lease, the metrics, the audit and the logs.
//!
//! Static dispatch: `session::run::<P>` is compiled once per protocol. Adding a protocol is a
//! new folder implementing [`Protocol`] plus one registration line in `app.rs`.

use super::refusal::Refusal;
use crate::auth::PasswordCheck;
use crate::config::{Config, DatabaseConfig};
use crate::lease::{DrainReason, SessionGuard};
use crate::net::handshakes::Handshakes;
use crate::net::pump::Observer;
use crate::net::reload::ReloadableTls;
use crate::net::stream::Stream;
use crate::net::upstream::Target;
use crate::peer::Peer;
use crate::provision::Provisioner;
use crate::secret::Secret;
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// The refusal type of protocol `P`.
pub type RefusalOf<P> = Refusal<<P as Protocol>::ClientError, <P as Protocol>::UpstreamError>;

/// One `[[database]]` listener at run time: what every protocol needs, plus its own state.
pub struct Listener<P: Protocol> {
    pub db: DatabaseConfig,
    /// The whole config: clients and roles, for looking logins up.
    pub config: Arc<Config>,
    /// The certificate clients get when they ask for TLS (`None`: TLS not offered).
    pub client_tls: Option<ReloadableTls>,
    pub target: Target,
    /// Handshakes in progress, bounded by `max_handshakes`.
    pub handshakes: Arc<Handshakes>,
    pub state: P::State,
}

/// Whether the listener has room for this connection (`max_client_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit,
    /// Full: the protocol turns the client away at the first point it can read a refusal.
    Full,
}

/// How opening a client connection came out.
pub enum Opened<P: Protocol> {
    /// A client that said who it is, ready to authenticate.
    Client(P::Client),
    /// The connection carried no session (a Postgres CancelRequest, served; a client that left
    /// before its startup packet).
    Done,
    /// Refused before there was a client; the connection, when it can still read an answer.
    Failed(RefusalOf<P>, Option<P::Reply>),
}

/// A session handed to the byte pump: both legs, the protocol's observer of message
/// boundaries, and whatever must live exactly as long as the session (a cancel key, a thread id).
pub struct Live<P: Protocol> {
    pub client: P::ClientIo,
    pub server: P::ServerIo,
    pub observer: P::Observer,
    pub registration: P::Registration,
}

/// Who creates a database's users: this instance, with the admin password, or an issuer that
/// this instance (a sidecar) asks through the given provisioner.
pub enum Minter<'a> {
    Admin(&'a Secret),
    Issuer(Arc<dyn Provisioner>),
}

pub trait Protocol: Sized + Send + Sync + 'static {
    /// The `protocol` label of connection metrics.
    const NAME: &'static str;
    /// ALPN protocols the client-side TLS offers.
    const ALPN: &'static [&'static [u8]];
    /// Per-listener state (Postgres: cancel keys and the mock-salt key; MySQL: server threads
    /// and the admin connection that runs KILL).
    type State: Send + Sync + 'static;
    /// A client between its startup packet and the start of the pump.
    type Client: Send;
    /// A connection that failed before it became a client, but can still be told why.
    type Reply: Send;
    /// A server connection logged in as the lease's user.
    type Server: Send;
    type ClientIo: AsyncRead + AsyncWrite + Unpin + Send;
    type ServerIo: AsyncRead + AsyncWrite + Unpin + Send;
    type Observer: Observer + Unpin + Send;
    type Registration: Send;
    type ClientError: std::error::Error + Send + Sync + 'static;
    type UpstreamError: std::error::Error + Send + Sync + 'static;

    /// The listener's own state and the provisioner the lease engine mints with, for one
    /// `[[database]]` of this protocol: its own admin connection, or the issuer's (a sidecar).
    fn prepare(config: &Config, db: &DatabaseConfig, minter: Minter<'_>) -> (Self::State, Arc<dyn Provisioner>);

    /// TLS and the startup packet (MySQL: the greeting first), within `deadline`. `socket` is
    /// a fresh TCP (`Stream::Plain`) or Unix-socket (`Stream::Unix`, never TLS) connection.
    fn open(l: &Listener<Self>, socket: Stream, admission: Admission, deadline: Instant) -> impl Future<Output = Opened<Self>> + Send;

    /// The login name the client sent (`<client>[/<role>]`).
    fn login(c: &Self::Client) -> &str;

    fn is_tls(c: &Self::Client) -> bool;

    /// The certificate the client presented in its TLS handshake (DER), verified by rustls
    /// against `client_tls.client_ca`.
    fn client_certificate(c: &Self::Client) -> Option<&[u8]>;

    /// Runs the protocol's password exchange. An unknown login or a refused role runs the
    /// same exchange and fails, so a prober learns nothing. (Identities the platform gives —
    /// a Unix peer — are checked by the pipeline; no password is asked for them.)
    fn check_password(
        l: &Listener<Self>,
        c: &mut Self::Client,
        check: PasswordCheck<'_>,
    ) -> impl Future<Output = Result<(), RefusalOf<Self>>> + Send;

    /// Asks the client for its password in the clear (Postgres AuthenticationCleartextPassword;
    /// MySQL mysql_clear_password or caching_sha2_password's full authentication): how a
    /// token travels. The pipeline asks only on a TLS or Unix-socket connection.
    fn read_cleartext(c: &mut Self::Client) -> impl Future<Output = Result<zeroize::Zeroizing<Vec<u8>>, RefusalOf<Self>>> + Send;

    /// Logs in to the server as the lease's user, with what the client asked for (bounded by
    /// the listener's login timeout).
    fn connect_upstream(
        l: &Listener<Self>,
        c: &mut Self::Client,
        guard: &SessionGuard,
    ) -> impl Future<Output = Result<Self::Server, RefusalOf<Self>>> + Send;

    /// Gives up on a client, keeping the connection to answer it.
    fn reply_to(c: Self::Client) -> Self::Reply;

    /// Answers a refusal with the protocol's own error (rendered in one function per
    /// protocol), best effort and bounded; `login` and `peer` for messages that quote them.
    fn refuse(to: Self::Reply, why: &RefusalOf<Self>, login: &str, peer: &Peer) -> impl Future<Output = ()> + Send;

    /// Tells the client it is in (with the server's own greeting) and builds the relay.
    /// `None`: the client left before the session started.
    fn hand_off(l: &Listener<Self>, c: Self::Client, s: Self::Server, client_name: &str)
    -> impl Future<Output = Option<Live<Self>>> + Send;

    /// At an idle point after max TTL or at shutdown: closes the session the way a server
    /// ends one, so a pool discards the connection and opens a new one.
    fn goodbye(client: &mut Self::ClientIo, server: &mut Self::ServerIo, why: DrainReason) -> impl Future<Output = ()> + Send;
}
