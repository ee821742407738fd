//! The binary's contract: `dev`, `check-config` (exit 64), `hash-password`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{leasegate_with_stdin, loadable_example_config};

const BIN: &str = env!("CARGO_BIN_EXE_leasegate");

#[test]
fn hash_password_prints_a_verifier_that_check_config_accepts() {
    let mut child = Command::new(BIN).arg("hash-password").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let verifier = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut two =
        Command::new(BIN).arg("hash-password").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    two.stdin.take().unwrap().write_all(b"first\nsecond\n").unwrap();
    let out = two.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(64), "two passwords on stdin are refused, not half-used");
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    assert!(!verifier.contains("correct horse"));

    let dir = leasegate::devdb::TempDir::new("leasegate-cli").unwrap();
    let config = loadable_example_config(dir.path());
    let path = dir.path().join("ok.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_config_reports_every_problem_and_exits_64() {
    let dir = leasegate::devdb::TempDir::new("leasegate-cli").unwrap();
    let bad = include_str!("../config/leasegate.example.toml")
        .replace("max_ttl = \"24h\"", "max_ttl = \"1m\"")
        .replace("roles = [\"app_ro\", \"app_rw\", \"shop_rw\"]", "roles = [\"ghost\"]");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("role[0].max_ttl") && err.contains("client[1].roles[0]"), "{err}");

    // Valid TOML whose files are missing: also 64, with the key named.
    let missing = dir.path().join("missing.toml");
    std::fs::write(&missing, include_str!("../config/leasegate.example.toml")).unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&missing).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("database[0].admin_password_file"));

    let out = Command::new(BIN).args(["serve", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "serve refuses a bad config with 64");
}

#[test]
fn dev_mode_prints_working_psql_mariadb_and_admin_lines_and_cleans_up_on_ctrl_c() {
    let mut child = Command::new(BIN)
        .args(["dev", "--port", "0", "--mysql-port", "0", "--admin-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    let mut socket_line = None;
    let mut mariadb = None;
    let mut config = None;
    let mut paste = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(90) {
        let Some(Ok(line)) = lines.next() else { break };
        if line.starts_with("Ctrl-C") {
            break;
        }
        if let Some(command) = line.strip_prefix("    ") {
            paste.push(command.to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("connect: psql \"") {
            url = Some(rest.trim_end_matches('"').to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("connect (this OS user, no password): psql \"") {
            socket_line = Some(rest.trim_end_matches('"').to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("connect: mariadb ") {
            mariadb = Some(rest.split_whitespace().map(str::to_string).collect::<Vec<_>>());
        }
        if let Some(rest) = line.trim().strip_prefix("config:") {
            config = Some(std::path::PathBuf::from(rest.trim()));
        }
    }
    let url = url.expect("dev prints a psql line");
    let cluster_dir = config.expect("dev prints its config path").parent().unwrap().to_path_buf();
    let out = Command::new("psql").arg(&url).args(["-Atc", "CREATE TABLE t(x int); SELECT current_user"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("lg_dev_dev_rw_"));
    // The Unix-socket line needs no password: it is this OS user's own client.
    let socket_line = socket_line.expect("dev prints a Unix-socket psql line");
    let out = Command::new("psql").arg(&socket_line).args(["-Atc", "SELECT current_user"]).env_remove("PGPASSWORD").output().unwrap();
    assert!(out.status.success(), "{socket_line}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("_dev_rw_"), "{}", String::from_utf8_lossy(&out.stdout));
    let args = mariadb.expect("dev prints a mariadb line");
    let out = Command::new("mariadb").arg("--no-defaults").args(&args).args(["-N", "-e", "SELECT CURRENT_USER()"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("lg_dev_dev_mysql_rw_"));

    // The admin lines, run as printed: the export line first, then each command.
    use std::os::unix::fs::PermissionsExt;
    let token_mode = std::fs::metadata(cluster_dir.join("admin.token")).unwrap().permissions().mode();
    assert_eq!(token_mode & 0o777, 0o600, "the generated admin token is private");
    assert!(paste.len() >= 6 && paste[0].starts_with("export LEASEGATE_ADDR=") && paste[0].contains(" LEASEGATE_TOKEN="), "{paste:?}");
    let mut outputs = Vec::new();
    for command in &paste[1..] {
        let script = format!("set -e\n{}\n{command}\n", paste[0]);
        let out = Command::new("sh").args(["-c", &script]).env_remove("LEASEGATE_ADDR").env_remove("LEASEGATE_TOKEN").output().unwrap();
        assert!(out.status.success(), "{command}: {}", String::from_utf8_lossy(&out.stderr));
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let [list, creds, exec_pg, exec_my, metrics] = &outputs[..] else { panic!("{paste:?}") };
    assert!(list.starts_with("ID") && list.contains("ROLE"), "{list}");
    assert!(creds.contains("export PGUSER=lg_admin_api_dev_rw_") && creds.contains("export DATABASE_URL=postgres://"), "{creds}");
    assert!(exec_pg.trim().starts_with("lg_admin_api_dev_rw_"), "{exec_pg}");
    assert!(exec_my.trim().starts_with("lg_admin_api_dev_mysql_rw_"), "{exec_my}");
    assert!(metrics.contains("leasegate_leases_granted_total{"), "{metrics}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "dev exits 0 on Ctrl-C");
    assert!(!cluster_dir.exists(), "the private cluster is removed");
}

#[test]
fn import_vault_role_reads_stdin_or_a_file_and_refuses_what_it_cannot_take() {
    // Vault's own answer to `vault read -format=json database/roles/readonly` for a MySQL role
    // (the statements of its MySQL/MariaDB docs; TTLs in seconds, as Vault prints them).
    let json = r#"{"request_id": "x", "lease_id": "", "renewable": false, "lease_duration": 0, "data": {
        "creation_statements": ["CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';GRANT SELECT ON *.* TO '{{name}}'@'%';"],
        "credential_type": "password", "db_name": "shop", "default_ttl": 3600, "max_ttl": 86400,
        "renew_statements": [], "revocation_statements": ["DROP USER '{{name}}'@'%';"], "rollback_statements": []}, "warnings": null}"#;
    let run = |args: &[&str], input: &str| leasegate_with_stdin(&[&["import-vault-role"], args].concat(), input);
    let out = run(&["--name", "readonly"], json);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let role = String::from_utf8(out.stdout).unwrap();
    assert!(role.contains("[[role]]\nname = \"readonly\"\ndatabase = \"shop\"\ndefault_ttl = \"1h\"\nmax_ttl = \"24h\"\n"), "{role}");

    // The printed table, appended to the example config, passes check-config as it is.
    let dir = leasegate::devdb::TempDir::new("leasegate-cli").unwrap();
    let json_path = dir.path().join("role.json");
    std::fs::write(&json_path, json).unwrap();
    let from_file = Command::new(BIN).arg("import-vault-role").args(["--name", "readonly"]).arg(&json_path).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&from_file.stdout), role, "a file reads like stdin");
    std::fs::write(dir.path().join("admin.secret"), "x").unwrap();
    let config = include_str!("../config/leasegate.example.toml")
        .replace("pg-admin.secret", &dir.path().join("admin.secret").display().to_string())
        .replace("mysql-admin.secret", &dir.path().join("admin.secret").display().to_string())
        .replace("token_file = \"admin.token\"", "")
        .replace("client_tls = { cert = \"tls/server.crt\", key = \"tls/server.key\", mode = \"optional\" }", "")
        .replace(", ca = \"tls/upstream-ca.pem\"", "");
    let path = dir.path().join("with-vault-role.toml");
    std::fs::write(&path, format!("{config}\n{role}")).unwrap();
    let out = Command::new(BIN).arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rewrote IDENTIFIED BY '{{password}}'"));

    let out = run(&["--name", "readonly"], "{\"data\": {\"db_name\": \"shop\"}}");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no creation_statements"));
    let out = run(&["--name", "readonly"], "not json");
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn completions_and_the_man_page_name_every_subcommand() {
    let subcommands =
        ["serve", "dev", "check-config", "hash-password", "leases", "creds", "exec", "import-vault-role", "completions", "man"];
    let dir = leasegate::devdb::TempDir::new("leasegate-cli").unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN).args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        for sub in subcommands {
            assert!(text.contains(sub), "{shell} completion does not name {sub}");
        }
        if shell == "bash" {
            let path = dir.path().join("leasegate.bash");
            std::fs::write(&path, &text).unwrap();
            let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
            assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
            // Sourced, it registers a completion for leasegate.
            let out = Command::new("bash").arg("-c").arg(format!("source {} && complete -p leasegate", path.display())).output().unwrap();
            assert!(String::from_utf8_lossy(&out.stdout).contains("leasegate"), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    assert!(!Command::new(BIN).args(["completions", "tcsh"]).output().unwrap().status.success());
    // A reader that stops early (`leasegate man | head`) is no error: here it never reads at all.
    for args in [&["man"][..], &["completions", "bash"][..]] {
        let mut child = Command::new(BIN).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?} into a closed pipe: {}", String::from_utf8_lossy(&out.stderr));
    }

    let man = Command::new(BIN).arg("man").output().unwrap();
    assert!(man.status.success());
    let roff = String::from_utf8(man.stdout).unwrap();
    assert!(roff.starts_with(".ie") || roff.contains(".TH leasegate"), "{}", &roff[..roff.len().min(200)]);
    let mut nroff = Command::new("nroff").arg("-man").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    nroff.stdin.take().unwrap().write_all(roff.as_bytes()).unwrap();
    let page = nroff.wait_with_output().unwrap();
    assert!(page.status.success());
    let page = String::from_utf8_lossy(&page.stdout);
    for sub in subcommands {
        assert!(page.contains(sub), "the man page does not name {sub}");
    }
}
