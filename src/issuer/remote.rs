//! A sidecar's side: the [`Provisioner`] of a database whose leases come from an issuer. The
//! lease engine mints, renews and revokes through it exactly as through a local admin
//! connection; each call is an HTTPS request to the issuer (its URLs tried in turn, the one
//! that answered last first), authenticated by the sidecar's own token, re-read from its file
//! at each call so a rotated token is used. Server sessions are ended by the issuer, which holds
//! the admin connection; the sidecar closes the client sockets it holds. [`watch`] polls the
//! issuer for leases that ended there (revoked through its API, expired) and ends them here.

use super::wire::{GrantRequest, Granted, Status, StatusRequest, UserRequest};
use crate::config::{DatabaseConfig, DbKind, IssuerRef, RoleConfig};
use crate::lease::{EndReason, LeaseManager};
use crate::metrics::IssuerCallLabels;
use crate::net::https::{FetchError, Request, https_request, parse_https};
use crate::provision::{Found, MintFor, Privilege, ProvisionError, ProvisionFuture, Provisioner};
use crate::secret::Secret;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};
use url::Url;

/// How long one call may take. A release waits for the issuer to end the sessions and drop the
/// user, so it gets longer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const RELEASE_TIMEOUT: Duration = Duration::from_secs(40);
const MAX_ANSWER: usize = 1024 * 1024;
/// How often a sidecar asks which of its leases ended at the issuer.
pub const WATCH_EVERY: Duration = Duration::from_millis(500);

pub struct RemoteProvisioner {
    database: String,
    kind: DbKind,
    urls: Vec<Url>,
    token_file: PathBuf,
    tls: Arc<rustls::ClientConfig>,
    /// The issuer that answered last: tried first.
    preferred: AtomicUsize,
    calls: Family<IssuerCallLabels, Counter>,
}

impl RemoteProvisioner {
    pub fn new(db: &DatabaseConfig, issuer: &IssuerRef, calls: Family<IssuerCallLabels, Counter>) -> Result<RemoteProvisioner, String> {
        let urls: Vec<Url> = issuer.urls().iter().filter_map(|u| parse_https(u)).collect();
        if urls.is_empty() {
            return Err("no https:// issuer URL".into());
        }
        let tls = crate::net::https::client_config(issuer.ca.as_deref()).map_err(|e| e.to_string())?;
        Ok(RemoteProvisioner {
            database: db.name.clone(),
            kind: db.kind,
            urls,
            token_file: issuer.token_file.clone(),
            tls,
            preferred: AtomicUsize::new(0),
            calls,
        })
    }

    fn token(&self) -> Result<Secret, ProvisionError> {
        // Nothing was sent: a refusal of this sidecar's own making, not an unreachable server.
        crate::config::SecretSource::File(self.token_file.clone())
            .load()
            .map_err(|e| statement("reading the sidecar's token", "token_file", &e.to_string()))
    }

    /// POSTs `body` to `path` at the issuers in turn until one answers. A 4xx answer is the
    /// issuer's decision and is not retried elsewhere; 404 means the user is not (any more) a
    /// lease there.
    async fn call<B: Serialize, R: DeserializeOwned>(
        &self,
        step: &'static str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, ProvisionError> {
        let outcome = self.call_once(step, path, body, timeout).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(ProvisionError::Statement { .. } | ProvisionError::UserGone { .. }) => "refused",
            Err(_) => "unreachable",
        };
        let call = path.rsplit('/').next().unwrap_or(path).to_string();
        self.calls.get_or_create(&IssuerCallLabels { database: self.database.clone(), call, outcome: label.into() }).inc();
        outcome
    }

    async fn call_once<B: Serialize, R: DeserializeOwned>(
        &self,
        step: &'static str,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, ProvisionError> {
        let token = self.token()?;
        let json = serde_json::to_vec(body).map_err(|e| statement(step, "0", &e.to_string()))?;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        let mut sent = false;
        for k in 0..self.urls.len() {
            let i = (first + k) % self.urls.len();
            let Ok(url) = self.urls[i].join(path) else { continue };
            let request = Request { method: hyper::Method::POST, url: &url, bearer: Some(token.expose()), json: Some(json.clone()) };
            match https_request(request, self.tls.clone(), timeout, MAX_ANSWER).await {
                Ok((200, answer)) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return serde_json::from_slice(&answer).map_err(|e| statement(step, "200", &format!("unreadable answer: {e}")));
                }
                Ok((status @ 400..=499, answer)) => {
                    let message = failure(&answer);
                    let code = status.to_string();
                    return Err(if status == 404 {
                        ProvisionError::UserGone { step, code, message }
                    } else {
                        statement(step, &code, &message)
                    });
                }
                Ok((status, answer)) => {
                    // The issuer answered but could not do it (its database is down…): another may.
                    let message = failure(&answer);
                    tracing::warn!(database = %self.database, issuer = %self.urls[i], status, error = %message, "issuer refused; trying the next");
                    last = Some(statement(step, &status.to_string(), &message));
                }
                Err(e) => {
                    // After the request went out, its outcome is unknown (a mint may have happened).
                    sent |= matches!(e, FetchError::Timeout(_) | FetchError::Http(_));
                    tracing::warn!(database = %self.database, issuer = %self.urls[i], error = %e, "issuer unreachable; trying the next");
                    let addr = self.urls[i].to_string();
                    last = Some(if sent {
                        ProvisionError::Connect { addr, message: e.to_string() }
                    } else {
                        ProvisionError::Unreachable { addr, message: e.to_string() }
                    });
                }
            }
        }
        Err(last.unwrap_or_else(|| ProvisionError::Unreachable { addr: "issuer".into(), message: "no issuer URL".into() }))
    }

    async fn release(&self, user: &str) -> Result<(), ProvisionError> {
        let body = UserRequest { user: user.to_string(), until: None };
        match self.call::<_, serde_json::Value>("releasing the lease at the issuer", "/v1/issuer/release", &body, RELEASE_TIMEOUT).await {
            Ok(_) => Ok(()),
            // The issuer no longer has it: ended there (revoked, expired) — the user is gone.
            Err(e) if e.user_is_gone() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Which of `users` the issuer says have ended.
    pub async fn ended(&self, users: Vec<String>) -> Result<Vec<String>, ProvisionError> {
        let status: Status = self.call("asking the issuer", "/v1/issuer/status", &StatusRequest { users }, CALL_TIMEOUT).await?;
        Ok(status.ended)
    }
}

/// The `error` of an issuer's failure answer (empty when the body is not one).
fn failure(answer: &[u8]) -> String {
    serde_json::from_slice::<super::wire::Failure>(answer).map(|f| f.error).unwrap_or_default()
}

fn statement(step: &'static str, code: &str, message: &str) -> ProvisionError {
    ProvisionError::Statement { step, code: code.to_string(), message: message.to_string() }
}

impl Provisioner for RemoteProvisioner {
    fn check(&self) -> ProvisionFuture<'_, ()> {
        Box::pin(async move { self.ended(Vec::new()).await.map(drop) })
    }

    fn max_user_len(&self) -> ProvisionFuture<'_, usize> {
        // What every server of the kind accepts (MySQL 8's 32 is the lower of MySQL's).
        let len = match self.kind {
            DbKind::Postgres => 63,
            DbKind::Mysql => 32,
        };
        Box::pin(std::future::ready(Ok(len)))
    }

    fn mint_is_atomic(&self) -> bool {
        // The issuer rolls back its own failed mints; an unknown outcome is `Connect`.
        true
    }

    fn mint<'a>(
        &'a self,
        role: &'a RoleConfig,
        user: &'a str,
        password: &'a Secret,
        _valid_until: SystemTime,
        _instance: &'a str,
        who: MintFor<'a>,
    ) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            let body = GrantRequest {
                role: role.name.clone(),
                client: who.client.to_string(),
                user: user.to_string(),
                password: password.expose().to_string(),
                // The application's own JWT, when it proved itself with one: the issuer checks it too.
                app_token: who.token.map(|t| t.expose().to_string()),
            };
            let granted: Granted = self.call("asking the issuer for a user", "/v1/issuer/grant", &body, CALL_TIMEOUT).await?;
            tracing::debug!(database = %self.database, user, issuer_lease = %granted.lease_id, expires_at = %granted.expires_at, "issuer granted");
            Ok(())
        })
    }

    fn marks_users(&self) -> bool {
        false
    }

    fn renew<'a>(&'a self, _role: &'a RoleConfig, user: &'a str, valid_until: SystemTime) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            let body = UserRequest { user: user.to_string(), until: Some(crate::audit::rfc3339(valid_until)) };
            self.call::<_, serde_json::Value>("renewing at the issuer", "/v1/issuer/renew", &body, CALL_TIMEOUT).await.map(drop)
        })
    }

    fn users_with_prefix<'a>(&'a self, _prefix: &'a str) -> ProvisionFuture<'a, Vec<Found>> {
        // A sidecar sees no server catalog; its issuer sweeps.
        Box::pin(std::future::ready(Ok(Vec::new())))
    }

    fn rollback<'a>(&'a self, _role: &'a RoleConfig, user: &'a str) -> ProvisionFuture<'a, ()> {
        Box::pin(self.release(user))
    }

    fn stop_sessions<'a>(&'a self, _user: &'a str) -> ProvisionFuture<'a, ()> {
        // The issuer ends the server sessions when the lease is released.
        Box::pin(std::future::ready(Ok(())))
    }

    fn wait_sessions_gone<'a>(&'a self, _user: &'a str, _limit: Duration) -> ProvisionFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn drop_user<'a>(&'a self, _role: &'a RoleConfig, user: &'a str, _used: &'a BTreeSet<String>) -> ProvisionFuture<'a, ()> {
        Box::pin(self.release(user))
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    fn privileges<'a>(&'a self, _roles: &'a [RoleConfig]) -> ProvisionFuture<'a, Vec<Privilege>> {
        // Nothing to hold: the sidecar has no admin account.
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}

/// Ends here every lease of `database` that the issuer says ended there, so its client sockets
/// close at once; runs until `stopped`.
pub async fn watch(manager: LeaseManager, database: String, remote: Arc<RemoteProvisioner>, stopped: crate::shutdown::Shutdown) {
    loop {
        tokio::select! {
            _ = stopped.cancelled() => return,
            _ = tokio::time::sleep(WATCH_EVERY) => {}
        }
        let live: Vec<_> = manager.list().into_iter().filter(|l| l.database == database && l.state().is_live()).collect();
        if live.is_empty() {
            continue;
        }
        let users = live.iter().map(|l| l.user.clone()).collect();
        match remote.ended(users).await {
            Ok(ended) => {
                for lease in live.iter().filter(|l| ended.contains(&l.user)) {
                    tracing::info!(lease = %lease.id, user = %lease.user, "the issuer ended this lease; closing its sessions");
                    manager.end(lease, EndReason::Revoked);
                }
            }
            Err(e) => tracing::debug!(database = %database, error = %e, "asking the issuer which leases ended failed; sessions go on"),
        }
    }
}
