//! The protocol-free parts of SSO shared by the extension and the sidecar: session signing
//! keys (Ed25519, published as JWKs with an RFC 7638 thumbprint as `kid`), role mapping
//! (first matching rule, else the default role, else refusal) and the `redirect_to`
//! allowlist that keeps the sidecar from being an open redirect.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::SigningKey;
use pkcs8::EncodePrivateKey;
use rand::rngs::OsRng;
use rand::RngCore;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The algorithm of every session key made here.
pub const SESSION_ALG: &str = "EdDSA";

/// A fresh session signing key: the private half as PKCS#8 PEM (what `jwt::sign` takes) and
/// the public half as a JWK (what `jwt::verify` and PostgREST take).
pub struct SigningKeyPair {
    pub kid: String,
    pub private_pem: String,
    pub public_jwk: Value,
}

/// Makes a new Ed25519 key from the operating system's random source.
pub fn generate_signing_key() -> SigningKeyPair {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    let key = SigningKey::from_bytes(&secret);
    secret.fill(0);
    let x = URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes());
    // RFC 7638: the thumbprint hashes the required members in lexicographic order.
    let thumbprint = Sha256::digest(format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#));
    let kid = URL_SAFE_NO_PAD.encode(thumbprint);
    let der = key
        .to_pkcs8_der()
        .expect("an Ed25519 key always encodes as PKCS#8");
    let private_pem = pem("PRIVATE KEY", der.as_bytes());
    let public_jwk = json!({
        "kty": "OKP", "crv": "Ed25519", "x": x, "alg": SESSION_ALG, "use": "sig", "kid": kid,
    });
    SigningKeyPair {
        kid,
        private_pem,
        public_jwk,
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).unwrap_or_default());
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// What a login tells about the person, as role mapping sees it.
pub struct MappingInput<'a> {
    /// Group names (LDAP group DNs or common names, OIDC `groups`), compared exactly.
    pub groups: &'a [String],
    /// Every claim or attribute of the identity, as a JSON object.
    pub claims: &'a Value,
}

/// Why `role_mapping` could not be used; the text names the rule.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("role_mapping rule {index}: {reason}")]
pub struct MappingError {
    pub index: usize,
    pub reason: String,
}

/// Checks the shape of `role_mapping`: a JSON array of rules, each
/// `{"group": G, "role": R}` or `{"claim": C, "equals": V, "role": R}`, where `C` is a claim
/// name or a JSON pointer (`/realm_access/roles`) and `V` matches a claim equal to it or an
/// array containing it. Returns the roles named, for the caller to check they exist.
pub fn check_role_mapping(mapping: &Value) -> Result<Vec<String>, MappingError> {
    let Value::Array(rules) = mapping else {
        return Err(MappingError {
            index: 0,
            reason: "role_mapping must be a JSON array of rules".into(),
        });
    };
    let mut roles = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let fail = |reason: &str| MappingError {
            index,
            reason: reason.to_owned(),
        };
        let Value::Object(members) = rule else {
            return Err(fail("a rule must be a JSON object"));
        };
        let role = members
            .get("role")
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty() && r.len() <= 63)
            .ok_or_else(|| fail("\"role\" must name a PostgreSQL role"))?;
        match (members.get("group"), members.get("claim"), members.get("equals")) {
            (Some(Value::String(_)), None, None) => {}
            (None, Some(Value::String(_)), Some(v)) if !v.is_null() => {}
            _ => {
                return Err(fail(
                    "a rule is {\"group\": G, \"role\": R} or {\"claim\": C, \"equals\": V, \"role\": R}",
                ))
            }
        }
        if let Some(extra) = members
            .keys()
            .find(|k| !["role", "group", "claim", "equals"].contains(&k.as_str()))
        {
            return Err(fail(&format!("unknown member {extra:?}")));
        }
        roles.push(role.to_owned());
    }
    Ok(roles)
}

/// The role of the first rule that matches, else `default_role`, else `None` (refuse).
/// A malformed rule never matches (they are checked when the provider is saved).
pub fn map_role(
    mapping: &Value,
    input: &MappingInput<'_>,
    default_role: Option<&str>,
) -> Option<String> {
    let rules = mapping.as_array().map(Vec::as_slice).unwrap_or_default();
    rules
        .iter()
        .find(|rule| rule_matches(rule, input))
        .and_then(|rule| rule.get("role").and_then(Value::as_str))
        .or(default_role)
        .map(str::to_owned)
}

fn rule_matches(rule: &Value, input: &MappingInput<'_>) -> bool {
    if let Some(group) = rule.get("group").and_then(Value::as_str) {
        return input.groups.iter().any(|g| g == group);
    }
    let (Some(claim), Some(expected)) = (
        rule.get("claim").and_then(Value::as_str),
        rule.get("equals"),
    ) else {
        return false;
    };
    let found = if claim.starts_with('/') {
        input.claims.pointer(claim)
    } else {
        input.claims.get(claim)
    };
    match found {
        Some(Value::Array(items)) => items.contains(expected),
        Some(value) => value == expected,
        None => false,
    }
}

/// Whether `target` may be redirected to: an absolute `http(s)` URL without user info whose
/// scheme, host and port equal an allowlist entry's and whose path lies under the entry's
/// path (at a `/` boundary). Everything else, relative URLs included, is refused.
pub fn redirect_allowed(target: &str, allowlist: &[String]) -> bool {
    let Ok(url) = url::Url::parse(target) else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https")
        || !url.username().is_empty()
        || url.password().is_some()
        || url.host_str().is_none()
    {
        return false;
    }
    allowlist.iter().any(|entry| {
        let Ok(allowed) = url::Url::parse(entry) else {
            return false;
        };
        if allowed.scheme() != url.scheme()
            || allowed.host_str() != url.host_str()
            || allowed.port_or_known_default() != url.port_or_known_default()
        {
            return false;
        }
        let base = allowed.path();
        let path = url.path();
        base == "/"
            || path == base
            || path
                .strip_prefix(base.trim_end_matches('/'))
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::{self, VerifyOptions};

    #[test]
    fn a_generated_key_signs_tokens_its_jwk_verifies() {
        let key = generate_signing_key();
        assert_eq!(key.kid.len(), 43);
        assert_eq!(key.public_jwk["kid"], key.kid.as_str());
        let token = jwt::sign(
            &json!({"sub": "ada", "exp": 4_000_000_000u64}),
            &key.private_pem,
            SESSION_ALG,
            Some(&key.kid),
        )
        .expect("signs");
        let jwks = json!({"keys": [key.public_jwk]}).to_string();
        let claims = jwt::verify(&token, &jwks, &VerifyOptions::default()).expect("verifies");
        assert_eq!(claims["sub"], "ada");
        let other = generate_signing_key();
        assert_ne!(other.kid, key.kid);
        let verify_with = |jwk: &Value| {
            jwt::verify(&token, &jwk.to_string(), &VerifyOptions::default())
                .expect_err("another key")
                .kind()
        };
        assert_eq!(verify_with(&other.public_jwk), "unknown_kid");
        // The other key under the token's kid: the signature does not match.
        let mut impostor = other.public_jwk.clone();
        impostor["kid"] = key.kid.clone().into();
        assert_eq!(verify_with(&impostor), "bad_signature");
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_first_matching_rule_wins_else_the_default_else_refusal() {
        let mapping = json!([
            {"group": "cn=admins,ou=groups,dc=example,dc=org", "role": "app_admin"},
            {"claim": "/realm/roles", "equals": "editor", "role": "app_editor"},
            {"claim": "email_verified", "equals": true, "role": "app_user"},
        ]);
        assert_eq!(check_role_mapping(&mapping).expect("valid").len(), 3);
        let admin = groups(&["cn=admins,ou=groups,dc=example,dc=org"]);
        let claims = json!({"realm": {"roles": ["viewer", "editor"]}, "email_verified": true});
        let input = MappingInput {
            groups: &admin,
            claims: &claims,
        };
        assert_eq!(
            map_role(&mapping, &input, None).as_deref(),
            Some("app_admin")
        );
        let input = MappingInput {
            groups: &[],
            claims: &claims,
        };
        assert_eq!(
            map_role(&mapping, &input, None).as_deref(),
            Some("app_editor")
        );
        let plain = json!({"email_verified": true});
        let input = MappingInput {
            groups: &[],
            claims: &plain,
        };
        assert_eq!(
            map_role(&mapping, &input, None).as_deref(),
            Some("app_user")
        );
        let nothing = json!({"email_verified": "true"});
        let input = MappingInput {
            groups: &[],
            claims: &nothing,
        };
        assert_eq!(
            map_role(&mapping, &input, Some("guest")).as_deref(),
            Some("guest")
        );
        assert_eq!(map_role(&mapping, &input, None), None);
    }

    #[test]
    fn malformed_role_mappings_are_refused_naming_the_rule() {
        for (mapping, index) in [
            (json!({"group": "x"}), 0),
            (json!([{"group": "x", "role": "r"}, {"group": "y"}]), 1),
            (json!([{"claim": "email", "role": "r"}]), 0),
            (
                json!([{"group": "x", "claim": "c", "equals": 1, "role": "r"}]),
                0,
            ),
            (json!([{"group": "x", "role": "r", "when": "always"}]), 0),
            (json!(["admins"]), 0),
        ] {
            let err = check_role_mapping(&mapping).expect_err("malformed");
            assert_eq!(err.index, index, "{mapping}");
        }
    }

    #[test]
    fn only_allowlisted_redirects_pass() {
        let allow = groups(&[
            "https://app.example.org/",
            "http://127.0.0.1:3000/after/login",
        ]);
        for ok in [
            "https://app.example.org/",
            "https://app.example.org/any/page?x=1",
            "https://app.example.org:443/x",
            "http://127.0.0.1:3000/after/login",
            "http://127.0.0.1:3000/after/login/deeper",
        ] {
            assert!(redirect_allowed(ok, &allow), "{ok}");
        }
        for refused in [
            "https://evil.example/",
            "https://app.example.org.evil.example/",
            "https://app.example.org@evil.example/",
            "https://user@app.example.org/",
            "http://app.example.org/",
            "https://app.example.org:8443/",
            "//evil.example/",
            "/relative/path",
            "javascript:alert(1)",
            "http://127.0.0.1:3000/after/loginx",
            "http://127.0.0.1:3000/after",
            "http://127.0.0.1:3001/after/login",
            "",
        ] {
            assert!(!redirect_allowed(refused, &allow), "{refused}");
        }
        assert!(!redirect_allowed("https://app.example.org/", &[]));
    }
}
