//! Sockets: the accept loop, TLS on both legs, the stream type both legs share, framed reads
//! during the handshake, and the byte pump that runs after it.

pub mod framed;
pub mod listener;
pub mod pump;
pub mod stream;
pub mod tls;
pub mod upstream;
