//! Key rotation: the refetch an unknown `kid` triggers, its rate limit, concurrent callers
//! sharing one load, and the background refresh. A re-read `jwks_file` stands in for a fetch.

use super::*;
use crate::identity::jwt::JwtFailure;
use tokio_util::sync::CancellationToken;

#[tokio::test(start_paused = true)]
async fn an_unknown_kid_rereads_the_rotated_file_once_per_ten_seconds() {
    let (a, b, c) = (Signer::ed25519(), Signer::p256(), Signer::p384());
    let (v, dir) = verifiers(&[a.jwk("a")], |_| {});
    let path = dir.0.join("jwks.json");

    write_jwks(&path, &[a.jwk("a"), b.jwk("b")]);
    let token_b = b.token(Alg::Es256, Some("b"), &claims());
    assert_eq!(v.verify_at(&token_b, now()).await.unwrap().issuer_name, "k8s");
    assert_eq!(v.key_generation(0), 1);

    // Rotated again within 10 s: the refetch is refused, the key stays unknown.
    write_jwks(&path, &[b.jwk("b"), c.jwk("c")]);
    let token_c = c.token(Alg::Es384, Some("c"), &claims());
    assert_eq!(v.verify_at(&token_c, now()).await.unwrap_err(), JwtFailure::UnknownKey { issuer: "k8s".into() });
    assert_eq!(v.key_generation(0), 1);
    // Known keys keep working meanwhile.
    assert!(v.verify_at(&token_b, now()).await.is_ok());

    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(v.verify_at(&token_c, now()).await.is_ok());
    assert_eq!(v.key_generation(0), 2);
    // `a` was rotated out.
    let token_a = a.token(Alg::EdDsa, Some("a"), &claims());
    assert_eq!(v.verify_at(&token_a, now()).await.unwrap_err().reason(), "unknown_key");
}

#[tokio::test(start_paused = true)]
async fn concurrent_callers_share_one_refetch() {
    let (a, b) = (Signer::ed25519(), Signer::ed25519());
    let (v, dir) = verifiers(&[a.jwk("a")], |_| {});
    write_jwks(&dir.0.join("jwks.json"), &[b.jwk("b")]);
    let token = b.token(Alg::EdDsa, Some("b"), &claims());
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (v, token) = (v.clone(), token.clone());
        all.spawn(async move { v.verify_at(&token, now()).await.map(|t| t.issuer_name) });
    }
    while let Some(result) = all.join_next().await {
        assert_eq!(result.unwrap().unwrap(), "k8s");
    }
    assert_eq!(v.key_generation(0), 1, "one load for all eight");
    // Made-up kids from many callers still cost at most one load.
    let bogus = b.token(Alg::EdDsa, Some("bogus"), &claims());
    tokio::time::advance(Duration::from_secs(10)).await;
    for _ in 0..8 {
        let (v, bogus) = (v.clone(), bogus.clone());
        all.spawn(async move { v.verify_at(&bogus, now()).await.map(|t| t.issuer_name) });
    }
    while let Some(result) = all.join_next().await {
        assert_eq!(result.unwrap().unwrap_err().reason(), "unknown_key");
    }
    assert_eq!(v.key_generation(0), 2);
}

#[tokio::test(start_paused = true)]
async fn a_broken_file_keeps_the_previous_keys() {
    let a = Signer::p256();
    let (v, dir) = verifiers(&[a.jwk("a")], |_| {});
    std::fs::write(dir.0.join("jwks.json"), "{ half a file").unwrap();
    let token = a.token(Alg::Es256, Some("other"), &claims());
    assert_eq!(v.verify_at(&token, now()).await.unwrap_err().reason(), "unknown_key");
    assert!(v.verify_at(&a.token(Alg::Es256, Some("a"), &claims()), now()).await.is_ok());
    assert_eq!(v.key_generation(0), 0);
}

#[tokio::test(start_paused = true)]
async fn the_background_refresh_rereads_the_file_until_shutdown() {
    let (a, b) = (Signer::ed25519(), Signer::ed25519());
    let (v, dir) = verifiers(&[a.jwk("a")], |c| c.refresh = Duration::from_secs(60));
    let shutdown = CancellationToken::new();
    let tasks = v.spawn_refresh(shutdown.clone());
    write_jwks(&dir.0.join("jwks.json"), &[b.jwk("b")]);
    tokio::time::sleep(Duration::from_secs(61)).await;
    // The reload reads the file on the blocking pool; give it real time to finish.
    for _ in 0..500 {
        if v.key_generation(0) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(v.key_generation(0), 1);
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap();
    }
}

#[test]
fn setup_fails_on_a_missing_file_or_a_plain_http_url() {
    let dir = TempDir::new();
    let missing = config(dir.0.join("absent.json"));
    assert!(matches!(Verifiers::new(&[missing]), Err(crate::identity::jwt::JwtSetupError::Keys { .. })));
    let mut http = config(dir.0.join("absent.json"));
    http.jwks_file = None;
    http.jwks_url = Some("http://issuer.test/jwks".into());
    assert!(matches!(Verifiers::new(&[http]), Err(crate::identity::jwt::JwtSetupError::Url { .. })));
}
