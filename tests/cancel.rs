//! A cancel cancels the statement it was sent for, never the next one: real drivers that
//! cancel asynchronously (asyncpg; a MySQL client's `KILL QUERY` from its second connection)
//! in loops that race each cancel against the end of its statement, through leasegate in front
//! of private servers that check passwords.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use support::my::{MyLg, MySetup, out};
use support::{Lg, Setup, stderr, stdout};

#[test]
fn asyncpg_cancels_never_hit_the_next_statement() {
    let lg = Lg::start(Setup::default());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/cancel_race.py");
    let o = std::process::Command::new("python3")
        .args([script, &lg.url("ci", "sslmode=disable"), "200"])
        .output()
        .expect("python3 runs (scripts/test installs asyncpg)");
    let report = stdout(&o);
    assert!(o.status.success(), "{report}\n{}", stderr(&o));
    let counts: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(counts["next_cancelled"], 0, "{report}");
    // The race really ran both ways: some statements were cancelled, some finished first.
    assert!(counts["timed_out"].as_u64().unwrap() > 0 && counts["finished"].as_u64().unwrap() > 0, "{report}");
}

/// MySQL: a client's `KILL QUERY` from its second connection, racing the end of the command
/// it was sent for. The next command follows once the KILL has been sent (as asyncpg does for
/// a CancelRequest), and it must never be the one interrupted.
#[test]
fn kill_query_races_never_hit_the_next_command() {
    let lg = MyLg::start(MySetup::default());
    let script = r#"
import os, random, threading, time, pymysql
from pymysql.constants import COMMAND
def conn():
    return pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="ci", password=os.environ["PASSWORD"])
a, b = conn(), conn()
ca = a.cursor(); ca.execute("SELECT CONNECTION_ID()"); thread = ca.fetchone()[0]
def run(sql):
    """1 when the command was interrupted (SLEEP returns 1, or error 1317), else 0."""
    try:
        ca.execute(sql); return ca.fetchone()[0]
    except pymysql.err.OperationalError as e:
        if e.args[0] != 1317: raise
        return 1
# A KILL QUERY of a long command still ends it.
def killer():
    time.sleep(0.3); b.cursor().execute("KILL QUERY %d" % thread)
k = threading.Thread(target=killer); k.start(); t = time.time()
print("long", run("SELECT SLEEP(30)"), time.time() - t < 10)
k.join()
interrupted_first = next_hit = 0
for i in range(200):
    sent = threading.Event()
    def kill_soon():
        time.sleep(random.uniform(0, 0.02))
        b._execute_command(COMMAND.COM_QUERY, "KILL QUERY %d" % thread)  # sent; the OK is read below
        sent.set()
        b._read_query_result()
    k = threading.Thread(target=kill_soon); k.start()
    interrupted_first += run("SELECT SLEEP(%f)" % random.uniform(0, 0.02))
    sent.wait()
    next_hit += run("SELECT SLEEP(0.03)")
    k.join()
print("first interrupted", interrupted_first, "next interrupted", next_hit)
"#;
    let o = lg.python(script);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", out(&o));
    assert!(text.contains("long 1 True"), "{text}");
    assert!(text.contains("next interrupted 0"), "{text}");
}

/// pgJDBC's setQueryTimeout and Statement.cancel() through leasegate: the timeout cancels the
/// statement, and cancels racing a statement's end never reach the statement after it.
#[test]
fn jdbc_query_timeout_cancels_and_late_cancels_spare_the_next_statement() {
    let lg = Lg::start(Setup::default());
    let url = format!("jdbc:postgresql://{}/postgres?user=ci&password={}&sslmode=disable", lg.addr, lg.client_password);
    let probe = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/PgJdbcProbe.java");
    let o = std::process::Command::new("java")
        .args(["-cp", "/usr/share/java/postgresql.jar", probe, &url])
        .output()
        .expect("java runs (scripts/test installs default-jre-headless and libpostgresql-jdbc-java)");
    let text = stdout(&o);
    assert!(o.status.success(), "{text}\n{}", stderr(&o));
    let took: u64 = text.split("timed out 57014 in ").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).expect(&text);
    assert!((900..5000).contains(&took), "{text}");
    assert!(text.contains("next statements ok 50"), "{text}");
}
