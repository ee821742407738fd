//! The Postgres messages the handshake needs, as plain structs, with their encodings.
//!
//! Each type says who sends it: (F) frontend/client, (B) backend/server. Nothing here does
//! I/O; `codec.rs` frames bytes into these, and the tests pin every encoding byte for byte.

use bytes::{BufMut, Bytes, BytesMut};

/// The protocol version leasegate speaks on both legs: 3.0.
pub const PROTOCOL_3_0: u32 = 3 << 16;
pub const SSL_REQUEST_CODE: u32 = 80877103;
pub const GSSENC_REQUEST_CODE: u32 = 80877104;
pub const CANCEL_REQUEST_CODE: u32 = 80877102;

/// StartupMessage (F): protocol version and `name=value` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    /// In the order the client sent them, `_pq_.*` protocol options excluded.
    pub params: Vec<(String, String)>,
    /// `_pq_.*` protocol options the client asked for; leasegate supports none.
    pub protocol_options: Vec<String>,
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// CancelRequest (F): the key a client got in BackendKeyData. 4 bytes of secret in protocol 3.0;
/// up to 256 in 3.2, so the secret is kept as bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct CancelKey {
    pub pid: u32,
    pub secret: Vec<u8>,
}

// The secret key is what authorises a cancel: never print it.
impl std::fmt::Debug for CancelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CancelKey(pid={}, [redacted])", self.pid)
    }
}

/// The untyped packets a client may open a connection with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupFrame {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(StartupMessage),
}

/// A typed message: one tag byte and its body (the length prefix removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub tag: u8,
    pub body: Bytes,
}

/// SASLInitialResponse (F), the body of a `p` message sent first in a SASL exchange.
#[derive(Debug, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a str,
    pub data: &'a [u8],
}

impl<'a> SaslInitialResponse<'a> {
    pub fn parse(body: &'a [u8]) -> Option<Self> {
        let nul = body.iter().position(|&b| b == 0)?;
        let mechanism = std::str::from_utf8(&body[..nul]).ok()?;
        let rest = &body[nul + 1..];
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        let data = &rest[4..];
        if len == -1 && data.is_empty() {
            return Some(SaslInitialResponse { mechanism, data });
        }
        (usize::try_from(len).ok()? == data.len()).then_some(SaslInitialResponse { mechanism, data })
    }
}

/// Authentication request (B), the `R` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    Ok,
    CleartextPassword,
    Md5Password([u8; 4]),
    Sasl(Vec<String>),
    SaslContinue(Bytes),
    SaslFinal(Bytes),
    /// GSS, SSPI and the rest: leasegate cannot answer them upstream.
    Other(u32),
}

impl Authentication {
    pub fn encode(&self, out: &mut BytesMut) {
        let start = begin(out, b'R');
        match self {
            Authentication::Ok => out.put_u32(0),
            Authentication::CleartextPassword => out.put_u32(3),
            Authentication::Md5Password(salt) => {
                out.put_u32(5);
                out.put_slice(salt);
            }
            Authentication::Sasl(mechs) => {
                out.put_u32(10);
                for m in mechs {
                    put_cstr(out, m);
                }
                out.put_u8(0);
            }
            Authentication::SaslContinue(data) => {
                out.put_u32(11);
                out.put_slice(data);
            }
            Authentication::SaslFinal(data) => {
                out.put_u32(12);
                out.put_slice(data);
            }
            Authentication::Other(code) => out.put_u32(*code),
        }
        finish(out, start);
    }

    pub fn parse(body: &[u8]) -> Option<Self> {
        let code = u32::from_be_bytes(body.get(..4)?.try_into().ok()?);
        let rest = &body[4..];
        Some(match code {
            0 => Authentication::Ok,
            3 => Authentication::CleartextPassword,
            5 => Authentication::Md5Password(rest.get(..4)?.try_into().ok()?),
            10 => Authentication::Sasl(
                rest.split(|&b| b == 0).filter(|m| !m.is_empty()).map(|m| String::from_utf8_lossy(m).into_owned()).collect(),
            ),
            11 => Authentication::SaslContinue(Bytes::copy_from_slice(rest)),
            12 => Authentication::SaslFinal(Bytes::copy_from_slice(rest)),
            other => Authentication::Other(other),
        })
    }
}

/// ErrorResponse (B). Built by leasegate for its own errors; server errors are relayed as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorResponse {
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
}

impl ErrorResponse {
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        ErrorResponse { severity: "FATAL", code, message: message.into(), detail: None }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        let start = begin(out, b'E');
        for (field, value) in [(b'S', self.severity), (b'V', self.severity), (b'C', self.code)] {
            out.put_u8(field);
            put_cstr(out, value);
        }
        out.put_u8(b'M');
        put_cstr(out, &self.message);
        if let Some(detail) = &self.detail {
            out.put_u8(b'D');
            put_cstr(out, detail);
        }
        out.put_u8(0);
        finish(out, start);
    }
}

/// The fields of an ErrorResponse/NoticeResponse (B) from the server, for logs and tests.
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        fields.push((field, String::from_utf8_lossy(&tail[..end]).into_owned()));
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    fields
}

/// NegotiateProtocolVersion (B): the newest minor version we speak and the options we ignored.
pub fn encode_negotiate_protocol_version(minor: u32, unsupported: &[String], out: &mut BytesMut) {
    let start = begin(out, b'v');
    out.put_u32(minor);
    out.put_u32(unsupported.len() as u32);
    for o in unsupported {
        put_cstr(out, o);
    }
    finish(out, start);
}

/// BackendKeyData (B) body: the server's process id and cancel secret.
pub fn parse_backend_key_data(body: &[u8]) -> Option<CancelKey> {
    let pid = u32::from_be_bytes(body.get(..4)?.try_into().ok()?);
    let secret = body.get(4..)?.to_vec();
    (!secret.is_empty() && secret.len() <= 256).then_some(CancelKey { pid, secret })
}

/// CancelRequest (F) packet bytes.
pub fn encode_cancel_request(key: &CancelKey, out: &mut BytesMut) {
    out.put_u32(12 + key.secret.len() as u32);
    out.put_u32(CANCEL_REQUEST_CODE);
    out.put_u32(key.pid);
    out.put_slice(&key.secret);
}

/// StartupMessage (F) for protocol 3.0 with the given parameters.
pub fn encode_startup(params: &[(String, String)], out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    out.put_u32(PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(out, k);
        put_cstr(out, v);
    }
    out.put_u8(0);
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

fn put_cstr(out: &mut BytesMut, s: &str) {
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

/// Writes the tag and a length placeholder; returns where the length goes.
fn begin(out: &mut BytesMut, tag: u8) -> usize {
    out.put_u8(tag);
    let at = out.len();
    out.put_u32(0);
    at
}

fn finish(out: &mut BytesMut, at: usize) {
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests;
