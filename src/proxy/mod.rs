//! The one session pipeline for every wire protocol (`session.rs`), the seam a protocol
//! implements (`protocol.rs`) and the neutral reasons a session is refused (`refusal.rs`).
//! Nothing here knows Postgres or MySQL: `pg/` and `mysql/` implement [`protocol::Protocol`].

pub mod protocol;
pub mod refusal;
pub mod session;
