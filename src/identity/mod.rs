//! Workload identity (DESIGN.md §2a): proofs of who a client is that are not a static password.
//!
//! `jwt` verifies tokens from the configured `[[jwt_issuer]]`s; `cert` reads who a client
//! certificate names (rustls has verified its chain by then). Which `[[client]]` a proof
//! names, and what a failed proof looks like on the wire, stay with `auth/` and `proxy/`.

pub mod cert;
pub mod jwt;
