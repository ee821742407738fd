//! The accept loop: one per `[[database]]` listener.
//!
//! It owns accepting and nothing else: each connection runs in its own task, tracked so that
//! shutdown can wait for them. Accept errors (EMFILE and friends) are logged and retried after a
//! pause instead of ending the listener.

use crate::shutdown::Shutdown;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

/// Accepts until `shutdown` fires; every connection runs `handle` in a task on `tasks`.
pub async fn accept_loop<F, Fut>(listener: TcpListener, shutdown: Shutdown, tasks: TaskTracker, handle: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((socket, peer)) => {
                // Small request/response messages: never wait for Nagle.
                let _ = socket.set_nodelay(true);
                tasks.spawn(handle(socket, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
