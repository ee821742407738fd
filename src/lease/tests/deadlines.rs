//! Renewal, expiry, max TTL (drain and hard close) and the idle grace of identity leases.

use super::fake::Op;
use super::{Harness, expiry, identity, secs};
use crate::lease::{DrainReason, EndReason, LeaseState};
use std::time::Duration;

const CONN: &str = r#"
[[role]]
name = "conn"
database = "main"
default_ttl = "90s"
max_ttl = "1h"
"#;

/// Identity scope: TTL 90 s, max 100 s (so max TTL comes before the first expiry), idle grace
/// 30 s, hard close 10 s after max TTL.
const SHARED: &str = r#"
[[role]]
name = "shared"
database = "main"
default_ttl = "60s"
max_ttl = "100s"
scope = "identity"
idle_grace = "30s"
hard_close_grace = "10s"
"#;

#[tokio::test(start_paused = true)]
async fn a_live_session_renews_its_lease_at_two_thirds_of_the_ttl() {
    let h = Harness::new(CONN);
    let guard = h.grant("ci", "conn").await;
    let lease = guard.lease().clone();
    assert_eq!(expiry(&lease), Duration::from_secs(90));
    h.at(59.9).await;
    assert!(h.fake.calls(Op::Renew).is_empty());
    h.at(60.0).await;
    assert_eq!(h.fake.calls(Op::Renew), secs(&[60.0]));
    assert_eq!(expiry(&lease), Duration::from_secs(150), "one TTL from the renewal");
    assert_eq!(h.store.row(&lease.id).unwrap().expires_at, lease.expires_at(), "journaled");
    h.at(200.0).await;
    assert_eq!(h.fake.calls(Op::Renew), secs(&[60.0, 120.0, 180.0]));
    assert_eq!(lease.state(), LeaseState::Active);
    drop(guard);
}

#[tokio::test(start_paused = true)]
async fn an_idle_lease_is_not_renewed_and_ends_at_its_ttl() {
    let h = Harness::new(CONN);
    let lease = h.manager.grant_detached("conn", "api", None).await.unwrap();
    h.at(89.9).await;
    assert!(h.fake.calls(Op::Renew).is_empty(), "no session: no renewal");
    assert_eq!(h.state(&lease.id), "active");
    h.at(90.0).await;
    assert_eq!(h.fake.calls(Op::Drop), secs(&[90.0]));
    assert_eq!(h.state(&lease.id), "ended");
    assert_eq!(h.row(&lease.id), ("ended".into(), Some("expired".into()), None));
    assert!(lease.ended.is_cancelled());
    assert!(h.fake.users().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_last_session_of_a_connection_lease_ends_it_at_once() {
    let h = Harness::new(CONN);
    let guard = h.grant("ci", "conn").await;
    let id = guard.lease().id.clone();
    assert_eq!(h.row(&id).0, "active");
    h.at(5.0).await;
    drop(guard);
    h.at(5.1).await;
    assert_eq!(h.fake.calls(Op::Drop), secs(&[5.0]));
    assert_eq!(h.row(&id), ("ended".into(), Some("closed".into()), None));
}

#[tokio::test(start_paused = true)]
async fn max_ttl_drains_the_lease_and_hard_closes_it_after_the_grace() {
    let h = Harness::new(SHARED);
    let guard = h.grant("ci", "shared").await;
    let lease = guard.lease().clone();
    h.at(40.0).await;
    assert_eq!(h.fake.calls(Op::Renew), secs(&[40.0]));
    assert_eq!(expiry(&lease), Duration::from_secs(100), "renewal stops at max TTL");
    h.at(99.9).await;
    assert!(!lease.drain.is_cancelled());
    h.at(100.0).await;
    assert_eq!(h.fake.calls(Op::Renew), secs(&[40.0]), "no renewal at or after max TTL");
    assert!(lease.drain.is_cancelled());
    assert_eq!((lease.state(), lease.drain_reason()), (LeaseState::Draining(DrainReason::MaxTtl), DrainReason::MaxTtl));
    assert_eq!(lease.state().as_str(), "active", "the contract has no draining state");
    // No session joins a drained lease: the identity gets a fresh one.
    let next = h.grant("ci", "shared").await;
    assert_ne!(next.lease().id, lease.id);
    h.at(109.9).await;
    assert!(!lease.ended.is_cancelled(), "a session still on it: closed at its idle point, or at the hard close");
    h.at(110.0).await;
    assert!(lease.ended.is_cancelled());
    assert_eq!(h.row(&lease.id).1.as_deref(), Some(EndReason::MaxTtl.as_str()));
    drop((guard, next));
}

#[tokio::test(start_paused = true)]
async fn at_max_ttl_a_lease_without_sessions_ends_at_once() {
    // TTL = max TTL: an idle lease would otherwise expire before max TTL.
    let role = SHARED.replace("default_ttl = \"60s\"", "default_ttl = \"100s\"").replace("idle_grace = \"30s\"", "idle_grace = \"300s\"");
    let h = Harness::new(&role);
    let guard = h.grant("ci", "shared").await;
    let id = guard.lease().id.clone();
    h.at(10.0).await;
    drop(guard); // idle grace would keep it until 310 s
    h.at(100.0).await;
    assert_eq!(h.fake.calls(Op::Drop), secs(&[100.0]));
    assert_eq!(h.row(&id).1.as_deref(), Some("max_ttl"));
}

#[tokio::test(start_paused = true)]
async fn the_last_session_leaving_a_drained_lease_ends_it_without_waiting() {
    let h = Harness::new(SHARED);
    let guard = h.grant("ci", "shared").await;
    let id = guard.lease().id.clone();
    h.at(105.0).await;
    assert_eq!(h.state(&id), "active");
    drop(guard); // closed at its idle point after max TTL
    h.at(105.1).await;
    assert_eq!(h.fake.calls(Op::Drop), secs(&[105.0]), "neither idle grace nor hard close awaited");
    assert_eq!(h.row(&id).1.as_deref(), Some("max_ttl"));
}

#[tokio::test(start_paused = true)]
async fn an_identity_lease_outlives_its_last_session_by_the_idle_grace() {
    let h = Harness::new(SHARED);
    let first = h.grant("ci", "shared").await;
    let id = first.lease().id.clone();
    h.at(5.0).await;
    drop(first);
    h.at(20.0).await;
    let again = h.grant("ci", "shared").await;
    assert_eq!(again.lease().id, id, "rejoined within the grace");
    h.at(36.0).await;
    assert_eq!(h.state(&id), "active", "the rejoin cancelled the first grace");
    drop(again);
    h.at(65.9).await;
    assert_eq!(h.state(&id), "active");
    h.at(66.0).await;
    assert_eq!(h.fake.calls(Op::Drop), secs(&[66.0]));
    assert_eq!(h.row(&id).1.as_deref(), Some("closed"));
    let other = h.grant("ci", "shared").await;
    assert_ne!(other.lease().id, id);
    drop(other);
}

#[tokio::test(start_paused = true)]
async fn a_session_rejoining_an_idle_identity_lease_renews_it_at_once() {
    let h =
        Harness::new(&SHARED.replace("max_ttl = \"100s\"", "max_ttl = \"1h\"").replace("idle_grace = \"30s\"", "idle_grace = \"300s\""));
    let first = h.grant("ci", "shared").await;
    let lease = first.lease().clone();
    h.at(10.0).await;
    drop(first);
    h.at(45.0).await;
    assert!(h.fake.calls(Op::Renew).is_empty(), "idle at its renewal point (40 s): skipped");
    let again = h.manager.grant(&identity("ci", "shared"), None).await.unwrap();
    assert_eq!(again.lease().id, lease.id);
    h.at(45.1).await;
    assert_eq!(h.fake.calls(Op::Renew), secs(&[45.0]));
    assert_eq!(expiry(&lease), Duration::from_secs(105));
    h.at(85.0).await;
    assert_eq!(h.fake.calls(Op::Renew), secs(&[45.0, 85.0]), "and at 2/3 of the TTL from there");
    drop(again);
}
