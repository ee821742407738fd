//! CancelRequest handling: leasegate relays a cancel only for a session it is proxying, and
//! only so that it can cancel the statement it was sent for, never the next one.
//!
//! Clients got the server's own BackendKeyData, so their CancelRequest carries the server's
//! pid and secret. A request is forwarded upstream only when that pid belongs to a live session
//! here and the secret matches (compared in constant time); anything else is dropped silently,
//! as the server itself does, so leasegate is not an open cancel relay.
//!
//! Exactness (see `net/hold.rs`): a cancel is forwarded only while its session runs a request
//! the client had sent before the cancel (otherwise the server would ignore it, or, forwarded
//! late, it could hit a later statement). Then the session's next client bytes are held until
//! the postmaster has taken the cancel (it closes the cancel connection after signalling the
//! backend), so the signal reaches the running statement or an idle backend, which ignores it.

use super::backend::{BackendError, Target};
use super::message::{CancelKey, encode_cancel_request};
use crate::net::hold::Activity;
use bytes::BytesMut;
use dashmap::DashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// Live sessions of one database, by server process id.
#[derive(Default, Clone)]
pub struct CancelRegistry {
    sessions: Arc<DashMap<u32, LiveSession>>,
}

struct LiveSession {
    secret: Vec<u8>,
    activity: Arc<Activity>,
}

/// Removes the session's key when the session ends.
pub struct Registration {
    registry: CancelRegistry,
    key: CancelKey,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Only our own entry: a new session may already have the same (reused) pid.
        self.registry.sessions.remove_if(&self.key.pid, |_, live| live.secret == self.key.secret);
    }
}

/// What became of a CancelRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// The server took it.
    Yes,
    /// No live session has that key.
    UnknownKey,
    /// The session had no statement running: there was nothing to cancel.
    Idle,
    /// The server could not be reached.
    Failed,
}

impl CancelRegistry {
    pub fn register(&self, key: &CancelKey, activity: Arc<Activity>) -> Registration {
        self.sessions.insert(key.pid, LiveSession { secret: key.secret.clone(), activity });
        Registration { registry: self.clone(), key: key.clone() }
    }

    /// The session whose key `key` is, if it is live.
    fn session(&self, key: &CancelKey) -> Option<Arc<Activity>> {
        let live = self.sessions.get(&key.pid)?;
        (live.secret.len() == key.secret.len() && bool::from(live.secret.ct_eq(&key.secret))).then(|| live.activity.clone())
    }

    /// Forwards a valid cancel to the server when its session runs a request the client had
    /// sent by `asked` (when the CancelRequest was read), holding the session's next client
    /// bytes until the server has taken it.
    pub async fn forward(&self, key: &CancelKey, asked: Instant, target: &Target) -> Forwarded {
        let Some(activity) = self.session(key) else {
            tracing::debug!(pid = key.pid, "cancel request for no live session ignored");
            return Forwarded::UnknownKey;
        };
        if !activity.runs_request_sent_before(asked) {
            tracing::debug!(pid = key.pid, "cancel request for an idle session not forwarded");
            return Forwarded::Idle;
        }
        // Bounded: whatever happens, the session's bytes go on within connect_timeout.
        let _held = activity.hold();
        match tokio::time::timeout(target.connect_timeout, deliver(key, target)).await {
            Ok(Ok(())) => Forwarded::Yes,
            Err(_) => {
                tracing::warn!(pid = key.pid, limit = ?target.connect_timeout, "forwarding a cancel request timed out");
                Forwarded::Failed
            }
            Ok(Err(e)) => {
                tracing::warn!(pid = key.pid, error = %e, "forwarding a cancel request failed");
                Forwarded::Failed
            }
        }
    }
}

/// Sends the CancelRequest and waits (bounded) until the server closes the connection, which it
/// does after signalling the backend.
async fn deliver(key: &CancelKey, target: &Target) -> Result<(), BackendError> {
    let mut packet = BytesMut::new();
    encode_cancel_request(key, &mut packet);
    let mut stream = target.open().await?;
    stream.write_all(&packet).await?;
    stream.flush().await?;
    let mut sink = [0u8; 1];
    let _ = tokio::time::timeout(target.connect_timeout, tokio::io::AsyncReadExt::read(&mut stream, &mut sink)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_of_a_live_session_matches() {
        let reg = CancelRegistry::default();
        let key = CancelKey { pid: 7, secret: vec![1, 2, 3, 4] };
        let guard = reg.register(&key, Arc::default());
        assert!(reg.session(&key).is_some());
        assert!(reg.session(&CancelKey { pid: 7, secret: vec![1, 2, 3, 5] }).is_none());
        assert!(reg.session(&CancelKey { pid: 7, secret: vec![1, 2, 3] }).is_none());
        assert!(reg.session(&CancelKey { pid: 8, secret: vec![1, 2, 3, 4] }).is_none());
        drop(guard);
        assert!(reg.session(&key).is_none());
        // A stale registration for a reused pid does not remove the new session's key.
        let old = reg.register(&key, Arc::default());
        let new_key = CancelKey { pid: 7, secret: vec![9, 9, 9, 9] };
        let _new = reg.register(&new_key, Arc::default());
        drop(old);
        assert!(reg.session(&new_key).is_some());
    }

    /// A stand-in postmaster on 127.0.0.1: counts the cancel packets it gets and closes each
    /// connection when told to, as the postmaster closes after signalling the backend.
    async fn postmaster() -> (Target, tokio::sync::mpsc::Receiver<tokio::sync::oneshot::Sender<()>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut packet = [0u8; 16];
                tokio::io::AsyncReadExt::read_exact(&mut socket, &mut packet).await.unwrap();
                let (close, closed) = tokio::sync::oneshot::channel();
                tx.send(close).await.unwrap();
                let _ = closed.await;
            }
        });
        let target = Target {
            addr: format!("127.0.0.1:{port}"),
            host: "127.0.0.1".into(),
            port,
            tls_mode: crate::config::UpstreamTlsMode::Disable,
            tls: None,
            server_name: "127.0.0.1".into(),
            connect_timeout: std::time::Duration::from_secs(5),
            allow_trust: false,
        };
        (target, rx)
    }

    #[tokio::test]
    async fn only_a_cancel_for_a_request_sent_before_it_is_forwarded_and_it_holds_the_session() {
        use crate::net::hold::{Holdable, stamp};
        let (target, mut cancels) = postmaster().await;
        let reg = CancelRegistry::default();
        let key = CancelKey { pid: 7, secret: vec![1, 2, 3, 4] };
        let activity = Arc::new(Activity::default());
        let _registered = reg.register(&key, activity.clone());

        // Idle: nothing is sent upstream.
        assert_eq!(reg.forward(&key, Instant::now(), &target).await, Forwarded::Idle);
        // A request sent after the cancel was asked for is not its target either.
        let asked = Instant::now();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        activity.set_running_since(stamp(Instant::now()));
        assert_eq!(reg.forward(&key, asked, &target).await, Forwarded::Idle);
        assert!(cancels.try_recv().is_err(), "nothing reached the server");

        // Read just before the cancel: taken for a next request, not forwarded.
        assert_eq!(reg.forward(&key, Instant::now(), &target).await, Forwarded::Idle);
        // Running since well before: forwarded, and the session's next bytes wait for the server.
        activity.set_running_since(stamp(Instant::now() - std::time::Duration::from_secs(1)));
        let (near, mut far) = tokio::io::duplex(64);
        let mut server = Holdable::new(near, activity.clone());
        let forward = tokio::spawn({
            let (reg, key, target) = (reg.clone(), key.clone(), target.clone());
            async move { reg.forward(&key, Instant::now(), &target).await }
        });
        let close = cancels.recv().await.unwrap();
        let next = tokio::spawn(async move { server.write_all(b"Q").await.unwrap() });
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), tokio::io::AsyncReadExt::read_exact(&mut far, &mut byte));
        assert!(early.await.is_err(), "the next message waits while the cancel is delivered");
        close.send(()).unwrap();
        assert_eq!(forward.await.unwrap(), Forwarded::Yes);
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut byte).await.unwrap();
        next.await.unwrap();
    }
}
