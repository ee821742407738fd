//! Reading and writing whole MySQL packets during the handshake (framing itself is the pure
//! `packet.rs`). After login the pump copies bytes and none of this runs.

use super::packet::{MAX_HANDSHAKE_PAYLOAD, MAX_PAYLOAD, frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed in the middle of the handshake")]
    Closed,
    #[error("handshake packet of {0} bytes is over the {MAX_HANDSHAKE_PAYLOAD}-byte limit")]
    TooLarge(usize),
}

/// Reads one logical packet (joining split ones); returns the sequence id of its last part.
/// Reads exactly the packet's bytes, so nothing after it is consumed.
pub async fn read<R: AsyncRead + Unpin + ?Sized>(r: &mut R, limit: usize) -> Result<(u8, Vec<u8>), PacketError> {
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 4];
        r.read_exact(&mut header).await.map_err(closed)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        if payload.len() + len > limit {
            return Err(PacketError::TooLarge(payload.len() + len));
        }
        // Grown as bytes arrive: a header announcing a large packet costs nothing until the
        // bytes really come.
        let start = payload.len();
        (&mut *r).take(len as u64).read_to_end(&mut payload).await.map_err(closed)?;
        if payload.len() - start < len {
            return Err(PacketError::Closed);
        }
        if len < MAX_PAYLOAD {
            return Ok((header[3], payload));
        }
    }
}

fn closed(e: std::io::Error) -> PacketError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { PacketError::Closed } else { PacketError::Io(e) }
}

/// Writes an ERR (or any last word) before closing, bounded: the peer may be gone or stuck.
pub async fn write_last<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, seq: u8, payload: &[u8]) {
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), write(w, seq, payload)).await;
}

/// Writes `payload` as packets from sequence id `seq` and flushes; returns the next id.
pub async fn write<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, seq: u8, payload: &[u8]) -> std::io::Result<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    let next = frame(seq, payload, &mut out);
    w.write_all(&out).await?;
    w.flush().await?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_split_packets_and_bounds_memory() {
        let big = vec![9u8; MAX_PAYLOAD + 5];
        let mut wire = Vec::new();
        frame(0, &big, &mut wire);
        wire.extend_from_slice(b"\x01\x00\x00\x00\x0e");
        let mut r = &wire[..];
        let (seq, payload) = read(&mut r, 32 << 20).await.unwrap();
        assert_eq!((seq, payload.len()), (1, big.len()));
        // The next packet is untouched.
        assert_eq!(r, b"\x01\x00\x00\x00\x0e");

        let mut r = &wire[..];
        assert!(matches!(read(&mut r, 1000).await, Err(PacketError::TooLarge(_))));
        let mut r: &[u8] = b"\x05\x00\x00\x00ab";
        assert!(matches!(read(&mut r, 1000).await, Err(PacketError::Closed)));
    }
}
