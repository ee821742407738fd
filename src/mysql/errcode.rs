//! The MySQL error numbers leasegate itself sends (a server's own ERR passes through
//! untouched), and THE map from a refusal to the ERR packet a MySQL client is told.

use super::Mysql;
use super::backend::BackendError;
use super::frontend::FrontendError;
use super::packet::err_payload;
use crate::lease::LeaseError;
use crate::provision::ProvisionError;
use crate::proxy::protocol::RefusalOf;
use crate::proxy::refusal::{Denial, Refusal};

/// ER_ACCESS_DENIED_ERROR: wrong password, unknown client or a role the client may not use.
pub const ACCESS_DENIED: u16 = 1045;
/// ER_CON_COUNT_ERROR: too many connections.
pub const TOO_MANY_CONNECTIONS: u16 = 1040;
/// ER_HANDSHAKE_ERROR: a handshake packet leasegate cannot read.
pub const BAD_HANDSHAKE: u16 = 1043;
/// ER_UNKNOWN_COM_ERROR: a command the server does not take.
pub const UNKNOWN_COMMAND: u16 = 1047;
/// ER_SERVER_SHUTDOWN.
pub const SHUTDOWN: u16 = 1053;
/// ER_NO_SUCH_THREAD: `KILL n` for a thread that is not there.
pub const NO_SUCH_THREAD: u16 = 1094;
/// ER_KILL_DENIED_ERROR: `KILL n` for another user's thread.
pub const KILL_DENIED: u16 = 1095;
/// ER_UNKNOWN_ERROR.
pub const UNKNOWN: u16 = 1105;
/// ER_NET_PACKET_TOO_LARGE.
pub const PACKET_TOO_LARGE: u16 = 1153;
/// ER_SECURE_TRANSPORT_REQUIRED.
pub const SECURE_TRANSPORT_REQUIRED: u16 = 3159;
/// "The server cannot be reached", with 2003's text. Not 2003 itself: 2000–2999 are
/// client-side codes, and libmariadb rejects them from a server as a malformed packet. 1105
/// (ER_UNKNOWN_ERROR) with SQLSTATE 08S01 reads as a connection failure to drivers.
pub const UNREACHABLE: u16 = UNKNOWN;

/// The ERR payload for a MySQL client; `login` and `host` as the server quotes them in
/// "Access denied for user 'login'@'host'". `None`: the client cannot read one now.
pub fn render(why: &RefusalOf<Mysql>, login: &str, host: &str) -> Option<Vec<u8>> {
    let err = |code, state, msg: &str| Some(err_payload(code, state, msg));
    let denied = |using: &str| err(ACCESS_DENIED, "28000", &format!("Access denied for user '{login}'@'{host}' (using password: {using})"));
    match why {
        Refusal::Denied(Denial::NoCredential) => denied("NO"),
        Refusal::Denied(_) => denied("YES"),
        Refusal::TlsRequired => err(
            SECURE_TRANSPORT_REQUIRED,
            "HY000",
            "Connections using insecure transport are prohibited while --require_secure_transport=ON.",
        ),
        Refusal::Client(FrontendError::TooLarge(_)) => {
            err(PACKET_TOO_LARGE, "08S01", "Got a packet bigger than 'max_allowed_packet' bytes")
        }
        Refusal::Client(FrontendError::Io(_) | FrontendError::Closed | FrontendError::Tls(_)) | Refusal::ClientGone => None,
        Refusal::Client(_) | Refusal::HandshakeTimeout(_) => err(BAD_HANDSHAKE, "08S01", "Bad handshake"),
        Refusal::TooManyClients | Refusal::Lease(LeaseError::TooMany(_)) => err(TOO_MANY_CONNECTIONS, "08004", "Too many connections"),
        // The lease store cannot take the intent (the shared store is down, or this instance was
        // fenced): fail closed as a server at its connection limit does, so clients retry.
        Refusal::Lease(LeaseError::Journal(_)) => err(
            TOO_MANY_CONNECTIONS,
            "08004",
            "Too many connections: leasegate cannot record new leases now (its lease store is unreachable); retry shortly",
        ),
        Refusal::Lease(LeaseError::ShuttingDown) => err(SHUTDOWN, "08S01", "Server shutdown in progress"),
        Refusal::Lease(LeaseError::Mint { source: ProvisionError::Connect { addr, .. } | ProvisionError::Unreachable { addr, .. } }) => {
            err(UNREACHABLE, "08S01", &format!("Can't connect to server on '{addr}' (leasegate could not create a user there)"))
        }
        Refusal::Lease(_) => {
            err(UNKNOWN, "HY000", "leasegate could not create a database user for this connection; the cause is in its log")
        }
        Refusal::ServerSaid(said) => Some(said.raw.to_vec()),
        Refusal::Upstream(e @ BackendError::Connect { .. }) => err(UNREACHABLE, "08S01", &e.to_string()),
        Refusal::Upstream(e) => err(UNREACHABLE, "08S01", &format!("Lost connection to server during login: {e}")),
    }
}
