//! Minting: failures and their rollback (forgotten when surely nothing was created, revoked
//! otherwise), admission limits, and revocation or drain asked while the user is created.

use super::fake::{Failure, FakeProvisioner, Op};
use super::{Harness, identity, settle};
use crate::lease::{DrainReason, EndReason, LeaseError, LeaseState};

const CONN: &str = r#"
[[role]]
name = "conn"
database = "main"
default_ttl = "1h"
max_ttl = "24h"
max_leases = 1
"#;

#[tokio::test(start_paused = true)]
async fn a_refused_mint_is_rolled_back_and_forgotten() {
    let h = Harness::new(CONN);
    h.fake.fail(Op::Mint, 1, Failure::Refused);
    let refused = h.manager.grant(&identity("ci", "conn"), None).await.map(drop);
    assert!(matches!(refused, Err(LeaseError::Mint { .. })), "{refused:?}");
    assert_eq!(h.fake.calls(Op::Rollback).len(), 1);
    assert!(h.fake.calls(Op::StopSessions).is_empty(), "nothing to revoke");
    assert!(h.manager.list().is_empty());
    let rows = h.store.all();
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].state.as_str(), rows[0].end_reason.as_deref()), ("ended", None));
    assert!(rows[0].last_error.as_deref().is_some_and(|e| e.contains("Mint refused")), "{rows:?}");
    // Its unit of max_leases is back.
    drop(h.grant("ci", "conn").await);
}

/// A mint whose connection was lost may still commit on the server after leasegate gave up:
/// the rollback waits until the server has surely finished, so a late CREATE is still dropped.
#[tokio::test(start_paused = true)]
async fn a_lost_mint_is_rolled_back_only_after_the_server_finished() {
    let h = Harness::new(CONN);
    h.fake.fail(Op::Mint, 1, Failure::Lost);
    let lost = h.manager.grant(&identity("ci", "conn"), None).await.map(drop);
    assert!(matches!(lost, Err(LeaseError::Mint { .. })), "the client is told at once: {lost:?}");
    assert!(h.fake.calls(Op::Rollback).is_empty(), "no rollback while the CREATE may still run");
    let user = h.store.all()[0].db_user.clone();
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    h.fake.create_late(&user);
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
    settle().await;
    assert_eq!(h.fake.calls(Op::Rollback).len(), 1);
    assert!(h.fake.calls(Op::Rollback)[0] >= std::time::Duration::from_secs(35), "{:?}", h.fake.calls(Op::Rollback));
    assert!(h.fake.users().is_empty(), "the late user was dropped");
    assert!(h.manager.list().is_empty());
    assert_eq!(h.store.all()[0].state, "ended");
}

#[tokio::test(start_paused = true)]
async fn a_mint_with_an_unknown_outcome_whose_rollback_fails_is_revoked() {
    let h = Harness::new(CONN);
    h.fake.fail(Op::Mint, 1, Failure::Lost);
    h.fake.fail(Op::Rollback, 1, Failure::Refused);
    let lost = h.manager.grant(&identity("ci", "conn"), None).await.map(drop);
    assert!(matches!(lost, Err(LeaseError::Mint { .. })), "{lost:?}");
    tokio::time::sleep(std::time::Duration::from_secs(36)).await;
    settle().await;
    assert_eq!((h.fake.calls(Op::StopSessions).len(), h.fake.calls(Op::Drop).len()), (1, 1));
    assert!(h.fake.users().is_empty());
    let rows = h.store.all();
    assert_eq!((rows[0].state.as_str(), rows[0].end_reason.as_deref()), ("ended", Some("revoked")));
    drop(h.grant("ci", "conn").await);
}

#[tokio::test(start_paused = true)]
async fn a_failed_mint_on_a_server_without_transactional_ddl_is_revoked_unless_rolled_back() {
    let h = Harness::with(&CONN.replace("max_leases = 1", ""), FakeProvisioner::new(false));
    h.fake.fail(Op::Mint, 2, Failure::Refused);
    assert!(h.manager.grant(&identity("ci", "conn"), None).await.is_err());
    assert!(h.fake.calls(Op::Drop).is_empty(), "rolled back: forgotten");
    h.fake.fail(Op::Rollback, 1, Failure::Refused);
    assert!(h.manager.grant(&identity("ci", "conn"), None).await.is_err());
    settle().await;
    assert_eq!(h.fake.calls(Op::Drop).len(), 1, "the statements before the failure may have created it");
    assert!(h.fake.users().is_empty());
    let reasons: Vec<_> = h.store.all().into_iter().map(|r| (r.state, r.end_reason)).collect();
    assert_eq!(reasons, [("ended".into(), None), ("ended".into(), Some("revoked".into()))]);
}

#[tokio::test(start_paused = true)]
async fn an_intent_the_store_refuses_creates_no_user() {
    let h = Harness::new(CONN);
    h.store.fail_writes(1);
    let refused = h.manager.grant(&identity("ci", "conn"), None).await.map(drop);
    assert!(matches!(refused, Err(LeaseError::Journal(_))), "{refused:?}");
    assert!(h.fake.calls(Op::Mint).is_empty());
    assert!(h.manager.list().is_empty());
    drop(h.grant("ci", "conn").await);
}

#[tokio::test(start_paused = true)]
async fn max_leases_refuses_grants_until_a_lease_ends() {
    let h = Harness::new(CONN);
    let first = h.grant("ci", "conn").await;
    let refused = h.manager.grant(&identity("ci", "conn"), None).await.map(drop);
    assert!(matches!(refused, Err(LeaseError::TooMany(_))), "{refused:?}");
    drop(first);
    settle().await;
    drop(h.grant("ci", "conn").await);
}

#[tokio::test(start_paused = true)]
async fn a_revocation_asked_while_minting_runs_once_the_user_exists() {
    let h = Harness::new(CONN);
    h.fake.hold(Op::Mint);
    let manager = h.manager.clone();
    let grant = tokio::spawn(async move { manager.grant(&identity("ci", "conn"), None).await.map(drop) });
    settle().await;
    let lease = h.manager.list().pop().unwrap();
    assert_eq!(lease.state(), LeaseState::Minting { revoke_pending: false, drain_pending: None });
    h.manager.end(&lease, EndReason::Revoked);
    assert_eq!(lease.state(), LeaseState::Minting { revoke_pending: true, drain_pending: None });
    assert_eq!(lease.state().as_str(), "minting");
    settle().await;
    assert!(h.fake.calls(Op::StopSessions).is_empty(), "the user may not exist yet");
    h.fake.release(Op::Mint);
    settle().await;
    assert!(matches!(grant.await.unwrap(), Err(LeaseError::ShuttingDown)));
    assert_eq!(h.fake.calls(Op::Drop).len(), 1);
    assert!(h.fake.users().is_empty());
    assert_eq!(h.row(&lease.id), ("ended".into(), Some("revoked".into()), None));
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_minting_drops_the_user_once_it_exists() {
    let h = Harness::new(CONN);
    h.fake.hold(Op::Mint);
    let manager = h.manager.clone();
    let grant = tokio::spawn(async move { manager.grant(&identity("ci", "conn"), None).await.map(drop) });
    settle().await;
    // What app.rs does at shutdown: stop granting, drain, revoke everything.
    h.manager.stop_granting();
    let lease = h.manager.list().pop().unwrap();
    lease.start_draining(DrainReason::Shutdown);
    let manager = h.manager.clone();
    let revoke_all = tokio::spawn(async move { manager.revoke_all(EndReason::Shutdown, std::time::Duration::from_secs(30)).await });
    settle().await;
    assert_eq!(lease.state(), LeaseState::Minting { revoke_pending: true, drain_pending: Some(DrainReason::Shutdown) });
    h.fake.release(Op::Mint);
    h.at(1.0).await;
    assert_eq!(revoke_all.await.unwrap(), 0);
    assert!(matches!(grant.await.unwrap(), Err(LeaseError::ShuttingDown)));
    assert!(h.fake.users().is_empty());
    assert_eq!(h.row(&lease.id).1.as_deref(), Some("shutdown"));
}

#[tokio::test(start_paused = true)]
async fn a_drain_asked_while_minting_takes_effect_once_minted() {
    let h = Harness::new(CONN);
    h.fake.hold(Op::Mint);
    let manager = h.manager.clone();
    let grant = tokio::spawn(async move { manager.grant(&identity("ci", "conn"), None).await });
    settle().await;
    let lease = h.manager.list().pop().unwrap();
    lease.start_draining(DrainReason::Shutdown);
    assert!(!lease.drain.is_cancelled(), "no session relays yet");
    h.fake.release(Op::Mint);
    settle().await;
    let guard = grant.await.unwrap().unwrap();
    assert_eq!(lease.state(), LeaseState::Draining(DrainReason::Shutdown));
    assert!(lease.drain.is_cancelled());
    assert_eq!(lease.drain_reason(), DrainReason::Shutdown);
    drop(guard);
}
