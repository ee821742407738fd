//! `[[jwt_issuer]]` (who may sign workload tokens, DESIGN.md §2a) and the `jwt = { … }` rule a
//! client or sidecar uses to say which verified tokens prove it. Pure: checking signatures and
//! fetching keys belong to `identity::jwt`; this file only says what a rule accepts.

use super::Problem;
use crate::identity::jwt::VerifiedToken;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// What rules call this issuer (`jwt = { issuer = "k8s" }`).
    pub name: String,
    /// Must equal the token's `iss`; also how a token finds its issuer.
    pub issuer: String,
    /// A JWK set on disk, re-read every `refresh` (a rotated file takes effect).
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    /// An OIDC discovery document (`…/.well-known/openid-configuration`) naming `jwks_uri`.
    pub discovery_url: Option<String>,
    /// PEM roots for the HTTPS fetches; the web PKI roots when absent.
    pub ca: Option<PathBuf>,
    /// A token must name at least one of these in `aud`.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Refuse tokens issued longer ago than this (Kubernetes default tokens live a year).
    #[serde(default, with = "humantime_serde")]
    pub max_token_age: Option<Duration>,
    /// How often the key set is fetched (or the file re-read) in the background.
    #[serde(default = "default_refresh", with = "humantime_serde")]
    pub refresh: Duration,
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

impl JwtIssuerConfig {
    pub fn validate(&self, at: &str, problems: &mut Vec<Problem>) {
        if self.name.is_empty() {
            problems.push(Problem::new(format!("{at}.name"), "must be non-empty"));
        }
        if self.issuer.is_empty() {
            problems.push(Problem::new(format!("{at}.issuer"), "must be non-empty"));
        }
        let sources = [self.jwks_file.is_some(), self.jwks_url.is_some(), self.discovery_url.is_some()];
        if sources.iter().filter(|s| **s).count() != 1 {
            problems.push(Problem::new(at.to_string(), "exactly one of jwks_file, jwks_url or discovery_url is required"));
        }
        for (key, url) in [("jwks_url", &self.jwks_url), ("discovery_url", &self.discovery_url)] {
            if let Some(url) = url
                && !url.starts_with("https://")
            {
                // Keys fetched in the clear could be swapped by anyone on the path.
                problems.push(Problem::new(format!("{at}.{key}"), "must be an https:// URL"));
            }
        }
        if self.ca.is_some() && self.jwks_file.is_some() {
            problems.push(Problem::new(format!("{at}.ca"), "only used with jwks_url or discovery_url"));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            problems.push(Problem::new(format!("{at}.audiences"), "at least one non-empty audience is required"));
        }
        if self.refresh < Duration::from_secs(1) {
            problems.push(Problem::new(format!("{at}.refresh"), "must be at least 1s"));
        }
    }
}

/// `jwt = { issuer = "…", subject = "…", claims = { … } }`: which verified tokens prove a client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtRule {
    /// The `[[jwt_issuer]]` name (not its `iss` URL).
    pub issuer: String,
    /// Exact match against `sub`.
    pub subject: Option<String>,
    /// Claim path → glob; every entry must match.
    #[serde(default)]
    pub claims: BTreeMap<String, String>,
}

impl JwtRule {
    pub fn validate(&self, at: &str, issuers: &[JwtIssuerConfig], problems: &mut Vec<Problem>) {
        if !issuers.iter().any(|i| i.name == self.issuer) {
            problems.push(Problem::new(format!("{at}.issuer"), format!("no [[jwt_issuer]] is named {:?}", self.issuer)));
        }
        // A rule with no condition would let every token of the issuer prove this client.
        if self.subject.is_none() && self.claims.is_empty() {
            problems.push(Problem::new(at.to_string(), "a jwt rule needs a subject or at least one claim"));
        }
    }

    pub fn matches(&self, token: &VerifiedToken) -> bool {
        if token.issuer_name != self.issuer {
            return false;
        }
        if let Some(subject) = &self.subject
            && token.sub.as_deref() != Some(subject.as_str())
        {
            return false;
        }
        self.claims.iter().all(|(path, pattern)| claim_at(&token.claims, path).is_some_and(|v| value_matches(v, pattern)))
    }
}

/// The whole key as a top-level claim first (`kubernetes.io/namespace`, `repository`), then
/// the key as a dotted path into nested objects (`kubernetes.io.namespace` is not special).
fn claim_at<'a>(claims: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn value_matches(value: &Value, pattern: &str) -> bool {
    match value {
        Value::String(s) => glob(pattern, s),
        Value::Number(n) => glob(pattern, &n.to_string()),
        Value::Bool(b) => glob(pattern, if *b { "true" } else { "false" }),
        Value::Array(items) => items.iter().any(|item| !item.is_array() && value_matches(item, pattern)),
        Value::Null | Value::Object(_) => false,
    }
}

/// `*` matches any run of characters (also none), `?` exactly one, everything else itself.
/// Iterative with one backtrack point, so a hostile pattern cannot make it exponential.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None; // (pattern index after '*', text index it resumes at)
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi + 1, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {}
