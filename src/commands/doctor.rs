//! `leasegate doctor --config F`: connects to each database with its admin credentials, checks
//! every privilege leasegate needs there (`Provisioner::privileges`), and prints the statements
//! that grant what is missing. Exit 0 when all is held, 1 when something is missing, 69
//! (EX_UNAVAILABLE) when a database could not be checked, 64 for a config problem.

use crate::config::Config;
use crate::provision::Privilege;
use std::process::ExitCode;
use std::sync::Arc;

const EXIT_CONFIG: u8 = 64;
const EXIT_UNAVAILABLE: u8 = 69;

pub async fn doctor(config: Config) -> ExitCode {
    let config = Arc::new(config);
    let provisioners = match crate::app::provisioners(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("leasegate doctor: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (mut missing, mut unchecked) = (Vec::new(), false);
    for (name, provisioner) in &provisioners {
        let Some(db) = config.databases.iter().find(|d| &d.name == name) else { continue };
        let roles: Vec<_> = config.roles.iter().filter(|r| &r.database == name).cloned().collect();
        println!("database {name} ({:?} at {}, admin {})", db.kind, db.upstream, db.admin_user);
        match provisioner.privileges(&roles).await {
            Ok(found) => {
                print!("{}", table(&found));
                missing.extend(found.into_iter().filter(|p| !p.held).map(|p| (name.clone(), p.grant)));
            }
            Err(e) => {
                println!("  cannot check: {e}");
                unchecked = true;
            }
        }
        for role in roles.iter().filter(|r| !r.creation_statements.is_empty()) {
            println!(
                "  note: role {} has its own creation statements; the admin also needs what they grant \
                 (WITH GRANT OPTION), which is not checked here",
                role.name
            );
        }
        provisioner.close().await;
    }
    if !missing.is_empty() {
        println!("\nmissing: run these as a superuser (or an account that holds them WITH GRANT OPTION):");
        for (db, grant) in &missing {
            println!("  {grant}  -- {db}");
        }
        return ExitCode::FAILURE;
    }
    if unchecked {
        return ExitCode::from(EXIT_UNAVAILABLE);
    }
    println!("\nall privileges held");
    ExitCode::SUCCESS
}

/// One line per privilege: held or missing, its name, what it is for.
fn table(found: &[Privilege]) -> String {
    let width = found.iter().map(|p| p.name.len()).max().unwrap_or(0);
    found.iter().map(|p| format!("  {:<7}  {:<width$}  {}\n", if p.held { "ok" } else { "MISSING" }, p.name, p.needed_for)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_marks_what_is_missing() {
        let p = |name: &str, held| Privilege { name: name.into(), needed_for: "x", held, grant: String::new() };
        assert_eq!(
            table(&[p("CREATEROLE", true), p("pg_signal_backend", false)]),
            "  ok       CREATEROLE         x\n  MISSING  pg_signal_backend  x\n"
        );
    }
}
