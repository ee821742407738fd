//! A minimal HTTPS GET for key sets and discovery documents: hyper's HTTP/1 client over
//! tokio-rustls with the crate's ring provider, one connection per request, a deadline on the
//! whole exchange and a cap on the body (an issuer's endpoint is not trusted to be small).

use super::failure::FetchError;
use crate::net::tls::TlsError;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use rustls_pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

pub const TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_BODY: usize = 1024 * 1024;

/// A URL we will fetch from: `https://` with a host. Anything else is refused up front.
pub fn parse_https(text: &str) -> Option<Url> {
    let url = Url::parse(text).ok()?;
    (url.scheme() == "https" && url.host_str().is_some_and(|h| !h.is_empty())).then_some(url)
}

/// The TLS client for an issuer: its `ca` PEM when given, else the web PKI roots.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = crate::net::tls::load_roots(ca)?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::net::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// GETs `url` and returns the body of a 200 answer.
pub async fn https_get(url: &Url, tls: Arc<rustls::ClientConfig>, timeout: Duration, max_body: usize) -> Result<Vec<u8>, FetchError> {
    tokio::time::timeout(timeout, get(url, tls, max_body)).await.map_err(|_| FetchError::Timeout(timeout))?
}

async fn get(url: &Url, tls: Arc<rustls::ClientConfig>, max_body: usize) -> Result<Vec<u8>, FetchError> {
    let host = url.host_str().ok_or(FetchError::ServerName)?;
    // `host_str` keeps IPv6 brackets; the socket and the TLS name want the bare address.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((bare, port)).await.map_err(FetchError::Connect)?;
    let name = ServerName::try_from(bare.to_string()).map_err(|_| FetchError::ServerName)?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(FetchError::Tls)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    // The connection task ends when `sender` is dropped (or on error); nothing to join.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "JWKS fetch connection ended with an error");
        }
    });
    let authority = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    let target = match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_string(),
    };
    let request = hyper::Request::get(target)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, concat!("leasegate/", env!("CARGO_PKG_VERSION")))
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    if response.status() != hyper::StatusCode::OK {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if out.len() + data.len() > max_body {
                return Err(FetchError::TooLarge { max: max_body });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}
