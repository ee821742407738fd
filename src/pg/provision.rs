//! The SQL that creates and removes minted Postgres roles, run through an admin pool (sqlx).
//!
//! Creation statements are Vault-compatible templates. `{{password}}` expands to a SCRAM
//! verifier leasegate computes (one PBKDF2 iteration: the password is 238 random bits, so key
//! stretching adds nothing but ~10 ms of server CPU per mint), so the cleartext never reaches
//! the server or its logs. All DDL goes through the simple query protocol (`raw_sql`): one round
//! trip, one implicit transaction for a multi-statement batch, and no prepared-statement cache
//! filled with one-off statements. Statement logging is off on these connections.
//!
//! `PgProvisioner` implements `provision::Provisioner`, answering the dialect questions there
//! too: a batch is atomic, names are at most 63 bytes, and SQLSTATE 42704 on the minted role
//! means the user is gone.

use crate::config::{DatabaseConfig, RoleConfig, UpstreamTlsMode};
use crate::pg::scram;
use crate::provision::{Found, Privilege, ProvisionError, ProvisionFuture, Provisioner};
use crate::secret::Secret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};
use sqlx::{AssertSqlSafe, ConnectOptions};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// PBKDF2 iterations in minted users' verifiers (see the module docs for why 1).
pub const MINTED_SCRAM_ITERATIONS: u32 = 1;
/// Bound on one admin batch, beyond the server-side statement_timeout.
const BATCH_TIMEOUT: Duration = Duration::from_secs(45);
/// Postgres's identifier limit (NAMEDATALEN - 1).
const MAX_USER_LEN: usize = 63;

pub struct PgProvisioner {
    base: PgConnectOptions,
    pub(super) admin_user: String,
    addr: String,
    admin_database: String,
    pools: Mutex<HashMap<String, PgPool>>,
    connect_timeout: Duration,
}

impl PgProvisioner {
    pub fn new(db: &DatabaseConfig, admin_password: &Secret) -> Self {
        let (host, port) = db.upstream_host_port().unwrap_or_else(|| ("127.0.0.1".into(), 5432));
        let tls = db.upstream_tls.clone().unwrap_or_default();
        let ssl_mode = match tls.mode {
            UpstreamTlsMode::Disable => PgSslMode::Disable,
            UpstreamTlsMode::Prefer => PgSslMode::Prefer,
            UpstreamTlsMode::Require => PgSslMode::Require,
            UpstreamTlsMode::VerifyCa => PgSslMode::VerifyCa,
            UpstreamTlsMode::VerifyFull => PgSslMode::VerifyFull,
        };
        let mut base = PgConnectOptions::new()
            .host(&host)
            .port(port)
            .username(&db.admin_user)
            .password(admin_password.expose())
            .application_name("leasegate")
            // The server ends a statement stuck behind a lock (pg_authid, a table a DROP OWNED
            // needs) instead of letting a mint or a revocation hang.
            .options([("statement_timeout", "30s"), ("lock_timeout", "10s")])
            .ssl_mode(ssl_mode)
            .disable_statement_logging();
        if let Some(ca) = &tls.ca {
            base = base.ssl_root_cert(ca);
        }
        PgProvisioner {
            base,
            admin_user: db.admin_user.clone(),
            addr: db.upstream.clone(),
            admin_database: db.admin_database.clone(),
            pools: Mutex::new(HashMap::new()),
            connect_timeout: db.connect_timeout,
        }
    }

    /// The pool for `database`, created on first use (connections open lazily).
    fn pool(&self, database: &str) -> PgPool {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(database.to_string())
            .or_insert_with(|| {
                PgPoolOptions::new()
                    .max_connections(4)
                    .min_connections(0)
                    .acquire_timeout(self.connect_timeout)
                    .idle_timeout(Duration::from_secs(300))
                    .connect_lazy_with(self.base.clone().database(database))
            })
            .clone()
    }

    pub(super) fn admin(&self) -> PgPool {
        self.pool(&self.admin_database)
    }

    /// Runs `sql` as one simple-query batch (one implicit transaction), bounded in time even if
    /// the network, not the server, stalls.
    async fn batch(&self, step: &'static str, pool: &PgPool, sql: String, redact: Option<&str>) -> Result<(), ProvisionError> {
        let mut conn =
            pool.acquire().await.map_err(|e| ProvisionError::Unreachable { addr: self.addr.clone(), message: sqlx_message(&e) })?;
        match tokio::time::timeout(BATCH_TIMEOUT, sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn)).await {
            Ok(result) => result.map(|_| ()).map_err(|e| self.error(step, e, redact)),
            Err(_) => {
                Err(ProvisionError::Connect { addr: self.addr.clone(), message: format!("{step} timed out after {BATCH_TIMEOUT:?}") })
            }
        }
    }

    /// The databases (other than shared objects) where pg_shdepend records something `user`
    /// owns or holds a privilege on.
    async fn databases_holding(&self, user: &str) -> Result<BTreeSet<String>, ProvisionError> {
        let admin = self.admin();
        let q = sqlx::query_scalar(
            "SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid \
             JOIN pg_roles r ON r.oid = s.refobjid WHERE s.refclassid = 'pg_authid'::regclass AND r.rolname = $1",
        )
        .bind(user)
        .fetch_all(&admin);
        match tokio::time::timeout(BATCH_TIMEOUT, q).await {
            Ok(Ok(names)) => Ok(names.into_iter().collect()),
            Ok(Err(e)) => Err(self.error("finding the user's databases", e, None)),
            Err(_) => Err(ProvisionError::Connect { addr: self.addr.clone(), message: "finding the user's databases timed out".into() }),
        }
    }

    /// True when `e` means `user` no longer exists. A 42704 alone does not: `REASSIGN OWNED …
    /// TO <group>` raises it for a missing group too, so the role itself is looked up.
    async fn gone(&self, e: &ProvisionError, user: &str) -> bool {
        if !matches!(e, ProvisionError::Statement { code, .. } if code == UNDEFINED_OBJECT) {
            return false;
        }
        let admin = self.admin();
        let q = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_roles WHERE rolname = $1").bind(user).fetch_one(&admin);
        matches!(tokio::time::timeout(BATCH_TIMEOUT, q).await, Ok(Ok(0)))
    }

    pub(super) fn error(&self, step: &'static str, e: sqlx::Error, redact: Option<&str>) -> ProvisionError {
        let scrub = |s: String| match redact {
            Some(secret) if !secret.is_empty() => s.replace(secret, "[redacted]"),
            _ => s,
        };
        match e {
            sqlx::Error::Database(db) => ProvisionError::Statement {
                step,
                code: db.code().map(|c| c.into_owned()).unwrap_or_default(),
                message: scrub(db.message().to_string()),
            },
            other => ProvisionError::Connect { addr: self.addr.clone(), message: scrub(other.to_string()) },
        }
    }
}

impl Provisioner for PgProvisioner {
    /// Opens an admin connection and runs `SELECT 1`: the health check used at start.
    fn check(&self) -> ProvisionFuture<'_, ()> {
        Box::pin(async move {
            match self.batch("admin connection check", &self.admin(), "SELECT 1".into(), None).await {
                // The pool only says it timed out; one direct attempt tells why (refused, bad password…).
                Err(ProvisionError::Unreachable { .. }) => {
                    let direct =
                        tokio::time::timeout(self.connect_timeout, self.base.clone().database(&self.admin_database).connect()).await;
                    match direct {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(ProvisionError::Unreachable { addr: self.addr.clone(), message: sqlx_message(&e) }),
                        Err(_) => Err(ProvisionError::Unreachable { addr: self.addr.clone(), message: "connect timed out".into() }),
                    }
                }
                other => other,
            }
        })
    }

    fn max_user_len(&self) -> ProvisionFuture<'_, usize> {
        Box::pin(async { Ok(MAX_USER_LEN) })
    }

    /// A batch runs as one implicit transaction: a failed creation leaves nothing behind.
    fn mint_is_atomic(&self) -> bool {
        true
    }

    /// Creates `user` with the role's creation statements (or the default), in one transaction.
    fn mint<'a>(
        &'a self,
        role: &'a RoleConfig,
        user: &'a str,
        password: &'a Secret,
        valid_until: SystemTime,
        instance: &'a str,
        _who: crate::provision::MintFor<'a>,
    ) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            let salt: [u8; 16] = rand::random();
            let verifier = scram::verifier(password.expose().as_bytes(), &salt, MINTED_SCRAM_ITERATIONS).to_string();
            let vars = Vars { name: user, password: &verifier, expiration: &pg_timestamp(valid_until) };
            let sql = if role.creation_statements.is_empty() {
                vars.render(&default_creation(&role.member_of))
            } else {
                // Appended to custom (e.g. Vault) statements too: without it an admin that is not
                // superuser could create the user but never terminate its sessions or drop it.
                format!("{};\n{}", vars.render_all(&role.creation_statements), vars.render(ADMIN_MEMBERSHIP))
            };
            // The mark, in the same transaction: a user exists only with it.
            let sql = format!(
                "{sql};\nCOMMENT ON ROLE {} IS {}",
                quote_ident(user),
                quote_literal(&crate::provision::mark(instance, &role.name))
            );
            self.batch("creation statements", &self.admin(), sql, Some(&verifier)).await
        })
    }

    fn marks_users(&self) -> bool {
        true
    }

    /// Moves the user's expiry: the role's renew statements, or `ALTER ROLE … VALID UNTIL`.
    fn renew<'a>(&'a self, role: &'a RoleConfig, user: &'a str, valid_until: SystemTime) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            let expiration = pg_timestamp(valid_until);
            let vars = Vars { name: user, password: "", expiration: &expiration };
            let sql = if role.renew_statements.is_empty() {
                vars.render("ALTER ROLE \"{{name}}\" VALID UNTIL '{{expiration}}'")
            } else {
                vars.render_all(&role.renew_statements)
            };
            self.batch("renew statements", &self.admin(), sql, None).await
        })
    }

    /// Every role whose name starts with `prefix` (for the orphan sweep). The prefix is compared
    /// with `left()`, not LIKE, where `_` would be a wildcard.
    fn users_with_prefix<'a>(&'a self, prefix: &'a str) -> ProvisionFuture<'a, Vec<Found>> {
        Box::pin(async move {
            let users: Vec<(String, Option<String>)> =
                // Never a superuser or the admin itself, whatever its name: leasegate mints neither.
                sqlx::query_as(
                    "SELECT rolname::text, shobj_description(oid, 'pg_authid') FROM pg_roles \
                     WHERE left(rolname, length($1)) = $1 AND NOT rolsuper AND rolname <> current_user ORDER BY 1",
                )
                    .bind(prefix)
                    .fetch_all(&self.admin())
                    .await
                    .map_err(|e| self.error("listing users", e, None))?;
            Ok(users.into_iter().map(|(user, comment)| crate::provision::found(user, comment.as_deref())).collect())
        })
    }

    /// Undoes a mint whose later steps failed: the rollback statements, or a plain drop.
    fn rollback<'a>(&'a self, role: &'a RoleConfig, user: &'a str) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            if role.rollback_statements.is_empty() {
                return self.batch("rollback", &self.admin(), format!("DROP ROLE IF EXISTS {}", quote_ident(user)), None).await;
            }
            let vars = Vars { name: user, password: "", expiration: "" };
            let sql = vars.render_all(&role.rollback_statements);
            self.batch("rollback statements", &self.admin(), sql, None).await
        })
    }

    /// First step of revocation: no new logins, and every server session of `user` told to end.
    /// The admin first tries to (re)join the role, which orphans may lack; best effort, in its
    /// own statement: an admin that may not grant it but is a member already must not fail here.
    fn stop_sessions<'a>(&'a self, user: &'a str) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            let join = format!("GRANT {} TO CURRENT_USER", quote_ident(user));
            if let Err(e) = self.batch("joining the role", &self.admin(), join, None).await {
                tracing::debug!(user, error = %e, "could not join the role before revoking it");
            }
            let sql = format!(
                "ALTER ROLE {ident} NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {lit} AND pid <> pg_backend_pid()",
                ident = quote_ident(user),
                lit = quote_literal(user),
            );
            self.batch("stopping sessions", &self.admin(), sql, None).await.map_err(user_gone)
        })
    }

    /// Waits until the server has no session of `user` left (terminated backends exit
    /// asynchronously, and their temporary objects block DROP until they have).
    fn wait_sessions_gone<'a>(&'a self, user: &'a str, limit: Duration) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            let deadline = tokio::time::Instant::now() + limit;
            loop {
                let admin = self.admin();
                let count = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE usename = $1").bind(user).fetch_one(&admin);
                let left: i64 = tokio::time::timeout(BATCH_TIMEOUT, count)
                    .await
                    .map_err(|_| ProvisionError::Connect { addr: self.addr.clone(), message: "counting sessions timed out".into() })?
                    .map_err(|e| self.error("counting sessions", e, None))?;
                if left == 0 {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ProvisionError::SessionsLinger(limit));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    /// Last step: clean up what `user` owns in every database it used, then drop it, or run the
    /// role's own revocation statements instead. A user that no longer exists counts as dropped.
    fn drop_user<'a>(&'a self, role: &'a RoleConfig, user: &'a str, used: &'a BTreeSet<String>) -> ProvisionFuture<'a, ()> {
        Box::pin(async move {
            if !role.revocation_statements.is_empty() {
                let vars = Vars { name: user, password: "", expiration: "" };
                let sql = vars.render_all(&role.revocation_statements);
                return self.batch("revocation statements", &self.admin(), sql, None).await;
            }
            let ident = quote_ident(user);
            let cleanup = cleanup_sql(role, &ident);
            // Every database where the user owns or was granted something, wherever it got in
            // (a session, or credentials handed out through the API), not only those leasegate saw.
            let mut databases = self.databases_holding(user).await?;
            databases.extend(used.iter().cloned());
            for database in databases.iter().filter(|d| **d != self.admin_database) {
                match self.batch("cleaning up owned objects", &self.pool(database), cleanup.clone(), None).await {
                    Err(e) if self.gone(&e, user).await => return Ok(()),
                    // A database that is gone, or that refuses connections (template0, no CONNECT
                    // privilege for the admin), holds nothing the user could have created.
                    Err(ProvisionError::Statement { code, .. }) if ["3D000", "55000", "42501"].contains(&code.as_str()) => {}
                    other => other?,
                }
            }
            let sql = format!("{cleanup}; DROP ROLE IF EXISTS {ident}");
            match self.batch("dropping the user", &self.admin(), sql, None).await {
                Err(e) if self.gone(&e, user).await => Ok(()),
                other => other,
            }
        })
    }

    /// Closes every admin connection (shutdown).
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let pools: Vec<PgPool> = self.pools.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
            for pool in pools {
                pool.close().await;
            }
        })
    }

    fn privileges<'a>(&'a self, roles: &'a [RoleConfig]) -> ProvisionFuture<'a, Vec<Privilege>> {
        Box::pin(async move {
            match tokio::time::timeout(BATCH_TIMEOUT, self.read_privileges(roles)).await {
                Ok(found) => found,
                Err(_) => Err(ProvisionError::Connect { addr: self.addr.clone(), message: "reading privileges timed out".into() }),
            }
        })
    }
}

/// Postgres SQLSTATE undefined_object: "role … does not exist".
const UNDEFINED_OBJECT: &str = "42704";

/// `e` as [`ProvisionError::UserGone`] when the server said the role does not exist (only
/// where the statement names the minted role, so the role is what is missing).
fn user_gone(e: ProvisionError) -> ProvisionError {
    match e {
        ProvisionError::Statement { step, code, message } if code == UNDEFINED_OBJECT => ProvisionError::UserGone { step, code, message },
        other => other,
    }
}

/// The creation statement used when a role gives none: a login role that expires with its
/// lease, optionally joining existing group roles (where the privileges live). The admin is
/// made a member of the new role so that, without being superuser (CREATEROLE suffices), it may
/// later terminate the role's sessions and REASSIGN/DROP what the role owns.
fn default_creation(member_of: &[String]) -> String {
    let mut sql = "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'".to_string();
    if !member_of.is_empty() {
        let groups: Vec<String> = member_of.iter().map(|g| quote_ident(g)).collect();
        sql.push_str(" IN ROLE ");
        sql.push_str(&groups.join(", "));
    }
    sql.push_str(";\n");
    sql.push_str(ADMIN_MEMBERSHIP);
    sql
}

/// Makes the admin a member of the minted role: what terminating its sessions and
/// REASSIGN/DROP OWNED need when the admin has CREATEROLE but is not superuser.
const ADMIN_MEMBERSHIP: &str = "GRANT \"{{name}}\" TO CURRENT_USER";

/// What happens to objects a minted user created: they go to the role's first `member_of`
/// group (which already had the user's privileges), or are dropped with it. Never to the admin
/// user: a SECURITY DEFINER function left by the lease would then run with admin rights.
fn cleanup_sql(role: &RoleConfig, ident: &str) -> String {
    match role.member_of.first() {
        Some(group) => format!("REASSIGN OWNED BY {ident} TO {}; DROP OWNED BY {ident}", quote_ident(group)),
        None => format!("DROP OWNED BY {ident}"),
    }
}

/// Values for the Vault template variables. All are generated by leasegate and contain only
/// characters that are safe inside the quotes the templates put around them.
struct Vars<'a> {
    name: &'a str,
    password: &'a str,
    expiration: &'a str,
}

impl Vars<'_> {
    fn render(&self, template: &str) -> String {
        template
            .replace("{{name}}", self.name)
            .replace("{{username}}", self.name)
            .replace("{{password}}", self.password)
            .replace("{{expiration}}", self.expiration)
    }

    /// Renders each template; joined into one batch that runs as one implicit transaction.
    fn render_all(&self, templates: &[String]) -> String {
        templates.iter().map(|t| self.render(t)).collect::<Vec<_>>().join(";\n")
    }
}

/// An error's text without sqlx's decoration ("error returned from database:", the server's
/// source position).
fn sqlx_message(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

/// `"ident"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'literal'` with embedded quotes doubled (standard_conforming_strings is on since 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `2026-11-27 18:00:00+00`, the form Vault substitutes for `{{expiration}}`.
pub fn pg_timestamp(t: SystemTime) -> String {
    let rfc = humantime::format_rfc3339_seconds(t).to_string();
    rfc.replacen('T', " ", 1).replace('Z', "+00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers_and_literals() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn renders_vault_templates() {
        let vars = Vars { name: "lg_x", password: "SCRAM-SHA-256$1:c2FsdA==$a:b", expiration: "2026-01-01 00:00:00+00" };
        let sql = vars.render(&default_creation(&["app_readonly".into()]));
        assert_eq!(
            sql,
            "CREATE ROLE \"lg_x\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$1:c2FsdA==$a:b' VALID UNTIL '2026-01-01 00:00:00+00' IN ROLE \"app_readonly\";\nGRANT \"lg_x\" TO CURRENT_USER"
        );
        assert_eq!(vars.render("GRANT x TO \"{{username}}\""), "GRANT x TO \"lg_x\"");
    }

    #[test]
    fn formats_expiration_like_vault() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(pg_timestamp(t), "2023-11-14 22:13:20+00");
    }
}
