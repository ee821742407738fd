//! Fetching over HTTPS from a local TLS server with a self-signed `ca`: a JWKS URL, OIDC
//! discovery (whose issuer must match), a body over the cap, and a non-200 answer.

use super::*;
use crate::identity::jwt::{FetchError, JwtFailure};
use crate::net::https::{https_get, parse_https};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `routes` (path → body; anything else 404) over TLS on 127.0.0.1; returns the base URL.
async fn serve(dir: &TempDir, routes: Vec<(String, String)>) -> (String, PathBuf) {
    let (cert, key) = crate::net::tls::self_signed(&["localhost"]).unwrap();
    let (cert_path, key_path) = (dir.0.join("ca.pem"), dir.0.join("key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let acceptor = crate::net::tls::server_tls(&cert_path, &key_path, &[]).unwrap().acceptor;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, routes) = (acceptor.clone(), routes.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut buf = [0; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n @ 1..) = tls.read(&mut buf).await else { return };
                    request.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match routes.iter().find(|(p, _)| p == path) {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => ("404 Not Found", String::new()),
                };
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://localhost:{port}"), cert_path)
}

fn remote(ca: PathBuf, jwks_url: Option<String>, discovery_url: Option<String>) -> JwtIssuerConfig {
    JwtIssuerConfig { jwks_file: None, jwks_url, discovery_url, ca: Some(ca), ..config(PathBuf::new()) }
}

#[tokio::test]
async fn keys_come_from_a_jwks_url_and_discovery_must_name_our_issuer() {
    let dir = TempDir::new();
    let signer = Signer::p256();
    let jwks = json!({ "keys": [signer.jwk("k")] }).to_string();
    let (base, ca) = serve(
        &dir,
        vec![
            ("/jwks".into(), jwks),
            ("/evil/.well-known/openid-configuration".into(), json!({"issuer": "https://evil.test", "jwks_uri": "x"}).to_string()),
        ],
    )
    .await;
    let token = signer.token(Alg::Es256, Some("k"), &claims());

    let by_url = Verifiers::new(&[remote(ca.clone(), Some(format!("{base}/jwks")), None)]).unwrap();
    assert_eq!(by_url.key_generation(0), 0, "nothing is fetched before start");
    by_url.start().await;
    assert_eq!(by_url.key_generation(0), 1);
    assert!(by_url.verify_at(&token, now()).await.is_ok());

    // Discovery naming another issuer: its keys are not loaded.
    let evil = Verifiers::new(&[remote(ca, None, Some(format!("{base}/evil/.well-known/openid-configuration")))]).unwrap();
    evil.start().await;
    assert_eq!(evil.key_generation(0), 0);
    assert_eq!(evil.verify_at(&token, now()).await.unwrap_err(), JwtFailure::UnknownKey { issuer: "k8s".into() });
}

#[tokio::test]
async fn discovery_leads_to_the_jwks_uri() {
    let dir = TempDir::new();
    let signer = Signer::ed25519();
    // The server's port is only known once it listens, so serve twice: the second names the first.
    let (jwks_base, ca) = serve(&dir, vec![("/keys".into(), json!({ "keys": [signer.jwk("k")] }).to_string())]).await;
    let other = TempDir::new();
    let doc = json!({"issuer": ISS, "jwks_uri": format!("{jwks_base}/keys")}).to_string();
    let (base, other_ca) = serve(&other, vec![("/.well-known/openid-configuration".into(), doc)]).await;
    // One CA file trusting both self-signed certificates.
    let both = dir.0.join("both.pem");
    std::fs::write(&both, [std::fs::read(&ca).unwrap(), std::fs::read(&other_ca).unwrap()].concat()).unwrap();
    let v = Verifiers::new(&[remote(both, None, Some(format!("{base}/.well-known/openid-configuration")))]).unwrap();
    v.start().await;
    assert!(v.verify_at(&signer.token(Alg::EdDsa, Some("k"), &claims()), now()).await.is_ok());
}

#[tokio::test]
async fn the_body_is_capped_and_only_200_is_accepted() {
    let dir = TempDir::new();
    let (base, ca) = serve(&dir, vec![("/big".into(), "x".repeat(2000))]).await;
    let tls = crate::net::https::client_config(Some(&ca)).unwrap();
    let big = parse_https(&format!("{base}/big")).unwrap();
    assert_eq!(https_get(&big, tls.clone(), Duration::from_secs(5), 2000).await.unwrap().len(), 2000);
    assert!(matches!(https_get(&big, tls.clone(), Duration::from_secs(5), 1999).await, Err(FetchError::TooLarge { max: 1999 })));
    let missing = parse_https(&format!("{base}/missing")).unwrap();
    assert!(matches!(https_get(&missing, tls, Duration::from_secs(5), 2000).await, Err(FetchError::Status(404))));
    // The web PKI roots do not trust a self-signed certificate.
    let public = crate::net::https::client_config(None).unwrap();
    assert!(matches!(https_get(&big, public, Duration::from_secs(5), 2000).await, Err(FetchError::Tls(_))));
    assert!(parse_https("http://localhost/jwks").is_none());
}
