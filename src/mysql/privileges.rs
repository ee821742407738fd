//! What the MySQL/MariaDB admin must hold (`leasegate doctor`, and before any mint or
//! revocation relies on it): CREATE USER (create, lock and drop minted users), PROCESS (see
//! their sessions: without it the processlist shows none and a revoked user's sessions would
//! live on), CONNECTION ADMIN or SUPER (kill them), SELECT on mysql.user (find every host a
//! user has an account on, and the name-length limit), each `member_of` role WITH ADMIN OPTION,
//! and on MySQL ≥ 8.0.22 the privilege that lets DROP USER go through while the user is the
//! DEFINER of a view or routine it created (otherwise the drop fails for ever).

use super::provision::{MyProvisioner, account_on, quote_ident};
use crate::config::RoleConfig;
use crate::provision::{Privilege, ProvisionError, groups_of};

/// The admin's own account, `user@host`, split at the last `@` (a user name may hold one).
const WHO: &str = "SELECT CURRENT_USER()";
/// ER_TABLEACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR, ER_ACCESS_DENIED_ERROR.
const DENIED: [&str; 3] = ["1142", "1044", "1045"];

impl MyProvisioner {
    /// The admin's global privileges as `information_schema.USER_PRIVILEGES` names them
    /// (MariaDB `CONNECTION ADMIN`, MySQL `CONNECTION_ADMIN`), and its account quoted.
    async fn global_privileges(&self) -> Result<(Vec<String>, String), ProvisionError> {
        let me: String = self.bounded("reading the admin account", sqlx::query_scalar(WHO).fetch_one(&self.pool)).await?;
        let (user, host) = me.rsplit_once('@').unwrap_or((me.as_str(), "%"));
        let grantee = account_on(user, host);
        let q = sqlx::query_scalar("SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?")
            .bind(grantee.clone())
            .fetch_all(&self.pool);
        Ok((self.bounded("reading the admin's privileges", q).await?, grantee))
    }

    /// Errors unless the admin can see and kill other users' sessions: revocation must never
    /// take an empty processlist for "no sessions" when it is only blind.
    pub(super) async fn require_session_privileges(&self) -> Result<(), ProvisionError> {
        if self.sessions_visible.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let (held, me) = self.global_privileges().await?;
        let has = |p: &str| held.iter().any(|h| h == p);
        let missing: Vec<&str> = [("PROCESS", has("PROCESS")), ("CONNECTION ADMIN or SUPER", can_kill(&held))]
            .into_iter()
            .filter_map(|(name, ok)| (!ok).then_some(name))
            .collect();
        if missing.is_empty() {
            self.sessions_visible.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        Err(ProvisionError::Statement {
            step: "checking the admin's privileges",
            code: "1227".into(),
            message: format!(
                "{me} lacks {}: a revoked user's sessions could not be found or ended (run `leasegate doctor`)",
                missing.join(" and ")
            ),
        })
    }

    pub(super) async fn read_privileges(&self, roles: &[RoleConfig]) -> Result<Vec<Privilege>, ProvisionError> {
        let (held, me) = self.global_privileges().await?;
        let mariadb = self.is_mariadb().await?;
        let version: String =
            self.bounded("reading the server version", sqlx::query_scalar("SELECT VERSION()").fetch_one(&self.pool)).await?;
        let has = |p: &str| held.iter().any(|h| h == p);
        let connection_admin = if mariadb { "CONNECTION ADMIN" } else { "CONNECTION_ADMIN" };
        let mut found = vec![
            global("CREATE USER", "creating, locking and dropping minted users", has("CREATE USER"), &me),
            global("PROCESS", "finding a revoked user's sessions", has("PROCESS"), &me),
            Privilege { held: can_kill(&held), ..global(connection_admin, "ending a revoked user's sessions", false, &me) },
        ];
        let probe = self.bounded("reading mysql.user", sqlx::query("SELECT 1 FROM mysql.user LIMIT 0").fetch_all(&self.pool)).await;
        let readable = match probe {
            Ok(_) => true,
            Err(ProvisionError::Statement { code, .. }) if DENIED.contains(&code.as_str()) => false,
            Err(e) => return Err(e),
        };
        found.push(Privilege {
            name: "SELECT on mysql.user".into(),
            needed_for: "finding every host a user has an account on",
            held: readable,
            grant: format!("GRANT SELECT ON mysql.user TO {me};"),
        });
        for group in groups_of(roles) {
            let q = sqlx::query_scalar::<_, String>("SELECT IS_GRANTABLE FROM information_schema.APPLICABLE_ROLES WHERE ROLE_NAME = ?")
                .bind(group)
                .fetch_all(&self.pool);
            let grantable = self.bounded("reading the admin's roles", q).await?.iter().any(|g| g == "YES");
            found.push(Privilege {
                name: format!("{group} WITH ADMIN OPTION"),
                needed_for: "granting it to minted users",
                held: grantable,
                grant: format!("GRANT {} TO {me} WITH ADMIN OPTION;", quote_ident(group)),
            });
        }
        if let Some((accepted, grant)) = definer_privilege(mariadb, &version) {
            found.push(Privilege {
                held: accepted.iter().any(|p| has(p)),
                ..global(grant, "dropping a user that is the DEFINER of a view or routine it made", false, &me)
            });
        }
        Ok(found)
    }
}

fn global(name: &str, needed_for: &'static str, held: bool, me: &str) -> Privilege {
    Privilege { name: name.into(), needed_for, held, grant: format!("GRANT {name} ON *.* TO {me};") }
}

/// KILL of another user's thread: CONNECTION ADMIN (MariaDB ≥ 10.5.2), CONNECTION_ADMIN
/// (MySQL 8), or SUPER on either.
fn can_kill(held: &[String]) -> bool {
    held.iter().any(|p| matches!(p.as_str(), "CONNECTION ADMIN" | "CONNECTION_ADMIN" | "SUPER"))
}

/// MySQL ≥ 8.0.22 refuses DROP USER for a DEFINER of stored objects unless the dropper holds
/// SET_USER_ID (8.0.22–8.1) or SET_ANY_DEFINER / ALLOW_NONEXISTENT_DEFINER (8.2+, which
/// replace it): (the privileges that do, the one to grant). MariaDB drops such users.
fn definer_privilege(mariadb: bool, version: &str) -> Option<(&'static [&'static str], &'static str)> {
    if mariadb {
        return None;
    }
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse::<u32>().unwrap_or(0));
    let v = (parts.next()?, parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    const BOTH: &[&str] = &["SET_USER_ID", "SET_ANY_DEFINER", "ALLOW_NONEXISTENT_DEFINER"];
    match v {
        v if v < (8, 0, 22) => None,
        v if v < (8, 2, 0) => Some((BOTH, "SET_USER_ID")),
        _ => Some((BOTH, "ALLOW_NONEXISTENT_DEFINER")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definer_privilege_follows_the_server_version() {
        assert_eq!(definer_privilege(true, "10.11.6-MariaDB-0+deb12u1"), None);
        assert_eq!(definer_privilege(false, "8.0.21"), None);
        assert_eq!(definer_privilege(false, "8.0.22").map(|d| d.1), Some("SET_USER_ID"));
        assert_eq!(definer_privilege(false, "8.0.36-log").map(|d| d.1), Some("SET_USER_ID"));
        assert_eq!(definer_privilege(false, "8.4.3").map(|d| d.1), Some("ALLOW_NONEXISTENT_DEFINER"));
        assert_eq!(definer_privilege(false, "9.1.0").map(|d| d.1), Some("ALLOW_NONEXISTENT_DEFINER"));
        assert!(can_kill(&["SUPER".into()]) && can_kill(&["CONNECTION ADMIN".into()]) && !can_kill(&["PROCESS".into()]));
    }
}
