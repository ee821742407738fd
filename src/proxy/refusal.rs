//! `Refusal`: why a session ends before its byte pump starts, in neutral facts. Each protocol
//! turns it into its own wire error in one function (`pg/sqlstate.rs`, `mysql/errcode.rs`);
//! this module only says what happened, how it is logged and which `auth_failures` reason
//! (if any) it counts as.

use crate::lease::LeaseError;
use bytes::Bytes;
use std::time::Duration;

/// Why a client could not prove who it is. One answer on the wire for every kind of wrong
/// credential (wrong password, unknown client, a role it may not use), as a server gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// The proof did not match (or the client or role does not exist).
    WrongCredential,
    /// The client offered no credential at all (MySQL: an empty auth response).
    NoCredential,
    /// SCRAM channel binding was required, refused, or did not match the TLS connection.
    ChannelBinding(&'static str),
    /// The credential may only travel inside TLS and this connection is plain.
    NeedsTls,
    /// The client proves itself by its Unix peer credentials and came over TCP.
    NeedsUnixSocket,
    /// The platform's identity (the Unix peer, a verified token) is not the one the client's
    /// entry names.
    NoMatch,
    /// A token (a password field's JWT) would travel over plain TCP.
    PlaintextRefused,
    /// The client's certificate names another identity than its entry's.
    CertNoMatch,
    /// A `cert` client presented no certificate (or one rustls did not verify).
    NoCertificate,
    /// The token did not verify; the `JwtFailure` reason (`expired`, `signature`, …).
    Token(&'static str),
}

/// The server's own refusal of a login (unknown database, too many connections…), passed to
/// the client intact so it sees the server's code.
#[derive(Debug, Clone)]
pub struct ServerSaid {
    /// SQLSTATE (Postgres) or error number (MySQL).
    pub code: String,
    pub message: String,
    /// The whole error as the server framed it (Postgres ErrorResponse message, MySQL ERR payload).
    pub raw: Bytes,
}

/// Why a session was refused. `C` is the protocol's client-leg error (the client broke the
/// protocol), `U` its upstream-leg error (the server could not be reached or logged in to).
#[derive(Debug, thiserror::Error)]
pub enum Refusal<C, U> {
    /// TLS, startup and authentication did not finish within `handshake_timeout`.
    #[error("handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    /// The client went away (or its socket failed): there is no one to answer.
    #[error("the client closed the connection")]
    ClientGone,
    /// The client sent something the protocol does not allow.
    #[error(transparent)]
    Client(C),
    /// The listener has `client_tls.mode = "required"` and the client did not use TLS.
    #[error("the client did not use TLS, which this listener requires")]
    TlsRequired,
    #[error("authentication failed: {0:?}")]
    Denied(Denial),
    /// `max_client_connections` is reached.
    #[error("max_client_connections reached")]
    TooManyClients,
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("the server refused the login: {} ({})", .0.message, .0.code)]
    ServerSaid(ServerSaid),
    #[error(transparent)]
    Upstream(U),
}

impl<C, U> Refusal<C, U> {
    /// The `reason` label of a failed client authentication (`auth_failures`); `None` for
    /// failures that are not the client's (minting, upstream) or a client that just left.
    pub fn auth_failure_reason(&self) -> Option<&'static str> {
        Some(match self {
            Refusal::HandshakeTimeout(_) => "timeout",
            Refusal::Denied(Denial::ChannelBinding(_)) => "channel_binding",
            Refusal::Denied(Denial::NeedsUnixSocket | Denial::NoMatch) => "no_match",
            Refusal::Denied(Denial::PlaintextRefused) => "plaintext_refused",
            Refusal::Denied(Denial::CertNoMatch) => "no_match",
            Refusal::Denied(Denial::NoCertificate) => "no_certificate",
            Refusal::Denied(Denial::Token(reason)) => reason,
            Refusal::Denied(_) => "password",
            Refusal::TlsRequired => "tls_required",
            Refusal::Client(_) => "protocol",
            Refusal::ClientGone | Refusal::TooManyClients | Refusal::Lease(_) | Refusal::ServerSaid(_) | Refusal::Upstream(_) => {
                return None;
            }
        })
    }

    /// Who is at fault, for the log level: the client's own mistakes and the server's refusals
    /// of the client's request are warnings, leasegate's and the upstream's failures errors.
    pub fn is_ours(&self) -> bool {
        matches!(self, Refusal::Lease(_) | Refusal::Upstream(_))
    }
}
