//! The client leg: everything leasegate says to a MySQL application before the byte pump starts.
//!
//! Unlike Postgres, the server speaks first, and its greeting carries things a client keeps
//! (connection id, version, capabilities, collation). So the caller opens the upstream
//! connection first and passes its greeting here; the client gets the same values, with
//! leasegate's own nonce, compression never offered and CLIENT_SSL per this listener. The
//! client's HandshakeResponse41 (after an optional SslRequest and TLS) then carries capabilities
//! that are a subset of the server's, which `backend.rs` sends on unchanged: both legs agree
//! on every flag that shapes later packets, so forwarding bytes afterwards is correct.
//!
//! Authentication: `mysql_native_password` or `caching_sha2_password` (fast path) against the
//! `[[client]]` entry's MySQL hashes; full caching_sha2 authentication (the cleartext password)
//! only inside TLS, checked against the SCRAM verifier, for entries without MySQL hashes.

use super::packet;
use super::packet_io::{self, PacketError};
use super::scramble::{self, NONCE_LEN};
use crate::config::ClientTlsMode;
use crate::credential::{MysqlHashes, StoredCredential};
use crate::net::stream::Stream;
use crate::net::tls::ServerTls;
use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse};
use mysql_common::proto::MySerialize;
use std::collections::HashMap;

pub const NATIVE: &str = "mysql_native_password";
/// The longest cleartext a client may send in caching_sha2 full authentication: a password,
/// or a token of up to 16 KiB, and its NUL.
const MAX_CLEARTEXT: usize = 16 * 1024 + 1;
/// The SCRAM iterations `leasegate hash-password` uses: what an unknown login's throwaway
/// verifier costs.
const MOCK_ITERATIONS: u32 = 4096;
pub const CACHING_SHA2: &str = "caching_sha2_password";
/// The plugin a client sends its password in the clear with (MySQL clients need
/// `--enable-cleartext-plugin`); accepted for tokens, inside TLS or on a Unix socket.
pub const CLEAR_PASSWORD: &str = "mysql_clear_password";

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("client I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed the connection during the handshake")]
    Closed,
    #[error("malformed handshake packet: {0}")]
    Malformed(String),
    #[error("handshake packet too large ({0} bytes)")]
    TooLarge(usize),
    #[error("TLS handshake with the client failed: {0}")]
    Tls(std::io::Error),
    #[error("the client asked for TLS, which this listener does not offer")]
    TlsNotOffered,
    #[error("the client does not speak protocol 4.1")]
    Protocol41,
    #[error("wrong password, unknown client or role not allowed")]
    Denied { using_password: bool },
    #[error("caching_sha2_password full authentication needs TLS (the client entry has no MySQL hashes; re-run hash-password)")]
    FullAuthNeedsTls,
}

impl From<PacketError> for FrontendError {
    fn from(e: PacketError) -> Self {
        match e {
            PacketError::Io(e) => FrontendError::Io(e),
            PacketError::Closed => FrontendError::Closed,
            PacketError::TooLarge(n) => FrontendError::TooLarge(n),
        }
    }
}

/// The upstream greeting's values the client must see (read by `backend.rs`).
#[derive(Debug, Clone)]
pub struct ServerHello {
    pub version: Vec<u8>,
    pub connection_id: u32,
    pub capabilities: CapabilityFlags,
    pub mariadb_capabilities: MariadbCapabilities,
    pub collation: u8,
    pub status: StatusFlags,
    /// The plugin the server asks for first (`mysql_native_password` on MariaDB,
    /// `caching_sha2_password` on MySQL 8).
    pub plugin: String,
}

/// What the client asked for in its HandshakeResponse41, for the upstream leg.
#[derive(Debug, Clone)]
pub struct ClientHello {
    pub capabilities: CapabilityFlags,
    pub mariadb_capabilities: MariadbCapabilities,
    pub max_packet_size: u32,
    pub collation: u8,
    pub user: String,
    pub database: Option<Vec<u8>>,
    pub attributes: Option<HashMap<String, String>>,
}

/// A client that has sent its HandshakeResponse41 and waits for the outcome.
pub struct ClientConn {
    stream: Stream,
    /// The sequence id of leasegate's next packet.
    seq: u8,
    nonce: [u8; NONCE_LEN],
    /// The plugin the client answered with, and its answer.
    plugin: String,
    response: Vec<u8>,
    /// Which plugin this listener wants (`None`: take either the client picks).
    wanted: Option<&'static str>,
    /// The plugin the greeting named.
    announced: &'static str,
    pub hello: ClientHello,
    /// The server thread this client will be on (the greeting's connection id).
    pub connection_id: u32,
}

/// A handshake that failed, with the connection when the client can still read an ERR.
pub struct OpenError {
    pub error: FrontendError,
    pub reply_to: Option<ReplyTo>,
}

/// A client that failed its handshake (or gets no greeting at all) but can still be told why.
pub struct ReplyTo {
    stream: Stream,
    seq: u8,
    /// No greeting was sent: the ERR comes instead of it, in the pre-4.1 form a client expects
    /// there (what a server does when it refuses a connection outright).
    instead_of_greeting: bool,
}

impl ReplyTo {
    fn new(stream: Stream, seq: u8) -> Self {
        ReplyTo { stream, seq, instead_of_greeting: false }
    }

    /// A connection that gets an ERR as its very first packet (sequence id 0).
    pub fn instead_of_greeting(socket: Stream) -> Self {
        ReplyTo { stream: socket, seq: 0, instead_of_greeting: true }
    }

    /// Sends `payload` as an ERR (best effort, bounded) before the connection closes.
    pub async fn answer(mut self, payload: &[u8]) {
        let payload = if self.instead_of_greeting { packet::pre_41(payload) } else { payload.to_vec() };
        packet_io::write_last(&mut self.stream, self.seq, &payload).await;
    }
}

/// Sends the greeting and reads the client's answer (through TLS if it asks).
pub async fn open(
    socket: Stream,
    server: &ServerHello,
    tls: Option<&ServerTls>,
    mode: ClientTlsMode,
    wanted: Option<&'static str>,
) -> Result<ClientConn, OpenError> {
    let mut stream = socket;
    let nonce = scramble::nonce();
    // A Unix socket is never offered TLS (as a MySQL server does not).
    let offer_tls = tls.is_some() && mode != ClientTlsMode::Disabled && !stream.is_unix();
    let announced = wanted.unwrap_or(if server.plugin == CACHING_SHA2 { CACHING_SHA2 } else { NATIVE });
    let greeting = greeting(server, &nonce, offer_tls, announced);
    let gone = |e: FrontendError| OpenError { error: e, reply_to: None };
    packet_io::write(&mut stream, 0, &greeting).await.map_err(|e| gone(e.into()))?;
    // The client sent sequence id 1; a refusal is id 2.
    let (mut seq, mut payload) = match packet_io::read(&mut stream, packet::MAX_HANDSHAKE_RESPONSE).await {
        Ok(p) => p,
        Err(e @ PacketError::TooLarge(_)) => return Err(OpenError { error: e.into(), reply_to: Some(ReplyTo::new(stream, 2)) }),
        Err(e) => return Err(gone(e.into())),
    };
    // An SslRequest is the first 32 bytes of a HandshakeResponse41 with CLIENT_SSL set.
    let flags = payload.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if payload.len() == 32 && flags & CapabilityFlags::CLIENT_SSL.bits() != 0 {
        let refuse = |stream| OpenError { error: FrontendError::TlsNotOffered, reply_to: Some(ReplyTo::new(stream, seq.wrapping_add(1))) };
        let Some(tls) = tls.filter(|_| offer_tls) else { return Err(refuse(stream)) };
        let Stream::Plain(tcp) = stream else { return Err(refuse(stream)) };
        stream = Stream::ServerTls(Box::new(tls.acceptor.accept(tcp).await.map_err(|e| gone(FrontendError::Tls(e)))?));
        (seq, payload) = match packet_io::read(&mut stream, packet::MAX_HANDSHAKE_RESPONSE).await {
            Ok(p) => p,
            Err(e @ PacketError::TooLarge(_)) => return Err(OpenError { error: e.into(), reply_to: Some(ReplyTo::new(stream, 3)) }),
            Err(e) => return Err(gone(e.into())),
        };
    }
    // (A plain client on a TLS-required listener is refused by the caller, with an ERR.)
    match parse_response(&payload, server, offer_tls) {
        Ok((hello, plugin, answer)) => Ok(ClientConn {
            stream,
            seq: seq.wrapping_add(1),
            nonce,
            plugin,
            response: answer,
            wanted,
            announced,
            hello,
            connection_id: server.connection_id,
        }),
        Err(error) => Err(OpenError { error, reply_to: Some(ReplyTo::new(stream, seq.wrapping_add(1))) }),
    }
}

/// The client's HandshakeResponse41: what to send upstream, its plugin and its answer.
pub(crate) fn parse_response(
    payload: &[u8],
    server: &ServerHello,
    offer_tls: bool,
) -> Result<(ClientHello, String, Vec<u8>), FrontendError> {
    let response: HandshakeResponse<'_> = ParseBuf(payload).parse(()).map_err(|e| FrontendError::Malformed(e.to_string()))?;
    if !response.capabilities().contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(FrontendError::Protocol41);
    }
    // Only what was offered counts: a client setting more bits must not change the upstream's
    // packet formats behind its back.
    let offered = offered_capabilities(server, offer_tls);
    let hello = ClientHello {
        capabilities: response.capabilities() & offered,
        mariadb_capabilities: response.mariadb_ext_capabilities() & offered_mariadb(server),
        max_packet_size: u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]),
        collation: response.collation(),
        user: String::from_utf8_lossy(response.user()).into_owned(),
        database: response.db_name().filter(|d| !d.is_empty()).map(<[u8]>::to_vec),
        attributes: response.connect_attributes(),
    };
    let plugin = match response.auth_plugin() {
        Some(p) => String::from_utf8_lossy(p.as_bytes()).into_owned(),
        None => NATIVE.to_string(),
    };
    Ok((hello, plugin, response.scramble_buf().to_vec()))
}

/// MariaDB capabilities offered to the client: the server's, never COM_MULTI (bit 1, which
/// mysql_common calls RESERVED_1): a COM_MULTI packet could carry COM_CHANGE_USER past the gate.
fn offered_mariadb(server: &ServerHello) -> MariadbCapabilities {
    server.mariadb_capabilities - MariadbCapabilities::MARIADB_CLIENT_RESERVED_1
}

/// Capabilities offered to the client: the server's, never compression, CLIENT_SSL per listener.
fn offered_capabilities(server: &ServerHello, offer_tls: bool) -> CapabilityFlags {
    let mut caps = server.capabilities;
    caps.remove(CapabilityFlags::CLIENT_COMPRESS | CapabilityFlags::CLIENT_ZSTD_COMPRESSION_ALGORITHM | CapabilityFlags::CLIENT_SSL);
    if offer_tls {
        caps.insert(CapabilityFlags::CLIENT_SSL);
    }
    caps
}

/// Protocol::HandshakeV10 (S) mirroring the upstream's, with our nonce and plugin.
fn greeting(server: &ServerHello, nonce: &[u8; NONCE_LEN], offer_tls: bool, plugin: &str) -> Vec<u8> {
    let mut first = [0u8; 8];
    first.copy_from_slice(&nonce[..8]);
    let mut second = nonce[8..].to_vec();
    second.push(0);
    let mut caps = offered_capabilities(server, offer_tls);
    caps.insert(CapabilityFlags::CLIENT_PLUGIN_AUTH | CapabilityFlags::CLIENT_SECURE_CONNECTION);
    let packet = HandshakePacket::new(
        10,
        server.version.as_slice(),
        server.connection_id,
        first,
        Some(second),
        caps,
        server.collation,
        server.status,
        Some(plugin.as_bytes()),
    )
    .with_mariadb_ext_capabilities(offered_mariadb(server));
    let mut out = Vec::with_capacity(96);
    packet.serialize(&mut out);
    out
}

impl ClientConn {
    /// Checks the client's proof against `credential` (`None`: an unknown login, which runs the
    /// same exchange against a random hash and fails). `allowed`: false for a known client asking
    /// for a role it may not use, refused after the same exchange (no fast-auth success first,
    /// which would tell it the password was right). An answer with a plugin this listener does
    /// not take is switched (AuthSwitchRequest) to the one it does.
    pub async fn authenticate(&mut self, credential: Option<&StoredCredential>, allowed: bool) -> Result<(), FrontendError> {
        let target = match (self.wanted, self.plugin.as_str()) {
            (Some(w), p) if p != w => Some(w),
            // A client that chose another plugin than the greeting's sends no answer and waits
            // to be switched to it (with a nonce of its own).
            (_, p @ (NATIVE | CACHING_SHA2)) if self.response.is_empty() && p != self.announced => {
                Some(if p == NATIVE { NATIVE } else { CACHING_SHA2 })
            }
            (None, NATIVE | CACHING_SHA2) => None,
            (None, _) => Some(NATIVE),
            _ => None,
        };
        if let Some(plugin) = target {
            self.switch_to(plugin).await?;
        }
        if self.response.is_empty() {
            return Err(FrontendError::Denied { using_password: false });
        }
        let mock;
        let hashes = match credential {
            Some(c) => c.mysql.as_ref(),
            None => {
                mock = MysqlHashes::of(&rand::random::<[u8; 32]>());
                Some(&mock)
            }
        };
        let ok = match (self.plugin.as_str(), hashes) {
            (NATIVE, Some(h)) => scramble::verify_native(&self.nonce, &self.response, &h.native),
            (CACHING_SHA2, Some(h)) => {
                let ok = scramble::verify_sha2(&self.nonce, &self.response, &h.sha2) && allowed;
                if ok {
                    self.send(&[packet::AUTH_MORE_DATA, packet::FAST_AUTH_SUCCESS]).await?;
                }
                ok
            }
            (CACHING_SHA2, None) => self.full_authentication(credential).await?,
            _ => false,
        };
        if ok && allowed { Ok(()) } else { Err(FrontendError::Denied { using_password: true }) }
    }

    /// The cleartext password (a token, for workload identity): the answer itself when the
    /// client chose mysql_clear_password, otherwise caching_sha2_password's full authentication
    /// (switching the client to that plugin first). Only inside TLS or on a Unix socket, as a
    /// MySQL server allows it.
    pub async fn read_cleartext(&mut self) -> Result<zeroize::Zeroizing<Vec<u8>>, FrontendError> {
        if !self.stream.is_tls() && !self.stream.is_unix() {
            return Err(FrontendError::FullAuthNeedsTls);
        }
        if self.plugin == CLEAR_PASSWORD && !self.response.is_empty() {
            let mut text = zeroize::Zeroizing::new(std::mem::take(&mut self.response));
            if text.last() == Some(&0) {
                text.pop();
            }
            return Ok(text);
        }
        if self.plugin != CACHING_SHA2 || self.response.is_empty() {
            self.switch_to(CACHING_SHA2).await?;
        }
        // A client with no password answers the scramble with nothing.
        if self.response.is_empty() {
            return Err(FrontendError::Denied { using_password: false });
        }
        self.ask_full_authentication().await
    }

    /// caching_sha2_password's "perform full authentication", and the cleartext the client
    /// answers with (at most [`MAX_CLEARTEXT`] bytes, its trailing NUL removed).
    async fn ask_full_authentication(&mut self) -> Result<zeroize::Zeroizing<Vec<u8>>, FrontendError> {
        self.send(&[packet::AUTH_MORE_DATA, packet::PERFORM_FULL_AUTHENTICATION]).await?;
        let (seq, payload) = match packet_io::read(&mut self.stream, MAX_CLEARTEXT).await {
            Ok(packet) => packet,
            Err(e) => {
                // The refusal answers the client's packet, which took the next sequence id.
                self.seq = self.seq.wrapping_add(1);
                return Err(e.into());
            }
        };
        self.seq = seq.wrapping_add(1);
        let mut text = zeroize::Zeroizing::new(payload);
        if text.last() == Some(&0) {
            text.pop();
        }
        Ok(text)
    }

    /// AuthSwitchRequest to `plugin` with a fresh nonce, and the client's answer to it. A client
    /// without CLIENT_PLUGIN_AUTH cannot be switched: refused as a wrong login.
    async fn switch_to(&mut self, plugin: &str) -> Result<(), FrontendError> {
        if !self.hello.capabilities.contains(CapabilityFlags::CLIENT_PLUGIN_AUTH) {
            return Err(FrontendError::Denied { using_password: !self.response.is_empty() });
        }
        self.nonce = scramble::nonce();
        let mut switch = vec![packet::EOF_OR_SWITCH];
        switch.extend_from_slice(plugin.as_bytes());
        switch.push(0);
        switch.extend_from_slice(&self.nonce);
        switch.push(0);
        self.send(&switch).await?;
        self.response = self.receive().await?;
        self.plugin = plugin.to_string();
        Ok(())
    }

    /// caching_sha2_password's slow path: the cleartext password, accepted only inside TLS and
    /// checked against the SCRAM verifier. At most [`MAX_CLEARTEXT`] bytes; the key derivation
    /// runs off the event loop; an unknown login derives against a throwaway verifier of the
    /// same cost, so it takes as long as a known one.
    async fn full_authentication(&mut self, credential: Option<&StoredCredential>) -> Result<bool, FrontendError> {
        if !self.stream.is_tls() && !self.stream.is_unix() {
            return Err(FrontendError::FullAuthNeedsTls);
        }
        let cleartext = self.ask_full_authentication().await?;
        let expected = match credential {
            Some(c) => c.scram.clone(),
            None => crate::credential::ScramVerifier {
                iterations: MOCK_ITERATIONS,
                salt: rand::random::<[u8; 16]>().to_vec(),
                stored_key: rand::random(),
                server_key: rand::random(),
            },
        };
        let matched = tokio::task::spawn_blocking(move || {
            let computed = crate::pg::scram::verifier(&cleartext, &expected.salt, expected.iterations);
            bool::from(subtle::ConstantTimeEq::ct_eq(&computed.stored_key[..], &expected.stored_key[..]))
        })
        .await
        .unwrap_or(false);
        Ok(matched && credential.is_some())
    }

    /// Sends the server's OK (its payload, untouched) with this leg's sequence id, and hands
    /// over the stream: the session is live.
    pub async fn finish(mut self, ok: &[u8]) -> Result<Stream, FrontendError> {
        self.send(ok).await?;
        Ok(self.stream)
    }

    /// Gives up on the session, keeping the connection to send the refusal.
    pub fn into_reply(self) -> ReplyTo {
        ReplyTo::new(self.stream, self.seq)
    }

    async fn send(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.seq = packet_io::write(&mut self.stream, self.seq, payload).await?;
        Ok(())
    }

    async fn receive(&mut self) -> Result<Vec<u8>, FrontendError> {
        let (seq, payload) = packet_io::read(&mut self.stream, packet::MAX_AUTH_PACKET).await?;
        self.seq = seq.wrapping_add(1);
        Ok(payload)
    }

    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// The client's TLS certificate, when it presented one.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.stream.peer_certificate()
    }
}

/// A MariaDB greeting's values, for unit tests and the fuzz target of `parse_response`.
pub(crate) fn sample_server_hello() -> ServerHello {
    ServerHello {
        version: b"5.5.5-10.11.19-MariaDB".to_vec(),
        connection_id: 42,
        capabilities: CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_COMPRESS
            | CapabilityFlags::CLIENT_SSL
            | CapabilityFlags::CLIENT_DEPRECATE_EOF
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_CONNECT_ATTRS
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB
            | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
        mariadb_capabilities: MariadbCapabilities::MARIADB_CLIENT_PROGRESS | MariadbCapabilities::MARIADB_CLIENT_RESERVED_1,
        collation: 45,
        status: StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        plugin: NATIVE.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_mirrors_the_server_without_compression() {
        let nonce = *b"abcdefghijklmnopqrst";
        let bytes = greeting(&sample_server_hello(), &nonce, false, NATIVE);
        let parsed: HandshakePacket<'_> = ParseBuf(&bytes).parse(()).unwrap();
        assert_eq!(parsed.connection_id(), 42);
        assert_eq!(parsed.server_version_ref(), b"5.5.5-10.11.19-MariaDB");
        assert_eq!(parsed.default_collation(), 45);
        assert_eq!(parsed.nonce(), nonce.to_vec());
        assert_eq!(parsed.auth_plugin_name_ref(), Some(NATIVE.as_bytes()));
        assert_eq!(parsed.mariadb_ext_capabilities(), MariadbCapabilities::MARIADB_CLIENT_PROGRESS, "never COM_MULTI");
        assert!(!parsed.capabilities().contains(CapabilityFlags::CLIENT_COMPRESS));
        assert!(!parsed.capabilities().contains(CapabilityFlags::CLIENT_SSL));
        assert!(parsed.capabilities().contains(CapabilityFlags::CLIENT_DEPRECATE_EOF));
        let bytes = greeting(&sample_server_hello(), &nonce, true, CACHING_SHA2);
        let with_tls: HandshakePacket<'_> = ParseBuf(&bytes).parse(()).unwrap();
        assert!(with_tls.capabilities().contains(CapabilityFlags::CLIENT_SSL));
        assert_eq!(with_tls.auth_plugin_name_ref(), Some(CACHING_SHA2.as_bytes()));
    }
}
