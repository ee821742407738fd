//! Workload identity (DESIGN.md §2a): proofs of who a client is that are not a static password.
//!
//! `jwt` verifies tokens from the configured `[[jwt_issuer]]`s. Which `[[client]]` a proof
//! names, and what a failed proof looks like on the wire, stay with `auth/` and `proxy/`.

pub mod jwt;
