//! Who is at the other end of a client connection: a TCP address, or on a Unix-socket
//! listener the process's credentials as the kernel reports them (`SO_PEERCRED`), which peer
//! identity trusts because the client cannot choose them.

use serde::Serialize;
use std::fmt;
use std::net::SocketAddr;

/// The kernel's word on a Unix-socket peer: the uid, gid and pid of the process that
/// connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

impl PeerCred {
    pub fn of(socket: &tokio::net::UnixStream) -> std::io::Result<PeerCred> {
        let cred = socket.peer_cred()?;
        Ok(PeerCred { uid: cred.uid(), gid: cred.gid(), pid: cred.pid() })
    }

    /// The OS user name of `uid`, when the system knows one.
    pub fn user_name(&self) -> Option<String> {
        user_name(self.uid)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Tcp(SocketAddr),
    Unix(PeerCred),
}

impl Peer {
    /// The host part a MySQL server names in "Access denied for user 'u'@'host'".
    pub fn host(&self) -> String {
        match self {
            Peer::Tcp(addr) => addr.ip().to_string(),
            Peer::Unix(_) => "localhost".into(),
        }
    }

    pub fn unix(&self) -> Option<&PeerCred> {
        match self {
            Peer::Unix(cred) => Some(cred),
            Peer::Tcp(_) => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix(c) => {
                write!(f, "unix:uid={},gid={}", c.uid, c.gid)?;
                match c.pid {
                    Some(pid) => write!(f, ",pid={pid}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Audit and API records show a peer as text: `127.0.0.1:5000` or `unix:uid=1001,gid=1001,pid=7`.
impl Serialize for Peer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        Peer::Tcp(addr)
    }
}

/// This process's real uid.
pub fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

/// `getpwuid_r`: the name of `uid` in the system's user database.
pub fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: `pwd` and `buf` outlive the call; getpwuid_r writes only within `buf.len()`,
    // and `result` is either null or points at `pwd`, whose `pw_name` points into `buf`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result);
        if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(pwd.pw_name).to_str().ok().map(str::to_string)
    }
}

/// `getpwnam_r` / `getgrnam_r`: the uid of a user name or the gid of a group name.
pub fn uid_of(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in `user_name`.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result);
        (rc == 0 && !result.is_null()).then_some(pwd.pw_uid)
    }
}

pub fn gid_of(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in `user_name`, for the group database.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr().cast(), buf.len(), &mut result);
        (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_show_as_text() {
        let tcp: Peer = "127.0.0.1:5000".parse::<SocketAddr>().unwrap().into();
        assert_eq!(serde_json::to_string(&tcp).unwrap(), "\"127.0.0.1:5000\"");
        let unix = Peer::Unix(PeerCred { uid: 65534, gid: 65534, pid: Some(7) });
        assert_eq!(unix.to_string(), "unix:uid=65534,gid=65534,pid=7");
        assert_eq!(unix.host(), "localhost");
    }

    #[test]
    fn root_has_a_name() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(gid_of("root"), Some(0));
        assert_eq!(uid_of("no-such-user-here"), None);
    }
}
