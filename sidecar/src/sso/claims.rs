//! What a provider says about a person, made storable before it reaches
//! `integration.identities` and the session: PostgreSQL text and jsonb hold
//! no NUL, so NULs are removed from every claim (a user-editable `name`
//! must not block that user's logins), and sizes are bounded. A subject is
//! never altered: one holding a NUL, empty or longer than the column allows
//! is refused.

use super::{Identity, SsoError};
use serde_json::{Map, Value};

/// Longest subject stored (`identities.subject`, `CHECK length <= 500`).
pub const MAX_SUBJECT_CHARS: usize = 500;
/// Longest email address kept (RFC 5321 path limit); a longer one is dropped.
const MAX_EMAIL_CHARS: usize = 320;
/// Longest display name kept; a longer one is cut.
const MAX_NAME_CHARS: usize = 200;
/// Longest group name kept, and how many groups; others are dropped.
const MAX_GROUP_CHARS: usize = 500;
const MAX_GROUPS: usize = 1000;
/// A claim larger than this (as JSON) is stored as a note of its size.
const MAX_CLAIM_BYTES: usize = 8 * 1024;
/// All claims together, as JSON; past it only the claims that fit are kept.
const MAX_CLAIMS_BYTES: usize = 64 * 1024;

/// The identity with NULs removed and sizes bounded, or why it is refused.
pub fn storable(identity: Identity) -> Result<Identity, SsoError> {
    let subject = identity.subject;
    if subject.contains('\0') {
        return Err(SsoError::Rejected(
            "the identity provider sent a subject holding a NUL character".into(),
        ));
    }
    let chars = subject.chars().count();
    if chars == 0 || chars > MAX_SUBJECT_CHARS {
        return Err(SsoError::Rejected(format!(
            "the identity provider sent a subject of {chars} characters (1 to {MAX_SUBJECT_CHARS} are stored)"
        )));
    }
    let email = identity
        .email
        .map(|e| without_nul(&e))
        .filter(|e| !e.is_empty() && e.chars().count() <= MAX_EMAIL_CHARS);
    let name = identity
        .name
        .map(|n| {
            without_nul(&n)
                .chars()
                .take(MAX_NAME_CHARS)
                .collect::<String>()
        })
        .filter(|n| !n.is_empty());
    let groups = identity
        .groups
        .iter()
        .map(|g| without_nul(g))
        .filter(|g| !g.is_empty() && g.chars().count() <= MAX_GROUP_CHARS)
        .take(MAX_GROUPS)
        .collect();
    Ok(Identity {
        subject,
        email,
        name,
        groups,
        claims: bounded(clean(identity.claims)),
        logout_key: identity.logout_key,
        single_use: identity.single_use,
    })
}

fn without_nul(text: &str) -> String {
    text.replace('\0', "")
}

/// `value` with NULs removed from every string and member name.
fn clean(value: Value) -> Value {
    match value {
        Value::String(s) if s.contains('\0') => Value::String(without_nul(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(clean).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (without_nul(&k), clean(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Claims within [`MAX_CLAIMS_BYTES`]: each member over [`MAX_CLAIM_BYTES`]
/// becomes `{"omitted_bytes": n}`, then members are kept in order while they fit.
fn bounded(claims: Value) -> Value {
    let Value::Object(map) = claims else {
        return Value::Object(Map::new());
    };
    let mut kept = Map::new();
    let mut total = 2;
    for (k, v) in map {
        let size = v.to_string().len();
        let v = if size > MAX_CLAIM_BYTES {
            serde_json::json!({ "omitted_bytes": size })
        } else {
            v
        };
        let cost = k.len() + v.to_string().len() + 4;
        if total + cost > MAX_CLAIMS_BYTES {
            continue;
        }
        total += cost;
        kept.insert(k, v);
    }
    Value::Object(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(subject: &str, claims: Value) -> Identity {
        Identity {
            subject: subject.into(),
            email: Some("a\0da@example.org".into()),
            name: Some("Ada\0 Lovelace".into()),
            groups: vec!["adm\0ins".into(), "x".repeat(600), String::new()],
            claims,
            logout_key: None,
            single_use: None,
        }
    }

    #[test]
    fn nuls_are_removed_and_sizes_bounded() {
        let big = "b".repeat(10_000);
        let cleaned = storable(identity(
            "ada",
            json!({"name": "Ada\0", "n\0ested": ["a\0b", {"c": "\0"}], "big": big}),
        ))
        .expect("storable");
        assert_eq!(cleaned.email.as_deref(), Some("ada@example.org"));
        assert_eq!(cleaned.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(cleaned.groups, vec!["admins"]);
        assert_eq!(
            cleaned.claims,
            json!({"name": "Ada", "nested": ["ab", {"c": ""}], "big": {"omitted_bytes": 10_002}})
        );
        let many: Map<String, Value> = (0..100)
            .map(|i| (format!("k{i}"), json!("v".repeat(1000))))
            .collect();
        let kept = storable(identity("ada", Value::Object(many))).expect("storable");
        assert!(kept.claims.to_string().len() <= MAX_CLAIMS_BYTES);
        assert!(kept.claims.get("k0").is_some());
    }

    #[test]
    fn a_subject_is_refused_rather_than_altered() {
        for subject in ["ad\0a", "", &"s".repeat(501)] {
            let refused = storable(identity(subject, json!({})));
            assert!(matches!(refused, Err(SsoError::Rejected(_))), "{subject:?}");
        }
        assert!(storable(identity(&"é".repeat(500), json!({}))).is_ok());
    }
}
