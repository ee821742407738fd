//! Sockets: the accept loop, TLS on both legs (how a server certificate is judged: `server_cert`,
//! with the DER facts it reads in `der`), the stream type both legs share, framed reads
//! during the handshake, the byte pump that runs after it, and holding a session's bytes
//! while a cancel is delivered (`hold`), and the bound on handshakes in progress (`handshakes`).

pub mod der;
pub mod framed;
pub mod handshakes;
pub mod hold;
pub mod https;
pub mod listener;
pub mod pump;
pub mod reload;
pub mod server_cert;
pub mod stream;
pub mod tls;
pub mod upstream;
