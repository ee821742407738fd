//! The protocol-neutral session pipeline and the one place errors become wire errors.

pub mod error;
pub mod session;
