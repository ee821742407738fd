//! leasegate processes for tests that run several at once (fleet, issuer and sidecars).

use super::{ADMIN_TOKEN, admin_psql, wait_until};
use leasegate::admin::client::Client;
use leasegate::devdb::postgres::{PgOptions, PrivatePostgres};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

/// One leasegate process (`leasegate serve`) with its own config, log and directory, for tests
/// that run several: a fleet sharing a store, issuers and sidecars.
pub struct Instance {
    pub name: String,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    pub dir: PathBuf,
    pub child: Option<Child>,
}

impl Instance {
    /// An instance named `name` in `base/name`, not started: `config` gets the client listener's
    /// and the admin API's addresses (free ports) and the instance's directory, and returns the
    /// config text.
    pub fn configure(
        base: &std::path::Path,
        name: &str,
        config: impl FnOnce(SocketAddr, SocketAddr, &std::path::Path) -> String,
    ) -> Instance {
        let free = || -> SocketAddr { format!("127.0.0.1:{}", leasegate::devdb::free_port().unwrap()).parse().unwrap() };
        let (addr, admin) = (free(), free());
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("leasegate.toml");
        std::fs::write(&path, config(addr, admin, &dir)).unwrap();
        Instance { name: name.to_string(), addr, admin, config: path, log: dir.join("leasegate.log"), dir, child: None }
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_leasegate"))
            .args(["--log-level", "info,leasegate=debug", "serve", "--config"])
            .arg(&self.config)
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn wait_up(&self) {
        let up = wait_until(Duration::from_secs(30), || std::net::TcpStream::connect(self.addr).is_ok());
        assert!(up.is_some(), "{} did not start:\n{}", self.name, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn api(&self) -> Client {
        Client { addr: self.admin.to_string(), token: ADMIN_TOKEN.into() }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = wait_until(Duration::from_secs(20), || c.try_wait().ok().flatten().is_some());
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The shared store: a private cluster of its own (so it can be stopped while the upstream
/// runs), reached as a role that may only create a schema in its database.
pub struct Store {
    pub pg: PrivatePostgres,
    pub url: String,
}

impl Store {
    pub fn start() -> Store {
        let pg = PrivatePostgres::start(&PgOptions::default()).expect("the store's postgres starts");
        let password = format!("store-{}", leasegate::name::password().expose());
        admin_psql(&pg, &format!("CREATE ROLE leasegate_store LOGIN PASSWORD '{password}'"));
        // What docs/privileges.md lists for the store, no more.
        admin_psql(&pg, "GRANT CREATE ON DATABASE postgres TO leasegate_store");
        let url = format!("postgres://leasegate_store:{password}@127.0.0.1:{}/postgres", pg.port());
        Store { pg, url }
    }

    pub fn sql(&self, sql: &str) -> String {
        admin_psql(&self.pg, sql)
    }
}
