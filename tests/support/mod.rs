//! Test harness: a private scram-sha-256 PostgreSQL per test (no mocks), leasegate started
//! in-process on 127.0.0.1:0 against it, and helpers to drive real clients (psql, pgbench).
//! Everything is removed on drop.
#![allow(dead_code)]

pub mod my;
pub mod process;

use leasegate::app::{self, Running};
use leasegate::config::Config;
use leasegate::devdb::TempDir;
use leasegate::devdb::postgres::{PgOptions, PrivatePostgres};
use leasegate::service::App;
use leasegate::shutdown::Signals;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Everything leasegate logs in this test process.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        if std::env::var_os("LEASEGATE_TEST_LOG").is_some() {
            let _ = std::io::stderr().write_all(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_logs() -> Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = LogSink(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug,sqlx=debug,hyper=info"))
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .try_init();
        buf
    })
    .clone()
}

/// Everything logged so far by every leasegate in this process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&init_logs().lock().unwrap()).into_owned()
}

/// The Postgres admin's privileges as docs/privileges.md gives them (app_group is the test
/// roles' `member_of` group); tests/least_privilege.rs checks the document says the same.
/// `[journal].instance` of every test's leasegate: the mark its minted roles carry.
pub const INSTANCE: &str = "test-instance";

/// SQL that marks `user` as minted by the test's instance for the role `app`, as a mint does
/// (an orphan that instance may sweep).
pub fn marked_as_ours(user: &str) -> String {
    format!("COMMENT ON ROLE {user} IS '{}'", leasegate::provision::mark(INSTANCE, "app"))
}

/// (The private server's superuser is `leasegate_admin`: this one is another role.)
pub const PG_ADMIN: &str = "leasegate_minter";
pub const PG_ADMIN_GRANTS: [&str; 3] = [
    "ALTER ROLE leasegate_minter CREATEROLE",
    "GRANT pg_signal_backend TO leasegate_minter",
    "GRANT app_group TO leasegate_minter WITH ADMIN OPTION",
];

pub struct Setup {
    /// `client_tls.mode`; a self-signed certificate is always generated.
    pub client_tls_mode: &'static str,
    /// Extra `[[role]]` tables (TOML), for the client `ci` too.
    pub extra_roles: Vec<(String, String)>,
    /// Replaces the default role's TTLs.
    pub ttl: (&'static str, &'static str),
    pub pg: PgOptions,
    /// SQL run as superuser before leasegate starts.
    pub prepare: Vec<String>,
    /// Replaces the admin user leasegate uses (created by `prepare`).
    pub admin: Option<(String, String)>,
    /// Replaces the upstream address (e.g. a closed port).
    pub upstream: Option<String>,
    pub handshake_timeout: &'static str,
    /// The `upstream_tls` inline table; `{ca}` is replaced by the server certificate's path.
    pub upstream_tls: String,
    /// Serve the admin API (token [`ADMIN_TOKEN`]) and write the audit log to `audit.jsonl`.
    pub admin_api: bool,
    /// `[service].shutdown_grace`.
    pub shutdown_grace: &'static str,
    /// Extra keys for the `[[database]]` table and the `app` role.
    pub database_extra: String,
    pub role_extra: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            client_tls_mode: "optional",
            extra_roles: vec![],
            ttl: ("1h", "24h"),
            pg: PgOptions::default(),
            prepare: vec![],
            admin: None,
            upstream: None,
            handshake_timeout: "10s",
            upstream_tls: "{ mode = \"prefer\" }".into(),
            admin_api: false,
            shutdown_grace: "0s",
            database_extra: String::new(),
            role_extra: String::new(),
        }
    }
}

pub const PREFIX: &str = "lgt_";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct Lg {
    pub addr: SocketAddr,
    pub app: App,
    pub client_password: String,
    /// The admin API, when the setup asked for one.
    pub admin_addr: Option<SocketAddr>,
    pub admin_token: String,
    pub signals: Signals,
    // Declared before the server: leasegate shuts down (revoking its users) before it stops.
    leasegate: InProcess,
    pub dir: TempDir,
    pub pg: PrivatePostgres,
}

/// A private server prepared for a test, and the leasegate config that points at it.
pub struct Prepared {
    pub pg: PrivatePostgres,
    pub dir: TempDir,
    pub client_password: String,
    pub text: String,
}

pub fn prepare(setup: &Setup, listen: &str) -> Prepared {
    {
        init_logs();
        let pg = PrivatePostgres::start(&setup.pg).expect("private postgres starts");
        let dir = TempDir::new("leasegate-test").unwrap();
        let setup_sql = [
            "CREATE ROLE app_group NOLOGIN",
            "GRANT ALL ON SCHEMA public TO app_group",
            "GRANT CREATE, TEMPORARY ON DATABASE postgres TO app_group",
            "CREATE TABLE items(id int primary key, name text)",
            "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 100) g",
            "GRANT ALL ON ALL TABLES IN SCHEMA public TO app_group",
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO app_group",
        ];
        for sql in setup_sql {
            admin_psql(&pg, sql);
        }
        // By default the admin holds exactly what docs/privileges.md lists, no more.
        let (admin_user, admin_pw) = match setup.admin.clone() {
            Some(admin) => admin,
            None => {
                let pw = format!("admin-{}", leasegate::name::password().expose());
                admin_psql(&pg, &format!("CREATE ROLE {PG_ADMIN} LOGIN PASSWORD '{pw}'"));
                for grant in PG_ADMIN_GRANTS {
                    admin_psql(&pg, grant);
                }
                (PG_ADMIN.to_string(), pw)
            }
        };
        for sql in &setup.prepare {
            admin_psql(&pg, sql);
        }
        let client_password = format!("pw-{}", leasegate::name::password().expose());
        let verifier = leasegate::auth::hash::client_password_value(&leasegate::secret::Secret::new(client_password.clone()));
        let (cert, key) = leasegate::net::tls::self_signed(&["localhost", "127.0.0.1"]).unwrap();
        std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
        std::fs::write(dir.path().join("tls.key"), key).unwrap();

        std::fs::write(dir.path().join("admin.secret"), admin_pw).unwrap();
        let extra_names: Vec<String> = setup.extra_roles.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
        let admin_api = if setup.admin_api {
            format!(
                "[admin]\nlisten = \"{listen_admin}\"\ntoken_file = \"{d}/admin.token\"\n\n[audit]\npath = \"{d}/audit.jsonl\"\n",
                d = dir.path().display(),
                listen_admin = "127.0.0.1:0"
            )
        } else {
            String::new()
        };
        let mut text = format!(
            r#"
{admin_api}
[journal]
path = "{dir}/journal.db"
instance = "{INSTANCE}"

[service]
shutdown_grace = "{shutdown_grace}"

[[database]]
name = "main"
kind = "postgres"
listen = "{listen}"
upstream = "{upstream}"
admin_user = "{admin_user}"
admin_password_file = "{dir}/admin.secret"
name_prefix = "{PREFIX}"
client_tls = {{ cert = "{dir}/tls.crt", key = "{dir}/tls.key", mode = "{mode}" }}
upstream_tls = {upstream_tls}
connect_timeout = "3s"
handshake_timeout = "{handshake_timeout}"
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
password = "{verifier}"
roles = ["app"{extra}]

[[client]]
name = "other"
password = "{verifier}"
roles = ["app"{extra}]
"#,
            listen = listen,
            shutdown_grace = setup.shutdown_grace,
            upstream = setup.upstream.clone().unwrap_or_else(|| pg.addr()),
            dir = dir.path().display(),
            mode = setup.client_tls_mode,
            handshake_timeout = setup.handshake_timeout,
            database_extra = setup.database_extra,
            role_extra = setup.role_extra,
            upstream_tls = setup.upstream_tls.replace("{ca}", &pg.tls_cert_path().display().to_string()),
            ttl = setup.ttl.0,
            max_ttl = setup.ttl.1,
            extra = extra_names.iter().map(|n| format!(", {n}")).collect::<String>(),
        );
        for (_, role) in &setup.extra_roles {
            text.push_str(role);
        }
        Prepared { pg, dir, client_password, text }
    }
}

impl Lg {
    pub fn start(setup: Setup) -> Lg {
        Self::start_edited(setup, |text| text)
    }

    /// Like `start`, with the config text changed by `edit` before leasegate reads it.
    pub fn start_edited(setup: Setup, edit: impl FnOnce(String) -> String) -> Lg {
        let Prepared { pg, dir, client_password, text } = prepare(&setup, "127.0.0.1:0");
        let text = edit(text);
        // For commands that read a config file (`leasegate doctor`).
        std::fs::write(dir.path().join("leasegate.toml"), &text).unwrap();
        let leasegate = InProcess::start(&text);
        Lg {
            addr: leasegate.addr,
            admin_addr: leasegate.admin_addr,
            admin_token: ADMIN_TOKEN.into(),
            app: leasegate.app.clone(),
            client_password,
            signals: leasegate.signals.clone(),
            leasegate,
            dir,
            pg,
        }
    }

    /// A libpq URL through leasegate for `login` (e.g. `ci` or `ci/app`).
    pub fn url(&self, login: &str, params: &str) -> String {
        leasegate_url(self.addr, &self.client_password, login, params)
    }

    /// Runs psql through leasegate: `-Atc sql` against `url`.
    pub fn psql(&self, url: &str, sql: &str) -> Output {
        psql_cmd(url).args(["-Atc", sql]).output().expect("psql runs")
    }

    /// Runs SQL directly on the private cluster as the superuser; returns trimmed stdout.
    pub fn admin(&self, sql: &str) -> String {
        admin_psql(&self.pg, sql)
    }

    /// Minted users currently in pg_roles.
    pub fn minted_roles(&self) -> Vec<String> {
        minted_roles(&self.pg)
    }

    pub fn shutdown(&mut self) {
        self.leasegate.shutdown();
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.leasegate.block_on(f)
    }
}

/// leasegate started in this process on 127.0.0.1:0 (database "main", and the admin API when
/// the config has one); shut down, revoking every lease, on drop.
pub struct InProcess {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub app: App,
    pub signals: Signals,
    running: Option<Running>,
    rt: Option<tokio::runtime::Runtime>,
}

impl InProcess {
    pub fn start(text: &str) -> InProcess {
        let config = Config::from_toml_str(text).expect("test config is valid");
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let signals = Signals::new();
        let with_admin = config.admin.is_some();
        let (addr, admin_addr, running) = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let admin = if with_admin { Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()) } else { None };
            let admin_addr = admin.as_ref().map(|l| l.local_addr().unwrap());
            // The test's own TCP port, plus any Unix socket the config names.
            let mut bound = vec![leasegate::net::listener::Bound::Tcp(listener)];
            let db = config.database("main").expect("a database named main");
            for unix in db.listen.0.iter().filter(|a| matches!(a, leasegate::config::ListenAddr::Unix(_))) {
                bound.push(leasegate::net::listener::Bound::bind(unix, &db.unix_socket).await.expect("the Unix socket binds"));
            }
            let listeners = app::Listeners { databases: [("main".to_string(), bound)].into_iter().collect(), admin, issuer: None };
            (addr, admin_addr, app::start(config, listeners, signals.clone()).await.expect("leasegate starts"))
        });
        InProcess { addr, admin_addr, app: running.app.clone(), signals, running: Some(running), rt: Some(rt) }
    }

    pub fn shutdown(&mut self) {
        self.signals.begin.cancel();
        self.signals.hurry.cancel();
        if let (Some(rt), Some(running)) = (self.rt.as_ref(), self.running.take()) {
            let _ = rt.block_on(running.finished());
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().unwrap().block_on(f)
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A libpq URL through leasegate at `addr` for `login` (e.g. `ci` or `ci/app`).
pub fn leasegate_url(addr: SocketAddr, password: &str, login: &str, params: &str) -> String {
    let login = login.replace('/', "%2F");
    let sep = if params.is_empty() { "" } else { "?" };
    format!("postgres://{login}:{password}@{addr}/postgres{sep}{params}")
}

/// Minted users currently in pg_roles of `pg`.
pub fn minted_roles(pg: &PrivatePostgres) -> Vec<String> {
    let out = admin_psql(pg, &format!("SELECT rolname FROM pg_roles WHERE rolname LIKE '{PREFIX}%' ORDER BY 1"));
    out.lines().map(str::to_string).filter(|l| !l.is_empty()).collect()
}

pub fn psql_cmd(url: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.arg(url).env("PGCONNECT_TIMEOUT", "10").env_remove("PGPASSWORD").env_remove("PGSSLMODE");
    cmd
}

pub fn admin_psql(pg: &PrivatePostgres, sql: &str) -> String {
    let out = psql_cmd(&pg.url("postgres")).args(["-v", "ON_ERROR_STOP=1", "-Atc", sql]).output().expect("psql runs");
    assert!(out.status.success(), "admin SQL failed: {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Polls `f` every 20 ms until it is true or `limit` passes; returns the time it took.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if f() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens `n` psql sessions at once (each holds its connection for a second) and returns the
/// set of `current_user`s they saw.
pub fn concurrent_users(url: &str, n: usize) -> std::collections::BTreeSet<String> {
    let children: Vec<_> = (0..n)
        .map(|_| psql_cmd(url).args(["-Atc", "SELECT current_user, pg_sleep(1)"]).stdout(std::process::Stdio::piped()).spawn().unwrap())
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", stderr(&out));
            stdout(&out).split('|').next().unwrap().to_string()
        })
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

/// leasegate as a separate process (`leasegate serve`), for crash tests.
pub struct LgProcess {
    pub addr: SocketAddr,
    pub client_password: String,
    pub config_path: std::path::PathBuf,
    pub log_path: std::path::PathBuf,
    child: Option<std::process::Child>,
    pub dir: TempDir,
    pub pg: PrivatePostgres,
}

impl LgProcess {
    pub fn start(setup: Setup) -> LgProcess {
        Self::start_edited(setup, |text, _| text)
    }

    /// Like `start`, with the config text changed by `edit` (given the text and the test's
    /// directory) before leasegate reads it.
    pub fn start_edited(setup: Setup, edit: impl FnOnce(String, &std::path::Path) -> String) -> LgProcess {
        let port = leasegate::devdb::free_port().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let Prepared { pg, dir, client_password, text } = prepare(&setup, &addr.to_string());
        let text = edit(text, dir.path());
        let config_path = dir.path().join("leasegate.toml");
        std::fs::write(&config_path, text).unwrap();
        let log_path = dir.path().join("leasegate.log");
        let mut p = LgProcess { addr, client_password, config_path, log_path, child: None, dir, pg };
        p.spawn();
        p
    }

    /// Starts the binary (again) and waits until it accepts connections.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_leasegate"))
            .args(["--log-level", "info,leasegate=debug", "serve", "--config"])
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(self.addr).is_ok());
        assert!(up.is_some(), "leasegate did not start: {}", self.log());
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn url(&self, login: &str, params: &str) -> String {
        leasegate_url(self.addr, &self.client_password, login, params)
    }

    pub fn minted_roles(&self) -> Vec<String> {
        minted_roles(&self.pg)
    }
}

impl LgProcess {
    /// SIGTERM, as an operator stops it; SIGKILL if it has not exited within 15 s.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = wait_until(Duration::from_secs(15), || child.try_wait().ok().flatten().is_some());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LgProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The leasegate binary run with `args` and `input` on its standard input.
pub fn leasegate_with_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_leasegate"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// config/leasegate.example.toml as check-config can load it: its secret files written in
/// `dir`, its TLS files left out.
pub fn loadable_example_config(dir: &std::path::Path) -> String {
    std::fs::write(dir.join("admin.secret"), "x").unwrap();
    std::fs::write(dir.join("admin.token"), "a-long-enough-admin-token").unwrap();
    include_str!("../../config/leasegate.example.toml")
        .replace("pg-admin.secret", &dir.join("admin.secret").display().to_string())
        .replace("mysql-admin.secret", &dir.join("admin.secret").display().to_string())
        .replace("\"admin.token\"", &format!("{:?}", dir.join("admin.token").display().to_string()))
        .replace("client_tls = { cert = \"tls/server.crt\", key = \"tls/server.key\", mode = \"optional\" }", "")
        .replace(", ca = \"tls/upstream-ca.pem\"", "")
}

/// A server certificate made as the MySQL manual's recipe makes it: a CA from `openssl req
/// -x509`, then `openssl x509 -req` without extensions, which gives an X.509 v1 leaf. Returns
/// the leaf with its key, and the CA (PEM).
pub fn openssl_v1_cert() -> (leasegate::devdb::CertPem, String) {
    let dir = TempDir::new("leasegate-v1cert").unwrap();
    let steps = [
        "openssl genrsa -out ca-key.pem 2048",
        "openssl req -new -x509 -nodes -days 3600 -key ca-key.pem -out ca.pem -subj /CN=leasegate-test-ca",
        "openssl req -newkey rsa:2048 -days 3600 -nodes -keyout server-key.pem -out server-req.pem -subj /CN=localhost",
        "openssl x509 -req -in server-req.pem -days 3600 -CA ca.pem -CAkey ca-key.pem -set_serial 01 -out server-cert.pem",
    ];
    for step in steps {
        let out = Command::new("sh").arg("-c").arg(step).current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "{step}: {}", stderr(&out));
    }
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    let text = Command::new("openssl").args(["x509", "-noout", "-text", "-in"]).arg(dir.path().join("server-cert.pem")).output().unwrap();
    assert!(stdout(&text).contains("Version: 1 (0x0)"), "openssl made a v3 certificate: {}", stdout(&text));
    (leasegate::devdb::CertPem { cert: read("server-cert.pem"), key: read("server-key.pem") }, read("ca.pem"))
}
