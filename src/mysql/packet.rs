//! MySQL packet framing and the few packets leasegate builds itself (ERR, OK): pure, no I/O
//! (reading and writing whole packets during the handshake is `packet_io.rs`). Connection-phase
//! packet *bodies* (greeting, HandshakeResponse41, SslRequest, AuthSwitchRequest) are
//! mysql_common's; see `frontend.rs` and `backend.rs`.
//!
//! A packet is a 3-byte little-endian payload length, a 1-byte sequence id, the payload. A
//! payload of 2^24-1 bytes or more is split into maximal packets followed by a shorter one.

/// The largest payload one packet carries; a packet this long continues in the next one.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// Bound on a server packet leasegate reads during the handshake.
pub const MAX_HANDSHAKE_PAYLOAD: usize = 1 << 20;
/// Bound on a client's HandshakeResponse41: fixed fields, a user name, an auth response, a
/// database name and connect attributes (at most 64 KiB).
pub const MAX_HANDSHAKE_RESPONSE: usize = 80 << 10;
/// Bound on a client's later authentication packets (an auth-switch answer, a cleartext
/// password or token in full authentication, which has its own tighter bound).
pub const MAX_AUTH_PACKET: usize = 16 << 10 | 64;

/// Command bytes leasegate looks at (first payload byte of a client packet with sequence id 0):
/// the gate's and the idle tracker's.
pub mod command {
    pub const QUIT: u8 = 0x01;
    pub const QUERY: u8 = 0x03;
    pub const CHANGE_USER: u8 = 0x11;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_INFO: u8 = 0x0A;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_FETCH: u8 = 0x1C;
    pub const STMT_BULK_EXECUTE: u8 = 0xFA;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const TABLE_DUMP: u8 = 0x13;
    pub const BINLOG_DUMP_GTID: u8 = 0x1E;
    pub const MULTI: u8 = 0xFE;
    /// Commands answered with a single OK, ERR or EOF.
    pub const SIMPLE: [u8; 13] = [0x02, 0x05, 0x06, 0x07, 0x08, 0x0C, 0x0D, 0x0E, 0x11, 0x15, 0x1A, 0x1B, 0x1F];
}

/// First payload bytes of server packets.
pub const OK: u8 = 0x00;
pub const AUTH_MORE_DATA: u8 = 0x01;
pub const EOF_OR_SWITCH: u8 = 0xFE;
pub const ERR: u8 = 0xFF;

/// caching_sha2_password's AuthMoreData statuses.
pub const FAST_AUTH_SUCCESS: u8 = 0x03;
pub const PERFORM_FULL_AUTHENTICATION: u8 = 0x04;

/// Appends `payload` framed as packets starting at sequence id `seq`; returns the next id.
pub fn frame(seq: u8, payload: &[u8], out: &mut Vec<u8>) -> u8 {
    let mut seq = seq;
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_PAYLOAD);
        out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
        out.push(seq);
        out.extend_from_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        // A maximal packet says "more follows": end with a shorter (possibly empty) one.
        if n < MAX_PAYLOAD {
            return seq;
        }
    }
}

/// ERR_Packet (S): `0xFF`, error code, `#` and the SQLSTATE, the message. Always the
/// PROTOCOL_41 form: leasegate only talks to clients that speak it.
pub fn err_payload(code: u16, sqlstate: &str, message: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(9 + message.len());
    p.push(ERR);
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    let state = sqlstate.as_bytes();
    p.extend_from_slice(&state[..state.len().min(5)]);
    p.extend(std::iter::repeat_n(b'0', 5usize.saturating_sub(state.len())));
    p.extend_from_slice(message.as_bytes());
    p
}

/// The same ERR without the `#` and SQLSTATE: the form a server uses before the client said it
/// speaks protocol 4.1 (an ERR instead of the greeting), which clients read that way.
pub fn pre_41(payload: &[u8]) -> Vec<u8> {
    match payload {
        [ERR, a, b, b'#', rest @ ..] if rest.len() >= 5 => [&[ERR, *a, *b][..], &rest[5..]].concat(),
        other => other.to_vec(),
    }
}

/// OK_Packet (S) with no affected rows, no insert id, the given status flags and no warnings.
pub fn ok_payload(status: u16) -> Vec<u8> {
    let mut p = vec![OK, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    p
}

/// The code and message of an ERR payload (for logs and typed errors).
pub fn parse_err(payload: &[u8]) -> Option<(u16, String)> {
    if payload.len() < 3 || payload[0] != ERR {
        return None;
    }
    let code = u16::from_le_bytes([payload[1], payload[2]]);
    let rest = &payload[3..];
    let message = if rest.first() == Some(&b'#') && rest.len() >= 6 { &rest[6..] } else { rest };
    Some((code, String::from_utf8_lossy(message).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_small_and_split_payloads() {
        let mut out = Vec::new();
        assert_eq!(frame(3, b"\x03SELECT 1", &mut out), 4);
        assert_eq!(out, b"\x09\x00\x00\x03\x03SELECT 1");

        let big = vec![7u8; MAX_PAYLOAD + 10];
        let mut out = Vec::new();
        assert_eq!(frame(0, &big, &mut out), 2);
        assert_eq!(&out[..4], &[0xFF, 0xFF, 0xFF, 0]);
        assert_eq!(&out[4 + MAX_PAYLOAD..8 + MAX_PAYLOAD], &[10, 0, 0, 1]);

        // Exactly maximal: an empty packet says it ends.
        let mut out = Vec::new();
        assert_eq!(frame(0, &vec![1u8; MAX_PAYLOAD], &mut out), 2);
        assert_eq!(&out[out.len() - 4..], &[0, 0, 0, 1]);
    }

    #[test]
    fn builds_err_and_ok_like_a_server() {
        let p = err_payload(super::super::errcode::ACCESS_DENIED, "28000", "Access denied for user 'x'@'127.0.0.1' (using password: YES)");
        assert_eq!(&p[..9], b"\xff\x15\x04#28000");
        assert_eq!(parse_err(&p), Some((1045, "Access denied for user 'x'@'127.0.0.1' (using password: YES)".into())));
        assert_eq!(ok_payload(0x0002), vec![0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(pre_41(&err_payload(1040, "08004", "Too many connections")), b"\xff\x10\x04Too many connections");
        assert_eq!(parse_err(b"\x00"), None);
    }
}
