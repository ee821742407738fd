//! The Postgres wire protocol: pure messages and framing, the client leg (`frontend`), the
//! server leg (`backend`), SCRAM, cancel relaying, the error map (`sqlstate`), the provisioning
//! SQL, and [`Postgres`], which plugs all of it into the session pipeline (`protocol`).

pub mod backend;
pub mod cancel;
pub mod codec;
pub mod frontend;
pub mod idle;
pub mod message;
mod privileges;
pub mod protocol;
pub mod provision;
pub mod scram;
pub mod sqlstate;

pub use protocol::Postgres;
