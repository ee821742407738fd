use super::*;
use bytes::BufMut;

fn startup_bytes(version: u32, pairs: &[(&str, &str)]) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_u32(version);
    for (k, v) in pairs {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = BytesMut::new();
    out.put_u32(body.len() as u32 + 4);
    out.put_slice(&body);
    out
}

#[test]
fn decodes_a_startup_message_and_keeps_what_follows() {
    let mut buf = startup_bytes(PROTOCOL_3_0, &[("user", "billing/app_ro"), ("database", "shop"), ("_pq_.x", "1")]);
    buf.put_slice(b"Q\0\0\0\x05;");
    let Some(StartupFrame::Startup(m)) = decode_startup(&mut buf).unwrap() else { panic!() };
    assert_eq!(m.param("user"), Some("billing/app_ro"));
    assert_eq!(m.param("database"), Some("shop"));
    assert_eq!(m.protocol_options, vec!["_pq_.x".to_string()]);
    assert_eq!((m.major, m.minor), (3, 0));
    assert_eq!(&buf[..], b"Q\0\0\0\x05;", "the pipelined bytes stay in the buffer");
}

/// Postgres takes the last of a repeated key, leasegate would read the first: refused.
#[test]
fn a_repeated_startup_parameter_is_refused() {
    let mut b = startup_bytes(3 << 16, &[("user", "app"), ("database", "a"), ("database", "b")]);
    assert_eq!(decode_startup(&mut b), Err(CodecError::Malformed("a startup parameter is repeated")));
    let mut b = startup_bytes(3 << 16, &[("user", "app"), ("database", "a"), ("options", "-c x=1")]);
    assert!(matches!(decode_startup(&mut b), Ok(Some(StartupFrame::Startup(_)))));
}

#[test]
fn incomplete_is_not_an_error() {
    let full = startup_bytes(PROTOCOL_3_0, &[("user", "a")]);
    for cut in 0..full.len() {
        let mut part = BytesMut::from(&full[..cut]);
        assert_eq!(decode_startup(&mut part), Ok(None), "cut at {cut}");
    }
}

#[test]
fn decodes_ssl_gss_and_cancel() {
    let mut b = BytesMut::from(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f][..]);
    assert_eq!(decode_startup(&mut b), Ok(Some(StartupFrame::SslRequest)));
    let mut b = BytesMut::from(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30][..]);
    assert_eq!(decode_startup(&mut b), Ok(Some(StartupFrame::GssEncRequest)));
    let key = CancelKey { pid: 42, secret: vec![1, 2, 3, 4] };
    let mut b = BytesMut::new();
    encode_cancel_request(&key, &mut b);
    assert_eq!(&b[..], &[0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 42, 1, 2, 3, 4]);
    assert_eq!(decode_startup(&mut b), Ok(Some(StartupFrame::Cancel(key))));
}

#[test]
fn refuses_bad_lengths_and_versions_without_allocating() {
    let mut b = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
    assert_eq!(decode_startup(&mut b), Err(CodecError::StartupLength));
    let mut b = BytesMut::from(&[0, 0, 0, 4][..]);
    assert_eq!(decode_startup(&mut b), Err(CodecError::StartupLength));
    let mut b = startup_bytes(2 << 16, &[("user", "a")]);
    assert_eq!(decode_startup(&mut b), Err(CodecError::UnsupportedProtocol(2, 0)));
    let mut b = BytesMut::from(&[0, 0, 0, 10, 0, 3, 0, 0, b'u', b'x'][..]);
    assert!(matches!(decode_startup(&mut b), Err(CodecError::Malformed(_))));
    let mut b = BytesMut::from(&b"p\xff\xff\xff\xff"[..]);
    assert_eq!(decode_message(&mut b, MAX_HANDSHAKE_MESSAGE_LEN), Err(CodecError::MessageLength(u32::MAX)));
    let mut b = BytesMut::from(&b"p\0\0\0\x02"[..]);
    assert_eq!(decode_message(&mut b, MAX_HANDSHAKE_MESSAGE_LEN), Err(CodecError::MessageLength(2)));
}

#[test]
fn decodes_typed_messages() {
    let mut b = BytesMut::from(&b"Z\0\0\0\x05IX"[..]);
    let m = decode_message(&mut b, 16).unwrap().unwrap();
    assert_eq!((m.tag, &m.body[..]), (b'Z', &b"I"[..]));
    assert_eq!(&b[..], b"X");
    assert_eq!(decode_message(&mut b, 16), Ok(None));
}

/// Decoders see arbitrary bytes from the network: none may panic or over-allocate, whatever
/// they get. A deterministic stand-in for a fuzzer (cargo-fuzz needs a nightly toolchain this
/// machine does not have), run over 200,000 random and mutated inputs.
#[test]
fn decoders_survive_random_input() {
    use crate::credential::ScramVerifier;
    use crate::pg::scram::{Binding, ServerExchange, verifier};
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let stored = verifier(b"pw", b"salt", 1);
    let valid = startup_bytes(PROTOCOL_3_0, &[("user", "a"), ("database", "b")]);
    for i in 0..200_000 {
        let len = (next() % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 {
            // Mutate a valid packet: realistic prefixes reach deeper code.
            bytes = valid.to_vec();
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
            bytes.truncate(1 + (next() as usize) % bytes.len());
        }
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_startup(&mut buf);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = decode_message(&mut buf, MAX_HANDSHAKE_MESSAGE_LEN);
        let _ = SaslInitialResponse::parse(&bytes);
        let _ = Authentication::parse(&bytes);
        let _ = error_fields(&bytes);
        let _ = parse_backend_key_data(&bytes);
        let _ = crate::net::tls::tls_server_end_point(&bytes);
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = ScramVerifier::parse(text);
        }
        let mut ex = ServerExchange::new(&stored, Binding::TlsServerEndPoint(vec![1; 32]));
        let first: Vec<u8> = [&b"n,,n=,r="[..], &bytes].concat();
        if ex.client_first("SCRAM-SHA-256", &first).is_ok() {
            let _ = ex.client_final(&bytes);
        }
    }
}
