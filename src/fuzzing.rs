//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz), one per decoder that reads bytes
//! a peer controls: Postgres startup packets and frontend messages, SCRAM messages, MySQL
//! handshake responses and command packets (the gate), both idle trackers, JWTs and JWKS
//! documents, certificate DER, and config files. Each takes arbitrary bytes and must return
//! without panicking, hanging or allocating without bound; what it returns is ignored.
//!
//! Hidden from the docs: not an API. The unit test below runs every entry over seeds and
//! pseudo-random inputs, so `cargo test` exercises them even where cargo-fuzz is not installed.

use bytes::BytesMut;
use std::sync::{Arc, LazyLock};

/// A fuzz target's entry: takes any bytes.
pub type Entry = fn(&[u8]);

/// Every target, by the name its `fuzz/fuzz_targets/<name>.rs` has.
pub const TARGETS: &[(&str, Entry)] = &[
    ("pg_startup", pg_startup),
    ("pg_messages", pg_messages),
    ("scram", scram),
    ("mysql_handshake_response", mysql_handshake_response),
    ("mysql_gate", mysql_gate),
    ("idle_trackers", idle_trackers),
    ("jwt", jwt),
    ("certificate_der", certificate_der),
    ("config", config),
];

/// Startup packets (SSLRequest, CancelRequest, StartupMessage), decoded until the buffer is
/// used up, as the listener does after an SSL refusal.
pub fn pg_startup(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    for _ in 0..16 {
        match crate::pg::codec::decode_startup(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
}

/// Typed frontend messages and the bodies leasegate reads during authentication.
pub fn pg_messages(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(message)) = crate::pg::codec::decode_message(&mut buf, 64 * 1024) {
        let _ = crate::pg::message::SaslInitialResponse::parse(&message.body);
        let _ = crate::pg::message::Authentication::parse(&message.body);
        let _ = crate::pg::message::error_fields(&message.body);
        let _ = crate::pg::message::parse_backend_key_data(&message.body);
    }
}

static VERIFIER: LazyLock<crate::credential::ScramVerifier> =
    LazyLock::new(|| crate::pg::scram::verifier(b"fuzz-password", b"fuzz-salt-16byte", 1));

/// A SCRAM exchange: the bytes before the first 0xff are the client-first message, the rest
/// the client-final; with and without channel binding, real and mock.
pub fn scram(data: &[u8]) {
    let (first, last) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    for (binding, mechanism) in [
        (crate::pg::scram::Binding::None, "SCRAM-SHA-256"),
        (crate::pg::scram::Binding::TlsServerEndPoint(vec![7; 32]), "SCRAM-SHA-256-PLUS"),
    ] {
        for genuine in [true, false] {
            let mut exchange = if genuine {
                crate::pg::scram::ServerExchange::new(&VERIFIER, binding.clone())
            } else {
                crate::pg::scram::ServerExchange::mock(&VERIFIER, binding.clone())
            };
            if exchange.client_first(mechanism, first).is_ok() {
                let _ = exchange.client_final(last);
            }
        }
    }
}

/// The client's HandshakeResponse41 (the first packet's payload), with and without TLS offered.
pub fn mysql_handshake_response(data: &[u8]) {
    let server = crate::mysql::frontend::sample_server_hello();
    for offer_tls in [false, true] {
        let _ = crate::mysql::frontend::parse_response(data, &server, offer_tls);
    }
    let _ = crate::mysql::packet::parse_err(data);
    let _ = crate::mysql::idle::ok_status_after_header(data);
    let _ = crate::mysql::gate::parse_kill(data);
}

/// Client bytes written through the command gate (COM_CHANGE_USER, COM_MULTI, KILL), in
/// chunks whose sizes the first byte picks, with the server side drained.
pub fn mysql_gate(data: &[u8]) {
    thread_local! {
        // One runtime per thread: building one per input would be most of the target's time.
        static RUNTIME: Option<tokio::runtime::Runtime> = tokio::runtime::Builder::new_current_thread().enable_time().build().ok();
    }
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step % 64) + 1;
    RUNTIME.with(|rt| {
        let Some(rt) = rt else { return };
        rt.block_on(gate_run(step, rest))
    });
}

/// One gate over `rest`, written in chunks of `step` bytes.
async fn gate_run(step: usize, rest: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, mut server) = tokio::io::duplex(1 << 20);
    // One command outstanding (a KILL just read) or none: both ways the gate judges a KILL.
    let session = crate::mysql::idle::Shared::for_test(2, usize::from(step.is_multiple_of(2)));
    let on_kill: crate::mysql::gate::KillHandler = Box::new(|_| Some(Box::pin(async { Ok(()) }) as crate::mysql::gate::KillOutcome));
    let mut gate = crate::mysql::gate::Gate::new(ours, true, true, session, on_kill);
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while matches!(server.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let write = async {
        for chunk in rest.chunks(step) {
            if gate.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = gate.flush().await;
        let _ = gate.shutdown().await;
    };
    // A gate that stops taking bytes must not hang the target: bounded.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), write).await;
    drop(gate);
    let _ = drain.await;
}

/// Both idle trackers fed the same bytes as alternating client and server chunks (the first
/// byte picks the chunk size), as the pump feeds them.
pub fn idle_trackers(data: &[u8]) {
    use crate::net::pump::Observer;
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step % 32) + 1;
    let mut pg = crate::pg::idle::PgIdle::new(Arc::default());
    let mut my = crate::mysql::idle::MyIdle::new(2, step % 2 == 0, true);
    for (i, chunk) in rest.chunks(step).enumerate() {
        let trackers: [&mut dyn Observer; 2] = [&mut pg, &mut my];
        for t in trackers {
            if i % 2 == 0 {
                t.client_bytes(chunk)
            } else {
                t.server_bytes(chunk)
            }
            let _ = t.is_idle();
        }
    }
}

/// A bearer token and a JWKS document made of the same bytes.
pub fn jwt(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::identity::jwt::token::parse(text);
    }
    let _ = crate::identity::jwt::jwks::parse_jwks(data);
}

/// A server certificate as the upstream leg reads it.
pub fn certificate_der(data: &[u8]) {
    let _ = crate::net::der::is_v1(data);
    let _ = crate::net::der::subject_public_key(data);
    let _ = crate::net::tls::tls_server_end_point(data);
}

/// A config file, parsed and validated (no file it names is read).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::from_toml_str(text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target over its seeds in `fuzz/seeds/<name>/` and over pseudo-random inputs
    /// derived from them (truncations, bit flips, splices): what CI runs where the fuzzer does not.
    #[test]
    fn every_target_survives_its_seeds_and_their_mutations() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for (name, target) in TARGETS {
            let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir.join(name))
                .unwrap_or_else(|e| panic!("fuzz/seeds/{name}: {e}"))
                .map(|entry| std::fs::read(entry.expect("a seed").path()).expect("a readable seed"))
                .collect();
            assert!(!seeds.is_empty(), "fuzz/seeds/{name} holds no seed");
            let rounds = if *name == "mysql_gate" { 300 } else { 3000 };
            for seed in &seeds {
                target(seed);
            }
            for _ in 0..rounds {
                let mut input = seeds[next() as usize % seeds.len()].clone();
                match next() % 4 {
                    0 if !input.is_empty() => input.truncate(next() as usize % input.len()),
                    1 if !input.is_empty() => {
                        let at = next() as usize % input.len();
                        input[at] ^= 1 << (next() % 8);
                    }
                    2 => {
                        let other = &seeds[next() as usize % seeds.len()];
                        input.extend_from_slice(&other[next() as usize % (other.len() + 1)..]);
                    }
                    _ => input.extend((0..next() % 64).map(|_| next() as u8)),
                }
                target(&input);
            }
        }
    }
}
