//! A minimal HTTPS client: hyper's HTTP/1 client over tokio-rustls with the crate's ring
//! provider, one connection per request, a deadline on the whole exchange and a cap on the body
//! (a remote endpoint is not trusted to be small). Key sets and discovery documents (GET), and
//! a sidecar's calls to its issuer (JSON POST with a bearer token).

use crate::net::tls::TlsError;
use http_body_util::{BodyExt, Full};
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

/// One HTTPS exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("invalid server name")]
    ServerName,
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("HTTP request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("response body over {max} bytes")]
    TooLarge { max: usize },
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// A request to send: `GET` without a body, or `POST` with a JSON one; a bearer token when given.
pub struct Request<'a> {
    pub method: hyper::Method,
    pub url: &'a Url,
    pub bearer: Option<&'a str>,
    pub json: Option<Vec<u8>>,
}

/// GETs `url` and returns the body of a 200 answer.
pub async fn https_get(url: &Url, tls: Arc<rustls::ClientConfig>, timeout: Duration, max_body: usize) -> Result<Vec<u8>, FetchError> {
    let request = Request { method: hyper::Method::GET, url, bearer: None, json: None };
    match https_request(request, tls, timeout, max_body).await? {
        (200, body) => Ok(body),
        (status, _) => Err(FetchError::Status(status)),
    }
}

/// Sends `request`; returns the status and body, whatever the status.
pub async fn https_request(
    request: Request<'_>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
    max_body: usize,
) -> Result<(u16, Vec<u8>), FetchError> {
    tokio::time::timeout(timeout, exchange(request, tls, max_body)).await.map_err(|_| FetchError::Timeout(timeout))?
}

async fn exchange(r: Request<'_>, tls: Arc<rustls::ClientConfig>, max_body: usize) -> Result<(u16, Vec<u8>), FetchError> {
    let url = r.url;
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
            tracing::debug!(error = %e, "HTTPS client connection ended with an error");
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
    let mut request = hyper::Request::builder()
        .method(r.method)
        .uri(target)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, concat!("leasegate/", env!("CARGO_PKG_VERSION")));
    if let Some(token) = r.bearer {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if r.json.is_some() {
        request = request.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Full::new(Bytes::from(r.json.unwrap_or_default())))?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
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
    Ok((status, out))
}
