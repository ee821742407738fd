//! The MySQL/MariaDB wire protocol, the mirror image of `pg/`: packet framing and the packets
//! leasegate builds (`packet`), the client leg (`frontend`), the server leg (`backend`), the
//! proof checks (`scramble`), the command gate for COM_CHANGE_USER and KILL (`gate`), which
//! server threads leasegate proxies (`threads`, the counterpart of Postgres cancel keys) and
//! the provisioning SQL.

pub mod backend;
pub mod frontend;
pub mod gate;
pub mod idle;
pub mod packet;
pub mod provision;
pub mod scramble;
pub mod threads;
