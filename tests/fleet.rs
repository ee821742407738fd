//! Many leasegates, one database (DESIGN §2b): leasegate processes sharing one private Postgres
//! as their lease store, in front of a private Postgres upstream. Instances that never harm each
//! other, a dead instance's leases revoked by a live one, a frozen one that comes back and lets
//! go, the store going away under load, and instances starting at once against an empty store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use leasegate::devdb::TempDir;
use leasegate::devdb::mariadb::PrivateMariaDb;
use leasegate::devdb::postgres::{PgOptions, PrivatePostgres};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::process::{Instance, Store};
use support::*;

/// Short, so the tests are: heartbeats every 600 ms, a silent instance is dead after 3 s.
const TAKEOVER_AFTER: Duration = Duration::from_secs(3);

/// The server the fleet mints on.
enum Upstream {
    Pg(PrivatePostgres),
    My(PrivateMariaDb),
}

/// The upstream, the store and the config every instance shares (each with its own id and ports).
struct Fleet {
    // Instances are declared first: they stop (revoking their users) before the servers do.
    instances: Vec<Instance>,
    store: Store,
    client_password: String,
    text: String,
    dir: TempDir,
    upstream: Upstream,
}

impl Fleet {
    /// The servers, and `n` instances started one after another.
    fn start(n: usize) -> Fleet {
        let mut fleet = Fleet::prepare();
        for _ in 0..n {
            fleet.add();
        }
        fleet
    }

    fn prepare() -> Fleet {
        let setup = Setup { admin_api: true, database_extra: "sweep_orphans = true".into(), ..Setup::default() };
        let Prepared { pg, dir, client_password, text } = prepare(&setup, "LISTEN_ADDR");
        let store = Store::start();
        std::fs::write(dir.path().join("store.url"), &store.url).unwrap();
        let journal = format!(
            "[journal]\nurl_file = \"{}/store.url\"\ninstance = \"INSTANCE_ID\"\ntakeover_after = \"{}s\"\n",
            dir.path().display(),
            TAKEOVER_AFTER.as_secs()
        );
        let text = text
            .replace(&format!("[journal]\npath = \"{}/journal.db\"\ninstance = \"{INSTANCE}\"\n", dir.path().display()), &journal)
            .replace("listen = \"127.0.0.1:0\"", "listen = \"ADMIN_ADDR\"")
            .replace(&format!("path = \"{}/audit.jsonl\"", dir.path().display()), "path = \"AUDIT_PATH\"");
        assert!(text.contains("url_file") && text.contains("ADMIN_ADDR") && text.contains("AUDIT_PATH"), "{text}");
        Fleet { instances: vec![], store, client_password, text, dir, upstream: Upstream::Pg(pg) }
    }

    /// Like `prepare`, in front of a private MariaDB (its admin with the documented grants).
    fn prepare_mariadb() -> Fleet {
        let db = PrivateMariaDb::start().expect("private mariadb starts");
        db.root_sql("CREATE DATABASE appdb; CREATE ROLE app_group; GRANT ALL ON appdb.* TO app_group; GRANT app_group TO leasegate_admin WITH ADMIN OPTION;")
            .unwrap();
        let store = Store::start();
        let dir = TempDir::new("leasegate-fleet-my").unwrap();
        let d = dir.path().display();
        std::fs::write(dir.path().join("store.url"), &store.url).unwrap();
        std::fs::write(dir.path().join("admin.secret"), db.admin_password.expose()).unwrap();
        std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
        let client_password = format!("pw-{}", leasegate::name::password().expose());
        let value = leasegate::auth::hash::client_password_value(&leasegate::secret::Secret::new(client_password.clone()));
        let text = format!(
            r#"
[admin]
listen = "ADMIN_ADDR"
token_file = "{d}/admin.token"

[audit]
path = "AUDIT_PATH"

[journal]
url_file = "{d}/store.url"
instance = "INSTANCE_ID"
takeover_after = "{takeover}s"

[service]
shutdown_grace = "0s"

[[database]]
name = "main"
kind = "mysql"
listen = "LISTEN_ADDR"
upstream = "{upstream}"
admin_user = "{admin}"
admin_password_file = "{d}/admin.secret"
name_prefix = "{PREFIX}"
upstream_tls = {{ mode = "disable" }}
connect_timeout = "3s"

[[role]]
name = "app"
database = "main"
default_ttl = "1h"
max_ttl = "24h"
member_of = ["app_group"]

[[client]]
name = "ci"
password = "{value}"
roles = ["app"]
"#,
            takeover = TAKEOVER_AFTER.as_secs(),
            upstream = db.addr(),
            admin = db.admin_user,
        );
        Fleet { instances: vec![], store, client_password, text, dir, upstream: Upstream::My(db) }
    }

    /// Writes the config of the next instance (`lg-0`, `lg-1`, …) without starting it.
    fn configure(&mut self) -> &mut Instance {
        let name = format!("lg-{}", self.instances.len());
        let instance = Instance::configure(self.dir.path(), &name, |addr, admin, dir| {
            self.text
                .replace("LISTEN_ADDR", &addr.to_string())
                .replace("ADMIN_ADDR", &admin.to_string())
                .replace("INSTANCE_ID", &name)
                .replace("AUDIT_PATH", &dir.join("audit.jsonl").display().to_string())
        });
        self.instances.push(instance);
        self.instances.last_mut().unwrap()
    }

    fn add(&mut self) {
        let instance = self.configure();
        instance.spawn();
        instance.wait_up();
    }

    /// Plain TCP: with libpq's default `sslmode=prefer` a login refused on the TLS attempt is
    /// tried again without TLS, and a session whose lease was revoked while it connected would
    /// then come back on a fresh lease (seen in the frozen-instance test).
    fn url(&self, i: usize, login: &str) -> String {
        leasegate_url(self.instances[i].addr, &self.client_password, login, "sslmode=disable")
    }

    /// A session through instance `i` that sleeps `seconds` and then says who it was.
    fn session(&self, i: usize, seconds: u32) -> Child {
        psql_cmd(&self.url(i, "ci"))
            .args(["-Atc", &format!("SELECT pg_sleep({seconds}); SELECT current_user")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn minted(&self) -> Vec<String> {
        match &self.upstream {
            Upstream::Pg(pg) => minted_roles(pg),
            Upstream::My(db) => {
                let sql = format!("SELECT User FROM mysql.user WHERE LEFT(User, {n}) = '{PREFIX}'", n = PREFIX.len());
                db.root_sql(&sql).unwrap().lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
            }
        }
    }

    /// `n` credentials for direct use from instance `i` (each a lease with its user).
    fn creds(&self, i: usize, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let body = self.instances[i].api().call("POST", "/v1/creds/app", Some("{}")).unwrap();
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                v["lease_id"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

fn finished(child: Child) -> (bool, String, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.success(), stdout(&out), stderr(&out))
}

fn logs(fleet: &Fleet) -> String {
    fleet.instances.iter().map(|i| format!("--- {}\n{}", i.name, i.log())).collect()
}

#[test]
fn a_second_instance_on_the_same_prefix_never_harms_the_firsts_session() {
    let mut fleet = Fleet::start(1);
    let session = fleet.session(0, 6);
    assert!(wait_until(Duration::from_secs(10), || fleet.minted().len() == 1).is_some());
    fleet.add();
    let second = &fleet.instances[1];
    assert!(
        wait_until(Duration::from_secs(10), || second.log().contains("orphan sweep done")).is_some(),
        "the second instance swept: {}",
        second.log()
    );
    let (ok, out, err) = finished(session);
    assert!(ok, "the first instance's session survived the second's start: {err}\n{}", logs(&fleet));
    assert!(out.starts_with(PREFIX), "{out}");
    // Either instance lists both instances' leases.
    let held = fleet.session(0, 3);
    assert!(wait_until(Duration::from_secs(10), || fleet.minted().len() == 1).is_some());
    let listed = fleet.instances[1].api().call("GET", "/v1/leases", None).unwrap();
    assert!(listed.contains("\"instance\":\"lg-0\""), "the second instance lists the first's lease: {listed}");
    assert!(finished(held).0);
    assert!(wait_until(Duration::from_secs(10), || fleet.minted().is_empty()).is_some(), "{:?}", fleet.minted());
}

#[test]
fn instances_starting_at_once_against_an_empty_store_make_one_schema() {
    let mut fleet = Fleet::prepare();
    for _ in 0..3 {
        fleet.configure();
    }
    for i in &mut fleet.instances {
        i.spawn();
    }
    for i in &fleet.instances {
        i.wait_up();
    }
    // Each migration applied once (two so far: the schema, then the sidecar column).
    let versions = fleet.store.sql("SELECT count(*), count(DISTINCT version), max(version) FROM leasegate.schema_version");
    assert_eq!(versions, "2|2|2", "{}", logs(&fleet));
    // A store at version 1, as an older leasegate left it, is moved to the newest at start.
    fleet.store.sql("ALTER TABLE leasegate.leases DROP COLUMN held_by; DELETE FROM leasegate.schema_version WHERE version = 2");
    fleet.instances[0].terminate();
    fleet.instances[0].spawn();
    fleet.instances[0].wait_up();
    assert_eq!(fleet.store.sql("SELECT count(*), max(version) FROM leasegate.schema_version"), "2|2");
    let column = "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'leasegate' AND column_name = 'held_by'";
    assert_eq!(fleet.store.sql(column), "1");
    assert_eq!(fleet.store.sql("SELECT count(*) FROM leasegate.instances"), "3");
    for i in 0..3 {
        let out = psql_cmd(&fleet.url(i, "ci")).args(["-Atc", "SELECT 1"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

#[test]
fn a_killed_instances_leases_are_revoked_by_the_survivors_that_leave_their_own_alone() {
    let mut fleet = Fleet::start(3);
    let survivor_sessions: Vec<Child> = (1..3).map(|i| fleet.session(i, 20)).collect();
    let victims = fleet.creds(0, 48);
    let victim_sessions: Vec<Child> = (0..2).map(|_| fleet.session(0, 60)).collect();
    assert!(wait_until(Duration::from_secs(15), || fleet.minted().len() == 52).is_some(), "{}", fleet.minted().len());
    fleet.instances[0].kill9();
    let killed = Instant::now();
    let gone = wait_until(TAKEOVER_AFTER + Duration::from_secs(10), || fleet.minted().len() == 2);
    assert!(gone.is_some(), "{} users left after {:?}:\n{}", fleet.minted().len(), killed.elapsed(), logs(&fleet));
    // The journal says who revoked each (one of the survivors, which may split them), and why.
    for id in &victims {
        let row = fleet
            .store
            .sql(&format!("SELECT state, end_reason, taken_from, ended_by IN ('lg-1', 'lg-2') FROM leasegate.leases WHERE id = '{id}'"));
        assert_eq!(row, "ended|recovered|lg-0|t", "{id}");
    }
    for s in victim_sessions {
        assert!(!finished(s).0, "a session of the killed instance cannot outlive it");
    }
    for s in survivor_sessions {
        let (ok, out, err) = finished(s);
        assert!(ok && out.starts_with(PREFIX), "the survivors' own sessions are untouched: {err}");
    }
    let dead = fleet.store.sql("SELECT dead_at IS NOT NULL, taken_by IN ('lg-1', 'lg-2') FROM leasegate.instances WHERE id = 'lg-0'");
    assert_eq!(dead, "t|t");
}

#[test]
fn a_frozen_instance_comes_back_lets_go_of_its_leases_and_revokes_nothing_twice() {
    let fleet = Fleet::start(2);
    let frozen_leases = fleet.creds(0, 5);
    let frozen_session = fleet.session(0, 30);
    assert!(wait_until(Duration::from_secs(10), || fleet.minted().len() == 6).is_some());
    fleet.instances[0].signal(libc::SIGSTOP);
    assert!(
        wait_until(TAKEOVER_AFTER + Duration::from_secs(10), || fleet.minted().is_empty()).is_some(),
        "the live instance revoked the frozen one's users: {:?}\n{}",
        fleet.minted(),
        logs(&fleet)
    );
    fleet.instances[0].signal(libc::SIGCONT);
    let frozen = &fleet.instances[0];
    assert!(
        wait_until(Duration::from_secs(10), || frozen.log().contains("declared dead by the fleet")).is_some(),
        "the frozen instance noticed: {}",
        frozen.log()
    );
    let (ok, out, err) = finished(frozen_session);
    assert!(!ok, "its session was closed: {out} {err}\n{}", logs(&fleet));
    // Every lease ended once, by the live instance; the frozen one journaled no end of them.
    let ended =
        fleet.store.sql("SELECT count(*) FROM leasegate.leases WHERE instance = 'lg-1' AND ended_by = 'lg-1' AND taken_from = 'lg-0'");
    assert_eq!(ended, "6");
    for id in &frozen_leases {
        assert!(
            !frozen.log().lines().any(|l| l.contains(id.as_str()) && l.contains("lease ended")),
            "{id} ended by the frozen instance too"
        );
    }
    // It registered again and grants as a new epoch.
    let out = psql_cmd(&fleet.url(0, "ci")).args(["-Atc", "SELECT current_user"]).output().unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), frozen.log());
    assert_eq!(fleet.store.sql("SELECT epoch FROM leasegate.instances WHERE id = 'lg-0'"), "2");
    assert!(wait_until(Duration::from_secs(10), || fleet.minted().is_empty()).is_some());
}

#[test]
fn the_api_of_any_instance_revokes_a_lease_another_instance_owns() {
    let fleet = Fleet::start(2);
    let session = fleet.session(0, 30);
    assert!(wait_until(Duration::from_secs(10), || fleet.minted().len() == 1).is_some());
    let listed = fleet.instances[1].api().call("GET", "/v1/leases", None).unwrap();
    let leases: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let theirs = leases.iter().find(|l| l["instance"] == "lg-0").expect("the other instance's lease is listed");
    let id = theirs["id"].as_str().unwrap();
    let started = Instant::now();
    let revoked = fleet.instances[1].api().call("POST", &format!("/v1/leases/{id}/revoke"), Some("{}")).unwrap();
    assert!(revoked.contains("\"state\":\"ended\""), "{revoked}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(fleet.minted().is_empty());
    let (ok, _, _) = finished(session);
    assert!(!ok, "the session behind the owning instance ended");
    assert_eq!(fleet.store.sql(&format!("SELECT ended_by FROM leasegate.leases WHERE id = '{id}'")), "lg-0");
}

#[test]
fn when_the_store_goes_away_sessions_go_on_new_logins_fail_closed_and_all_recovers() {
    let mut fleet = Fleet::start(2);
    // Sessions that run a query every 200 ms throughout the outage.
    let script = "SELECT pg_sleep(0.2);\n".repeat(150);
    let script_path = fleet.dir.path().join("steady.sql");
    std::fs::write(&script_path, script).unwrap();
    let steady: Vec<Child> = (0..2)
        .map(|i| {
            psql_cmd(&fleet.url(i, "ci"))
                .args(["-v", "ON_ERROR_STOP=1", "-Atf"])
                .arg(&script_path)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || fleet.minted().len() == 2).is_some());
    fleet.store.pg.stop();
    let outage = Instant::now();
    // New logins get the server-shaped "too many clients" error, with the reason.
    let mut refused = 0;
    while outage.elapsed() < Duration::from_secs(20) {
        let out = psql_cmd(&fleet.url(0, "ci")).args(["-Atc", "SELECT 1"]).output().unwrap();
        if !out.status.success() {
            let err = stderr(&out);
            assert!(err.contains("too many clients") && err.contains("lease store"), "{err}");
            refused += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(refused > 0, "logins were refused during the outage");
    let metrics = fleet.instances[0].api().call("GET", "/metrics", None).unwrap();
    assert!(metrics.contains("leasegate_journal_up 0"), "{metrics}");
    let ready = fleet.instances[0].api().call("GET", "/readyz", None);
    assert!(
        matches!(&ready, Err(leasegate::admin::client::ClientError::Api { status: 503, message }) if message.contains("lease store")),
        "{ready:?}"
    );
    fleet.store.pg.restart(&PgOptions::default()).unwrap();
    // Logins work again by themselves.
    let back =
        wait_until(Duration::from_secs(15), || psql_cmd(&fleet.url(0, "ci")).args(["-Atc", "SELECT 1"]).output().unwrap().status.success());
    assert!(back.is_some(), "{}", logs(&fleet));
    for s in steady {
        let (ok, _, err) = finished(s);
        assert!(ok, "a session kept working through the outage: {err}");
    }
    assert!(wait_until(Duration::from_secs(15), || fleet.minted().is_empty()).is_some(), "{:?}", fleet.minted());
    let metrics = fleet.instances[0].api().call("GET", "/metrics", None).unwrap();
    assert!(metrics.contains("leasegate_journal_up 1") && metrics.contains("leasegate_journal_queued_writes 0"), "{metrics}");
    assert!(fleet.instances[0].api().call("GET", "/readyz", None).is_ok(), "ready again");
    assert_eq!(fleet.store.sql("SELECT count(*) FROM leasegate.leases WHERE state <> 'ended'"), "0", "every lease ended in the store");
}

#[test]
fn mariadb_users_of_a_killed_instance_are_revoked_by_a_survivor() {
    let mut fleet = Fleet::prepare_mariadb();
    fleet.add();
    fleet.add();
    let victims = fleet.creds(0, 20);
    let session = Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &fleet.instances[0].addr.port().to_string(), "-u", "ci", "-N", "-B", "-e", "SELECT SLEEP(60)"])
        .env("MYSQL_PWD", &fleet.client_password)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(15), || fleet.minted().len() == 21).is_some(), "{:?}\n{}", fleet.minted(), logs(&fleet));
    fleet.instances[0].kill9();
    let gone = wait_until(TAKEOVER_AFTER + Duration::from_secs(10), || fleet.minted().is_empty());
    assert!(gone.is_some(), "{:?} left:\n{}", fleet.minted(), logs(&fleet));
    for id in &victims {
        assert_eq!(
            fleet.store.sql(&format!("SELECT end_reason, ended_by FROM leasegate.leases WHERE id = '{id}'")),
            "recovered|lg-1",
            "{id}"
        );
    }
    assert!(!finished(session).0, "the killed instance's session ended");
}

#[test]
fn a_stopped_instance_revokes_its_own_leases_and_leaves_nothing_to_take_over() {
    let mut fleet = Fleet::start(2);
    let ids = fleet.creds(0, 3);
    fleet.instances[0].terminate();
    assert!(fleet.minted().is_empty(), "shutdown revoked its users: {:?}", fleet.minted());
    assert_eq!(fleet.store.sql("SELECT stopped, dead_at IS NULL FROM leasegate.instances WHERE id = 'lg-0'"), "t|t");
    for id in &ids {
        assert_eq!(fleet.store.sql(&format!("SELECT end_reason, ended_by FROM leasegate.leases WHERE id = '{id}'")), "shutdown|lg-0");
    }
    // Long past takeover_after, the survivor has declared nothing dead and claimed nothing.
    std::thread::sleep(TAKEOVER_AFTER * 2);
    assert_eq!(fleet.store.sql("SELECT count(*) FROM leasegate.leases WHERE taken_from IS NOT NULL"), "0");
    assert!(!fleet.instances[1].log().contains("declared dead"), "{}", fleet.instances[1].log());
}

#[test]
fn a_mysql_login_fails_closed_with_1040_while_the_store_is_away() {
    let mut fleet = Fleet::prepare_mariadb();
    fleet.add();
    let login = |fleet: &Fleet| {
        Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P", &fleet.instances[0].addr.port().to_string(), "-u", "ci", "-N", "-B", "-e", "SELECT 1"])
            .env("MYSQL_PWD", &fleet.client_password)
            .output()
            .unwrap()
    };
    assert!(login(&fleet).status.success(), "{}", logs(&fleet));
    fleet.store.pg.stop();
    let refused = login(&fleet);
    assert!(!refused.status.success());
    let err = stderr(&refused);
    assert!(err.contains("ERROR 1040") && err.contains("lease store"), "{err}");
    fleet.store.pg.restart(&PgOptions::default()).unwrap();
    let back = wait_until(Duration::from_secs(15), || login(&fleet).status.success());
    assert!(back.is_some(), "{}", logs(&fleet));
    assert!(wait_until(Duration::from_secs(10), || fleet.minted().is_empty()).is_some(), "{:?}", fleet.minted());
}
