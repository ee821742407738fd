//! The lease journal: the SQLite [`LeaseStore`], one row per lease, one leasegate per file.
//!
//! WAL with `synchronous = FULL`: each transition is on disk when the call returns, and a crash
//! at any point leaves either the old or the new row. Times are Unix milliseconds.

use super::store::{Intent, JournalError, JournalRow, LeaseStore, StoreFuture};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone)]
pub struct Journal {
    pool: SqlitePool,
    /// The instance id marked on every user minted with this journal (`meta`).
    instance: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS leases (
    id TEXT PRIMARY KEY,
    database TEXT NOT NULL,
    role TEXT NOT NULL,
    client TEXT NOT NULL,
    db_user TEXT NOT NULL,
    state TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    max_expires_at INTEGER NOT NULL,
    renewed_at INTEGER,
    ended_at INTEGER,
    end_reason TEXT,
    last_error TEXT,
    used_databases TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS leases_open ON leases(state) WHERE state <> 'ended';
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
";

pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

impl Journal {
    /// Opens (creating) the journal. `instance` is the configured id; without one, the id made
    /// at the journal's creation is kept, so a restart marks users as the same instance.
    pub async fn open(path: &Path, instance: Option<&str>) -> Result<Journal, JournalError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        // One writer: transitions are serialized and never contend for the file lock.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        let generated = format!("lg-{}", crate::name::lease_id());
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('instance', ?)").bind(&generated).execute(&pool).await?;
        if let Some(configured) = instance {
            sqlx::query("UPDATE meta SET value = ? WHERE key = 'instance'").bind(configured).execute(&pool).await?;
        }
        let instance = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'instance'").fetch_one(&pool).await?;
        Ok(Journal { pool, instance })
    }

    async fn insert(&self, i: &Intent<'_>, state: &str) -> Result<(), JournalError> {
        sqlx::query(
            "INSERT INTO leases (id, database, role, client, db_user, state, granted_at, expires_at, max_expires_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(i.id)
        .bind(i.database)
        .bind(i.role)
        .bind(i.client)
        .bind(i.db_user)
        .bind(state)
        .bind(millis(i.granted_at))
        .bind(millis(i.expires_at))
        .bind(millis(i.max_expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn rows(&self, filter: &'static str) -> Result<Vec<JournalRow>, JournalError> {
        let sql = format!("{SELECT_ROW} {filter} ORDER BY granted_at");
        let rows: Vec<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| r.into_row(&self.instance)).collect())
    }

    async fn rows_by_id(&self, id: &str) -> Result<Vec<JournalRow>, JournalError> {
        let sql = format!("{SELECT_ROW} WHERE id = ?");
        let rows: Vec<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(|r| r.into_row(&self.instance)).collect())
    }

    /// Runs one UPDATE or DELETE; returns the rows it touched.
    async fn execute(&self, query: sqlx::query::Query<'_, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>) -> Result<u64, JournalError> {
        Ok(query.execute(&self.pool).await?.rows_affected())
    }
}

impl LeaseStore for Journal {
    fn instance(&self) -> &str {
        &self.instance
    }

    fn intent<'a>(&'a self, i: &'a Intent<'a>) -> StoreFuture<'a, ()> {
        Box::pin(self.insert(i, "minting"))
    }

    fn orphan_intent<'a>(&'a self, id: &'a str, database: &'a str, role: &'a str, db_user: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let now = SystemTime::now();
            let i =
                Intent { id, database, role, client: "", db_user, granted_at: now, expires_at: now, max_expires_at: now, held_by: None };
            self.insert(&i, "revoking").await
        })
    }

    fn set_state<'a>(&'a self, id: &'a str, state: &'a str, last_error: Option<&'a str>) -> StoreFuture<'a, ()> {
        let q = sqlx::query("UPDATE leases SET state = ?, last_error = COALESCE(?, last_error) WHERE id = ?")
            .bind(state)
            .bind(last_error)
            .bind(id);
        Box::pin(async move { self.execute(q).await.map(drop) })
    }

    fn renewed<'a>(&'a self, id: &'a str, expires_at: SystemTime) -> StoreFuture<'a, ()> {
        let q = sqlx::query("UPDATE leases SET expires_at = ?, renewed_at = ? WHERE id = ?")
            .bind(millis(expires_at))
            .bind(millis(SystemTime::now()))
            .bind(id);
        Box::pin(async move { self.execute(q).await.map(drop) })
    }

    fn used_databases<'a>(&'a self, id: &'a str, databases: &'a BTreeSet<String>) -> StoreFuture<'a, ()> {
        let joined = databases.iter().cloned().collect::<Vec<_>>().join("\n");
        let q = sqlx::query("UPDATE leases SET used_databases = ? WHERE id = ?").bind(joined).bind(id);
        Box::pin(async move { self.execute(q).await.map(drop) })
    }

    fn ended<'a>(&'a self, id: &'a str, reason: &'a str) -> StoreFuture<'a, ()> {
        let q = sqlx::query("UPDATE leases SET state = 'ended', end_reason = ?, ended_at = ? WHERE id = ?")
            .bind(reason)
            .bind(millis(SystemTime::now()))
            .bind(id);
        Box::pin(async move { self.execute(q).await.map(drop) })
    }

    /// One instance per file: every lease not ended is this instance's.
    fn unfinished(&self) -> StoreFuture<'_, Vec<JournalRow>> {
        Box::pin(self.rows("WHERE state <> 'ended'"))
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<JournalRow>> {
        Box::pin(async move { Ok(self.rows_by_id(id).await?.into_iter().next()) })
    }

    fn open_leases(&self) -> StoreFuture<'_, Vec<JournalRow>> {
        self.unfinished()
    }

    fn open_users(&self) -> StoreFuture<'_, HashSet<String>> {
        Box::pin(async move {
            let users: Vec<(String,)> = sqlx::query_as("SELECT db_user FROM leases WHERE state <> 'ended'").fetch_all(&self.pool).await?;
            Ok(users.into_iter().map(|(u,)| u).collect())
        })
    }

    fn prune(&self, retain: Duration) -> StoreFuture<'_, u64> {
        let cutoff = millis(SystemTime::now() - retain);
        let q = sqlx::query("DELETE FROM leases WHERE state = 'ended' AND ended_at < ?").bind(cutoff);
        Box::pin(self.execute(q))
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.pool.close())
    }
}

pub(super) const SELECT_ROW: &str = "SELECT id, database, role, client, db_user, state, end_reason, last_error, used_databases, granted_at, expires_at, max_expires_at FROM leases";

/// A row as both journals select it (`SELECT_ROW`'s columns, in order).
pub(super) type RawRow = (String, String, String, String, String, String, Option<String>, Option<String>, String, i64, i64, i64);

pub(super) trait IntoRow {
    /// The row, owned by `instance`.
    fn into_row(self, instance: &str) -> JournalRow;
}

impl IntoRow for RawRow {
    fn into_row(self, instance: &str) -> JournalRow {
        let (id, database, role, client, db_user, state, end_reason, last_error, used, granted, expires, max) = self;
        JournalRow {
            id,
            database,
            role,
            client,
            db_user,
            state,
            end_reason,
            last_error,
            used_databases: used.lines().filter(|l| !l.is_empty()).map(str::to_string).collect(),
            instance: instance.to_string(),
            held_by: None,
            granted_at: from_millis(granted),
            expires_at: from_millis(expires),
            max_expires_at: from_millis(max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory removed on drop (the journal's own, so this module needs nothing of `devdb`).
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            let dir = std::env::temp_dir().join(format!("leasegate-journal-{}-{:08x}", std::process::id(), rand::random::<u32>()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn records_a_lease_from_intent_to_end_and_survives_reopening() {
        let dir = Scratch::new();
        let path = dir.0.join("j.db");
        let now = SystemTime::now();
        {
            let j = Journal::open(&path, None).await.unwrap();
            let intent = Intent {
                id: "l1",
                database: "main",
                role: "app",
                client: "ci",
                db_user: "lg_x",
                granted_at: now,
                expires_at: now,
                max_expires_at: now,
                held_by: None,
            };
            j.intent(&intent).await.unwrap();
            j.intent(&Intent { id: "l2", db_user: "lg_y", ..intent }).await.unwrap();
            j.set_state("l1", "active", None).await.unwrap();
            j.used_databases("l1", &["a".to_string(), "b".to_string()].into_iter().collect()).await.unwrap();
            j.set_state("l2", "revoke_failed", Some("server down")).await.unwrap();
            j.ended("l2", "closed").await.unwrap();
            j.close().await;
        }
        let j = Journal::open(&path, None).await.unwrap();
        let open = j.unfinished().await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].db_user, "lg_x");
        assert_eq!(open[0].used_databases.len(), 2);
        let ended = j.get("l2").await.unwrap().unwrap();
        assert_eq!(
            (ended.state.as_str(), ended.end_reason.as_deref(), ended.last_error.as_deref()),
            ("ended", Some("closed"), Some("server down"))
        );
        assert_eq!(j.open_users().await.unwrap(), ["lg_x".to_string()].into_iter().collect());
    }
}
