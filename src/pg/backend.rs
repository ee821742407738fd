//! The upstream leg: connect to the server as the minted user.
//!
//! TCP (bounded by `connect_timeout`), TLS per `upstream_tls.mode`, a StartupMessage with the
//! client's parameters and `user` replaced, real SCRAM-SHA-256(-PLUS) with postgres-protocol's
//! client, then the server's post-auth messages (ParameterStatus, BackendKeyData, …, up to
//! ReadyForQuery) collected as bytes for the client, untouched.

use super::codec::{self, CodecError};
use super::message::*;
use crate::config::UpstreamTlsMode;
use crate::net::framed::{FrameError, Framed};
use crate::net::stream::Stream;
use crate::net::tls;
use crate::secret::Secret;
use bytes::{BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::AsyncReadExt;

/// Server messages can be large after login (a long NOTICE); bound them anyway.
const MAX_SERVER_MESSAGE_LEN: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// TCP connect failed or timed out (SQLSTATE 08006, with the address).
    #[error("could not connect to server at {addr}: {reason}")]
    Connect { addr: String, reason: ConnectError },
    #[error("TLS with the server at {addr} failed: {reason}")]
    Tls { addr: String, reason: ConnectError },
    #[error("the server at {addr} does not support TLS, which upstream_tls.mode requires")]
    TlsRefused { addr: String },
    #[error("the server connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server sent an invalid message: {0}")]
    Protocol(String),
    #[error("the server asked for an authentication method leasegate cannot answer ({0})")]
    UnsupportedAuth(u32),
    #[error("SCRAM with the server failed: {0}")]
    Scram(std::io::Error),
    /// The server asked for the password in cleartext over a connection whose server is not
    /// verified (plain TCP, or TLS in `prefer`/`require` mode): anyone in the path could read it.
    #[error(
        "the server asked for the password in cleartext, which leasegate sends only inside TLS to a verified server (upstream_tls.mode = \"verify-ca\" or \"verify-full\")"
    )]
    CleartextToUnverified,
    /// The server let the minted user in without asking for a password: it checks nobody.
    #[error("the server let the user in without a password (trust); set allow_upstream_trust = true to accept such a server")]
    NoAuthentication,
    /// The server refused us with its own ErrorResponse; `raw` is the whole message, relayed
    /// to the client as it is so the client sees the server's code (e.g. 3D000 unknown database).
    #[error("the server refused the connection: {message} (SQLSTATE {code})")]
    Server { code: String, message: String, raw: Bytes },
}

impl From<FrameError<CodecError>> for BackendError {
    fn from(e: FrameError<CodecError>) -> Self {
        match e {
            FrameError::Io(e) => BackendError::Io(e),
            FrameError::Truncated => BackendError::Protocol("connection closed in the middle of a message".into()),
            FrameError::Decode(e) => BackendError::Protocol(e.to_string()),
        }
    }
}

use crate::net::upstream::ConnectError;
pub use crate::net::upstream::Target;

/// An authenticated server connection and what it said after AuthenticationOk.
pub struct ServerConn {
    pub stream: Stream,
    /// Bytes the server sent after ReadyForQuery that the client must still get.
    pub read_ahead: BytesMut,
    /// ParameterStatus … ReadyForQuery, as framed bytes, for the client.
    pub greeting: BytesMut,
    pub cancel_key: Option<CancelKey>,
}

impl Target {
    /// TCP and, per mode, TLS, within `connect_timeout`. Also used for forwarding CancelRequests.
    pub async fn open(&self) -> Result<Stream, BackendError> {
        tokio::time::timeout(self.connect_timeout, self.open_unbounded())
            .await
            .map_err(|_| BackendError::Connect { addr: self.addr.clone(), reason: ConnectError::TimedOut(self.connect_timeout) })?
    }

    async fn open_unbounded(&self) -> Result<Stream, BackendError> {
        let mut tcp = self.connect_tcp().await.map_err(|reason| BackendError::Connect { addr: self.addr.clone(), reason })?;
        if self.tls.is_none() {
            return Ok(Stream::Plain(tcp));
        }
        let mut req = BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut req);
        tokio::io::AsyncWriteExt::write_all(&mut tcp, &req).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {}
            b'N' if self.tls_mode == UpstreamTlsMode::Prefer => return Ok(Stream::Plain(tcp)),
            b'N' => return Err(BackendError::TlsRefused { addr: self.addr.clone() }),
            other => return Err(BackendError::Protocol(format!("unexpected answer {other:#x} to SSLRequest"))),
        }
        self.start_tls(tcp).await.map_err(|reason| BackendError::Tls { addr: self.addr.clone(), reason })
    }

    /// Logs in as `user` and reads the server's greeting up to ReadyForQuery, within the
    /// login timeout (a server that accepts TCP and then says nothing cannot hang us).
    pub async fn login(&self, user: &str, password: &Secret, client_params: &[(String, String)]) -> Result<ServerConn, BackendError> {
        let limit = self.login_timeout();
        tokio::time::timeout(limit, self.login_unbounded(user, password, client_params))
            .await
            .map_err(|_| BackendError::Connect { addr: self.addr.clone(), reason: ConnectError::LoginTimedOut(limit) })?
    }

    async fn login_unbounded(&self, user: &str, password: &Secret, client_params: &[(String, String)]) -> Result<ServerConn, BackendError> {
        let stream = self.open().await?;
        let binding = match &stream {
            Stream::ClientTls(tls) => tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| tls::tls_server_end_point(c)),
            _ => None,
        };
        let mut io = Framed::new(stream);
        let params: Vec<(String, String)> =
            client_params.iter().map(|(k, v)| if k == "user" { (k.clone(), user.to_string()) } else { (k.clone(), v.clone()) }).collect();
        let mut out = BytesMut::new();
        encode_startup(&params, &mut out);
        io.write_all(&out).await?;
        let policy = Policy { cleartext: binding.is_some() && self.verifies_server(), trust: self.allow_trust };
        authenticate(&mut io, password, binding, policy).await?;
        let (greeting, cancel_key) = read_greeting(&mut io).await?;
        let (stream, read_ahead) = io.into_parts();
        Ok(ServerConn { stream, read_ahead, greeting, cancel_key })
    }
}

async fn next(io: &mut Framed<Stream>) -> Result<Message, BackendError> {
    let msg = io
        .read_frame(|b| codec::decode_message(b, MAX_SERVER_MESSAGE_LEN))
        .await?
        .ok_or_else(|| BackendError::Protocol("the server closed the connection".into()))?;
    if msg.tag == b'E' {
        return Err(server_error(&msg));
    }
    Ok(msg)
}

fn server_error(msg: &Message) -> BackendError {
    let fields = error_fields(&msg.body);
    let field = |f: u8| fields.iter().find(|(k, _)| *k == f).map(|(_, v)| v.clone()).unwrap_or_default();
    let mut raw = BytesMut::with_capacity(msg.body.len() + 5);
    raw.put_u8(b'E');
    raw.put_u32(msg.body.len() as u32 + 4);
    raw.put_slice(&msg.body);
    BackendError::Server { code: field(b'C'), message: field(b'M'), raw: raw.freeze() }
}

/// What the server may ask of leasegate beyond SCRAM.
#[derive(Clone, Copy)]
struct Policy {
    /// The password may be sent in cleartext (inside TLS to a verified server).
    cleartext: bool,
    /// The server may accept the user without asking for a password.
    trust: bool,
}

/// Answers the server's authentication requests until AuthenticationOk.
async fn authenticate(
    io: &mut Framed<Stream>,
    password: &Secret,
    tls_end_point: Option<Vec<u8>>,
    policy: Policy,
) -> Result<(), BackendError> {
    let mut scram: Option<ScramSha256> = None;
    let mut server_verified = false;
    let mut asked = false;
    loop {
        let msg = next(io).await?;
        if msg.tag == b'v' {
            continue; // NegotiateProtocolVersion: we asked for 3.0 with no options; nothing to adapt.
        }
        if msg.tag != b'R' {
            return Err(BackendError::Protocol(format!("expected an authentication request, got {:?}", msg.tag as char)));
        }
        let auth = Authentication::parse(&msg.body).ok_or_else(|| BackendError::Protocol("malformed authentication request".into()))?;
        let mut out = BytesMut::new();
        let pf = |e: std::io::Error| BackendError::Protocol(e.to_string());
        asked |= !matches!(auth, Authentication::Ok);
        match auth {
            // A started SCRAM exchange must have verified the server's signature first.
            Authentication::Ok if scram.is_some() && !server_verified => {
                return Err(BackendError::Protocol("AuthenticationOk before the SCRAM exchange finished".into()));
            }
            Authentication::Ok if !asked && !policy.trust => return Err(BackendError::NoAuthentication),
            Authentication::Ok => return Ok(()),
            Authentication::Sasl(mechanisms) => {
                let plus = mechanisms.iter().any(|m| m == "SCRAM-SHA-256-PLUS");
                let (mechanism, binding) = match (&tls_end_point, plus) {
                    (Some(hash), true) => ("SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(hash.clone())),
                    (Some(_), false) => ("SCRAM-SHA-256", ChannelBinding::unrequested()),
                    (None, _) => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
                };
                if !mechanisms.iter().any(|m| m == mechanism) {
                    return Err(BackendError::UnsupportedAuth(10));
                }
                let s = ScramSha256::new(password.expose().as_bytes(), binding);
                postgres_protocol::message::frontend::sasl_initial_response(mechanism, s.message(), &mut out).map_err(pf)?;
                scram = Some(s);
            }
            Authentication::SaslContinue(data) => {
                let s = scram.as_mut().ok_or_else(|| BackendError::Protocol("SASLContinue before SASL".into()))?;
                s.update(&data).map_err(BackendError::Scram)?;
                postgres_protocol::message::frontend::sasl_response(s.message(), &mut out).map_err(pf)?;
            }
            Authentication::SaslFinal(data) => {
                // Checks the server's signature: a server that does not know the verifier is refused.
                let s = scram.as_mut().ok_or_else(|| BackendError::Protocol("SASLFinal before SASL".into()))?;
                s.finish(&data).map_err(BackendError::Scram)?;
                server_verified = true;
                continue;
            }
            // Only inside TLS to a verified server: otherwise anyone in the path could read it.
            Authentication::CleartextPassword if policy.cleartext => {
                postgres_protocol::message::frontend::password_message(password.expose().as_bytes(), &mut out).map_err(pf)?;
            }
            Authentication::CleartextPassword => return Err(BackendError::CleartextToUnverified),
            Authentication::Md5Password(_) => return Err(BackendError::UnsupportedAuth(5)),
            Authentication::Other(code) => return Err(BackendError::UnsupportedAuth(code)),
        }
        io.write_all(&out).await?;
    }
}

/// Collects ParameterStatus, BackendKeyData, NoticeResponse … through ReadyForQuery.
async fn read_greeting(io: &mut Framed<Stream>) -> Result<(BytesMut, Option<CancelKey>), BackendError> {
    let mut greeting = BytesMut::with_capacity(512);
    let mut key = None;
    loop {
        let msg = next(io).await?;
        greeting.put_u8(msg.tag);
        greeting.put_u32(msg.body.len() as u32 + 4);
        greeting.put_slice(&msg.body);
        match msg.tag {
            b'K' => key = parse_backend_key_data(&msg.body),
            b'Z' => return Ok((greeting, key)),
            _ => {}
        }
    }
}
