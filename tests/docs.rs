//! README.md and docs/ as a newcomer reads them: the README starts with the two commands, every
//! relative link (and its #anchor) resolves, and every shell block marked ```` ```sh runnable ````
//! runs as written, with the binary just built on PATH, in a private TMPDIR and HOME.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

use std::path::{Path, PathBuf};
use std::process::Command;

/// The README's opening, which outside checks rely on: keep it as it is.
const TWO_COMMANDS: &str = "# leasegate

```sh
cargo run --release -- dev     # private PostgreSQL + MariaDB and leasegate in front of both; prints psql and mariadb lines to paste
./scripts/test                 # the whole test suite; as root it first installs what it needs (Debian packages)
```
";

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![PathBuf::from("README.md")];
    let mut docs: Vec<PathBuf> =
        std::fs::read_dir("docs").unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "md")).collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// The fenced blocks of `text` whose info string is exactly `info`.
fn blocks(text: &str, info: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(rest)) if rest.trim() == info => current = Some(String::new()),
            (None, Some(_)) => current = Some(String::from("\u{0}")), // another block: skipped
            (Some(block), Some("")) => {
                if !block.starts_with('\u{0}') {
                    out.push(std::mem::take(block));
                }
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.push(anchor(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn the_readme_starts_with_the_two_commands_and_links_the_docs() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    assert!(readme.starts_with(TWO_COMMANDS), "README.md must open with the two commands, unchanged");
    assert!(readme.lines().take(40).any(|l| l.contains("leasegate dev") || l.contains("-- dev")));
    for doc in ["architecture", "configuration", "operations", "security", "mysql", "performance"] {
        assert!(readme.contains(&format!("](docs/{doc}.md)")), "README links docs/{doc}.md");
    }
    let perf = std::fs::read_to_string("docs/performance.md").unwrap();
    for command in ["ROUNDS=3 DURATION=10 bench/pg.sh", "ROUNDS=3 DURATION=10 bench/mysql.sh"] {
        assert!(blocks(&perf, "sh").iter().any(|b| b.trim() == command), "docs/performance.md keeps `{command}`");
    }
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        let base = page.parent().unwrap_or(Path::new("")).to_path_buf();
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').unwrap_or(rest.len())];
            if target.starts_with("http") || target.contains(' ') {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let path = if file.is_empty() { page.clone() } else { base.join(file) };
            if !path.exists() {
                broken.push(format!("{}: {target}", page.display()));
            } else if !fragment.is_empty() && !anchors(&std::fs::read_to_string(&path).unwrap()).iter().any(|a| a == fragment) {
                broken.push(format!("{}: {target} (no such heading)", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_runnable_shell_block_runs_as_written() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_leasegate")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut ran = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).unwrap();
        for block in blocks(&text, "sh runnable") {
            let scratch = leasegate::devdb::TempDir::new("leasegate-docs").unwrap();
            let out = Command::new("bash")
                .args(["-euo", "pipefail", "-c", &block])
                .env("PATH", &path)
                .env("TMPDIR", scratch.path())
                .env("HOME", scratch.path())
                .env_remove("LEASEGATE_ADDR")
                .env_remove("LEASEGATE_TOKEN")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: this block failed:\n{block}\nstdout: {}\nstderr: {}",
                page.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            ran += 1;
        }
    }
    assert!(ran >= 3, "only {ran} runnable blocks: mark the self-contained ones ```sh runnable");
}

#[test]
fn the_block_scanner_and_anchors_work() {
    let text = "a\n```sh runnable\necho 1\n```\n```sh\nno\n```\n```sh runnable\necho 2\n```\n";
    assert_eq!(blocks(text, "sh runnable"), ["echo 1\n", "echo 2\n"]);
    assert_eq!(blocks(text, "sh"), ["no\n"]);
    assert_eq!(anchor(" Creation statements: Vault templates"), "creation-statements-vault-templates");
    assert_eq!(anchor(" Shutdown, limits, logs, deploy/"), "shutdown-limits-logs-deploy");
}
