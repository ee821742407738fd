//! A stand-in provisioner for the lease engine's unit tests: it keeps a set of users instead of
//! a server, records every call with the (paused) Tokio time it was made at, and can be told to
//! fail an operation N times or to hold it until released.

use crate::config::RoleConfig;
use crate::provision::{ProvisionError, ProvisionFuture, Provisioner};
use crate::secret::Secret;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Mint,
    Renew,
    Rollback,
    StopSessions,
    WaitGone,
    Drop,
}

/// How a failing operation fails.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// The server refused the statement.
    Refused,
    /// The connection broke while it ran: outcome unknown.
    Lost,
}

pub struct FakeProvisioner {
    start: Instant,
    atomic: bool,
    calls: Mutex<Vec<(Op, Duration)>>,
    failures: Mutex<HashMap<Op, (usize, Failure)>>,
    holds: Mutex<HashMap<Op, Arc<Semaphore>>>,
    users: Mutex<BTreeSet<String>>,
}

impl FakeProvisioner {
    /// `atomic`: what `mint_is_atomic` answers (Postgres-like true, MySQL-like false).
    pub fn new(atomic: bool) -> Arc<FakeProvisioner> {
        Arc::new(FakeProvisioner {
            start: Instant::now(),
            atomic,
            calls: Mutex::default(),
            failures: Mutex::default(),
            holds: Mutex::default(),
            users: Mutex::default(),
        })
    }

    /// The next `times` calls of `op` fail.
    pub fn fail(&self, op: Op, times: usize, how: Failure) {
        self.failures.lock().unwrap().insert(op, (times, how));
    }

    /// Calls of `op` from now on wait until [`release`](Self::release).
    pub fn hold(&self, op: Op) {
        self.holds.lock().unwrap().insert(op, Arc::new(Semaphore::new(0)));
    }

    pub fn release(&self, op: Op) {
        if let Some(gate) = self.holds.lock().unwrap().remove(&op) {
            gate.close();
        }
    }

    /// When each call of `op` was made, as time since this provisioner was created.
    pub fn calls(&self, op: Op) -> Vec<Duration> {
        self.calls.lock().unwrap().iter().filter(|(o, _)| *o == op).map(|(_, at)| *at).collect()
    }

    /// A user appears on the pretend server on its own (a CREATE that committed late).
    pub fn create_late(&self, user: &str) {
        self.users.lock().unwrap().insert(user.to_string());
    }

    /// The users that exist on the pretend server.
    pub fn users(&self) -> BTreeSet<String> {
        self.users.lock().unwrap().clone()
    }

    /// Someone dropped `user` behind leasegate's back.
    pub fn drop_outside(&self, user: &str) {
        self.users.lock().unwrap().remove(user);
    }

    /// Records the call, waits while it is held, then fails if told to.
    async fn call(&self, op: Op) -> Result<(), ProvisionError> {
        self.calls.lock().unwrap().push((op, Instant::now() - self.start));
        let gate = self.holds.lock().unwrap().get(&op).cloned();
        if let Some(gate) = gate {
            let _ = gate.acquire().await;
        }
        let mut failures = self.failures.lock().unwrap();
        match failures.get_mut(&op) {
            Some((left, how)) if *left > 0 => {
                *left -= 1;
                Err(match how {
                    Failure::Refused => {
                        ProvisionError::Statement { step: "fake", code: "XX000".into(), message: format!("{op:?} refused") }
                    }
                    Failure::Lost => ProvisionError::Connect { addr: "fake".into(), message: format!("{op:?} lost") },
                })
            }
            _ => Ok(()),
        }
    }
}

impl Provisioner for FakeProvisioner {
    fn check(&self) -> ProvisionFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn max_user_len(&self) -> ProvisionFuture<'_, usize> {
        Box::pin(async { Ok(63) })
    }

    fn mint_is_atomic(&self) -> bool {
        self.atomic
    }

    fn marks_users(&self) -> bool {
        true
    }

    fn mint<'a>(
        &'a self,
        _: &'a RoleConfig,
        user: &'a str,
        _: &'a Secret,
        _: SystemTime,
        _: &'a str,
        _: crate::provision::MintFor<'a>,
    ) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            let outcome = self.call(Op::Mint).await;
            // A lost connection or a non-atomic server may leave the user behind.
            if outcome.is_ok() || !self.atomic || matches!(outcome, Err(ProvisionError::Connect { .. })) {
                self.users.lock().unwrap().insert(user.to_string());
            }
            outcome
        })
    }

    fn renew<'a>(&'a self, _: &'a RoleConfig, _: &'a str, _: SystemTime) -> ProvisionFuture<'a, ()> {
        Box::pin(self.call(Op::Renew))
    }

    /// Every user here was minted by the test's instance ("memory").
    fn users_with_prefix<'a>(&'a self, prefix: &'a str) -> ProvisionFuture<'a, Vec<crate::provision::Found>> {
        Box::pin(async move {
            let found = self.users().into_iter().filter(|u| u.starts_with(prefix));
            Ok(found.map(|user| crate::provision::Found { user, instance: Some("memory".into()), role: None }).collect())
        })
    }

    fn rollback<'a>(&'a self, _: &'a RoleConfig, user: &'a str) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            self.call(Op::Rollback).await?;
            self.users.lock().unwrap().remove(user);
            Ok(())
        })
    }

    fn stop_sessions<'a>(&'a self, user: &'a str) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            self.call(Op::StopSessions).await?;
            if !self.users.lock().unwrap().contains(user) {
                return Err(ProvisionError::UserGone { step: "fake", code: "gone".into(), message: "no such user".into() });
            }
            Ok(())
        })
    }

    fn wait_sessions_gone<'a>(&'a self, _: &'a str, _: Duration) -> ProvisionFuture<'a, ()> {
        Box::pin(self.call(Op::WaitGone))
    }

    fn drop_user<'a>(&'a self, _: &'a RoleConfig, user: &'a str, _: &'a BTreeSet<String>) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            self.call(Op::Drop).await?;
            self.users.lock().unwrap().remove(user);
            Ok(())
        })
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }

    fn privileges<'a>(&'a self, _: &'a [RoleConfig]) -> ProvisionFuture<'a, Vec<crate::provision::Privilege>> {
        Box::pin(async { Ok(vec![]) })
    }
}
