//! An in-memory [`LeaseStore`] for unit tests: the SQLite journal's worker thread would let a
//! paused Tokio runtime skip time ahead while it waits, so tests under paused time record
//! leases here. Its rows can be read back, and it can be told to refuse its next writes.

use super::store::{Intent, JournalError, JournalRow, LeaseStore, StoreFuture};
use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Rows>,
}

#[derive(Default)]
struct Rows {
    /// In insertion order, with when each ended.
    rows: Vec<(JournalRow, Option<SystemTime>)>,
    /// Writes still to be refused.
    failing_writes: usize,
}

impl MemoryStore {
    /// Makes the next `n` writes fail with [`JournalError::Unavailable`].
    pub fn fail_writes(&self, n: usize) {
        self.rows().failing_writes = n;
    }

    /// Every row, oldest first.
    pub fn all(&self) -> Vec<JournalRow> {
        self.rows().rows.iter().map(|(r, _)| r.clone()).collect()
    }

    /// The row of lease `id` now.
    pub fn row(&self, id: &str) -> Option<JournalRow> {
        self.rows().rows.iter().find(|(r, _)| r.id == id).map(|(r, _)| r.clone())
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to the row of `id` (if any), unless the write is to fail.
    fn write(&self, id: &str, change: impl FnOnce(&mut JournalRow, &mut Option<SystemTime>)) -> Result<(), JournalError> {
        let mut rows = self.rows();
        rows.refuse()?;
        if let Some((row, ended_at)) = rows.rows.iter_mut().find(|(r, _)| r.id == id) {
            change(row, ended_at);
        }
        Ok(())
    }

    fn insert(&self, i: &Intent<'_>, state: &str) -> Result<(), JournalError> {
        let mut rows = self.rows();
        rows.refuse()?;
        let row = JournalRow {
            id: i.id.into(),
            database: i.database.into(),
            role: i.role.into(),
            client: i.client.into(),
            db_user: i.db_user.into(),
            state: state.into(),
            end_reason: None,
            last_error: None,
            used_databases: BTreeSet::new(),
            instance: "memory".into(),
            held_by: i.held_by.map(str::to_string),
            granted_at: i.granted_at,
            expires_at: i.expires_at,
            max_expires_at: i.max_expires_at,
        };
        rows.rows.push((row, None));
        Ok(())
    }
}

impl Rows {
    fn refuse(&mut self) -> Result<(), JournalError> {
        if self.failing_writes == 0 {
            return Ok(());
        }
        self.failing_writes -= 1;
        Err(JournalError::Unavailable("the test store was told to fail".into()))
    }
}

fn ready<T: Send + 'static>(r: Result<T, JournalError>) -> StoreFuture<'static, T> {
    Box::pin(std::future::ready(r))
}

impl LeaseStore for MemoryStore {
    fn instance(&self) -> &str {
        "memory"
    }

    fn intent<'a>(&'a self, intent: &'a Intent<'a>) -> StoreFuture<'a, ()> {
        ready(self.insert(intent, "minting"))
    }

    fn orphan_intent<'a>(&'a self, id: &'a str, database: &'a str, role: &'a str, db_user: &'a str) -> StoreFuture<'a, ()> {
        let now = SystemTime::now();
        let i = Intent { id, database, role, client: "", db_user, granted_at: now, expires_at: now, max_expires_at: now, held_by: None };
        ready(self.insert(&i, "revoking"))
    }

    fn set_state<'a>(&'a self, id: &'a str, state: &'a str, last_error: Option<&'a str>) -> StoreFuture<'a, ()> {
        ready(self.write(id, |row, _| {
            row.state = state.into();
            if let Some(e) = last_error {
                row.last_error = Some(e.into());
            }
        }))
    }

    fn renewed<'a>(&'a self, id: &'a str, expires_at: SystemTime) -> StoreFuture<'a, ()> {
        ready(self.write(id, |row, _| row.expires_at = expires_at))
    }

    fn used_databases<'a>(&'a self, id: &'a str, databases: &'a BTreeSet<String>) -> StoreFuture<'a, ()> {
        ready(self.write(id, |row, _| row.used_databases = databases.clone()))
    }

    fn ended<'a>(&'a self, id: &'a str, reason: &'a str) -> StoreFuture<'a, ()> {
        ready(self.write(id, |row, ended_at| {
            row.state = "ended".into();
            row.end_reason = Some(reason.into());
            *ended_at = Some(SystemTime::now());
        }))
    }

    fn unfinished(&self) -> StoreFuture<'_, Vec<JournalRow>> {
        ready(Ok(self.rows().rows.iter().filter(|(r, _)| r.state != "ended").map(|(r, _)| r.clone()).collect()))
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<JournalRow>> {
        ready(Ok(self.row(id)))
    }

    fn open_leases(&self) -> StoreFuture<'_, Vec<JournalRow>> {
        self.unfinished()
    }

    fn open_users(&self) -> StoreFuture<'_, HashSet<String>> {
        ready(Ok(self.rows().rows.iter().filter(|(r, _)| r.state != "ended").map(|(r, _)| r.db_user.clone()).collect()))
    }

    fn prune(&self, retain: Duration) -> StoreFuture<'_, u64> {
        let cutoff = SystemTime::now() - retain;
        let mut rows = self.rows();
        let before = rows.rows.len();
        rows.rows.retain(|(_, ended_at)| ended_at.is_none_or(|t| t >= cutoff));
        ready(Ok((before - rows.rows.len()) as u64))
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}
