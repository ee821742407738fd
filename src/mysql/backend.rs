//! The upstream leg: connect to the MySQL/MariaDB server and log in as the minted user.
//!
//! [`connect`] opens TCP and reads the greeting (its values go to the client, see
//! `frontend.rs`). [`Pending::login`] then, per `upstream_tls.mode`, starts TLS with an
//! SslRequest carrying the client's capabilities (MariaDB reads its extended capabilities from
//! that packet: an SslRequest without them garbled every result set), and sends a
//! HandshakeResponse41 with the client's capabilities, collation, database and connect
//! attributes and the minted user, and answers what the server asks: `mysql_native_password`
//! (MariaDB), `caching_sha2_password` (MySQL 8; a new user always misses the server's cache, so
//! full authentication: the cleartext, inside TLS only),
//! `mysql_clear_password` inside TLS only. The server's OK payload is returned for the client.
//! A connection given up before login ([`Pending::abandon`]) is ended with a failed login
//! rather than a dropped socket: servers count aborted handshakes against `max_connect_errors`
//! and then block the host, but not failed logins.

use super::frontend::{CACHING_SHA2, ClientHello, NATIVE, ServerHello};
use super::packet;
use super::packet_io::{self, PacketError};
use crate::config::UpstreamTlsMode;
use crate::net::stream::Stream;
use crate::net::upstream::{ConnectError, Target};
use crate::secret::Secret;
use mysql_common::auth::plugins::caching_sha2_password::scramble_sha256;
use mysql_common::auth::plugins::mysql_native_password::scramble_native;
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse, SslRequest};
use mysql_common::proto::MySerialize;

const CLEAR: &str = "mysql_clear_password";
/// Why a cleartext password is not sent.
const CLEARTEXT_NEEDS_VERIFIED_TLS: &str = "the password would go in cleartext, which leasegate sends only inside TLS to a verified server (upstream_tls.mode = \"verify-ca\" or \"verify-full\")";
/// Offset of the collation byte in a HandshakeResponse41 (after capabilities and max packet size).
const COLLATION_OFFSET: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// TCP connect failed or timed out (the client gets error 2003).
    #[error("Can't connect to server on '{addr}' ({reason})")]
    Connect { addr: String, reason: ConnectError },
    #[error("TLS with the server at {addr} failed: {reason}")]
    Tls { addr: String, reason: ConnectError },
    #[error("the server at {addr} does not support TLS, which upstream_tls.mode requires")]
    TlsRefused { addr: String },
    #[error("the server connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server sent an invalid packet: {0}")]
    Protocol(String),
    #[error("the server asked for an authentication method leasegate cannot answer ({0})")]
    UnsupportedAuth(String),
    /// The server refused us with its own ERR packet, relayed to the client as it is.
    #[error("the server refused the connection: {message} (error {code})")]
    Server { code: u16, message: String, payload: Vec<u8> },
}

impl From<PacketError> for BackendError {
    fn from(e: PacketError) -> Self {
        match e {
            PacketError::Io(e) => BackendError::Io(e),
            PacketError::Closed => BackendError::Protocol("the server closed the connection".into()),
            PacketError::TooLarge(n) => BackendError::Protocol(format!("handshake packet of {n} bytes")),
        }
    }
}

/// A server connection that has greeted us and waits for a login.
pub struct Pending {
    stream: Stream,
    seq: u8,
    nonce: Vec<u8>,
    pub hello: ServerHello,
    addr: String,
    /// TLS starts at login: its SslRequest must carry the capabilities the login will (MariaDB
    /// takes its extended capabilities from the SslRequest), which only the client's answer gives.
    tls: Option<Target>,
    /// TLS to this server proves who it is: only then may the password travel in cleartext.
    verifies_server: bool,
}

/// TCP and the greeting, within the login timeout; refuses a server without TLS when the mode
/// requires it.
pub async fn connect(target: &Target) -> Result<Pending, BackendError> {
    let limit = target.login_timeout();
    tokio::time::timeout(limit, connect_unbounded(target))
        .await
        .map_err(|_| BackendError::Connect { addr: target.addr.clone(), reason: ConnectError::TimedOut(limit) })?
}

async fn connect_unbounded(target: &Target) -> Result<Pending, BackendError> {
    let addr = target.addr.clone();
    let tcp = target.connect_tcp().await.map_err(|reason| BackendError::Connect { addr: addr.clone(), reason })?;
    let mut stream = Stream::Plain(tcp);
    let (seq, payload) = packet_io::read(&mut stream, packet::MAX_HANDSHAKE_PAYLOAD).await?;
    if let Some((code, message)) = packet::parse_err(&payload) {
        return Err(BackendError::Server { code, message, payload });
    }
    let greeting: HandshakePacket<'_> = ParseBuf(&payload).parse(()).map_err(|e| BackendError::Protocol(format!("greeting: {e}")))?;
    let hello = ServerHello {
        version: greeting.server_version_ref().to_vec(),
        connection_id: greeting.connection_id(),
        capabilities: greeting.capabilities(),
        mariadb_capabilities: greeting.mariadb_ext_capabilities(),
        collation: greeting.default_collation(),
        status: greeting.status_flags(),
        plugin: greeting.auth_plugin_name_str().map(|p| p.into_owned()).unwrap_or_else(|| NATIVE.into()),
    };
    let nonce = greeting.nonce();
    let tls = match (&target.tls, hello.capabilities.contains(CapabilityFlags::CLIENT_SSL)) {
        (None, _) => None,
        (Some(_), true) => Some(target.clone()),
        (Some(_), false) if target.tls_mode == UpstreamTlsMode::Prefer => None,
        (Some(_), false) => return Err(BackendError::TlsRefused { addr }),
    };
    Ok(Pending { stream, seq: seq.wrapping_add(1), nonce, hello, addr, tls, verifies_server: target.verifies_server() })
}

impl Pending {
    /// Logs in as `user` with what the client asked for; returns the stream and the server's
    /// OK payload (for the client), within `limit`.
    pub async fn login(
        self,
        user: &str,
        password: &Secret,
        client: &ClientHello,
        limit: std::time::Duration,
    ) -> Result<(Stream, Vec<u8>), BackendError> {
        let addr = self.addr.clone();
        tokio::time::timeout(limit, self.login_unbounded(user, password, client))
            .await
            .map_err(|_| BackendError::Connect { addr, reason: ConnectError::LoginTimedOut(limit) })?
    }

    async fn login_unbounded(mut self, user: &str, password: &Secret, client: &ClientHello) -> Result<(Stream, Vec<u8>), BackendError> {
        let mut caps = client.capabilities;
        caps.remove(CapabilityFlags::CLIENT_SSL | CapabilityFlags::CLIENT_COMPRESS);
        caps.insert(CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SECURE_CONNECTION);
        if let Some(target) = self.tls.take() {
            caps.insert(CapabilityFlags::CLIENT_SSL);
            let mut req = Vec::with_capacity(32);
            SslRequest::new(caps, client.max_packet_size, client.collation)
                .with_mariadb_capabilities(client.mariadb_capabilities)
                .serialize(&mut req);
            self.send(&req).await?;
            let Stream::Plain(tcp) = self.stream else { return Err(BackendError::Protocol("TLS twice".into())) };
            self.stream = target.start_tls(tcp).await.map_err(|reason| BackendError::Tls { addr: self.addr.clone(), reason })?;
        }
        let plugin = self.hello.plugin.clone();
        let answer = self.answer(&plugin, &self.nonce, password)?;
        let response = HandshakeResponse::new(
            Some(answer.as_slice()),
            (0, 0, 0),
            Some(user.as_bytes()),
            client.database.as_deref(),
            Some(AuthPlugin::from_bytes(plugin.as_bytes())),
            caps,
            client.attributes.clone(),
            client.max_packet_size,
        )
        .with_mariadb_ext_capabilities(client.mariadb_capabilities);
        let mut out = Vec::with_capacity(256);
        response.serialize(&mut out);
        // mysql_common picks utf8mb4_general_ci; the client's own collation is what it expects.
        out[COLLATION_OFFSET] = client.collation;
        self.send(&out).await?;

        let mut plugin = plugin;
        loop {
            let payload = self.receive().await?;
            match payload.first() {
                Some(&packet::OK) => return Ok((self.stream, payload)),
                Some(&packet::ERR) => {
                    let (code, message) = packet::parse_err(&payload).unwrap_or((0, String::new()));
                    return Err(BackendError::Server { code, message, payload });
                }
                Some(&packet::EOF_OR_SWITCH) => {
                    // AuthSwitchRequest: plugin name, NUL, its data (a new nonce, NUL-ended).
                    let body = &payload[1..];
                    let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
                    plugin = String::from_utf8_lossy(&body[..end]).into_owned();
                    let mut nonce = body.get(end + 1..).unwrap_or_default().to_vec();
                    if nonce.last() == Some(&0) {
                        nonce.pop();
                    }
                    let answer = self.answer(&plugin, &nonce, password)?;
                    self.nonce = nonce;
                    self.send(&answer).await?;
                }
                Some(&packet::AUTH_MORE_DATA) if plugin == CACHING_SHA2 => self.more_data(&payload[1..], password).await?,
                _ => return Err(BackendError::Protocol("unexpected packet during authentication".into())),
            }
        }
    }

    /// The first answer for `plugin` to `nonce`.
    fn answer(&self, plugin: &str, nonce: &[u8], password: &Secret) -> Result<Vec<u8>, BackendError> {
        let pw = password.expose().as_bytes();
        match plugin {
            NATIVE => Ok(scramble_native(nonce, pw).map(|s| s.to_vec()).unwrap_or_default()),
            CACHING_SHA2 => {
                let nonce: &[u8; 20] =
                    nonce.get(..20).and_then(|n| n.try_into().ok()).ok_or_else(|| BackendError::Protocol("short nonce".into()))?;
                Ok(scramble_sha256(nonce, pw).map(|s| s.to_vec()).unwrap_or_default())
            }
            // Only inside TLS to a verified server: otherwise anyone in the path could read it.
            CLEAR if self.cleartext_ok() => Ok(null_terminated(pw).to_vec()),
            CLEAR => Err(BackendError::UnsupportedAuth(CLEARTEXT_NEEDS_VERIFIED_TLS.into())),
            other => Err(BackendError::UnsupportedAuth(other.to_string())),
        }
    }

    /// caching_sha2_password after the first answer: fast-auth success, or full authentication.
    async fn more_data(&mut self, data: &[u8], password: &Secret) -> Result<(), BackendError> {
        let pw = password.expose().as_bytes();
        match data.first() {
            Some(&packet::FAST_AUTH_SUCCESS) => Ok(()),
            Some(&packet::PERFORM_FULL_AUTHENTICATION) if self.cleartext_ok() => self.send(&null_terminated(pw)).await,
            Some(&packet::PERFORM_FULL_AUTHENTICATION) if self.stream.is_tls() => {
                Err(BackendError::UnsupportedAuth(format!("caching_sha2_password full authentication: {CLEARTEXT_NEEDS_VERIFIED_TLS}")))
            }
            // Without TLS the password would go RSA-encrypted with a key the server sends
            // unauthenticated (anyone in the path could substitute theirs): refused, as the
            // mysql client refuses it unless told --get-server-public-key.
            Some(&packet::PERFORM_FULL_AUTHENTICATION) => Err(BackendError::UnsupportedAuth(
                "caching_sha2_password full authentication without TLS; set upstream_tls.mode = \"require\" or \"verify-full\"".into(),
            )),
            _ => Err(BackendError::Protocol("unexpected caching_sha2_password data".into())),
        }
    }

    /// The password may go in cleartext: inside TLS, to a server the TLS verified.
    fn cleartext_ok(&self) -> bool {
        self.stream.is_tls() && self.verifies_server
    }

    async fn send(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        self.seq = packet_io::write(&mut self.stream, self.seq, payload).await?;
        Ok(())
    }

    /// Ends a connection that will not be used with a login the server refuses (bounded; in
    /// the background, so the caller does not wait for it).
    pub fn abandon(mut self) {
        tokio::spawn(async move {
            let caps = CapabilityFlags::CLIENT_PROTOCOL_41 | CapabilityFlags::CLIENT_SECURE_CONNECTION;
            let response =
                HandshakeResponse::new(None::<&[u8]>, (0, 0, 0), Some(&b"leasegate-abandoned"[..]), None::<&[u8]>, None, caps, None, 0);
            let mut out = Vec::with_capacity(64);
            response.serialize(&mut out);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
                self.send(&out).await?;
                self.receive().await
            })
            .await;
        });
    }

    async fn receive(&mut self) -> Result<Vec<u8>, BackendError> {
        let (seq, payload) = packet_io::read(&mut self.stream, packet::MAX_HANDSHAKE_PAYLOAD).await?;
        self.seq = seq.wrapping_add(1);
        Ok(payload)
    }
}

fn null_terminated(pw: &[u8]) -> zeroize::Zeroizing<Vec<u8>> {
    let mut v = zeroize::Zeroizing::new(Vec::with_capacity(pw.len() + 1));
    v.extend_from_slice(pw);
    v.push(0);
    v
}
