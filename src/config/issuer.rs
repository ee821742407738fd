//! The fleet's split (DESIGN §2b): `[issuer]` makes this instance mint for remote sidecars (it
//! holds the admin credentials), `[[sidecar]]` says who may ask it and for which clients, and a
//! `[[database]]` with `issuer = { … }` makes this instance a sidecar for that database: it
//! holds no admin credential and asks an issuer for each lease.

use super::{CertRule, JwtRule, Problem};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[issuer]`: the HTTPS API sidecars call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    pub listen: SocketAddr,
    pub tls: IssuerTls,
}

/// The issuer's certificate, and the CA whose client certificates prove `cert` sidecars.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// `[[sidecar]]`: a kind of sidecar, how it proves itself (a JWT as its bearer token, or a
/// client certificate) and the clients it may ask leases for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    pub name: String,
    pub jwt: Option<JwtRule>,
    pub cert: Option<CertRule>,
    pub clients: Vec<String>,
}

/// A sidecar database's `issuer = { url | urls, ca, token_file }`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IssuerRef {
    /// One issuer, or `urls`: several, tried in turn.
    url: Option<String>,
    #[serde(default)]
    urls: Vec<String>,
    /// The CA that signed the issuers' certificates (default: the web PKI roots).
    pub ca: Option<PathBuf>,
    /// The sidecar's own token (e.g. a projected service-account token), re-read at each call
    /// so a rotated file is picked up.
    pub token_file: PathBuf,
}

impl IssuerRef {
    /// Every issuer URL, in the order they are tried.
    pub fn urls(&self) -> Vec<String> {
        self.url.iter().chain(&self.urls).cloned().collect()
    }

    pub(super) fn validate(&self, at: &str, problems: &mut Vec<Problem>) {
        let urls = self.urls();
        if urls.is_empty() {
            problems.push(Problem::new(format!("{at}.issuer"), "needs url (or urls)"));
        }
        for u in urls {
            // (As `net::https::parse_https` reads it; config does not import net.)
            let https = url::Url::parse(&u).is_ok_and(|url| url.scheme() == "https" && url.host_str().is_some_and(|h| !h.is_empty()));
            if !https {
                problems.push(Problem::new(format!("{at}.issuer.url"), format!("{u:?} is not an https:// URL with a host")));
            }
        }
    }
}

impl SidecarConfig {
    pub(super) fn validate(&self, at: &str, config: &super::Config, problems: &mut Vec<Problem>) {
        if self.name.is_empty() {
            problems.push(Problem::new(format!("{at}.name"), "must be non-empty"));
        }
        match (&self.jwt, &self.cert) {
            (Some(rule), None) => rule.validate(&format!("{at}.jwt"), &config.jwt_issuers, problems),
            (None, Some(cert)) => {
                if cert.spiffe_id.is_some() == cert.subject_cn.is_some() {
                    problems.push(Problem::new(format!("{at}.cert"), "exactly one of spiffe_id or subject_cn"));
                }
                if config.issuer.as_ref().is_none_or(|i| i.tls.client_ca.is_none()) {
                    problems.push(Problem::new(format!("{at}.cert"), "cert sidecars need [issuer].tls.client_ca"));
                }
            }
            _ => problems.push(Problem::new(at.to_string(), "a sidecar proves itself in exactly one way: jwt or cert")),
        }
        if self.clients.is_empty() {
            problems.push(Problem::new(format!("{at}.clients"), "at least one client"));
        }
        for (j, client) in self.clients.iter().enumerate() {
            if config.client(client).is_none() {
                problems.push(Problem::new(format!("{at}.clients[{j}]"), format!("no [[client]] is named {client:?}")));
            }
        }
        if config.issuer.is_none() {
            problems.push(Problem::new(at.to_string(), "[[sidecar]] needs an [issuer] section"));
        }
    }
}
