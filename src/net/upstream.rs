//! Where and how to reach a database server: TCP within `connect_timeout` and the TLS
//! handshake per `upstream_tls`. What is said before TLS (Postgres SSLRequest, MySQL
//! SslRequest) belongs to each protocol's `backend.rs`.

use super::stream::Stream;
use super::tls;
use crate::config::UpstreamTlsMode;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

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
}

impl Target {
    /// A TCP connection with Nagle off, or why there is none.
    pub async fn connect_tcp(&self) -> Result<TcpStream, String> {
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect((self.host.as_str(), self.port)))
            .await
            .map_err(|_| format!("timed out after {:?}", self.connect_timeout))?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// The client side of TLS on `tcp`, within `connect_timeout`.
    pub async fn start_tls(&self, tcp: TcpStream) -> Result<Stream, String> {
        let connector = self.tls.as_ref().ok_or("upstream TLS is disabled")?;
        let name = tls::server_name(&self.server_name).map_err(|e| e.to_string())?;
        let stream = tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| e.to_string())?;
        Ok(Stream::ClientTls(Box::new(stream)))
    }
}
