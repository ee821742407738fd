//! Private database servers for `leasegate dev` and the test suite: started on a free port in a
//! temporary directory, with password authentication that really checks passwords, and removed
//! on drop (and killed by the kernel if this process dies first).

mod keeper;
pub mod mariadb;
pub mod postgres;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DevDbError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{command} failed: {output}")]
    Command { command: String, output: String },
    #[error("{0}")]
    Missing(String),
    #[error("the server did not become ready within {0:?}; log: {1}")]
    NotReady(std::time::Duration, String),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevDbError {
    let what = what.into();
    move |source| DevDbError::Io { what, source }
}

/// A server certificate and its key (PEM) for a private server's TLS.
#[derive(Clone)]
pub struct CertPem {
    pub cert: String,
    pub key: String,
}

impl CertPem {
    /// A self-signed v3 certificate for `localhost` and `127.0.0.1`.
    pub fn self_signed() -> Result<Self, DevDbError> {
        let (cert, key) = crate::net::tls::self_signed(&["localhost", "127.0.0.1"])
            .map_err(|e| DevDbError::Missing(format!("generating a certificate: {e}")))?;
        Ok(CertPem { cert, key })
    }
}

/// A directory removed on drop (unless kept).
pub struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self, DevDbError> {
        let name = format!("{prefix}-{}-{:08x}", std::process::id(), rand::random::<u32>());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        Ok(TempDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; callers retry if it is taken meanwhile).
pub fn free_port() -> Result<u16, DevDbError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("finding a free port"))?;
    Ok(l.local_addr().map_err(io_err("finding a free port"))?.port())
}

/// The uid/gid to run a server as: the `postgres`/`mysql` account when we are root (the
/// servers refuse to run as root), otherwise ourselves.
pub(crate) fn service_account(name: &str) -> Result<Option<(u32, u32)>, DevDbError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let cname = std::ffi::CString::new(name).map_err(|_| DevDbError::Missing(format!("bad account name {name}")))?;
    // SAFETY: getpwnam returns null or a pointer to a static record we read immediately.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        return Err(DevDbError::Missing(format!("running as root needs the OS user {name:?} to run the server as")));
    }
    // SAFETY: non-null record from getpwnam.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

pub(crate) fn chown_tree(path: &Path, owner: Option<(u32, u32)>) -> Result<(), DevDbError> {
    let Some((uid, gid)) = owner else { return Ok(()) };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_err(format!("chown {}", path.display())))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io_err(format!("reading {}", path.display())))? {
            let entry = entry.map_err(io_err("reading a directory"))?;
            chown_tree(&entry.path(), owner)?;
        }
    }
    Ok(())
}

/// Runs `cmd`, optionally as `owner`, and fails with its output when it fails.
pub(crate) fn run_as(mut cmd: std::process::Command, owner: Option<(u32, u32)>) -> Result<String, DevDbError> {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(io_err(format!("running {shown}")))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() { Ok(text) } else { Err(DevDbError::Command { command: shown, output: text }) }
}
