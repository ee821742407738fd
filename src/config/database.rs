//! `[[database]]`: one upstream server, the listener applications use for it, and how
//! leasegate administers it.

use super::{Listen, Problem, SecretSource, UnixSocket};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbKind {
    Postgres,
    Mysql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientTlsMode {
    /// Plain TCP only; SSLRequest is answered `N`.
    Disabled,
    /// TLS when the client asks for it.
    #[default]
    Optional,
    /// A client that does not negotiate TLS is refused.
    Required,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// PEM bundle of the CAs client certificates must chain to (`cert` clients); reloaded
    /// with `cert` and `key` when the files change.
    pub client_ca: Option<PathBuf>,
    #[serde(default)]
    pub mode: ClientTlsMode,
}

/// libpq's sslmode values, with libpq's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    /// PEM bundle of trusted CAs; without it verify-* modes use the webpki roots.
    pub ca: Option<PathBuf>,
    /// Name to verify in verify-full mode; defaults to the host part of `upstream`.
    pub server_name: Option<String>,
}

/// MySQL: the authentication plugin a listener asks of its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthPlugin {
    MysqlNativePassword,
    CachingSha2Password,
}

impl ClientAuthPlugin {
    /// The plugin's name on the wire and in the config.
    pub fn name(self) -> &'static str {
        match self {
            ClientAuthPlugin::MysqlNativePassword => "mysql_native_password",
            ClientAuthPlugin::CachingSha2Password => "caching_sha2_password",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [ClientAuthPlugin::MysqlNativePassword, ClientAuthPlugin::CachingSha2Password].into_iter().find(|p| p.name() == name)
    }
}

/// `upstream = "host:port"` (or `"[v6]:port"`), parsed once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    fn parse(text: &str) -> Option<HostPort> {
        let (host, port) = text.rsplit_once(':')?;
        let port = port.parse().ok().filter(|p| *p != 0)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return None;
        }
        Some(HostPort { host: host.to_string(), port })
    }
}

/// `sweep_orphans`: drop users with our prefix that the journal does not know, only log them,
/// or leave them alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepOrphans {
    Off,
    On,
    DryRun,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawSweep {
    Bool(bool),
    Word(String),
}

impl TryFrom<RawSweep> for SweepOrphans {
    type Error = String;

    fn try_from(raw: RawSweep) -> Result<Self, String> {
        match raw {
            RawSweep::Bool(true) => Ok(SweepOrphans::On),
            RawSweep::Bool(false) => Ok(SweepOrphans::Off),
            RawSweep::Word(w) if w == "dry-run" => Ok(SweepOrphans::DryRun),
            RawSweep::Word(w) => Err(format!("sweep_orphans must be true, false or \"dry-run\", not {w:?}")),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawDatabase")]
pub struct DatabaseConfig {
    pub name: String,
    pub kind: DbKind,
    pub listen: Listen,
    /// Who may connect to the Unix-socket files of `listen`.
    pub unix_socket: UnixSocket,
    /// `host:port` of the server, as written (for logs and messages).
    pub upstream: String,
    /// `upstream`, parsed.
    pub upstream_addr: HostPort,
    /// Empty when `issuer` is set (a sidecar holds no admin credential).
    pub admin_user: String,
    /// `None` exactly when `issuer` is set.
    pub admin_password: Option<SecretSource>,
    /// This database's leases come from an issuer (this instance is its sidecar).
    pub issuer: Option<super::IssuerRef>,
    /// The database the admin connection opens (Postgres); also where creation statements run.
    pub admin_database: String,
    pub name_prefix: String,
    pub sweep_orphans: SweepOrphans,
    /// Mints in flight at once against this database; more wait (bounded), then get 53300.
    pub max_concurrent_mints: usize,
    /// Client connections open at once on this listener; more get 53300 at once (4096 unless
    /// the config says otherwise).
    pub max_client_connections: Option<usize>,
    /// Client handshakes (TLS, startup, authentication) in progress at once on this listener;
    /// at the bound the oldest silent one gives way (see `net/handshakes.rs`).
    pub max_handshakes: usize,
    pub client_tls: Option<ClientTls>,
    pub upstream_tls: Option<UpstreamTls>,
    /// Bound on the client handshake: TLS, startup, authentication.
    pub handshake_timeout: Duration,
    /// Bound on one TCP connect (and TLS handshake) to the server.
    pub connect_timeout: Duration,
    /// Accept a server that lets minted users in without asking for their password (trust):
    /// off by default, since such a server checks nobody.
    pub allow_upstream_trust: bool,
    /// MySQL: the authentication plugin asked of clients; `None` takes either, announcing the
    /// server's own.
    pub client_auth_plugin: Option<ClientAuthPlugin>,
    /// Values that did not convert to their type, kept so that `validate` reports them with
    /// every other problem (`(key, message)`).
    unconverted: Vec<(&'static str, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    name: String,
    kind: DbKind,
    listen: Listen,
    #[serde(default)]
    unix_socket: UnixSocket,
    upstream: String,
    admin_user: Option<String>,
    issuer: Option<super::IssuerRef>,
    admin_password: Option<String>,
    admin_password_file: Option<PathBuf>,
    admin_password_env: Option<String>,
    admin_database: Option<String>,
    name_prefix: String,
    sweep_orphans: Option<RawSweep>,
    #[serde(default = "default_max_concurrent_mints")]
    max_concurrent_mints: usize,
    max_client_connections: Option<usize>,
    #[serde(default = "default_max_handshakes")]
    max_handshakes: usize,
    client_tls: Option<ClientTls>,
    upstream_tls: Option<UpstreamTls>,
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    handshake_timeout: Duration,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(default)]
    allow_upstream_trust: bool,
    client_auth_plugin: Option<String>,
}

fn default_max_concurrent_mints() -> usize {
    8
}

/// `max_client_connections` when the config names none.
const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 4096;

fn default_max_handshakes() -> usize {
    1024
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

impl TryFrom<RawDatabase> for DatabaseConfig {
    type Error = String;

    fn try_from(raw: RawDatabase) -> Result<Self, String> {
        // Either admin credentials, or an issuer that holds them (a sidecar), never both.
        let (admin_user, admin_password) = match (raw.admin_user, &raw.issuer) {
            (Some(user), None) => {
                let source = SecretSource::from_keys(raw.admin_password, raw.admin_password_file, raw.admin_password_env)
                    .map_err(|e| format!("database {:?}: admin_password: {e}", raw.name))?;
                (user, Some(source))
            }
            (None, Some(_)) if raw.admin_password.is_none() && raw.admin_password_file.is_none() && raw.admin_password_env.is_none() => {
                (String::new(), None)
            }
            (None, None) => return Err(format!("database {:?}: admin_user (and its password) or issuer is required", raw.name)),
            _ => {
                return Err(format!(
                    "database {:?}: a database with an issuer holds no admin credential: drop admin_user and admin_password*",
                    raw.name
                ));
            }
        };
        let sweep_orphans = match raw.sweep_orphans {
            Some(s) => SweepOrphans::try_from(s).map_err(|e| format!("database {:?}: {e}", raw.name))?,
            None => SweepOrphans::Off,
        };
        let admin_database = raw.admin_database.unwrap_or_else(|| match raw.kind {
            DbKind::Postgres => "postgres".into(),
            DbKind::Mysql => "mysql".into(),
        });
        let mut unconverted = Vec::new();
        let upstream_addr = HostPort::parse(&raw.upstream).unwrap_or_else(|| {
            unconverted.push(("upstream", format!("{:?} is not host:port", raw.upstream)));
            HostPort::default()
        });
        let client_auth_plugin = raw.client_auth_plugin.as_deref().and_then(|p| {
            let parsed = ClientAuthPlugin::parse(p);
            if parsed.is_none() {
                unconverted
                    .push(("client_auth_plugin", format!("{p:?} is not one of \"mysql_native_password\", \"caching_sha2_password\"")));
            }
            parsed
        });
        Ok(DatabaseConfig {
            name: raw.name,
            kind: raw.kind,
            listen: raw.listen,
            unix_socket: raw.unix_socket,
            upstream: raw.upstream,
            upstream_addr,
            admin_user,
            admin_password,
            issuer: raw.issuer,
            admin_database,
            name_prefix: raw.name_prefix,
            sweep_orphans,
            max_concurrent_mints: raw.max_concurrent_mints,
            // Bounded by default: every connection is a file descriptor and a task.
            max_client_connections: Some(raw.max_client_connections.unwrap_or(DEFAULT_MAX_CLIENT_CONNECTIONS)),
            max_handshakes: raw.max_handshakes,
            client_tls: raw.client_tls,
            upstream_tls: raw.upstream_tls,
            handshake_timeout: raw.handshake_timeout,
            connect_timeout: raw.connect_timeout,
            allow_upstream_trust: raw.allow_upstream_trust,
            client_auth_plugin,
            unconverted,
        })
    }
}

impl DatabaseConfig {
    /// Host and port of `upstream`; `None` when it did not parse (the config is then invalid:
    /// port 0 is never a server's).
    pub fn upstream_host_port(&self) -> Option<(String, u16)> {
        (self.upstream_addr.port != 0).then(|| (self.upstream_addr.host.clone(), self.upstream_addr.port))
    }

    pub fn client_tls_mode(&self) -> ClientTlsMode {
        self.client_tls.as_ref().map_or(ClientTlsMode::Disabled, |t| t.mode)
    }

    pub fn upstream_tls_mode(&self) -> UpstreamTlsMode {
        self.upstream_tls.as_ref().map_or(UpstreamTlsMode::Prefer, |t| t.mode)
    }

    pub(super) fn validate(&self, at: &str, problems: &mut Vec<Problem>) {
        for (key, message) in &self.unconverted {
            problems.push(Problem::new(format!("{at}.{key}"), message.clone()));
        }
        if let Err(e) = self.unix_socket.mode_bits() {
            problems.push(Problem::new(format!("{at}.unix_socket.mode"), e));
        }
        if let Err(e) = self.unix_socket.gid() {
            problems.push(Problem::new(format!("{at}.unix_socket.group"), e));
        }
        if let Some(issuer) = &self.issuer {
            issuer.validate(at, problems);
            if self.sweep_orphans != SweepOrphans::Off {
                problems.push(Problem::new(format!("{at}.sweep_orphans"), "a sidecar drops no users: its issuer sweeps"));
            }
        }
        if self.client_auth_plugin.is_some() && self.kind == DbKind::Postgres {
            problems.push(Problem::new(format!("{at}.client_auth_plugin"), "applies to kind = \"mysql\" only"));
        }
        if let Err(e) = crate::name::check_prefix(&self.name_prefix) {
            problems.push(Problem::new(format!("{at}.name_prefix"), e));
        }
        if let Some(tls) = &self.client_tls
            && tls.mode != ClientTlsMode::Disabled
            && (tls.cert.is_none() || tls.key.is_none())
        {
            problems.push(Problem::new(format!("{at}.client_tls"), "cert and key are required unless mode = \"disabled\""));
        }
        if self.max_handshakes == 0 {
            problems.push(Problem::new(format!("{at}.max_handshakes"), "must be at least 1"));
        }
        if self.max_concurrent_mints == 0 {
            problems.push(Problem::new(format!("{at}.max_concurrent_mints"), "must be at least 1"));
        }
        if self.handshake_timeout.is_zero() {
            problems.push(Problem::new(format!("{at}.handshake_timeout"), "must be greater than 0"));
        }
        if self.connect_timeout.is_zero() {
            problems.push(Problem::new(format!("{at}.connect_timeout"), "must be greater than 0"));
        }
    }
}
