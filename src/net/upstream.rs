//! Where and how to reach a database server: TCP within `connect_timeout` and the TLS
//! handshake per `upstream_tls`. What is said before TLS (Postgres SSLRequest, MySQL
//! SslRequest) belongs to each protocol's `backend.rs`.

use super::stream::Stream;
use super::tls;
use crate::config::UpstreamTlsMode;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A whole login (connect, TLS, authentication, the server's greeting) may take this many
/// `connect_timeout`s: each step is bounded by one, and a server that accepts TCP and then
/// says nothing must not hang a session.
const LOGIN_TIMEOUT_FACTOR: u32 = 2;

/// Why a connection to the server could not be opened (the caller adds the address).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
    #[error("login timed out after {0:?}")]
    LoginTimedOut(Duration),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("upstream TLS is disabled")]
    TlsDisabled,
    #[error(transparent)]
    ServerName(#[from] tls::TlsError),
}

/// Built once per `[[database]]`.
#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub host: String,
    pub port: u16,
    pub tls_mode: UpstreamTlsMode,
    /// `None` for `disable`.
    pub tls: Option<TlsConnector>,
    /// Name checked in verify-full (and sent as SNI).
    pub server_name: String,
    pub connect_timeout: Duration,
    /// `allow_upstream_trust`: a server may let the minted user in without asking for its
    /// password (it then checks nobody, so this is refused unless configured).
    pub allow_trust: bool,
}

impl Target {
    /// True when TLS to this server proves who it is (`verify-ca`, `verify-full`): only then
    /// may a password travel in cleartext inside it.
    pub fn verifies_server(&self) -> bool {
        matches!(self.tls_mode, UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyFull)
    }

    /// The bound on one whole login to the server.
    pub fn login_timeout(&self) -> Duration {
        self.connect_timeout * LOGIN_TIMEOUT_FACTOR
    }

    /// A TCP connection with Nagle off, within `connect_timeout`.
    pub async fn connect_tcp(&self) -> Result<TcpStream, ConnectError> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| ConnectError::TimedOut(self.connect_timeout))??;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// The client side of TLS on `tcp`, within `connect_timeout`.
    pub async fn start_tls(&self, tcp: TcpStream) -> Result<Stream, ConnectError> {
        let connector = self.tls.as_ref().ok_or(ConnectError::TlsDisabled)?;
        let name = tls::server_name(&self.server_name)?;
        let stream = tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::TimedOut(self.connect_timeout))??;
        Ok(Stream::ClientTls(Box::new(stream)))
    }
}
