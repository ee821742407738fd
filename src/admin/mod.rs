//! The admin HTTP server (DESIGN.md §3, a contract): `/metrics`, `/healthz` and `/readyz` are
//! open; everything under `/v1` needs `Authorization: Bearer <token>` from `[admin].token_file`
//! (compared in constant time). Errors are JSON `{"error": "..."}` with the matching status.

pub mod client;
pub mod leases;
pub mod ready;

use crate::provision::Provisioners;
use crate::secret::Secret;
use crate::service::App;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use subtle::ConstantTimeEq;

/// Request bodies are a few bytes of JSON; anything bigger is refused (413).
const BODY_LIMIT: usize = 16 * 1024;

#[derive(Clone)]
pub struct AdminState {
    pub app: App,
    pub token: Option<Arc<Secret>>,
    pub registry: Arc<Registry>,
    /// Recovery finished and not shutting down.
    pub ready: Arc<AtomicBool>,
    /// The admin connections' last check (reused for a moment).
    pub checked: Arc<ready::ReadyCache>,
    /// Every database's admin side, whose connections `/readyz` checks.
    pub provisioners: Provisioners,
}

/// An API error: a status and a message, sent as `{"error": message}`.
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub fn router(state: AdminState) -> Router {
    let v1 = leases::routes().route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .nest("/v1", v1)
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// A client must send a request's headers within this; a slow or silent one is cut off, so
/// half-open connections (a slowloris) cannot pile up on the admin port.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Admin connections open at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 256;

/// Serves until `shutdown` fires. Each connection is HTTP/1.1 with a header-read timeout;
/// at shutdown, open connections finish their request and close.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState, shutdown: crate::shutdown::Shutdown) {
    let app = router(state);
    accept_loop("admin", listener, MAX_CONNECTIONS, shutdown, move |socket, peer, stop| {
        serve_connection(socket, app.clone().layer(axum::Extension(axum::extract::ConnectInfo(peer))), stop)
    })
    .await;
}

/// Accepts connections on `listener` until `shutdown` fires, at most `limit` open at once (more
/// are closed at accept), each handled by `handle` in a task of its own; then waits for those
/// tasks. The admin API and the issuer API both accept through here (`name` is for the log).
pub(crate) async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: tokio::net::TcpListener,
    limit: usize,
    shutdown: crate::shutdown::Shutdown,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, crate::shutdown::Shutdown) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "{name} API listening");
    }
    let connections = tokio_util::task::TaskTracker::new();
    let places = Arc::new(tokio::sync::Semaphore::new(limit));
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "{name} accept failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit, "{name} connection refused: too many open");
            continue;
        };
        let connection = handle(socket, peer, shutdown.clone());
        connections.spawn(async move {
            let _place = place;
            connection.await;
        });
    }
    connections.close();
    connections.wait().await;
}

/// Serves HTTP/1 requests on one connection until it closes, its headers take longer than
/// [`HEADER_READ_TIMEOUT`], or `stop` fires (then in-flight requests get that long to finish).
/// The admin API and the issuer API (over TLS) serve their connections through here.
pub(crate) async fn serve_connection<I>(io: I, routes: Router, stop: crate::shutdown::Shutdown)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(routes);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, conn).await;
        }
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    match crate::metrics::render(&s.registry) {
        Ok(text) => ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, "encoding metrics failed".into()).into_response(),
    }
}

/// Ready when recovery has finished, no shutdown has begun, and every admin connection works.
async fn readyz(State(s): State<AdminState>) -> Response {
    if !s.ready.load(Ordering::Acquire) {
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, "not ready: starting or shutting down".into()).into_response();
    }
    if !s.app.leases.journal().health().reachable {
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, "not ready: the shared lease store is unreachable (new grants fail)".into())
            .into_response();
    }
    if !s.checked.get(|| crate::provision::admin_connections_ok(&s.provisioners)).await {
        return ApiError(StatusCode::SERVICE_UNAVAILABLE, "not ready: an admin connection to a database fails".into()).into_response();
    }
    "ready\n".into_response()
}

/// Who called `/v1`: the operator (the `[admin].token_file` token, every right) or a `jwt`
/// client whose token verified (its own roles and leases only).
#[derive(Debug, Clone)]
pub enum Caller {
    Operator,
    Client { name: String, roles: Vec<String>, subject: String },
}

impl Caller {
    /// Whether this caller may see and act on leases of `client`.
    pub fn owns(&self, client: &str) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Client { name, .. } => name == client,
        }
    }
}

async fn require_token(State(s): State<AdminState>, headers: HeaderMap, mut request: Request, next: Next) -> Response {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
    let operator =
        s.token.as_ref().is_some_and(|t| given.len() == t.expose().len() && bool::from(given.as_bytes().ct_eq(t.expose().as_bytes())));
    let caller = if operator {
        Caller::Operator
    } else {
        match client_of(&s, given).await {
            Some(caller) => caller,
            None if s.token.is_none() && s.app.config.jwt_issuers.is_empty() => {
                return ApiError(StatusCode::UNAUTHORIZED, "the admin API is disabled: set [admin].token_file".into()).into_response();
            }
            None => return ApiError(StatusCode::UNAUTHORIZED, "missing or wrong bearer token".into()).into_response(),
        }
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The `jwt` client a bearer token proves, if it is a token that verifies and matches one.
async fn client_of(s: &AdminState, bearer: &str) -> Option<Caller> {
    if bearer.is_empty() || s.app.config.jwt_issuers.is_empty() {
        return None;
    }
    let verified = match s.app.jwt.verify(bearer).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(reason = e.reason(), "admin API: bearer token refused");
            return None;
        }
    };
    let client = s.app.config.clients.iter().find(|c| c.jwt.as_ref().is_some_and(|rule| verified.satisfies(rule)))?;
    Some(Caller::Client { name: client.name.clone(), roles: client.roles.clone(), subject: verified.subject() })
}
