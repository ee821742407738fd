//! MySQL/MariaDB through leasegate, end to end: a private MariaDB that checks passwords, the
//! real mariadb client and PyMySQL, minted users checked in mysql.user.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use std::time::Duration;
use support::my::{MyLg, MySetup, PREFIX, out};
use support::wait_until;

#[test]
fn the_mariadb_client_gets_a_minted_user_that_is_dropped_on_disconnect() {
    let lg = MyLg::start(MySetup::default());
    let o = lg.mariadb("ci", &lg.client_password, &["appdb"], "SELECT CURRENT_USER(); SELECT COUNT(*) FROM items");
    assert!(o.status.success(), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with(&format!("{PREFIX}ci_app_")), "{text}");
    assert_eq!(lines.next(), Some("100"), "multi-statement results");
    // Gone from mysql.user within a second of the disconnect.
    assert!(wait_until(Duration::from_secs(10), || lg.minted_users().is_empty()).is_some(), "{:?}", lg.minted_users());
    // The mariadb client's caching_sha2_password plugin works too (the greeting asked for native).
    let o = lg.mariadb("ci", &lg.client_password, &["--default-auth=caching_sha2_password"], "SELECT CURRENT_USER()");
    assert!(o.status.success(), "{}", out(&o));
}

#[test]
fn a_wrong_password_gets_1045_like_a_server_says_it() {
    let lg = MyLg::start(MySetup::default());
    for login in ["ci", "nobody", "ci/nosuchrole"] {
        let o = lg.mariadb(login, "wrong", &[], "SELECT 1");
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ERROR 1045 (28000): Access denied for user"), "{login}: {err}");
    }
    // The right password for a role the client may not use: the same answer, both plugins.
    for plugin in ["mysql_native_password", "caching_sha2_password"] {
        let o = lg.mariadb("ci/nosuchrole", &lg.client_password, &[&format!("--default-auth={plugin}")], "SELECT 1");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("ERROR 1045 (28000): Access denied for user 'ci/nosuchrole'"), "{plugin}: {err}");
    }
    assert!(lg.minted_users().is_empty());
}

#[test]
fn pymysql_logs_in_with_caching_sha2_and_round_trips_a_20_mb_row() {
    let lg = MyLg::start(MySetup { database_extra: "client_auth_plugin = \"caching_sha2_password\"".into(), ..Default::default() });
    let script = r#"
import os, pymysql
from pymysql.constants import CLIENT
seen = []
class Spy(pymysql.connections.Connection):
    def _process_auth(self, plugin_name, auth_packet):
        seen.append(plugin_name)
        return super()._process_auth(plugin_name, auth_packet)
c = pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="ci/app", password=os.environ["PASSWORD"],
                    database="appdb", max_allowed_packet=64 << 20, client_flag=CLIENT.MULTI_STATEMENTS)
print("plugin", c._auth_plugin_name)
cur = c.cursor()
cur.execute("SELECT CURRENT_USER()")
print("user", cur.fetchone()[0])
body = bytes(range(256)) * (20 * 4096)   # 20 MiB: split into 16 MB packets both ways
cur.execute("UPDATE items SET body = %s WHERE id = 1", (body,))
c.commit()
cur.execute("SELECT body FROM items WHERE id = 1")
print("roundtrip", cur.fetchone()[0] == body)
cur.execute("SELECT 1; SELECT 2")
first = cur.fetchall(); cur.nextset(); second = cur.fetchall()
print("multi", first[0][0], second[0][0])
"#;
    let o = lg.python(script);
    assert!(o.status.success(), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("plugin caching_sha2_password"), "{text}");
    assert!(text.contains(&format!("user {PREFIX}ci_app_")), "{text}");
    assert!(text.contains("roundtrip True"), "{text}");
    assert!(text.contains("multi 1 2"), "{text}");
}

#[test]
fn tls_on_the_client_leg_and_required_mode() {
    let lg = MyLg::start(MySetup { client_tls_mode: "required", ..Default::default() });
    let ca = lg.dir.path().join("tls.crt");
    let ca_arg = format!("--ssl-ca={}", ca.display());
    // Verifying our certificate proves the session really ran inside TLS.
    let o = lg.mariadb("ci", &lg.client_password, &["--ssl", &ca_arg, "--ssl-verify-server-cert"], "SELECT CURRENT_USER()");
    assert!(o.status.success(), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(PREFIX));
    let plain = lg.mariadb("ci", &lg.client_password, &["--skip-ssl"], "SELECT 1");
    assert!(!plain.status.success());
    assert!(String::from_utf8_lossy(&plain.stderr).contains("3159"), "{}", out(&plain));
}

#[test]
fn com_change_user_never_reaches_the_server() {
    let lg = MyLg::start(MySetup::default());
    // PyMySQL has no change_user(): send the command it would send, through its own writer.
    let script = r#"
import os, struct, pymysql
c = pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="ci", password=os.environ["PASSWORD"])
# COM_RESET_CONNECTION passes: session state is cleared, the session goes on.
cur = c.cursor(); cur.execute("SET @kept = 5")
c._execute_command(0x1f, b""); c._read_ok_packet()
cur.execute("SELECT @kept IS NULL"); print("reset", cur.fetchone()[0])
payload = b"leasegate_admin\0" + b"\0" + b"mysql\0"
try:
    c._execute_command(0x11, payload)
    c._read_packet()
    print("switched")
except pymysql.err.OperationalError as e:
    print("refused", e.args[0])
try:
    c.cursor().execute("SELECT CURRENT_USER()")
    print("still open")
except Exception as e:
    print("closed")
"#;
    let o = lg.python(script);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(text.contains("reset 1"), "{}", out(&o));
    assert!(text.contains("refused 1045"), "{}", out(&o));
    assert!(text.contains("closed"), "{}", out(&o));
    assert!(wait_until(Duration::from_secs(10), || lg.minted_users().is_empty()).is_some());
}

#[test]
fn kill_query_from_a_second_connection_of_the_same_client_works() {
    let lg = MyLg::start(MySetup::default());
    let script = r#"
import os, threading, time, pymysql
def conn(user="ci"):
    return pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user=user, password=os.environ["PASSWORD"])
a = conn()
cur = a.cursor(); cur.execute("SELECT CONNECTION_ID(), CURRENT_USER()"); thread, user_a = cur.fetchone()
result = {}
def sleeper():
    t = time.time(); c = a.cursor()
    try:
        c.execute("SELECT SLEEP(30)"); result["value"] = c.fetchone()[0]
    except Exception as e:
        result["value"] = repr(e)
    result["took"] = time.time() - t
th = threading.Thread(target=sleeper); th.start(); time.sleep(0.5)
b = conn(); cb = b.cursor(); cb.execute("SELECT CURRENT_USER()"); user_b = cb.fetchone()[0]
print("different users", user_a != user_b)
cb.execute("KILL QUERY %d" % thread)
th.join(20)
print("interrupted", result.get("value"), result.get("took", 99) < 10)
# Another client may not kill it.
o = conn("other"); oc = o.cursor()
try:
    oc.execute("KILL QUERY %d" % thread); print("other killed")
except pymysql.err.OperationalError as e:
    print("other refused", e.args[0])
ca = a.cursor(); ca.execute("SELECT 1"); print("a alive", ca.fetchone()[0])
"#;
    let o = lg.python(script);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", out(&o));
    assert!(text.contains("different users True"), "{text}");
    // MariaDB reports the interrupted SLEEP as error 1317; MySQL returns 1.
    assert!(text.contains("interrupted OperationalError(1317") && text.contains("') True"), "{text}");
    assert!(text.contains("other refused 1095"), "{text}");
    assert!(text.contains("a alive 1"), "{text}");
}

#[test]
fn sysbench_point_selects_with_prepared_statements_run_without_errors() {
    // The table is made directly on the server by its owner (leasegate's admin may not).
    let lg = MyLg::start(MySetup {
        prepare: vec!["CREATE USER 'sb_owner'@'%' IDENTIFIED BY 'sb-owner-pw'; GRANT ALL ON appdb.* TO 'sb_owner'@'%'".into()],
        ..MySetup::default()
    });
    let direct = |cmd: &str, user: &str, password: &str, port: u16| {
        std::process::Command::new("sysbench")
            .args([
                "oltp_point_select",
                "--db-driver=mysql",
                "--mysql-host=127.0.0.1",
                "--mysql-db=appdb",
                "--tables=1",
                "--table-size=1000",
            ])
            .arg(format!("--mysql-port={port}"))
            .arg(format!("--mysql-user={user}"))
            .arg(format!("--mysql-password={password}"))
            .args(["--threads=4", "--time=3", "--db-ps-mode=auto"])
            .arg(cmd)
            .output()
            .unwrap()
    };
    let prepared = direct("prepare", "sb_owner", "sb-owner-pw", lg.db.port());
    assert!(prepared.status.success(), "{}", out(&prepared));
    let run = direct("run", "ci", &lg.client_password, lg.addr.port());
    let text = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(run.status.success(), "{}", out(&run));
    // A failed query aborts sysbench (non-zero exit); ignored ones (deadlocks…) are counted.
    let ignored = text.lines().find(|l| l.trim_start().starts_with("ignored errors:")).unwrap_or_default().to_string();
    assert_eq!(ignored.split_whitespace().nth(2), Some("0"), "{text}");
    let queries: u64 = text
        .lines()
        .find(|l| l.trim_start().starts_with("read:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(queries > 100, "{text}");
    assert!(wait_until(Duration::from_secs(10), || lg.minted_users().is_empty()).is_some());
}

#[test]
fn the_minted_password_reaches_no_log_and_not_the_general_log() {
    let lg = MyLg::start(MySetup::default());
    let general = lg.dir.path().join("general.log");
    std::fs::write(&general, "").unwrap();
    std::os::unix::fs::chown(&general, Some(uid_of("mysql")), None).unwrap();
    lg.db.root_sql(&format!("SET GLOBAL general_log_file = '{}'; SET GLOBAL general_log = 1", general.display())).unwrap();
    // Hold a session open and read its lease's password while it lives.
    let mut child = std::process::Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &lg.addr.port().to_string(), "-u", "ci", "-e", "SELECT SLEEP(2)"])
        .env("MYSQL_PWD", &lg.client_password)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || !lg.app.leases.list().is_empty()).is_some());
    let lease = lg.app.leases.list().pop().unwrap();
    let password = lease.password.expose().to_string();
    assert!(child.wait().unwrap().success());
    lg.db.root_sql("SET GLOBAL general_log = 0").unwrap();
    let log = std::fs::read_to_string(&general).unwrap();
    assert!(log.contains("CREATE USER"), "the general log recorded the mint: {log}");
    assert!(log.contains("IDENTIFIED BY PASSWORD '*"), "{log}");
    assert!(!log.contains(&password), "the minted password is in the general log");
    assert!(!support::captured_logs().contains(&password), "the minted password is in leasegate's log");
    assert!(!support::captured_logs().contains(&lg.client_password));
}

#[test]
fn upstream_down_and_garbage_get_errors_not_hangs() {
    let mut lg = MyLg::start(MySetup::default());
    // Garbage instead of a HandshakeResponse41: an ERR packet, then the connection closes.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(lg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut greeting = [0u8; 4];
    s.read_exact(&mut greeting).unwrap();
    let len = u32::from_le_bytes([greeting[0], greeting[1], greeting[2], 0]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    s.write_all(b"\x05\x00\x00\x01hello").unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(answer.get(4), Some(&0xFF), "an ERR packet: {answer:?}");
    assert_eq!(&answer[5..7], &1043u16.to_le_bytes(), "Bad handshake");
    // An oversized handshake packet: refused without reading it all.
    let mut s = std::net::TcpStream::connect(lg.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut greeting).unwrap();
    let len = u32::from_le_bytes([greeting[0], greeting[1], greeting[2], 0]) as usize;
    s.read_exact(&mut vec![0u8; len]).unwrap();
    s.write_all(b"\xff\xff\xff\x01").unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(&answer[5..7], &1153u16.to_le_bytes(), "packet too large: {answer:?}");

    // The server stops: the client gets 2003's text (under a server-side code), not a hang.
    lg.db.stop();
    let o = lg.mariadb("ci", &lg.client_password, &["--connect-timeout=10"], "SELECT 1");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("1105") && err.contains("Can't connect to server on"), "{err}");
    lg.shutdown();
}

fn uid_of(user: &str) -> u32 {
    let out = std::process::Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn at_max_ttl_a_transaction_commits_then_the_session_closes_and_an_idle_one_closes_at_once() {
    let lg = MyLg::start(MySetup { ttl: ("2s", "2s"), ..Default::default() });
    let script = r#"
import os, time, pymysql
def conn():
    return pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="ci", password=os.environ["PASSWORD"], database="appdb", autocommit=True)
busy, idle = conn(), conn()
c = busy.cursor(); c.execute("BEGIN"); c.execute("UPDATE items SET name = 'in tx' WHERE id = 2")
start = time.time()
time.sleep(3.5)   # past max TTL: the idle session is gone, the busy one waits for its COMMIT
c.execute("COMMIT")
print("committed")
try:
    c.execute("SELECT 1"); print("busy still open")
except pymysql.err.OperationalError as e:
    print("busy closed after commit", e.args[0])
try:
    idle.cursor().execute("SELECT 1"); print("idle still open")
except pymysql.err.OperationalError as e:
    print("idle closed", e.args[0])
c2 = conn().cursor(); c2.execute("SELECT name FROM items WHERE id = 2"); print("value", c2.fetchone()[0])
"#;
    let o = lg.python(script);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", out(&o));
    assert!(text.contains("committed"), "{text}");
    assert!(text.contains("busy closed after commit"), "{text}");
    assert!(text.contains("idle closed"), "{text}");
    assert!(text.contains("value in tx"), "{text}");
    assert!(wait_until(Duration::from_secs(10), || lg.minted_users().is_empty()).is_some(), "{:?}", lg.minted_users());
    let logs = support::captured_logs();
    assert!(logs.contains("leasegate_at_idle_point"), "sessions closed at idle points");
}

/// MariaDB accounts have no place for an instance mark, so leasegate cannot prove a user with
/// its prefix is its own (another instance with its own journal may have minted it): the sweep
/// says so and drops nothing.
#[test]
fn the_orphan_sweep_never_drops_users_it_cannot_prove_it_minted() {
    let lg = MyLg::start(MySetup {
        database_extra: "sweep_orphans = true".into(),
        prepare: vec![format!("CREATE USER '{PREFIX}left_behind'@'%' IDENTIFIED BY 'x'")],
        ..Default::default()
    });
    let said = wait_until(Duration::from_secs(10), || support::captured_logs().contains("orphan sweep skipped"));
    assert!(said.is_some(), "the sweep says why it drops nothing");
    assert_eq!(lg.minted_users(), vec![format!("{PREFIX}left_behind")]);
}

#[test]
fn the_upstream_leg_runs_inside_verified_tls() {
    let lg = MyLg::start(MySetup {
        upstream_tls: Some("{ mode = \"verify-full\", ca = \"{ca}\", server_name = \"localhost\" }".into()),
        ..Default::default()
    });
    // Ssl_cipher is the status of the session the query runs in: leasegate's upstream leg.
    let o = lg.mariadb("ci", &lg.client_password, &[], "SHOW SESSION STATUS LIKE 'Ssl_cipher'");
    assert!(o.status.success(), "{}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let cipher = text.split_whitespace().nth(1).unwrap_or_default();
    assert!(!cipher.is_empty(), "the upstream session is encrypted: {text}");
    // The client leg itself stayed plain.
    let plain = lg.mariadb("ci", &lg.client_password, &["--skip-ssl"], "SELECT 1");
    assert!(plain.status.success(), "{}", out(&plain));
}

#[test]
fn revoking_a_live_lease_ends_its_session_with_the_servers_error() {
    let lg = MyLg::start(MySetup::default());
    let child = std::process::Command::new("python3")
        .args([
            "-c",
            r#"
import os, sys, time, pymysql
c = pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="ci", password=os.environ["PASSWORD"])
cur = c.cursor(); cur.execute("SELECT 1"); print("open", flush=True)
try:
    cur.execute("SELECT SLEEP(20)"); print("slept")
except pymysql.err.OperationalError as e:
    print("ended", e.args[0], e.args[1])
"#,
        ])
        .env("HOST", "127.0.0.1")
        .env("PORT", lg.addr.port().to_string())
        .env("PASSWORD", &lg.client_password)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || lg.minted_users().len() == 1).is_some());
    std::thread::sleep(Duration::from_millis(500)); // the SLEEP is running
    let lease = lg.app.leases.list().pop().unwrap();
    let state = lg.block_on(lg.app.leases.revoke_and_wait(&lease, Duration::from_secs(10)));
    assert_eq!(format!("{state:?}"), "Ended", "revoked");
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    // The server's KILL reaches the client intact: 1927 "Connection was killed" (or the client
    // sees the connection drop, 2013).
    assert!(text.contains("ended 1927") || text.contains("ended 2013"), "{text}");
    assert!(lg.minted_users().is_empty());
}

#[test]
fn a_jdbc_application_prepares_batches_and_cancels_through_leasegate() {
    let lg = MyLg::start(MySetup::default());
    let url = format!("jdbc:mariadb://127.0.0.1:{}/appdb?user=ci&password={}&useServerPrepStmts=true", lg.addr.port(), lg.client_password);
    let probe = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/JdbcProbe.java");
    let o = std::process::Command::new("java")
        .args(["-cp", "/usr/share/java/mariadb-java-client.jar", probe, &url])
        .output()
        .expect("java runs (scripts/test installs default-jre-headless and libmariadb-java)");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", out(&o));
    assert!(text.contains(&format!("prepared 7 {PREFIX}ci_app_")), "{text}");
    assert!(text.contains("batch 3"), "{text}");
    // SLEEP(20) cancelled after 0.7 s: the driver's KILL QUERY from its second connection worked.
    let cancelled = text.lines().find(|l| l.starts_with("slept 1 in") || l.starts_with("cancelled")).unwrap_or_default();
    let ms: u64 = cancelled.split_whitespace().nth(3).and_then(|n| n.parse().ok()).unwrap_or(99_999);
    assert!(ms < 10_000, "{text}");
    assert!(text.contains("after jdbc 3"), "{text}");
    assert!(wait_until(Duration::from_secs(10), || lg.minted_users().is_empty()).is_some(), "{:?}", lg.minted_users());
}

/// caching_sha2 full authentication (the cleartext, inside TLS) for a client entry without
/// MySQL hashes: the right password logs in, a wrong one is refused, and one over 16 KiB is
/// refused before any key derivation (which runs off the event loop).
#[test]
fn full_authentication_inside_tls_is_bounded() {
    let lg = MyLg::start(MySetup { database_extra: "client_auth_plugin = \"caching_sha2_password\"".into(), ..Default::default() });
    let script = r#"
import os, ssl, time, pymysql
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
def login(pw):
    return pymysql.connect(host=os.environ["HOST"], port=int(os.environ["PORT"]), user="legacy", password=pw, ssl=ctx, connect_timeout=10)
c = login(os.environ["PASSWORD"]); cur = c.cursor(); cur.execute("SELECT CURRENT_USER()"); print("in as", cur.fetchone()[0])
for name, pw in [("wrong", "wrong"), ("huge", "x" * (512 << 10))]:
    t = time.time()
    try:
        login(pw); print(name, "logged in")
    except pymysql.err.MySQLError as e:
        print(name, "refused", e.args[0], time.time() - t < 5)
"#;
    let o = lg.python(script);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", out(&o));
    assert!(text.contains(&format!("in as {PREFIX}legacy")), "{text}");
    assert!(text.contains("wrong refused 1045 True"), "{text}");
    // Over the 16 KiB bound: refused unread (ERR 1153, or "gone away" while the client is still
    // writing, as with a server refusing an oversized packet), never checked as a password.
    let huge = text.lines().find(|l| l.starts_with("huge ")).unwrap_or_default();
    assert!(huge.starts_with("huge refused") && !huge.contains("1045") && huge.ends_with("True"), "{text}");
}

/// leasegate's MySQL literals escape only `'`: its admin sessions run with NO_BACKSLASH_ESCAPES
/// whatever the server's sql_mode, so a backslash in a statement is a plain character (with
/// the server's default mode, `'a\'` would be an unterminated string and the mint would fail).
#[test]
fn a_backslash_in_a_statement_is_a_plain_character() {
    let role = "\n[[role]]\nname = \"bs\"\ndatabase = \"main\"\ndefault_ttl = \"1h\"\nmax_ttl = \"2h\"\ncreation_statements = [\
                '''CREATE USER '{{name}}'@'%' IDENTIFIED BY PASSWORD '{{password}}' ''', '''SELECT '{{name}} a\\' ''']\n";
    let lg = MyLg::start(MySetup { extra_roles: vec![("bs".into(), role.into())], ..MySetup::default() });
    let o = lg.mariadb("ci/bs", &lg.client_password, &[], "SELECT CURRENT_USER()");
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains(&format!("{PREFIX}ci_bs")), "{}", out(&o));
}

/// A template may create the account on another host than `%`: revocation finds the user's
/// accounts on every host and drops them (it used to drop `'u'@'%'`, read "no such user" as
/// done, and leave the real account behind).
#[test]
fn an_account_on_another_host_is_still_dropped() {
    let role = "\n[[role]]\nname = \"local\"\ndatabase = \"main\"\ndefault_ttl = \"1h\"\nmax_ttl = \"2h\"\ncreation_statements = [\
                '''CREATE USER '{{name}}'@'127.0.0.1' IDENTIFIED BY PASSWORD '{{password}}' ''', '''GRANT SELECT ON appdb.* TO '{{name}}'@'127.0.0.1' ''']\n";
    // What the template grants, the admin holds WITH GRANT OPTION (docs/privileges.md).
    let lg = MyLg::start(MySetup {
        extra_roles: vec![("local".into(), role.into())],
        prepare: vec!["GRANT SELECT ON appdb.* TO 'leasegate_admin'@'%' WITH GRANT OPTION".into()],
        ..MySetup::default()
    });
    let o = lg.mariadb("ci/local", &lg.client_password, &[], "SELECT CURRENT_USER(), COUNT(*) FROM appdb.items");
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("@127.0.0.1"), "{}", out(&o));
    assert!(wait_until(Duration::from_secs(10), || lg.minted_users().is_empty()).is_some(), "left behind: {:?}", lg.minted_users());
}
