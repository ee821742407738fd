//! The load-and-fault run: `SOAK_CLIENTS` (default 1000) concurrent client connections, half
//! Postgres and half MariaDB, each held a few seconds and replaced (churn), for `SOAK_SECONDS`
//! (default 180). During it, in turn: the Postgres server restarted, the MariaDB server
//! restarted, leasegate killed with SIGKILL and started again, a burst of logins that exhausts
//! the admin pools, and `SOAK_HALF_OPEN` (default 2000) half-open handshakes held for a while.
//! At the end: no minted user left on either server, every lease in the journal ended, clients
//! logged in during the slowloris, and leasegate's RSS (sampled every second) stayed bounded.
//!
//! Not part of `cargo test` (it is ignored): `bench/soak.sh` runs it in release mode and prints
//! the figures README records.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use leasegate::devdb::mariadb::PrivateMariaDb;
use sqlx::{ConnectOptions, Connection};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;

const PHASES: [&str; 7] =
    ["steady", "postgres restart", "mariadb restart", "kill -9 leasegate", "admin pool burst", "slowloris", "steady again"];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Logins and queries per phase, and login failures.
#[derive(Default)]
struct Counts {
    phase: AtomicUsize,
    logins: [AtomicU64; 7],
    failed: [AtomicU64; 7],
    queries: [AtomicU64; 7],
    connected: AtomicU64,
    peak: AtomicU64,
    /// Why logins failed: (protocol, the error's first words) → how often.
    reasons: std::sync::Mutex<std::collections::BTreeMap<(&'static str, String), u64>>,
}

impl Counts {
    fn add(&self, which: &[AtomicU64; 7]) {
        which[self.phase.load(Ordering::Relaxed)].fetch_add(1, Ordering::Relaxed);
    }
}

enum Kind {
    Pg(sqlx::postgres::PgConnectOptions),
    My(sqlx::mysql::MySqlConnectOptions),
}

/// A logged-in client connection of either protocol.
enum Conn {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

impl Conn {
    async fn open(kind: &Kind) -> Result<Conn, String> {
        let opened = async {
            match kind {
                Kind::Pg(o) => o.connect().await.map(Conn::Pg).map_err(|e| e.to_string()),
                Kind::My(o) => o.connect().await.map(Conn::My).map_err(|e| e.to_string()),
            }
        };
        tokio::time::timeout(Duration::from_secs(20), opened).await.unwrap_or_else(|_| Err("login timed out (20 s)".into()))
    }

    async fn query(&mut self) -> bool {
        let ran = async {
            match self {
                Conn::Pg(c) => sqlx::query("SELECT 1").execute(c).await.is_ok(),
                Conn::My(c) => sqlx::query("SELECT 1").execute(c).await.is_ok(),
            }
        };
        tokio::time::timeout(Duration::from_secs(10), ran).await.unwrap_or(false)
    }

    async fn close(self) {
        let _ = match self {
            Conn::Pg(c) => c.close().await,
            Conn::My(c) => c.close().await,
        };
    }
}

/// One client: log in, run a query every 200 ms for 3–12 s, leave, again, until `stop`.
async fn client(kind: Arc<Kind>, counts: Arc<Counts>, stop: Arc<AtomicBool>, seed: u64) {
    let mut n = seed;
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let hold = Duration::from_millis(3000 + (n >> 33) % 9000);
        let mut conn = match Conn::open(&kind).await {
            Ok(conn) => conn,
            Err(e) => {
                counts.add(&counts.failed);
                let protocol = if matches!(*kind, Kind::Pg(_)) { "postgres" } else { "mariadb" };
                let reason: String = e.chars().take(90).collect();
                *counts.reasons.lock().unwrap().entry((protocol, reason)).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        counts.add(&counts.logins);
        let now = counts.connected.fetch_add(1, Ordering::Relaxed) + 1;
        counts.peak.fetch_max(now, Ordering::Relaxed);
        let end = Instant::now() + hold;
        while Instant::now() < end && !stop.load(Ordering::Relaxed) && conn.query().await {
            counts.add(&counts.queries);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        counts.connected.fetch_sub(1, Ordering::Relaxed);
        conn.close().await;
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

fn mariadb_users(db: &PrivateMariaDb) -> usize {
    let sql = format!("SELECT COUNT(*) FROM mysql.user WHERE LEFT(User, {}) = '{PREFIX}'", PREFIX.len());
    db.root_sql(&sql).map(|s| s.trim().parse().unwrap_or(usize::MAX)).unwrap_or(usize::MAX)
}

#[test]
#[ignore = "minutes long: bench/soak.sh runs it"]
fn soak() {
    let seconds = env_or("SOAK_SECONDS", 180);
    let clients = env_or("SOAK_CLIENTS", 1000);
    let half_open = env_or("SOAK_HALF_OPEN", 2000) as usize;
    let started = Instant::now();

    let mut my = PrivateMariaDb::start().expect("mariadb");
    my.set_max_connections(2000);
    my.restart().expect("mariadb with room for the clients");
    my.root_sql(
        "CREATE DATABASE appdb; CREATE ROLE app_group; GRANT ALL ON appdb.* TO app_group; \
         GRANT app_group TO 'leasegate_admin'@'%' WITH ADMIN OPTION",
    )
    .unwrap();
    let my_port = leasegate::devdb::free_port().unwrap();
    let pg_options =
        leasegate::devdb::postgres::PgOptions { settings: vec![("max_connections".into(), "2000".into())], ..Default::default() };
    let setup = Setup { pg: pg_options.clone(), handshake_timeout: "10s", ..Setup::default() };
    let (my_addr, my_pw) = (my.addr(), my.admin_password.expose().to_string());
    let mut lg = LgProcess::start_edited(setup, |text, dir| {
        std::fs::write(dir.join("mariadb-admin.secret"), &my_pw).unwrap();
        let text = text.replace("roles = [\"app\"", "roles = [\"app\", \"my_app\"");
        format!(
            "{text}\n[[database]]\nname = \"my\"\nkind = \"mysql\"\nlisten = \"127.0.0.1:{my_port}\"\nupstream = \"{my_addr}\"\n\
             admin_user = \"leasegate_admin\"\nadmin_password_file = \"{d}/mariadb-admin.secret\"\nname_prefix = \"{PREFIX}\"\n\
             upstream_tls = {{ mode = \"disable\" }}\nconnect_timeout = \"3s\"\nhandshake_timeout = \"10s\"\n\n\
             [[role]]\nname = \"my_app\"\ndatabase = \"my\"\ndefault_ttl = \"1h\"\nmax_ttl = \"2h\"\nmember_of = [\"app_group\"]\n",
            d = dir.display()
        )
    });
    let pid = Arc::new(AtomicU32::new(lg.pid().unwrap()));
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pg_kind = Arc::new(Kind::Pg(
        sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(lg.addr.port())
            .username("ci")
            .password(&lg.client_password)
            .database("postgres")
            .ssl_mode(sqlx::postgres::PgSslMode::Disable)
            .disable_statement_logging(),
    ));
    let my_kind = Arc::new(Kind::My(
        sqlx::mysql::MySqlConnectOptions::new()
            .host("127.0.0.1")
            .port(my_port)
            .username("ci/my_app")
            .password(&lg.client_password)
            .database("appdb")
            .ssl_mode(sqlx::mysql::MySqlSslMode::Disabled)
            .disable_statement_logging(),
    ));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let kind = if i % 2 == 0 { pg_kind.clone() } else { my_kind.clone() };
        tasks.push(rt.spawn(client(kind, counts.clone(), stop.clone(), i)));
    }
    // leasegate's RSS, every second, across restarts.
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (pid, peak_rss, stop) = (pid.clone(), peak_rss.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak_rss.fetch_max(rss_kib(pid.load(Ordering::Relaxed)), Ordering::Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let total = Duration::from_secs(seconds);
    let at = |fraction: f64| total.mul_f64(fraction);
    let wait_until_time = |t: Duration| {
        while started.elapsed() < t {
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut timeline = Vec::new();
    let enter = |phase: usize, timeline: &mut Vec<(usize, Duration)>| {
        counts.phase.store(phase, Ordering::Relaxed);
        timeline.push((phase, started.elapsed()));
        println!("soak: {:>6.1}s {}", started.elapsed().as_secs_f64(), PHASES[phase]);
    };
    enter(0, &mut timeline);
    wait_until_time(at(0.15));
    enter(1, &mut timeline);
    lg.pg.restart(&pg_options).expect("postgres restarts");
    wait_until_time(at(0.3));
    enter(2, &mut timeline);
    my.restart().expect("mariadb restarts");
    wait_until_time(at(0.45));
    enter(3, &mut timeline);
    lg.kill9();
    std::thread::sleep(Duration::from_secs(2));
    lg.spawn();
    pid.store(lg.pid().unwrap(), Ordering::Relaxed);
    wait_until_time(at(0.6));
    enter(4, &mut timeline);
    // 300 logins at once, both protocols: far more than the admin pools and max_concurrent_mints.
    let burst: Vec<_> = (0..300u64)
        .map(|i| {
            let kind = if i % 2 == 0 { pg_kind.clone() } else { my_kind.clone() };
            let (counts, quit) = (counts.clone(), Arc::new(AtomicBool::new(false)));
            // Each burst client keeps logging in for 8 s, then stops.
            rt.spawn(async move {
                let one = tokio::spawn(client(kind, counts, quit.clone(), 1_000_000 + i));
                tokio::time::sleep(Duration::from_secs(8)).await;
                quit.store(true, Ordering::Relaxed);
                let _ = one.await;
            })
        })
        .collect();
    wait_until_time(at(0.72));
    enter(5, &mut timeline);
    // Half-open handshakes: connect, send nothing. Most on the Postgres listener; a share on
    // the MySQL one, which greets first (each there holds a server connection until timed out).
    let silent: Vec<std::net::TcpStream> = (0..half_open)
        .filter_map(|i| {
            let port = if i % 4 == 3 { my_port } else { lg.addr.port() };
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .collect();
    println!("soak: {} half-open connections held", silent.len());
    wait_until_time(at(0.85));
    drop(silent);
    enter(6, &mut timeline);
    wait_until_time(total);
    stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks.into_iter().chain(burst) {
            let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
        }
    });
    sampler.join().unwrap();

    // Every connection is closed: every user must go (connection scope) while leasegate runs.
    let gone = wait_until(Duration::from_secs(120), || lg.minted_roles().is_empty() && mariadb_users(&my) == 0);
    let (pg_left, my_left) = (lg.minted_roles().len(), mariadb_users(&my));
    let journal = lg.dir.path().join("journal.db");
    lg.terminate();
    let open_leases = rt.block_on(async {
        let url = format!("sqlite://{}?mode=ro", journal.display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM leases WHERE state <> 'ended'").fetch_one(&mut c).await.unwrap();
        let all: i64 = sqlx::query_scalar("SELECT count(*) FROM leases").fetch_one(&mut c).await.unwrap();
        (n, all)
    });

    println!(
        "soak: {} clients ({} Postgres, {} MariaDB), {seconds} s, peak {} connected at once",
        clients,
        clients.div_ceil(2),
        clients / 2,
        counts.peak.load(Ordering::Relaxed)
    );
    println!("soak: | phase | from (s) | logins | failed logins | queries |");
    println!("soak: |---|---|---|---|---|");
    for (phase, from) in &timeline {
        println!(
            "soak: | {} | {:.0} | {} | {} | {} |",
            PHASES[*phase],
            from.as_secs_f64(),
            counts.logins[*phase].load(Ordering::Relaxed),
            counts.failed[*phase].load(Ordering::Relaxed),
            counts.queries[*phase].load(Ordering::Relaxed)
        );
    }
    for ((protocol, reason), n) in counts.reasons.lock().unwrap().iter().filter(|(_, n)| **n >= 10) {
        println!("soak: failed logins: {n} {protocol}: {reason}");
    }
    println!("soak: peak leasegate RSS {} MiB", peak_rss.load(Ordering::Relaxed) / 1024);
    println!("soak: journal: {} leases, {} not ended; users left: {pg_left} Postgres, {my_left} MariaDB", open_leases.1, open_leases.0);
    assert!(gone.is_some(), "minted users left: {pg_left} on Postgres, {my_left} on MariaDB");
    assert_eq!(open_leases.0, 0, "every lease in the journal ended");
    assert!(counts.logins[5].load(Ordering::Relaxed) > 0, "clients were served during the slowloris");
    assert!(peak_rss.load(Ordering::Relaxed) < 1024 * 1024, "RSS stayed under 1 GiB");
}
