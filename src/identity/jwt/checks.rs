//! The registered claims checked after the signature (RFC 7519 §4.1): `aud`, `exp`, `nbf`,
//! `iat`. Pure: the time is passed in, so tests pick it.

use super::failure::JwtFailure;
use crate::config::JwtIssuerConfig;
use serde_json::{Map, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Checks audience and validity times; returns when the token expires.
pub fn check(claims: &Map<String, Value>, config: &JwtIssuerConfig, now: SystemTime) -> Result<SystemTime, JwtFailure> {
    let issuer = || config.name.clone();
    if !audience_ok(claims.get("aud"), &config.audiences) {
        return Err(JwtFailure::Audience { issuer: issuer() });
    }
    let leeway = config.leeway;
    // A token with no `exp` would be valid forever.
    let exp = time_claim(claims, "exp")?.ok_or(JwtFailure::Malformed { what: "exp is missing" })?;
    if now.duration_since(exp).is_ok_and(|late| late > leeway) {
        return Err(JwtFailure::Expired { issuer: issuer() });
    }
    if let Some(nbf) = time_claim(claims, "nbf")?
        && ahead(nbf, now) > leeway
    {
        return Err(JwtFailure::NotYetValid { issuer: issuer() });
    }
    let iat = time_claim(claims, "iat")?;
    if let Some(iat) = iat
        && ahead(iat, now) > leeway
    {
        return Err(JwtFailure::NotYetValid { issuer: issuer() });
    }
    if let Some(max_age) = config.max_token_age {
        // Without `iat` the age cannot be bounded, so the policy cannot be met.
        let iat = iat.ok_or(JwtFailure::Malformed { what: "iat is missing (max_token_age is set)" })?;
        if now.duration_since(iat).is_ok_and(|age| age > max_age.saturating_add(leeway)) {
            return Err(JwtFailure::TooOld { issuer: issuer() });
        }
    }
    Ok(exp)
}

/// How far `t` lies after `now` (zero when it does not); no arithmetic that could overflow.
fn ahead(t: SystemTime, now: SystemTime) -> Duration {
    t.duration_since(now).unwrap_or(Duration::ZERO)
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3); any one configured audience will do.
fn audience_ok(aud: Option<&Value>, audiences: &[String]) -> bool {
    let wanted = |s: &str| audiences.iter().any(|a| a == s);
    match aud {
        Some(Value::String(s)) => wanted(s),
        Some(Value::Array(items)) => items.iter().any(|v| v.as_str().is_some_and(wanted)),
        _ => false,
    }
}

/// A NumericDate: seconds since the epoch, possibly fractional. `Ok(None)` when absent.
fn time_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<SystemTime>, JwtFailure> {
    let Some(value) = claims.get(name) else { return Ok(None) };
    let bad = JwtFailure::Malformed { what: "exp, nbf or iat is not a non-negative number of seconds" };
    let seconds = value.as_f64().filter(|s| s.is_finite() && *s >= 0.0).ok_or(bad.clone())?;
    let since_epoch = Duration::try_from_secs_f64(seconds).map_err(|_| bad.clone())?;
    UNIX_EPOCH.checked_add(since_epoch).map(Some).ok_or(bad)
}
