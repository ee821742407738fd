//! The accept loop: one per bound address of a `[[database]]` listener (TCP or Unix socket).
//!
//! It owns accepting and nothing else: each connection runs in its own task, tracked so that
//! shutdown can wait for them. Accept errors (EMFILE and friends) are logged and retried after a
//! pause instead of ending the listener.

use super::stream::Stream;
use crate::config::{ListenAddr, UnixSocket};
use crate::peer::{Peer, PeerCred};
use crate::shutdown::Shutdown;
use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::task::TaskTracker;

/// A bound listening socket.
pub enum Bound {
    Tcp(TcpListener),
    /// The socket file is removed when this is dropped.
    Unix(UnixListener, SocketFile),
}

/// A Unix socket file leasegate created, removed again when the listener goes.
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Bound {
    pub async fn bind(addr: &ListenAddr, unix: &UnixSocket) -> std::io::Result<Bound> {
        match addr {
            ListenAddr::Tcp(a) => TcpListener::bind(a).await.map(Bound::Tcp),
            ListenAddr::Unix(path) => bind_unix(path, unix).await,
        }
    }

    /// The TCP address it listens on (`None` for a Unix socket).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Bound::Tcp(l) => l.local_addr().ok(),
            Bound::Unix(..) => None,
        }
    }

    /// Where it listens, for the log.
    pub fn describe(&self) -> String {
        match self {
            Bound::Tcp(l) => l.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
            Bound::Unix(_, file) => format!("unix:{}", file.0.display()),
        }
    }

    async fn accept(&self) -> std::io::Result<(Stream, Peer)> {
        match self {
            Bound::Tcp(l) => {
                let (socket, peer) = l.accept().await?;
                // Small request/response messages: never wait for Nagle.
                let _ = socket.set_nodelay(true);
                Ok((Stream::Plain(socket), Peer::Tcp(peer)))
            }
            Bound::Unix(l, _) => {
                let (socket, _) = l.accept().await?;
                let cred = PeerCred::of(&socket)?;
                Ok((Stream::Unix(socket), Peer::Unix(cred)))
            }
        }
    }
}

/// Binds a Unix socket at `path`: a stale file from a process that died is replaced, a live
/// listener's is not (binding would steal its clients).
async fn bind_unix(path: &Path, unix: &UnixSocket) -> std::io::Result<Bound> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a socket"));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another process listens on it"));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    let file = SocketFile(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(unix.mode_bits().map_err(invalid)?))?;
    if let Some(gid) = unix.gid().map_err(invalid)? {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    Ok(Bound::Unix(listener, file))
}

/// Accepts until `shutdown` fires; every connection runs `handle` in a task on `tasks`.
pub async fn accept_loop<F, Fut>(listener: Bound, shutdown: Shutdown, tasks: TaskTracker, handle: F)
where
    F: Fn(Stream, Peer) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((socket, peer)) => {
                tasks.spawn(handle(socket, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
