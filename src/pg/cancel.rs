//! CancelRequest handling: leasegate relays a cancel only for a session it is proxying.
//!
//! Clients got the server's own BackendKeyData, so their CancelRequest carries the server's
//! pid and secret. A request is forwarded upstream only when that pid belongs to a live session
//! here and the secret matches (compared in constant time); anything else is dropped silently,
//! as the server itself does, so leasegate is not an open cancel relay.

use super::backend::Target;
use super::message::{CancelKey, encode_cancel_request};
use bytes::BytesMut;
use dashmap::DashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;

/// Live sessions of one database, by server process id.
#[derive(Default, Clone)]
pub struct CancelRegistry {
    sessions: Arc<DashMap<u32, Vec<u8>>>,
}

/// Removes the session's key when the session ends.
pub struct Registration {
    registry: CancelRegistry,
    key: CancelKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Only our own entry: a new session may already have the same (reused) pid.
        self.registry.sessions.remove_if(&self.key.pid, |_, secret| *secret == self.key.secret);
    }
}

impl CancelRegistry {
    pub fn register(&self, key: &CancelKey) -> Registration {
        self.sessions.insert(key.pid, key.secret.clone());
        Registration { registry: self.clone(), key: key.clone() }
    }

    /// True when `key` is the key of a live session.
    pub fn is_live(&self, key: &CancelKey) -> bool {
        match self.sessions.get(&key.pid) {
            Some(secret) => secret.len() == key.secret.len() && bool::from(secret.ct_eq(&key.secret)),
            None => false,
        }
    }

    /// Forwards a valid cancel to the server; returns whether it was forwarded.
    pub async fn forward(&self, key: &CancelKey, target: &Target) -> bool {
        if !self.is_live(key) {
            tracing::debug!(pid = key.pid, "cancel request for no live session ignored");
            return false;
        }
        let mut packet = BytesMut::new();
        encode_cancel_request(key, &mut packet);
        match target.open().await {
            Ok(mut stream) => {
                let sent = stream.write_all(&packet).await.and(stream.flush().await);
                // The server closes after reading it; wait for that so the cancel is delivered.
                let mut sink = [0u8; 1];
                let _ = tokio::time::timeout(target.connect_timeout, tokio::io::AsyncReadExt::read(&mut stream, &mut sink)).await;
                if let Err(e) = sent {
                    tracing::warn!(pid = key.pid, error = %e, "forwarding a cancel request failed");
                    return false;
                }
                true
            }
            Err(e) => {
                tracing::warn!(pid = key.pid, error = %e, "forwarding a cancel request failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_of_a_live_session_matches() {
        let reg = CancelRegistry::default();
        let key = CancelKey { pid: 7, secret: vec![1, 2, 3, 4] };
        let guard = reg.register(&key);
        assert!(reg.is_live(&key));
        assert!(!reg.is_live(&CancelKey { pid: 7, secret: vec![1, 2, 3, 5] }));
        assert!(!reg.is_live(&CancelKey { pid: 7, secret: vec![1, 2, 3] }));
        assert!(!reg.is_live(&CancelKey { pid: 8, secret: vec![1, 2, 3, 4] }));
        drop(guard);
        assert!(!reg.is_live(&key));
        // A stale registration for a reused pid does not remove the new session's key.
        let old = reg.register(&key);
        let new_key = CancelKey { pid: 7, secret: vec![9, 9, 9, 9] };
        let _new = reg.register(&new_key);
        drop(old);
        assert!(reg.is_live(&new_key));
    }
}
