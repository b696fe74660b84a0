//! What is stored from a request besides its raw bytes: the payload as JSON
//! where the body parses (JSON, form-urlencoded; XML and other text keep a
//! null payload or a JSON string), and the headers without credentials.
//! A payload holding NUL (U+0000) is refused: PostgreSQL's jsonb and text
//! cannot store it, and it would fail the whole batch it joined.

use axum::http::{HeaderMap, StatusCode};
use integration_core::webhooks::Scheme;
use serde_json::{Map, Value};

/// A refused body: status, reason label and message.
pub type BodyError = (StatusCode, &'static str, String);

/// The payload of `raw` given its `Content-Type`.
pub fn parse(content_type: Option<&str>, raw: &[u8]) -> Result<Option<Value>, BodyError> {
    let payload = parse_type(content_type, raw)?;
    if payload.as_ref().is_some_and(holds_nul) {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "nul_character",
            "the payload holds a NUL character (U+0000, \\u0000 or %00), \
             which PostgreSQL cannot store in jsonb or text"
                .to_owned(),
        ));
    }
    Ok(payload)
}

/// Whether a string or a key anywhere in `value` holds U+0000.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn parse_type(content_type: Option<&str>, raw: &[u8]) -> Result<Option<Value>, BodyError> {
    let mime = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    match mime.as_deref() {
        Some("application/json") => json(raw).map(Some),
        Some(m) if m.ends_with("+json") => json(raw).map(Some),
        Some("application/x-www-form-urlencoded") => Ok(Some(form(raw))),
        Some("application/xml" | "text/xml") => Ok(None),
        Some(m) if m.ends_with("+xml") => Ok(None),
        Some(m) if m.starts_with("text/") => Ok(Some(text(raw)?)),
        // No type: JSON when it parses, otherwise raw bytes only.
        None | Some("") => Ok(serde_json::from_slice(raw).ok()),
        Some(other) => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type {other} is not accepted; send application/json, \
                 application/x-www-form-urlencoded, application/xml or text/plain"
            ),
        )),
    }
}

fn json(raw: &[u8]) -> Result<Value, BodyError> {
    serde_json::from_slice(raw).map_err(|e| {
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_payload",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// Form fields as an object; a repeated field becomes an array.
fn form(raw: &[u8]) -> Value {
    let mut fields = Map::new();
    for (key, value) in form_urlencoded::parse(raw) {
        let value = Value::String(value.into_owned());
        match fields.get_mut(key.as_ref()) {
            None => {
                fields.insert(key.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    Value::Object(fields)
}

/// Text: its JSON when it parses as JSON, else the text as a JSON string.
fn text(raw: &[u8]) -> Result<Value, BodyError> {
    let text = std::str::from_utf8(raw).map_err(|_| {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a text body must be UTF-8".to_owned(),
        )
    })?;
    Ok(serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned())))
}

/// Headers to store: lower-case names, repeated values joined by ", ", and
/// no signature or credential header.
pub fn stored_headers(scheme: &Scheme, headers: &HeaderMap) -> Value {
    let mut stored = Map::new();
    for name in headers.keys() {
        if scheme.is_secret_header(name.as_str()) {
            continue;
        }
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        stored.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    Value::Object(stored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_parse_by_content_type() {
        assert_eq!(
            parse(Some("application/json; charset=utf-8"), br#"{"a":1}"#),
            Ok(Some(json!({"a": 1})))
        );
        assert_eq!(
            parse(Some("application/x-www-form-urlencoded"), b"a=1&b=x+y&a=2"),
            Ok(Some(json!({"a": ["1", "2"], "b": "x y"})))
        );
        assert_eq!(parse(Some("application/xml"), b"<a/>"), Ok(None));
        assert_eq!(
            parse(Some("text/plain"), b"hello"),
            Ok(Some(json!("hello")))
        );
        assert_eq!(parse(None, b"\x00\x01"), Ok(None));
        assert_eq!(
            parse(Some("application/json"), b"{").map_err(|e| e.0),
            Err(StatusCode::UNPROCESSABLE_ENTITY)
        );
        assert_eq!(
            parse(Some("image/png"), b"").map_err(|e| e.0),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }

    #[test]
    fn a_payload_holding_nul_is_refused_before_it_can_be_stored() {
        let poison: [(Option<&str>, &[u8]); 6] = [
            (Some("application/json"), br#"{"a":"\u0000"}"#),
            (Some("application/json"), br#"{"a\u0000":1}"#),
            (Some("application/json"), br#"[[{"deep":["x\u0000y"]}]]"#),
            (Some("text/plain"), b"before\0after"),
            (Some("application/x-www-form-urlencoded"), b"a=1&b=%00"),
            (None, br#"{"a":"\u0000"}"#),
        ];
        for (content_type, body) in poison {
            assert_eq!(
                parse(content_type, body).map_err(|e| (e.0, e.1)),
                Err((StatusCode::UNPROCESSABLE_ENTITY, "nul_character")),
                "{content_type:?} {body:?}"
            );
        }
        // Raw bytes are stored as bytea, which holds NUL.
        assert_eq!(parse(Some("application/xml"), b"<a>\0</a>"), Ok(None));
        assert_eq!(parse(None, b"\0"), Ok(None));
    }

    #[test]
    fn signature_headers_are_not_stored() {
        let mut headers = HeaderMap::new();
        headers.insert("x-hub-signature-256", "sha256=00".parse().unwrap());
        headers.insert("authorization", "Bearer x".parse().unwrap());
        headers.insert("x-github-event", "push".parse().unwrap());
        assert_eq!(
            stored_headers(&Scheme::Github, &headers),
            json!({"x-github-event": "push"})
        );
    }
}
