//! What `leasegate exec` and `creds` put in a program's environment, so each ecosystem's tools
//! find the credential with no flags:
//!
//! - Postgres: libpq's `PGHOST` `PGPORT` `PGUSER` `PGPASSWORD` `PGDATABASE` (psql, pg_dump,
//!   psycopg, node-postgres, pgJDBC via the URL) and `DATABASE_URL` (Rails, Django with
//!   dj-database-url, Prisma, sqlx).
//! - MySQL/MariaDB: `MYSQL_HOST`, `MYSQL_TCP_PORT` and `MYSQL_PWD`, which the client library reads;
//!   `MYSQL_USER`, which some scripts and images read (the mariadb client does not); and
//!   `DATABASE_URL` (`mysql://…`, no database: the admin database is not the application's).
//!   The mariadb client takes its user from option files only, so `exec` also writes a private
//!   `my.cnf` ([`OptionFile`]) and points `MARIADB_HOME`/`MYSQL_HOME` at its directory, which
//!   the client reads after `/etc/mysql/my.cnf` and before `~/.my.cnf`. (MySQL 8's own client
//!   reads `$MYSQL_HOME/my.cnf` only in the server; it still gets host, port and password.)

use crate::admin::leases::Creds;
use std::path::{Path, PathBuf};

/// The variables for `creds` (printed as `export` lines) and `exec` (set for the child).
pub fn vars(creds: &Creds) -> Vec<(&'static str, String)> {
    let host_in_url = if creds.host.contains(':') { format!("[{}]", creds.host) } else { creds.host.clone() };
    let userinfo = format!("{}:{}", super::encode(&creds.user), super::encode(&creds.password));
    match creds.kind.as_str() {
        "mysql" => vec![
            ("MYSQL_HOST", creds.host.clone()),
            ("MYSQL_TCP_PORT", creds.port.to_string()),
            ("MYSQL_PWD", creds.password.clone()),
            ("MYSQL_USER", creds.user.clone()),
            ("DATABASE_URL", format!("mysql://{userinfo}@{host_in_url}:{}", creds.port)),
        ],
        _ => vec![
            ("PGHOST", creds.host.clone()),
            ("PGPORT", creds.port.to_string()),
            ("PGUSER", creds.user.clone()),
            ("PGPASSWORD", creds.password.clone()),
            ("PGDATABASE", creds.dbname.clone()),
            ("DATABASE_URL", format!("postgres://{userinfo}@{host_in_url}:{}/{}", creds.port, super::encode(&creds.dbname))),
        ],
    }
}

/// A `my.cnf` only its owner can read, in a directory of its own, removed on drop.
pub struct OptionFile {
    dir: PathBuf,
}

impl OptionFile {
    /// Writes the `[client]` group for `creds` (MySQL credentials only; `None` otherwise).
    pub fn write(creds: &Creds) -> std::io::Result<Option<OptionFile>> {
        if creds.kind != "mysql" {
            return Ok(None);
        }
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = std::env::temp_dir().join(format!("leasegate-exec-{}-{:08x}", std::process::id(), rand::random::<u32>()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let file = OptionFile { dir };
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(file.path())?;
        std::io::Write::write_all(&mut out, client_group(creds).as_bytes())?;
        Ok(Some(file))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }

    /// The variables that make the mariadb client read it.
    pub fn vars(&self) -> [(&'static str, &Path); 2] {
        [("MARIADB_HOME", &self.dir), ("MYSQL_HOME", &self.dir)]
    }
}

impl Drop for OptionFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `protocol=tcp`: with `host=localhost` the client would otherwise try the server's Unix
/// socket, which is not where the credential points.
fn client_group(creds: &Creds) -> String {
    format!(
        "# Written by `leasegate exec` for lease {}; removed when the command exits.\n[client]\nuser={}\npassword={}\nhost={}\nport={}\nprotocol=tcp\n",
        creds.lease_id, creds.user, creds.password, creds.host, creds.port
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(kind: &str) -> Creds {
        Creds {
            lease_id: "l1".into(),
            database: "main".into(),
            kind: kind.into(),
            host: "db.internal".into(),
            port: 5432,
            dbname: "shop db".into(),
            user: "lg_ci_app_x".into(),
            password: "Pw1".into(),
            ttl_seconds: 60,
            expires_at: String::new(),
        }
    }

    #[test]
    fn postgres_gets_libpq_variables_and_a_url() {
        let vars = vars(&creds("postgres"));
        let get = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGUSER"), Some("lg_ci_app_x"));
        assert_eq!(get("PGDATABASE"), Some("shop db"));
        assert_eq!(get("DATABASE_URL"), Some("postgres://lg_ci_app_x:Pw1@db.internal:5432/shop%20db"));
    }

    #[test]
    fn mysql_gets_client_variables_a_url_without_the_admin_database_and_an_option_file() {
        let mut c = creds("mysql");
        c.host = "::1".into();
        let vars = vars(&c);
        assert!(vars.contains(&("MYSQL_PWD", "Pw1".into())) && vars.contains(&("MYSQL_TCP_PORT", "5432".into())));
        assert!(vars.contains(&("DATABASE_URL", "mysql://lg_ci_app_x:Pw1@[::1]:5432".into())));
        let file = OptionFile::write(&c).unwrap().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(file.path()).unwrap().permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(text.contains("[client]\nuser=lg_ci_app_x\npassword=Pw1\nhost=::1\nport=5432\nprotocol=tcp\n"), "{text}");
        let path = file.path();
        drop(file);
        assert!(!path.exists(), "removed on drop");
        assert!(OptionFile::write(&creds("postgres")).unwrap().is_none());
    }
}
