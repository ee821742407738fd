//! `[[jwt_issuer]]` (who may sign workload tokens, DESIGN.md §2a) and the `jwt = { … }` rule a
//! client or sidecar uses to say which verified tokens prove it. Pure: checking signatures and
//! fetching keys belong to `identity::jwt`; this file only says what a rule accepts.

use super::Problem;
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

    /// Whether a verified token (from the `[[jwt_issuer]]` named `issuer_name`, with `sub` and
    /// `claims`) proves this rule's client. Takes the token's parts, not the token type, so
    /// config does not depend on `identity` (which depends on config).
    pub fn matches(&self, issuer_name: &str, sub: Option<&str>, claims: &serde_json::Map<String, Value>) -> bool {
        if issuer_name != self.issuer {
            return false;
        }
        if let Some(subject) = &self.subject
            && sub != Some(subject.as_str())
        {
            return false;
        }
        self.claims.iter().all(|(path, pattern)| claim_at(claims, path).is_some_and(|v| value_matches(v, pattern)))
    }
}

/// The whole key as a claim name first (`kubernetes.io/namespace`, `repository`), otherwise a
/// dotted path into nested objects whose own names may hold dots: Kubernetes puts
/// `{"serviceaccount": {"name": …}}` under a `kubernetes.io` claim, so
/// `kubernetes.io.serviceaccount.name` tries `kubernetes` then `kubernetes.io` as the first step.
/// The path comes from the config, not the token, so the search is over a few dots only.
fn claim_at<'a>(claims: &'a serde_json::Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.match_indices('.').find_map(|(dot, _)| {
        let nested = claims.get(&path[..dot])?.as_object()?;
        claim_at(nested, &path[dot + 1..])
    })
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
mod tests {
    use super::*;
    use serde_json::json;

    /// The parts of a verified token a rule looks at.
    struct Token {
        issuer_name: String,
        sub: Option<String>,
        claims: serde_json::Map<String, Value>,
    }

    fn token(claims: Value) -> Token {
        let claims = claims.as_object().unwrap().clone();
        Token { issuer_name: "k8s".into(), sub: claims.get("sub").and_then(Value::as_str).map(str::to_string), claims }
    }

    fn matches(r: &JwtRule, t: &Token) -> bool {
        r.matches(&t.issuer_name, t.sub.as_deref(), &t.claims)
    }

    fn rule(text: &str) -> JwtRule {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn glob_matches_runs_single_characters_and_literals() {
        for (pattern, text, expected) in [
            ("acme/shop", "acme/shop", true),
            ("acme/shop", "acme/shopx", false),
            ("acme/*", "acme/shop", true),
            ("acme/*", "acme/", true),
            ("acme/*", "acme", false),
            ("*", "", true),
            ("refs/heads/ma?n", "refs/heads/main", true),
            ("refs/heads/ma?n", "refs/heads/man", false),
            ("*/*-api", "shop/billing-api", true),
            ("*a*b*c", "xxaxxbxxcxx", false),
            ("*a*b*c", "xxaxxbxxc", true),
            ("a.c", "abc", false),
            ("[ab]", "a", false),
            ("é?", "éü", true),
            ("**x", "aax", true),
        ] {
            assert_eq!(glob(pattern, text), expected, "{pattern} vs {text}");
        }
        // No exponential backtracking on a hostile pattern.
        assert!(!glob(&format!("{}b", "*a".repeat(30)), &"a".repeat(5000)));
    }

    #[test]
    fn subject_is_exact() {
        let r = rule(
            r#"issuer = "k8s"
subject = "system:serviceaccount:shop:billing-api""#,
        );
        assert!(matches(&r, &token(json!({"sub": "system:serviceaccount:shop:billing-api"}))));
        assert!(!matches(&r, &token(json!({"sub": "system:serviceaccount:shop:billing-api2"}))));
        assert!(!matches(&r, &token(json!({"sub": "system:serviceaccount:shop:*"}))));
        assert!(!matches(&r, &token(json!({}))));
        let mut other_issuer = token(json!({"sub": "system:serviceaccount:shop:billing-api"}));
        other_issuer.issuer_name = "gha".into();
        assert!(!matches(&r, &other_issuer));
    }

    #[test]
    fn claims_are_top_level_keys_first_then_dotted_paths() {
        let r = rule(
            r#"issuer = "k8s"
claims = { "kubernetes.io/namespace" = "shop", "kubernetes.io.serviceaccount.name" = "billing-*", repository = "acme/*" }"#,
        );
        let ok = json!({
            "kubernetes.io/namespace": "shop",
            "kubernetes.io": { "serviceaccount": { "name": "billing-api" } },
            "repository": "acme/shop",
        });
        assert!(matches(&r, &token(ok.clone())));
        let mut wrong = ok.clone();
        wrong["kubernetes.io"]["serviceaccount"]["name"] = json!("admin");
        assert!(!matches(&r, &token(wrong)));
        let mut missing = ok;
        missing.as_object_mut().unwrap().remove("repository");
        assert!(!matches(&r, &token(missing)));
        // A top-level key with dots wins over the nested path.
        let dotted = rule(
            r#"issuer = "k8s"
claims = { "a.b" = "top" }"#,
        );
        assert!(matches(&dotted, &token(json!({"a.b": "top", "a": {"b": "nested"}}))));
        assert!(matches(&dotted, &token(json!({"a": {"b": "top"}}))));
        assert!(!matches(&dotted, &token(json!({"a.b": "nested", "a": {"b": "top"}}))));
    }

    #[test]
    fn numbers_booleans_and_arrays() {
        let r = rule(
            r#"issuer = "k8s"
claims = { run_attempt = "1", protected = "true", groups = "team-*" }"#,
        );
        assert!(matches(&r, &token(json!({"run_attempt": 1, "protected": true, "groups": ["admins", "team-shop"]}))));
        assert!(!matches(&r, &token(json!({"run_attempt": 2, "protected": true, "groups": ["team-shop"]}))));
        assert!(!matches(&r, &token(json!({"run_attempt": 1, "protected": false, "groups": ["team-shop"]}))));
        assert!(!matches(&r, &token(json!({"run_attempt": 1, "protected": true, "groups": ["admins"]}))));
        assert!(!matches(&r, &token(json!({"run_attempt": 1, "protected": true, "groups": {"team-shop": true}}))));
        assert!(!matches(&r, &token(json!({"run_attempt": 1, "protected": true, "groups": [["team-shop"]]}))));
        assert!(!matches(&r, &token(json!({"run_attempt": null, "protected": true, "groups": ["team-shop"]}))));
    }

    #[test]
    fn rule_validation() {
        let issuers: Vec<JwtIssuerConfig> = vec![issuer(r#"jwks_file = "k.json""#)];
        let mut problems = Vec::new();
        rule(r#"issuer = "k8s""#).validate("client[0].jwt", &issuers, &mut problems);
        rule(
            r#"issuer = "gha"
subject = "x""#,
        )
        .validate("client[1].jwt", &issuers, &mut problems);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["client[0].jwt", "client[1].jwt.issuer"]);
        assert!(toml::from_str::<JwtRule>("issuer = \"k8s\"\nsub = \"x\"").is_err(), "unknown keys are refused");
    }

    fn issuer(extra: &str) -> JwtIssuerConfig {
        toml::from_str(&format!("name = \"k8s\"\nissuer = \"https://kubernetes.default.svc\"\naudiences = [\"leasegate\"]\n{extra}"))
            .unwrap()
    }

    fn problems(config: &JwtIssuerConfig) -> Vec<String> {
        let mut problems = Vec::new();
        config.validate("jwt_issuer[0]", &mut problems);
        problems.into_iter().map(|p| p.path).collect()
    }

    #[test]
    fn issuer_defaults_and_validation() {
        let ok = issuer(r#"jwks_file = "k.json""#);
        assert_eq!(ok.leeway, Duration::from_secs(60));
        assert_eq!(ok.refresh, Duration::from_secs(300));
        assert_eq!(ok.max_token_age, None);
        assert!(problems(&ok).is_empty());
        let tuned = issuer(
            "discovery_url = \"https://token.actions.githubusercontent.com/.well-known/openid-configuration\"\nmax_token_age = \"1h\"\nleeway = \"5s\"\nca = \"ca.pem\"",
        );
        assert_eq!(tuned.max_token_age, Some(Duration::from_secs(3600)));
        assert!(problems(&tuned).is_empty());
        assert_eq!(problems(&issuer("")), ["jwt_issuer[0]"]);
        assert_eq!(problems(&issuer("jwks_file = \"k.json\"\njwks_url = \"https://x/jwks\"")), ["jwt_issuer[0]"]);
        assert_eq!(problems(&issuer("jwks_url = \"http://x/jwks\"")), ["jwt_issuer[0].jwks_url"]);
        assert_eq!(problems(&issuer("discovery_url = \"http://x/.well-known\"")), ["jwt_issuer[0].discovery_url"]);
        let mut empty = ok.clone();
        empty.name.clear();
        empty.audiences.clear();
        assert_eq!(problems(&empty), ["jwt_issuer[0].name", "jwt_issuer[0].audiences"]);
        assert!(toml::from_str::<JwtIssuerConfig>("name = \"k\"\nissuer = \"i\"\naudiences = []\naudience = \"x\"").is_err());
    }
}
