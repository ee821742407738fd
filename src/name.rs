//! Generated user names and passwords for minted users.
//!
//! Names are `<prefix><client>_<role>_<random>`, lower-case `[a-z0-9_]`, cut to the server's
//! limit by shortening the client/role part (the prefix, which the orphan sweep relies on, and
//! the random suffix, which makes names unique, are never cut). Passwords come from the
//! thread-local CSPRNG.
//!
//! A leaf (it needs only `secret`): the config checks prefixes with it, the lease engine names
//! what it mints, dev mode and the test harness make passwords with it.

use crate::secret::Secret;

const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Random characters at the end of every name: 36^10 ≈ 2^51 names per client/role.
const SUFFIX_LEN: usize = 10;
/// 40 alphanumerics ≈ 238 bits.
pub const PASSWORD_LEN: usize = 40;
/// The longest prefix we accept, leaving room for the suffix under the smallest limit (16).
const MAX_PREFIX: usize = 16 - SUFFIX_LEN - 1;

fn random_string(alphabet: &[u8], len: usize) -> String {
    (0..len).map(|_| alphabet[rand::random_range(0..alphabet.len())] as char).collect()
}

/// Checks a `name_prefix`: starts with a letter, `[a-z0-9_]`, short enough for any server.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok_chars = prefix.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if prefix.is_empty() || !prefix.as_bytes()[0].is_ascii_lowercase() || !ok_chars {
        return Err("must start with a lower-case letter and contain only [a-z0-9_]".into());
    }
    if prefix.len() > MAX_PREFIX {
        return Err(format!("must be at most {MAX_PREFIX} characters so generated names fit every server"));
    }
    Ok(())
}

/// A fresh user name no longer than `max_len` bytes.
pub fn user_name(prefix: &str, client: &str, role: &str, max_len: usize) -> String {
    let suffix = random_string(LOWER_ALNUM, SUFFIX_LEN);
    let middle: String =
        format!("{client}_{role}").chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    let room = max_len.saturating_sub(prefix.len() + SUFFIX_LEN + 1);
    let middle = &middle[..middle.len().min(room)];
    if middle.is_empty() { format!("{prefix}{suffix}") } else { format!("{prefix}{middle}_{suffix}") }
}

pub fn password() -> Secret {
    Secret::new(random_string(ALNUM, PASSWORD_LEN))
}

/// A lease id: 26 random lower-case characters (about 134 bits).
pub fn lease_id() -> String {
    random_string(LOWER_ALNUM, 26)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_limit_and_keep_prefix_and_suffix() {
        let long = "x".repeat(100);
        for limit in [16, 32, 63, 80] {
            let n = user_name("lg_", &long, "role", limit);
            assert!(n.len() <= limit, "{n} > {limit}");
            assert!(n.starts_with("lg_"));
        }
        let n = user_name("lg_", "Billing-API", "app_ro", 63);
        assert!(n.starts_with("lg_billing_api_app_ro_"), "{n}");
        assert_eq!(n.len(), "lg_billing_api_app_ro_".len() + SUFFIX_LEN);
        assert_ne!(user_name("lg_", "a", "b", 63), user_name("lg_", "a", "b", 63));
    }

    #[test]
    fn passwords_are_long_and_random() {
        let (a, b) = (password(), password());
        assert_eq!(a.expose().len(), PASSWORD_LEN);
        assert_ne!(a, b);
        assert!(a.expose().bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("lg_").is_ok());
        for bad in ["", "_x", "LG", "lg-", "lg\"", "abcdefghi"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
