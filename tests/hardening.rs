//! Bad input and hostile clients: silent connections that would hold every file descriptor
//! (on a database listener and on the admin port) while legitimate clients keep being served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step should stop the test

mod support;

use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits (bounded) until the peer closes `socket`; true when it did.
async fn closed_by_peer(socket: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 64];
    matches!(tokio::time::timeout(within, socket.read(&mut byte)).await, Ok(Ok(0) | Err(_)))
}

/// With `max_handshakes = 4`, silent connections beyond the bound are closed at once, the
/// oldest silent one gives way to a newcomer after a second, and a real client logs in.
#[test]
fn silent_connections_never_keep_a_real_client_out() {
    let lg = Lg::start(Setup { database_extra: "max_handshakes = 4".into(), ..Setup::default() });
    let mut silent = lg.block_on(async {
        let mut v = Vec::new();
        for _ in 0..8 {
            v.push(TcpStream::connect(lg.addr).await.unwrap());
        }
        v
    });
    // The four beyond the bound were young handshakes' rivals: turned away unanswered.
    let refused = lg.block_on(async {
        let mut n = 0;
        for s in silent.iter_mut().skip(4) {
            n += usize::from(closed_by_peer(s, Duration::from_secs(5)).await);
        }
        n
    });
    assert_eq!(refused, 4, "connections beyond max_handshakes are closed");
    std::thread::sleep(Duration::from_millis(1200));
    let out = lg.psql(&lg.url("ci", "sslmode=disable"), "SELECT 1");
    assert!(out.status.success(), "a real client got in: {}", stderr(&out));
    let evicted = lg.block_on(closed_by_peer(&mut silent[0], Duration::from_secs(5)));
    assert!(evicted, "the oldest silent connection gave way");
}

/// The admin port cuts off a client that never finishes its request headers, and keeps
/// answering others meanwhile.
#[test]
fn the_admin_port_cuts_off_a_slowloris() {
    let lg = Lg::start(Setup { admin_api: true, ..Setup::default() });
    let admin = lg.admin_addr.unwrap();
    lg.block_on(async {
        let mut slow = TcpStream::connect(admin).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: leasegate\r\nX-Slow: ").await.unwrap();
        let started = Instant::now();
        let mut fine = TcpStream::connect(admin).await.unwrap();
        fine.write_all(b"GET /healthz HTTP/1.1\r\nHost: leasegate\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        fine.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer}");
        assert!(closed_by_peer(&mut slow, Duration::from_secs(15)).await, "the slow client was never cut off");
        assert!(started.elapsed() < Duration::from_secs(12), "cut off after {:?}", started.elapsed());
    });
}
