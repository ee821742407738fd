//! `leasegate dev`: a private PostgreSQL and a private MariaDB (when its packages are
//! installed), a generated config and a leasegate in front of both, with its admin API (a
//! generated token in a 0600 file) and audit log, like `vault server -dev`. It prints lines to
//! paste: connection strings, then `export LEASEGATE_ADDR=… LEASEGATE_TOKEN=…` and the CLI and
//! `/metrics` commands. Ctrl-C revokes every lease, stops the servers and removes their files.

use crate::devdb::mariadb::PrivateMariaDb;
use crate::devdb::postgres::{PgOptions, PrivatePostgres};
use crate::net::listener::Bound;
use crate::{app, config::Config, net::tls, shutdown};
use anyhow::Context;

/// The ports asked for on the command line (`None`: the usual one when free).
pub struct Ports {
    pub pg: Option<u16>,
    pub mysql: Option<u16>,
    pub admin: Option<u16>,
}

pub async fn run(ports: Ports, keep: bool) -> anyhow::Result<()> {
    // 6432 is PgBouncer's port too: when something holds it, take a free one instead of failing.
    let port = listen_port(ports.pg, 6432, "psql")?;
    let my_port = listen_port(ports.mysql, 3307, "mariadb")?;
    let admin_port = listen_port(ports.admin, 9187, "LEASEGATE_ADDR")?;
    let (pg, maria) = start_servers(keep).await?;
    let dir = pg.dir().to_path_buf();
    let client_password = crate::name::password();
    let verifier = crate::auth::hash::client_password_value(&client_password);
    // The admin API's bearer token: random, in a file only this user can read.
    let token = crate::name::password();
    write_private(&dir.join("admin.token"), token.expose())?;
    let (cert, key) = tls::self_signed(&["localhost", "127.0.0.1"])?;
    std::fs::write(dir.join("tls.crt"), cert)?;
    write_private(&dir.join("tls.key"), &key)?;

    let mut text = dev_config(port, pg.port(), admin_port, &dir, &verifier, maria.is_some());
    if let Some(m) = &maria {
        text.push_str(&dev_mysql_config(my_port, m, &dir));
    }
    let config_path = dir.join("leasegate.toml");
    write_private(&config_path, &text)?;
    let config = Config::from_toml_str(&text).context("the generated dev config")?;
    let listeners = app::bind(&config).await?;
    let listen = listeners.databases.get("dev").and_then(|l| l.iter().find_map(Bound::local_addr)).context("no listener")?;
    let my_listen = listeners.databases.get("dev_mysql").and_then(|l| l.iter().find_map(Bound::local_addr));
    let admin = listeners.admin.as_ref().and_then(|l| l.local_addr().ok()).context("no admin listener")?;

    println!("leasegate dev is running.");
    println!("  PostgreSQL (private, scram-sha-256): 127.0.0.1:{}", pg.port());
    println!("  config:  {}", config_path.display());
    println!("  connect: psql \"postgres://dev:{}@{listen}/postgres\"", client_password.expose());
    println!(
        "  connect (this OS user, no password): psql \"host={} port={} user={} dbname=postgres\"",
        dir.display(),
        listen.port(),
        local_client_name()
    );
    if let (Some(m), Some(addr)) = (&maria, my_listen) {
        println!("  MariaDB (private, real passwords): {}", m.addr());
        println!(
            "  connect: mariadb -h {} -P {} -u dev/dev_mysql_rw --password={} devdb",
            addr.ip(),
            addr.port(),
            client_password.expose()
        );
    }
    println!("Each connection gets its own short-lived user (try: SELECT current_user; or SELECT CURRENT_USER();).");
    print_admin_lines(admin, &token, maria.is_some());
    println!("Ctrl-C drops every minted user and removes the cluster.");

    let signals = shutdown::Signals::new();
    signals.watch_process_signals();
    let result = app::run(config, listeners, signals).await;
    tokio::task::spawn_blocking(move || {
        drop(maria);
        drop(pg)
    })
    .await?;
    result?;
    Ok(())
}

/// The private PostgreSQL (its directory holds everything dev writes) and, when its packages
/// are installed, the private MariaDB, both prepared with a group role for the dev users.
async fn start_servers(keep: bool) -> anyhow::Result<(PrivatePostgres, Option<PrivateMariaDb>)> {
    eprintln!("leasegate dev: starting a private PostgreSQL…");
    let mut pg = tokio::task::spawn_blocking(|| PrivatePostgres::start(&PgOptions::default())).await??;
    if keep {
        pg.keep_files();
    }
    let admin_password = prepare_cluster(&pg).await.context("preparing the private cluster")?;
    write_private(&pg.dir().join("admin.secret"), admin_password.expose())?;
    eprintln!("leasegate dev: starting a private MariaDB…");
    let maria = match tokio::task::spawn_blocking(PrivateMariaDb::start).await? {
        Ok(m) => {
            prepare_mariadb(&m)?;
            write_private(&pg.dir().join("mariadb-admin.secret"), m.admin_password.expose())?;
            Some(m)
        }
        Err(e) => {
            eprintln!("leasegate dev: no MariaDB listener ({e}); install mariadb-server for one");
            None
        }
    };
    Ok((pg, maria))
}

/// The admin API and CLI, as lines to paste into another shell: the `export` line first, then
/// one command each (indented four spaces, which `tests/cli.rs` runs as printed).
fn print_admin_lines(admin: std::net::SocketAddr, token: &crate::secret::Secret, mysql: bool) {
    let lg = self_command();
    println!("Admin API and CLI (paste into another shell):");
    println!("    export LEASEGATE_ADDR={admin} LEASEGATE_TOKEN={}", token.expose());
    println!("    {lg} leases list");
    println!("    {lg} creds dev_rw");
    println!("    {lg} exec --role dev_rw -- psql -Atc 'SELECT current_user'");
    if mysql {
        println!("    {lg} exec --role dev_mysql_rw -- mariadb -N -e 'SELECT CURRENT_USER()'");
    }
    println!("    curl -s http://{admin}/metrics | grep '^leasegate_leases'");
}

/// How a shell reaches this binary: `leasegate` when that is what PATH finds, else its full
/// path (`cargo run` builds it in target/, which is not on PATH).
fn self_command() -> String {
    let Ok(exe) = std::env::current_exe() else { return "leasegate".into() };
    let on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("leasegate").canonicalize().is_ok_and(|f| f == exe)));
    let path = exe.display().to_string();
    if on_path {
        "leasegate".into()
    } else if path.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b)) {
        path
    } else {
        format!("'{}'", path.replace('\'', "'\\''"))
    }
}

/// The port asked for (0: a free one), else `preferred` when it is free, else a free one. Always
/// a concrete port: two listeners on "port 0" would be one address to the config check.
fn listen_port(asked: Option<u16>, preferred: u16, client: &str) -> anyhow::Result<u16> {
    match asked {
        Some(0) => Ok(crate::devdb::free_port()?),
        Some(p) => Ok(p),
        None if std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok() => Ok(preferred),
        None => {
            eprintln!("leasegate dev: 127.0.0.1:{preferred} is taken; using a free port (see the {client} line below)");
            Ok(crate::devdb::free_port()?)
        }
    }
}

/// Writes a file only its owner can read (the dev cluster's superuser password is in there).
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?.write_all(text.as_bytes())
}

/// A group role the dev users join, with the rights an application usually has, and the admin
/// leasegate uses: not the cluster's superuser, only what docs/privileges.md lists. Returns the
/// admin's password.
async fn prepare_cluster(pg: &PrivatePostgres) -> anyhow::Result<crate::secret::Secret> {
    use sqlx::Connection;
    let password = crate::name::password();
    let mut conn = sqlx::PgConnection::connect(&pg.url("postgres")).await?;
    let sql = format!(
        "CREATE ROLE dev_app NOLOGIN; GRANT ALL ON SCHEMA public TO dev_app; GRANT CREATE, TEMPORARY ON DATABASE postgres TO dev_app;
         CREATE ROLE {DEV_PG_ADMIN} LOGIN CREATEROLE PASSWORD {pw}; GRANT pg_signal_backend TO {DEV_PG_ADMIN};
         GRANT dev_app TO {DEV_PG_ADMIN} WITH ADMIN OPTION",
        pw = crate::pg::provision::quote_literal(password.expose())
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
    conn.close().await?;
    Ok(password)
}

/// The Postgres admin `leasegate dev` configures (the cluster's superuser is `leasegate_admin`).
const DEV_PG_ADMIN: &str = "leasegate_minter";

/// A database and a role with the rights an application usually has, for the MySQL dev users.
fn prepare_mariadb(m: &PrivateMariaDb) -> anyhow::Result<()> {
    m.root_sql(&format!(
        "CREATE DATABASE devdb; CREATE ROLE dev_app; GRANT ALL ON devdb.* TO dev_app; GRANT dev_app TO '{}'@'%' WITH ADMIN OPTION;",
        m.admin_user
    ))?;
    Ok(())
}

fn dev_mysql_config(port: u16, m: &PrivateMariaDb, dir: &std::path::Path) -> String {
    format!(
        r#"
[[database]]
name = "dev_mysql"
kind = "mysql"
listen = "127.0.0.1:{port}"
upstream = "{upstream}"
admin_user = "{admin}"
admin_password_file = "{dir}/mariadb-admin.secret"
name_prefix = "lg_"
client_tls = {{ cert = "{dir}/tls.crt", key = "{dir}/tls.key", mode = "optional" }}
upstream_tls = {{ mode = "disable" }}

[[role]]
name = "dev_mysql_rw"
database = "dev_mysql"
default_ttl = "1h"
max_ttl = "8h"
member_of = ["dev_app"]
"#,
        upstream = m.addr(),
        admin = m.admin_user,
        dir = dir.display()
    )
}

fn dev_config(port: u16, pg_port: u16, admin_port: u16, dir: &std::path::Path, verifier: &str, with_mysql: bool) -> String {
    format!(
        r#"# Generated by `leasegate dev`.
[admin]
listen = "127.0.0.1:{admin_port}"
token_file = "{dir}/admin.token"

[audit]
path = "{dir}/audit.jsonl"

[journal]
path = "{dir}/journal.db"

[[database]]
name = "dev"
kind = "postgres"
listen = ["127.0.0.1:{port}", "unix:{dir}/.s.PGSQL.{port}"]
upstream = "127.0.0.1:{pg_port}"
admin_user = "{DEV_PG_ADMIN}"
admin_password_file = "{dir}/admin.secret"
name_prefix = "lg_"
client_tls = {{ cert = "{dir}/tls.crt", key = "{dir}/tls.key", mode = "optional" }}
upstream_tls = {{ mode = "prefer" }}

[[role]]
name = "dev_rw"
database = "dev"
default_ttl = "1h"
max_ttl = "8h"
member_of = ["dev_app"]

[[client]]
name = "dev"
password = "{verifier}"
roles = ["dev_rw"{mysql_role}]

# This OS user, on the Unix socket: no password at all (the kernel says who connects).
[[client]]
name = "{me}"
peer = {{ uid = {uid} }}
roles = ["dev_rw"]
"#,
        me = local_client_name(),
        uid = crate::peer::current_uid(),
        mysql_role = if with_mysql { ", \"dev_mysql_rw\"" } else { "" },
        dir = dir.display()
    )
}

/// The peer client's name: this OS user's name, so psql's default user name is already right.
fn local_client_name() -> String {
    crate::peer::user_name(crate::peer::current_uid())
        .filter(|n| !n.is_empty() && !n.contains(['/', '"', '\\']))
        .unwrap_or_else(|| "local".into())
}

/// Turns terminal echo off while alive (for `hash-password`'s prompt).
pub struct EchoOff {
    saved: Option<libc::termios>,
}

impl EchoOff {
    pub fn new() -> Self {
        // SAFETY: termios calls on stdin with a zeroed struct that tcgetattr fills.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return EchoOff { saved: None };
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
            EchoOff { saved: Some(saved) }
        }
    }
}

impl Default for EchoOff {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = self.saved {
            // SAFETY: restores the attributes read in new().
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &saved) };
        }
    }
}
