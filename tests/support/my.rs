//! MySQL test harness: a private MariaDB (real password checks) and leasegate in-process on a
//! `kind = "mysql"` listener in front of it, plus helpers for the mariadb client and PyMySQL.

use super::{InProcess, init_logs};
use leasegate::devdb::CertPem;
use leasegate::devdb::TempDir;
use leasegate::devdb::mariadb::PrivateMariaDb;
use leasegate::service::App;
use std::net::SocketAddr;
use std::process::{Command, Output};

pub const PREFIX: &str = "lgt_";

pub struct MySetup {
    /// `client_tls.mode`; a self-signed certificate is always generated.
    pub client_tls_mode: &'static str,
    /// Extra keys for the `[[database]]` table.
    pub database_extra: String,
    /// Extra keys for the `app` role.
    pub role_extra: String,
    /// The `app` role's default and max TTL.
    pub ttl: (&'static str, &'static str),
    /// SQL run as root before leasegate starts.
    pub prepare: Vec<String>,
    /// The server serves TLS; `upstream_tls` (its `{ca}` replaced by the server's certificate).
    pub upstream_tls: Option<String>,
    /// The certificate the server serves with `upstream_tls` (default: a self-signed v3 one).
    pub upstream_cert: Option<CertPem>,
    /// Extra `[[role]]` tables (name, TOML) on database "main", which the client `ci` may use too.
    pub extra_roles: Vec<(String, String)>,
    /// Serve the admin API (token [`super::ADMIN_TOKEN`]).
    pub admin_api: bool,
    /// A Unix socket the listener also serves, and `[[client]]` tables appended to the config.
    pub socket: Option<std::path::PathBuf>,
    pub extra_clients: String,
    /// `client_tls.client_ca`: client certificates signed by this bundle are verified.
    pub client_ca: Option<std::path::PathBuf>,
}

impl Default for MySetup {
    fn default() -> Self {
        MySetup {
            client_tls_mode: "optional",
            database_extra: String::new(),
            role_extra: String::new(),
            ttl: ("1h", "24h"),
            prepare: vec![],
            upstream_tls: None,
            upstream_cert: None,
            extra_roles: vec![],
            admin_api: false,
            socket: None,
            extra_clients: String::new(),
            client_ca: None,
        }
    }
}

pub struct MyLg {
    pub addr: SocketAddr,
    /// The admin API, when the setup asked for one.
    pub admin_addr: Option<SocketAddr>,
    pub app: App,
    pub client_password: String,
    // Declared before the server: leasegate shuts down (revoking its users) before it stops.
    leasegate: InProcess,
    pub dir: TempDir,
    pub db: PrivateMariaDb,
}

impl MyLg {
    pub fn start(setup: MySetup) -> MyLg {
        init_logs();
        // One server initialises at a time: mariadb-install-db saturates both cores, and ten at
        // once starve the timed parts of the other tests.
        static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let db = {
            let _one = STARTING.lock().unwrap_or_else(|e| e.into_inner());
            let cert = setup.upstream_tls.as_ref().map(|_| match &setup.upstream_cert {
                Some(cert) => cert.clone(),
                None => CertPem::self_signed().expect("a certificate"),
            });
            PrivateMariaDb::start_with(cert).expect("private mariadb starts")
        };
        let dir = TempDir::new("leasegate-mytest").unwrap();
        db.root_sql(
            "CREATE DATABASE appdb; CREATE TABLE appdb.items(id INT PRIMARY KEY, name VARCHAR(100), body LONGBLOB); \
             INSERT INTO appdb.items(id, name) SELECT seq, CONCAT('item ', seq) FROM appdb.seq_1_to_100; \
             CREATE ROLE app_group; GRANT ALL ON appdb.* TO app_group; GRANT app_group TO leasegate_admin WITH ADMIN OPTION;",
        )
        .expect("schema");
        for sql in &setup.prepare {
            db.root_sql(sql).expect("prepare SQL");
        }
        let client_password = format!("pw-{}", leasegate::name::password().expose());
        let value = leasegate::auth::hash::client_password_value(&leasegate::secret::Secret::new(client_password.clone()));
        let (cert, key) = leasegate::net::tls::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();
        std::fs::write(dir.path().join("admin.secret"), db.admin_password.expose()).unwrap();
        let extra: String = setup.extra_roles.iter().map(|(n, _)| format!(", \"{n}\"")).collect();
        std::fs::write(dir.path().join("admin.token"), super::ADMIN_TOKEN).unwrap();
        let admin = if setup.admin_api {
            format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}/admin.token\"\n", dir.path().display())
        } else {
            String::new()
        };
        let mut text = format!(
            r#"
{admin}
[journal]
path = "{dir}/journal.db"

[service]
shutdown_grace = "0s"

[[database]]
name = "main"
kind = "mysql"
listen = {listen}
upstream = "{upstream}"
admin_user = "{admin_user}"
admin_password_file = "{dir}/admin.secret"
name_prefix = "{PREFIX}"
client_tls = {{ cert = "{dir}/tls.crt", key = "{dir}/tls.key", mode = "{mode}"{client_ca} }}
upstream_tls = {upstream_tls}
connect_timeout = "3s"
{database_extra}

[[role]]
name = "app"
database = "main"
default_ttl = "{ttl}"
max_ttl = "{max_ttl}"
member_of = ["app_group"]
{role_extra}

[[client]]
name = "ci"
password = "{value}"
roles = ["app"{extra}]

[[client]]
name = "other"
password = "{value}"
roles = ["app"]

# A SCRAM verifier without the MySQL hashes (what hash-password printed before them): such a
# client can only use caching_sha2 full authentication, inside TLS.
[[client]]
name = "legacy"
password = "{scram_only}"
roles = ["app"]
"#,
            listen = match &setup.socket {
                Some(path) => format!("[\"127.0.0.1:0\", \"unix:{}\"]", path.display()),
                None => "\"127.0.0.1:0\"".into(),
            },
            scram_only = value.split(' ').next().unwrap_or_default(),
            dir = dir.path().display(),
            upstream = db.addr(),
            admin_user = db.admin_user,
            mode = setup.client_tls_mode,
            client_ca = setup.client_ca.as_ref().map(|p| format!(", client_ca = \"{}\"", p.display())).unwrap_or_default(),
            upstream_tls = setup
                .upstream_tls
                .as_deref()
                .unwrap_or("{ mode = \"disable\" }")
                .replace("{ca}", &db.tls_cert_path().display().to_string()),
            database_extra = setup.database_extra,
            role_extra = setup.role_extra,
            ttl = setup.ttl.0,
            max_ttl = setup.ttl.1,
        );
        for (_, role) in &setup.extra_roles {
            text.push_str(role);
        }
        text.push_str(&setup.extra_clients);
        // For commands that read a config file (`leasegate doctor`).
        std::fs::write(dir.path().join("leasegate.toml"), &text).unwrap();
        let leasegate = InProcess::start(&text);
        MyLg { addr: leasegate.addr, admin_addr: leasegate.admin_addr, app: leasegate.app.clone(), client_password, leasegate, dir, db }
    }

    /// The mariadb client through leasegate as `login`, with extra arguments, running `sql`.
    pub fn mariadb(&self, login: &str, password: &str, extra: &[&str], sql: &str) -> Output {
        Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P", &self.addr.port().to_string(), "-u", login, "-N", "-B"])
            .args(extra)
            .args(["-e", sql])
            .env("MYSQL_PWD", password)
            .output()
            .expect("mariadb runs")
    }

    /// Runs a Python script with PyMySQL; `HOST`, `PORT`, `PASSWORD` are in its environment.
    pub fn python(&self, script: &str) -> Output {
        Command::new("python3")
            .args(["-c", script])
            .env("HOST", "127.0.0.1")
            .env("PORT", self.addr.port().to_string())
            .env("PASSWORD", &self.client_password)
            .output()
            .expect("python3 runs")
    }

    /// Minted users currently in mysql.user.
    pub fn minted_users(&self) -> Vec<String> {
        let sql = format!("SELECT User FROM mysql.user WHERE LEFT(User, {n}) = '{PREFIX}' ORDER BY 1", n = PREFIX.len());
        let out = self.db.root_sql(&sql).unwrap();
        out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
    }

    pub fn shutdown(&mut self) {
        self.leasegate.shutdown();
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.leasegate.block_on(f)
    }
}

pub fn out(o: &Output) -> String {
    format!("status {:?}\nstdout: {}\nstderr: {}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
