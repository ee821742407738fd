//! An issuer's side: the HTTPS API sidecars call (`[issuer]`). A sidecar proves itself with a
//! JWT as its bearer token or a client certificate, matched against the `[[sidecar]]` rules;
//! it may ask only for the clients its rule names, and only for roles those clients have here.
//! Grants are ordinary detached leases of this instance (journaled, renewed on request, ended at
//! their TTL if the sidecar vanishes, revoked with their server sessions), so everything the
//! admin API, metrics and audit say of leases holds for them; the audit names the sidecar.

use super::wire::{Failure, GrantRequest, Granted, MAX_STATUS_USERS, Status, StatusRequest, UserRequest};
use crate::audit::rfc3339;
use crate::auth::Origin;
use crate::config::SidecarConfig;
use crate::identity::cert::CertIdentity;
use crate::lease::{Lease, LeaseError, LeaseState, RenewError};
use crate::metrics::IssuerLabels;
use crate::net::tls::ServerTls;
use crate::secret::Secret;
use crate::service::App;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Open connections at once, and how long a TLS handshake may take (a slow client holds a
/// connection at most this long before its request; `admin::serve_connection` bounds the rest).
const MAX_CONNECTIONS: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a release waits for the user to be dropped.
const RELEASE_WAIT: Duration = Duration::from_secs(30);
/// What a sidecar-chosen password must look like: long, and nothing a statement could misread.
const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 24..=128;

#[derive(Clone)]
struct IssuerState {
    app: App,
}

/// The sidecar that called, as its rule names it.
#[derive(Clone)]
struct Sidecar {
    name: String,
    clients: Vec<String>,
    /// What its proof named (the token's iss and sub, or the certificate's identity).
    subject: String,
    method: &'static str,
}

/// The certificate the connection's peer presented, if any (verified against `client_ca`).
#[derive(Clone)]
struct PeerCert(Option<CertIdentity>);

struct IssuerError(StatusCode, String);

impl IntoResponse for IssuerError {
    fn into_response(self) -> Response {
        (self.0, Json(Failure { error: self.1 })).into_response()
    }
}

fn refuse(status: StatusCode, message: impl Into<String>) -> IssuerError {
    IssuerError(status, message.into())
}

fn router(state: IssuerState) -> Router {
    Router::new()
        .route("/v1/issuer/grant", post(grant))
        .route("/v1/issuer/renew", post(renew))
        .route("/v1/issuer/release", post(release))
        .route("/v1/issuer/status", post(status))
        .route_layer(middleware::from_fn_with_state(state.clone(), count))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
}

/// Serves the issuer API on `listener` over TLS until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, tls: ServerTls, app: App, shutdown: crate::shutdown::Shutdown) {
    let routes = router(IssuerState { app });
    crate::admin::accept_loop("issuer", listener, MAX_CONNECTIONS, shutdown, move |socket, peer, stop| {
        let (acceptor, routes) = (tls.acceptor.clone(), routes.clone());
        async move {
            let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await else {
                tracing::debug!(%peer, "issuer TLS handshake failed");
                return;
            };
            let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| crate::identity::cert::identity_of(c));
            crate::admin::serve_connection(stream, routes.layer(Extension(PeerCert(cert))), stop).await;
        }
    })
    .await;
}

/// Finds the `[[sidecar]]` whose rule the caller's proof satisfies; 401 otherwise.
async fn authenticate(State(s): State<IssuerState>, headers: HeaderMap, mut request: Request, next: Next) -> Response {
    let cert = request.extensions().get::<PeerCert>().and_then(|p| p.0.clone());
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match sidecar_of(&s.app, bearer, cert.as_ref()).await {
        Some(sidecar) => {
            request.extensions_mut().insert(sidecar);
            next.run(request).await
        }
        None => refuse(StatusCode::UNAUTHORIZED, "no [[sidecar]] rule matches this token or certificate").into_response(),
    }
}

/// Counts each answer by sidecar, call and outcome (the client is named by grants, whose
/// body says it; the other calls name users, not clients).
async fn count(State(s): State<IssuerState>, request: Request, next: Next) -> Response {
    let sidecar = request.extensions().get::<Sidecar>().map(|sc| sc.name.clone()).unwrap_or_default();
    let call = request.uri().path().rsplit('/').next().unwrap_or_default().to_string();
    let response = next.run(request).await;
    let status = response.status();
    let outcome = if status.is_success() {
        "ok"
    } else if status.is_client_error() {
        "refused"
    } else {
        "failed"
    };
    let client = response.extensions().get::<ForClient>().map(|c| c.0.clone()).unwrap_or_default();
    s.app.metrics.issuer_requests.get_or_create(&IssuerLabels { sidecar, client, call, outcome: outcome.into() }).inc();
    response
}

/// Set on a grant's response: the client it was for, for the metric.
#[derive(Clone)]
struct ForClient(String);

async fn sidecar_of(app: &App, bearer: Option<&str>, cert: Option<&CertIdentity>) -> Option<Sidecar> {
    let of =
        |rule: &SidecarConfig, subject: String, method| Sidecar { name: rule.name.clone(), clients: rule.clients.clone(), subject, method };
    if let Some(token) = bearer.filter(|t| !t.is_empty()) {
        let verified = match app.jwt.verify(token).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "issuer: a sidecar's token was refused");
                return None;
            }
        };
        let rule = app.config.sidecars.iter().find(|r| r.jwt.as_ref().is_some_and(|j| verified.satisfies(j)))?;
        return Some(of(rule, verified.subject(), "jwt"));
    }
    let cert = cert?;
    let rule = app
        .config
        .sidecars
        .iter()
        .find(|r| r.cert.as_ref().is_some_and(|c| c.matches(cert.spiffe_id.as_deref(), cert.subject_cn.as_deref())))?;
    Some(of(rule, cert.subject(), "cert"))
}

fn bad_json(e: JsonRejection) -> IssuerError {
    refuse(StatusCode::BAD_REQUEST, format!("invalid JSON body: {}", e.body_text()))
}

async fn grant(
    State(s): State<IssuerState>,
    Extension(sidecar): Extension<Sidecar>,
    body: Result<Json<GrantRequest>, JsonRejection>,
) -> Response {
    let client = body.as_ref().map(|Json(r)| r.client.clone()).unwrap_or_default();
    let mut response = grant_for(s, sidecar, body).await.into_response();
    response.extensions_mut().insert(ForClient(client));
    response
}

async fn grant_for(
    s: IssuerState,
    sidecar: Sidecar,
    body: Result<Json<GrantRequest>, JsonRejection>,
) -> Result<Json<Granted>, IssuerError> {
    let Json(req) = body.map_err(bad_json)?;
    let config = &s.app.config;
    if !sidecar.clients.contains(&req.client) {
        tracing::warn!(sidecar = %sidecar.name, client = %req.client, role = %req.role, "issuer refused: the sidecar may not act for this client");
        return Err(refuse(StatusCode::FORBIDDEN, format!("sidecar {:?} may not act for client {:?}", sidecar.name, req.client)));
    }
    let client = config.client(&req.client).ok_or_else(|| refuse(StatusCode::FORBIDDEN, "no such client"))?;
    if !client.roles.contains(&req.role) {
        tracing::warn!(sidecar = %sidecar.name, client = %req.client, role = %req.role, "issuer refused: the client has no such role");
        return Err(refuse(StatusCode::FORBIDDEN, format!("client {:?} may not use role {:?}", req.client, req.role)));
    }
    let role = config.role(&req.role).ok_or_else(|| refuse(StatusCode::FORBIDDEN, "no such role"))?;
    let db = config
        .database(&role.database)
        .filter(|d| d.issuer.is_none())
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, "the role's database is not minted here"))?;
    // The application's own token, when the sidecar forwards one, must prove this client too.
    if let Some(token) = &req.app_token {
        let rule = client.jwt.as_ref().ok_or_else(|| refuse(StatusCode::FORBIDDEN, "this client does not prove itself with a JWT"))?;
        let verified = s.app.jwt.verify(token).await.map_err(|e| refuse(StatusCode::FORBIDDEN, format!("the application's token: {e}")))?;
        if !verified.satisfies(rule) {
            tracing::warn!(sidecar = %sidecar.name, client = %req.client, subject = %verified.subject(), "issuer refused: the application's token does not prove this client");
            return Err(refuse(StatusCode::FORBIDDEN, "the application's token does not prove this client"));
        }
    }
    check_name(&req.user, &db.name_prefix)?;
    if !PASSWORD_LEN.contains(&req.password.len()) || !req.password.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(refuse(StatusCode::BAD_REQUEST, "the password must be 24 to 128 letters and digits"));
    }
    let origin = Origin {
        peer: None,
        auth_method: "sidecar",
        subject: Some(format!("sidecar {} ({}: {})", sidecar.name, sidecar.method, sidecar.subject)),
        token: None,
    };
    let lease = s
        .app
        .leases
        .grant_named(&role.name, &req.client, req.user.clone(), Secret::new(req.password.clone()), Some(origin))
        .await
        .map_err(|e| match e {
            LeaseError::TooMany(_) | LeaseError::Journal(_) | LeaseError::ShuttingDown => {
                refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            LeaseError::UnknownRole(_) => refuse(StatusCode::FORBIDDEN, e.to_string()),
            LeaseError::Mint { .. } => refuse(StatusCode::BAD_GATEWAY, e.to_string()),
        })?;
    tracing::info!(lease = %lease.id, user = %lease.user, sidecar = %sidecar.name, client = %req.client, role = %req.role, "issued a lease to a sidecar");
    Ok(Json(Granted { lease_id: lease.id.clone(), expires_at: rfc3339(lease.expires_at()), max_expires_at: rfc3339(lease.max_expires_at) }))
}

/// A sidecar-chosen name: the database's prefix, then lower-case letters, digits and `_`, at
/// most 63 characters (every server's limit is at least 32; a longer one fails at CREATE).
fn check_name(user: &str, prefix: &str) -> Result<(), IssuerError> {
    let ok = user.starts_with(prefix)
        && user.len() > prefix.len()
        && user.len() <= 63
        && user.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(refuse(StatusCode::BAD_REQUEST, format!("the user name must start with {prefix:?} and be [a-z0-9_], at most 63")))
    }
}

/// The live lease of `user` that this sidecar may act on; 404 when there is none.
fn lease_of(s: &IssuerState, sidecar: &Sidecar, user: &str) -> Result<Arc<Lease>, IssuerError> {
    s.app
        .leases
        .list()
        .into_iter()
        .find(|l| l.user == user && sidecar.clients.contains(&l.identity.client))
        .ok_or_else(|| refuse(StatusCode::NOT_FOUND, "no live lease of this user here"))
}

async fn renew(
    State(s): State<IssuerState>,
    Extension(sidecar): Extension<Sidecar>,
    body: Result<Json<UserRequest>, JsonRejection>,
) -> Result<Json<Granted>, IssuerError> {
    let Json(req) = body.map_err(bad_json)?;
    let until = match &req.until {
        Some(t) => Some(humantime::parse_rfc3339(t).map_err(|_| refuse(StatusCode::BAD_REQUEST, "until must be an RFC 3339 time"))?),
        None => None,
    };
    let lease = match lease_of(&s, &sidecar, &req.user) {
        Ok(lease) => lease,
        // Another issuer sharing the store owns it: renewed from here.
        Err(missing) => return renew_elsewhere(&s, &sidecar, &req.user, until).await.map(Json).map_err(|e| e.unwrap_or(missing)),
    };
    let until = until.unwrap_or_else(|| {
        SystemTime::now() + s.app.config.role(&lease.identity.role).map_or(Duration::from_secs(3600), |r| r.default_ttl)
    });
    let increment = until.duration_since(SystemTime::now()).unwrap_or_default().max(Duration::from_secs(1));
    match s.app.leases.renew_by(&lease, increment).await {
        Ok(_) => Ok(Json(Granted {
            lease_id: lease.id.clone(),
            expires_at: rfc3339(lease.expires_at()),
            max_expires_at: rfc3339(lease.max_expires_at),
        })),
        Err(e @ RenewError::NotActive(_)) => Err(refuse(StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ RenewError::Provision(_)) => Err(refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

/// The open lease of `user` at another issuer sharing the store; `Err(None)` when there is
/// none this sidecar may act on (the caller's 404 stands).
async fn elsewhere(s: &IssuerState, sidecar: &Sidecar, user: &str) -> Result<crate::lease::JournalRow, Option<IssuerError>> {
    let Some(fleet) = s.app.leases.journal().fleet() else { return Err(None) };
    match fleet.find_user(user).await {
        Ok(Some(row)) if sidecar.clients.contains(&row.client) && row.instance != s.app.leases.journal().instance() => Ok(row),
        Ok(_) => Err(None),
        Err(e) => Err(Some(refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))),
    }
}

async fn renew_elsewhere(
    s: &IssuerState,
    sidecar: &Sidecar,
    user: &str,
    until: Option<SystemTime>,
) -> Result<Granted, Option<IssuerError>> {
    let row = elsewhere(s, sidecar, user).await?;
    let ttl = s.app.config.role(&row.role).map_or(Duration::from_secs(3600), |r| r.default_ttl);
    let until = until.unwrap_or_else(|| SystemTime::now() + ttl);
    match s.app.leases.renew_elsewhere(&row, until).await {
        Ok(t) => Ok(Granted { lease_id: row.id, expires_at: rfc3339(t), max_expires_at: rfc3339(row.max_expires_at) }),
        Err(e @ RenewError::NotActive(_)) => Err(Some(refuse(StatusCode::NOT_FOUND, e.to_string()))),
        Err(e @ RenewError::Provision(_)) => Err(Some(refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))),
    }
}

async fn release(
    State(s): State<IssuerState>,
    Extension(sidecar): Extension<Sidecar>,
    body: Result<Json<UserRequest>, JsonRejection>,
) -> Result<Json<serde_json::Value>, IssuerError> {
    let Json(req) = body.map_err(bad_json)?;
    let lease = match lease_of(&s, &sidecar, &req.user) {
        Ok(lease) => lease,
        Err(missing) => {
            // Another issuer owns it: it is asked through the store, and this answers once the
            // store shows it ended.
            let row = elsewhere(&s, &sidecar, &req.user).await.map_err(|e| e.unwrap_or(missing))?;
            return match s.app.leases.revoke_elsewhere(&row.id, RELEASE_WAIT).await {
                Ok(true) => Ok(Json(serde_json::json!({ "released": row.id }))),
                Ok(false) => Err(refuse(StatusCode::SERVICE_UNAVAILABLE, format!("instance {} has not revoked it yet", row.instance))),
                Err(e) => Err(refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
            };
        }
    };
    match s.app.leases.revoke_and_wait(&lease, RELEASE_WAIT).await {
        LeaseState::Ended => Ok(Json(serde_json::json!({ "released": lease.id }))),
        other => Err(refuse(StatusCode::SERVICE_UNAVAILABLE, format!("the revocation is still running (state {})", other.as_str()))),
    }
}

/// Which of the users have no live lease any more: here, or (shared store) at another issuer.
async fn status(
    State(s): State<IssuerState>,
    Extension(sidecar): Extension<Sidecar>,
    body: Result<Json<StatusRequest>, JsonRejection>,
) -> Result<Json<Status>, IssuerError> {
    let Json(req) = body.map_err(bad_json)?;
    if req.users.len() > MAX_STATUS_USERS {
        return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, format!("at most {MAX_STATUS_USERS} users per request")));
    }
    let live: std::collections::HashSet<String> = s
        .app
        .leases
        .list()
        .into_iter()
        .filter(|l| l.state().is_live() && sidecar.clients.contains(&l.identity.client))
        .map(|l| l.user.clone())
        .collect();
    let mut ended: Vec<String> = req.users.into_iter().filter(|u| !live.contains(u)).collect();
    if !ended.is_empty() && s.app.leases.journal().fleet().is_some() {
        // Not live here: another issuer sharing the store may hold it.
        let open = s.app.leases.journal().open_leases().await.map_err(|e| refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let elsewhere: std::collections::HashSet<String> =
            open.into_iter().filter(|r| r.state == "active" && sidecar.clients.contains(&r.client)).map(|r| r.db_user).collect();
        ended.retain(|u| !elsewhere.contains(u));
    }
    Ok(Json(Status { ended }))
}
