//! The lease journal: one SQLite row per lease, written before its user is created (intent) and
//! at every state change, so a restart knows every user leasegate may have created.
//!
//! WAL with `synchronous = FULL`: each transition is on disk when the call returns, and a crash
//! at any point leaves either the old or the new row. Times are Unix milliseconds.

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
#[error("lease journal: {0}")]
pub struct JournalError(#[from] sqlx::Error);

/// What a journal row says about a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    pub id: String,
    pub database: String,
    pub role: String,
    pub client: String,
    pub db_user: String,
    pub state: String,
    pub end_reason: Option<String>,
    pub last_error: Option<String>,
    pub used_databases: BTreeSet<String>,
    pub granted_at: SystemTime,
    pub expires_at: SystemTime,
    pub max_expires_at: SystemTime,
}

/// What is written when a lease is granted.
pub struct Intent<'a> {
    pub id: &'a str,
    pub database: &'a str,
    pub role: &'a str,
    pub client: &'a str,
    pub db_user: &'a str,
    pub granted_at: SystemTime,
    pub expires_at: SystemTime,
    pub max_expires_at: SystemTime,
}

#[derive(Clone)]
pub struct Journal {
    pool: SqlitePool,
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
";

pub fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

pub fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

impl Journal {
    pub async fn open(path: &Path) -> Result<Journal, JournalError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        // One writer: transitions are serialized and never contend for the file lock.
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await?;
        Ok(Journal { pool })
    }

    /// Recorded before the user is created.
    pub async fn intent(&self, i: &Intent<'_>) -> Result<(), JournalError> {
        self.insert(i, "minting").await
    }

    /// Records a user found with our prefix that no lease knew, before it is dropped.
    pub async fn orphan_intent(&self, id: &str, database: &str, db_user: &str) -> Result<(), JournalError> {
        let now = SystemTime::now();
        let i = Intent { id, database, role: "", client: "", db_user, granted_at: now, expires_at: now, max_expires_at: now };
        self.insert(&i, "revoking").await
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

    pub async fn set_state(&self, id: &str, state: &str, last_error: Option<&str>) -> Result<(), JournalError> {
        sqlx::query("UPDATE leases SET state = ?, last_error = COALESCE(?, last_error) WHERE id = ?")
            .bind(state)
            .bind(last_error)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn renewed(&self, id: &str, expires_at: SystemTime) -> Result<(), JournalError> {
        sqlx::query("UPDATE leases SET expires_at = ?, renewed_at = ? WHERE id = ?")
            .bind(millis(expires_at))
            .bind(millis(SystemTime::now()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn used_databases(&self, id: &str, databases: &BTreeSet<String>) -> Result<(), JournalError> {
        let joined = databases.iter().cloned().collect::<Vec<_>>().join("\n");
        sqlx::query("UPDATE leases SET used_databases = ? WHERE id = ?").bind(joined).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    pub async fn ended(&self, id: &str, reason: &str) -> Result<(), JournalError> {
        sqlx::query("UPDATE leases SET state = 'ended', end_reason = ?, ended_at = ? WHERE id = ?")
            .bind(reason)
            .bind(millis(SystemTime::now()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Every lease that has not ended: the ones a restart must revoke.
    pub async fn unfinished(&self) -> Result<Vec<JournalRow>, JournalError> {
        self.rows("WHERE state <> 'ended'").await
    }

    pub async fn get(&self, id: &str) -> Result<Option<JournalRow>, JournalError> {
        let rows = self.rows_by_id(id).await?;
        Ok(rows.into_iter().next())
    }

    /// Users that a lease not yet ended may own, on any database (Postgres roles are
    /// cluster-wide, so two `[[database]]`s on one server see each other's users).
    pub async fn open_users(&self) -> Result<HashSet<String>, JournalError> {
        let users: Vec<(String,)> = sqlx::query_as("SELECT db_user FROM leases WHERE state <> 'ended'").fetch_all(&self.pool).await?;
        Ok(users.into_iter().map(|(u,)| u).collect())
    }

    async fn rows(&self, filter: &'static str) -> Result<Vec<JournalRow>, JournalError> {
        let sql = format!("{SELECT_ROW} {filter} ORDER BY granted_at");
        let rows: Vec<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(RawRow::into_row).collect())
    }

    async fn rows_by_id(&self, id: &str) -> Result<Vec<JournalRow>, JournalError> {
        let sql = format!("{SELECT_ROW} WHERE id = ?");
        let rows: Vec<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(RawRow::into_row).collect())
    }

    /// Deletes ended leases that ended more than `retain` ago; returns how many.
    pub async fn prune(&self, retain: Duration) -> Result<u64, JournalError> {
        let cutoff = millis(SystemTime::now() - retain);
        let done = sqlx::query("DELETE FROM leases WHERE state = 'ended' AND ended_at < ?").bind(cutoff).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

const SELECT_ROW: &str = "SELECT id, database, role, client, db_user, state, end_reason, last_error, used_databases, granted_at, expires_at, max_expires_at FROM leases";

type RawRow = (String, String, String, String, String, String, Option<String>, Option<String>, String, i64, i64, i64);

trait IntoRow {
    fn into_row(self) -> JournalRow;
}

impl IntoRow for RawRow {
    fn into_row(self) -> JournalRow {
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
            let j = Journal::open(&path).await.unwrap();
            let intent = Intent {
                id: "l1",
                database: "main",
                role: "app",
                client: "ci",
                db_user: "lg_x",
                granted_at: now,
                expires_at: now,
                max_expires_at: now,
            };
            j.intent(&intent).await.unwrap();
            j.intent(&Intent { id: "l2", db_user: "lg_y", ..intent }).await.unwrap();
            j.set_state("l1", "active", None).await.unwrap();
            j.used_databases("l1", &["a".to_string(), "b".to_string()].into_iter().collect()).await.unwrap();
            j.set_state("l2", "revoke_failed", Some("server down")).await.unwrap();
            j.ended("l2", "closed").await.unwrap();
            j.close().await;
        }
        let j = Journal::open(&path).await.unwrap();
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
