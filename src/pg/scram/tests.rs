use super::*;
use crate::credential::tests::PG;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

#[test]
fn computes_the_same_verifier_as_postgres() {
    let theirs = ScramVerifier::parse(PG).unwrap();
    let ours = verifier(b"secret", &theirs.salt, theirs.iterations);
    assert_eq!(ours, theirs);
}

/// Runs postgres-protocol's client against our server; returns the server's verdict.
fn exchange(password: &str, stored: &ScramVerifier, server: Binding, client: ChannelBinding, mech: &str) -> Result<(), ScramError> {
    let mut scram = ScramSha256::new(password.as_bytes(), client);
    let mut ex = ServerExchange::new(stored, server);
    let first = ex.client_first(mech, scram.message())?;
    scram.update(first.as_bytes()).unwrap();
    let fin = ex.client_final(scram.message())?;
    scram.finish(fin.as_bytes()).expect("client accepts the server signature");
    Ok(())
}

#[test]
fn accepts_the_right_password_and_refuses_a_wrong_one() {
    let stored = verifier(b"pw", b"0123456789abcdef", 16);
    assert_eq!(exchange("pw", &stored, Binding::None, ChannelBinding::unsupported(), SCRAM_SHA_256), Ok(()));
    assert_eq!(exchange("pw2", &stored, Binding::None, ChannelBinding::unsupported(), SCRAM_SHA_256), Err(ScramError::Proof));
    assert_eq!(exchange("pw", &stored, Binding::None, ChannelBinding::unrequested(), SCRAM_SHA_256), Ok(()));
}

#[test]
fn checks_channel_binding() {
    let stored = verifier(b"pw", b"salt", 1);
    let tls = Binding::TlsServerEndPoint(vec![7; 32]);
    let good = ChannelBinding::tls_server_end_point(vec![7; 32]);
    assert_eq!(exchange("pw", &stored, tls.clone(), good, SCRAM_SHA_256_PLUS), Ok(()));
    let bad = ChannelBinding::tls_server_end_point(vec![8; 32]);
    assert!(matches!(exchange("pw", &stored, tls.clone(), bad, SCRAM_SHA_256_PLUS), Err(ScramError::ChannelBinding(_))));
    // "y": the client could bind but believes we cannot — a downgrade.
    assert!(matches!(
        exchange("pw", &stored, tls.clone(), ChannelBinding::unrequested(), SCRAM_SHA_256),
        Err(ScramError::ChannelBinding(_))
    ));
    assert_eq!(exchange("pw", &stored, tls, ChannelBinding::unsupported(), SCRAM_SHA_256), Ok(()));
    // -PLUS over plain TCP is not offered, so it is refused.
    let plain = ChannelBinding::tls_server_end_point(vec![7; 32]);
    assert_eq!(exchange("pw", &stored, Binding::None, plain, SCRAM_SHA_256_PLUS), Err(ScramError::Mechanism));
}

#[test]
fn mock_exchange_never_succeeds() {
    let mocks = MockSalts::from_clients(std::iter::empty());
    let v = mocks.verifier("nobody");
    assert_eq!(v, mocks.verifier("nobody"), "stable salt per name");
    let mut scram = ScramSha256::new(b"anything", ChannelBinding::unsupported());
    let mut ex = ServerExchange::mock(&v, Binding::None);
    let first = ex.client_first(SCRAM_SHA_256, scram.message()).unwrap();
    scram.update(first.as_bytes()).unwrap();
    assert_eq!(ex.client_final(scram.message()), Err(ScramError::Proof));
}

/// An unknown name's salt is the same after a restart and on every listener (derived from the
/// configuration, not a process key), and it looks like real clients' verifiers.
#[test]
fn mock_salts_are_stable_and_look_like_the_real_ones() {
    let real = verifier(b"pw", &[7u8; 16], 4096);
    let other = verifier(b"pw2", &[8u8; 16], 4096);
    let odd = verifier(b"pw3", &[9u8; 24], 10_000);
    let clients = [("billing", &real), ("ci", &other), ("legacy", &odd)];
    let first = MockSalts::from_clients(clients.iter().map(|(n, v)| (*n, *v)));
    let again = MockSalts::from_clients(clients.iter().map(|(n, v)| (*n, *v)));
    assert_eq!(first.verifier("ghost"), again.verifier("ghost"), "same config, same salt (a restart)");
    assert_ne!(first.verifier("ghost").salt, first.verifier("ghost2").salt);
    let mock = first.verifier("ghost");
    assert_eq!((mock.iterations, mock.salt.len()), (4096, 16), "what most real verifiers have");
    let changed = MockSalts::from_clients([("billing", &other)].into_iter());
    assert_ne!(changed.verifier("ghost").salt, mock.salt, "keyed by the verifiers' secret parts");
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    let stored = verifier(b"pw", b"salt", 1);
    for msg in [&b""[..], b"n", b"n,,", b"n,,n=,r=", b"x,,n=,r=abc", b"n,a=me,n=,r=abc", b"\xff\xfe"] {
        let mut ex = ServerExchange::new(&stored, Binding::None);
        assert!(ex.client_first(SCRAM_SHA_256, msg).is_err(), "{msg:?}");
    }
    let mut ex = ServerExchange::new(&stored, Binding::None);
    ex.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap();
    for msg in [&b""[..], b"c=biws", b"c=biws,r=abc,p=!!"] {
        assert!(ex.client_final(msg).is_err());
    }
    // A second final after a failure is refused, not reused.
    assert!(ex.client_final(b"c=biws,r=abc,p=AAAA").is_err());
}
