//! The admin-API commands of the CLI: `leases …`, `creds`, `exec`. Each prints what it did and
//! returns the process exit code. What `creds` and `exec` put in the environment is `env`'s.
//! `doctor` talks to the databases instead: the admin's privileges.

mod doctor;
mod env;

pub use doctor::doctor;

use crate::admin::client::{Client, ClientError};
use crate::admin::leases::{Creds, LeaseView};
use crate::cli::{ApiArgs, LeasesCommand};
use std::process::ExitCode;

fn client(api: &ApiArgs) -> Result<Client, String> {
    let token = match &api.token_file {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .map_err(|e| format!("reading the token file {}: {e}", path.display()))?,
        None => api.token.clone().ok_or("no token: set LEASEGATE_TOKEN or LEASEGATE_TOKEN_FILE, or pass --token or --token-file")?,
    };
    // Accept what people paste: http://host:port/ as well as host:port.
    let addr = api.addr.trim_start_matches("http://").trim_end_matches('/').to_string();
    if addr.starts_with("https://") || !addr.contains(':') {
        return Err(format!("LEASEGATE_ADDR / --addr must be host:port (the admin API speaks plain HTTP), not {:?}", api.addr));
    }
    Ok(Client { addr, token })
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("leasegate: {e}");
    ExitCode::FAILURE
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

pub fn leases(api: &ApiArgs, command: &LeasesCommand) -> ExitCode {
    let c = match client(api) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let result: Result<String, ClientError> = match command {
        LeasesCommand::List { role, state, json } => {
            let mut query = Vec::new();
            if let Some(r) = role {
                query.push(format!("role={}", encode(r)));
            }
            if let Some(s) = state {
                query.push(format!("state={}", encode(s)));
            }
            let path = if query.is_empty() { "/v1/leases".to_string() } else { format!("/v1/leases?{}", query.join("&")) };
            c.call("GET", &path, None)
                .map(|body| if *json { body } else { table(&serde_json::from_str::<Vec<LeaseView>>(&body).unwrap_or_default()) })
        }
        LeasesCommand::Show { id, json } => c
            .call("GET", &format!("/v1/leases/{}", encode(id)), None)
            .map(|body| if *json { body } else { serde_json::from_str::<LeaseView>(&body).map(|l| table(&[l])).unwrap_or(body) }),
        LeasesCommand::Renew { id, increment } => {
            let body = serde_json::json!({ "increment": increment }).to_string();
            c.call("POST", &format!("/v1/leases/{}/renew", encode(id)), Some(&body)).map(|b| {
                serde_json::from_str::<LeaseView>(&b)
                    .map(|l| {
                        let clamped = if l.expires_at == l.max_expires_at { " (clamped to its max TTL)" } else { "" };
                        format!("renewed {}: expires {}{clamped}", l.id, l.expires_at)
                    })
                    .unwrap_or(b)
            })
        }
        LeasesCommand::Revoke { id } => c.call("POST", &format!("/v1/leases/{}/revoke", encode(id)), None).map(|_| format!("revoked {id}")),
        LeasesCommand::RevokePrefix { prefix } => {
            let body = serde_json::json!({ "prefix": prefix }).to_string();
            c.call("POST", "/v1/leases/revoke-prefix", Some(&body)).map(|b| {
                let n = serde_json::from_str::<Vec<LeaseView>>(&b).map(|v| v.len()).unwrap_or(0);
                format!("revoked {n} lease(s)")
            })
        }
    };
    match result {
        Ok(out) => {
            println!("{}", out.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn table(leases: &[LeaseView]) -> String {
    let mut rows = vec![["ID", "ROLE", "CLIENT", "DB USER", "STATE", "SESSIONS", "EXPIRES", "LAST ERROR"].map(String::from).to_vec()];
    for l in leases {
        rows.push(vec![
            l.id.clone(),
            l.role.clone(),
            l.client.clone(),
            l.db_user.clone(),
            l.state.clone(),
            l.sessions.to_string(),
            l.expires_at.clone(),
            l.last_error.clone().unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn get_creds(c: &Client, role: &str) -> Result<Creds, String> {
    let body = c.call("POST", &format!("/v1/creds/{}", encode(role)), None).map_err(|e| e.to_string())?;
    serde_json::from_str(&body).map_err(|e| format!("unexpected answer from the admin API: {e}"))
}

pub fn creds(api: &ApiArgs, role: &str, json: bool) -> ExitCode {
    let c = match client(api) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match get_creds(&c, role) {
        Ok(creds) if json => {
            println!("{}", serde_json::to_string_pretty(&creds).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(creds) => {
            // `eval "$(leasegate creds ROLE)"` sets them for the shell and its children.
            println!("export LEASEGATE_LEASE_ID={}", creds.lease_id);
            for (k, v) in env::vars(&creds) {
                println!("export {k}={}", shell_quote(&v));
            }
            if creds.kind == "mysql" {
                println!("# the mariadb client reads no MYSQL_USER: add -u \"$MYSQL_USER\", or run it under `leasegate exec`");
            }
            println!(
                "# expires {} (in {} s); revoke early: leasegate leases revoke {}",
                creds.expires_at, creds.ttl_seconds, creds.lease_id
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn shell_quote(v: &str) -> String {
    if v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:@".contains(&b)) {
        v.to_string()
    } else {
        format!("'{}'", v.replace('\'', "'\\''"))
    }
}

/// Runs `command` with a fresh credential, forwards SIGINT/SIGTERM/SIGHUP to it, revokes the
/// credential when it exits and returns its exit code (128 + signal if it was killed).
pub fn exec(api: &ApiArgs, role: &str, command: &[String]) -> ExitCode {
    let c = match client(api) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let creds = match get_creds(&c, role) {
        Ok(creds) => creds,
        Err(e) => return fail(e),
    };
    let code = run_child(&creds, command);
    if let Err(e) = c.call("POST", &format!("/v1/leases/{}/revoke", encode(&creds.lease_id)), None) {
        eprintln!("leasegate exec: revoking lease {} failed: {e} (it expires at {})", creds.lease_id, creds.expires_at);
    }
    code
}

fn run_child(creds: &Creds, command: &[String]) -> ExitCode {
    let Some((program, args)) = command.split_first() else { return fail("no command given") };
    // Lives until the child has exited: the option file is removed when this drops.
    let options = match env::OptionFile::write(creds) {
        Ok(o) => o,
        Err(e) => return fail(format!("cannot write the client option file: {e}")),
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut child = match tokio::process::Command::new(program)
            .args(args)
            .envs(env::vars(creds))
            .envs(options.iter().flat_map(|o| o.vars()))
            .env("LEASEGATE_LEASE_ID", &creds.lease_id)
            .spawn()
        {
            Ok(child) => child,
            // 127/126: what a shell returns for a missing / non-executable command.
            Err(e) => {
                eprintln!("leasegate exec: cannot run {program}: {e}");
                return ExitCode::from(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 });
            }
        };
        let pid = child.id().map(|p| p as i32);
        let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
            (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
        else {
            return fail("cannot install signal handlers");
        };
        let status = loop {
            let forward = tokio::select! {
                s = child.wait() => break s,
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
                _ = hup.recv() => libc::SIGHUP,
            };
            if let Some(pid) = pid {
                // SAFETY: kill with our child's pid; it is not reaped until wait() returns.
                unsafe { libc::kill(pid, forward) };
            }
        };
        match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                let code = s.code().or_else(|| s.signal().map(|sig| 128 + sig)).unwrap_or(1);
                ExitCode::from(u8::try_from(code).unwrap_or(1))
            }
            Err(e) => fail(e),
        }
    })
}
