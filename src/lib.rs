//! leasegate: a sidecar that mints a short-lived database user per client and proxies the
//! wire protocol. See README.md for what it does, docs/ for the details (docs/architecture.md:
//! who owns what and why) and DESIGN.md (shared) for the contract.
//!
//! # Crate map
//!
//! How one connection flows through the modules:
//!
//! ```text
//!  net::listener ──accept──▶ proxy::session::run::<P> ─────────────────────────────┐
//!                             │ P::open        (pg/ or mysql/ frontend: TLS, startup)  │
//!                             │ auth::lookup   (login name → client, role, credential) │
//!                             │ P::authenticate (the protocol's proof exchange)        │
//!                             │ lease::LeaseManager::grant ──▶ provision (CREATE user) │
//!                             │ P::connect_upstream (backend: log in as that user)     │
//!                             │ P::hand_off ──▶ net::pump (bytes both ways, untouched) │
//!                             └─ any failure: proxy::refusal ──▶ P::refuse (sqlstate / errcode)
//! ```
//!
//! Who owns what:
//! - `app` wires everything and owns start-up and shutdown order; `service::App` is the shared
//!   handle every task gets (config, leases, metrics, audit).
//! - `proxy/` is the one protocol-neutral session pipeline and the [`proxy::protocol::Protocol`]
//!   seam; `pg/` and `mysql/` implement it (pure codecs, client leg, server leg, error map,
//!   provisioning SQL). A third protocol is a new folder plus one line in `app::build_databases`.
//! - `auth/` resolves login names to a client and the one way it proves itself (a password,
//!   or its Unix peer, `peer`); `credential` parses stored verifiers.
//! - `lease/` owns leases: one state machine (`state.rs`), granting, deadlines, renewal,
//!   revocation, the lease store (SQLite journal behind `store::LeaseStore`), recovery.
//!   `provision` is the trait it asks a database server through, implemented per protocol;
//!   `name` generates user names, lease ids and passwords.
//! - `net/` is transport: listeners (TCP and Unix sockets), TLS, upstream targets, framing,
//!   the byte pump.
//! - `admin/` is the HTTP API and its CLI client; `cli`/`commands` the command line;
//!   `metrics`, `audit`, `config`, `secret`, `shutdown` what their names say; `dev`/`devdb`
//!   the `leasegate dev` mode and the private servers it (and the tests) start.
//! - Fitting in where users already are: `vault_role` turns a Vault role's JSON into a
//!   `[[role]]` (`import-vault-role`); `mysql::vault` lets Vault's MySQL statements run unchanged;
//!   `commands::env` is what `exec`/`creds` set for each ecosystem's tools.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod credential;
pub mod dev;
pub mod devdb;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod issuer;
pub mod lease;
pub mod metrics;
pub mod mysql;
pub mod name;
pub mod net;
pub mod peer;
pub mod pg;
pub mod provision;
pub mod proxy;
pub mod secret;
pub mod service;
pub mod shutdown;
pub mod vault_role;
