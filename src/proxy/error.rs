//! `SessionError`: everything that can end a session before the pump starts, and the ONE map
//! from it to what the client is told: a Postgres ErrorResponse (`to_pg`) or a MySQL ERR
//! packet (`to_mysql`), worded as the server would. A server's own error passes through intact.

use crate::lease::LeaseError;
use crate::mysql::backend::BackendError as MyBackendError;
use crate::mysql::frontend::FrontendError as MyFrontendError;
use crate::mysql::packet;
use crate::pg::backend::BackendError;
use crate::pg::frontend::FrontendError;
use crate::pg::message::ErrorResponse;
use crate::pg::sqlstate;
use crate::provision::ProvisionError;
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
    #[error(transparent)]
    MyClient(#[from] MyFrontendError),
    #[error(transparent)]
    MyUpstream(#[from] MyBackendError),
}

/// The MySQL code for "the server cannot be reached", with 2003's text. Not 2003 itself:
/// 2000–2999 are client-side codes, and libmariadb rejects them from a server as a malformed
/// packet. 1105 (ER_UNKNOWN_ERROR) with SQLSTATE 08S01 reads as a connection failure to drivers.
const UNREACHABLE: u16 = 1105;

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
            SessionError::MyClient(MyFrontendError::Denied { .. } | MyFrontendError::FullAuthNeedsTls) => "password",
            SessionError::MyClient(MyFrontendError::TlsRequired) => "tls_required",
            SessionError::MyClient(MyFrontendError::Io(_) | MyFrontendError::Closed) => return None,
            SessionError::MyClient(_) => "protocol",
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
            SessionError::MyClient(_) | SessionError::MyUpstream(_) => fatal(sqlstate::PROTOCOL_VIOLATION, self.to_string()),
        }
    }

    /// The ERR payload for a MySQL client; `login` and `host` as the server quotes them in
    /// "Access denied for user 'login'@'host'". `None`: the client cannot read one now.
    pub fn to_mysql(&self, login: &str, host: &str) -> Option<Vec<u8>> {
        let err = |code, state, msg: &str| Some(packet::err_payload(code, state, msg));
        let denied = |using: bool| {
            let using = if using { "YES" } else { "NO" };
            err(1045, "28000", &format!("Access denied for user '{login}'@'{host}' (using password: {using})"))
        };
        match self {
            SessionError::MyClient(e) => match e {
                MyFrontendError::Denied { using_password } => denied(*using_password),
                MyFrontendError::FullAuthNeedsTls => denied(true),
                MyFrontendError::TlsRequired => {
                    err(3159, "HY000", "Connections using insecure transport are prohibited while --require_secure_transport=ON.")
                }
                MyFrontendError::TooLarge(_) => err(1153, "08S01", "Got a packet bigger than 'max_allowed_packet' bytes"),
                MyFrontendError::Io(_) | MyFrontendError::Closed | MyFrontendError::Tls(_) => None,
                _ => err(1043, "08S01", "Bad handshake"),
            },
            SessionError::HandshakeTimeout(_) => err(1043, "08S01", "Bad handshake"),
            SessionError::Lease(LeaseError::ShuttingDown) => err(1053, "08S01", "Server shutdown in progress"),
            SessionError::Lease(LeaseError::TooMany(_)) => err(1040, "08004", "Too many connections"),
            SessionError::Lease(LeaseError::Mint {
                source: ProvisionError::Connect { addr, .. } | ProvisionError::Unreachable { addr, .. },
            }) => err(UNREACHABLE, "08S01", &format!("Can't connect to server on '{addr}' (leasegate could not create a user there)")),
            SessionError::Lease(_) => {
                err(1105, "HY000", "leasegate could not create a database user for this connection; the cause is in its log")
            }
            SessionError::MyUpstream(MyBackendError::Server { payload, .. }) => Some(payload.clone()),
            SessionError::MyUpstream(e @ MyBackendError::Connect { .. }) => err(UNREACHABLE, "08S01", &e.to_string()),
            SessionError::MyUpstream(e) => err(UNREACHABLE, "08S01", &format!("Lost connection to server during login: {e}")),
            SessionError::Client(_) | SessionError::Upstream(_) => err(1105, "HY000", &self.to_string()),
        }
    }
}
