//! Protocol-level behaviour checked byte by byte with a minimal raw client: SQLSTATEs a real
//! server would send, negotiation, malformed input, timeouts, nothing read ahead lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use bytes::{BufMut, BytesMut};
use leasegate::net::framed::Framed;
use leasegate::pg::codec::decode_message;
use leasegate::pg::message::{Authentication, Message, encode_startup, error_fields};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Conn = Framed<TcpStream>;

async fn connect(lg: &Lg) -> TcpStream {
    TcpStream::connect(lg.addr).await.unwrap()
}

async fn read(io: &mut Conn) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(10), io.read_frame(|b| decode_message(b, 1 << 20))).await.expect("no hang").ok().flatten()
}

fn code(msg: &Message) -> String {
    assert_eq!(msg.tag, b'E', "expected an ErrorResponse");
    error_fields(&msg.body).into_iter().find(|(f, _)| *f == b'C').map(|(_, v)| v).unwrap()
}

fn text(msg: &Message) -> String {
    error_fields(&msg.body).into_iter().find(|(f, _)| *f == b'M').map(|(_, v)| v).unwrap_or_default()
}

fn startup(params: &[(&str, &str)]) -> BytesMut {
    let params: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut out = BytesMut::new();
    encode_startup(&params, &mut out);
    out
}

/// Startup and SCRAM; returns the connection after the server's last authentication message
/// (AuthenticationOk or an ErrorResponse), which is returned too. `after_final` is written in
/// the same write as the client's final SCRAM message.
async fn login(lg: &Lg, user: &str, password: &str, database: &str, after_final: &[u8]) -> (Conn, Message) {
    let mut io = Framed::new(connect(lg).await);
    io.write_all(&startup(&[("user", user), ("database", database)])).await.unwrap();
    let msg = read(&mut io).await.unwrap();
    assert_eq!(Authentication::parse(&msg.body[..]), Some(Authentication::Sasl(vec!["SCRAM-SHA-256".into()])));
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out).unwrap();
    io.write_all(&out).await.unwrap();
    let msg = read(&mut io).await.unwrap();
    let Some(Authentication::SaslContinue(data)) = Authentication::parse(&msg.body) else { panic!("expected SASLContinue") };
    scram.update(&data).unwrap();
    let mut out = BytesMut::new();
    postgres_protocol::message::frontend::sasl_response(scram.message(), &mut out).unwrap();
    out.extend_from_slice(after_final);
    io.write_all(&out).await.unwrap();
    let msg = read(&mut io).await.unwrap();
    if msg.tag == b'E' {
        return (io, msg);
    }
    let Some(Authentication::SaslFinal(data)) = Authentication::parse(&msg.body) else { panic!("expected SASLFinal") };
    scram.finish(&data).expect("leasegate proves it knows the verifier");
    let msg = read(&mut io).await.unwrap();
    (io, msg)
}

#[test]
fn wrong_password_and_unknown_client_get_28p01() {
    let lg = Lg::start(Setup::default());
    lg.block_on(async {
        for (user, pw) in [("ci", "wrong"), ("ghost", "wrong"), ("ci/forbidden", lg.client_password.as_str())] {
            let (_, msg) = login(&lg, user, pw, "postgres", b"").await;
            assert_eq!(code(&msg), "28P01", "{user}");
            assert_eq!(text(&msg), format!("password authentication failed for user \"{user}\""));
        }
    });
}

#[test]
fn the_session_sees_the_servers_own_pid_and_pipelined_bytes_arrive() {
    let lg = Lg::start(Setup::default());
    lg.block_on(async {
        let mut query = BytesMut::new();
        postgres_protocol::message::frontend::query("SELECT pg_backend_pid()::text", &mut query).unwrap();
        // The query rides in the same packet as the last SCRAM message: it must not be lost.
        let (mut io, ok) = login(&lg, "ci", &lg.client_password, "postgres", &query).await;
        assert_eq!(Authentication::parse(&ok.body), Some(Authentication::Ok));
        let mut key_pid = None;
        let mut row_pid = None;
        let mut ready = 0;
        while ready < 2 {
            let msg = read(&mut io).await.expect("server messages");
            match msg.tag {
                b'K' => key_pid = Some(u32::from_be_bytes(msg.body[..4].try_into().unwrap())),
                b'D' => row_pid = Some(String::from_utf8_lossy(&msg.body[6..]).parse::<u32>().unwrap()),
                b'Z' => ready += 1,
                b'E' => panic!("error: {}", text(&msg)),
                _ => {}
            }
        }
        assert!(key_pid.is_some());
        assert_eq!(key_pid, row_pid, "BackendKeyData is the server's own");
    });
}

#[test]
fn an_unknown_database_gets_the_servers_own_error() {
    let lg = Lg::start(Setup::default());
    lg.block_on(async {
        let (_, msg) = login(&lg, "ci", &lg.client_password, "no_such_db", b"").await;
        // SASLFinal was sent, then the server's 3D000 is relayed intact.
        assert_eq!(code(&msg), "3D000", "{}", text(&msg));
    });
    assert!(wait_until(Duration::from_secs(10), || lg.minted_roles().is_empty()).is_some(), "the lease is ended");
}

#[test]
fn an_unreachable_server_gets_08006_with_the_address() {
    let port = leasegate::devdb::free_port().unwrap();
    let lg = Lg::start(Setup { upstream: Some(format!("127.0.0.1:{port}")), ..Setup::default() });
    lg.block_on(async {
        let (_, msg) = login(&lg, "ci", &lg.client_password, "postgres", b"").await;
        assert_eq!(code(&msg), "08006");
        assert!(text(&msg).contains(&format!("127.0.0.1:{port}")), "{}", text(&msg));
    });
}

#[test]
fn an_admin_without_createrole_gets_a_clear_fatal_and_a_logged_cause() {
    let lg = Lg::start(Setup {
        prepare: vec!["CREATE ROLE weak LOGIN PASSWORD 'weak-admin-pw'".into()],
        admin: Some(("weak".into(), "weak-admin-pw".into())),
        ..Setup::default()
    });
    lg.block_on(async {
        let (_, msg) = login(&lg, "ci", &lg.client_password, "postgres", b"").await;
        assert_eq!(code(&msg), "58000");
        assert!(text(&msg).contains("could not create a database user"), "{}", text(&msg));
    });
    assert!(captured_logs().contains("permission denied to create role"), "the cause is logged");
}

#[test]
fn malformed_startup_packets_get_a_protocol_error_and_close() {
    let lg = Lg::start(Setup::default());
    lg.block_on(async {
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("huge length", vec![0x7f, 0xff, 0xff, 0xff], "08P01"),
            ("tiny length", vec![0, 0, 0, 4], "08P01"),
            (
                "protocol 2",
                {
                    let mut b = startup(&[("user", "ci")]);
                    b[4..8].copy_from_slice(&(2u32 << 16).to_be_bytes());
                    b.to_vec()
                },
                "0A000",
            ),
            ("no terminator", vec![0, 0, 0, 12, 0, 3, 0, 0, b'u', b's', b'e', b'r'], "08P01"),
            ("no user", startup(&[("database", "x")]).to_vec(), "08P01"),
        ];
        for (what, bytes, want) in cases {
            let mut s = connect(&lg).await;
            s.write_all(&bytes).await.unwrap();
            let mut io = Framed::new(s);
            let msg = read(&mut io).await.unwrap_or_else(|| panic!("{what}: no error"));
            assert_eq!(code(&msg), want, "{what}");
            assert!(read(&mut io).await.is_none(), "{what}: connection closed after the error");
        }
    });
    // leasegate still serves after all that.
    assert!(lg.psql(&lg.url("ci", ""), "SELECT 1").status.success());
}

#[test]
fn newer_protocol_minors_and_pq_options_are_negotiated_down() {
    let lg = Lg::start(Setup::default());
    lg.block_on(async {
        let mut pkt = startup(&[("user", "ci"), ("_pq_.frobnicate", "on")]);
        pkt[4..8].copy_from_slice(&((3u32 << 16) | 2).to_be_bytes());
        let mut io = Framed::new(connect(&lg).await);
        io.write_all(&pkt).await.unwrap();
        let msg = read(&mut io).await.unwrap();
        assert_eq!(msg.tag, b'v', "NegotiateProtocolVersion");
        assert_eq!(&msg.body[..], b"\0\0\0\0\0\0\0\x01_pq_.frobnicate\0");
        let msg = read(&mut io).await.unwrap();
        assert_eq!(msg.tag, b'R', "then authentication as usual");
    });
}

#[test]
fn gssenc_is_refused_and_the_client_may_go_on() {
    let lg = Lg::start(Setup::default());
    lg.block_on(async {
        let mut s = connect(&lg).await;
        s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30]).await.unwrap();
        let mut answer = [0u8; 1];
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"N");
        let mut io = Framed::new(s);
        io.write_all(&startup(&[("user", "ci")])).await.unwrap();
        assert_eq!(read(&mut io).await.unwrap().tag, b'R');
    });
}

#[test]
fn data_sent_after_sslrequest_before_the_answer_is_refused() {
    let lg = Lg::start(Setup::default());
    lg.block_on(async {
        let mut pkt = BytesMut::from(&[0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f][..]);
        pkt.put_slice(&startup(&[("user", "ci")]));
        let mut io = Framed::new(connect(&lg).await);
        io.write_all(&pkt).await.unwrap();
        let msg = read(&mut io).await.unwrap();
        assert_eq!(code(&msg), "08P01");
    });
}

#[test]
fn a_silent_client_is_dropped_at_the_handshake_timeout() {
    let lg = Lg::start(Setup { handshake_timeout: "1s", ..Setup::default() });
    lg.block_on(async {
        let start = Instant::now();
        let mut s = connect(&lg).await;
        s.write_all(&[0, 0]).await.unwrap(); // half a length prefix, then nothing
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed, not hung").unwrap_or(0);
        assert_eq!(n, 0);
        assert!(start.elapsed() >= Duration::from_millis(900) && start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    });
}

#[test]
fn a_cancel_request_sent_inside_tls_cancels_the_query() {
    use leasegate::config::UpstreamTlsMode;
    let lg = Lg::start(Setup::default());
    lg.block_on(async {
        let (mut io, ok) = login(&lg, "ci", &lg.client_password, "postgres", b"").await;
        assert_eq!(Authentication::parse(&ok.body), Some(Authentication::Ok));
        let mut key = None;
        loop {
            let msg = read(&mut io).await.unwrap();
            if msg.tag == b'K' {
                key = leasegate::pg::message::parse_backend_key_data(&msg.body);
            }
            if msg.tag == b'Z' {
                break;
            }
        }
        let key = key.expect("BackendKeyData");
        let mut q = BytesMut::new();
        postgres_protocol::message::frontend::query("SELECT pg_sleep(20)", &mut q).unwrap();
        io.write_all(&q).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;

        // Second connection: SSLRequest, TLS, then the CancelRequest inside TLS.
        let mut tcp = connect(&lg).await;
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await.unwrap();
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"S");
        let connector = leasegate::net::tls::client_tls(UpstreamTlsMode::Require, None).unwrap().unwrap();
        let mut tls = connector.connect(leasegate::net::tls::server_name("localhost").unwrap(), tcp).await.unwrap();
        let mut pkt = BytesMut::new();
        leasegate::pg::message::encode_cancel_request(&key, &mut pkt);
        tls.write_all(&pkt).await.unwrap();
        tls.flush().await.unwrap();
        let sent = Instant::now();

        let mut msg = read(&mut io).await.unwrap();
        while msg.tag == b'T' {
            msg = read(&mut io).await.unwrap(); // RowDescription comes before the error
        }
        assert_eq!(code(&msg), "57014", "{}", text(&msg));
        assert!(sent.elapsed() < Duration::from_secs(2));
    });
}
