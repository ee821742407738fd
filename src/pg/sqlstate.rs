//! The SQLSTATE codes leasegate itself sends (a real server's codes pass through untouched).

/// Wrong password, unknown client or a role the client may not use: one answer for all three.
pub const INVALID_PASSWORD: &str = "28P01";
/// Refused before authentication (TLS required, channel binding failures).
pub const INVALID_AUTHORIZATION: &str = "28000";
pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const CONNECTION_FAILURE: &str = "08006";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const CANNOT_CONNECT_NOW: &str = "57P03";
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// An error outside the database: minting failed (missing privilege, template error).
pub const SYSTEM_ERROR: &str = "58000";

use super::Postgres;
use super::message::ErrorResponse;
use crate::lease::LeaseError;
use crate::provision::ProvisionError;
use crate::proxy::protocol::RefusalOf;
use crate::proxy::refusal::{Denial, Refusal};
use bytes::BytesMut;

/// THE map from a refusal to what a Postgres client is told before the connection closes,
/// worded as the server would; a server's own ErrorResponse passes through intact. `None`: the
/// client cannot read a message now. `login` is the name the client logged in with.
pub fn render(why: &RefusalOf<Postgres>, login: &str) -> Option<BytesMut> {
    let fatal = |code, message: String| Some(ErrorResponse::fatal(code, message));
    let response = match why {
        Refusal::HandshakeTimeout(_) => fatal(PROTOCOL_VIOLATION, "authentication timed out".into()),
        Refusal::ClientGone => None,
        Refusal::Client(e) => e.response(login),
        Refusal::TlsRequired => fatal(
            INVALID_AUTHORIZATION,
            "connection requires TLS: this listener has client_tls.mode = \"required\" (use sslmode=require)".into(),
        ),
        Refusal::Denied(Denial::ChannelBinding(detail)) => {
            fatal(INVALID_AUTHORIZATION, format!("SCRAM channel binding check failed: {detail}"))
        }
        // Postgres's own wording for a failed `peer` line of pg_hba.conf.
        Refusal::Denied(Denial::NoMatch) => fatal(INVALID_AUTHORIZATION, format!("Peer authentication failed for user \"{login}\"")),
        Refusal::Denied(Denial::NeedsUnixSocket) => fatal(
            INVALID_AUTHORIZATION,
            format!(
                "Peer authentication failed for user \"{login}\": it works on a Unix-socket connection only (host=/path/to/socket/dir)"
            ),
        ),
        // Postgres's own wording for a failed `cert` line of pg_hba.conf.
        Refusal::Denied(Denial::CertNoMatch) => {
            fatal(INVALID_AUTHORIZATION, format!("certificate authentication failed for user \"{login}\""))
        }
        Refusal::Denied(Denial::NoCertificate) => fatal(
            INVALID_AUTHORIZATION,
            format!(
                "connection requires a valid client certificate for user \"{login}\" (sslcert/sslkey, from a CA in client_tls.client_ca)"
            ),
        ),
        Refusal::Denied(Denial::PlaintextRefused) => fatal(
            INVALID_AUTHORIZATION,
            format!(
                "user \"{login}\" logs in with a token, which is never sent over plain TCP: connect with sslmode=require (or over the Unix socket)"
            ),
        ),
        Refusal::Denied(_) => fatal(INVALID_PASSWORD, format!("password authentication failed for user \"{login}\"")),
        Refusal::TooManyClients => fatal(TOO_MANY_CONNECTIONS, "sorry, too many clients already".into()),
        Refusal::Lease(e) => Some(lease_error(e)),
        Refusal::ServerSaid(said) => return Some(BytesMut::from(&said.raw[..])),
        Refusal::Upstream(e) => fatal(CONNECTION_FAILURE, e.to_string()),
    }?;
    let mut out = BytesMut::new();
    response.encode(&mut out);
    Some(out)
}

fn lease_error(e: &LeaseError) -> ErrorResponse {
    match e {
        LeaseError::ShuttingDown => ErrorResponse::fatal(CANNOT_CONNECT_NOW, "leasegate is shutting down"),
        LeaseError::TooMany(_) => ErrorResponse::fatal(TOO_MANY_CONNECTIONS, "sorry, too many clients already"),
        // The lease store cannot take the intent (the shared store is down, or this instance was
        // fenced): fail closed as a server at its connection limit does, so clients retry.
        LeaseError::Journal(_) => ErrorResponse::fatal(
            TOO_MANY_CONNECTIONS,
            "sorry, too many clients already: leasegate cannot record new leases now (its lease store is unreachable); retry shortly",
        ),
        LeaseError::UnknownRole(_) => ErrorResponse::fatal(SYSTEM_ERROR, "leasegate could not create a database user; see its log"),
        LeaseError::Mint { source: ProvisionError::Connect { addr, .. } | ProvisionError::Unreachable { addr, .. } } => {
            ErrorResponse::fatal(CONNECTION_FAILURE, format!("leasegate could not reach the database server at {addr} to create a user"))
        }
        LeaseError::Mint { .. } => {
            ErrorResponse::fatal(SYSTEM_ERROR, "leasegate could not create a database user for this connection; the cause is in its log")
        }
    }
}
