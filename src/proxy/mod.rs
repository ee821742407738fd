//! The session pipeline (Postgres in `session.rs`; MySQL, whose server speaks first, in
//! `mysql_session.rs`, sharing its steps and helpers) and the one place errors become wire errors.

pub mod error;
pub mod mysql_session;
pub mod session;
