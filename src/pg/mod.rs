//! The Postgres wire protocol: pure messages and framing, the client leg (`frontend`), the
//! server leg (`backend`), SCRAM, cancel relaying and the provisioning SQL.

pub mod backend;
pub mod cancel;
pub mod codec;
pub mod frontend;
pub mod idle;
pub mod message;
pub mod provision;
pub mod scram;
pub mod sqlstate;
