//! `[[database]].listen`: where applications connect. One address or a list of them, each
//! `host:port` or `unix:/dir/.s.PGSQL.6432` (the file name libpq derives from
//! `host=/dir port=6432`; MySQL clients take the whole path as `socket=`).

use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    pub fn parse(text: &str) -> Result<ListenAddr, String> {
        match text.strip_prefix("unix:") {
            Some(path) if path.starts_with('/') => Ok(ListenAddr::Unix(PathBuf::from(path))),
            Some(_) => Err(format!("{text:?}: a Unix socket needs an absolute path (unix:/run/leasegate/.s.PGSQL.6432)")),
            None => text.parse().map(ListenAddr::Tcp).map_err(|_| format!("{text:?} is neither host:port nor unix:/path")),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The addresses of one listener, at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen(pub Vec<ListenAddr>);

impl Listen {
    pub fn tcp(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.0.iter().filter_map(|a| match a {
            ListenAddr::Tcp(addr) => Some(*addr),
            ListenAddr::Unix(_) => None,
        })
    }

    pub fn has_unix(&self) -> bool {
        self.0.iter().any(|a| matches!(a, ListenAddr::Unix(_)))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&shown.join(", "))
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawListen {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let texts = match RawListen::deserialize(d)? {
            RawListen::One(t) => vec![t],
            RawListen::Many(ts) => ts,
        };
        if texts.is_empty() {
            return Err(serde::de::Error::custom("listen needs at least one address"));
        }
        texts.iter().map(|t| ListenAddr::parse(t)).collect::<Result<_, _>>().map(Listen).map_err(serde::de::Error::custom)
    }
}

/// `[[database]].unix_socket`: who may connect to the socket files of `listen`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UnixSocket {
    /// Octal permission bits of the socket file, as `chmod` takes them ("0660"); default 0666,
    /// as Postgres's `unix_socket_permissions` (peer identity decides who gets in).
    pub mode: Option<String>,
    /// Group (name or number) the socket file is given, so `mode = "0660"` admits that group.
    pub group: Option<String>,
}

impl UnixSocket {
    pub fn mode_bits(&self) -> Result<u32, String> {
        match &self.mode {
            None => Ok(0o666),
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|bits| *bits <= 0o777)
                .ok_or_else(|| format!("{m:?} is not octal permission bits such as \"0660\"")),
        }
    }

    pub fn gid(&self) -> Result<Option<u32>, String> {
        match &self.group {
            None => Ok(None),
            Some(g) => g.parse().ok().or_else(|| crate::peer::gid_of(g)).map(Some).ok_or_else(|| format!("no group {g:?} on this system")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_or_several() {
        #[derive(Deserialize)]
        struct T {
            listen: Listen,
        }
        let one: T = toml::from_str(r#"listen = "127.0.0.1:6432""#).unwrap();
        assert_eq!(one.listen.0, vec![ListenAddr::Tcp("127.0.0.1:6432".parse().unwrap())]);
        let many: T = toml::from_str(r#"listen = ["127.0.0.1:6432", "unix:/run/lg/.s.PGSQL.6432"]"#).unwrap();
        assert_eq!(many.listen.0[1], ListenAddr::Unix("/run/lg/.s.PGSQL.6432".into()));
        assert_eq!(many.listen.to_string(), "127.0.0.1:6432, unix:/run/lg/.s.PGSQL.6432");
        assert!(toml::from_str::<T>(r#"listen = "unix:relative""#).is_err());
        assert!(toml::from_str::<T>(r#"listen = []"#).is_err());
    }

    #[test]
    fn socket_modes_are_octal() {
        assert_eq!(UnixSocket::default().mode_bits(), Ok(0o666));
        assert_eq!(UnixSocket { mode: Some("0660".into()), group: None }.mode_bits(), Ok(0o660));
        assert!(UnixSocket { mode: Some("999".into()), group: None }.mode_bits().is_err());
        assert_eq!(UnixSocket { mode: None, group: Some("0".into()) }.gid(), Ok(Some(0)));
        assert_eq!(UnixSocket { mode: None, group: Some("root".into()) }.gid(), Ok(Some(0)));
    }
}
