//! Start-up: revoke what a previous run left behind, then sweep orphans.
//!
//! Every lease the journal shows not ended had its connections die with the old process, so it
//! is revoked (reason `recovered`) through the normal revocation path, retrying until it
//! succeeds. Then, per `[[database]]` with `sweep_orphans`, users whose names carry its prefix,
//! that no lease knows and that carry this instance's mark (the journal's `instance`, set on
//! each user at its mint) — or, with a shared store, the mark of any instance registered in it,
//! whose open leases the store lists too — are dropped (reason `orphan`), or only logged in
//! dry-run mode. A user another instance minted, or one without a mark, is never touched.

use super::store::JournalError;
use super::{EndReason, Lease, LeaseManager};
use crate::auth::Identity;
use crate::config::{DatabaseConfig, SweepOrphans};
use crate::name;
use crate::provision::Found;
use std::collections::HashSet;
use std::time::Duration;

/// Revokes every unfinished lease of the journal; returns their ids.
pub async fn recover(manager: &LeaseManager) -> Result<Vec<String>, JournalError> {
    let rows = manager.journal().unfinished().await?;
    let ids = rows.iter().map(|r| r.id.clone()).collect();
    for row in rows {
        tracing::info!(lease = %row.id, user = %row.db_user, state = %row.state, "revoking a lease left by a previous run");
        let lease = Lease::unfinished(row.id, Identity { client: row.client, role: row.role }, row.database, row.db_user);
        for db in &row.used_databases {
            lease.note_database(db);
        }
        manager.adopt_for_revocation(lease, EndReason::Recovered);
    }
    Ok(ids)
}

/// Finds (and, unless dry-run, drops) users with the database's prefix that no lease knows.
/// Retries listing with backoff while the server is unreachable.
pub async fn sweep_orphans(manager: LeaseManager, db: DatabaseConfig) {
    if db.sweep_orphans == SweepOrphans::Off {
        return;
    }
    let Some(provisioner) = manager.provisioner(&db.name) else { return };
    // Only users this instance can prove it minted are ever dropped: another leasegate with the
    // same prefix and its own journal must never lose its users to this sweep.
    if !provisioner.marks_users() {
        tracing::warn!(
            database = %db.name,
            "orphan sweep skipped: this server's users carry no instance mark, so leasegate cannot prove which are its own"
        );
        return;
    }
    let ours = manager.journal().instance().to_string();
    // With a shared store, every instance registered in it: their open leases are all known.
    let family = loop {
        match manager.journal().known_instances().await {
            Ok(ids) => break ids,
            Err(e) => {
                tracing::warn!(database = %db.name, error = %e, "orphan sweep cannot read the instances; will retry");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    let mut delay = Duration::from_secs(1);
    let users = loop {
        match provisioner.users_with_prefix(&db.name_prefix).await {
            Ok(users) => break users,
            Err(e) => {
                tracing::warn!(database = %db.name, error = %e, retry_in = ?delay, "orphan sweep cannot list users; will retry");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(300));
            }
        }
    };
    // Read what is known only after listing: a lease minted meanwhile is journaled before its
    // user exists, so it is in this set if its user was in the listing.
    let known = match known_users(&manager).await {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(database = %db.name, error = %e, "orphan sweep cannot read the journal; skipped");
            return;
        }
    };
    // Never a role the config names for another purpose, even one that carries the prefix.
    let protected = protected_roles(&manager, &db);
    let unknown = users.into_iter().filter(|f| !known.contains(&f.user) && !protected.contains(&f.user));
    let (mine, others): (Vec<Found>, Vec<Found>) = unknown.partition(|f| f.instance.as_ref().is_some_and(|i| family.contains(i)));
    if !others.is_empty() {
        let unmarked = others.iter().filter(|f| f.instance.is_none()).count();
        tracing::info!(
            database = %db.name,
            instance = %ours,
            users = others.len(),
            unmarked,
            "users with the prefix that another instance minted (or that carry no mark) are left alone"
        );
    }
    let found = mine.len();
    for Found { user, role, .. } in mine {
        // Revoked as the leases of the role it was minted for (REASSIGN OWNED to its group, its
        // revocation statements); a role no longer configured gets the default statements.
        let role = role.unwrap_or_default();
        if db.sweep_orphans == SweepOrphans::DryRun {
            tracing::warn!(database = %db.name, user = %user, "orphan user found (dry-run: not dropped)");
            continue;
        }
        let id = name::lease_id();
        if let Err(e) = manager.journal().orphan_intent(&id, &db.name, &role, &user).await {
            tracing::error!(database = %db.name, user = %user, error = %e, "journal write failed; orphan left alone");
            continue;
        }
        tracing::info!(database = %db.name, user = %user, lease = %id, "dropping orphan user");
        let lease = Lease::unfinished(id, Identity { client: String::new(), role }, db.name.clone(), user);
        manager.adopt_for_revocation(lease, EndReason::Orphan);
    }
    tracing::info!(database = %db.name, instance = %ours, orphans = found, spared = others.len(), "orphan sweep done");
}

/// The admin user and every `member_of` group of the database's roles.
fn protected_roles(manager: &LeaseManager, db: &DatabaseConfig) -> HashSet<String> {
    let mut protected: HashSet<String> = manager.roles_of(&db.name).into_iter().flat_map(|r| r.member_of).collect();
    protected.insert(db.admin_user.clone());
    protected
}

async fn known_users(manager: &LeaseManager) -> Result<HashSet<String>, JournalError> {
    let mut known = manager.journal().open_users().await?;
    known.extend(manager.list().into_iter().map(|l| l.user.clone()));
    Ok(known)
}
