use super::*;

#[test]
fn encodes_authentication_messages() {
    let mut b = BytesMut::new();
    Authentication::Ok.encode(&mut b);
    assert_eq!(&b[..], b"R\0\0\0\x08\0\0\0\0");
    let mut b = BytesMut::new();
    Authentication::Sasl(vec!["SCRAM-SHA-256".into()]).encode(&mut b);
    assert_eq!(&b[..], b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0");
    assert_eq!(Authentication::parse(&b[5..]), Some(Authentication::Sasl(vec!["SCRAM-SHA-256".into()])));
    let mut b = BytesMut::new();
    Authentication::SaslFinal(Bytes::from_static(b"v=x")).encode(&mut b);
    assert_eq!(&b[..], b"R\0\0\0\x0b\0\0\0\x0cv=x");
}

#[test]
fn encodes_an_error_response() {
    let mut b = BytesMut::new();
    ErrorResponse::fatal("28P01", "no").encode(&mut b);
    assert_eq!(&b[..], b"E\0\0\0\x1eSFATAL\0VFATAL\0C28P01\0Mno\0\0");
    let fields = error_fields(&b[5..]);
    assert_eq!(fields[2], (b'C', "28P01".to_string()));
    assert_eq!(fields[3], (b'M', "no".to_string()));
}

#[test]
fn encodes_negotiate_protocol_version() {
    let mut b = BytesMut::new();
    encode_negotiate_protocol_version(0, &["_pq_.a".into()], &mut b);
    assert_eq!(&b[..], b"v\0\0\0\x13\0\0\0\0\0\0\0\x01_pq_.a\0");
}

#[test]
fn parses_sasl_initial_response() {
    let body = b"SCRAM-SHA-256\0\0\0\0\x03abc";
    assert_eq!(SaslInitialResponse::parse(body), Some(SaslInitialResponse { mechanism: "SCRAM-SHA-256", data: b"abc" }));
    assert_eq!(SaslInitialResponse::parse(b"SCRAM-SHA-256\0\0\0\0\x09abc"), None);
    assert_eq!(SaslInitialResponse::parse(b"SCRAM"), None);
}

#[test]
fn parses_backend_key_data() {
    let key = parse_backend_key_data(&[0, 0, 1, 0, 9, 9, 9, 9]).unwrap();
    assert_eq!(key.pid, 256);
    assert!(!format!("{key:?}").contains('9'));
    assert_eq!(parse_backend_key_data(&[0, 0, 1]), None);
}

#[test]
fn encodes_startup() {
    let mut b = BytesMut::new();
    encode_startup(&[("user".into(), "u".into())], &mut b);
    assert_eq!(&b[..], b"\0\0\0\x10\0\x03\0\0user\0u\0\0");
}
