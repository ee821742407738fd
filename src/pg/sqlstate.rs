//! The SQLSTATE codes leasegate itself sends (a real server's codes pass through untouched).

/// Wrong password, unknown client or a role the client may not use: one answer for all three.
pub const INVALID_PASSWORD: &str = "28P01";
/// Refused before authentication (TLS required, channel binding failures).
pub const INVALID_AUTHORIZATION: &str = "28000";
pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const CONNECTION_FAILURE: &str = "08006";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const CANNOT_CONNECT_NOW: &str = "57P03";
pub const ADMIN_SHUTDOWN: &str = "57P01";
/// An error outside the database: minting failed (missing privilege, template error).
pub const SYSTEM_ERROR: &str = "58000";
