//! Framed reads for the handshake: a stream plus its read buffer.
//!
//! Whatever the peer sent beyond the last decoded frame stays in the buffer and is handed to
//! the pump with the stream ([`Framed::into_parts`]), so nothing read ahead is lost.

use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub struct Framed<S> {
    io: S,
    buf: BytesMut,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError<E> {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error(transparent)]
    Decode(E),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    pub fn new(io: S) -> Self {
        Framed { io, buf: BytesMut::with_capacity(1024) }
    }

    pub fn with_buffer(io: S, buf: BytesMut) -> Self {
        Framed { io, buf }
    }

    /// Reads until `decode` yields a frame. `Ok(None)`: the peer closed cleanly between frames.
    pub async fn read_frame<T, E>(
        &mut self,
        mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
    ) -> Result<Option<T>, FrameError<E>> {
        loop {
            if let Some(frame) = decode(&mut self.buf).map_err(FrameError::Decode)? {
                return Ok(Some(frame));
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(4096);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(FrameError::Truncated) };
            }
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Bytes received but not yet decoded.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    pub fn get_ref(&self) -> &S {
        &self.io
    }

    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }
}
