//! A private PostgreSQL cluster: `initdb` with scram-sha-256 for every connection, then the
//! `postgres` server as a child process on a free port.

use super::keeper::Keeper;
use super::{CertPem, DevDbError, TempDir, chown_tree, free_port, io_err, run_as, service_account};
use crate::secret::Secret;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct PrivatePostgres {
    dir: TempDir,
    bindir: PathBuf,
    owner: Option<(u32, u32)>,
    child: Option<Keeper>,
    port: u16,
    pub superuser: String,
    pub password: Secret,
}

/// Options for [`PrivatePostgres::start`].
#[derive(Default, Clone)]
pub struct PgOptions {
    /// Extra `-c name=value` server settings (e.g. `log_statement=all`).
    pub settings: Vec<(String, String)>,
    /// Serve TLS with a self-signed certificate for `localhost` and `127.0.0.1`
    /// (its PEM is at [`PrivatePostgres::tls_cert_path`]).
    pub tls: bool,
    /// The certificate `tls` serves instead of a self-signed one.
    pub cert: Option<CertPem>,
    /// Replaces the pg_hba.conf initdb wrote (e.g. to ask minted users for a cleartext password).
    pub hba: Option<String>,
}

impl PrivatePostgres {
    pub fn start(options: &PgOptions) -> Result<Self, DevDbError> {
        let bindir = bindir()?;
        let owner = service_account("postgres")?;
        let dir = TempDir::new("leasegate-pg")?;
        let password = crate::name::password();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, password.expose()).map_err(io_err("writing the password file"))?;
        chown_tree(dir.path(), owner)?;
        // Only the server's account (and root) may look inside: dev mode keeps secrets here.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io_err("chmod the cluster directory"))?;
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "leasegate_admin", "--auth=scram-sha-256", "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run_as(initdb, owner)?;
        let _ = std::fs::remove_file(&pwfile);
        if let Some(hba) = &options.hba {
            let path = dir.path().join("data").join("pg_hba.conf");
            std::fs::write(&path, hba).map_err(io_err("writing pg_hba.conf"))?;
            chown_tree(&path, owner)?;
        }
        let mut pg = PrivatePostgres { dir, bindir, owner, child: None, port: 0, superuser: "leasegate_admin".into(), password };
        pg.launch(options)?;
        Ok(pg)
    }

    /// Starts the server on a free port; retries if another process takes the port first.
    fn launch(&mut self, options: &PgOptions) -> Result<(), DevDbError> {
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match self.spawn(port, options) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| DevDbError::Missing("could not start postgres".into())))
    }

    fn spawn(&mut self, port: u16, options: &PgOptions) -> Result<(), DevDbError> {
        use std::os::unix::process::CommandExt;
        self.stop();
        let log = std::fs::File::create(self.log_path()).map_err(io_err("creating the server log"))?;
        chown_tree(&self.log_path(), self.owner)?;
        let mut cmd = Command::new(self.bindir.join("postgres"));
        cmd.arg("-D").arg(self.dir.path().join("data")).arg("-p").arg(port.to_string());
        let mut settings: Vec<(String, String)> = [
            ("listen_addresses", "127.0.0.1"),
            ("unix_socket_directories", &self.dir.path().display().to_string()),
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("max_connections", "300"),
            ("shared_buffers", "64MB"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if options.tls {
            let cert = match &options.cert {
                Some(cert) => cert.clone(),
                None => CertPem::self_signed()?,
            };
            settings.extend(self.write_tls_files(&cert)?);
        }
        settings.extend(options.settings.iter().cloned());
        for (k, v) in &settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        let stderr = log.try_clone().map_err(io_err("opening the server log"))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(stderr);
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(Keeper::spawn(cmd)?);
        self.port = port;
        match self.wait_ready(Duration::from_secs(30)) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.stop();
                Err(e)
            }
        }
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), DevDbError> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.as_ref().and_then(Keeper::exited) {
                return Err(DevDbError::Command { command: "postgres".into(), output: format!("exited with {status}: {}", self.log()) });
            }
            let ready = Command::new(self.bindir.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(DevDbError::NotReady(limit, self.log()))
    }

    fn write_tls_files(&self, cert: &CertPem) -> Result<Vec<(String, String)>, DevDbError> {
        use std::os::unix::fs::PermissionsExt;
        let key_path = self.dir.path().join("server.key");
        std::fs::write(self.tls_cert_path(), &cert.cert).map_err(io_err("writing server.crt"))?;
        std::fs::write(&key_path, &cert.key).map_err(io_err("writing server.key"))?;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).map_err(io_err("chmod server.key"))?;
        chown_tree(&key_path, self.owner)?;
        chown_tree(&self.tls_cert_path(), self.owner)?;
        Ok(vec![
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), self.tls_cert_path().display().to_string()),
            ("ssl_key_file".into(), key_path.display().to_string()),
        ])
    }

    /// The server certificate (PEM) when started with `tls: true`.
    pub fn tls_cert_path(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A `postgres://` URL for the superuser (the password included: for tests and dev only).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{}:{}@127.0.0.1:{}/{database}", self.superuser, self.password.expose(), self.port)
    }

    pub fn keep_files(&mut self) {
        self.dir.keep();
    }

    /// Fast shutdown (SIGINT), then SIGKILL if it has not exited within 10 s.
    pub fn stop(&mut self) {
        if let Some(keeper) = self.child.take() {
            keeper.stop();
        }
    }

    /// Starts a stopped server again on the same port (tests of revocation retries).
    pub fn restart(&mut self, options: &PgOptions) -> Result<(), DevDbError> {
        self.stop();
        let port = self.port;
        self.spawn(port, options)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `pg_config --bindir`, or the newest /usr/lib/postgresql/*/bin.
pub fn bindir() -> Result<PathBuf, DevDbError> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().ok_or_else(|| DevDbError::Missing("PostgreSQL server binaries (initdb) not found: install postgresql".into()))
}
