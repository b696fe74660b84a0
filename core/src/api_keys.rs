//! API key tokens: format, checksum, keyed hash and scope rules.
//! A token is `pgik_<id>_<secret><check>`: the key id in decimal, 43 base62
//! characters of secret (256 bits) and a 6-character base62 CRC32 of
//! everything before it, so typos are caught without a lookup and secret
//! scanners can match `pgik_[0-9]+_[0-9A-Za-z]{49}`.

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The fixed prefix of every token.
pub const PREFIX: &str = "pgik_";
/// Length of the secret part in base62 characters (62^43 > 2^256).
pub const SECRET_LEN: usize = 43;
/// Length of the checksum in base62 characters (62^6 > 2^32).
pub const CHECK_LEN: usize = 6;
/// Length of the hash stored at rest.
pub const HASH_LEN: usize = 32;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a string is not a well-formed token. Only the audit log sees this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("token checksum mismatch")]
    BadChecksum,
}

/// A token split into its parts; `secret` borrows from the input.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    pub id: i64,
    pub secret: &'a str,
}

/// Builds a new token for key `id` with a fresh random secret; [`parse`]
/// gives back the secret part to hash.
pub fn generate(id: i64) -> String {
    let mut rng = OsRng;
    let secret: String = (0..SECRET_LEN)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect();
    let body = format!("{PREFIX}{id}_{secret}");
    let check = checksum(&body);
    format!("{body}{check}")
}

/// Splits a token and checks its checksum, without touching any table.
pub fn parse(token: &str) -> Result<ParsedToken<'_>, TokenError> {
    let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (id_text, tail) = rest.split_once('_').ok_or(TokenError::Malformed)?;
    if id_text.is_empty()
        || id_text.len() > 18
        || id_text.starts_with('0')
        || !id_text.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(TokenError::Malformed);
    }
    if tail.len() != SECRET_LEN + CHECK_LEN || !tail.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(TokenError::Malformed);
    }
    let id: i64 = id_text.parse().map_err(|_| TokenError::Malformed)?;
    let (secret, check) = tail.split_at(SECRET_LEN);
    let body = &token[..token.len() - CHECK_LEN];
    if checksum(body)
        .as_bytes()
        .ct_eq(check.as_bytes())
        .unwrap_u8()
        != 1
    {
        return Err(TokenError::BadChecksum);
    }
    Ok(ParsedToken { id, secret })
}

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes()) as u64;
    let mut out = [b'0'; CHECK_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out.iter().map(|&b| b as char).collect()
}

/// HMAC-SHA256 keyed with a per-database key: the secret has 256 bits of
/// entropy, so a fast keyed hash is as strong as a slow one, and the key
/// makes a copied table of hashes useless without it.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl KeyHasher {
    pub fn new(key: &[u8]) -> KeyHasher {
        // HMAC accepts keys of any length; the error type exists only for
        // fixed-size MACs.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        KeyHasher { mac }
    }

    /// The value stored at rest for key `id` with `secret`.
    pub fn hash(&self, id: i64, secret: &str) -> [u8; HASH_LEN] {
        let mut mac = self.mac.clone();
        mac.update(&id.to_be_bytes());
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Constant-time comparison of `secret` against a stored hash.
    pub fn matches(&self, id: i64, secret: &str, stored: &[u8]) -> bool {
        stored.len() == HASH_LEN && self.hash(id, secret).ct_eq(stored).unwrap_u8() == 1
    }
}

/// A fresh random key for [`KeyHasher`].
pub fn new_hash_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    OsRng.fill(&mut key);
    key
}

/// Why a scope string is refused at key creation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope {scope:?}: {why}")]
pub struct ScopeError {
    pub scope: String,
    pub why: &'static str,
}

/// Scopes are `segment(:segment)*`, segments of `[A-Za-z0-9._/-]`, at most
/// 200 characters; a final `*` segment grants everything below it and `*`
/// alone grants every scope.
pub fn validate_scope(scope: &str) -> Result<(), ScopeError> {
    let fail = |why| {
        Err(ScopeError {
            scope: scope.to_string(),
            why,
        })
    };
    if scope.is_empty() || scope.len() > 200 {
        return fail("a scope has 1 to 200 characters");
    }
    let segments: Vec<&str> = scope.split(':').collect();
    for (i, segment) in segments.iter().enumerate() {
        if *segment == "*" {
            if i + 1 != segments.len() {
                return fail("'*' may only be the last segment");
            }
            continue;
        }
        if segment.is_empty() {
            return fail("empty segment between ':'");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
        {
            return fail("segments use only letters, digits and . _ / -");
        }
    }
    Ok(())
}

/// True when one of `granted` allows `required`.
pub fn scope_allows<S: AsRef<str>>(granted: &[S], required: &str) -> bool {
    granted.iter().any(|g| {
        let g = g.as_ref();
        if g == required || g == "*" {
            return true;
        }
        match g.strip_suffix(":*") {
            Some(base) => required
                .strip_prefix(base)
                .is_some_and(|rest| rest.starts_with(':')),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back() {
        for id in [1, 42, 9_007_199_254_740_993] {
            let token = generate(id);
            let parsed = parse(&token).expect("valid token");
            assert_eq!(parsed.id, id);
            assert_eq!(parsed.secret.len(), SECRET_LEN);
            assert!(token.starts_with(&format!("pgik_{id}_")));
        }
    }

    #[test]
    fn two_tokens_never_share_a_secret() {
        let a = generate(7);
        let b = generate(7);
        assert_ne!(parse(&a).unwrap().secret, parse(&b).unwrap().secret);
    }

    #[test]
    fn any_single_character_typo_is_caught_by_the_checksum() {
        let token = generate(12345);
        let start = PREFIX.len() + "12345_".len();
        for i in start..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert_eq!(parse(&typo), Err(TokenError::BadChecksum), "position {i}");
        }
    }

    #[test]
    fn a_changed_id_is_caught_by_the_checksum() {
        let token = generate(12345);
        let other = token.replacen("12345", "12346", 1);
        assert_eq!(parse(&other), Err(TokenError::BadChecksum));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = generate(5);
        let cases = [
            String::new(),
            "pgik_".to_string(),
            "pgik_5".to_string(),
            good[..good.len() - 1].to_string(),
            format!("{good}x"),
            good.replacen("pgik_", "pgix_", 1),
            good.replacen("pgik_5", "pgik_05", 1),
            good.replacen("pgik_5", "pgik_-5", 1),
            good.replacen("pgik_5", "pgik_99999999999999999999", 1),
            format!("{}é", &good[..good.len() - 2]),
            "pgik_1_' OR 1=1 --".to_string(),
        ];
        for case in cases {
            assert_eq!(parse(&case), Err(TokenError::Malformed), "{case:?}");
        }
    }

    #[test]
    fn hashes_depend_on_key_id_and_secret() {
        let hasher = KeyHasher::new(b"k");
        let token = generate(3);
        let p = parse(&token).unwrap();
        let stored = hasher.hash(3, p.secret);
        assert!(hasher.matches(3, p.secret, &stored));
        assert!(!hasher.matches(4, p.secret, &stored));
        assert!(!KeyHasher::new(b"other").matches(3, p.secret, &stored));
        assert!(!hasher.matches(3, p.secret, &stored[..31]));
        let other = generate(3);
        assert!(!hasher.matches(3, parse(&other).unwrap().secret, &stored));
    }

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let out = mac.finalize().into_bytes();
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn scopes_match_exactly_or_below_a_wildcard() {
        let granted = ["orders:read", "webhooks:*"];
        assert!(scope_allows(&granted, "orders:read"));
        assert!(!scope_allows(&granted, "orders:write"));
        assert!(!scope_allows(&granted, "orders"));
        assert!(scope_allows(&granted, "webhooks:github"));
        assert!(scope_allows(&granted, "webhooks:github:push"));
        assert!(!scope_allows(&granted, "webhooks"));
        assert!(!scope_allows(&granted, "webhooksx:github"));
        assert!(scope_allows(&["*"], "anything:at:all"));
        assert!(!scope_allows::<&str>(&[], "orders:read"));
    }

    #[test]
    fn scope_validation_refuses_odd_strings() {
        for ok in ["orders:read", "*", "webhooks:*", "a.b/c-d_e"] {
            assert!(validate_scope(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a::b",
            "*:a",
            "a b",
            "a;drop",
            ":a",
            "a:",
            &"x".repeat(201),
        ] {
            assert!(validate_scope(bad).is_err(), "{bad}");
        }
    }
}
