//! leasegate: a sidecar that mints a short-lived database user per client and proxies the
//! wire protocol. See README.md for what it does and DESIGN.md (shared) for the contract.

pub mod admin;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dev;
pub mod devdb;
pub mod lease;
pub mod metrics;
pub mod mysql;
pub mod name;
pub mod net;
pub mod pg;
pub mod provision;
pub mod proxy;
pub mod secret;
pub mod shutdown;
