//! The fleet's split between issuers and sidecars (DESIGN.md §2b).
//!
//! - `server`: an issuer's HTTPS API (`[issuer]`): sidecars that prove themselves (`[[sidecar]]`)
//!   ask for leases for the clients they may act for; the issuer mints with its admin
//!   connection, renews, and revokes with the server sessions.
//! - `remote`: a sidecar's [`crate::provision::Provisioner`] for a `[[database]]` with
//!   `issuer = { … }`: the lease engine runs unchanged, each admin step a call to the issuer;
//!   and the watcher that ends here what the issuer ended.
//! - `wire`: the JSON both sides exchange.

pub mod remote;
pub mod server;
pub mod wire;
