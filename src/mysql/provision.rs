//! The SQL that creates and removes minted MySQL/MariaDB users, run through an admin pool (sqlx).
//!
//! `{{password}}` in MySQL templates expands to the `mysql_native_password` hash (`*<40 hex>`),
//! never the cleartext: MariaDB's general log records `IDENTIFIED BY '<cleartext>'` as sent,
//! so templates say `IDENTIFIED BY PASSWORD '{{password}}'` on MariaDB or `IDENTIFIED WITH
//! mysql_native_password AS '{{password}}'` on MySQL 8.0 (Vault's `IDENTIFIED BY
//! '{{password}}'` is rewritten to those by `vault.rs`). The default statement on MySQL 8 (which has neither form for its default
//! plugin) sends the cleartext, which MySQL masks in its logs. MySQL DDL commits statement by statement, so a failed creation batch may leave the
//! user behind: the lease engine then revokes it like any other (`mint_is_atomic` says false).
//! MySQL has no per-user expiry timestamp: the lease's end is enforced by revocation alone
//! (renewal runs only the role's own `renew_statements`).

use super::vault;
use crate::config::{DatabaseConfig, RoleConfig, UpstreamTlsMode};
use crate::credential::MysqlHashes;
use crate::provision::{Found, Privilege, ProvisionError, ProvisionFuture, Provisioner};
use crate::secret::Secret;
use sqlx::mysql::{MySqlConnectOptions, MySqlDatabaseError, MySqlPool, MySqlPoolOptions, MySqlSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Executor};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

/// Bound on one admin batch.
const BATCH_TIMEOUT: Duration = Duration::from_secs(45);
/// Names never need to be longer than this, whatever the server allows.
const LONGEST_NAME: usize = 63;
/// What every admin connection runs first (see `new`).
const SESSION_SETUP: &str = "SET SESSION lock_wait_timeout = 10, \
     sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'NO_BACKSLASH_ESCAPES')";

/// ER_NO_SUCH_THREAD: the thread ended between listing and KILL.
const NO_SUCH_THREAD: &str = "1094";
/// ER_CANNOT_USER: "Operation ALTER USER failed for …" (no such user).
const CANNOT_USER: &str = "1396";

pub struct MyProvisioner {
    pub(super) pool: MySqlPool,
    options: MySqlConnectOptions,
    user_options: MySqlConnectOptions,
    addr: String,
    connect_timeout: Duration,
    /// The server's user-name limit, probed on first use (0: not yet known).
    max_user_len: AtomicUsize,
    /// Whether the server is MariaDB, read on first use (0: not yet known, 1: MySQL, 2: MariaDB).
    flavour: AtomicU8,
    /// The admin was seen to hold PROCESS and CONNECTION ADMIN (or SUPER): `privileges.rs`.
    pub(super) sessions_visible: AtomicBool,
}

impl MyProvisioner {
    pub fn new(db: &DatabaseConfig, admin_password: &Secret) -> Self {
        let (host, port) = db.upstream_host_port().unwrap_or_else(|| ("127.0.0.1".into(), 3306));
        let tls = db.upstream_tls.clone().unwrap_or_default();
        let ssl_mode = match tls.mode {
            UpstreamTlsMode::Disable => MySqlSslMode::Disabled,
            UpstreamTlsMode::Prefer => MySqlSslMode::Preferred,
            UpstreamTlsMode::Require => MySqlSslMode::Required,
            UpstreamTlsMode::VerifyCa => MySqlSslMode::VerifyCa,
            UpstreamTlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        };
        let mut options = MySqlConnectOptions::new()
            .host(&host)
            .port(port)
            .username(&db.admin_user)
            .password(admin_password.expose())
            .database(&db.admin_database)
            .ssl_mode(ssl_mode)
            .disable_statement_logging();
        if let Some(ca) = &tls.ca {
            options = options.ssl_ca(ca);
        }
        // How a minted user itself connects (`take_default_role`): no database, which it may
        // not be allowed to use.
        let mut user_options = MySqlConnectOptions::new().host(&host).port(port).ssl_mode(ssl_mode).disable_statement_logging();
        if let Some(ca) = &tls.ca {
            user_options = user_options.ssl_ca(ca);
        }
        let pool = MySqlPoolOptions::new()
            .max_connections(4)
            .min_connections(0)
            .acquire_timeout(db.connect_timeout)
            .idle_timeout(Duration::from_secs(300))
            // DDL waits for metadata locks; give up after 10 s instead of hanging a mint. And
            // a backslash is no escape in leasegate's literals, whatever the server's own
            // sql_mode says: quoting doubles `'` and nothing else.
            .after_connect(|conn, _| Box::pin(async move { conn.execute(SESSION_SETUP).await.map(|_| ()) }))
            .connect_lazy_with(options.clone());
        MyProvisioner {
            pool,
            options,
            user_options,
            addr: db.upstream.clone(),
            connect_timeout: db.connect_timeout,
            max_user_len: AtomicUsize::new(0),
            flavour: AtomicU8::new(0),
            sessions_visible: AtomicBool::new(false),
        }
    }

    /// MariaDB: the new user makes `group` its own default role, over a connection of its own.
    /// `SET DEFAULT ROLE … FOR <other user>` needs UPDATE on the whole `mysql` schema (which
    /// would let the admin rewrite any grant), while a user may set its own without privileges.
    /// MariaDB has one default role: with several `member_of` roles, the first one.
    async fn take_default_role(&self, user: &str, password: &Secret, group: &str) -> Result<(), ProvisionError> {
        let options = self.user_options.clone().username(user).password(password.expose());
        let set = async {
            let mut conn = options.connect().await?;
            conn.execute(AssertSqlSafe(format!("SET DEFAULT ROLE {}", quote_ident(group)))).await?;
            conn.close().await
        };
        self.bounded("setting the default role", set).await.map_err(|e| match e {
            ProvisionError::Connect { addr, message } => {
                ProvisionError::Connect { addr, message: message.replace(password.expose(), "[redacted]") }
            }
            other => other,
        })
    }

    /// Kills a query (or the connection) of a session leasegate proxies: a client's `KILL` from
    /// another connection, which the server would refuse across users with error 1095.
    /// Every account of `user`, on whichever host a template created it (`'u'@'%'`,
    /// `'u'@'localhost'`, …), quoted for a statement.
    async fn accounts(&self, user: &str) -> Result<Vec<String>, ProvisionError> {
        let q = sqlx::query_scalar::<_, String>("SELECT Host FROM mysql.user WHERE User = ?").bind(user).fetch_all(&self.pool);
        let hosts = self.bounded("listing the user's accounts", q).await?;
        Ok(hosts.iter().map(|host| account_on(user, host)).collect())
    }

    /// Drops every account of `user`.
    async fn drop_accounts(&self, user: &str) -> Result<(), ProvisionError> {
        for account in self.accounts(user).await? {
            self.batch("dropping the user", format!("DROP USER IF EXISTS {account}")).await?;
        }
        Ok(())
    }

    /// Only when thread `thread` still belongs to `user` on the server (checked right before:
    /// the id leasegate holds may have ended and been reused by someone else's session).
    pub async fn kill(&self, thread: u32, query_only: bool, user: &str) -> Result<(), ProvisionError> {
        let q = sqlx::query_scalar::<_, String>("SELECT USER FROM information_schema.PROCESSLIST WHERE ID = ?")
            .bind(thread)
            .fetch_optional(&self.pool);
        match self.bounded("checking whose thread it is", q).await? {
            Some(owner) if owner == user => {}
            _ => {
                return Err(ProvisionError::Statement {
                    step: "killing for a client",
                    code: NO_SUCH_THREAD.into(),
                    message: format!("thread {thread} is not the session of {user}"),
                });
            }
        }
        let what = if query_only { "QUERY" } else { "CONNECTION" };
        self.batch("killing for a client", format!("KILL {what} {thread}")).await
    }

    /// The server threads of `user` (processlist ids).
    async fn threads(&self, user: &str) -> Result<Vec<u64>, ProvisionError> {
        let q =
            sqlx::query_scalar("SELECT CAST(ID AS UNSIGNED) FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()")
                .bind(user)
                .fetch_all(&self.pool);
        self.bounded("listing sessions", q).await
    }

    pub(super) async fn is_mariadb(&self) -> Result<bool, ProvisionError> {
        match self.flavour.load(Ordering::Relaxed) {
            1 => return Ok(false),
            2 => return Ok(true),
            _ => {}
        }
        let version: String =
            self.bounded("reading the server version", sqlx::query_scalar("SELECT VERSION()").fetch_one(&self.pool)).await?;
        let mariadb = version.contains("MariaDB");
        self.flavour.store(if mariadb { 2 } else { 1 }, Ordering::Relaxed);
        Ok(mariadb)
    }

    /// Runs `sql` (one or more statements) as one text-protocol query.
    async fn batch(&self, step: &'static str, sql: String) -> Result<(), ProvisionError> {
        self.run(step, sql, None).await
    }

    /// `batch`, with `secret` cut out of any error message (a syntax error quotes the SQL).
    async fn run(&self, step: &'static str, sql: String, secret: Option<&str>) -> Result<(), ProvisionError> {
        let mut conn =
            self.pool.acquire().await.map_err(|e| ProvisionError::Unreachable { addr: self.addr.clone(), message: message(&e) })?;
        let scrub = |e: ProvisionError| match (e, secret) {
            (ProvisionError::Statement { step, code, message }, Some(s)) if !s.is_empty() => {
                ProvisionError::Statement { step, code, message: message.replace(s, "[redacted]") }
            }
            (ProvisionError::Connect { addr, message }, Some(s)) if !s.is_empty() => {
                ProvisionError::Connect { addr, message: message.replace(s, "[redacted]") }
            }
            (e, _) => e,
        };
        match tokio::time::timeout(BATCH_TIMEOUT, sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn)).await {
            Ok(result) => result.map(|_| ()).map_err(|e| scrub(self.error(step, e))),
            Err(_) => {
                Err(ProvisionError::Connect { addr: self.addr.clone(), message: format!("{step} timed out after {BATCH_TIMEOUT:?}") })
            }
        }
    }

    pub(super) async fn bounded<T>(
        &self,
        step: &'static str,
        f: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, ProvisionError> {
        match tokio::time::timeout(BATCH_TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(sqlx::Error::PoolTimedOut)) => {
                Err(ProvisionError::Unreachable { addr: self.addr.clone(), message: "no admin connection (pool timed out)".into() })
            }
            Ok(Err(e)) => Err(self.error(step, e)),
            Err(_) => Err(ProvisionError::Connect { addr: self.addr.clone(), message: format!("{step} timed out") }),
        }
    }

    fn error(&self, step: &'static str, e: sqlx::Error) -> ProvisionError {
        match e {
            sqlx::Error::Database(db) => ProvisionError::Statement {
                step,
                code: db.try_downcast_ref::<MySqlDatabaseError>().map(|m| m.number().to_string()).unwrap_or_default(),
                message: db.message().to_string(),
            },
            other => ProvisionError::Connect { addr: self.addr.clone(), message: other.to_string() },
        }
    }
}

impl Provisioner for MyProvisioner {
    fn check(&self) -> ProvisionFuture<'_, ()> {
        Box::pin(async move {
            match self.batch("admin connection check", "SELECT 1".into()).await {
                Err(ProvisionError::Unreachable { .. }) => {
                    let direct = tokio::time::timeout(self.connect_timeout, self.options.connect()).await;
                    match direct {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(ProvisionError::Unreachable { addr: self.addr.clone(), message: message(&e) }),
                        Err(_) => Err(ProvisionError::Unreachable { addr: self.addr.clone(), message: "connect timed out".into() }),
                    }
                }
                // Not ready while revocation could not end sessions (checked once it holds).
                Ok(()) => self.require_session_privileges().await,
                other => other,
            }
        })
    }

    /// The server's limit on user names (MySQL ≥ 5.7.8: 32, MariaDB ≥ 10.6: 128, older: 16),
    /// read from the catalogue once.
    fn max_user_len(&self) -> ProvisionFuture<'_, usize> {
        Box::pin(async move {
            let known = self.max_user_len.load(Ordering::Relaxed);
            if known != 0 {
                return Ok(known);
            }
            let sql = "SELECT CAST(CHARACTER_MAXIMUM_LENGTH AS SIGNED) FROM information_schema.COLUMNS \
                       WHERE TABLE_SCHEMA = 'mysql' AND TABLE_NAME = 'user' AND COLUMN_NAME = 'User'";
            let found: Option<i64> =
                self.bounded("probing the user-name limit", sqlx::query_scalar(sql).fetch_optional(&self.pool)).await?;
            let limit = found.map_or(16, |n| (n.max(16) as usize).min(LONGEST_NAME));
            self.max_user_len.store(limit, Ordering::Relaxed);
            Ok(limit)
        })
    }

    /// DDL commits statement by statement: a failed batch may have created the user.
    fn mint_is_atomic(&self) -> bool {
        false
    }

    /// MariaDB has no place on an account for a mark (MySQL 8's ATTRIBUTE is not used yet).
    fn marks_users(&self) -> bool {
        false
    }

    fn mint<'a>(
        &'a self,
        role: &'a RoleConfig,
        user: &'a str,
        password: &'a Secret,
        _valid_until: SystemTime,
        _instance: &'a str,
        _who: crate::provision::MintFor<'a>,
    ) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            // A user leasegate could not end the sessions of is never made.
            self.require_session_privileges().await?;
            let hash = format!("*{}", crate::credential::hex(&MysqlHashes::of(password.expose().as_bytes()).native).to_uppercase());
            if !role.creation_statements.is_empty() {
                let flavour = if self.is_mariadb().await? { vault::Flavour::MariaDb } else { vault::Flavour::Mysql };
                let sql = Vars { name: user, password: &hash }.render_all(&vault::prepare(&role.creation_statements, flavour));
                return self.run("creation statements", vault::fill_cleartext(sql, password), Some(password.expose())).await;
            }
            if self.is_mariadb().await? {
                let sql = Vars { name: user, password: &hash }.render(&default_creation(&role.member_of, true));
                self.run("creation statements", sql, Some(password.expose())).await?;
                match role.member_of.first() {
                    Some(group) => self.take_default_role(user, password, group).await,
                    None => Ok(()),
                }
            } else {
                // MySQL 8 has no IDENTIFIED BY PASSWORD; it hashes the cleartext with its default
                // plugin and masks it in its general, slow and binary logs (unlike MariaDB).
                let sql = Vars { name: user, password: password.expose() }.render(&default_creation(&role.member_of, false));
                self.run("creation statements", sql, Some(password.expose())).await
            }
        })
    }

    /// Runs the role's renew statements; without them there is nothing to move (no expiry on
    /// MySQL users: revocation ends them).
    fn renew<'a>(&'a self, role: &'a RoleConfig, user: &'a str, _valid_until: SystemTime) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            if role.renew_statements.is_empty() {
                return Ok(());
            }
            self.batch("renew statements", Vars { name: user, password: "" }.render_all(&role.renew_statements)).await
        })
    }

    fn users_with_prefix<'a>(&'a self, prefix: &'a str) -> ProvisionFuture<'a, Vec<Found>> {
        Box::pin(async move {
            // LEFT(), not LIKE, where `_` would be a wildcard.
            // Never the admin itself, whatever its name.
            let q = sqlx::query_scalar(
                "SELECT DISTINCT User FROM mysql.user WHERE LEFT(User, CHAR_LENGTH(?)) = ? \
                 AND User <> SUBSTRING_INDEX(CURRENT_USER(), '@', 1) ORDER BY 1",
            )
            .bind(prefix)
            .bind(prefix)
            .fetch_all(&self.pool);
            let users: Vec<String> = self.bounded("listing users", q).await?;
            Ok(users.into_iter().map(|user| Found { user, ..Found::default() }).collect())
        })
    }

    fn rollback<'a>(&'a self, role: &'a RoleConfig, user: &'a str) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            if role.rollback_statements.is_empty() {
                return self.drop_accounts(user).await;
            }
            self.batch("rollback statements", Vars { name: user, password: "" }.render_all(&role.rollback_statements)).await
        })
    }

    /// No new logins (ACCOUNT LOCK on every host the user has an account on), then every
    /// thread of the user killed. Needs CONNECTION_ADMIN or SUPER to kill other users'
    /// threads. The user is gone only when no host has an account for it.
    fn stop_sessions<'a>(&'a self, user: &'a str) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            let accounts = self.accounts(user).await?;
            if accounts.is_empty() {
                return Err(ProvisionError::UserGone {
                    step: "locking the account",
                    code: CANNOT_USER.into(),
                    message: format!("no account named {user} on any host"),
                });
            }
            for account in &accounts {
                match self.batch("locking the account", format!("ALTER USER {account} ACCOUNT LOCK")).await {
                    // Dropped meanwhile on that host: nothing to lock there.
                    Err(ProvisionError::Statement { code, .. }) if code == CANNOT_USER => {}
                    other => other?,
                }
            }
            self.require_session_privileges().await?;
            for id in self.threads(user).await? {
                match self.batch("killing sessions", format!("KILL CONNECTION {id}")).await {
                    Err(ProvisionError::Statement { code, .. }) if code == NO_SUCH_THREAD => {}
                    other => other?,
                }
            }
            Ok(())
        })
    }

    fn wait_sessions_gone<'a>(&'a self, user: &'a str, limit: Duration) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                if self.threads(user).await?.is_empty() {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ProvisionError::SessionsLinger(limit));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// Drops the user (objects it created stay with their schema: MySQL users own nothing).
    fn drop_user<'a>(&'a self, role: &'a RoleConfig, user: &'a str, _used: &'a BTreeSet<String>) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            if !role.revocation_statements.is_empty() {
                let sql = Vars { name: user, password: "" }.render_all(&role.revocation_statements);
                return self.batch("revocation statements", sql).await;
            }
            self.drop_accounts(user).await
        })
    }

    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(self.pool.close())
    }

    fn privileges<'a>(&'a self, roles: &'a [RoleConfig]) -> ProvisionFuture<'a, Vec<Privilege>> {
        Box::pin(self.read_privileges(roles))
    }
}

/// The creation statement used when a role gives none: a user that may only log in, with the
/// role's `member_of` roles granted, and on MySQL 8 made default (on MariaDB the user sets its
/// own default role: `take_default_role`).
fn default_creation(member_of: &[String], mariadb: bool) -> String {
    let mut sql = if mariadb {
        "CREATE USER '{{name}}'@'%' IDENTIFIED BY PASSWORD '{{password}}'"
    } else {
        "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'"
    }
    .to_string();
    for group in member_of {
        let group = quote_ident(group);
        sql.push_str(&format!(";\nGRANT {group} TO '{{{{name}}}}'@'%'"));
    }
    if !mariadb && !member_of.is_empty() {
        sql.push_str(";\nSET DEFAULT ROLE ALL TO '{{name}}'@'%'");
    }
    sql
}

/// `'user'@'host'`, quoted for a statement (admin sessions run with NO_BACKSLASH_ESCAPES, so
/// doubling `'` is all the escaping there is).
pub(super) fn account_on(user: &str, host: &str) -> String {
    format!("'{}'@'{}'", user.replace('\'', "''"), host.replace('\'', "''"))
}

/// `` `ident` `` with embedded backquotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

struct Vars<'a> {
    name: &'a str,
    password: &'a str,
}

impl Vars<'_> {
    fn render(&self, template: &str) -> String {
        template.replace("{{name}}", self.name).replace("{{username}}", self.name).replace("{{password}}", self.password)
    }

    fn render_all(&self, templates: &[String]) -> String {
        templates.iter().map(|t| self.render(vault::tidy(t))).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(";\n")
    }
}

fn message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_creation_uses_the_hash_and_grants_roles() {
        let vars = Vars { name: "lg_a", password: "*B69027D44F6E5EDC07F1AEAD1477967B16F28227" };
        assert_eq!(
            vars.render(&default_creation(&["app_ro".into()], true)),
            "CREATE USER 'lg_a'@'%' IDENTIFIED BY PASSWORD '*B69027D44F6E5EDC07F1AEAD1477967B16F28227';\n\
             GRANT `app_ro` TO 'lg_a'@'%'"
        );
        assert!(vars.render(&default_creation(&["r".into()], false)).ends_with("SET DEFAULT ROLE ALL TO 'lg_a'@'%'"));
        assert_eq!(account_on("lg_x", "%"), "'lg_x'@'%'");
        assert_eq!(account_on("lg_x", "it's"), "'lg_x'@'it''s'");
    }
}
