//! Granting: admission (shutdown, the role's `max_leases`, the database's mint slots), joining
//! an identity's current lease, minting a new one — journaled before its user is created — and
//! undoing a mint that failed (forgotten when surely nothing was created, revoked otherwise).

use super::deadlines::Timer;
use super::{EndReason, Lease, LeaseError, LeaseManager, LeaseState, NewLease, SessionGuard};
use crate::auth::Identity;
use crate::config::{RoleConfig, Scope};
use crate::name;
use crate::provision::{ProvisionError, Provisioner};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;

/// How long after a mint with an unknown outcome its rollback waits: longer than the admin
/// connections' `statement_timeout` (30 s), so a CREATE still running on the server has ended
/// (committed or not) before leasegate decides the user does not exist.
const UNKNOWN_OUTCOME_SETTLE: std::time::Duration = std::time::Duration::from_secs(35);

/// How long a login waits for another login of the same identity that is minting, when the
/// database is not configured (cannot happen after validation).
const DEFAULT_IDENTITY_WAIT: Duration = Duration::from_secs(5);

/// What admission hands the mint: where to create the user, the slot held while doing so, and
/// the lease (journaled next).
struct Admitted {
    provisioner: Arc<dyn Provisioner>,
    _slot: OwnedSemaphorePermit,
    lease: Arc<Lease>,
}

impl LeaseManager {
    /// A session on a lease for `identity`: the identity's current lease when its role has
    /// `scope = "identity"`, otherwise a freshly minted one.
    pub async fn grant(&self, identity: &Identity, origin: Option<crate::auth::Origin>) -> Result<SessionGuard, LeaseError> {
        if !self.is_granting() {
            return Err(LeaseError::ShuttingDown);
        }
        let role = self.role(&identity.role).ok_or_else(|| LeaseError::UnknownRole(identity.role.clone()))?;
        if role.scope == Scope::Connection {
            return self.mint(identity, role, origin, false, None).await;
        }
        // One mint per identity at a time, so concurrent first connections share one user;
        // bounded, so a stalled mint turns the others away instead of queueing them forever.
        let wait = self.inner.config.database(&role.database).map_or(DEFAULT_IDENTITY_WAIT, |d| d.connect_timeout);
        let lock = self.inner.identity_locks.entry(identity.clone()).or_default().clone();
        let _held = tokio::time::timeout(wait, lock.lock())
            .await
            .map_err(|_| LeaseError::TooMany("another login of this client is still waiting for its user"))?;
        if let Some(guard) = self.join_current(identity) {
            return Ok(guard);
        }
        self.mint(identity, role, origin, true, None).await
    }

    /// A new lease for direct use (admin API credentials): never shared with another caller,
    /// no session attached, ends at its expiry or on revoke.
    pub async fn grant_detached(&self, role: &str, client: &str, origin: Option<crate::auth::Origin>) -> Result<Arc<Lease>, LeaseError> {
        if !self.is_granting() {
            return Err(LeaseError::ShuttingDown);
        }
        let role = self.role(role).ok_or_else(|| LeaseError::UnknownRole(role.to_string()))?;
        let identity = Identity { client: client.to_string(), role: role.name.clone() };
        Ok(self.mint(&identity, role, origin, false, None).await?.detach())
    }

    /// A lease for a remote sidecar (this instance is its issuer): like `grant_detached`, with
    /// the user name and password the sidecar chose (it connects upstream with them). The
    /// caller has checked the name (prefix, characters, length).
    pub async fn grant_named(
        &self,
        role: &str,
        client: &str,
        user: String,
        password: crate::secret::Secret,
        origin: Option<crate::auth::Origin>,
    ) -> Result<Arc<Lease>, LeaseError> {
        if !self.is_granting() {
            return Err(LeaseError::ShuttingDown);
        }
        let role = self.role(role).ok_or_else(|| LeaseError::UnknownRole(role.to_string()))?;
        let identity = Identity { client: client.to_string(), role: role.name.clone() };
        Ok(self.mint(&identity, role, origin, false, Some((user, password))).await?.detach())
    }

    /// Joins the identity's current lease if it takes sessions.
    fn join_current(&self, identity: &Identity) -> Option<SessionGuard> {
        let lease = self.inner.current.get(identity).map(|l| l.value().clone())?;
        let before = lease.try_join()?;
        self.inner.timers.cancel(&Timer::IdleEnd.key(&lease));
        if before == 0 {
            // An idle lease skips its renewals; renew now that it has a session again.
            self.spawn_renewal(lease.clone());
        }
        Some(SessionGuard::new(lease, self.clone()))
    }

    /// Mints a lease for `identity` (`share`: it becomes the identity's current lease; `named`:
    /// the user name and password to use instead of fresh ones).
    async fn mint(
        &self,
        identity: &Identity,
        role: &RoleConfig,
        origin: Option<crate::auth::Origin>,
        share: bool,
        named: Option<(String, crate::secret::Secret)>,
    ) -> Result<SessionGuard, LeaseError> {
        // The proof token is passed on to the mint, never kept with the lease.
        let mut origin = origin;
        let token = origin.as_mut().and_then(|o| o.token.take());
        let Admitted { provisioner, _slot, lease } = self.admit(identity, role, origin, named).await?;
        self.record_intent(&lease, role).await?;
        let who = crate::provision::MintFor { client: &lease.identity.client, token: token.as_ref() };
        let started = std::time::Instant::now();
        if let Err(source) = provisioner.mint(role, &lease.user, &lease.password, lease.expires_at(), self.journal().instance(), who).await
        {
            tracing::error!(lease = %lease.id, user = %lease.user, role = %role.name, error = %source, "mint failed");
            // A refused or never-sent atomic batch created nothing; a lost connection, or a
            // server whose DDL commits statement by statement, leaves the outcome unknown, so
            // that user is revoked until surely gone.
            let lost = matches!(source, ProvisionError::Connect { .. });
            let unknown = lost || !provisioner.mint_is_atomic();
            if lost {
                // The server may still be running the CREATE (it timed out or the connection
                // dropped on our side): a rollback now could run before it commits and leave a
                // user nobody knows. Roll back once the server has surely finished, in the
                // background; the client gets its error now, the intent stays journaled.
                let (manager, lease, role, why) = (self.clone(), lease.clone(), role.clone(), source.to_string());
                self.inner.tasks.spawn(async move {
                    tokio::time::sleep(UNKNOWN_OUTCOME_SETTLE).await;
                    manager.abandon(&lease, &role, provisioner.as_ref(), &why, true).await;
                });
            } else {
                self.abandon(&lease, role, provisioner.as_ref(), &source.to_string(), unknown).await;
            }
            return Err(LeaseError::Mint { source });
        }
        let revoke_pending = lease.minted();
        if !self.activate(&lease, role, share, started).await {
            // This instance was declared dead while the user was being created: the instance
            // that took the lease over may have looked before the user existed, so drop it here.
            self.drop_unowned(&lease, role, provisioner.as_ref()).await;
            return Err(LeaseError::Journal(super::JournalError::NotOwner));
        }
        if revoke_pending {
            // Revocation (shutdown, the API) was asked for while the user was being created.
            let reason = if self.is_granting() { EndReason::Revoked } else { EndReason::Shutdown };
            self.end(&lease, reason);
            return Err(LeaseError::ShuttingDown);
        }
        Ok(SessionGuard::new(lease, self.clone()))
    }

    /// A mint slot, the server's name limit and a unit of `max_leases`: the new lease.
    async fn admit(
        &self,
        identity: &Identity,
        role: &RoleConfig,
        origin: Option<crate::auth::Origin>,
        named: Option<(String, crate::secret::Secret)>,
    ) -> Result<Admitted, LeaseError> {
        let unknown = || LeaseError::UnknownRole(identity.role.clone());
        let db = self.inner.config.database(&role.database).ok_or_else(unknown)?;
        let provisioner = self.provisioner(&role.database).ok_or_else(unknown)?;
        let slots = self.inner.mint_slots.get(&role.database).cloned().ok_or_else(unknown)?;
        let slot = match tokio::time::timeout(db.connect_timeout, slots.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(LeaseError::ShuttingDown),
            Err(_) => return Err(LeaseError::TooMany("no mint slot freed in time (max_concurrent_mints)")),
        };
        let max_user_len = provisioner.max_user_len().await.map_err(|source| LeaseError::Mint { source })?;
        if !self.take_count(role) {
            return Err(LeaseError::TooMany("the role's max_leases is reached"));
        }
        let (user, password) =
            named.unwrap_or_else(|| (name::user_name(&db.name_prefix, &identity.client, &identity.role, max_user_len), name::password()));
        let lease = Lease::minting(NewLease {
            id: name::lease_id(),
            identity: identity.clone(),
            database: role.database.clone(),
            user,
            password,
            origin,
            ttl: role.default_ttl.min(role.max_ttl),
            max_ttl: role.max_ttl,
        });
        Ok(Admitted { provisioner, _slot: slot, lease })
    }

    /// Takes one unit of the role's `max_leases`; false when the role is full.
    fn take_count(&self, role: &RoleConfig) -> bool {
        let Some(count) = self.inner.role_leases.get(&role.name) else { return false };
        if role.max_leases.is_some_and(|max| count.fetch_add(1, Ordering::AcqRel) >= max) {
            count.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if role.max_leases.is_none() {
            count.fetch_add(1, Ordering::AcqRel);
        }
        true
    }

    /// Puts the intent in the store — from here on a crash is recovered — and the lease in the
    /// map, unless shutdown began meanwhile.
    async fn record_intent(&self, lease: &Arc<Lease>, role: &RoleConfig) -> Result<(), LeaseError> {
        if let Err(e) = self.record_minting(lease, role).await {
            let counted = lease.finish();
            self.remove(lease, counted);
            return Err(e.into());
        }
        self.inner.leases.insert(lease.id.clone(), lease.clone());
        if !self.is_granting() {
            // Shutdown began between the first check and the insert: nothing was created yet.
            self.forget(lease, "shutdown before mint").await;
            return Err(LeaseError::ShuttingDown);
        }
        Ok(())
    }

    /// The user exists: journal it, publish it, start its deadlines, count and audit it. False
    /// when the lease is no longer this instance's (let go of while minting, or the shared
    /// store refused the write): nothing is published then.
    async fn activate(&self, lease: &Arc<Lease>, role: &RoleConfig, share: bool, started: std::time::Instant) -> bool {
        if lease.state() == LeaseState::Ended || matches!(self.record_state_checked(lease).await, Err(super::JournalError::NotOwner)) {
            return false;
        }
        if share {
            self.inner.current.insert(lease.identity.clone(), lease.clone());
        }
        self.schedule_expiry(lease, role, tokio::time::Instant::now());
        self.inner.timers.set(Timer::MaxTtl.key(lease), lease.max_deadline);
        self.record_granted(lease, role, started.elapsed());
        true
    }

    /// Drops the user of a lease this instance no longer owns, without journaling (the row is
    /// another instance's), and lets go of the lease.
    async fn drop_unowned(&self, lease: &Arc<Lease>, role: &RoleConfig, provisioner: &dyn Provisioner) {
        tracing::warn!(lease = %lease.id, user = %lease.user, "lease lost to another instance while minting; dropping its user here");
        if let Err(e) = provisioner.rollback(role, &lease.user).await {
            tracing::error!(lease = %lease.id, user = %lease.user, error = %e, "dropping the user of a lost lease failed; the orphan sweep will find it");
        }
        self.relinquish(lease);
    }

    /// A lease whose user surely does not exist: journal its end and drop it.
    async fn forget(&self, lease: &Arc<Lease>, why: &str) {
        let counted = lease.finish();
        self.record_forgotten(lease, why).await;
        self.remove(lease, counted);
    }

    /// A mint that did not complete: roll back; forget the lease, or, when the user may exist
    /// and the rollback failed, revoke it like any lease until it is gone.
    async fn abandon(&self, lease: &Arc<Lease>, role: &RoleConfig, provisioner: &dyn Provisioner, why: &str, may_exist: bool) {
        let rolled_back = provisioner.rollback(role, &lease.user).await;
        if let Err(e) = &rolled_back {
            tracing::warn!(lease = %lease.id, user = %lease.user, error = %e, "rollback after a failed mint failed");
        }
        match rolled_back {
            Err(_) if may_exist => {
                lease.mint_uncertain();
                self.spawn_revocation(lease, EndReason::Revoked);
            }
            _ => self.forget(lease, why).await,
        }
    }
}
