//! Behaviour of `integration_core::jwt`: every algorithm round-trips, published and
//! openssl-made tokens verify, and each security rule refuses what it must.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use integration_core::jwt::{sign, verify, JwtError, VerifyOptions};
use serde_json::{json, Value};
use sha2::Sha256;

const RSA_PRIVATE: &str = include_str!("fixtures/jwt/rsa_private.pem");
const RSA_PRIVATE_PKCS1: &str = include_str!("fixtures/jwt/rsa_private_pkcs1.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/jwt/rsa_public.pem");
const RSA_PUBLIC_PKCS1: &str = include_str!("fixtures/jwt/rsa_public_pkcs1.pem");
const RSA_CERT: &str = include_str!("fixtures/jwt/rsa_cert.pem");
const RSA1024_PUBLIC: &str = include_str!("fixtures/jwt/rsa1024_public.pem");
const EC256_PRIVATE: &str = include_str!("fixtures/jwt/ec256_private.pem");
const EC256_PRIVATE_SEC1: &str = include_str!("fixtures/jwt/ec256_private_sec1.pem");
const EC256_PUBLIC: &str = include_str!("fixtures/jwt/ec256_public.pem");
const EC384_PRIVATE: &str = include_str!("fixtures/jwt/ec384_private.pem");
const EC384_PUBLIC: &str = include_str!("fixtures/jwt/ec384_public.pem");
const ED_PRIVATE: &str = include_str!("fixtures/jwt/ed25519_private.pem");
const ED_PUBLIC: &str = include_str!("fixtures/jwt/ed25519_public.pem");
const JWKS: &str = include_str!("fixtures/jwt/jwks.json");
const OPENSSL_RS256: &str = include_str!("fixtures/jwt/openssl_rs256.jwt");
const OPENSSL_PS256: &str = include_str!("fixtures/jwt/openssl_ps256.jwt");
const OPENSSL_EDDSA: &str = include_str!("fixtures/jwt/openssl_eddsa.jwt");

const SECRET: &str = "correct-horse-battery-staple-0123456789";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn claims() -> Value {
    json!({"sub": "alice", "role": "web_user", "iat": now(), "exp": now() + 600})
}

fn opts() -> VerifyOptions {
    VerifyOptions::default()
}

fn refused(result: Result<Value, JwtError>) -> JwtError {
    match result {
        Ok(claims) => panic!("expected a refusal, got claims {claims}"),
        Err(e) => e,
    }
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn header_of(token: &str) -> Value {
    let header = token.split('.').next().expect("a header part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url header"))
        .expect("JSON header")
}

/// An HS256 token built by hand, for headers and payloads `sign` would never produce.
fn hand_signed(header: &str, payload: &str, key: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

// ---- round trips ----------------------------------------------------------------

#[test]
fn every_algorithm_round_trips_with_its_key_pair() {
    let cases: [(&str, &str, &str); 12] = [
        ("HS256", SECRET, SECRET),
        ("HS384", SECRET, SECRET),
        ("HS512", SECRET, SECRET),
        ("RS256", RSA_PRIVATE, RSA_PUBLIC),
        ("RS384", RSA_PRIVATE, RSA_PUBLIC),
        ("RS512", RSA_PRIVATE, RSA_PUBLIC),
        ("PS256", RSA_PRIVATE, RSA_PUBLIC),
        ("PS384", RSA_PRIVATE, RSA_PUBLIC),
        ("PS512", RSA_PRIVATE, RSA_PUBLIC),
        ("ES256", EC256_PRIVATE, EC256_PUBLIC),
        ("ES384", EC384_PRIVATE, EC384_PUBLIC),
        ("EdDSA", ED_PRIVATE, ED_PUBLIC),
    ];
    let claims = claims();
    for (alg, private, public) in cases {
        let token = sign(&claims, private, alg, None).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(
            header_of(&token),
            json!({"alg": alg, "typ": "JWT"}),
            "{alg}"
        );
        let verified = verify(&token, public, &opts()).unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(verified, claims, "{alg}");
    }
}

#[test]
fn pkcs1_and_sec1_private_keys_sign_too() {
    let token = sign(&claims(), RSA_PRIVATE_PKCS1, "RS256", None).expect("PKCS#1 RSA key");
    verify(&token, RSA_PUBLIC, &opts()).expect("verifies with the SPKI public key");

    let token = sign(&claims(), EC256_PRIVATE_SEC1, "ES256", None).expect("SEC1 EC key");
    verify(&token, EC256_PUBLIC, &opts()).expect("verifies with the SPKI public key");
}

#[test]
fn openssl_ecparam_output_with_its_parameters_block_is_accepted() {
    let key = format!(
        "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{EC256_PRIVATE_SEC1}"
    );
    let token = sign(&claims(), &key, "ES256", None).expect("key after the parameters");
    verify(&token, EC256_PUBLIC, &opts()).expect("verifies");
}

#[test]
fn rsa_public_key_may_be_pkcs1_or_a_certificate() {
    let token = sign(&claims(), RSA_PRIVATE, "PS256", None).expect("signs");
    verify(&token, RSA_PUBLIC_PKCS1, &opts()).expect("RSA PUBLIC KEY");
    verify(&token, RSA_CERT, &opts()).expect("CERTIFICATE");
}

#[test]
fn pem_pasted_with_crlf_and_indentation_is_accepted() {
    let token = sign(&claims(), ED_PRIVATE, "EdDSA", None).expect("signs");
    let pasted: String = ED_PUBLIC
        .lines()
        .map(|line| format!("    {line}\r\n"))
        .collect();
    verify(&token, &pasted, &opts()).expect("verifies");
}

#[test]
fn algorithm_names_are_case_insensitive_when_signing() {
    let token = sign(&claims(), SECRET, "hs256", None).expect("signs");
    assert_eq!(header_of(&token)["alg"], "HS256");
}

#[test]
fn kid_goes_into_the_header() {
    let token = sign(&claims(), SECRET, "HS256", Some("2026-01")).expect("signs");
    assert_eq!(header_of(&token)["kid"], "2026-01");
}

#[test]
fn binary_secret_is_written_base64url() {
    let key = format!("base64url:{}", b64(&[7u8; 40]));
    let token = sign(&claims(), &key, "HS512", None).expect("signs");
    verify(&token, &key, &opts()).expect("verifies");
    let jwk = json!({"kty": "oct", "k": b64(&[7u8; 40])}).to_string();
    verify(&token, &jwk, &opts()).expect("the same secret as an oct JWK");
}

// ---- interoperability -----------------------------------------------------------

const RFC7515_CLAIMS_EXP: u64 = 1_300_819_380;

fn rfc7515_claims() -> Value {
    json!({"iss": "joe", "exp": RFC7515_CLAIMS_EXP, "http://example.com/is_root": true})
}

fn at_rfc7515_time() -> VerifyOptions {
    VerifyOptions {
        now: Some(RFC7515_CLAIMS_EXP - 60),
        ..opts()
    }
}

/// RFC 7515 Appendix A.1: HS256 with a 64-byte binary key given as an oct JWK.
const RFC7515_A1_TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const RFC7515_A1_K: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";

#[test]
fn rfc7515_a1_hs256_example_verifies() {
    let jwk = json!({"kty": "oct", "k": RFC7515_A1_K}).to_string();
    let claims = verify(RFC7515_A1_TOKEN, &jwk, &at_rfc7515_time()).expect("A.1 verifies");
    assert_eq!(claims, rfc7515_claims());

    let prefixed = format!("base64url:{RFC7515_A1_K}");
    verify(RFC7515_A1_TOKEN, &prefixed, &at_rfc7515_time()).expect("base64url: secret");
}

#[test]
fn rfc7515_a1_example_is_expired_today_and_says_when() {
    let jwk = json!({"kty": "oct", "k": RFC7515_A1_K}).to_string();
    let e = refused(verify(RFC7515_A1_TOKEN, &jwk, &opts()));
    assert_eq!(e.kind(), "expired");
    assert_eq!(
        e.to_string(),
        "token expired at 2011-03-22T18:43:00Z (leeway 30 s)"
    );
}

/// RFC 7515 Appendix A.2: RS256 with the published RSA key as a JWK.
const RFC7515_A2_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
const RFC7515_A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";

fn rfc7515_a2_jwk() -> String {
    json!({"kty": "RSA", "n": RFC7515_A2_N, "e": "AQAB"}).to_string()
}

#[test]
fn rfc7515_a2_rs256_example_verifies() {
    let claims = verify(RFC7515_A2_TOKEN, &rfc7515_a2_jwk(), &at_rfc7515_time()).expect("A.2");
    assert_eq!(claims, rfc7515_claims());
}

/// RFC 7515 Appendix A.3: ES256 with the published P-256 key as a JWK.
#[test]
fn rfc7515_a3_es256_example_verifies() {
    let token = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
    let jwk = json!({
        "kty": "EC", "crv": "P-256",
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    })
    .to_string();
    let claims = verify(token, &jwk, &at_rfc7515_time()).expect("A.3 verifies");
    assert_eq!(claims, rfc7515_claims());
}

#[test]
fn tokens_signed_by_the_openssl_cli_verify() {
    let expected = json!({"sub": "openssl", "iss": "fixture", "exp": 4_102_444_800u64});
    for (token, key) in [
        (OPENSSL_RS256, RSA_PUBLIC),
        (OPENSSL_PS256, RSA_CERT),
        (OPENSSL_EDDSA, ED_PUBLIC),
    ] {
        let claims = verify(token, key, &opts()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claims, expected);
    }
}

// ---- JWKS -----------------------------------------------------------------------

#[test]
fn jwks_selects_the_key_by_kid_for_every_key_type() {
    for (alg, private, kid) in [
        ("RS256", RSA_PRIVATE, "rsa-1"),
        ("ES256", EC256_PRIVATE, "ec256-1"),
        ("ES384", EC384_PRIVATE, "ec384-1"),
        ("EdDSA", ED_PRIVATE, "ed-1"),
    ] {
        let token = sign(&claims(), private, alg, Some(kid)).expect("signs");
        verify(&token, JWKS, &opts()).unwrap_or_else(|e| panic!("{kid}: {e}"));
    }
}

#[test]
fn jwks_refuses_an_unknown_kid_and_names_the_known_ones() {
    let token = sign(&claims(), RSA_PRIVATE, "RS256", Some("rotated-away")).expect("signs");
    let e = refused(verify(&token, JWKS, &opts()));
    assert_eq!(e.kind(), "unknown_kid");
    let message = e.to_string();
    assert!(message.contains("\"rotated-away\""), "{message}");
    assert!(message.contains("\"rsa-1\""), "{message}");
}

#[test]
fn jwks_kid_pointing_at_another_key_type_is_not_a_bypass() {
    // An RSA-signed token claiming the EC key's kid fails on algorithm, not by luck.
    let token = sign(&claims(), RSA_PRIVATE, "RS256", Some("ec256-1")).expect("signs");
    let e = refused(verify(&token, JWKS, &opts()));
    assert_eq!(e.kind(), "alg_not_allowed");
    assert!(
        e.to_string()
            .contains("RS256 not allowed for an EC P-256 key"),
        "{e}"
    );
}

#[test]
fn token_without_kid_needs_exactly_one_usable_key() {
    let token = sign(&claims(), RSA_PRIVATE, "RS256", None).expect("signs");
    assert_eq!(refused(verify(&token, JWKS, &opts())).kind(), "unknown_kid");

    // The encryption key does not count as usable, so the signing key is the one.
    let set: Value = serde_json::from_str(JWKS).expect("JSON");
    let rsa_only = json!({"keys": [set["keys"][0], set["keys"][4]]}).to_string();
    verify(&token, &rsa_only, &opts()).expect("one usable key");
}

#[test]
fn a_single_jwk_works_like_a_set_of_one() {
    let set: Value = serde_json::from_str(JWKS).expect("JSON");
    let ed = set["keys"][3].to_string();
    let token = sign(&claims(), ED_PRIVATE, "EdDSA", Some("ed-1")).expect("signs");
    verify(&token, &ed, &opts()).expect("matching kid");

    let other_kid = sign(&claims(), ED_PRIVATE, "EdDSA", Some("ed-2")).expect("signs");
    assert_eq!(
        refused(verify(&other_kid, &ed, &opts())).kind(),
        "unknown_kid"
    );

    let mut anonymous = set["keys"][3].clone();
    anonymous.as_object_mut().expect("object").remove("kid");
    verify(&other_kid, &anonymous.to_string(), &opts()).expect("a JWK without kid is the key");
}

#[test]
fn jwk_alg_narrows_the_algorithms_of_its_key() {
    // rsa-1 says "alg": "RS256", so a PS256 token under that kid is refused.
    let token = sign(&claims(), RSA_PRIVATE, "PS256", Some("rsa-1")).expect("signs");
    let e = refused(verify(&token, JWKS, &opts()));
    assert_eq!(e.kind(), "alg_not_allowed");
    assert!(e.to_string().contains("(allowed: RS256)"), "{e}");
}

#[test]
fn jwk_meant_for_encryption_is_not_used() {
    let token = sign(&claims(), RSA_PRIVATE, "RS256", Some("rsa-enc")).expect("signs");
    let e = refused(verify(&token, JWKS, &opts()));
    assert_eq!(e.kind(), "bad_key");
    assert!(e.to_string().contains("not \"sig\""), "{e}");
}

#[test]
fn broken_jwks_are_refused_as_bad_keys() {
    let token = sign(&claims(), ED_PRIVATE, "EdDSA", None).expect("signs");
    for jwks in [
        "{not json",
        r#"{"keys": "nope"}"#,
        r#"{"keys": []}"#,
        r#"{"kty": "OKP", "crv": "Ed25519", "x": "c2hvcnQ"}"#,
        r#"{"kty": "OKP", "crv": "Ed448", "x": "AAAA"}"#,
        r#"{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}"#,
        r#"{"kty": "oct", "k": "c2hvcnQ"}"#,
        r#"{"kty": "RSA", "n": "AQAB", "e": "AQAB"}"#,
    ] {
        let e = refused(verify(&token, jwks, &opts()));
        assert_eq!(e.kind(), "bad_key", "{jwks}: {e}");
    }
}

// ---- algorithm rules ------------------------------------------------------------

#[test]
fn unsigned_tokens_are_refused_whatever_the_spelling() {
    let payload = b64(claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2lnbmF0dXJl"),
        ] {
            let e = refused(verify(&token, SECRET, &opts()));
            assert_eq!(e.kind(), "alg_not_allowed", "{alg}: {e}");
        }
    }
    let e = sign(&claims(), SECRET, "none", None).expect_err("never signs unsigned");
    assert_eq!(e.kind(), "alg_not_allowed");
}

#[test]
fn hs256_token_keyed_with_the_rsa_public_key_text_is_refused() {
    // The classic confusion attack: the public key PEM used as an HMAC secret.
    let payload = claims().to_string();
    let forged = hand_signed(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &payload,
        RSA_PUBLIC.as_bytes(),
    );
    let e = refused(verify(&forged, RSA_PUBLIC, &opts()));
    assert_eq!(e.kind(), "alg_not_allowed");
    assert!(
        e.to_string().contains("HS256 not allowed for an RSA key"),
        "{e}"
    );

    // The same forgery against the JWKS, with and without the RSA key's kid.
    let with_kid = hand_signed(
        r#"{"alg":"HS256","kid":"rsa-1"}"#,
        &payload,
        RSA_PUBLIC.as_bytes(),
    );
    assert_eq!(
        refused(verify(&with_kid, JWKS, &opts())).kind(),
        "alg_not_allowed"
    );
}

#[test]
fn the_key_decides_the_algorithm_family() {
    let rsa_token = sign(&claims(), RSA_PRIVATE, "RS256", None).expect("signs");
    let e = refused(verify(&rsa_token, SECRET, &opts()));
    assert_eq!(e.kind(), "alg_not_allowed");
    assert!(
        e.to_string()
            .contains("RS256 not allowed for a shared secret"),
        "{e}"
    );

    let es256 = sign(&claims(), EC256_PRIVATE, "ES256", None).expect("signs");
    let e = refused(verify(&es256, EC384_PUBLIC, &opts()));
    assert!(
        e.to_string()
            .contains("ES256 not allowed for an EC P-384 key"),
        "{e}"
    );

    let eddsa = sign(&claims(), ED_PRIVATE, "EdDSA", None).expect("signs");
    let e = refused(verify(&eddsa, RSA_PUBLIC, &opts()));
    assert!(
        e.to_string().contains("EdDSA not allowed for an RSA key"),
        "{e}"
    );
}

#[test]
fn signing_refuses_an_algorithm_that_does_not_fit_the_key() {
    for (key, alg, says) in [
        (SECRET, "RS256", "RS256 not allowed for a shared secret"),
        (RSA_PRIVATE, "HS256", "HS256 not allowed for an RSA key"),
        (RSA_PRIVATE, "ES256", "ES256 not allowed for an RSA key"),
        (
            EC256_PRIVATE,
            "ES384",
            "ES384 not allowed for an EC P-256 key",
        ),
        (ED_PRIVATE, "ES256", "ES256 not allowed for an Ed25519 key"),
    ] {
        let e = sign(&claims(), key, alg, None).expect_err(alg);
        assert_eq!(e.kind(), "alg_not_allowed", "{alg}: {e}");
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn unsupported_algorithms_are_named() {
    let e = sign(&claims(), SECRET, "ES512", None).expect_err("no P-521");
    assert_eq!(e.kind(), "unsupported_alg");
    assert!(e.to_string().contains("\"ES512\""), "{e}");

    let token = hand_signed(r#"{"alg":"HS1"}"#, &claims().to_string(), SECRET.as_bytes());
    assert_eq!(
        refused(verify(&token, SECRET, &opts())).kind(),
        "unsupported_alg"
    );
}

// ---- keys -----------------------------------------------------------------------

#[test]
fn short_secrets_are_refused_on_both_sides() {
    let short = "only-twenty-bytes!!!";
    let e = sign(&claims(), short, "HS256", None).expect_err("short secret");
    assert_eq!(e.kind(), "bad_key");
    assert!(e.to_string().contains("20 bytes; at least 32"), "{e}");
    assert!(!e.to_string().contains(short), "{e}");

    let token = hand_signed(
        r#"{"alg":"HS256"}"#,
        &claims().to_string(),
        short.as_bytes(),
    );
    assert_eq!(refused(verify(&token, short, &opts())).kind(), "bad_key");
}

#[test]
fn rsa_keys_under_2048_bits_are_refused() {
    let token = sign(&claims(), RSA_PRIVATE, "RS256", None).expect("signs");
    let e = refused(verify(&token, RSA1024_PUBLIC, &opts()));
    assert_eq!(e.kind(), "bad_key");
    assert!(e.to_string().contains("1024 bits"), "{e}");
}

#[test]
fn keys_of_the_wrong_role_or_shape_are_refused() {
    let token = sign(&claims(), RSA_PRIVATE, "RS256", None).expect("signs");
    let e = refused(verify(&token, RSA_PRIVATE, &opts()));
    assert_eq!(e.kind(), "bad_key");
    assert!(e.to_string().contains("not a private key"), "{e}");

    let e = sign(&claims(), RSA_PUBLIC, "RS256", None).expect_err("public key");
    assert!(e.to_string().contains("needs a private key"), "{e}");

    let encrypted =
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----";
    let e = sign(&claims(), encrypted, "RS256", None).expect_err("encrypted");
    assert!(e.to_string().contains("encrypted private keys"), "{e}");

    for key in [
        "",
        "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----",
        "-----BEGIN PUBLIC KEY-----\nAAAA",
        "base64url:!!!!",
    ] {
        assert_eq!(
            refused(verify(&token, key, &opts())).kind(),
            "bad_key",
            "{key}"
        );
    }
}

// ---- tampering and malformed tokens ----------------------------------------------

#[test]
fn tampered_payload_or_signature_is_refused() {
    let token = sign(&claims(), RSA_PRIVATE, "RS256", None).expect("signs");
    let parts: Vec<&str> = token.split('.').collect();

    let mut elevated = claims();
    elevated["role"] = json!("admin");
    let forged_payload = format!(
        "{}.{}.{}",
        parts[0],
        b64(elevated.to_string().as_bytes()),
        parts[2]
    );
    let e = refused(verify(&forged_payload, RSA_PUBLIC, &opts()));
    assert_eq!(e.kind(), "bad_signature");

    let mut signature = parts[2].to_owned().into_bytes();
    signature[10] = if signature[10] == b'A' { b'B' } else { b'A' };
    let forged_signature = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(signature).expect("ASCII")
    );
    assert_eq!(
        refused(verify(&forged_signature, RSA_PUBLIC, &opts())).kind(),
        "bad_signature"
    );
}

#[test]
fn token_signed_with_another_key_is_refused() {
    let token = sign(&claims(), SECRET, "HS256", None).expect("signs");
    let other = "another-secret-of-plenty-of-bytes-0123456789";
    assert_eq!(
        refused(verify(&token, other, &opts())).kind(),
        "bad_signature"
    );

    let token = sign(&claims(), RSA_PRIVATE, "RS256", None).expect("signs");
    assert_eq!(
        refused(verify(&token, &rfc7515_a2_jwk(), &opts())).kind(),
        "bad_signature"
    );
}

#[test]
fn malformed_tokens_are_refused_with_a_clear_message() {
    let good = sign(&claims(), SECRET, "HS256", None).expect("signs");
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("abc".into(), "this one has 1"),
        (format!("{}.{}", parts[0], parts[1]), "this one has 2"),
        (format!("{good}.extra"), "this one has 4"),
        ("a.b.c.d.e".into(), "JWE"),
        (
            format!("!!!.{}.{}", parts[1], parts[2]),
            "header is not unpadded base64url",
        ),
        (
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            "header is not unpadded base64url",
        ),
        (format!("{}.{}.", parts[0], parts[1]), "signature is empty"),
        (
            format!("{}.@@.{}", parts[0], parts[2]),
            "payload is not unpadded base64url",
        ),
        (
            format!("{}.{}.{}", b64(b"hello"), parts[1], parts[2]),
            "header is not JSON",
        ),
        (
            format!("{}.{}.{}", b64(b"[1]"), parts[1], parts[2]),
            "header is not a JSON object",
        ),
        (
            format!("{}.{}.{}", b64(b"{}"), parts[1], parts[2]),
            "header has no alg",
        ),
    ];
    for (token, says) in cases {
        let e = refused(verify(&token, SECRET, &opts()));
        assert_eq!(e.kind(), "malformed", "{token}: {e}");
        assert!(e.to_string().contains(says), "{token}: {e}");
    }
}

#[test]
fn validly_signed_garbage_payloads_are_malformed() {
    for (payload, says) in [
        ("not json", "payload is not JSON"),
        ("[1, 2]", "payload must be a JSON object, not an array"),
        (r#"{"exp": "tomorrow"}"#, "claim exp must be a number"),
        (
            r#"{"exp": 4102444800, "aud": 7}"#,
            "claim aud must be a string or an array",
        ),
    ] {
        let token = hand_signed(r#"{"alg":"HS256"}"#, payload, SECRET.as_bytes());
        let e = refused(verify(&token, SECRET, &opts()));
        assert_eq!(e.kind(), "malformed", "{payload}: {e}");
        assert!(e.to_string().contains(says), "{payload}: {e}");
    }
}

#[test]
fn critical_header_extensions_are_refused() {
    let token = hand_signed(
        r#"{"alg":"HS256","crit":["exp-ext"],"exp-ext":1}"#,
        &claims().to_string(),
        SECRET.as_bytes(),
    );
    let e = refused(verify(&token, SECRET, &opts()));
    assert_eq!(e.kind(), "malformed");
    assert!(e.to_string().contains("critical"), "{e}");
}

// ---- time claims ----------------------------------------------------------------

fn hs256(claims: Value) -> String {
    sign(&claims, SECRET, "HS256", None).expect("signs")
}

#[test]
fn exp_is_checked_with_leeway() {
    let t = now();
    let e = refused(verify(&hs256(json!({"exp": t - 31})), SECRET, &opts()));
    assert_eq!(e.kind(), "expired");
    assert!(e.to_string().starts_with("token expired at 20"), "{e}");

    verify(&hs256(json!({"exp": t - 20})), SECRET, &opts()).expect("inside the leeway");

    let strict = VerifyOptions {
        leeway_secs: 0,
        ..opts()
    };
    let e = refused(verify(&hs256(json!({"exp": t - 20})), SECRET, &strict));
    assert_eq!(e.kind(), "expired");
}

#[test]
fn exp_boundary_follows_rfc7519() {
    // Valid strictly before exp + leeway, expired from that second on.
    let at = |now| VerifyOptions {
        leeway_secs: 10,
        now: Some(now),
        ..opts()
    };
    let token = hs256(json!({"exp": 1_000}));
    verify(&token, SECRET, &at(1_009)).expect("one second left");
    assert_eq!(
        refused(verify(&token, SECRET, &at(1_010))).kind(),
        "expired"
    );
}

#[test]
fn nbf_and_future_iat_are_checked_with_leeway() {
    let t = now();
    let e = refused(verify(
        &hs256(json!({"exp": t + 600, "nbf": t + 120})),
        SECRET,
        &opts(),
    ));
    assert_eq!(e.kind(), "not_yet_valid");
    assert!(e.to_string().starts_with("token not valid before"), "{e}");
    verify(
        &hs256(json!({"exp": t + 600, "nbf": t + 20})),
        SECRET,
        &opts(),
    )
    .expect("leeway");

    let e = refused(verify(
        &hs256(json!({"exp": t + 600, "iat": t + 120})),
        SECRET,
        &opts(),
    ));
    assert_eq!(e.kind(), "not_yet_valid");
    assert!(e.to_string().contains("issued in the future"), "{e}");
    verify(
        &hs256(json!({"exp": t + 600, "iat": t + 20})),
        SECRET,
        &opts(),
    )
    .expect("leeway");
}

#[test]
fn exp_is_required_unless_switched_off() {
    let token = hs256(json!({"sub": "alice"}));
    let e = refused(verify(&token, SECRET, &opts()));
    assert_eq!(e.kind(), "missing_claim");
    assert!(e.to_string().contains("exp"), "{e}");

    let lenient = VerifyOptions {
        require_exp: false,
        ..opts()
    };
    verify(&token, SECRET, &lenient).expect("no exp allowed");
}

#[test]
fn required_claims_must_be_present() {
    let wants_email = VerifyOptions {
        required_claims: vec!["sub".into(), "email".into()],
        ..opts()
    };
    let e = refused(verify(&hs256(claims()), SECRET, &wants_email));
    assert_eq!(e.kind(), "missing_claim");
    assert!(e.to_string().contains("\"email\""), "{e}");
}

// ---- audience and issuer ----------------------------------------------------------

fn expecting(audience: Option<&str>, issuer: Option<&str>) -> VerifyOptions {
    VerifyOptions {
        audience: audience.map(str::to_owned),
        issuer: issuer.map(str::to_owned),
        ..opts()
    }
}

#[test]
fn audience_may_be_a_string_or_an_array() {
    let t = now() + 600;
    let api = expecting(Some("api"), None);
    verify(&hs256(json!({"exp": t, "aud": "api"})), SECRET, &api).expect("string");
    verify(
        &hs256(json!({"exp": t, "aud": ["web", "api"]})),
        SECRET,
        &api,
    )
    .expect("array");

    let e = refused(verify(
        &hs256(json!({"exp": t, "aud": ["web"]})),
        SECRET,
        &api,
    ));
    assert_eq!(e.kind(), "audience");
    assert_eq!(
        e.to_string(),
        "audience mismatch: expected \"api\", the token is for \"web\""
    );

    let e = refused(verify(&hs256(json!({"exp": t})), SECRET, &api));
    assert_eq!(e.kind(), "audience");
}

#[test]
fn a_token_for_an_audience_needs_the_audience_checked() {
    let token = hs256(json!({"exp": now() + 600, "aud": "billing"}));
    let e = refused(verify(&token, SECRET, &opts()));
    assert_eq!(e.kind(), "audience");
    assert!(e.to_string().contains("no audience was given"), "{e}");
}

#[test]
fn issuer_is_checked_when_given() {
    let t = now() + 600;
    let idp = expecting(None, Some("https://idp.example"));
    verify(
        &hs256(json!({"exp": t, "iss": "https://idp.example"})),
        SECRET,
        &idp,
    )
    .expect("same");

    let e = refused(verify(
        &hs256(json!({"exp": t, "iss": "https://evil.example"})),
        SECRET,
        &idp,
    ));
    assert_eq!(e.kind(), "issuer");
    assert!(
        e.to_string().contains("expected \"https://idp.example\""),
        "{e}"
    );

    let e = refused(verify(&hs256(json!({"exp": t})), SECRET, &idp));
    assert_eq!(e.kind(), "issuer");

    verify(&hs256(json!({"exp": t, "iss": "anyone"})), SECRET, &opts()).expect("not asked");
}

// ---- claims given to sign -------------------------------------------------------

#[test]
fn sign_takes_an_object_with_well_typed_registered_claims() {
    for (claims, says) in [
        (json!(["sub"]), "must be a JSON object, not an array"),
        (json!({"exp": "soon"}), "claim exp must be a number"),
        (json!({"aud": [1]}), "claim aud must hold only strings"),
        (json!({"iss": 42}), "claim iss must be a string"),
    ] {
        let e = sign(&claims, SECRET, "HS256", None).expect_err("refused");
        assert_eq!(e.kind(), "bad_claims", "{claims}: {e}");
        assert!(e.to_string().contains(says), "{claims}: {e}");
    }
}

// ---- what messages must never contain ---------------------------------------------

#[test]
fn messages_never_contain_the_secret_or_the_token() {
    let token = sign(&claims(), SECRET, "HS256", None).expect("signs");
    let other = "another-secret-of-plenty-of-bytes-0123456789";
    let expired = hs256(json!({"exp": 1}));
    let failures = [
        refused(verify(&token, other, &opts())),
        refused(verify(&expired, SECRET, &opts())),
        refused(verify(&token, SECRET, &expecting(Some("x"), None))),
        refused(verify(&format!("{token}x"), SECRET, &opts())),
        refused(verify(
            &token,
            &format!(r#"{{"kty":"oct","k":"{SECRET}""#),
            &opts(),
        )),
    ];
    for e in failures {
        let message = e.to_string();
        for secret in [SECRET, other, token.as_str(), expired.as_str()] {
            assert!(!message.contains(secret), "{message}");
        }
    }
}
