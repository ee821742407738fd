//! Where a secret comes from: `<key>_file`, `<key>_env`, or (dev configs only) inline.

use crate::secret::Secret;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
    /// Accepted for dev configs; `app` warns when it is used.
    Inline(Secret),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    File { path: String, source: std::io::Error },
    #[error("environment variable {0} is not set")]
    Env(String),
    #[error("the secret is empty")]
    Empty,
}

impl SecretSource {
    /// Builds the source from the three mutually exclusive keys; `Err` names the problem.
    pub fn from_keys(inline: Option<String>, file: Option<PathBuf>, env: Option<String>) -> Result<Self, String> {
        match (inline, file, env) {
            (Some(v), None, None) => Ok(SecretSource::Inline(Secret::new(v))),
            (None, Some(f), None) => Ok(SecretSource::File(f)),
            (None, None, Some(e)) => Ok(SecretSource::Env(e)),
            (None, None, None) => Err("one of the keys, *_file, *_env or the inline value, is required".into()),
            _ => Err("give only one of the inline value, *_file and *_env".into()),
        }
    }

    /// Reads the secret; a trailing newline in a file is not part of it.
    pub fn load(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map_err(|source| SecretError::File { path: path.display().to_string(), source })?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            SecretSource::Env(var) => std::env::var(var).map_err(|_| SecretError::Env(var.clone()))?,
            SecretSource::Inline(s) => s.expose().to_string(),
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Secret::new(value))
    }
}
