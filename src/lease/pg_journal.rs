//! The shared lease store: one Postgres database that every leasegate instance in front of the
//! same servers records its leases in (DESIGN §2b, `[journal] url_file`/`url_env`).
//!
//! - Schema `leasegate`, versioned (`schema_version`), created and migrated at start under a
//!   transaction-scoped advisory lock, so instances starting at once apply it once.
//! - `instances`: one row per instance id with its `epoch` (raised at every registration, the
//!   fencing token) and `heartbeat_at` on the store's clock. An instance whose heartbeat is older
//!   than `takeover_after` is declared dead (`dead_at`) by a live one, which claims its unfinished
//!   leases in the same transaction (`FOR UPDATE SKIP LOCKED`, so live instances split them).
//! - `leases`: what the SQLite journal holds, plus the owner (`instance`, `epoch`), who ended it
//!   (`ended_by`), whom it was taken from, and a revocation request another instance's API made.
//!   Every write about a lease is fenced: it only happens while the row is this instance's at its
//!   current epoch *and* the instance is not declared dead; otherwise it is refused with
//!   [`JournalError::NotOwner`] and the caller lets go of the lease.
//! - When the store is unreachable, the intent fails (no grant without it), and every later
//!   write is queued in order and flushed at the next heartbeat; [`StoreHealth`] shows it.
//!
//! Times of leases are Unix milliseconds of the writing instance's clock (as in SQLite); the
//! liveness decisions use only the store's clock (`now()`).

use super::journal::{IntoRow, RawRow};
use super::store::{Beat, Claimed, FleetStore, Intent, JournalError, JournalRow, LeaseStore, StoreFuture, StoreHealth};
use crate::lease::journal::millis;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Taken by the migration transaction (an arbitrary constant: "leasegate" in ASCII, folded).
const MIGRATION_LOCK: i64 = 0x6c65_6173_6567_6174;

/// Each entry moves the schema one version up; never edit one that has shipped.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE leasegate.instances (
    id TEXT PRIMARY KEY,
    epoch BIGINT NOT NULL,
    host TEXT NOT NULL DEFAULT '',
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    dead_at TIMESTAMPTZ,
    taken_by TEXT,
    stopped BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE leasegate.leases (
    id TEXT PRIMARY KEY,
    database TEXT NOT NULL,
    role TEXT NOT NULL,
    client TEXT NOT NULL,
    db_user TEXT NOT NULL,
    state TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    max_expires_at BIGINT NOT NULL,
    renewed_at BIGINT,
    ended_at BIGINT,
    end_reason TEXT,
    last_error TEXT,
    used_databases TEXT NOT NULL DEFAULT '',
    instance TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    taken_from TEXT,
    ended_by TEXT,
    revoke_requested BOOLEAN NOT NULL DEFAULT false
);
CREATE INDEX leases_open ON leasegate.leases (instance) WHERE state <> 'ended';
CREATE INDEX leases_ended ON leasegate.leases (ended_at) WHERE state = 'ended';
",
    "
ALTER TABLE leasegate.leases ADD COLUMN held_by TEXT;
",
];

const SELECT_ROW: &str = "SELECT id, database, role, client, db_user, state, end_reason, last_error, used_databases, \
     granted_at, expires_at, max_expires_at, instance, held_by FROM leasegate.leases";

/// The fencing condition every write about a lease carries ($2 = this instance, $3 = its epoch).
const OURS: &str = "instance = $2 AND epoch = $3 AND EXISTS \
     (SELECT 1 FROM leasegate.instances i WHERE i.id = $2 AND i.epoch = $3 AND i.dead_at IS NULL)";

/// A write made after the intent, kept when the store is unreachable and made when it answers.
#[derive(Debug, Clone)]
enum Write {
    State { id: String, state: String, last_error: Option<String> },
    Renewed { id: String, expires_at: i64, at: i64 },
    Used { id: String, databases: String },
    Ended { id: String, reason: String, at: i64 },
}

impl Write {
    fn id(&self) -> &str {
        match self {
            Write::State { id, .. } | Write::Renewed { id, .. } | Write::Used { id, .. } | Write::Ended { id, .. } => id,
        }
    }
}

pub struct PgJournal {
    /// Durable commits: the intent, registration, claims, migrations.
    pool: PgPool,
    /// Commits flushed in the background: state changes after the intent, heartbeats.
    relaxed: PgPool,
    instance: String,
    epoch: AtomicI64,
    takeover_after: Duration,
    /// When the last heartbeat that found this instance alive was sent (local monotonic time,
    /// never later than the store's `heartbeat_at` it wrote).
    alive_since: Mutex<Instant>,
    reachable: AtomicBool,
    queued: Mutex<VecDeque<Write>>,
}

/// The longest a queue of writes may grow while the store is down: past it the oldest are
/// dropped (logged); what is lost is recovered by the next start's or a taker's revocation.
const MAX_QUEUED: usize = 100_000;

impl PgJournal {
    /// Connects, creates or migrates the schema, and registers this instance (a new epoch).
    pub async fn open(url: &str, instance: &str, takeover_after: Duration) -> Result<PgJournal, JournalError> {
        // A store that hangs must not hang grants: a statement is bounded like a heartbeat.
        let timeout = format!("{}", (takeover_after / 3).as_millis().max(1000));
        let options = PgConnectOptions::from_str(url)?.application_name("leasegate-journal");
        let pools = PgPoolOptions::new().min_connections(1).acquire_timeout(takeover_after / 3);
        let pool =
            pools.clone().max_connections(4).connect_with(options.clone().options([("statement_timeout", timeout.as_str())])).await?;
        // What follows an intent is made visible at once but flushed to disk in the background
        // (`synchronous_commit = off`): a store crash may lose the last such writes, and then
        // a lease looks less finished than it is and is revoked again (a user already gone is
        // a success), never the reverse. The intent, claims and registration stay durable.
        let relaxed = pools
            .max_connections(8)
            .connect_with(options.options([("statement_timeout", timeout.as_str()), ("synchronous_commit", "off")]))
            .await?;
        migrate(&pool).await?;
        let journal = PgJournal {
            pool,
            relaxed,
            instance: instance.to_string(),
            epoch: AtomicI64::new(0),
            takeover_after,
            alive_since: Mutex::new(Instant::now()),
            reachable: AtomicBool::new(true),
            queued: Mutex::new(VecDeque::new()),
        };
        journal.register().await?;
        Ok(journal)
    }

    /// The epoch this instance writes with now.
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    async fn register(&self) -> Result<(), JournalError> {
        let sent = Instant::now();
        let host = hostname();
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO leasegate.instances (id, epoch, host) VALUES ($1, 1, $2)
             ON CONFLICT (id) DO UPDATE SET epoch = leasegate.instances.epoch + 1, host = $2, started_at = now(),
                 heartbeat_at = now(), dead_at = NULL, taken_by = NULL, stopped = false
             RETURNING epoch",
        )
        .bind(&self.instance)
        .bind(host)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| self.failed(e))?;
        self.epoch.store(epoch, Ordering::Release);
        *lock(&self.alive_since) = sent;
        tracing::info!(instance = %self.instance, epoch, "registered in the shared lease store");
        Ok(())
    }

    /// Notes reachability from a failed round trip and passes the error on.
    fn failed(&self, e: sqlx::Error) -> JournalError {
        if unreachable(&e) && self.reachable.swap(false, Ordering::AcqRel) {
            tracing::warn!(error = %e, "the shared lease store is unreachable; new grants fail until it answers");
        }
        JournalError::Sql(e)
    }

    fn answered(&self) {
        if !self.reachable.swap(true, Ordering::AcqRel) {
            tracing::info!("the shared lease store answers again");
        }
    }

    /// Makes one write now, or queues it (in order) when the store is down or writes are queued.
    async fn write(&self, w: Write) -> Result<(), JournalError> {
        {
            let queue = lock(&self.queued);
            if !queue.is_empty() {
                drop(queue);
                self.enqueue(w);
                return Err(JournalError::Queued);
            }
        }
        match self.apply(&w).await {
            Err(JournalError::Sql(e)) if unreachable(&e) => {
                self.enqueue(w);
                Err(JournalError::Queued)
            }
            other => other,
        }
    }

    fn enqueue(&self, w: Write) {
        let mut queue = lock(&self.queued);
        if queue.len() >= MAX_QUEUED
            && let Some(lost) = queue.pop_front()
        {
            tracing::error!(lease = %lost.id(), "too many journal writes queued while the store is down; the oldest is dropped");
        }
        queue.push_back(w);
    }

    /// Flushes queued writes in order; stops at the first that cannot be made yet.
    async fn flush(&self) -> Result<(), JournalError> {
        loop {
            let Some(w) = lock(&self.queued).front().cloned() else { return Ok(()) };
            match self.apply(&w).await {
                Ok(()) => {}
                Err(JournalError::NotOwner) => {
                    tracing::warn!(lease = %w.id(), "a queued journal write is dropped: the lease belongs to another instance now")
                }
                Err(e) => return Err(e),
            }
            lock(&self.queued).pop_front();
        }
    }

    /// One fenced UPDATE.
    async fn apply(&self, w: &Write) -> Result<(), JournalError> {
        let (me, epoch) = (&self.instance, self.epoch());
        let q = match w {
            Write::State { id, state, last_error } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE leasegate.leases SET state = $4, last_error = COALESCE($5, last_error) WHERE id = $1 AND {OURS}"
            )))
            .bind(id)
            .bind(me)
            .bind(epoch)
            .bind(state)
            .bind(last_error),
            Write::Renewed { id, expires_at, at } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE leasegate.leases SET expires_at = $4, renewed_at = $5 WHERE id = $1 AND {OURS}"
            )))
            .bind(id)
            .bind(me)
            .bind(epoch)
            .bind(expires_at)
            .bind(at),
            Write::Used { id, databases } => {
                sqlx::query(sqlx::AssertSqlSafe(format!("UPDATE leasegate.leases SET used_databases = $4 WHERE id = $1 AND {OURS}")))
                    .bind(id)
                    .bind(me)
                    .bind(epoch)
                    .bind(databases)
            }
            Write::Ended { id, reason, at } => sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE leasegate.leases SET state = 'ended', end_reason = $4, ended_at = $5, ended_by = $2, revoke_requested = false
                 WHERE id = $1 AND {OURS}"
            )))
            .bind(id)
            .bind(me)
            .bind(epoch)
            .bind(reason)
            .bind(at),
        };
        let done = q.execute(&self.relaxed).await.map_err(|e| self.failed(e))?;
        self.answered();
        if done.rows_affected() == 0 { Err(JournalError::NotOwner) } else { Ok(()) }
    }

    async fn insert(&self, i: &Intent<'_>, state: &str) -> Result<(), JournalError> {
        // Only while this instance is alive at its epoch: a declared-dead instance grants nothing.
        // (No row lock on the instance: an intent that races its instance's declaration is
        // claimed at the taker's next beat, and its mint, whose next write is refused, drops
        // the user itself.)
        let done = sqlx::query(
            "INSERT INTO leasegate.leases (id, database, role, client, db_user, state, granted_at, expires_at, max_expires_at, instance, epoch, held_by)
             SELECT $4, $5, $6, $7, $8, $9, $10, $11, $12, $2, $3, $13 FROM leasegate.instances
             WHERE id = $2 AND epoch = $3 AND dead_at IS NULL",
        )
        .bind(i.id) // $1 is unused so that $2/$3 mean what they mean in `OURS`
        .bind(&self.instance)
        .bind(self.epoch())
        .bind(i.id)
        .bind(i.database)
        .bind(i.role)
        .bind(i.client)
        .bind(i.db_user)
        .bind(state)
        .bind(millis(i.granted_at))
        .bind(millis(i.expires_at))
        .bind(millis(i.max_expires_at))
        .bind(i.held_by)
        .execute(&self.pool)
        .await
        .map_err(|e| self.failed(e))?;
        self.answered();
        if done.rows_affected() == 0 { Err(JournalError::NotOwner) } else { Ok(()) }
    }

    async fn select(&self, sql: String, bind: Option<&str>) -> Result<Vec<JournalRow>, JournalError> {
        let mut q = sqlx::query_as::<_, PgRow>(sqlx::AssertSqlSafe(sql));
        if let Some(b) = bind {
            q = q.bind(b.to_string());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(|e| self.failed(e))?;
        self.answered();
        Ok(rows.into_iter().map(PgRow::into_row).collect())
    }
}

/// `SELECT_ROW`'s columns: the SQLite journal's, then the owning instance and the sidecar.
type PgRow =
    (String, String, String, String, String, String, Option<String>, Option<String>, String, i64, i64, i64, String, Option<String>);
/// A claimed row, then the instance it was taken from.
type ClaimedRow =
    (String, String, String, String, String, String, Option<String>, Option<String>, String, i64, i64, i64, String, Option<String>, String);

trait PgIntoRow {
    fn into_row(self) -> JournalRow;
}

impl PgIntoRow for PgRow {
    fn into_row(self) -> JournalRow {
        let (id, database, role, client, db_user, state, end_reason, last_error, used, granted, expires, max, instance, held_by) = self;
        let raw: RawRow = (id, database, role, client, db_user, state, end_reason, last_error, used, granted, expires, max);
        JournalRow { held_by, ..raw.into_row(&instance) }
    }
}

/// Creates the schema or moves it to the newest version, once, whoever else starts now.
async fn migrate(pool: &PgPool) -> Result<(), JournalError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut *tx).await?;
    sqlx::raw_sql("CREATE SCHEMA IF NOT EXISTS leasegate; CREATE TABLE IF NOT EXISTS leasegate.schema_version (version INT NOT NULL)")
        .execute(&mut *tx)
        .await?;
    let current: i32 = sqlx::query_scalar("SELECT COALESCE(max(version), 0) FROM leasegate.schema_version").fetch_one(&mut *tx).await?;
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(JournalError::Unavailable(format!(
            "the shared store's schema is version {current}, newer than this leasegate knows ({known}); upgrade this instance"
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(*migration)).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO leasegate.schema_version (version) VALUES ($1)").bind(i as i32 + 1).execute(&mut *tx).await?;
        tracing::info!(version = i + 1, "shared lease store schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

/// An error that says the store is not there (rather than that a statement is wrong).
fn unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300" || c == "57014"),
        _ => false,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

/// An instance id for a shared store when the config names none: the host and a random suffix,
/// new at each start (a restarted process is a new instance; the old one's leases are taken
/// over when its heartbeat is old enough).
pub fn generated_instance() -> String {
    let host: String = hostname().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(40).collect();
    let suffix = &crate::name::lease_id()[..8];
    if host.is_empty() { format!("lg-{suffix}") } else { format!("{host}-{suffix}") }
}

impl LeaseStore for PgJournal {
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
        let w = Write::State { id: id.into(), state: state.into(), last_error: last_error.map(str::to_string) };
        Box::pin(self.write(w))
    }

    fn renewed<'a>(&'a self, id: &'a str, expires_at: SystemTime) -> StoreFuture<'a, ()> {
        let w = Write::Renewed { id: id.into(), expires_at: millis(expires_at), at: millis(SystemTime::now()) };
        Box::pin(self.write(w))
    }

    fn used_databases<'a>(&'a self, id: &'a str, databases: &'a BTreeSet<String>) -> StoreFuture<'a, ()> {
        let w = Write::Used { id: id.into(), databases: databases.iter().cloned().collect::<Vec<_>>().join("\n") };
        Box::pin(self.write(w))
    }

    fn ended<'a>(&'a self, id: &'a str, reason: &'a str) -> StoreFuture<'a, ()> {
        let w = Write::Ended { id: id.into(), reason: reason.into(), at: millis(SystemTime::now()) };
        Box::pin(self.write(w))
    }

    /// This instance's unfinished leases of earlier epochs (a previous run with the same id),
    /// moved to the current epoch: they are this run's to revoke.
    fn unfinished(&self) -> StoreFuture<'_, Vec<JournalRow>> {
        Box::pin(async move {
            let rows: Vec<PgRow> = sqlx::query_as(
                "UPDATE leasegate.leases SET epoch = $2 WHERE instance = $1 AND epoch <> $2 AND state <> 'ended'
                 RETURNING id, database, role, client, db_user, state, end_reason, last_error, used_databases,
                     granted_at, expires_at, max_expires_at, instance, held_by",
            )
            .bind(&self.instance)
            .bind(self.epoch())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.failed(e))?;
            let mut rows: Vec<JournalRow> = rows.into_iter().map(PgIntoRow::into_row).collect();
            rows.sort_by_key(|r| r.granted_at);
            Ok(rows)
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<JournalRow>> {
        Box::pin(async move { Ok(self.select(format!("{SELECT_ROW} WHERE id = $1"), Some(id)).await?.into_iter().next()) })
    }

    fn open_leases(&self) -> StoreFuture<'_, Vec<JournalRow>> {
        Box::pin(self.select(format!("{SELECT_ROW} WHERE state <> 'ended' ORDER BY granted_at"), None))
    }

    fn open_users(&self) -> StoreFuture<'_, HashSet<String>> {
        Box::pin(async move {
            let users: Vec<String> = sqlx::query_scalar("SELECT db_user FROM leasegate.leases WHERE state <> 'ended'")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| self.failed(e))?;
            Ok(users.into_iter().collect())
        })
    }

    fn known_instances(&self) -> StoreFuture<'_, HashSet<String>> {
        Box::pin(async move {
            let ids: Vec<String> =
                sqlx::query_scalar("SELECT id FROM leasegate.instances").fetch_all(&self.pool).await.map_err(|e| self.failed(e))?;
            Ok(ids.into_iter().collect())
        })
    }

    /// Ended leases past `retain`, and instances that stopped or died that long ago and own
    /// nothing unfinished.
    fn prune(&self, retain: Duration) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let cutoff = millis(SystemTime::now() - retain);
            let done = sqlx::query("DELETE FROM leasegate.leases WHERE state = 'ended' AND ended_at < $1")
                .bind(cutoff)
                .execute(&self.pool)
                .await
                .map_err(|e| self.failed(e))?;
            sqlx::query(
                "DELETE FROM leasegate.instances i WHERE (i.dead_at IS NOT NULL OR i.stopped) AND i.heartbeat_at < now() - make_interval(secs => $1)
                 AND NOT EXISTS (SELECT 1 FROM leasegate.leases l WHERE l.instance = i.id AND l.state <> 'ended')",
            )
            .bind(retain.as_secs_f64())
            .execute(&self.pool)
            .await
            .map_err(|e| self.failed(e))?;
            Ok(done.rows_affected())
        })
    }

    fn health(&self) -> StoreHealth {
        StoreHealth { reachable: self.reachable.load(Ordering::Acquire), queued_writes: lock(&self.queued).len() }
    }

    fn may_act(&self) -> bool {
        lock(&self.alive_since).elapsed() < self.takeover_after - self.takeover_after / 10
    }

    fn fleet(&self) -> Option<&dyn FleetStore> {
        Some(self)
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.relaxed.close().await;
            self.pool.close().await;
        })
    }
}

impl FleetStore for PgJournal {
    fn heartbeat(&self) -> StoreFuture<'_, Beat> {
        Box::pin(async move {
            let sent = Instant::now();
            let done = sqlx::query("UPDATE leasegate.instances SET heartbeat_at = now() WHERE id = $1 AND epoch = $2 AND dead_at IS NULL")
                .bind(&self.instance)
                .bind(self.epoch())
                .execute(&self.relaxed)
                .await
                .map_err(|e| self.failed(e))?;
            self.answered();
            if done.rows_affected() == 0 {
                return Ok(Beat::Fenced);
            }
            *lock(&self.alive_since) = sent;
            self.flush().await?;
            Ok(Beat::Alive)
        })
    }

    fn claim_dead(&self, after: Duration, limit: i64) -> StoreFuture<'_, Vec<Claimed>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(|e| self.failed(e))?;
            let declared: Vec<String> = sqlx::query_scalar(
                "UPDATE leasegate.instances SET dead_at = now(), taken_by = $1
                 WHERE dead_at IS NULL AND NOT stopped AND id <> $1 AND heartbeat_at < now() - make_interval(secs => $2)
                 RETURNING id",
            )
            .bind(&self.instance)
            .bind(after.as_secs_f64())
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.failed(e))?;
            for dead in &declared {
                tracing::warn!(instance = %dead, silent_for = ?after, "instance declared dead: its heartbeat stopped; taking over its leases");
            }
            let rows: Vec<ClaimedRow> = sqlx::query_as(
                "UPDATE leasegate.leases l SET instance = $1, epoch = $2, taken_from = l.instance
                     FROM (SELECT id, instance FROM leasegate.leases
                           WHERE state <> 'ended' AND instance IN (SELECT id FROM leasegate.instances WHERE dead_at IS NOT NULL OR stopped)
                           ORDER BY granted_at LIMIT $3 FOR UPDATE SKIP LOCKED) c
                     WHERE l.id = c.id
                     RETURNING l.id, l.database, l.role, l.client, l.db_user, l.state, l.end_reason, l.last_error, l.used_databases,
                         l.granted_at, l.expires_at, l.max_expires_at, l.instance, l.held_by, c.instance",
            )
            .bind(&self.instance)
            .bind(self.epoch())
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.failed(e))?;
            tx.commit().await.map_err(|e| self.failed(e))?;
            Ok(rows
                .into_iter()
                .map(
                    |(
                        id,
                        database,
                        role,
                        client,
                        db_user,
                        state,
                        end_reason,
                        last_error,
                        used,
                        granted,
                        expires,
                        max,
                        instance,
                        held,
                        from,
                    )| {
                        let row = (
                            id, database, role, client, db_user, state, end_reason, last_error, used, granted, expires, max, instance, held,
                        );
                        Claimed { row: row.into_row(), from }
                    },
                )
                .collect())
        })
    }

    fn reregister(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // What was queued under the old epoch can no longer be written.
            let dropped = std::mem::take(&mut *lock(&self.queued)).len();
            if dropped > 0 {
                tracing::warn!(writes = dropped, "queued journal writes of the fenced epoch are dropped");
            }
            self.register().await
        })
    }

    fn revoke_requests(&self) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM leasegate.leases WHERE instance = $1 AND epoch = $2 AND revoke_requested AND state <> 'ended'",
            )
            .bind(&self.instance)
            .bind(self.epoch())
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.failed(e))?;
            Ok(ids)
        })
    }

    fn request_revoke<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query("UPDATE leasegate.leases SET revoke_requested = true WHERE id = $1 AND state <> 'ended'")
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(|e| self.failed(e))?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn find_user<'a>(&'a self, db_user: &'a str) -> StoreFuture<'a, Option<JournalRow>> {
        Box::pin(async move {
            let rows = self.select(format!("{SELECT_ROW} WHERE db_user = $1 AND state <> 'ended'"), Some(db_user)).await?;
            Ok(rows.into_iter().next())
        })
    }

    fn extend<'a>(&'a self, id: &'a str, expires_at: SystemTime) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE leasegate.leases SET expires_at = GREATEST(expires_at, $2), renewed_at = $3 WHERE id = $1 AND state = 'active'",
            )
            .bind(id)
            .bind(millis(expires_at))
            .bind(millis(SystemTime::now()))
            .execute(&self.pool)
            .await
            .map_err(|e| self.failed(e))?;
            Ok(done.rows_affected() > 0)
        })
    }

    fn deregister(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.flush().await;
            sqlx::query("UPDATE leasegate.instances SET stopped = true, heartbeat_at = now() WHERE id = $1 AND epoch = $2")
                .bind(&self.instance)
                .bind(self.epoch())
                .execute(&self.pool)
                .await
                .map_err(|e| self.failed(e))?;
            Ok(())
        })
    }
}
