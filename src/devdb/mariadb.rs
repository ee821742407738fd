//! A private MariaDB server: `mariadb-install-db` into a temporary directory, then `mariadbd`
//! as a child on a free port, with an admin account that authenticates with a password
//! (mysql_native_password, which really checks it). Groundwork for the MySQL/MariaDB listener
//! (issue 4) and its tests; `leasegate dev` does not start it yet.

use super::keeper::Keeper;
use super::{CertPem, DevDbError, TempDir, chown_tree, free_port, io_err, run_as, service_account};
use crate::secret::Secret;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the admin account is granted (`{admin}` is its quoted name).
pub const ADMIN_GRANTS: [&str; 2] =
    ["GRANT CREATE USER, PROCESS, CONNECTION ADMIN ON *.* TO {admin}", "GRANT SELECT ON mysql.user TO {admin}"];

pub struct PrivateMariaDb {
    dir: TempDir,
    /// Serve TLS with the certificate at `tls_cert_path`.
    tls: bool,
    owner: Option<(u32, u32)>,
    /// `--max-connections` (300 unless set before a restart).
    max_connections: u32,
    server: Option<Keeper>,
    port: u16,
    pub admin_user: String,
    pub admin_password: Secret,
}

impl PrivateMariaDb {
    pub fn start() -> Result<Self, DevDbError> {
        Self::start_with(None)
    }

    /// `tls`: also serve TLS with this certificate (written to [`PrivateMariaDb::tls_cert_path`]).
    pub fn start_with(tls: Option<CertPem>) -> Result<Self, DevDbError> {
        let owner = service_account("mysql")?;
        let dir = TempDir::new("leasegate-mariadb")?;
        std::fs::create_dir_all(dir.path().join("data")).map_err(io_err("creating the data directory"))?;
        chown_tree(dir.path(), owner)?;
        let mut install = Command::new("mariadb-install-db");
        install.arg("--no-defaults").arg(format!("--datadir={}", dir.path().join("data").display())).args([
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ]);
        run_as(install, owner).map_err(|e| match e {
            DevDbError::Io { .. } => DevDbError::Missing("mariadb-install-db not found: install mariadb-server".into()),
            other => other,
        })?;
        if let Some(cert) = &tls {
            std::fs::write(dir.path().join("server.crt"), &cert.cert).map_err(io_err("writing the certificate"))?;
            std::fs::write(dir.path().join("server.key"), &cert.key).map_err(io_err("writing the key"))?;
            chown_tree(dir.path(), owner)?;
        }
        let mut db = PrivateMariaDb {
            tls: tls.is_some(),
            max_connections: 300,
            dir,
            owner,
            server: None,
            port: 0,
            admin_user: "leasegate_admin".into(),
            admin_password: crate::name::password(),
        };
        let mut last = None;
        for _ in 0..3 {
            match db.spawn(free_port()?) {
                Ok(()) => break,
                Err(e) => last = Some(e),
            }
        }
        if db.server.is_none() {
            return Err(last.unwrap_or_else(|| DevDbError::Missing("mariadbd did not start".into())));
        }
        // Exactly the privileges docs/privileges.md lists (roles add ADMIN OPTION on their
        // `member_of` roles); tests/least_privilege.rs checks the document says the same.
        db.root_sql(&format!("CREATE USER '{u}'@'%' IDENTIFIED BY '{p}'", u = db.admin_user, p = db.admin_password.expose()))?;
        for grant in ADMIN_GRANTS {
            db.root_sql(&grant.replace("{admin}", &format!("'{}'@'%'", db.admin_user)))?;
        }
        Ok(db)
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("mysqld.sock")
    }

    pub fn tls_cert_path(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    fn spawn(&mut self, port: u16) -> Result<(), DevDbError> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", self.dir.path().join("data").display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", self.socket().display()))
            .arg(format!("--pid-file={}", self.dir.path().join("mysqld.pid").display()))
            .arg(format!("--log-error={}", self.log_path().display()))
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=64M", "--max-allowed-packet=64M"])
            .arg(format!("--max-connections={}", self.max_connections))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.tls {
            cmd.arg(format!("--ssl-cert={}", self.tls_cert_path().display()))
                .arg(format!("--ssl-key={}", self.dir.path().join("server.key").display()));
        }
        if let Some((uid, gid)) = self.owner {
            // Set here, not with --user: a server dropping privileges itself clears PDEATHSIG.
            cmd.uid(uid).gid(gid);
        }
        self.server = Some(Keeper::spawn_with(cmd, libc::SIGTERM, libc::SIGKILL)?);
        self.port = port;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.server.as_ref().and_then(Keeper::exited) {
                self.server = None;
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err(DevDbError::Command { command: "mariadbd".into(), output: format!("exited with {status}: {log}") });
            }
            if self.root_sql("SELECT 1").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(DevDbError::NotReady(Duration::from_secs(60), std::fs::read_to_string(self.log_path()).unwrap_or_default()))
    }

    /// Runs SQL as root over the private socket (root has no password and no TCP access).
    pub fn root_sql(&self, sql: &str) -> Result<String, DevDbError> {
        let mut cmd = Command::new("mariadb");
        cmd.arg("--no-defaults").arg(format!("--socket={}", self.socket().display())).args(["-uroot", "-N", "-B", "-e", sql]);
        run_as(cmd, None)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }

    /// `--max-connections` from the next (re)start on.
    pub fn set_max_connections(&mut self, n: u32) {
        self.max_connections = n;
    }

    /// Stops the server and starts it again on the same port (fault tests).
    pub fn restart(&mut self) -> Result<(), DevDbError> {
        self.stop();
        let port = self.port;
        self.spawn(port)
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}
