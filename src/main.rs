//! The `leasegate` binary: parse the command line, set up logging, dispatch.
//! Exit codes (contract): 0 clean shutdown, 64 bad config, 1 runtime failure.

use clap::{CommandFactory, Parser};
use leasegate::cli::{Cli, Command, LogFormat};
use leasegate::config::{Config, ConfigError};
use leasegate::{app, commands, dev, shutdown};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.log_level.as_deref());
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::HashPassword => hash_password(),
        Command::Doctor { config } => doctor(&config),
        Command::Leases { api, command } => commands::leases(&api, &command),
        Command::Creds { api, role, json } => commands::creds(&api, &role, json),
        Command::Exec { api, role, command } => commands::exec(&api, &role, &command),
        Command::ImportVaultRole { name, database, file } => import_vault_role(&name, database.as_deref(), file.as_deref()),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "leasegate", &mut script);
            print_all("completions", &script)
        }
        Command::Man => {
            let mut page = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut page) {
                Ok(()) => print_all("man", &page),
                Err(e) => {
                    eprintln!("leasegate man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config, worker_threads } => serve(&config, worker_threads),
        Command::Dev { port, mysql_port, admin_port, keep, worker_threads } => runtime(worker_threads)
            .and_then(|rt| {
                rt.block_on(dev::run(dev::Ports { pg: port, mysql: mysql_port, admin: admin_port }, keep)).map_err(|e| {
                    eprintln!("leasegate dev: {e:#}");
                    ExitCode::FAILURE
                })
            })
            .map_or_else(|code| code, |()| ExitCode::SUCCESS),
    }
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// One thread by default, like linkerd2-proxy: the data path is syscall-bound, and on a shared
/// sidecar host a second worker mostly adds cross-thread wake-ups (bench/pg.sh measured ~12 µs of
/// proxy CPU per pgbench transaction on one thread against ~15 µs on two).
fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all().build().map_err(|e| {
        eprintln!("leasegate: cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::from_file(path).map_err(|e| {
        match e {
            ConfigError::Invalid(problems) => problems.iter().for_each(|p| eprintln!("{}: {p}", path.display())),
            other => eprintln!("{}: {other}", path.display()),
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let problems = config.load_files();
    for (at, note) in leasegate::mysql::vault::notes(&config).into_iter().chain(config.sweep_hazards()) {
        println!("{}: {at}: {note}", path.display());
    }
    if problems.is_empty() {
        println!("{}: ok", path.display());
        ExitCode::SUCCESS
    } else {
        problems.iter().for_each(|p| eprintln!("{}: {p}", path.display()));
        ExitCode::from(EXIT_CONFIG)
    }
}

fn doctor(path: &std::path::Path) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match runtime(1) {
        Ok(rt) => rt.block_on(commands::doctor(config)),
        Err(code) => code,
    }
}

fn serve(path: &std::path::Path, workers: usize) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match runtime(workers) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let listeners = match app::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return ExitCode::FAILURE;
            }
        };
        let signals = shutdown::Signals::new();
        signals.watch_process_signals();
        match app::run(config, listeners, signals).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ app::AppError::Config(_)) => {
                eprintln!("{}: {e}", path.display());
                ExitCode::from(EXIT_CONFIG)
            }
            Err(e) => {
                tracing::error!(error = %e, "leasegate failed");
                ExitCode::FAILURE
            }
        }
    })
}

/// Writes generated text to stdout. A reader that stops early (`leasegate man | head`) is not
/// an error, as for any Unix filter; clap_complete would panic writing to a closed pipe, so the
/// text is generated into memory first.
fn print_all(what: &str, text: &[u8]) -> ExitCode {
    match std::io::stdout().lock().write_all(text) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("leasegate {what}: {e}");
            ExitCode::FAILURE
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Reads the JSON (a file, or stdin for "-" or none) and prints the `[[role]]` table; a bad
/// input exits 64 like a bad config.
fn import_vault_role(name: &str, database: Option<&str>, file: Option<&std::path::Path>) -> ExitCode {
    use std::io::Read;
    let mut json = String::new();
    let read = match file.filter(|f| f.as_os_str() != "-") {
        Some(f) => std::fs::read_to_string(f).map(|text| json = text).map_err(|e| format!("{}: {e}", f.display())),
        None => std::io::stdin().read_to_string(&mut json).map(drop).map_err(|e| format!("stdin: {e}")),
    };
    if let Err(e) = read {
        eprintln!("leasegate import-vault-role: cannot read {e}");
        return ExitCode::FAILURE;
    }
    match leasegate::vault_role::import(&json, name, database) {
        Ok(toml) => {
            print!("{toml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("leasegate import-vault-role: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn hash_password() -> ExitCode {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprint!("Password: ");
        let _ = std::io::stderr().flush();
    }
    let _echo = interactive.then(leasegate::dev::EchoOff::new);
    let mut line = String::new();
    if let Err(e) = stdin.lock().read_line(&mut line) {
        eprintln!("leasegate hash-password: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    drop(_echo);
    if interactive {
        eprintln!();
    }
    let mut rest = String::new();
    if !interactive && stdin.lock().read_line(&mut rest).is_ok_and(|n| n > 0) {
        eprintln!("leasegate hash-password: expected one line (one password) on stdin, got more");
        return ExitCode::from(EXIT_CONFIG);
    }
    let password = leasegate::secret::Secret::new(line.trim_end_matches(['\r', '\n']));
    if password.is_empty() {
        eprintln!("leasegate hash-password: empty password");
        return ExitCode::from(EXIT_CONFIG);
    }
    println!("{}", leasegate::auth::hash::client_password_value(&password));
    ExitCode::SUCCESS
}
