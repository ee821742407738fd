//! The command line (DESIGN.md §3, a contract). Parsing only; `main.rs` dispatches.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "leasegate", version, about = "Mints a short-lived database user per client and proxies the wire protocol")]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LEASEGATE_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax); RUST_LOG is used when this is absent.
    #[arg(long, global = true, env = "LEASEGATE_LOG_LEVEL")]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy with a config file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
        /// Threads that serve connections; 1 runs everything on one event loop.
        #[arg(long, default_value_t = 1, env = "LEASEGATE_WORKER_THREADS")]
        worker_threads: usize,
    },
    /// Start a private PostgreSQL and MariaDB, a leasegate in front of both and its admin API;
    /// print lines to paste; Ctrl-C removes everything.
    Dev {
        /// Port for leasegate's Postgres listener [default: 6432, or a free port if 6432 is taken;
        /// 0 always picks a free one].
        #[arg(long)]
        port: Option<u16>,
        /// Port for leasegate's MySQL listener in front of the private MariaDB [default: 3307,
        /// or a free port if 3307 is taken].
        #[arg(long)]
        mysql_port: Option<u16>,
        /// Port for the admin API (`leasegate leases`, `creds`, `exec`, `/metrics`) [default:
        /// 9187, or a free port if 9187 is taken].
        #[arg(long)]
        admin_port: Option<u16>,
        /// Keep the private cluster's files after exit (for inspection).
        #[arg(long)]
        keep: bool,
        /// Threads that serve connections; 1 runs everything on one event loop.
        #[arg(long, default_value_t = 1, env = "LEASEGATE_WORKER_THREADS")]
        worker_threads: usize,
    },
    /// Check a config file and the files it names; print every problem; exit 64 if any.
    CheckConfig { file: PathBuf },
    /// Read a password on stdin and print the value for `[[client]].password`.
    HashPassword,
    /// Connect to each database as its admin, check every privilege leasegate needs, and print
    /// the GRANT statements for what is missing; exit 0 when all are held, 1 when not.
    Doctor {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List, show, renew and revoke leases (admin API).
    Leases {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: LeasesCommand,
    },
    /// Get a credential for direct use (a CI job, a migration); it is revoked at its TTL.
    Creds {
        #[command(flatten)]
        api: ApiArgs,
        role: String,
        /// Print JSON instead of shell-friendly lines.
        #[arg(long)]
        json: bool,
    },
    /// Print a `[[role]]` table for a Vault database role, from the JSON that
    /// `vault read -format=json database/roles/NAME` prints (a file, or stdin).
    ImportVaultRole {
        /// The role's name in leasegate (the Vault role's name; the JSON does not carry it).
        #[arg(long)]
        name: String,
        /// The `[[database]]` it is for [default: the JSON's data.db_name].
        #[arg(long)]
        database: Option<String>,
        /// The JSON file; "-" or nothing reads stdin.
        file: Option<PathBuf>,
    },
    /// Print a shell completion script: `leasegate completions bash > /etc/bash_completion.d/leasegate`.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff): `leasegate man | man -l -`.
    Man,
    /// Run a command with a fresh credential in its environment; revoke it when the command exits.
    Exec {
        #[command(flatten)]
        api: ApiArgs,
        #[arg(long)]
        role: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

/// Where the admin API is, and its token (left out of `Debug`, wiped when dropped).
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    #[arg(long, env = "LEASEGATE_ADDR", default_value = "127.0.0.1:9187", global = true)]
    pub addr: String,
    #[arg(long, env = "LEASEGATE_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A file holding the bearer token, read at each use: a CI job's OIDC token or a projected
    /// service-account token (which rotate), or the admin token.
    #[arg(long, env = "LEASEGATE_TOKEN_FILE", global = true, conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiArgs")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl Drop for ApiArgs {
    fn drop(&mut self) {
        if let Some(token) = &mut self.token {
            zeroize::Zeroize::zeroize(token);
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum LeasesCommand {
    /// List leases (a table, or JSON with --json).
    List {
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Set a lease to expire INCREMENT from now (may shorten it; clamped to its max TTL).
    Renew {
        id: String,
        /// e.g. "30m", "2h"
        #[arg(long)]
        increment: String,
    },
    /// Revoke a lease: close its sessions and drop its user.
    Revoke { id: String },
    /// Revoke every lease whose role name starts with PREFIX.
    RevokePrefix { prefix: String },
}

#[cfg(test)]
mod tests {
    use super::ApiArgs;

    #[test]
    fn the_admin_token_never_prints() {
        let args = ApiArgs { addr: "127.0.0.1:9187".into(), token: Some("operator-token-0123456789".into()), token_file: None };
        let shown = format!("{args:?}");
        assert!(shown.contains("9187") && !shown.contains("operator-token"), "{shown}");
    }
}
