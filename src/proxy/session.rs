//! One client connection, start to end, for any protocol, as a short list of named steps:
//! open → authenticate → grant lease → connect upstream → relay → release.
//!
//! Each step returns what the next consumes; any failure becomes one [`Refusal`], answered by
//! the protocol and counted and logged here, and the session ends. Releasing is by drop: the
//! lease's [`SessionGuard`] ends a connection-scoped lease, the protocol's registration (cancel
//! key, server thread) removes itself.

use super::protocol::{Admission, Listener, Live, Opened, Protocol, RefusalOf};
use super::refusal::Denial;
use super::refusal::Refusal;
use crate::audit;
use crate::auth::{self, Identity, Origin};
use crate::config::Proof;
use crate::lease::{DrainReason, Lease, SessionGuard};
use crate::metrics::{AuthFailureLabels, ConnLabels, DirectionLabels, ReasonLabels};
use crate::net::handshakes::Place;
use crate::net::pump::{Closed, Observer, Pump, PumpError, Transferred};
use crate::net::stream::Stream;
use crate::peer::Peer;
use crate::service::App;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Bound on each last write and close: a stuck peer cannot hold the task.
const LAST_WORD: Duration = Duration::from_secs(1);

/// Serves one connection accepted on a listener of protocol `P`.
pub async fn run<P: Protocol>(app: App, l: Arc<Listener<P>>, socket: Stream, peer: Peer, admission: Admission) {
    let _active = ActiveConnection::new::<P>(&app, &l);
    let Some(place) = l.handshakes.begin() else {
        // Full of handshakes that just started: a burst; this one is closed unanswered.
        tracing::warn!(%peer, limit = l.db.max_handshakes, "refused: max_handshakes in progress");
        return;
    };
    // One deadline for everything the client drives: TLS, startup and authentication.
    let deadline = Instant::now() + l.db.handshake_timeout;
    let mut client = match evictable(&place, P::open(&l, socket, admission, deadline)).await {
        Some(Opened::Client(client)) => client,
        Some(Opened::Done) | None => return,
        Some(Opened::Failed(why, reply)) => {
            turn_away::<P>(&app, &l, reply, &why, "", peer).await;
            return;
        }
    };
    let admitted = async {
        let authenticated = evictable(&place, authenticate(&app, &l, &mut client, &peer, deadline)).await;
        let (identity, origin) = authenticated.unwrap_or(Err(Refusal::HandshakeTimeout(l.db.handshake_timeout)))?;
        drop(place);
        let guard = app.leases.grant(&identity, Some(origin)).await?;
        let server = P::connect_upstream(&l, &mut client, &guard).await?;
        Ok::<_, RefusalOf<P>>((identity, guard, server))
    }
    .await;
    match admitted {
        Ok((identity, guard, server)) => relay(&app, &l, client, server, guard, &identity, peer).await,
        Err(why) => {
            let login = P::login(&client).to_string();
            turn_away::<P>(&app, &l, Some(P::reply_to(client)), &why, &login, peer).await;
        }
    }
}

/// Runs a handshake step unless a newer handshake pushes this one out first (`None`).
async fn evictable<F: std::future::Future>(place: &Place, step: F) -> Option<F::Output> {
    tokio::select! {
        done = step => Some(done),
        _ = place.evicted.cancelled() => None,
    }
}

/// Checks the client's proof for the name it logged in with, within the handshake deadline:
/// a password through the protocol's exchange, a Unix peer against the kernel's credentials, a
/// token (sent as the password, inside TLS or on a Unix socket) against its issuer's keys.
async fn authenticate<P: Protocol>(
    app: &App,
    l: &Listener<P>,
    client: &mut P::Client,
    peer: &Peer,
    deadline: Instant,
) -> Result<(Identity, Origin), RefusalOf<P>> {
    let private = P::is_tls(client) || peer.unix().is_some();
    if l.db.client_tls_mode() == crate::config::ClientTlsMode::Required && !private {
        return Err(Refusal::TlsRequired);
    }
    let login = P::login(client).to_string();
    let found = auth::lookup(&l.config, &l.db.name, &login);
    let timed_out = |_| Refusal::HandshakeTimeout(l.db.handshake_timeout);
    // The JWT the client proved itself with, for a sidecar to forward to its issuer.
    let mut proof_token = None;
    let subject = match (found.password(), found.proof()) {
        (Some(check), _) => {
            tokio::time::timeout_at(deadline, P::check_password(l, client, check)).await.map_err(timed_out)??;
            None
        }
        (None, Some(Proof::Peer(rule))) => match peer.unix() {
            Some(cred) if rule.matches(cred) => Some(format!("uid={}", cred.uid)),
            Some(_) => return Err(Refusal::Denied(Denial::NoMatch)),
            None => return Err(Refusal::Denied(Denial::NeedsUnixSocket)),
        },
        (None, Some(Proof::Jwt(rule))) => {
            if !private {
                return Err(Refusal::Denied(Denial::PlaintextRefused));
            }
            let token = tokio::time::timeout_at(deadline, P::read_cleartext(client)).await.map_err(timed_out)??;
            let text = std::str::from_utf8(&token).map_err(|_| Refusal::Denied(Denial::Token("malformed")))?;
            let verified = tokio::time::timeout_at(deadline, app.jwt.verify(text))
                .await
                .map_err(timed_out)?
                .map_err(|e| Refusal::Denied(Denial::Token(e.reason())))?;
            // A token for another client answers like a wrong password (28P01 / 1045).
            if !verified.satisfies(rule) {
                return Err(Refusal::Denied(Denial::Token("no_match")));
            }
            proof_token = Some(crate::secret::Secret::new(text));
            Some(verified.subject())
        }
        (None, Some(Proof::Cert(rule))) => {
            let named = P::client_certificate(client).and_then(crate::identity::cert::identity_of);
            match named {
                Some(id) if rule.matches(id.spiffe_id.as_deref(), id.subject_cn.as_deref()) => Some(id.subject()),
                Some(_) => return Err(Refusal::Denied(Denial::CertNoMatch)),
                None => return Err(Refusal::Denied(Denial::NoCertificate)),
            }
        }
        (None, _) => return Err(Refusal::Denied(Denial::WrongCredential)),
    };
    // A refused role got its client's own exchange and is refused here.
    let identity = found.identity().ok_or(Refusal::Denied(match found.proof() {
        Some(Proof::Peer(_)) => Denial::NoMatch,
        Some(Proof::Jwt(_)) => Denial::Token("no_match"),
        Some(Proof::Cert(_)) => Denial::CertNoMatch,
        _ => Denial::WrongCredential,
    }))?;
    let auth_method = found.proof().map_or("password", |p| p.method());
    Ok((identity, Origin { peer: Some(*peer), auth_method, subject, token: proof_token }))
}

/// Counts, audits and logs a refusal, then lets the protocol answer it (quoting the login as
/// the client sent it: that goes back to the client only).
async fn turn_away<P: Protocol>(app: &App, l: &Listener<P>, reply: Option<P::Reply>, why: &RefusalOf<P>, sent: &str, peer: Peer) {
    let login = shown(sent);
    let login = login.as_str();
    // How this login was to prove itself (looked up again: failures are rare).
    let method =
        if sent.is_empty() { "unknown" } else { auth::lookup(&l.config, &l.db.name, sent).proof().map_or("password", |p| p.method()) };
    note_auth_failure(app, &l.db.name, why, login, method, peer);
    match why {
        Refusal::ClientGone => tracing::debug!(%peer, login, "client left during the handshake"),
        Refusal::TooManyClients => {
            tracing::warn!(%peer, login, limit = ?l.db.max_client_connections, "refused: max_client_connections reached")
        }
        Refusal::ServerSaid(_) => tracing::warn!(%peer, login, error = %why, "session refused by the server"),
        e if e.is_ours() => tracing::error!(%peer, login, error = %why, "session refused"),
        _ => tracing::warn!(%peer, login, error = %why, "client authentication failed"),
    }
    if let Some(reply) = reply {
        P::refuse(reply, why, sent, &peer).await;
    }
}

/// The longest part of a login name that reaches the log and the audit.
const SHOWN_LOGIN_CHARS: usize = 128;

/// A login name as the log and the audit show it: a client picks it before proving anything,
/// so it is cut to [`SHOWN_LOGIN_CHARS`] and control characters are escaped (no forged lines).
fn shown(login: &str) -> String {
    let mut out: String = login.chars().take(SHOWN_LOGIN_CHARS).flat_map(char::escape_default).collect();
    if login.chars().nth(SHOWN_LOGIN_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Metrics and audit for a failed client authentication (not for server-side refusals).
fn note_auth_failure<C, U>(app: &App, database: &str, why: &Refusal<C, U>, login: &str, method: &'static str, peer: Peer) {
    let Some(reason) = why.auth_failure_reason() else { return };
    let labels = AuthFailureLabels { database: database.to_string(), method: method.into(), reason: reason.into() };
    app.metrics.auth_failures.get_or_create(&labels).inc();
    app.audit.record(&audit::Event {
        event: "auth_failed",
        client: (!login.is_empty()).then_some(login),
        database: Some(database),
        peer: Some(peer),
        auth_method: Some(method),
        reason: Some(reason),
        ..Default::default()
    });
}

/// Hands the client over (its AuthenticationOk / OK and the server's greeting), then copies
/// bytes until either side closes or the lease ends.
async fn relay<P: Protocol>(
    app: &App,
    l: &Listener<P>,
    client: P::Client,
    server: P::Server,
    guard: SessionGuard,
    identity: &Identity,
    peer: Peer,
) {
    let lease = guard.lease().clone();
    let Some(live) = P::hand_off(l, client, server, &identity.client).await else {
        tracing::debug!(%peer, "client left before the session started");
        return;
    };
    tracing::info!(%peer, client = %identity.client, role = %identity.role, user = %lease.user, lease = %lease.id, "session started");
    let Live { mut client, mut server, observer, registration } = live;
    let outcome = drive(app, &l.db.name, &lease, Pump::new(&mut client, &mut server, observer), peer).await;
    if let Some(Ok(Closed::Idle)) = outcome {
        P::goodbye(&mut client, &mut server, lease.drain_reason()).await;
    }
    // A lease that ended under the session needs no word from leasegate: revocation ended the
    // server session first, and the server's own error has come through the pump. Writing one
    // here could land inside a server message. A TLS peer gets close_notify.
    let _ = tokio::time::timeout(LAST_WORD, server.shutdown()).await;
    let _ = tokio::time::timeout(LAST_WORD, client.shutdown()).await;
    drop(registration);
    drop(guard);
}

/// Runs the pump until either side closes (`Some`) or the lease ends (`None`), closing at the
/// next idle point once the lease drains (max TTL, shutdown); then counts and logs the end.
async fn drive<C, S, O>(app: &App, database: &str, lease: &Lease, mut pump: Pump<'_, C, S, O>, peer: Peer) -> Outcome
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
    O: Observer + Unpin,
{
    let mut bytes_metric = ByteCounter::new(app, database);
    let mut report = tokio::time::interval(BYTES_REPORT_INTERVAL);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome = loop {
        tokio::select! {
            r = &mut pump => break Some(r),
            _ = lease.ended.cancelled() => break None,
            // Max TTL: finish at the next idle point so no transaction is cut.
            _ = lease.drain.cancelled(), if !pump.closing_at_idle() => pump.close_at_idle(),
            // Long sessions show up in the byte counters while they run, not only at the end.
            _ = report.tick() => bytes_metric.report(pump.transferred()),
        }
    };
    let bytes = pump.transferred();
    bytes_metric.report(bytes);
    log_end(&outcome, bytes, &lease.user, peer);
    count_end(app, database, &outcome, lease.drain_reason());
    outcome
}

/// How a relayed session ended: a side closed or failed (`Some`), or the lease ended (`None`).
type Outcome = Option<Result<Closed, PumpError>>;

const BYTES_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Counts an open client connection for as long as it lives.
struct ActiveConnection(Gauge);

impl ActiveConnection {
    fn new<P: Protocol>(app: &App, l: &Listener<P>) -> Self {
        let labels = ConnLabels { database: l.db.name.clone(), protocol: P::NAME.into() };
        app.metrics.connections.get_or_create(&labels).inc();
        let gauge = app.metrics.connections_active.get_or_create(&labels).clone();
        gauge.inc();
        ActiveConnection(gauge)
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Adds a session's forwarded bytes to the counters as they grow.
struct ByteCounter {
    up: prometheus_client::metrics::counter::Counter,
    down: prometheus_client::metrics::counter::Counter,
    reported: Transferred,
}

impl ByteCounter {
    fn new(app: &App, database: &str) -> Self {
        let family = &app.metrics.bytes_forwarded;
        let labels = |direction: &str| DirectionLabels { database: database.to_string(), direction: direction.into() };
        // One get_or_create per statement: its read guard must be gone before the next one
        // (which may take the write lock) or the family deadlocks.
        let up = family.get_or_create(&labels("client_to_server")).clone();
        let down = family.get_or_create(&labels("server_to_client")).clone();
        ByteCounter { up, down, reported: Transferred::default() }
    }

    fn report(&mut self, now: Transferred) {
        self.up.inc_by(now.client_to_server - self.reported.client_to_server);
        self.down.inc_by(now.server_to_client - self.reported.server_to_client);
        self.reported = now;
    }
}

fn count_end(app: &App, database: &str, outcome: &Outcome, why: DrainReason) {
    let closed_by_us = match outcome {
        None => Some("lease_ended"),
        Some(Ok(Closed::Idle)) if why == DrainReason::Shutdown => Some("shutdown"),
        Some(Ok(Closed::Idle)) => Some("idle_after_max_ttl"),
        _ => None,
    };
    if let Some(reason) = closed_by_us {
        app.metrics.sessions_closed.get_or_create(&ReasonLabels { database: database.to_string(), reason: reason.into() }).inc();
    }
}

fn log_end(outcome: &Outcome, bytes: Transferred, user: &str, peer: Peer) {
    let (up, down) = (bytes.client_to_server, bytes.server_to_client);
    match outcome {
        Some(Ok(closed)) => {
            let closed_by = match closed {
                Closed::Client => "client",
                Closed::Server => "server",
                Closed::Idle => "leasegate_at_idle_point",
            };
            tracing::info!(%peer, %user, closed_by, bytes_up = up, bytes_down = down, "session ended")
        }
        Some(Err(e)) => tracing::info!(%peer, %user, error = %e, bytes_up = up, bytes_down = down, "session ended"),
        None => tracing::info!(%peer, %user, bytes_up = up, bytes_down = down, "session closed: lease ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names_reach_the_log_cut_and_escaped() {
        assert_eq!(shown("billing-api/app_ro"), "billing-api/app_ro");
        assert_eq!(shown("a\nFAKE level=ERROR"), "a\\nFAKE level=ERROR");
        let long = "x".repeat(1 << 20);
        let s = shown(&long);
        assert_eq!(s.chars().count(), SHOWN_LOGIN_CHARS + 1);
        assert!(s.ends_with('…'));
    }
}
