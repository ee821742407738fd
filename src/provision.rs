//! What the lease engine asks of a database server — create a user, move its expiry, end its
//! sessions, drop it — whatever the server's kind, as the [`Provisioner`] trait. The SQL and
//! every dialect question (which error means "no such user", whether a failed creation can
//! leave a user behind, how long a name may be) are answered by each implementation
//! (`pg/provision.rs`, `mysql/provision.rs`), so this module knows no protocol and the lease
//! engine is written once. Also the readiness check over every database's admin connection.

use crate::config::RoleConfig;
use crate::secret::Secret;
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// No admin connection could be had: the statement was never sent.
    #[error("admin connection to {addr} failed: {message}")]
    Unreachable { addr: String, message: String },
    /// The admin connection was lost or stalled while a statement ran: its outcome is unknown.
    #[error("admin connection to {addr} failed: {message}")]
    Connect { addr: String, message: String },
    /// The server refused a statement (missing privilege, template error, …). `code` is the
    /// SQLSTATE (Postgres) or the error number (MySQL).
    #[error("{step} failed: {message} ({code})")]
    Statement { step: &'static str, code: String, message: String },
    /// The server said the user does not exist (Postgres 42704, MySQL 1396) where that is
    /// what revocation wants: the provisioner classifies its own errors into this variant.
    #[error("{step} failed: {message} ({code})")]
    UserGone { step: &'static str, code: String, message: String },
    /// Sessions of the user were still alive after they were told to terminate.
    #[error("sessions of the user did not end within {0:?}")]
    SessionsLinger(Duration),
}

impl ProvisionError {
    /// True when the failure means the user is already gone: revocation is complete.
    pub fn user_is_gone(&self) -> bool {
        matches!(self, ProvisionError::UserGone { .. })
    }
}

/// What every provisioner method returns: boxed so the trait stays dyn-compatible.
pub type ProvisionFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ProvisionError>> + Send + 'a>>;

/// One database server's admin side, as the lease engine uses it. Held as `Arc<dyn Provisioner>`.
pub trait Provisioner: Send + Sync {
    /// Opens an admin connection and runs a trivial query: the health check.
    fn check(&self) -> ProvisionFuture<'_, ()>;

    /// The longest user name the server accepts.
    fn max_user_len(&self) -> ProvisionFuture<'_, usize>;

    /// False when a failed creation may have left the user behind (the statements do not run
    /// as one transaction), so the engine must revoke it rather than forget it.
    fn mint_is_atomic(&self) -> bool;

    /// Creates `user` with the role's creation statements (or the server's safe default),
    /// marked as minted by `instance` where the server has a place for it ([`Provisioner::marks_users`]),
    /// for `who` (an issuer checks that the asking sidecar may act for that client).
    fn mint<'a>(
        &'a self,
        role: &'a RoleConfig,
        user: &'a str,
        password: &'a Secret,
        valid_until: SystemTime,
        instance: &'a str,
        who: MintFor<'a>,
    ) -> ProvisionFuture<'a, ()>;

    /// True when minted users carry their instance's mark (Postgres: a role comment), so the
    /// orphan sweep can prove which users are its own. Without marks it sweeps nothing.
    fn marks_users(&self) -> bool;

    /// Moves the user's expiry (where the server has one) or runs the role's renew statements.
    fn renew<'a>(&'a self, role: &'a RoleConfig, user: &'a str, valid_until: SystemTime) -> ProvisionFuture<'a, ()>;

    /// Every user whose name starts with `prefix`, with the instance marked on it (the orphan sweep).
    fn users_with_prefix<'a>(&'a self, prefix: &'a str) -> ProvisionFuture<'a, Vec<Found>>;

    /// Undoes a creation that failed part-way.
    fn rollback<'a>(&'a self, role: &'a RoleConfig, user: &'a str) -> ProvisionFuture<'a, ()>;

    /// First step of revocation: no new logins, every server session of `user` told to end.
    /// A user that does not exist is [`ProvisionError::UserGone`].
    fn stop_sessions<'a>(&'a self, user: &'a str) -> ProvisionFuture<'a, ()>;

    /// Waits until the server has no session of `user` left, at most `limit`.
    fn wait_sessions_gone<'a>(&'a self, user: &'a str, limit: Duration) -> ProvisionFuture<'a, ()>;

    /// Last step of revocation: clean up what `user` owns in the databases it `used`, and drop
    /// it. A user that no longer exists counts as dropped.
    fn drop_user<'a>(&'a self, role: &'a RoleConfig, user: &'a str, used: &'a BTreeSet<String>) -> ProvisionFuture<'a, ()>;

    /// Closes every admin connection (shutdown).
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// Each privilege the admin needs to serve `roles` (this database's), held or not, with the
    /// statement that grants it: what `leasegate doctor` prints.
    fn privileges<'a>(&'a self, roles: &'a [RoleConfig]) -> ProvisionFuture<'a, Vec<Privilege>>;
}

/// Whom a user is minted for: the client, and the token it proved itself with when it used
/// one (a sidecar forwards it, so its issuer checks the application too).
#[derive(Clone, Copy)]
pub struct MintFor<'a> {
    pub client: &'a str,
    pub token: Option<&'a Secret>,
}

/// A user the orphan sweep found: its name, and the instance and role its mark names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found {
    pub user: String,
    pub instance: Option<String>,
    /// The `[[role]]` it was minted for: an orphan is revoked as that role's leases are.
    pub role: Option<String>,
}

/// The mark a minted user carries (a Postgres role comment): who minted it, for which role.
pub fn mark(instance: &str, role: &str) -> String {
    format!("{MARK_PREFIX}{instance}{FOR_ROLE}{role}")
}

/// `text` read as a mark: the user's name with what the mark says (nothing when it is none).
pub fn found(user: String, text: Option<&str>) -> Found {
    let Some(rest) = text.and_then(|t| t.strip_prefix(MARK_PREFIX)) else { return Found { user, ..Found::default() } };
    let (instance, role) = match rest.split_once(FOR_ROLE) {
        Some((instance, role)) => (instance, Some(role.to_string())),
        None => (rest, None),
    };
    Found { user, instance: Some(instance.to_string()), role }
}

const MARK_PREFIX: &str = "minted by leasegate instance ";
const FOR_ROLE: &str = " for role ";

/// One privilege the admin needs, as the server names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privilege {
    /// e.g. `CREATEROLE`, `PROCESS`, `ADMIN OPTION on app_group`.
    pub name: String,
    /// What leasegate does with it.
    pub needed_for: &'static str,
    pub held: bool,
    /// The statement (for a superuser to run) that grants it.
    pub grant: String,
}

/// The distinct `member_of` groups of `roles`, in first-seen order.
pub fn groups_of(roles: &[RoleConfig]) -> Vec<&str> {
    let mut groups: Vec<&str> = Vec::new();
    for group in roles.iter().flat_map(|r| r.member_of.iter()) {
        if !groups.contains(&group.as_str()) {
            groups.push(group);
        }
    }
    groups
}

/// A `[[database]]`'s name and its provisioner.
pub type Named = (String, Arc<dyn Provisioner>);

/// Every `[[database]]`'s provisioner, by database name.
pub type Provisioners = HashMap<String, Arc<dyn Provisioner>>;

/// How long one database's admin connection may take to answer the readiness check.
const READY_CHECK_LIMIT: Duration = Duration::from_secs(2);

/// True when every database's admin connection answers (for `/readyz`).
pub async fn admin_connections_ok(provisioners: &Provisioners) -> bool {
    for (name, p) in provisioners {
        match tokio::time::timeout(READY_CHECK_LIMIT, p.check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(database = %name, error = %e, "not ready: admin connection failed");
                return false;
            }
            Err(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_as_its_instance_and_role() {
        let f = found("lg_x".into(), Some(&mark("pod-a", "app ro")));
        assert_eq!((f.instance.as_deref(), f.role.as_deref()), (Some("pod-a"), Some("app ro")));
        assert_eq!(found("lg_y".into(), Some("a comment someone wrote")), Found { user: "lg_y".into(), ..Found::default() });
        assert_eq!(found("lg_z".into(), None).instance, None);
    }
}
