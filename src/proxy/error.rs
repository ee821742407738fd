//! `SessionError`: everything that can end a session before the pump starts, and the ONE map
//! from it to what the client is told (a Postgres ErrorResponse; MySQL will map the same enum
//! to an ERR packet). A server's own error passes through intact.

use crate::lease::LeaseError;
use crate::pg::backend::BackendError;
use crate::pg::frontend::FrontendError;
use crate::pg::message::ErrorResponse;
use crate::pg::provision::ProvisionError;
use crate::pg::sqlstate;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("handshake did not finish within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    #[error(transparent)]
    Client(#[from] FrontendError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Upstream(#[from] BackendError),
}

/// What to send the client before closing.
pub enum Reply {
    /// An ErrorResponse leasegate builds.
    Error(ErrorResponse),
    /// The server's own ErrorResponse bytes.
    Relay(Bytes),
    /// Nothing: the client is gone or cannot read a message now.
    Nothing,
}

impl SessionError {
    /// The `reason` label of a failed client authentication; `None` for failures that are not
    /// the client's (minting, upstream).
    pub fn auth_failure_reason(&self) -> Option<&'static str> {
        use crate::pg::scram::ScramError;
        Some(match self {
            SessionError::HandshakeTimeout(_) => "timeout",
            SessionError::Client(FrontendError::Scram(ScramError::Proof)) => "password",
            SessionError::Client(FrontendError::Scram(ScramError::ChannelBinding(_))) => "channel_binding",
            SessionError::Client(FrontendError::TlsRequired) => "tls_required",
            SessionError::Client(FrontendError::Io(_) | FrontendError::Closed) => return None,
            SessionError::Client(_) => "protocol",
            _ => return None,
        })
    }

    /// `login` is the name the client logged in with, for messages that quote it.
    pub fn to_pg(&self, login: &str) -> Reply {
        let fatal = |code, msg: String| Reply::Error(ErrorResponse::fatal(code, msg));
        match self {
            SessionError::HandshakeTimeout(_) => fatal(sqlstate::PROTOCOL_VIOLATION, "authentication timed out".into()),
            SessionError::Client(e) => e.response(login).map_or(Reply::Nothing, Reply::Error),
            SessionError::Lease(LeaseError::ShuttingDown) => fatal(sqlstate::CANNOT_CONNECT_NOW, "leasegate is shutting down".into()),
            SessionError::Lease(LeaseError::TooMany(_)) => fatal(sqlstate::TOO_MANY_CONNECTIONS, "sorry, too many clients already".into()),
            SessionError::Lease(LeaseError::UnknownRole(_) | LeaseError::Journal(_)) => {
                fatal(sqlstate::SYSTEM_ERROR, "leasegate could not create a database user; see its log".into())
            }
            SessionError::Lease(LeaseError::Mint {
                source: ProvisionError::Connect { addr, .. } | ProvisionError::Unreachable { addr, .. },
            }) => fatal(sqlstate::CONNECTION_FAILURE, format!("leasegate could not reach the database server at {addr} to create a user")),
            SessionError::Lease(LeaseError::Mint { .. }) => fatal(
                sqlstate::SYSTEM_ERROR,
                "leasegate could not create a database user for this connection; the cause is in its log".into(),
            ),
            SessionError::Upstream(BackendError::Server { raw, .. }) => Reply::Relay(raw.clone()),
            SessionError::Upstream(e @ (BackendError::Connect { .. } | BackendError::Tls { .. } | BackendError::TlsRefused { .. })) => {
                fatal(sqlstate::CONNECTION_FAILURE, e.to_string())
            }
            SessionError::Upstream(e) => fatal(sqlstate::CONNECTION_FAILURE, e.to_string()),
        }
    }
}
