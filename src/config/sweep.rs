//! Whether a config can run its orphan sweep safely beside other instances: what
//! `check-config` warns about. The sweep drops only users marked with an instance it knows
//! (its own, or any registered in a shared store), so the hazard is two running processes
//! with one instance id — which a config copied to several replicas makes when it names one.

use super::{Config, DbKind, JournalStore, SweepOrphans};

impl Config {
    /// `(path, warning)` for each way this config could sweep (or fence) another instance.
    pub fn sweep_hazards(&self) -> Vec<(String, String)> {
        let sweeps = self.databases.iter().any(|d| d.kind == DbKind::Postgres && d.sweep_orphans != SweepOrphans::Off);
        let Some(instance) = self.journal_instance() else { return Vec::new() };
        match self.journal_store() {
            JournalStore::Sqlite(_) if sweeps => vec![(
                "journal.instance".into(),
                format!(
                    "{instance:?} must be this process's alone: two processes sharing this config (replicas) would both \
                     mark users as {instance:?} and each one's sweep would drop the other's; leave it unset (an id is \
                     generated per journal) or share lease state with [journal] url_file"
                ),
            )],
            JournalStore::Postgres(_) => vec![(
                "journal.instance".into(),
                format!(
                    "{instance:?} must be this process's alone: a second process registering with it fences the first \
                     (its sessions close); leave it unset in a config shared by replicas (an id is generated per start)"
                ),
            )],
            JournalStore::Sqlite(_) => Vec::new(),
        }
    }
}
