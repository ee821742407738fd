//! A small blocking HTTP/1.1 client for the CLI's admin commands (`leases`, `creds`, `exec`).
//! The admin API is local and tiny, so a hand-written client avoids a second HTTP stack.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the admin API at {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("admin API I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed HTTP response from the admin API")]
    Malformed,
    /// The API answered with an error status; `message` is its `error` field.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
}

pub struct Client {
    pub addr: String,
    pub token: String,
}

impl Client {
    /// Sends a request and returns the body of a 2xx answer.
    pub fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<String, ClientError> {
        let mut stream = TcpStream::connect(&self.addr).map_err(|source| ClientError::Connect { addr: self.addr.clone(), source })?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let (status, body) = parse_response(&raw)?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(body);
        Err(ClientError::Api { status, message })
    }
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), ClientError> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or(ClientError::Malformed)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| ClientError::Malformed)?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or(ClientError::Malformed)?;
    let chunked =
        head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked"));
    let mut body = &raw[split + 4..];
    let bytes = if chunked {
        let mut out = Vec::new();
        loop {
            let line_end = body.windows(2).position(|w| w == b"\r\n").ok_or(ClientError::Malformed)?;
            let size_text = std::str::from_utf8(&body[..line_end]).map_err(|_| ClientError::Malformed)?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| ClientError::Malformed)?;
            body = &body[line_end + 2..];
            if size == 0 {
                break;
            }
            out.extend_from_slice(body.get(..size).ok_or(ClientError::Malformed)?);
            body = body.get(size + 2..).ok_or(ClientError::Malformed)?;
        }
        out
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n[]";
        assert_eq!(parse_response(plain).unwrap(), (200, "[]".to_string()));
        let chunked = b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (404, "abcde".to_string()));
        assert!(parse_response(b"garbage").is_err());
    }
}
