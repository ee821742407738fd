//! `/v1/leases…` and `/v1/creds/{role}`: list, show, renew and revoke leases, and hand out a
//! credential for direct use (CI jobs, migrations).

use super::{AdminState, ApiError, Caller};
use crate::audit::rfc3339;
use crate::lease::{Lease, LeaseError, LeaseState, RenewError};
use axum::Extension;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long a revoke request waits for the user to be dropped before answering 503.
const REVOKE_WAIT: Duration = Duration::from_secs(30);
/// The client identity recorded for credentials handed out by the API.
pub const API_CLIENT: &str = "admin-api";

pub fn routes() -> Router<AdminState> {
    Router::new()
        .route("/leases", get(list))
        .route("/leases/revoke-prefix", post(revoke_prefix))
        .route("/leases/{id}", get(show))
        .route("/leases/{id}/renew", post(renew))
        .route("/leases/{id}/revoke", post(revoke))
        .route("/creds/{role}", post(creds))
}

/// A lease as the API shows it. Never the password.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LeaseView {
    pub id: String,
    pub database: String,
    pub role: String,
    pub client: String,
    pub db_user: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub sessions: usize,
    /// The instance that owns the lease (with a shared store, possibly another one).
    #[serde(default)]
    pub instance: String,
    pub granted_at: String,
    pub expires_at: String,
    pub max_expires_at: String,
}

impl LeaseView {
    /// An ended lease, as the journal remembers it.
    fn ended(r: crate::lease::JournalRow) -> LeaseView {
        LeaseView {
            id: r.id,
            database: r.database,
            role: r.role,
            client: r.client,
            db_user: r.db_user,
            state: r.state,
            last_error: r.last_error,
            sessions: 0,
            instance: r.instance,
            granted_at: rfc3339(r.granted_at),
            expires_at: rfc3339(r.expires_at),
            max_expires_at: rfc3339(r.max_expires_at),
        }
    }

    fn of(l: &Lease, instance: &str) -> LeaseView {
        let state = l.state();
        LeaseView {
            id: l.id.clone(),
            database: l.database.clone(),
            role: l.identity.role.clone(),
            client: l.identity.client.clone(),
            db_user: l.user.clone(),
            state: state.as_str().to_string(),
            last_error: match state {
                LeaseState::RevokeFailed(e) => Some(e),
                _ => None,
            },
            sessions: l.live_sessions(),
            instance: instance.to_string(),
            granted_at: rfc3339(l.granted_at),
            expires_at: rfc3339(l.expires_at()),
            max_expires_at: rfc3339(l.max_expires_at),
        }
    }
}

#[derive(Deserialize)]
struct Filter {
    role: Option<String>,
    state: Option<String>,
}

const STATES: [&str; 5] = ["minting", "active", "revoking", "revoke_failed", "ended"];

async fn list(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Query(f): Query<Filter>,
) -> Result<Json<Vec<LeaseView>>, ApiError> {
    if let Some(state) = &f.state
        && !STATES.contains(&state.as_str())
    {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("unknown state {state:?}; one of {}", STATES.join(", "))));
    }
    let mut leases: Vec<LeaseView> = s
        .app
        .leases
        .list()
        .iter()
        .filter(|l| caller.owns(&l.identity.client))
        .map(|l| LeaseView::of(l, s.app.leases.journal().instance()))
        .collect();
    // With a shared store, the other instances' leases too.
    if s.app.leases.journal().fleet().is_some() {
        let rows = s.app.leases.journal().open_leases().await.map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
        let here: std::collections::HashSet<String> = leases.iter().map(|v| v.id.clone()).collect();
        let ours = s.app.leases.journal().instance();
        leases.extend(
            rows.into_iter().filter(|r| r.instance != ours && !here.contains(&r.id) && caller.owns(&r.client)).map(LeaseView::ended),
        );
    }
    leases.retain(|v| f.role.as_ref().is_none_or(|r| &v.role == r) && f.state.as_ref().is_none_or(|st| &v.state == st));
    leases.sort_by(|a, b| a.granted_at.cmp(&b.granted_at).then(a.id.cmp(&b.id)));
    Ok(Json(leases))
}

/// A live lease; for one that has ended, 409 (it exists, in the journal, but cannot be acted
/// on); for an id never seen, 404.
async fn find(s: &AdminState, caller: &Caller, id: &str) -> Result<Arc<Lease>, ApiError> {
    if let Some(lease) = s.app.leases.get(id) {
        // Another client's lease does not exist for this caller.
        if !caller.owns(&lease.identity.client) {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("no lease {id:?}")));
        }
        return Ok(lease);
    }
    if !matches!(caller, Caller::Operator) {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no lease {id:?}")));
    }
    match s.app.leases.journal().get(id).await {
        Ok(Some(row)) => Err(ApiError(StatusCode::CONFLICT, format!("lease {id:?} has ended ({})", row.end_reason.unwrap_or(row.state)))),
        _ => Err(ApiError(StatusCode::NOT_FOUND, format!("no lease {id:?}"))),
    }
}

/// A live lease, or an ended one from the journal.
async fn show(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<LeaseView>, ApiError> {
    if let Some(lease) = s.app.leases.get(&id).filter(|l| caller.owns(&l.identity.client)) {
        return Ok(Json(LeaseView::of(&lease, s.app.leases.journal().instance())));
    }
    match s.app.leases.journal().get(&id).await {
        Ok(Some(row)) if !caller.owns(&row.client) => Err(ApiError(StatusCode::NOT_FOUND, format!("no lease {id:?}"))),
        Ok(Some(row)) => Ok(Json(LeaseView::ended(row))),
        _ => Err(ApiError(StatusCode::NOT_FOUND, format!("no lease {id:?}"))),
    }
}

/// A body that is not the expected JSON: 400, or 413 when it is too large.
fn bad_json(e: JsonRejection) -> ApiError {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { e.status() } else { StatusCode::BAD_REQUEST };
    ApiError(status, format!("invalid JSON body: {}", e.body_text()))
}

/// The longest renewal increment accepted (a lease is clamped to its max TTL regardless).
const MAX_INCREMENT: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    #[serde(with = "humantime_serde")]
    increment: Duration,
}

async fn renew(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<RenewBody>, JsonRejection>,
) -> Result<Json<LeaseView>, ApiError> {
    let Json(body) = body.map_err(bad_json)?;
    if body.increment < Duration::from_secs(1) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "increment must be at least 1s".into()));
    }
    // Any lease ends at its max TTL anyway; an increment past what clocks can count is a typo.
    if body.increment > MAX_INCREMENT {
        return Err(ApiError(StatusCode::BAD_REQUEST, "increment must be at most 100 years".into()));
    }
    let lease = find(&s, &caller, &id).await?;
    match s.app.leases.renew_by(&lease, body.increment).await {
        Ok(_) => Ok(Json(LeaseView::of(&lease, s.app.leases.journal().instance()))),
        Err(e @ RenewError::NotActive(_)) => Err(ApiError(StatusCode::CONFLICT, e.to_string())),
        Err(e @ RenewError::Provision(_)) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

async fn revoke(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<LeaseView>, ApiError> {
    if s.app.leases.get(&id).is_none()
        && let Some(view) = revoke_elsewhere(&s, &caller, &id).await?
    {
        return Ok(Json(view));
    }
    let lease = find(&s, &caller, &id).await?;
    revoked(&s, &lease).await.map(Json)
}

/// A lease another instance owns (shared store): ask its owner to revoke it and wait until the
/// store says it ended. `None` when the store knows no open lease of another instance by this id.
async fn revoke_elsewhere(s: &AdminState, caller: &Caller, id: &str) -> Result<Option<LeaseView>, ApiError> {
    let journal = s.app.leases.journal();
    if journal.fleet().is_none() {
        return Ok(None);
    }
    let unavailable = |e: crate::lease::JournalError| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let Some(row) = journal.get(id).await.map_err(unavailable)? else { return Ok(None) };
    if row.state == "ended" || row.instance == journal.instance() || !caller.owns(&row.client) {
        return Ok(None);
    }
    if !s.app.leases.revoke_elsewhere(id, REVOKE_WAIT).await.map_err(unavailable)? {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("instance {} was asked to revoke the lease and has not finished yet", row.instance),
        ));
    }
    Ok(journal.get(id).await.map_err(unavailable)?.map(LeaseView::ended))
}

/// Revokes and answers once the user is gone; 503 with the last error if it is not yet.
async fn revoked(s: &AdminState, lease: &Arc<Lease>) -> Result<LeaseView, ApiError> {
    match s.app.leases.revoke_and_wait(lease, REVOKE_WAIT).await {
        LeaseState::Ended => Ok(LeaseView::of(lease, s.app.leases.journal().instance())),
        LeaseState::RevokeFailed(e) => {
            Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("revocation is failing and being retried: {e}")))
        }
        other => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("revocation did not finish in time (state {})", other.as_str()))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixBody {
    prefix: String,
}

/// Revokes every lease whose role starts with `prefix`.
async fn revoke_prefix(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<PrefixBody>, JsonRejection>,
) -> Result<Json<Vec<LeaseView>>, ApiError> {
    if !matches!(caller, Caller::Operator) {
        return Err(ApiError(StatusCode::FORBIDDEN, "revoking by prefix needs the operator's admin token".into()));
    }
    let Json(body) = body.map_err(bad_json)?;
    if body.prefix.is_empty() {
        return Err(ApiError(StatusCode::BAD_REQUEST, "prefix must not be empty".into()));
    }
    let matching: Vec<Arc<Lease>> = s.app.leases.list().into_iter().filter(|l| l.identity.role.starts_with(&body.prefix)).collect();
    let mut done = Vec::new();
    for lease in &matching {
        s.app.leases.end(lease, crate::lease::EndReason::Revoked);
    }
    for lease in &matching {
        done.push(revoked(&s, lease).await?);
    }
    Ok(Json(done))
}

/// A credential for direct use. Its `Debug` leaves the password out, and the password is wiped
/// from memory when the value is dropped.
#[derive(Serialize, Deserialize)]
pub struct Creds {
    pub lease_id: String,
    pub database: String,
    pub kind: String,
    pub host: String,
    pub port: u16,
    /// The database the admin connection uses (Postgres: a sensible default to connect to).
    pub dbname: String,
    pub user: String,
    pub password: String,
    pub ttl_seconds: u64,
    pub expires_at: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("lease_id", &self.lease_id)
            .field("database", &self.database)
            .field("kind", &self.kind)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .field("ttl_seconds", &self.ttl_seconds)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Drop for Creds {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

async fn creds(
    State(s): State<AdminState>,
    Extension(caller): Extension<Caller>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Path(role): Path<String>,
) -> Result<Json<Creds>, ApiError> {
    let config = &s.app.config;
    // A client's token grants its own roles only, as its database logins do.
    let (client, origin) = match &caller {
        Caller::Operator => (
            API_CLIENT.to_string(),
            crate::auth::Origin { peer: Some(peer.into()), auth_method: "admin_token", subject: None, token: None },
        ),
        Caller::Client { name, roles, subject } => {
            if !roles.contains(&role) {
                return Err(ApiError(StatusCode::FORBIDDEN, format!("this token's client may not use role {role:?}")));
            }
            (name.clone(), crate::auth::Origin { peer: Some(peer.into()), auth_method: "jwt", subject: Some(subject.clone()), token: None })
        }
    };
    let role_cfg = config.role(&role).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no role {role:?}")))?;
    let db = config.database(&role_cfg.database).ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "no database".into()))?;
    // In its own task: if the caller hangs up mid-mint, the mint still completes (or is rolled
    // back) instead of being dropped halfway with a user in the database.
    let leases = s.app.leases.clone();
    let granted = tokio::spawn(async move { leases.grant_detached(&role, &client, Some(origin)).await })
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let lease = granted.map_err(|e| match e {
        LeaseError::TooMany(_) => ApiError(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        other => ApiError(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
    })?;
    let (host, port) = db.upstream_host_port().unwrap_or_default();
    let ttl = lease.expires_at().duration_since(std::time::SystemTime::now()).unwrap_or_default();
    Ok(Json(Creds {
        lease_id: lease.id.clone(),
        database: db.name.clone(),
        kind: match db.kind {
            crate::config::DbKind::Postgres => "postgres".into(),
            crate::config::DbKind::Mysql => "mysql".into(),
        },
        host,
        port,
        dbname: db.admin_database.clone(),
        user: lease.user.clone(),
        password: lease.password.expose().to_string(),
        ttl_seconds: ttl.as_secs(),
        expires_at: rfc3339(lease.expires_at()),
    }))
}

#[cfg(test)]
mod tests {
    use super::Creds;

    #[test]
    fn a_credential_never_prints_its_password() {
        let creds = Creds {
            lease_id: "l1".into(),
            database: "main".into(),
            kind: "postgres".into(),
            host: "127.0.0.1".into(),
            port: 5432,
            dbname: "postgres".into(),
            user: "lg_ci_app_x".into(),
            password: "s3cret-minted-password".into(),
            ttl_seconds: 60,
            expires_at: "2026-12-02T00:00:00Z".into(),
        };
        let shown = format!("{creds:?}");
        assert!(shown.contains("lg_ci_app_x") && !shown.contains("s3cret"), "{shown}");
    }
}
