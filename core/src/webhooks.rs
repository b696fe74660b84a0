//! Webhook signature schemes, checked over the raw body bytes: Standard
//! Webhooks (`v1` HMAC and `v1a` ed25519), GitHub, Stripe, Slack, a generic
//! HMAC-SHA256 header, HTTP Basic, and the parts of `api-key` that need no
//! database. Comparisons are constant-time (`Mac::verify_slice`, `subtle`).
//! Timestamped schemes refuse deliveries outside a tolerance window.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::str::FromStr;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Default width of the window around "now" accepted for signed timestamps.
pub const DEFAULT_TOLERANCE_SECONDS: i64 = 300;

/// Headers that never reach storage: credentials of every scheme.
const ALWAYS_SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "set-cookie",
];

/// How a webhook's deliveries prove where they come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// Stripe: `Stripe-Signature: t=<ts>,v1=<hex>[,v1=…]` over `t.body`.
    Stripe,
    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:<ts>:body`.
    Slack,
    /// HMAC-SHA256 of the body in a configurable header, hex or base64.
    HmacSha256 { header: String, encoding: Encoding },
    /// An API key with scope `webhooks:{name}`, checked by the database.
    ApiKey,
    /// HTTP Basic with `user:password` as the secret.
    Basic,
    /// No check at all (use `allowed_ips`).
    None,
}

/// How a generic HMAC header spells the digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

impl FromStr for Encoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hex" => Ok(Encoding::Hex),
            "base64" => Ok(Encoding::Base64),
            other => Err(format!(
                "unknown signature encoding {other:?}; expected hex or base64"
            )),
        }
    }
}

impl Scheme {
    /// The scheme named `name` as stored in `integration.webhooks.signature`;
    /// `header` and `encoding` apply to `hmac-sha256` only.
    pub fn parse(name: &str, header: Option<&str>, encoding: Option<&str>) -> Result<Self, String> {
        Ok(match name {
            "standard" => Scheme::Standard,
            "github" => Scheme::Github,
            "stripe" => Scheme::Stripe,
            "slack" => Scheme::Slack,
            "hmac-sha256" => Scheme::HmacSha256 {
                header: header.unwrap_or("x-signature").to_ascii_lowercase(),
                encoding: encoding.unwrap_or("hex").parse()?,
            },
            "api-key" => Scheme::ApiKey,
            "basic" => Scheme::Basic,
            "none" => Scheme::None,
            other => return Err(format!("unknown signature scheme {other:?}")),
        })
    }

    /// Where the delivery id comes from when the webhook does not say.
    pub fn default_delivery_id(&self) -> Option<DeliveryId> {
        match self {
            Scheme::Standard => Some(DeliveryId::Header("webhook-id".into())),
            Scheme::Github => Some(DeliveryId::Header("x-github-delivery".into())),
            Scheme::Stripe => Some(DeliveryId::JsonPointer("/id".into())),
            Scheme::Slack => Some(DeliveryId::JsonPointer("/event_id".into())),
            _ => None,
        }
    }

    /// Lower-case names of the headers that carry credentials for this
    /// scheme; they are removed before the headers are stored.
    pub fn is_secret_header(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if ALWAYS_SECRET_HEADERS.contains(&name.as_str()) {
            return true;
        }
        match self {
            Scheme::Standard => name == "webhook-signature",
            Scheme::Github => name == "x-hub-signature-256" || name == "x-hub-signature",
            Scheme::Stripe => name == "stripe-signature",
            Scheme::Slack => name == "x-slack-signature",
            Scheme::HmacSha256 { header, .. } => name == *header,
            Scheme::ApiKey | Scheme::Basic | Scheme::None => false,
        }
    }
}

/// Where a delivery's idempotency key is read: a header or a JSON pointer
/// into the payload (a configured value starting with `/`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeliveryId {
    Header(String),
    JsonPointer(String),
}

impl DeliveryId {
    /// `/a/b` is a JSON pointer, anything else a header name.
    pub fn parse(spec: &str) -> DeliveryId {
        if spec.starts_with('/') {
            DeliveryId::JsonPointer(spec.to_owned())
        } else {
            DeliveryId::Header(spec.to_ascii_lowercase())
        }
    }

    /// The id of this delivery, if present, exactly as sent: a header's
    /// value (HTTP already strips the spaces around it), a JSON string
    /// untrimmed, or a JSON number as its JSON text (so `42` and `"42"` are
    /// one id, and `42.0` another). An id that cannot be kept exactly is
    /// refused rather than dropped, since a dropped id silently turns off
    /// deduplication: empty, longer than [`MAX_DELIVERY_ID_BYTES`], or a
    /// header that is not visible ASCII.
    pub fn extract(
        &self,
        headers: &dyn Headers,
        payload: Option<&serde_json::Value>,
    ) -> Result<Option<String>, DeliveryIdError> {
        let id = match self {
            DeliveryId::Header(name) => match headers.get(name) {
                Some(value) => value.to_owned(),
                None if headers.present(name) => {
                    return Err(DeliveryIdError::NotAscii(name.clone()))
                }
                None => return Ok(None),
            },
            DeliveryId::JsonPointer(pointer) => match payload.and_then(|p| p.pointer(pointer)) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => return Ok(None),
            },
        };
        if id.is_empty() {
            return Err(DeliveryIdError::Empty);
        }
        if id.len() > MAX_DELIVERY_ID_BYTES {
            return Err(DeliveryIdError::TooLong(id.len()));
        }
        Ok(Some(id))
    }
}

/// Longest delivery id kept, in bytes.
pub const MAX_DELIVERY_ID_BYTES: usize = 500;

/// Why a delivery's id cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryIdError {
    #[error("the delivery id is empty")]
    Empty,
    #[error("the delivery id has {0} bytes; at most {MAX_DELIVERY_ID_BYTES} are accepted")]
    TooLong(usize),
    #[error("the delivery id header {0} must be visible ASCII")]
    NotAscii(String),
}

/// Case-insensitive read access to request headers.
pub trait Headers {
    /// The first value of header `name` (given in lower case), if it is text.
    fn get(&self, name: &str) -> Option<&str>;

    /// Whether header `name` is present, text or not.
    fn present(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

impl Headers for &[(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// Why a delivery was refused. Messages name the header and what is wrong,
/// never a secret or an expected signature.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed {header}: {reason}")]
    Malformed {
        header: &'static str,
        reason: &'static str,
    },
    #[error("timestamp {timestamp} is more than {tolerance} s away from the server time {now}")]
    Stale {
        timestamp: i64,
        now: i64,
        tolerance: i64,
    },
    #[error("no signature matches any of the webhook's secrets")]
    Mismatch,
    #[error("the webhook has no usable secret; set one with integration.rotate_webhook_secret")]
    NoSecret,
}

impl SignatureError {
    /// A short stable label for metrics and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::MissingHeader(_) => "missing_signature",
            SignatureError::Malformed { .. } => "malformed_signature",
            SignatureError::Stale { .. } => "stale_timestamp",
            SignatureError::Mismatch => "bad_signature",
            SignatureError::NoSecret => "no_secret",
        }
    }
}

/// The check of one delivery: the webhook's current secrets (newest first,
/// old ones during a rotation), the clock and the tolerance.
pub struct Check<'a> {
    pub secrets: &'a [String],
    pub now: i64,
    pub tolerance: i64,
}

impl fmt::Debug for Check<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("secrets", &self.secrets.len())
            .field("now", &self.now)
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

impl Check<'_> {
    /// Verifies `body` under `scheme`. `ApiKey` only checks that a key is
    /// present (see [`api_key`]); the database decides whether it is valid.
    pub fn verify(
        &self,
        scheme: &Scheme,
        headers: &dyn Headers,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        match scheme {
            Scheme::Standard => self.standard(headers, body),
            Scheme::Github => self.github(headers, body),
            Scheme::Stripe => self.stripe(headers, body),
            Scheme::Slack => self.slack(headers, body),
            Scheme::HmacSha256 { header, encoding } => {
                self.generic_hmac(headers, body, header, *encoding)
            }
            Scheme::ApiKey => api_key(headers)
                .map(|_| ())
                .ok_or(SignatureError::MissingHeader("authorization")),
            Scheme::Basic => self.basic(headers),
            Scheme::None => Ok(()),
        }
    }

    fn fresh(&self, header: &'static str, value: &str) -> Result<(), SignatureError> {
        let timestamp: i64 = value
            .trim()
            .parse()
            .map_err(|_| SignatureError::Malformed {
                header,
                reason: "not a Unix timestamp in seconds",
            })?;
        if timestamp.abs_diff(self.now) > self.tolerance.unsigned_abs() {
            return Err(SignatureError::Stale {
                timestamp,
                now: self.now,
                tolerance: self.tolerance,
            });
        }
        Ok(())
    }

    /// True when some secret's HMAC over the concatenated `parts` equals one
    /// of `candidates` (already decoded).
    fn any_hmac(&self, keys: &[Vec<u8>], parts: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
        keys.iter().any(|key| {
            let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("any key length");
            for part in parts {
                mac.update(part);
            }
            let digest = mac.finalize().into_bytes();
            candidates
                .iter()
                .any(|c| bool::from(c.as_slice().ct_eq(digest.as_slice())))
        })
    }

    /// [`Self::any_hmac`] as the verdict of a scheme.
    fn require_hmac(
        &self,
        keys: &[Vec<u8>],
        parts: &[&[u8]],
        candidates: &[Vec<u8>],
    ) -> Result<(), SignatureError> {
        if self.any_hmac(keys, parts, candidates) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    fn utf8_keys(&self) -> Result<Vec<Vec<u8>>, SignatureError> {
        let keys: Vec<Vec<u8>> = self
            .secrets
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.as_bytes().to_vec())
            .collect();
        if keys.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        Ok(keys)
    }

    fn standard(&self, headers: &dyn Headers, body: &[u8]) -> Result<(), SignatureError> {
        let id = headers
            .get("webhook-id")
            .ok_or(SignatureError::MissingHeader("webhook-id"))?;
        let timestamp = headers
            .get("webhook-timestamp")
            .ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
        let signatures = headers
            .get("webhook-signature")
            .ok_or(SignatureError::MissingHeader("webhook-signature"))?;
        self.fresh("webhook-timestamp", timestamp)?;
        let mut hmac_keys = Vec::new();
        let mut public_keys = Vec::new();
        for secret in self.secrets {
            if let Some(public) = secret.strip_prefix("whpk_") {
                let key = B64
                    .decode(public)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .and_then(|b| VerifyingKey::from_bytes(&b).ok());
                public_keys.extend(key);
            } else {
                let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
                hmac_keys.extend(B64.decode(encoded).ok().filter(|k| !k.is_empty()));
            }
        }
        if hmac_keys.is_empty() && public_keys.is_empty() {
            return Err(SignatureError::NoSecret);
        }
        let mut v1 = Vec::new();
        let mut v1a = Vec::new();
        for entry in signatures.split_ascii_whitespace() {
            let Some((version, value)) = entry.split_once(',') else {
                continue;
            };
            let Ok(bytes) = B64.decode(value) else {
                continue;
            };
            match version {
                "v1" => v1.push(bytes),
                "v1a" => v1a.extend(<[u8; 64]>::try_from(bytes).ok()),
                _ => {}
            }
        }
        if v1.is_empty() && v1a.is_empty() {
            return Err(SignatureError::Malformed {
                header: "webhook-signature",
                reason: "no v1 or v1a signature",
            });
        }
        let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
        if self.any_hmac(&hmac_keys, &signed, &v1) {
            return Ok(());
        }
        let message = signed.concat();
        let ed_ok = public_keys.iter().any(|key| {
            v1a.iter().any(|sig| {
                key.verify_strict(&message, &Signature::from_bytes(sig))
                    .is_ok()
            })
        });
        if ed_ok {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    fn github(&self, headers: &dyn Headers, body: &[u8]) -> Result<(), SignatureError> {
        const HEADER: &str = "x-hub-signature-256";
        let value = headers
            .get(HEADER)
            .ok_or(SignatureError::MissingHeader(HEADER))?;
        let digest = value
            .trim()
            .strip_prefix("sha256=")
            .and_then(decode_hex)
            .ok_or(SignatureError::Malformed {
                header: HEADER,
                reason: "expected sha256=<64 hex digits>",
            })?;
        self.require_hmac(&self.utf8_keys()?, &[body], &[digest])
    }

    fn stripe(&self, headers: &dyn Headers, body: &[u8]) -> Result<(), SignatureError> {
        const HEADER: &str = "stripe-signature";
        let value = headers
            .get(HEADER)
            .ok_or(SignatureError::MissingHeader(HEADER))?;
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for pair in value.split(',') {
            match pair.trim().split_once('=') {
                Some(("t", t)) => timestamp = Some(t),
                Some(("v1", hex)) => v1.extend(decode_hex(hex)),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed {
            header: HEADER,
            reason: "no t= timestamp",
        })?;
        if v1.is_empty() {
            return Err(SignatureError::Malformed {
                header: HEADER,
                reason: "no v1= signature",
            });
        }
        self.fresh(HEADER, timestamp)?;
        let keys = self.utf8_keys()?;
        self.require_hmac(&keys, &[timestamp.as_bytes(), b".", body], &v1)
    }

    fn slack(&self, headers: &dyn Headers, body: &[u8]) -> Result<(), SignatureError> {
        const SIGNATURE: &str = "x-slack-signature";
        const TIMESTAMP: &str = "x-slack-request-timestamp";
        let timestamp = headers
            .get(TIMESTAMP)
            .ok_or(SignatureError::MissingHeader(TIMESTAMP))?;
        let digest = headers
            .get(SIGNATURE)
            .ok_or(SignatureError::MissingHeader(SIGNATURE))?
            .trim()
            .strip_prefix("v0=")
            .and_then(decode_hex)
            .ok_or(SignatureError::Malformed {
                header: SIGNATURE,
                reason: "expected v0=<64 hex digits>",
            })?;
        self.fresh(TIMESTAMP, timestamp)?;
        let keys = self.utf8_keys()?;
        let signed = [b"v0:", timestamp.as_bytes(), b":", body];
        self.require_hmac(&keys, &signed, &[digest])
    }

    fn generic_hmac(
        &self,
        headers: &dyn Headers,
        body: &[u8],
        header: &str,
        encoding: Encoding,
    ) -> Result<(), SignatureError> {
        let value = headers
            .get(header)
            .ok_or(SignatureError::MissingHeader(
                "the configured signature header",
            ))?
            .trim();
        let value = value.strip_prefix("sha256=").unwrap_or(value);
        let digest = match encoding {
            Encoding::Hex => decode_hex(value),
            Encoding::Base64 => B64.decode(value).ok(),
        }
        .ok_or(SignatureError::Malformed {
            header: "the configured signature header",
            reason: "not a digest in the configured encoding",
        })?;
        self.require_hmac(&self.utf8_keys()?, &[body], &[digest])
    }

    fn basic(&self, headers: &dyn Headers) -> Result<(), SignatureError> {
        let given = headers
            .get("authorization")
            .ok_or(SignatureError::MissingHeader("authorization"))?
            .trim();
        let credentials = given
            .split_once(' ')
            .filter(|(kind, _)| kind.eq_ignore_ascii_case("basic"))
            .and_then(|(_, b64)| B64.decode(b64.trim()).ok())
            .ok_or(SignatureError::Malformed {
                header: "authorization",
                reason: "expected Basic <base64 of user:password>",
            })?;
        let keys = self.utf8_keys()?;
        if keys
            .iter()
            .any(|k| bool::from(k.as_slice().ct_eq(credentials.as_slice())))
        {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The API key of a delivery: `Authorization: Bearer <key>` or `X-API-Key`.
pub fn api_key(headers: &dyn Headers) -> Option<&str> {
    // An Authorization header that is not a Bearer token, or two different
    // keys, is refused: one credential never stands in for a wrong one.
    let bearer = match headers.get("authorization") {
        None => None,
        Some(value) => match value.trim().split_once(' ') {
            Some((kind, token))
                if kind.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                Some(token.trim())
            }
            _ => return None,
        },
    };
    let header = headers
        .get("x-api-key")
        .map(str::trim)
        .filter(|k| !k.is_empty());
    match (bearer, header) {
        (Some(a), Some(b)) if a != b => None,
        (a, b) => a.or(b),
    }
}

/// Decodes exactly 32 bytes of hex (either case), else `None`.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(secrets: &[&str], now: i64) -> (Vec<String>, i64) {
        (secrets.iter().map(|s| (*s).to_owned()).collect(), now)
    }

    fn verify(
        scheme: &Scheme,
        secrets: &[&str],
        now: i64,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), SignatureError> {
        let (secrets, now) = check(secrets, now);
        Check {
            secrets: &secrets,
            now,
            tolerance: DEFAULT_TOLERANCE_SECONDS,
        }
        .verify(scheme, &headers, body)
    }

    // Standard Webhooks specification, "Verifying webhook authenticity" example.
    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1614265330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn sw_headers(sig: &str) -> [(&'static str, String); 3] {
        [
            ("webhook-id", SW_ID.to_owned()),
            ("webhook-timestamp", SW_TS.to_string()),
            ("webhook-signature", sig.to_owned()),
        ]
    }

    fn as_refs<'a>(h: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
        h.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn standard_webhooks_spec_example_verifies() {
        let h = sw_headers(SW_SIG);
        assert_eq!(
            verify(
                &Scheme::Standard,
                &[SW_SECRET],
                SW_TS,
                &as_refs(&h),
                SW_BODY
            ),
            Ok(())
        );
    }

    #[test]
    fn standard_accepts_any_of_several_signatures_and_old_secrets() {
        let h = sw_headers(&format!("v1,Zm9vYmFy v1a,AAAA {SW_SIG}"));
        let secrets = ["whsec_bmV3IHNlY3JldCBhZnRlciByb3RhdGlvbg==", SW_SECRET];
        assert_eq!(
            verify(
                &Scheme::Standard,
                &secrets,
                SW_TS + 10,
                &as_refs(&h),
                SW_BODY
            ),
            Ok(())
        );
    }

    #[test]
    fn standard_refuses_tampered_stale_and_unsigned_deliveries() {
        let h = sw_headers(SW_SIG);
        let tampered = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(
                &Scheme::Standard,
                &[SW_SECRET],
                SW_TS,
                &as_refs(&h),
                tampered
            ),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            verify(
                &Scheme::Standard,
                &[SW_SECRET],
                SW_TS + 301,
                &as_refs(&h),
                SW_BODY
            ),
            Err(SignatureError::Stale { .. })
        ));
        assert!(matches!(
            verify(
                &Scheme::Standard,
                &[SW_SECRET],
                SW_TS - 301,
                &as_refs(&h),
                SW_BODY
            ),
            Err(SignatureError::Stale { .. })
        ));
        let no_sig = &as_refs(&h)[..2];
        assert_eq!(
            verify(&Scheme::Standard, &[SW_SECRET], SW_TS, no_sig, SW_BODY),
            Err(SignatureError::MissingHeader("webhook-signature"))
        );
        let other_id = [
            ("webhook-id", "msg_other"),
            ("webhook-timestamp", "1614265330"),
            ("webhook-signature", SW_SIG),
        ];
        assert_eq!(
            verify(&Scheme::Standard, &[SW_SECRET], SW_TS, &other_id, SW_BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn standard_v1a_verifies_ed25519_with_the_public_key() {
        // RFC 8032 section 7.1 TEST 1 key pair; the signature is over id.ts.body.
        use ed25519_dalek::{Signer, SigningKey};
        let seed = decode_hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .expect("hex");
        let signing = SigningKey::from_bytes(&<[u8; 32]>::try_from(seed).expect("32 bytes"));
        assert_eq!(
            signing.verifying_key().as_bytes().to_vec(),
            decode_hex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .expect("hex")
        );
        let message = [SW_ID.as_bytes(), b".1614265330.", SW_BODY].concat();
        let sig = B64.encode(signing.sign(&message).to_bytes());
        let public = format!("whpk_{}", B64.encode(signing.verifying_key().as_bytes()));
        let h = sw_headers(&format!("v1a,{sig}"));
        assert_eq!(
            verify(&Scheme::Standard, &[&public], SW_TS, &as_refs(&h), SW_BODY),
            Ok(())
        );
        assert_eq!(
            verify(&Scheme::Standard, &[&public], SW_TS, &as_refs(&h), b"{}"),
            Err(SignatureError::Mismatch)
        );
    }

    // GitHub docs, "Validating webhook deliveries", testing the signature.
    const GH_SECRET: &str = "It's a Secret to Everybody";
    const GH_BODY: &[u8] = b"Hello, World!";
    const GH_SIG: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_documented_example_verifies_and_tampering_fails() {
        let h = [("X-Hub-Signature-256", GH_SIG)];
        assert_eq!(
            verify(&Scheme::Github, &[GH_SECRET], 0, &h, GH_BODY),
            Ok(())
        );
        assert_eq!(
            verify(&Scheme::Github, &[GH_SECRET], 0, &h, b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&Scheme::Github, &["new secret", GH_SECRET], 0, &h, GH_BODY),
            Ok(()),
            "an old secret still verifies during a rotation"
        );
        assert_eq!(
            verify(&Scheme::Github, &["new secret"], 0, &h, GH_BODY),
            Err(SignatureError::Mismatch)
        );
        let sha1_only = [("X-Hub-Signature", "sha1=deadbeef")];
        assert_eq!(
            verify(&Scheme::Github, &[GH_SECRET], 0, &sha1_only, GH_BODY),
            Err(SignatureError::MissingHeader("x-hub-signature-256"))
        );
    }

    // Stripe documents the header layout (t=1492774577,v1=…,v0=…) but no
    // secret; the v1 value below was computed with `openssl dgst -sha256
    // -hmac whsec_test_secret` over "1492774577.{body}".
    const STRIPE_SECRET: &str = "whsec_test_secret";
    const STRIPE_TS: i64 = 1492774577;
    const STRIPE_BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
    const STRIPE_V1: &str = "654b43d3508ecadb3f8cefc4bc7d3d2bdc5ba9e03bf2c89b2d0657a8e24e4543";

    #[test]
    fn stripe_signature_with_v0_and_several_v1_verifies() {
        let header = format!(
            "t={STRIPE_TS},v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,\
             v1={STRIPE_V1},v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39"
        );
        let h = [("Stripe-Signature", header.as_str())];
        assert_eq!(
            verify(
                &Scheme::Stripe,
                &[STRIPE_SECRET],
                STRIPE_TS + 5,
                &h,
                STRIPE_BODY
            ),
            Ok(())
        );
        assert!(matches!(
            verify(
                &Scheme::Stripe,
                &[STRIPE_SECRET],
                STRIPE_TS + 3600,
                &h,
                STRIPE_BODY
            ),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            verify(&Scheme::Stripe, &[STRIPE_SECRET], STRIPE_TS, &h, b"{}"),
            Err(SignatureError::Mismatch)
        );
        let only_v0 = [(
            "Stripe-Signature",
            "t=1492774577,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
        )];
        assert!(matches!(
            verify(
                &Scheme::Stripe,
                &[STRIPE_SECRET],
                STRIPE_TS,
                &only_v0,
                STRIPE_BODY
            ),
            Err(SignatureError::Malformed { .. })
        ));
    }

    // Slack docs, "Verifying requests from Slack", step-by-step example.
    const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const SLACK_TS: i64 = 1531420618;
    const SLACK_BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SLACK_SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    #[test]
    fn slack_documented_example_verifies() {
        let h = [
            ("X-Slack-Request-Timestamp", "1531420618"),
            ("X-Slack-Signature", SLACK_SIG),
        ];
        assert_eq!(
            verify(&Scheme::Slack, &[SLACK_SECRET], SLACK_TS, &h, SLACK_BODY),
            Ok(())
        );
        assert!(matches!(
            verify(
                &Scheme::Slack,
                &[SLACK_SECRET],
                SLACK_TS + 301,
                &h,
                SLACK_BODY
            ),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            verify(&Scheme::Slack, &[SLACK_SECRET], SLACK_TS, &h, b"token=x"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn generic_hmac_reads_the_configured_header_in_hex_or_base64() {
        // The GitHub example again: HMAC-SHA256("It's a Secret…", "Hello, World!").
        let hex = Scheme::parse("hmac-sha256", Some("X-Sig"), Some("hex")).expect("valid");
        let h = [("x-sig", &GH_SIG["sha256=".len()..])];
        assert_eq!(verify(&hex, &[GH_SECRET], 0, &h, GH_BODY), Ok(()));
        let b64 = Scheme::parse("hmac-sha256", Some("X-Sig"), Some("base64")).expect("valid");
        let digest = decode_hex(&GH_SIG["sha256=".len()..]).expect("hex");
        let encoded = B64.encode(digest);
        let h = [("X-Sig", encoded.as_str())];
        assert_eq!(verify(&b64, &[GH_SECRET], 0, &h, GH_BODY), Ok(()));
        assert_eq!(
            verify(&b64, &[GH_SECRET], 0, &h, b"other"),
            Err(SignatureError::Mismatch)
        );
        assert!(Scheme::parse("hmac-sha256", None, Some("base32")).is_err());
    }

    #[test]
    fn basic_compares_user_and_password() {
        // RFC 7617's example credentials.
        let h = [("Authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")];
        assert_eq!(
            verify(&Scheme::Basic, &["Aladdin:open sesame"], 0, &h, b""),
            Ok(())
        );
        assert_eq!(
            verify(&Scheme::Basic, &["Aladdin:open sesamE"], 0, &h, b""),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&Scheme::Basic, &[], 0, &h, b""),
            Err(SignatureError::NoSecret)
        );
    }

    #[test]
    fn api_key_is_read_from_bearer_or_x_api_key() {
        assert_eq!(
            api_key(&[("Authorization", "Bearer pgik_1_abc")]),
            Some("pgik_1_abc")
        );
        assert_eq!(
            api_key(&[("X-API-Key", " pgik_2_abc ")]),
            Some("pgik_2_abc")
        );
        assert_eq!(api_key(&[("Authorization", "Basic abc")]), None);
        // The same key twice is one key; a wrong Authorization beside a
        // right X-API-Key, or two different keys, is no key.
        assert_eq!(
            api_key(&[("Authorization", "bearer k1"), ("X-API-Key", "k1")]),
            Some("k1")
        );
        assert_eq!(
            api_key(&[("Authorization", "Basic abc"), ("X-API-Key", "k1")]),
            None
        );
        assert_eq!(
            api_key(&[("Authorization", "junk"), ("X-API-Key", "k1")]),
            None
        );
        assert_eq!(
            api_key(&[("Authorization", "Bearer k2"), ("X-API-Key", "k1")]),
            None
        );
    }

    #[test]
    fn delivery_ids_come_from_a_header_or_a_json_pointer() {
        let payload = serde_json::json!({"id": "evt_1", "n": 7, "obj": {}});
        let h = [("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")];
        let github = Scheme::Github.default_delivery_id().expect("a default");
        assert_eq!(
            github.extract(&h, None),
            Ok(Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()))
        );
        let stripe = Scheme::Stripe.default_delivery_id().expect("a default");
        assert_eq!(stripe.extract(&h, Some(&payload)), Ok(Some("evt_1".into())));
        assert_eq!(
            DeliveryId::parse("/n").extract(&h, Some(&payload)),
            Ok(Some("7".into()))
        );
        assert_eq!(
            DeliveryId::parse("/obj").extract(&h, Some(&payload)),
            Ok(None)
        );
        assert_eq!(DeliveryId::parse("/id").extract(&h, None), Ok(None));
    }

    #[test]
    fn delivery_ids_are_kept_exactly_or_refused() {
        let h: [(&str, &str); 0] = [];
        let id = DeliveryId::parse("/id");
        let of = |v: serde_json::Value| id.extract(&h, Some(&serde_json::json!({ "id": v })));
        assert_eq!(of(" 42 ".into()), Ok(Some(" 42 ".into())));
        assert_eq!(of("42".into()), Ok(Some("42".into())));
        assert_eq!(of("évènement".into()), Ok(Some("évènement".into())));
        assert_eq!(of("".into()), Err(DeliveryIdError::Empty));
        assert_eq!(of("x".repeat(500).into()), Ok(Some("x".repeat(500))));
        assert_eq!(
            of("x".repeat(501).into()),
            Err(DeliveryIdError::TooLong(501))
        );
    }

    #[test]
    fn signature_and_credential_headers_are_never_stored() {
        assert!(Scheme::Github.is_secret_header("X-Hub-Signature-256"));
        assert!(Scheme::Standard.is_secret_header("webhook-signature"));
        assert!(!Scheme::Standard.is_secret_header("webhook-id"));
        assert!(Scheme::None.is_secret_header("Authorization"));
        assert!(Scheme::None.is_secret_header("Cookie"));
    }
}
