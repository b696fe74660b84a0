//! Sign and verify JSON Web Tokens (RFC 7519) for `sign_jwt`/`verify_jwt` and the sidecar's
//! session tokens: HS256/384/512, RS256/384/512, PS256/384/512, ES256, ES384 and EdDSA
//! (Ed25519), on jsonwebtoken's RustCrypto backend. The key, never the token header, decides
//! which algorithms are allowed. Limits: signed compact tokens only (no JWE, no `crit`);
//! keys are passed in, never fetched: `jku`, `x5u` and `jwk` headers are ignored.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use ed25519_dalek::ed25519::pkcs8::ALGORITHM_OID as ED25519_OID;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use p256::elliptic_curve::ALGORITHM_OID as EC_OID;
use pkcs8::der::asn1::AnyRef;
use pkcs8::der::{Decode, Reader, SliceReader, Tag};
use pkcs8::{
    AlgorithmIdentifierRef, AssociatedOid, DecodePrivateKey, DecodePublicKey, EncodePrivateKey,
    PrivateKeyInfoRef, SubjectPublicKeyInfoRef,
};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::traits::PublicKeyParts;
use rsa::BoxedUint;
use serde_json::{Map, Value};

/// Shortest HMAC secret accepted, in bytes (RFC 7518 3.2 asks for at least the hash size;
/// 32 bytes keeps a secret out of reach of offline guessing for every HS algorithm).
pub const MIN_SECRET_BYTES: usize = 32;

/// Smallest RSA modulus accepted, in bits (RFC 7518 3.3).
pub const MIN_RSA_BITS: u32 = 2048;

/// A shared secret written `base64url:<data>` is the decoded bytes, for binary secrets.
pub const BASE64URL_SECRET_PREFIX: &str = "base64url:";

const ALGORITHMS: [(&str, Algorithm); 12] = [
    ("HS256", Algorithm::HS256),
    ("HS384", Algorithm::HS384),
    ("HS512", Algorithm::HS512),
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("EdDSA", Algorithm::EdDSA),
];

/// Tokens are strict RFC 7515 base64url; keys found in the wild are sometimes padded.
const BASE64URL_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token could not be signed or was refused; [`JwtError::kind`] is the stable code.
///
/// Messages name what is wrong and may quote short, truncated values from the token
/// (`alg`, `kid`, `aud`, `iss`), but never a secret, a key or the token itself.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    #[error("unusable key: {0}")]
    BadKey(String),
    #[error("unsupported algorithm {0}; supported: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA")]
    UnsupportedAlgorithm(String),
    #[error("unsigned token (alg {0}) refused: tokens must be signed")]
    Unsigned(String),
    #[error("algorithm {alg} not allowed for {key} (allowed: {allowed})")]
    AlgorithmNotAllowed {
        alg: String,
        key: String,
        allowed: String,
    },
    #[error("{0}")]
    UnknownKid(String),
    #[error("bad signature: the token was altered or signed with another key")]
    BadSignature,
    #[error("token expired at {} (leeway {leeway} s)", utc(*.exp))]
    Expired { exp: i64, leeway: u64 },
    #[error("token not valid before {} (leeway {leeway} s)", utc(*.nbf))]
    NotYetValid { nbf: i64, leeway: u64 },
    #[error("token issued in the future, at {} (leeway {leeway} s)", utc(*.iat))]
    IssuedInFuture { iat: i64, leeway: u64 },
    #[error("required claim {0} is missing")]
    MissingClaim(String),
    #[error("{0}")]
    Audience(String),
    #[error("{0}")]
    Issuer(String),
}

impl JwtError {
    /// A short, stable reason code for SQL callers and audit rows.
    pub fn kind(&self) -> &'static str {
        match self {
            JwtError::Malformed(_) => "malformed",
            JwtError::InvalidClaims(_) => "bad_claims",
            JwtError::BadKey(_) => "bad_key",
            JwtError::UnsupportedAlgorithm(_) => "unsupported_alg",
            JwtError::Unsigned(_) | JwtError::AlgorithmNotAllowed { .. } => "alg_not_allowed",
            JwtError::UnknownKid(_) => "unknown_kid",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired { .. } => "expired",
            JwtError::NotYetValid { .. } | JwtError::IssuedInFuture { .. } => "not_yet_valid",
            JwtError::MissingClaim(_) => "missing_claim",
            JwtError::Audience(_) => "audience",
            JwtError::Issuer(_) => "issuer",
        }
    }
}

/// What [`verify`] checks besides the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds (default 30).
    pub leeway_secs: u64,
    /// When set, `aud` (a string or an array) must contain it. When unset, a token that
    /// carries an `aud` is refused (RFC 7519 4.1.3: a recipient not named must reject it).
    pub audience: Option<String>,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// Refuse tokens without `exp` (default true): a token without one never expires.
    pub require_exp: bool,
    /// Claims that must be present, whatever their value.
    pub required_claims: Vec<String>,
    /// Unix time to check `exp`, `nbf` and `iat` against instead of the system clock.
    pub now: Option<u64>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            leeway_secs: 30,
            audience: None,
            issuer: None,
            require_exp: true,
            required_claims: Vec::new(),
            now: None,
        }
    }
}

/// Signs `claims` (a JSON object, signed as given: nothing is added) with `algorithm`.
///
/// `key` is, for HS256/384/512, the shared secret text (its UTF-8 bytes, at least
/// [`MIN_SECRET_BYTES`]), `base64url:<data>` for a binary secret, or a JWK `{"kty":"oct",…}`;
/// for the other algorithms a PEM private key: PKCS#8 (`PRIVATE KEY`) for every type,
/// PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) too. The algorithm must fit the key.
/// A key text starting with `-----BEGIN `, `{` or `base64url:` is read as that form, never
/// as a secret. `kid`, when given, goes into the header so verifiers can pick the key from a JWKS.
pub fn sign(
    claims: &Value,
    key: &str,
    algorithm: &str,
    kid: Option<&str>,
) -> Result<String, JwtError> {
    let alg = algorithm_named(algorithm.trim(), true)?;
    let Value::Object(map) = claims else {
        return Err(JwtError::InvalidClaims(format!(
            "claims must be a JSON object, not {}",
            json_type(claims)
        )));
    };
    Registered::read(map).map_err(JwtError::InvalidClaims)?;
    let (kind, encoding_key) = signing_key(key)?;
    if !kind.algorithms().contains(&alg) {
        return Err(not_allowed(
            alg,
            kind.describe().to_owned(),
            kind.algorithms(),
        ));
    }
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &encoding_key)
        .map_err(|e| JwtError::BadKey(format!("signing with {} failed: {e}", kind.describe())))
}

/// Verifies `token` and returns its claims.
///
/// `key` is a shared secret (as for [`sign`]), a PEM public key (`PUBLIC KEY` or
/// `RSA PUBLIC KEY`) or certificate (only its key is used: dates and issuer are not
/// checked), a JWK, or a JWKS `{"keys":[…]}` from which the token's `kid` picks the key
/// (a token without `kid` needs a set with exactly one usable key). JWKs with `use` other
/// than `sig`, or `key_ops` without `verify`, are not used; a JWK's `alg` narrows what it allows.
pub fn verify(token: &str, key: &str, opts: &VerifyOptions) -> Result<Value, JwtError> {
    let token = CompactToken::parse(token)?;
    let alg = algorithm_named(&token.alg, false)?;
    let keys = verification_keys(key)?;
    let chosen = choose_key(&keys, token.kid.as_deref(), alg)?;
    let signature_ok = jsonwebtoken::crypto::verify(
        token.signature,
        token.signing_input.as_bytes(),
        &chosen.key,
        alg,
    )
    .map_err(|e| JwtError::BadKey(format!("cannot verify with {}: {e}", chosen.describe())))?;
    if !signature_ok {
        return Err(JwtError::BadSignature);
    }
    let claims: Value = serde_json::from_slice(&token.payload)
        .map_err(|e| JwtError::Malformed(format!("payload is not JSON: {e}")))?;
    let Value::Object(map) = &claims else {
        return Err(JwtError::Malformed(format!(
            "payload must be a JSON object, not {}",
            json_type(&claims)
        )));
    };
    check_claims(map, opts)?;
    Ok(claims)
}

/// The key types this module handles; each allows one fixed family of algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Secret,
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

impl KeyKind {
    fn algorithms(self) -> &'static [Algorithm] {
        match self {
            KeyKind::Secret => &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            KeyKind::Rsa => &[
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
            ],
            KeyKind::EcP256 => &[Algorithm::ES256],
            KeyKind::EcP384 => &[Algorithm::ES384],
            KeyKind::Ed25519 => &[Algorithm::EdDSA],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            KeyKind::Secret => "a shared secret",
            KeyKind::Rsa => "an RSA key",
            KeyKind::EcP256 => "an EC P-256 key",
            KeyKind::EcP384 => "an EC P-384 key",
            KeyKind::Ed25519 => "an Ed25519 key",
        }
    }
}

fn algorithm_named(name: &str, ignore_case: bool) -> Result<Algorithm, JwtError> {
    if name.eq_ignore_ascii_case("none") {
        return Err(JwtError::Unsigned(shown(name)));
    }
    ALGORITHMS
        .iter()
        .find(|(known, _)| {
            if ignore_case {
                known.eq_ignore_ascii_case(name)
            } else {
                *known == name
            }
        })
        .map(|(_, alg)| *alg)
        .ok_or_else(|| JwtError::UnsupportedAlgorithm(shown(name)))
}

fn algorithm_name(alg: Algorithm) -> &'static str {
    ALGORITHMS
        .iter()
        .find(|(_, known)| *known == alg)
        .map_or("?", |(name, _)| name)
}

fn not_allowed(alg: Algorithm, key: String, allowed: &[Algorithm]) -> JwtError {
    JwtError::AlgorithmNotAllowed {
        alg: algorithm_name(alg).to_owned(),
        key,
        allowed: allowed
            .iter()
            .map(|a| algorithm_name(*a))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The three forms a key argument takes, told apart by how the text starts.
enum KeyText<'a> {
    Pem(&'a str),
    Json(&'a str),
    Secret(Vec<u8>),
}

impl<'a> KeyText<'a> {
    fn classify(key: &'a str) -> Result<Self, JwtError> {
        let trimmed = key.trim();
        if trimmed.is_empty() {
            return Err(JwtError::BadKey("the key is empty".into()));
        }
        if trimmed.starts_with("-----BEGIN ") {
            return Ok(KeyText::Pem(trimmed));
        }
        if trimmed.starts_with('{') {
            return Ok(KeyText::Json(trimmed));
        }
        let bytes = match key.strip_prefix(BASE64URL_SECRET_PREFIX) {
            Some(encoded) => BASE64URL_ANY_PADDING.decode(encoded.trim()).map_err(|e| {
                JwtError::BadKey(format!(
                    "the {BASE64URL_SECRET_PREFIX} secret is not base64url: {e}"
                ))
            })?,
            None => key.as_bytes().to_vec(),
        };
        check_secret_length(&bytes).map_err(JwtError::BadKey)?;
        Ok(KeyText::Secret(bytes))
    }
}

fn check_secret_length(secret: &[u8]) -> Result<(), String> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(format!(
            "the shared secret is {} bytes; at least {MIN_SECRET_BYTES} are required",
            secret.len()
        ));
    }
    Ok(())
}

fn signing_key(key: &str) -> Result<(KeyKind, EncodingKey), JwtError> {
    let bad_key = |e: jsonwebtoken::errors::Error| JwtError::BadKey(e.to_string());
    match KeyText::classify(key)? {
        KeyText::Secret(secret) => Ok((
            KeyKind::Secret,
            EncodingKey::from_secret(&secret).map_err(bad_key)?,
        )),
        KeyText::Json(text) => {
            let jwk: Value = serde_json::from_str(text)
                .map_err(|e| JwtError::BadKey(format!("the key is not valid JSON: {e}")))?;
            let members = match &jwk {
                Value::Object(members) if members.get("kty") == Some(&Value::from("oct")) => {
                    members
                }
                _ => {
                    return Err(JwtError::BadKey(
                        "only an oct JWK (a shared secret) can sign; pass other keys as PEM".into(),
                    ))
                }
            };
            let secret = jwk_secret(members).map_err(JwtError::BadKey)?;
            Ok((
                KeyKind::Secret,
                EncodingKey::from_secret(&secret).map_err(bad_key)?,
            ))
        }
        KeyText::Pem(text) => {
            let (label, der) = pem_block(text)?;
            private_key(&label, &der)
        }
    }
}

fn private_key(label: &str, der: &[u8]) -> Result<(KeyKind, EncodingKey), JwtError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        JwtError::BadKey(format!("invalid {what} private key: {e}"))
    };
    match label {
        "PRIVATE KEY" => {
            let info = PrivateKeyInfoRef::from_der(der).map_err(|e| invalid("PKCS#8", &e))?;
            match asn1_kind(&info.algorithm)? {
                Asn1Kind::Rsa => rsa_signing_key(
                    rsa::PrivateKey::from_pkcs8_der(der).map_err(|e| invalid("RSA", &e))?,
                ),
                Asn1Kind::EcP256 => {
                    let key = p256::SecretKey::from_pkcs8_der(der)
                        .map_err(|e| invalid("EC P-256", &e))?;
                    ec_signing_key(KeyKind::EcP256, key.to_pkcs8_der())
                }
                Asn1Kind::EcP384 => {
                    let key = p384::SecretKey::from_pkcs8_der(der)
                        .map_err(|e| invalid("EC P-384", &e))?;
                    ec_signing_key(KeyKind::EcP384, key.to_pkcs8_der())
                }
                Asn1Kind::Ed25519 => {
                    ed25519_dalek::SigningKey::from_pkcs8_der(der)
                        .map_err(|e| invalid("Ed25519", &e))?;
                    Ok((KeyKind::Ed25519, EncodingKey::from_ed_der(der)))
                }
            }
        }
        "RSA PRIVATE KEY" => {
            rsa_signing_key(rsa::PrivateKey::from_pkcs1_der(der).map_err(|e| invalid("RSA", &e))?)
        }
        "EC PRIVATE KEY" => match p256::SecretKey::from_sec1_der(der) {
            Ok(key) => ec_signing_key(KeyKind::EcP256, key.to_pkcs8_der()),
            Err(_) => {
                let key = p384::SecretKey::from_sec1_der(der)
                    .map_err(|e| invalid("EC (P-256 or P-384)", &e))?;
                ec_signing_key(KeyKind::EcP384, key.to_pkcs8_der())
            }
        },
        "ENCRYPTED PRIVATE KEY" => Err(encrypted_key()),
        other => Err(JwtError::BadKey(format!(
            "signing needs a private key, got a PEM {}",
            shown(other)
        ))),
    }
}

fn encrypted_key() -> JwtError {
    JwtError::BadKey(
        "encrypted private keys are not supported; decrypt it first (openssl pkey -in key.pem)"
            .into(),
    )
}

/// jsonwebtoken signs RSA with PKCS#1 DER and EC with PKCS#8 DER.
fn rsa_signing_key(key: rsa::PrivateKey) -> Result<(KeyKind, EncodingKey), JwtError> {
    check_rsa_bits(key.n().bit_width())?;
    let der = key
        .to_pkcs1_der()
        .map_err(|e| JwtError::BadKey(format!("cannot encode the RSA key: {e}")))?;
    Ok((KeyKind::Rsa, EncodingKey::from_rsa_der(der.as_bytes())))
}

fn ec_signing_key(
    kind: KeyKind,
    pkcs8: pkcs8::Result<pkcs8::SecretDocument>,
) -> Result<(KeyKind, EncodingKey), JwtError> {
    let der = pkcs8.map_err(|e| JwtError::BadKey(format!("cannot encode the EC key: {e}")))?;
    Ok((kind, EncodingKey::from_ec_der(der.as_bytes())))
}

fn check_rsa_bits(bits: u32) -> Result<(), JwtError> {
    if bits < MIN_RSA_BITS {
        return Err(JwtError::BadKey(format!(
            "the RSA key is {bits} bits; at least {MIN_RSA_BITS} are required"
        )));
    }
    Ok(())
}

/// The key types a PEM (ASN.1) key may have.
#[derive(Debug, Clone, Copy)]
enum Asn1Kind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

fn asn1_kind(algorithm: &AlgorithmIdentifierRef<'_>) -> Result<Asn1Kind, JwtError> {
    if algorithm.oid == rsa::pkcs1::ALGORITHM_OID {
        Ok(Asn1Kind::Rsa)
    } else if algorithm.oid == ED25519_OID {
        Ok(Asn1Kind::Ed25519)
    } else if algorithm.oid == EC_OID {
        match algorithm.parameters_oid() {
            Ok(curve) if curve == p256::NistP256::OID => Ok(Asn1Kind::EcP256),
            Ok(curve) if curve == p384::NistP384::OID => Ok(Asn1Kind::EcP384),
            Ok(curve) => Err(JwtError::BadKey(format!(
                "EC curve {curve} is not supported (P-256 and P-384 are)"
            ))),
            Err(_) => Err(JwtError::BadKey("the EC key names no curve".into())),
        }
    } else {
        Err(JwtError::BadKey(format!(
            "key algorithm {} is not supported (RSA, EC P-256, EC P-384 and Ed25519 are)",
            algorithm.oid
        )))
    }
}

/// The first PEM block of `text` other than `EC PARAMETERS` (which `openssl ecparam`
/// writes before the key). Line breaks, CRLF and indentation are tolerated.
fn pem_block(text: &str) -> Result<(String, Vec<u8>), JwtError> {
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + "-----BEGIN ".len()..];
        let label_end = after
            .find("-----")
            .ok_or_else(|| JwtError::BadKey("PEM: unterminated BEGIN line".into()))?;
        let label = &after[..label_end];
        let body_and_rest = &after[label_end + "-----".len()..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_and_rest
            .find(&end_marker)
            .ok_or_else(|| JwtError::BadKey(format!("PEM: no END line for {}", shown(label))))?;
        let body = &body_and_rest[..body_end];
        rest = &body_and_rest[body_end + end_marker.len()..];
        if label == "EC PARAMETERS" {
            continue;
        }
        if body.contains("Proc-Type:") {
            return Err(encrypted_key());
        }
        let base64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = STANDARD.decode(base64).map_err(|e| {
            JwtError::BadKey(format!("PEM {} is not valid base64: {e}", shown(label)))
        })?;
        return Ok((label.to_owned(), der));
    }
    Err(JwtError::BadKey("PEM: no key block found".into()))
}

/// A key that can check signatures, and what it may check.
struct VerificationKey {
    kind: KeyKind,
    /// A JWK's `alg`: when present, the only algorithm the key allows.
    only: Option<Algorithm>,
    kid: Option<String>,
    key: DecodingKey,
}

impl VerificationKey {
    fn new(kind: KeyKind, key: DecodingKey) -> Self {
        VerificationKey {
            kind,
            only: None,
            kid: None,
            key,
        }
    }

    fn describe(&self) -> String {
        match (&self.kid, self.only) {
            (Some(kid), Some(alg)) => format!(
                "{} (kid {}, alg {})",
                self.kind.describe(),
                shown(kid),
                algorithm_name(alg)
            ),
            (Some(kid), None) => format!("{} (kid {})", self.kind.describe(), shown(kid)),
            (None, Some(alg)) => format!("{} (alg {})", self.kind.describe(), algorithm_name(alg)),
            (None, None) => self.kind.describe().to_owned(),
        }
    }

    fn allowed(&self) -> Vec<Algorithm> {
        match self.only {
            Some(alg) => vec![alg],
            None => self.kind.algorithms().to_vec(),
        }
    }
}

/// One key of the caller's key set: usable, or the reason it is not.
struct KeyEntry {
    kid: Option<String>,
    parsed: Result<VerificationKey, String>,
}

fn verification_keys(key: &str) -> Result<Vec<KeyEntry>, JwtError> {
    let single = |key: VerificationKey| {
        vec![KeyEntry {
            kid: None,
            parsed: Ok(key),
        }]
    };
    match KeyText::classify(key)? {
        KeyText::Secret(secret) => Ok(single(VerificationKey::new(
            KeyKind::Secret,
            DecodingKey::from_secret(&secret).map_err(|e| JwtError::BadKey(e.to_string()))?,
        ))),
        KeyText::Pem(text) => {
            let (label, der) = pem_block(text)?;
            Ok(single(public_pem(&label, &der)?))
        }
        KeyText::Json(text) => jwk_entries(text),
    }
}

fn public_pem(label: &str, der: &[u8]) -> Result<VerificationKey, JwtError> {
    match label {
        "PUBLIC KEY" => public_spki(der),
        "RSA PUBLIC KEY" => Ok(VerificationKey::new(
            KeyKind::Rsa,
            rsa_decoding_key(
                &rsa::PublicKey::from_pkcs1_der(der)
                    .map_err(|e| JwtError::BadKey(format!("invalid RSA public key: {e}")))?,
            )?,
        )),
        "CERTIFICATE" => public_spki(certificate_spki(der).map_err(|e| {
            JwtError::BadKey(format!("cannot read the certificate's public key: {e}"))
        })?),
        "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
            Err(JwtError::BadKey(
                "verification takes a public key or certificate, not a private key".into(),
            ))
        }
        other => Err(JwtError::BadKey(format!(
            "unsupported PEM block {}; expected PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE",
            shown(other)
        ))),
    }
}

fn public_spki(der: &[u8]) -> Result<VerificationKey, JwtError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        JwtError::BadKey(format!("invalid {what} public key: {e}"))
    };
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|e| invalid("SPKI", &e))?;
    let (kind, key) = match asn1_kind(&spki.algorithm)? {
        Asn1Kind::Rsa => (
            KeyKind::Rsa,
            rsa_decoding_key(
                &rsa::PublicKey::from_public_key_der(der).map_err(|e| invalid("RSA", &e))?,
            )?,
        ),
        Asn1Kind::EcP256 => {
            let key =
                p256::PublicKey::from_public_key_der(der).map_err(|e| invalid("EC P-256", &e))?;
            (
                KeyKind::EcP256,
                DecodingKey::from_ec_der(&key.to_sec1_bytes()),
            )
        }
        Asn1Kind::EcP384 => {
            let key =
                p384::PublicKey::from_public_key_der(der).map_err(|e| invalid("EC P-384", &e))?;
            (
                KeyKind::EcP384,
                DecodingKey::from_ec_der(&key.to_sec1_bytes()),
            )
        }
        Asn1Kind::Ed25519 => {
            let key = ed25519_dalek::VerifyingKey::from_public_key_der(der)
                .map_err(|e| invalid("Ed25519", &e))?;
            (KeyKind::Ed25519, DecodingKey::from_ed_der(key.as_bytes()))
        }
    };
    Ok(VerificationKey::new(kind, key))
}

fn rsa_decoding_key(key: &rsa::PublicKey) -> Result<DecodingKey, JwtError> {
    check_rsa_bits(key.n().bit_width())?;
    Ok(DecodingKey::from_rsa_raw_components(
        &key.n_bytes(),
        &key.e_bytes(),
    ))
}

/// The raw SubjectPublicKeyInfo of an X.509 certificate: the seventh field of
/// `tbsCertificate` (sixth when the optional `[0] version` is absent).
fn certificate_spki(der: &[u8]) -> Result<&[u8], pkcs8::der::Error> {
    let certificate = AnyRef::from_der(der)?;
    let mut fields = SliceReader::new(certificate.value())?;
    let tbs: AnyRef<'_> = fields.decode()?;
    let mut tbs = SliceReader::new(tbs.value())?;
    if matches!(Tag::peek(&tbs)?, Tag::ContextSpecific { number, .. } if number.value() == 0) {
        tbs.tlv_bytes()?;
    }
    // serialNumber, signature, issuer, validity, subject
    for _ in 0..5 {
        tbs.tlv_bytes()?;
    }
    tbs.tlv_bytes()
}

fn jwk_entries(text: &str) -> Result<Vec<KeyEntry>, JwtError> {
    let document: Value = serde_json::from_str(text)
        .map_err(|e| JwtError::BadKey(format!("the key is not valid JSON: {e}")))?;
    let jwks: Vec<&Value> = match document.get("keys") {
        Some(Value::Array(keys)) => keys.iter().collect(),
        Some(_) => {
            return Err(JwtError::BadKey(
                "the JWKS \"keys\" must be an array".into(),
            ))
        }
        None => vec![&document],
    };
    if jwks.is_empty() {
        return Err(JwtError::BadKey("the JWKS holds no keys".into()));
    }
    Ok(jwks
        .into_iter()
        .map(|jwk| {
            let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_owned);
            let parsed = parse_jwk(jwk).map(|mut key| {
                key.kid.clone_from(&kid);
                key
            });
            KeyEntry { kid, parsed }
        })
        .collect())
}

fn parse_jwk(jwk: &Value) -> Result<VerificationKey, String> {
    let Value::Object(members) = jwk else {
        return Err(format!(
            "a JWK must be a JSON object, not {}",
            json_type(jwk)
        ));
    };
    if let Some(usage) = members.get("use") {
        if usage.as_str() != Some("sig") {
            return Err(format!("its use is {usage}, not \"sig\""));
        }
    }
    if let Some(ops) = members.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !verifies {
            return Err("its key_ops do not include \"verify\"".into());
        }
    }
    let only = match members.get("alg") {
        None => None,
        Some(Value::String(name)) => Some(
            algorithm_named(name, false)
                .map_err(|_| format!("its alg {} is not a signature algorithm", shown(name)))?,
        ),
        Some(_) => return Err("its alg is not a string".into()),
    };
    let (kind, key) = match jwk_str(members, "kty")? {
        "oct" => (
            KeyKind::Secret,
            DecodingKey::from_secret(&jwk_secret(members)?).map_err(|e| e.to_string())?,
        ),
        "RSA" => {
            let n = jwk_bytes(members, "n")?;
            let e = jwk_bytes(members, "e")?;
            let key = rsa::PublicKey::new(
                BoxedUint::from_be_slice_vartime(&n),
                BoxedUint::from_be_slice_vartime(&e),
            )
            .map_err(|e| format!("invalid RSA key: {e}"))?;
            (
                KeyKind::Rsa,
                rsa_decoding_key(&key).map_err(|e| e.to_string())?,
            )
        }
        "EC" => {
            let (kind, size) = match jwk_str(members, "crv")? {
                "P-256" => (KeyKind::EcP256, 32),
                "P-384" => (KeyKind::EcP384, 48),
                other => {
                    return Err(format!(
                        "EC curve {} is not supported (P-256 and P-384 are)",
                        shown(other)
                    ))
                }
            };
            let x = jwk_bytes(members, "x")?;
            let y = jwk_bytes(members, "y")?;
            if x.len() != size || y.len() != size {
                return Err(format!("EC x and y must be {size} bytes each"));
            }
            let point = [&[0x04][..], &x, &y].concat();
            let on_curve = match kind {
                KeyKind::EcP256 => p256::PublicKey::from_sec1_bytes(&point).is_ok(),
                _ => p384::PublicKey::from_sec1_bytes(&point).is_ok(),
            };
            if !on_curve {
                return Err("EC x and y are not a point on the curve".into());
            }
            (kind, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            let curve = jwk_str(members, "crv")?;
            if curve != "Ed25519" {
                return Err(format!(
                    "OKP curve {} is not supported (Ed25519 is)",
                    shown(curve)
                ));
            }
            let x: [u8; 32] = jwk_bytes(members, "x")?
                .try_into()
                .map_err(|_| "Ed25519 x must be 32 bytes".to_owned())?;
            ed25519_dalek::VerifyingKey::from_bytes(&x)
                .map_err(|_| "Ed25519 x is not a valid public key".to_owned())?;
            (KeyKind::Ed25519, DecodingKey::from_ed_der(&x))
        }
        other => {
            return Err(format!(
                "kty {} is not supported (oct, RSA, EC and OKP are)",
                shown(other)
            ))
        }
    };
    restrict(VerificationKey::new(kind, key), only)
}

fn restrict(mut key: VerificationKey, only: Option<Algorithm>) -> Result<VerificationKey, String> {
    if let Some(alg) = only {
        if !key.kind.algorithms().contains(&alg) {
            return Err(format!(
                "its alg {} does not fit {}",
                algorithm_name(alg),
                key.kind.describe()
            ));
        }
    }
    key.only = only;
    Ok(key)
}

fn jwk_secret(members: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let secret = jwk_bytes(members, "k")?;
    check_secret_length(&secret)?;
    Ok(secret)
}

fn jwk_str<'a>(members: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    members
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("member \"{name}\" is missing or not a string"))
}

fn jwk_bytes(members: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    BASE64URL_ANY_PADDING
        .decode(jwk_str(members, name)?)
        .map_err(|e| format!("member \"{name}\" is not base64url: {e}"))
}

/// Picks the key for a token: by `kid` in a key set; the only key when the set holds one
/// key without a `kid` (a PEM key or a secret is such a set); the only usable key when
/// the token has no `kid`.
fn choose_key<'k>(
    keys: &'k [KeyEntry],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'k VerificationKey, JwtError> {
    let anonymous_single = keys.len() == 1 && keys.iter().all(|k| k.kid.is_none());
    let matching: Vec<&KeyEntry> = match kid {
        Some(kid) if !anonymous_single => {
            let matching: Vec<&KeyEntry> = keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect();
            if matching.is_empty() {
                return Err(JwtError::UnknownKid(format!(
                    "no key with kid {} in the key set (it has {})",
                    shown(kid),
                    kid_list(keys)
                )));
            }
            matching
        }
        _ => keys.iter().collect(),
    };
    let usable: Vec<&VerificationKey> = matching
        .iter()
        .filter_map(|k| k.parsed.as_ref().ok())
        .collect();
    let Some(first) = usable.first() else {
        let reasons = matching
            .iter()
            .filter_map(|k| match &k.parsed {
                Err(reason) => Some(match &k.kid {
                    Some(kid) => format!("key {}: {reason}", shown(kid)),
                    None => reason.clone(),
                }),
                Ok(_) => None,
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Err(JwtError::BadKey(reasons));
    };
    if kid.is_none() && usable.len() > 1 {
        return Err(JwtError::UnknownKid(format!(
            "the token has no kid and the key set holds {} usable keys",
            usable.len()
        )));
    }
    usable
        .iter()
        .find(|k| k.allowed().contains(&alg))
        .copied()
        .ok_or_else(|| not_allowed(alg, first.describe(), &first.allowed()))
}

fn kid_list(keys: &[KeyEntry]) -> String {
    let kids: Vec<String> = keys
        .iter()
        .filter_map(|k| k.kid.as_deref())
        .take(10)
        .map(shown)
        .collect();
    if kids.is_empty() {
        "no kids".into()
    } else {
        format!("kids {}", kids.join(", "))
    }
}

/// A compact JWS split into its parts; nothing in it is trusted yet.
struct CompactToken<'t> {
    alg: String,
    kid: Option<String>,
    signing_input: &'t str,
    payload: Vec<u8>,
    signature: &'t str,
}

impl<'t> CompactToken<'t> {
    fn parse(token: &'t str) -> Result<Self, JwtError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(JwtError::Malformed("the token is empty".into()));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts[..] else {
            return Err(JwtError::Malformed(if parts.len() == 5 {
                "this is an encrypted token (JWE, 5 parts); only signed tokens (3 parts) are supported".into()
            } else {
                format!(
                    "a token has 3 parts separated by '.', this one has {}",
                    parts.len()
                )
            }));
        };
        let header_json: Value = serde_json::from_slice(&base64url_part(header, "header")?)
            .map_err(|e| JwtError::Malformed(format!("header is not JSON: {e}")))?;
        let Value::Object(header_json) = header_json else {
            return Err(JwtError::Malformed("header is not a JSON object".into()));
        };
        let alg = match header_json.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            Some(_) => return Err(JwtError::Malformed("header alg is not a string".into())),
            None => return Err(JwtError::Malformed("header has no alg".into())),
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(JwtError::Unsigned(shown(&alg)));
        }
        if let Some(crit) = header_json.get("crit") {
            return Err(JwtError::Malformed(format!(
                "header requires critical extensions {}; none are supported",
                shown(&crit.to_string())
            )));
        }
        let kid = match header_json.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(JwtError::Malformed("header kid is not a string".into())),
        };
        let payload_bytes = base64url_part(payload, "payload")?;
        if base64url_part(signature, "signature")?.is_empty() {
            return Err(JwtError::Malformed("the signature is empty".into()));
        }
        Ok(CompactToken {
            alg,
            kid,
            signing_input: &token[..header.len() + 1 + payload.len()],
            payload: payload_bytes,
            signature,
        })
    }
}

fn base64url_part(part: &str, name: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| JwtError::Malformed(format!("{name} is not unpadded base64url: {e}")))
}

/// The registered claims (RFC 7519 4.1) with the types they must have.
struct Registered<'c> {
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    iss: Option<&'c str>,
    aud: Vec<&'c str>,
}

impl<'c> Registered<'c> {
    fn read(claims: &'c Map<String, Value>) -> Result<Self, String> {
        let date = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(format!(
                "claim {name} must be a number of seconds since 1970, not {}",
                json_type(other)
            )),
        };
        let string = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(format!(
                "claim {name} must be a string, not {}",
                json_type(other)
            )),
        };
        string("sub")?;
        string("jti")?;
        let aud = match claims.get("aud") {
            None => Vec::new(),
            Some(Value::String(aud)) => vec![aud.as_str()],
            Some(Value::Array(auds)) => auds
                .iter()
                .map(|aud| aud.as_str().ok_or("claim aud must hold only strings"))
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(format!(
                    "claim aud must be a string or an array of strings, not {}",
                    json_type(other)
                ))
            }
        };
        Ok(Registered {
            exp: date("exp")?,
            nbf: date("nbf")?,
            iat: date("iat")?,
            iss: string("iss")?,
            aud,
        })
    }
}

fn check_claims(claims: &Map<String, Value>, opts: &VerifyOptions) -> Result<(), JwtError> {
    let registered = Registered::read(claims).map_err(JwtError::Malformed)?;
    let now = opts.now.unwrap_or_else(system_now) as f64;
    let leeway = opts.leeway_secs;
    let slack = leeway as f64;
    match registered.exp {
        Some(exp) if now >= exp + slack => {
            return Err(JwtError::Expired {
                exp: exp.floor() as i64,
                leeway,
            })
        }
        None if opts.require_exp => return Err(JwtError::MissingClaim("exp".into())),
        _ => {}
    }
    if let Some(nbf) = registered.nbf.filter(|nbf| now + slack < *nbf) {
        return Err(JwtError::NotYetValid {
            nbf: nbf.floor() as i64,
            leeway,
        });
    }
    if let Some(iat) = registered.iat.filter(|iat| *iat > now + slack) {
        return Err(JwtError::IssuedInFuture {
            iat: iat.floor() as i64,
            leeway,
        });
    }
    if let Some(missing) = opts
        .required_claims
        .iter()
        .find(|name| !claims.contains_key(name.as_str()))
    {
        return Err(JwtError::MissingClaim(shown(missing)));
    }
    let audiences = || {
        registered
            .aud
            .iter()
            .take(10)
            .map(|a| shown(a))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &opts.audience {
        Some(expected) if !registered.aud.contains(&expected.as_str()) => {
            return Err(JwtError::Audience(if registered.aud.is_empty() {
                format!(
                    "audience mismatch: expected {}, the token has no aud",
                    shown(expected)
                )
            } else {
                format!(
                    "audience mismatch: expected {}, the token is for {}",
                    shown(expected),
                    audiences()
                )
            }));
        }
        None if !registered.aud.is_empty() => {
            return Err(JwtError::Audience(format!(
                "the token is for audience {} but no audience was given to check it against",
                audiences()
            )));
        }
        _ => {}
    }
    if let Some(expected) = &opts.issuer {
        if registered.iss != Some(expected.as_str()) {
            return Err(JwtError::Issuer(match registered.iss {
                Some(iss) => format!(
                    "issuer mismatch: expected {}, the token is from {}",
                    shown(expected),
                    shown(iss)
                ),
                None => format!(
                    "issuer mismatch: expected {}, the token has no iss",
                    shown(expected)
                ),
            }));
        }
    }
    Ok(())
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A value from the token or the caller, quoted, escaped and cut to keep messages short.
fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 64;
    if value.chars().count() <= MAX_CHARS {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(MAX_CHARS).collect();
        format!("{cut:?}…")
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Unix time as RFC 3339 UTC, e.g. `2011-03-22T18:43:00Z` (civil-from-days, H. Hinnant).
fn utc(secs: i64) -> String {
    if !(-62_135_596_800..=253_402_300_799).contains(&secs) {
        return format!("{secs} (Unix time)");
    }
    let days = secs.div_euclid(86_400);
    let time = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3_600,
        time % 3_600 / 60,
        time % 60
    )
}
