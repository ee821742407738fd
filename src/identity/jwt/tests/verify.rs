//! Every check `verify_at` makes, one failure at a time.

use super::*;
use crate::identity::jwt::JwtFailure;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

fn reason(result: Result<super::super::VerifiedToken, JwtFailure>) -> &'static str {
    result.map(|_| "ok").unwrap_or_else(|e| e.reason())
}

#[tokio::test]
async fn every_supported_algorithm_is_accepted() {
    let rsa = Signer::rsa();
    let cases: Vec<(Signer, Vec<Alg>)> = vec![
        (rsa, vec![Alg::Rs256, Alg::Rs384, Alg::Rs512, Alg::Ps256, Alg::Ps384, Alg::Ps512]),
        (Signer::p256(), vec![Alg::Es256]),
        (Signer::p384(), vec![Alg::Es384]),
        (Signer::ed25519(), vec![Alg::EdDsa]),
    ];
    for (signer, algs) in cases {
        let (v, _dir) = verifiers(&[signer.jwk("k1")], |_| {});
        for alg in algs {
            let token = v.verify_at(&signer.token(alg, Some("k1"), &claims()), now()).await;
            let token = token.unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(token.issuer_name, "k8s");
            assert_eq!(token.iss, ISS);
            assert_eq!(token.sub.as_deref(), Some("system:serviceaccount:shop:billing-api"));
            assert_eq!(token.jti.as_deref(), Some("token-1"));
            assert_eq!(token.expires_at, now() + Duration::from_secs(600));
            assert_eq!(token.claims["aud"], json!([AUD, "other"]));
        }
    }
}

#[tokio::test]
async fn without_kid_every_key_of_the_right_type_is_tried() {
    let (ec, ed, other_ed) = (Signer::p256(), Signer::ed25519(), Signer::ed25519());
    let (v, _dir) = verifiers(&[ec.jwk("a"), other_ed.jwk("b"), ed.jwk("c")], |_| {});
    assert_eq!(reason(v.verify_at(&ed.token(Alg::EdDsa, None, &claims()), now()).await), "ok");
    assert_eq!(reason(v.verify_at(&ec.token(Alg::Es256, None, &claims()), now()).await), "ok");
    // No key of the type at all: nothing to try.
    assert_eq!(reason(v.verify_at(&Signer::p384().token(Alg::Es384, None, &claims()), now()).await), "unknown_key");
}

#[tokio::test]
async fn validity_times_allow_the_leeway_and_no_more() {
    let signer = Signer::ed25519();
    let (v, _dir) = verifiers(&[signer.jwk("k")], |c| c.max_token_age = Some(Duration::from_secs(3600)));
    let at = |changes: Value| {
        let mut claims = claims();
        for (k, val) in changes.as_object().unwrap() {
            if val.is_null() {
                claims.as_object_mut().unwrap().remove(k)
            } else {
                claims.as_object_mut().unwrap().insert(k.clone(), val.clone())
            };
        }
        signer.token(Alg::EdDsa, Some("k"), &claims)
    };
    let t = secs(now());
    let cases = [
        (json!({"exp": t - 59}), "ok"),
        (json!({"exp": t - 61}), "expired"),
        (json!({"exp": null}), "malformed"),
        (json!({"exp": "tomorrow"}), "malformed"),
        (json!({"nbf": t + 59}), "ok"),
        (json!({"nbf": t + 61}), "not_yet_valid"),
        (json!({"iat": t + 61}), "not_yet_valid"),
        (json!({"iat": t - 3600 - 59}), "ok"),
        (json!({"iat": t - 3600 - 61}), "too_old"),
        (json!({"iat": null}), "malformed"),
        (json!({"exp": 1e300}), "malformed"),
        (json!({"exp": (t + 600) as f64 + 0.5}), "ok"),
    ];
    for (changes, expected) in cases {
        assert_eq!(reason(v.verify_at(&at(changes.clone()), now()).await), expected, "{changes}");
    }
}

#[tokio::test]
async fn without_max_token_age_iat_may_be_old_or_absent() {
    let signer = Signer::p256();
    let (v, _dir) = verifiers(&[signer.jwk("k")], |_| {});
    let mut claims = claims();
    claims["iat"] = json!(secs(now()) - 10 * 365 * 24 * 3600);
    assert_eq!(reason(v.verify_at(&signer.token(Alg::Es256, Some("k"), &claims), now()).await), "ok");
    claims.as_object_mut().unwrap().remove("iat");
    assert_eq!(reason(v.verify_at(&signer.token(Alg::Es256, Some("k"), &claims), now()).await), "ok");
}

#[tokio::test]
async fn audience_must_name_a_configured_one() {
    let signer = Signer::p256();
    let (v, _dir) = verifiers(&[signer.jwk("k")], |_| {});
    for (aud, expected) in
        [(json!(AUD), "ok"), (json!(["x", AUD]), "ok"), (json!("x"), "audience"), (json!([]), "audience"), (json!(null), "audience")]
    {
        let mut claims = claims();
        claims["aud"] = aud.clone();
        assert_eq!(reason(v.verify_at(&signer.token(Alg::Es256, Some("k"), &claims), now()).await), expected, "{aud}");
    }
}

#[tokio::test]
async fn issuer_must_be_configured() {
    let signer = Signer::p256();
    let (v, _dir) = verifiers(&[signer.jwk("k")], |_| {});
    let mut claims = claims();
    claims["iss"] = json!("https://elsewhere.test");
    assert_eq!(reason(v.verify_at(&signer.token(Alg::Es256, Some("k"), &claims), now()).await), "issuer");
    claims.as_object_mut().unwrap().remove("iss");
    assert_eq!(reason(v.verify_at(&signer.token(Alg::Es256, Some("k"), &claims), now()).await), "issuer");
}

#[tokio::test]
async fn a_bad_signature_is_refused() {
    let (signer, impostor) = (Signer::rsa(), Signer::p256());
    let (v, _dir) = verifiers(&[signer.jwk("k"), Signer::p256().jwk("e")], |_| {});
    let token = signer.token(Alg::Rs256, Some("k"), &claims());
    let (input, sig) = token.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig[10] ^= 1;
    assert_eq!(reason(v.verify_at(&format!("{input}.{}", b64(&sig)), now()).await), "signature");
    // Claims changed after signing.
    let mut changed = claims();
    changed["sub"] = json!("system:serviceaccount:kube-system:admin");
    let (header, _) = token.split_once('.').unwrap();
    let (_, sig) = token.rsplit_once('.').unwrap();
    let forged = format!("{header}.{}.{sig}", b64(changed.to_string().as_bytes()));
    assert_eq!(reason(v.verify_at(&forged, now()).await), "signature");
    // Another key claiming a known kid.
    assert_eq!(reason(v.verify_at(&impostor.token(Alg::Es256, Some("e"), &claims()), now()).await), "signature");
}

#[tokio::test]
async fn none_and_hmac_are_refused_even_with_the_public_key_as_secret() {
    let signer = Signer::rsa();
    let jwk = signer.jwk("k");
    let (v, _dir) = verifiers(std::slice::from_ref(&jwk), |_| {});
    let body = b64(claims().to_string().as_bytes());
    let none = format!("{}.{body}.", b64(br#"{"alg":"none","kid":"k"}"#));
    let failure = v.verify_at(&none, now()).await.unwrap_err();
    assert_eq!(failure, JwtFailure::SymmetricOrNone { alg: "none" });
    assert_eq!(failure.reason(), "algorithm");
    let Signer::Rsa(kp) = &signer else { unreachable!() };
    for secret in [kp.public().as_ref().to_vec(), jwk.to_string().into_bytes()] {
        let input = format!("{}.{body}", b64(br#"{"alg":"HS256","kid":"k"}"#));
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
        mac.update(input.as_bytes());
        let token = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
        assert_eq!(v.verify_at(&token, now()).await.unwrap_err(), JwtFailure::SymmetricOrNone { alg: "HS256" });
    }
    let unknown = format!("{}.{body}.AAAA", b64(br#"{"alg":"XX999"}"#));
    assert_eq!(v.verify_at(&unknown, now()).await.unwrap_err(), JwtFailure::UnsupportedAlgorithm);
}

#[tokio::test]
async fn an_algorithm_must_fit_the_key() {
    let (rsa, ec) = (Signer::rsa(), Signer::p256());
    let mut pinned = rsa.jwk("pinned");
    pinned["alg"] = json!("RS256");
    let (v, _dir) = verifiers(&[rsa.jwk("r"), ec.jwk("e"), pinned], |_| {});
    // ES256 header naming the RSA key, and the other way round.
    assert_eq!(reason(v.verify_at(&ec.token(Alg::Es256, Some("r"), &claims()), now()).await), "algorithm");
    assert_eq!(reason(v.verify_at(&rsa.token(Alg::Rs256, Some("e"), &claims()), now()).await), "algorithm");
    // The JWK pins RS256: a valid PS256 signature by the same key is still refused.
    assert_eq!(reason(v.verify_at(&rsa.token(Alg::Ps256, Some("pinned"), &claims()), now()).await), "algorithm");
    assert_eq!(reason(v.verify_at(&rsa.token(Alg::Rs256, Some("pinned"), &claims()), now()).await), "ok");
}

#[tokio::test]
async fn unknown_kid_and_non_signing_keys() {
    let signer = Signer::p256();
    let mut enc = signer.jwk("enc");
    enc["use"] = json!("enc");
    let (v, _dir) = verifiers(&[signer.jwk("k"), enc, json!({"kty": "oct", "kid": "s", "k": "c2VjcmV0"})], |_| {});
    assert_eq!(reason(v.verify_at(&signer.token(Alg::Es256, Some("nope"), &claims()), now()).await), "unknown_key");
    assert_eq!(reason(v.verify_at(&signer.token(Alg::Es256, Some("enc"), &claims()), now()).await), "unknown_key");
    assert_eq!(reason(v.verify_at(&signer.token(Alg::Es256, Some("s"), &claims()), now()).await), "unknown_key");
}

#[tokio::test]
async fn size_and_form() {
    let signer = Signer::ed25519();
    let (v, _dir) = verifiers(&[signer.jwk("k")], |_| {});
    let mut big = claims();
    big["pad"] = json!("x".repeat(16 * 1024));
    let failure = v.verify_at(&signer.token(Alg::EdDsa, Some("k"), &big), now()).await.unwrap_err();
    assert_eq!(failure.reason(), "too_long");
    let exactly = "a".repeat(16 * 1024);
    assert_eq!(reason(v.verify_at(&exactly, now()).await), "malformed");
    let good = signer.token(Alg::EdDsa, Some("k"), &claims());
    let (header, rest) = good.split_once('.').unwrap();
    for bad in [
        "".to_string(),
        "a.b".to_string(),
        format!("{good}.extra"),
        format!("!!!.{rest}"),
        format!("{header}.bm90IGpzb24.sig"),
        format!("{header}.{}", rest.replace('.', ".=")),
        format!("{}.{rest}", b64(br#"{"alg":"EdDSA","kid":"k","crit":["exp"]}"#)),
    ] {
        assert_eq!(reason(v.verify_at(&bad, now()).await), "malformed", "{bad}");
    }
    let mut claims = claims();
    claims["sub"] = json!(42);
    assert_eq!(reason(v.verify_at(&signer.token(Alg::EdDsa, Some("k"), &claims), now()).await), "malformed");
}

#[tokio::test]
async fn neither_debug_nor_errors_show_the_token() {
    let signer = Signer::p256();
    let (v, _dir) = verifiers(&[signer.jwk("k")], |_| {});
    let mut claims = claims();
    claims["secret_claim"] = json!("hunter2");
    let token = signer.token(Alg::Es256, Some("k"), &claims);
    let verified = v.verify_at(&token, now()).await.unwrap();
    let debug = format!("{verified:?}");
    assert!(debug.contains("billing-api") && debug.contains("secret_claim") && !debug.contains("hunter2"), "{debug}");
    let signature = token.rsplit('.').next().unwrap();
    let later = now() + Duration::from_secs(3600);
    for failure in [v.verify_at(&token, later).await.unwrap_err(), v.verify_at(&format!("{token}x"), now()).await.unwrap_err()] {
        let text = format!("{failure} {failure:?}");
        assert!(!text.contains(signature) && !text.contains(&token[..20]) && !text.contains(ISS), "{text}");
    }
}

#[test]
fn reasons_are_the_fixed_set() {
    let i = || "k8s".to_string();
    let all = [
        JwtFailure::TooLong { len: 1, max: 0 },
        JwtFailure::Malformed { what: "x" },
        JwtFailure::SymmetricOrNone { alg: "none" },
        JwtFailure::UnsupportedAlgorithm,
        JwtFailure::KeyMismatch { issuer: i(), alg: Alg::Es256 },
        JwtFailure::Issuer,
        JwtFailure::UnknownKey { issuer: i() },
        JwtFailure::Signature { issuer: i() },
        JwtFailure::Audience { issuer: i() },
        JwtFailure::Expired { issuer: i() },
        JwtFailure::NotYetValid { issuer: i() },
        JwtFailure::TooOld { issuer: i() },
    ];
    let reasons: std::collections::BTreeSet<_> = all.iter().map(JwtFailure::reason).collect();
    let expected =
        ["malformed", "algorithm", "issuer", "unknown_key", "signature", "audience", "expired", "not_yet_valid", "too_old", "too_long"];
    assert_eq!(reasons, expected.into_iter().collect());
}
