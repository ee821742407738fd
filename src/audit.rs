//! The audit log (DESIGN.md §3, a contract): one JSON object per line for every lease event
//! (granted, renewed, ended, revoke_failed, orphan_dropped) and every failed client
//! authentication. Written to `[audit].path` (or stdout for "-") and flushed per event.
//! Never a password: the record type has no field that could hold one.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One audit record. Empty fields are left out.
#[derive(Debug, Default, Serialize)]
pub struct Event<'a> {
    pub event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<crate::peer::Peer>,
    /// How the client proved who it is: "password", "peer", "jwt", "cert" (or "admin_token"
    /// for the operator's API credentials).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_method: Option<&'a str>,
    /// What the proof named: a token's iss and sub (and jti), a peer's uid, a SPIFFE ID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a Event<'a>,
}

#[derive(Clone, Default)]
pub struct Audit {
    sink: Option<Arc<Mutex<Box<dyn Write + Send>>>>,
}

impl Audit {
    /// Appends to `path` ("-": stdout); `None` keeps no audit log.
    pub fn open(path: Option<&Path>) -> std::io::Result<Audit> {
        let sink: Box<dyn Write + Send> = match path {
            None => return Ok(Audit::default()),
            Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdout()),
            Some(p) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(p)?),
        };
        Ok(Audit { sink: Some(Arc::new(Mutex::new(sink))) })
    }

    pub fn record(&self, event: &Event<'_>) {
        let Some(sink) = &self.sink else { return };
        let line = Line { time: rfc3339(SystemTime::now()), event };
        let Ok(mut text) = serde_json::to_string(&line) else { return };
        text.push('\n');
        let mut w = sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = w.write_all(text.as_bytes()).and_then(|()| w.flush()) {
            tracing::error!(error = %e, "writing the audit log failed");
        }
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
