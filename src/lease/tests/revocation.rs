//! Revocation: retried with doubling backoff capped at 5 minutes, visible as `revoke_failed`
//! in between; a user already gone counts as dropped; recovered leases take the same path.

use super::fake::{Failure, Op};
use super::{Harness, secs, settle};
use crate::lease::store::{Intent, LeaseStore};
use crate::lease::{EndReason, LeaseState, recovery};
use crate::metrics::RoleLabels;
use std::time::{Duration, SystemTime};

const CONN: &str = r#"
[[role]]
name = "conn"
database = "main"
default_ttl = "1h"
max_ttl = "24h"
"#;

fn revoke_failures(h: &Harness) -> u64 {
    h.manager.inner.metrics.revoke_failures.get_or_create(&RoleLabels { database: "main".into(), role: "conn".into() }).get()
}

#[tokio::test(start_paused = true)]
async fn a_failing_revocation_is_retried_after_1_2_4_seconds_and_shown_meanwhile() {
    let h = Harness::new(CONN);
    h.fake.fail(Op::Drop, 3, Failure::Refused);
    let guard = h.grant("ci", "conn").await;
    let lease = guard.lease().clone();
    drop(guard);
    h.at(0.5).await;
    let LeaseState::RevokeFailed(error) = lease.state() else { panic!("{:?}", lease.state()) };
    assert!(error.contains("Drop refused"), "{error}");
    assert_eq!(h.row(&lease.id), ("revoke_failed".into(), None, Some(error.clone())));
    assert!(lease.ended.is_cancelled(), "the sessions leasegate holds are closed while it retries");
    assert_eq!(revoke_failures(&h), 1);
    h.at(6.9).await;
    assert_eq!(h.state(&lease.id), "revoke_failed");
    h.at(7.0).await;
    assert_eq!(h.fake.calls(Op::Drop), secs(&[0.0, 1.0, 3.0, 7.0]));
    assert_eq!(lease.state(), LeaseState::Ended);
    assert!(h.manager.get(&lease.id).is_none());
    assert_eq!(h.row(&lease.id), ("ended".into(), Some("closed".into()), Some(error)));
    assert_eq!(revoke_failures(&h), 3);
    assert!(h.fake.users().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_revocation_backoff_doubles_up_to_five_minutes() {
    let h = Harness::new(CONN);
    h.fake.fail(Op::StopSessions, 12, Failure::Lost);
    let lease = h.manager.grant_detached("conn", "api", None).await.unwrap();
    h.manager.end(&lease, EndReason::Revoked);
    h.at(1411.0).await;
    let delays = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300];
    let mut at = vec![0.0];
    for d in delays {
        at.push(at[at.len() - 1] + d as f64);
    }
    assert_eq!(h.fake.calls(Op::StopSessions), secs(&at));
    assert_eq!(h.fake.calls(Op::Drop), secs(&[1411.0]), "dropped once the sessions could be stopped");
    assert_eq!(h.row(&lease.id).1.as_deref(), Some("revoked"));
}

#[tokio::test(start_paused = true)]
async fn revoke_and_wait_answers_with_the_error_while_it_is_retried() {
    let h = Harness::new(CONN);
    h.fake.fail(Op::Drop, 100, Failure::Refused);
    let lease = h.manager.grant_detached("conn", "api", None).await.unwrap();
    // Waiting in the test task lets paused time run ahead to each retry.
    let state = h.manager.revoke_and_wait(&lease, Duration::from_secs(5)).await;
    assert!(matches!(state, LeaseState::RevokeFailed(ref e) if e.contains("Drop refused")), "{state:?}");
    assert_eq!(h.fake.calls(Op::Drop), secs(&[0.0, 1.0, 3.0]));
}

#[tokio::test(start_paused = true)]
async fn a_user_that_is_already_gone_counts_as_dropped() {
    let h = Harness::new(CONN);
    let lease = h.manager.grant_detached("conn", "api", None).await.unwrap();
    h.fake.drop_outside(&lease.user);
    h.manager.end(&lease, EndReason::Revoked);
    settle().await;
    assert_eq!(lease.state(), LeaseState::Ended);
    assert!(h.fake.calls(Op::Drop).is_empty());
    assert_eq!(h.row(&lease.id), ("ended".into(), Some("revoked".into()), None));
}

#[tokio::test(start_paused = true)]
async fn leases_a_previous_run_left_are_revoked_through_the_same_path() {
    let h = Harness::new(CONN);
    let now = SystemTime::now();
    let intent = Intent {
        id: "old",
        database: "main",
        role: "conn",
        client: "ci",
        db_user: "lg_old",
        granted_at: now,
        expires_at: now,
        max_expires_at: now,
        held_by: None,
    };
    h.store.intent(&intent).await.unwrap();
    h.fake.fail(Op::StopSessions, 1, Failure::Lost);
    assert_eq!(recovery::recover(&h.manager).await.unwrap(), vec!["old".to_string()]);
    h.at(0.5).await;
    assert_eq!(h.state("old"), "revoke_failed");
    h.at(1.0).await;
    assert_eq!(h.fake.calls(Op::StopSessions), secs(&[0.0, 1.0]));
    assert_eq!(h.row("old"), ("ended".into(), Some("recovered".into()), Some("admin connection to fake failed: StopSessions lost".into())));
}
