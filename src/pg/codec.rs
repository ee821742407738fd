//! Framing: bytes → messages, with every length checked before anything is allocated.
//!
//! Decoders take the read buffer and return `Ok(None)` while a frame is incomplete (mini-redis
//! style); an impossible length or a malformed packet is an error, never a panic.

use super::message::*;
use bytes::{Buf, BytesMut};

/// Postgres's own limit on a startup packet (MAX_STARTUP_PACKET_LENGTH).
pub const MAX_STARTUP_LEN: usize = 10_000;
/// Bound on any message read during the handshake (SASL responses are a few hundred bytes).
pub const MAX_HANDSHAKE_MESSAGE_LEN: usize = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// A length prefix below the minimum or above the limit (SQLSTATE 08P01).
    #[error("invalid length of startup packet")]
    StartupLength,
    /// A typed message longer than the handshake allows, or shorter than its header.
    #[error("invalid message length {0}")]
    MessageLength(u32),
    /// A protocol major version other than 3 (SQLSTATE 0A000).
    #[error("unsupported frontend protocol {0}.{1}: server supports 3.0 to 3.0")]
    UnsupportedProtocol(u16, u16),
    /// Bytes that do not form the packet their header announces (SQLSTATE 08P01).
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
}

/// Decodes the first packet of a connection (or the one after an SSL/GSS refusal).
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupFrame>, CodecError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(CodecError::StartupLength);
    }
    if buf.len() < len {
        return Ok(None);
    }
    let packet = buf.split_to(len);
    let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    match code {
        SSL_REQUEST_CODE if body.is_empty() => Ok(Some(StartupFrame::SslRequest)),
        GSSENC_REQUEST_CODE if body.is_empty() => Ok(Some(StartupFrame::GssEncRequest)),
        CANCEL_REQUEST_CODE => {
            if body.len() < 8 || body.len() > 4 + 256 {
                return Err(CodecError::Malformed("cancel request"));
            }
            let pid = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
            Ok(Some(StartupFrame::Cancel(CancelKey { pid, secret: body[4..].to_vec() })))
        }
        SSL_REQUEST_CODE | GSSENC_REQUEST_CODE => Err(CodecError::Malformed("encryption request with a body")),
        version => decode_startup_message(version, body).map(|m| Some(StartupFrame::Startup(m))),
    }
}

fn decode_startup_message(version: u32, body: &[u8]) -> Result<StartupMessage, CodecError> {
    let (major, minor) = ((version >> 16) as u16, (version & 0xffff) as u16);
    if major != 3 {
        return Err(CodecError::UnsupportedProtocol(major, minor));
    }
    if body.last() != Some(&0) {
        return Err(CodecError::Malformed("expected terminator as last byte"));
    }
    let mut params = Vec::new();
    let mut protocol_options = Vec::new();
    let mut fields = body.split(|&b| b == 0);
    loop {
        let key = fields.next().ok_or(CodecError::Malformed("missing terminator"))?;
        if key.is_empty() {
            break;
        }
        let value = fields.next().ok_or(CodecError::Malformed("parameter without a value"))?;
        let key = std::str::from_utf8(key).map_err(|_| CodecError::Malformed("parameter name is not UTF-8"))?;
        if let Some(option) = key.strip_prefix("_pq_.") {
            protocol_options.push(format!("_pq_.{option}"));
            continue;
        }
        // libpq never repeats a key, and Postgres would take the last one while leasegate
        // reads the first (`database` decides where a user's objects are cleaned up).
        if params.iter().any(|(k, _)| k == key) {
            return Err(CodecError::Malformed("a startup parameter is repeated"));
        }
        let value = String::from_utf8_lossy(value).into_owned();
        params.push((key.to_string(), value));
    }
    // After the final NUL there must be nothing (split yields one empty tail for it).
    if fields.any(|rest| !rest.is_empty()) {
        return Err(CodecError::Malformed("bytes after the terminator"));
    }
    Ok(StartupMessage { major, minor, params, protocol_options })
}

/// Decodes one typed message whose body is at most `max` bytes.
pub fn decode_message(buf: &mut BytesMut, max: usize) -> Result<Option<Message>, CodecError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as usize - 4 > max {
        return Err(CodecError::MessageLength(len));
    }
    let total = 1 + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    let tag = buf[0];
    buf.advance(5);
    let body = buf.split_to(total - 5).freeze();
    Ok(Some(Message { tag, body }))
}

#[cfg(test)]
mod tests;
