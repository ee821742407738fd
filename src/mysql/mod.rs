//! The MySQL/MariaDB wire protocol, the mirror image of `pg/`: pure packet framing and the
//! packets leasegate builds (`packet`), reading and writing them during the handshake
//! (`packet_io`), the client leg (`frontend`), the server leg (`backend`), the proof checks
//! (`scramble`), the command gate for COM_CHANGE_USER and KILL (`gate`), the idle tracker
//! (`idle`), which server threads leasegate proxies (`threads`, the counterpart of Postgres
//! cancel keys), the error map (`errcode`), the provisioning SQL, the rewrite that lets Vault's
//! statements run unchanged (`vault`), and [`Mysql`], which plugs all of it into the session
//! pipeline (`protocol`).

pub mod backend;
pub mod errcode;
pub mod frontend;
pub mod gate;
pub mod greeting;
pub mod idle;
pub mod packet;
pub mod packet_io;
mod privileges;
pub mod protocol;
pub mod provision;
pub mod scramble;
pub mod threads;
pub mod vault;

pub use protocol::Mysql;
