//! What a live session is doing, as far as cancelling it goes, and holding its client→server
//! bytes while a cancel is delivered. Protocol-neutral: each protocol's idle tracker sets
//! `busy` from message headers; the cancel paths (Postgres CancelRequest, MySQL `KILL QUERY`
//! from another connection) read it and hold the session.
//!
//! Why: a cancel signals whatever the server session runs when it arrives. leasegate forwards
//! it only while the session runs a request the client had sent before it asked to cancel
//! (before it opened the cancel connection, or sent the `KILL`), and until the server has taken
//! it no further client message reaches the server. So the signal can only hit the statement it
//! was sent for, or an idle server session, which ignores it. Never the next statement.

use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// A point in time as a number that fits an atomic: nanoseconds since the first call, plus one
/// (so that 0 can mean "none").
pub fn stamp(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| Instant::now() - std::time::Duration::from_secs(1));
    at.saturating_duration_since(epoch).as_nanos() as u64 + 1
}

/// How long before a cancel its target must have been read. A client sends its cancel before
/// its next request, but the two travel on different connections, and leasegate can read the
/// next request first (in the same event-loop turn that delivered the previous response, or
/// while the cancel's task waits its turn on a loaded machine). A request read just before the
/// cancel is therefore taken for that next request. A real cancel comes a timeout, a keystroke
/// or at least a round trip after its statement: what this costs is a cancel sent within 10 ms
/// of its statement, which then runs to its end.
pub const MIN_REQUEST_AGE: std::time::Duration = std::time::Duration::from_millis(10);

/// The stamp of "as long as anyone can tell": a tracker that lost the message boundaries says
/// this, so cancels are forwarded as they come.
pub const SINCE_EVER: u64 = 1;

/// Shared between a session's pump (which updates it) and the cancel paths (which read it).
#[derive(Debug, Default)]
pub struct Activity {
    /// When the client sent the oldest request the server has not fully answered ([`stamp`]);
    /// 0 when none is outstanding.
    running_since: AtomicU64,
    /// Holds in force; client bytes wait while this is above zero.
    holds: AtomicUsize,
    /// The pump's write, waiting for the holds to end.
    waiting: Mutex<Option<Waker>>,
}

impl Activity {
    /// `since`: the stamp of the oldest unanswered request, 0 for none.
    pub fn set_running_since(&self, since: u64) {
        self.running_since.store(since, Ordering::Release);
    }

    pub fn is_busy(&self) -> bool {
        self.running_since.load(Ordering::Acquire) != 0
    }

    /// True when the request the server is working on was read at least [`MIN_REQUEST_AGE`]
    /// before `asked` (when the cancel was read): a cancel asked for then is meant for it.
    pub fn runs_request_sent_before(&self, asked: Instant) -> bool {
        let since = self.running_since.load(Ordering::Acquire);
        since != 0 && since <= stamp(asked.checked_sub(MIN_REQUEST_AGE).unwrap_or(asked))
    }

    /// Holds the session's client→server bytes until the returned guard is dropped. The
    /// caller bounds how long it keeps the guard (a cancel is delivered within the upstream's
    /// connect timeout or given up).
    pub fn hold(self: &Arc<Self>) -> Held {
        self.holds.fetch_add(1, Ordering::AcqRel);
        Held(self.clone())
    }

    fn held(&self) -> bool {
        self.holds.load(Ordering::Acquire) > 0
    }

    fn waiter(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A hold in force; dropping it lets the session's bytes go on.
#[must_use = "the hold ends when this is dropped"]
pub struct Held(Arc<Activity>);

impl Drop for Held {
    fn drop(&mut self) {
        if self.0.holds.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(waker) = self.0.waiter().take()
        {
            waker.wake();
        }
    }
}

/// The server leg of a session: writes wait while the session is held; reads never do.
pub struct Holdable<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Holdable<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Holdable { inner, activity }
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Holdable<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Holdable<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // The hot path is one atomic load; the lock is taken only while a hold is in force.
        if this.activity.held() {
            let mut waiting = this.activity.waiter();
            // Checked again under the lock: a hold that ended meanwhile took no waker.
            if this.activity.held() {
                *waiting = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    #[tokio::test]
    async fn writes_wait_while_held_and_go_on_when_released() {
        let activity = Arc::new(Activity::default());
        let (near, mut far) = duplex(64);
        let mut server = Holdable::new(near, activity.clone());
        let held = activity.hold();
        let second = activity.hold();
        let write = tokio::spawn(async move {
            server.write_all(b"next").await.unwrap();
            server
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut got = [0u8; 4];
        assert!(tokio::time::timeout(std::time::Duration::from_millis(50), far.read_exact(&mut got)).await.is_err(), "held");
        drop(held);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!write.is_finished(), "still held by the second hold");
        drop(second);
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"next");
        let _server = write.await.unwrap();
        assert!(!activity.held());
    }

    #[tokio::test]
    async fn reads_are_never_held() {
        let activity = Arc::new(Activity::default());
        let (near, mut far) = duplex(64);
        let mut server = Holdable::new(near, activity.clone());
        let _held = activity.hold();
        far.write_all(b"reply").await.unwrap();
        let mut got = [0u8; 5];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"reply");
    }
}
