//! What the Postgres admin must hold, read from the catalogue (`leasegate doctor`):
//! `CREATEROLE` (create, alter and drop minted roles), `pg_signal_backend` (end their sessions
//! whatever role owns them), each `member_of` group with ADMIN OPTION (grant it to minted roles)
//! and its privileges (REASSIGN OWNED to it), and CONNECT on every database a minted role can
//! own something in (revocation cleans each). Superusers hold all of it.

use super::provision::{PgProvisioner, quote_ident};
use crate::config::RoleConfig;
use crate::provision::{Privilege, ProvisionError, groups_of};

impl PgProvisioner {
    pub(super) async fn read_privileges(&self, roles: &[RoleConfig]) -> Result<Vec<Privilege>, ProvisionError> {
        let admin = self.admin();
        let me = quote_ident(&self.admin_user);
        let fetch = |step: &'static str, e: sqlx::Error| self.error(step, e, None);
        let (createrole, signal): (bool, bool) = sqlx::query_as(
            "SELECT rolsuper OR rolcreaterole, pg_has_role(current_user, 'pg_signal_backend', 'USAGE') \
             FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&admin)
        .await
        .map_err(|e| fetch("reading the admin's attributes", e))?;
        let mut found = vec![
            Privilege {
                name: "CREATEROLE".into(),
                needed_for: "creating, locking and dropping minted roles",
                held: createrole,
                grant: format!("ALTER ROLE {me} CREATEROLE;"),
            },
            Privilege {
                name: "pg_signal_backend".into(),
                needed_for: "ending a revoked role's sessions",
                held: signal,
                grant: format!("GRANT pg_signal_backend TO {me};"),
            },
        ];
        for group in groups_of(roles) {
            let held: Option<(bool, bool)> = sqlx::query_as(
                "SELECT pg_has_role(current_user, oid, 'MEMBER WITH ADMIN OPTION'), pg_has_role(current_user, oid, 'USAGE') \
                 FROM pg_roles WHERE rolname = $1",
            )
            .bind(group)
            .fetch_optional(&admin)
            .await
            .map_err(|e| fetch("reading group memberships", e))?;
            let g = quote_ident(group);
            found.push(match held {
                None => Privilege {
                    name: format!("group {group} exists"),
                    needed_for: "granting member_of groups to minted roles",
                    held: false,
                    grant: format!("CREATE ROLE {g} NOLOGIN; GRANT {g} TO {me} WITH ADMIN OPTION;"),
                },
                Some((admin_option, usage)) => Privilege {
                    name: format!("{group} WITH ADMIN OPTION"),
                    needed_for: "granting it to minted roles, and reassigning their objects to it",
                    held: admin_option && usage,
                    grant: format!("GRANT {g} TO {me} WITH ADMIN OPTION;"),
                },
            });
        }
        let no_connect: Vec<String> = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datallowconn AND NOT has_database_privilege(current_user, oid, 'CONNECT') ORDER BY 1",
        )
        .fetch_all(&admin)
        .await
        .map_err(|e| fetch("reading database privileges", e))?;
        let needed_for = "cleaning up what a revoked role owns in that database";
        if no_connect.is_empty() {
            found.push(Privilege { name: "CONNECT on every database".into(), needed_for, held: true, grant: String::new() });
        }
        for db in no_connect {
            found.push(Privilege {
                name: format!("CONNECT on database {db}"),
                needed_for,
                held: false,
                grant: format!("GRANT CONNECT ON DATABASE {} TO {me};", quote_ident(&db)),
            });
        }
        Ok(found)
    }
}
