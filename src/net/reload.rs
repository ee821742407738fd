//! The client leg's TLS, reloaded when its files change: certificates that rotate (SPIFFE
//! SVIDs hourly, cert-manager before expiry) and CA bundles that gain or drop a CA take effect
//! without a restart. A connection takes the current [`ServerTls`] when it starts, so sessions
//! already running keep theirs and are never dropped.

use super::tls::{ServerTls, TlsError, server_tls_with};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// How often the files are looked at (their modification time and size).
const POLL: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct ReloadableTls {
    files: Arc<Files>,
    current: Arc<RwLock<Arc<ServerTls>>>,
}

struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    alpn: Vec<Vec<u8>>,
}

/// What a file looked like at a load: a rewrite or an atomic rename (Kubernetes swaps a
/// symlink) changes it.
type Stamp = Vec<Option<(SystemTime, u64)>>;

impl ReloadableTls {
    pub fn load(cert: PathBuf, key: PathBuf, client_ca: Option<PathBuf>, alpn: &[&[u8]]) -> Result<ReloadableTls, TlsError> {
        let files = Files { cert, key, client_ca, alpn: alpn.iter().map(|p| p.to_vec()).collect() };
        let first = files.build()?;
        Ok(ReloadableTls { files: Arc::new(files), current: Arc::new(RwLock::new(Arc::new(first))) })
    }

    /// The TLS a new connection is served with.
    pub fn current(&self) -> Arc<ServerTls> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Polls the files until `stop`; a change that loads replaces the current TLS, one that does
    /// not (a half-written file, a key that does not match) is logged and the old TLS kept.
    pub async fn watch(self, name: String, stop: crate::shutdown::Shutdown) {
        let mut seen = self.files.stamp();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            let now = self.files.stamp();
            if now == seen {
                continue;
            }
            match self.files.build() {
                Ok(tls) => {
                    *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tls);
                    tracing::info!(database = %name, "client TLS files changed: reloaded");
                    seen = now;
                }
                Err(e) => {
                    tracing::warn!(database = %name, error = %e, "client TLS files changed but do not load; keeping the previous ones")
                }
            }
        }
    }
}

impl Files {
    fn build(&self) -> Result<ServerTls, TlsError> {
        let alpn: Vec<&[u8]> = self.alpn.iter().map(Vec::as_slice).collect();
        server_tls_with(&self.cert, &self.key, self.client_ca.as_deref(), &alpn)
    }

    fn stamp(&self) -> Stamp {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
            .collect()
    }
}
