//! The client leg: everything leasegate says to an application before the byte pump starts.
//!
//! Order of a connection: optional GSSENCRequest (refused) and SSLRequest (TLS per
//! `client_tls.mode`) or direct TLS, then a CancelRequest or a StartupMessage; protocol 3.0 is
//! negotiated; then SCRAM-SHA-256(-PLUS) against the client's stored verifier. The caller mints
//! and connects upstream before [`ClientConn::send_auth_ok`] tells the client it is in.

use super::codec::{self, CodecError, MAX_HANDSHAKE_MESSAGE_LEN};
use super::message::*;
use super::scram::{Binding, ScramError, ServerExchange};
use super::sqlstate;
use crate::config::ClientTlsMode;
use crate::credential::ScramVerifier;
use crate::net::framed::{FrameError, Framed};
use crate::net::stream::Stream;
use crate::net::tls::ServerTls;
use bytes::{Bytes, BytesMut};

/// TLS record type "handshake": a client starting TLS without SSLRequest (PG 17 `sslnegotiation=direct`).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    #[error("client I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("client closed the connection during the handshake")]
    Closed,
    #[error("{0}")]
    Codec(#[from] CodecError),
    #[error("TLS handshake with the client failed: {0}")]
    Tls(std::io::Error),
    #[error("received unencrypted data after SSL request")]
    DataAfterSslRequest,
    #[error("direct TLS without the \"postgresql\" ALPN protocol")]
    DirectTlsWithoutAlpn,
    #[error("expected {expected}, got message type {got:?}")]
    Unexpected { expected: &'static str, got: char },
    #[error("{0}")]
    Scram(#[from] ScramError),
    #[error("the startup packet has no user name")]
    NoUser,
}

impl From<FrameError<CodecError>> for FrontendError {
    fn from(e: FrameError<CodecError>) -> Self {
        match e {
            FrameError::Io(e) => FrontendError::Io(e),
            FrameError::Truncated => FrontendError::Closed,
            FrameError::Decode(e) => FrontendError::Codec(e),
        }
    }
}

impl FrontendError {
    /// The ErrorResponse to send before closing, if the client can still read one.
    pub fn response(&self, user: &str) -> Option<ErrorResponse> {
        Some(match self {
            FrontendError::Io(_) | FrontendError::Closed | FrontendError::Tls(_) => return None,
            FrontendError::Codec(CodecError::UnsupportedProtocol(..)) => {
                ErrorResponse::fatal(sqlstate::FEATURE_NOT_SUPPORTED, self.to_string())
            }
            FrontendError::Codec(_) | FrontendError::DataAfterSslRequest | FrontendError::Unexpected { .. } | FrontendError::NoUser => {
                ErrorResponse::fatal(sqlstate::PROTOCOL_VIOLATION, self.to_string())
            }
            FrontendError::DirectTlsWithoutAlpn => return None,
            FrontendError::Scram(ScramError::Proof) => {
                ErrorResponse::fatal(sqlstate::INVALID_PASSWORD, format!("password authentication failed for user \"{user}\""))
            }
            FrontendError::Scram(ScramError::Malformed(_) | ScramError::Mechanism) => {
                ErrorResponse::fatal(sqlstate::PROTOCOL_VIOLATION, self.to_string())
            }
            FrontendError::Scram(ScramError::ChannelBinding(_)) => ErrorResponse::fatal(sqlstate::INVALID_AUTHORIZATION, self.to_string()),
        })
    }
}

/// How the connection opened.
pub enum Opened {
    /// A session to authenticate.
    Session(ClientConn),
    /// A CancelRequest: the connection carries nothing else.
    Cancel(CancelKey),
    /// The client went away before sending a startup packet.
    Gone,
}

/// A connection refused before it became a [`ClientConn`], with the connection when the
/// client can still read an ErrorResponse.
pub struct OpenError {
    pub error: FrontendError,
    pub reply_to: Option<Framed<Stream>>,
}

impl OpenError {
    fn gone(error: impl Into<FrontendError>) -> Self {
        OpenError { error: error.into(), reply_to: None }
    }
}

/// A client connection between its StartupMessage and the start of the byte pump.
pub struct ClientConn {
    io: Framed<Stream>,
    pub startup: StartupMessage,
    binding: Binding,
}

/// Runs the pre-authentication part of the protocol: encryption requests and the startup
/// packet. Whether TLS was required is the caller's check.
/// `socket` is a fresh TCP or Unix-socket connection; a Unix socket is never offered TLS
/// (as Postgres answers 'N' there: the kernel already keeps the bytes private).
pub async fn open(socket: Stream, tls: Option<&ServerTls>, mode: ClientTlsMode) -> Result<Opened, OpenError> {
    let socket = match socket {
        Stream::Plain(tcp) => tcp,
        other => return negotiate(Framed::new(other), None).await,
    };
    let tls = tls.filter(|_| mode != ClientTlsMode::Disabled);
    let mut first = [0u8; 1];
    let direct_tls = matches!(socket.peek(&mut first).await, Ok(1) if first[0] == TLS_HANDSHAKE_RECORD);
    let io = match (direct_tls, tls) {
        (true, Some(tls)) => {
            let stream = tls.acceptor.accept(socket).await.map_err(|e| OpenError::gone(FrontendError::Tls(e)))?;
            if stream.get_ref().1.alpn_protocol() != Some(b"postgresql") {
                return Err(OpenError::gone(FrontendError::DirectTlsWithoutAlpn));
            }
            Framed::new(Stream::ServerTls(Box::new(stream)))
        }
        _ => Framed::new(Stream::Plain(socket)),
    };
    negotiate(io, tls).await
}

/// Encryption requests, then the startup packet (or a CancelRequest).
async fn negotiate(mut io: Framed<Stream>, tls: Option<&ServerTls>) -> Result<Opened, OpenError> {
    let refuse = |io, error| Err(OpenError { error, reply_to: Some(io) });
    let mut refused_gss = false;
    loop {
        let frame = match io.read_frame(codec::decode_startup).await {
            Ok(Some(frame)) => frame,
            Ok(None) => return Ok(Opened::Gone),
            Err(e) => return refuse(io, e.into()),
        };
        match frame {
            StartupFrame::SslRequest if !io.get_ref().is_tls() => {
                let Some(tls) = tls else {
                    io.write_all(b"N").await.map_err(OpenError::gone)?;
                    continue;
                };
                // Bytes sent before our answer would be read as if they came over TLS (CVE-2021-23214).
                if !io.buffered().is_empty() {
                    return refuse(io, FrontendError::DataAfterSslRequest);
                }
                io.write_all(b"S").await.map_err(OpenError::gone)?;
                let Stream::Plain(tcp) = io.into_parts().0 else {
                    return Err(OpenError::gone(CodecError::Malformed("repeated encryption request")));
                };
                let stream = tls.acceptor.accept(tcp).await.map_err(|e| OpenError::gone(FrontendError::Tls(e)))?;
                io = Framed::new(Stream::ServerTls(Box::new(stream)));
            }
            StartupFrame::GssEncRequest if !refused_gss && !io.get_ref().is_tls() => {
                refused_gss = true;
                io.write_all(b"N").await.map_err(OpenError::gone)?;
            }
            StartupFrame::SslRequest | StartupFrame::GssEncRequest => {
                return refuse(io, FrontendError::Codec(CodecError::Malformed("repeated encryption request")));
            }
            StartupFrame::Cancel(key) => return Ok(Opened::Cancel(key)),
            StartupFrame::Startup(startup) => return started(io, startup, tls).await,
        }
    }
}

/// A StartupMessage arrived: the client says who it is and which protocol version it speaks.
async fn started(io: Framed<Stream>, startup: StartupMessage, tls: Option<&ServerTls>) -> Result<Opened, OpenError> {
    if startup.param("user").is_none_or(str::is_empty) {
        return Err(OpenError { error: FrontendError::NoUser, reply_to: Some(io) });
    }
    let binding = match (io.get_ref(), tls) {
        (Stream::ServerTls(_), Some(tls)) => Binding::TlsServerEndPoint(tls.end_point_hash.clone()),
        _ => Binding::None,
    };
    let mut conn = ClientConn { io, startup, binding };
    conn.negotiate_version().await.map_err(OpenError::gone)?;
    Ok(Opened::Session(conn))
}

impl ClientConn {
    /// The login name the client sent (`<client>[/<role>]`).
    pub fn user(&self) -> &str {
        self.startup.param("user").unwrap_or_default()
    }

    pub fn is_tls(&self) -> bool {
        self.io.get_ref().is_tls()
    }

    /// A 3.x client newer than 3.0, or one asking for `_pq_` options, is told what we speak.
    async fn negotiate_version(&mut self) -> Result<(), FrontendError> {
        if self.startup.minor == 0 && self.startup.protocol_options.is_empty() {
            return Ok(());
        }
        let mut out = BytesMut::new();
        encode_negotiate_protocol_version(0, &self.startup.protocol_options, &mut out);
        self.io.write_all(&out).await?;
        Ok(())
    }

    /// SCRAM-SHA-256(-PLUS) against `verifier`. With `genuine = false` (unknown client or role)
    /// the exchange runs the same way and fails at the proof, as a real server's mock
    /// authentication does.
    pub async fn authenticate(&mut self, verifier: &ScramVerifier, genuine: bool) -> Result<(), FrontendError> {
        let mut exchange = if genuine {
            ServerExchange::new(verifier, self.binding.clone())
        } else {
            ServerExchange::mock(verifier, self.binding.clone())
        };
        let mechanisms = self.binding.mechanisms().iter().map(|m| m.to_string()).collect();
        self.send(Authentication::Sasl(mechanisms)).await?;

        let initial = self.read_password_message().await?;
        let initial = SaslInitialResponse::parse(&initial).ok_or(ScramError::Malformed("invalid SASLInitialResponse"))?;
        let server_first = exchange.client_first(initial.mechanism, initial.data)?;
        self.send(Authentication::SaslContinue(Bytes::from(server_first))).await?;

        let response = self.read_password_message().await?;
        let server_final = exchange.client_final(&response)?;
        self.send(Authentication::SaslFinal(Bytes::from(server_final))).await
    }

    /// AuthenticationCleartextPassword, and the password the client answers with (a token,
    /// for workload identity). The caller makes sure the connection is TLS or a Unix socket.
    pub async fn read_cleartext(&mut self) -> Result<zeroize::Zeroizing<Vec<u8>>, FrontendError> {
        self.send(Authentication::CleartextPassword).await?;
        let body = self.read_password_message().await?;
        let mut text = zeroize::Zeroizing::new(body.to_vec());
        // PasswordMessage is a C string.
        if text.last() == Some(&0) {
            text.pop();
        }
        Ok(text)
    }

    /// The client's TLS certificate, when it presented one.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.io.get_ref().peer_certificate()
    }

    /// A Unix-socket connection (no TLS there, and none needed).
    pub fn is_unix(&self) -> bool {
        self.io.get_ref().is_unix()
    }

    async fn read_password_message(&mut self) -> Result<Bytes, FrontendError> {
        let msg = self.io.read_frame(|b| codec::decode_message(b, MAX_HANDSHAKE_MESSAGE_LEN)).await?.ok_or(FrontendError::Closed)?;
        match msg.tag {
            b'p' => Ok(msg.body),
            // Terminate: the client gave up (psql asking for a password does this).
            b'X' => Err(FrontendError::Closed),
            other => Err(FrontendError::Unexpected { expected: "a password message", got: other as char }),
        }
    }

    async fn send(&mut self, auth: Authentication) -> Result<(), FrontendError> {
        let mut out = BytesMut::new();
        auth.encode(&mut out);
        self.io.write_all(&out).await?;
        Ok(())
    }

    /// Gives up on the session, keeping the connection to send the refusal.
    pub fn into_reply(self) -> Framed<Stream> {
        self.io
    }

    /// AuthenticationOk followed by the server's own post-auth messages (already framed bytes),
    /// then hands over the stream and anything the client sent ahead.
    pub async fn finish(mut self, server_messages: &[u8]) -> Result<(Stream, BytesMut), FrontendError> {
        let mut out = BytesMut::with_capacity(9 + server_messages.len());
        Authentication::Ok.encode(&mut out);
        out.extend_from_slice(server_messages);
        self.io.write_all(&out).await?;
        Ok(self.io.into_parts())
    }
}
