//! Synchronous outbound HTTP from SQL: `http()` and the `http_get`,
//! `http_post`, … shorthands. A response of any status is a result; no
//! response (network, TLS, timeout, policy) is an error naming the host and
//! the cause. Every call is audited (method, host, status, duration; never
//! headers or bodies).

mod client;
mod policy;
pub mod queue;

use crate::audit;
use crate::errors::{self, raise};
use client::{CallError, Request, Response};
use integration_core::http_policy;
use integration_core::multipart::{self, Part};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::Value;
use std::time::Duration;
use url::Url;

pub fn init() {
    policy::init();
    queue::init();
}

extension_sql!(
    r#"
CREATE TYPE integration.http_response AS (
    status        integer,
    headers       jsonb,
    body          text,
    body_bytes    bytea,
    content_type  text,
    elapsed       interval
);
COMMENT ON TYPE integration.http_response IS
    'An HTTP response: body is NULL when the bytes are not valid UTF-8; body_bytes always holds them';

CREATE TYPE integration.http_file AS (
    field         text,
    filename      text,
    content_type  text,
    data          bytea
);
COMMENT ON TYPE integration.http_file IS
    'A file of a multipart/form-data body: ROW(field, filename, content_type, data)::integration.http_file';
"#,
    name = "http_response_type",
    requires = ["roles"],
);

/// `integration.http_response`; SQL functions must spell the macro out in
/// their signatures for pgrx to see the type.
type HttpResponse = pgrx::composite_type!('static, "integration.http_response");

/// Refuses a request (audited, then raised as 22023). `message` must not
/// hold a secret: URLs in it are redacted.
fn invalid(message: String) -> ! {
    audit::refuse("http.refused", "", &message);
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        message,
        None,
    )
}

fn parse_url(url: &str, params: Option<&Value>) -> Url {
    let mut parsed = Url::parse(url).unwrap_or_else(|e| {
        invalid(format!(
            "invalid URL {:?}: {e}",
            http_policy::redact_url(url)
        ))
    });
    if let Some(params) = params {
        let Value::Object(map) = params else {
            invalid("params must be a JSON object".into());
        };
        let mut pairs = parsed.query_pairs_mut();
        for (name, value) in map {
            let values = match value {
                Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            for value in values {
                match value {
                    Value::Null => {}
                    Value::String(s) => {
                        pairs.append_pair(name, &s);
                    }
                    other => {
                        pairs.append_pair(name, &other.to_string());
                    }
                }
            }
        }
    }
    parsed
}

/// Headers from a JSON object of names to strings (or arrays of strings).
/// `Host` is refused: it comes from the URL, which the policy checked.
fn header_list(headers: &Value) -> Result<Vec<(String, String)>, String> {
    let Value::Object(map) = headers else {
        return Err("headers must be a JSON object of names to strings".into());
    };
    let mut out = Vec::new();
    for (name, value) in map {
        if name.eq_ignore_ascii_case("host") {
            return Err(
                "the Host header is set from the URL (which the policy checks); leave it out"
                    .into(),
            );
        }
        match value {
            Value::String(s) => out.push((name.clone(), s.clone())),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::String(s) => out.push((name.clone(), s.clone())),
                        _ => return Err(format!("header {name:?}: values must be strings")),
                    }
                }
            }
            Value::Number(n) => out.push((name.clone(), n.to_string())),
            _ => return Err(format!("header {name:?}: values must be strings")),
        }
    }
    Ok(out)
}

fn parse_headers(headers: &Value) -> Vec<(String, String)> {
    header_list(headers).unwrap_or_else(|e| invalid(e))
}

fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// The longest `timeout` (and queue `backoff`) a request may have: longer
/// ones overflowed the queue's timestamps and stalled it for everyone.
const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

fn timeout_of(timeout: Option<Interval>) -> Duration {
    match timeout {
        None => policy::default_timeout(),
        Some(i) if i.is_positive() => {
            let timeout = Duration::from_micros(u64::try_from(i.as_micros()).unwrap_or(u64::MAX));
            if timeout > MAX_INTERVAL {
                invalid("timeout must be at most 1 day".into());
            }
            timeout
        }
        Some(_) => invalid("timeout must be a positive interval".into()),
    }
}

/// Sends one request and turns the outcome into a row or an SQL error.
fn call(
    method: &str,
    url: Url,
    mut headers: Vec<(String, String)>,
    body: Option<(Vec<u8>, &str)>,
    timeout: Option<Interval>,
) -> HttpResponse {
    errors::statement_carries_secret();
    let method_upper = method.trim().to_ascii_uppercase();
    let method = reqwest::Method::from_bytes(method_upper.as_bytes())
        .unwrap_or_else(|_| invalid(format!("invalid HTTP method {method:?}")));
    let body = body.map(|(bytes, content_type)| {
        if !has_header(&headers, "content-type") {
            headers.push(("Content-Type".into(), content_type.into()));
        }
        bytes
    });
    let host = url.host_str().unwrap_or_default().to_string();
    let rules = policy::current();
    let insecure = rules.insecure(&url);
    let request = Request {
        method: method.clone(),
        url,
        headers,
        body,
        timeout: timeout_of(timeout),
    };
    let started = std::time::Instant::now();
    let outcome = client::send(request, &rules, insecure);
    let elapsed = started.elapsed();
    match outcome {
        Ok(response) => {
            audit::record_http(method.as_str(), &host, Some(response.status), elapsed, None);
            to_row(response)
        }
        Err(CallError::Interrupted) => {
            audit::record_http(method.as_str(), &host, None, elapsed, Some("canceled"));
            pgrx::check_for_interrupts!();
            raise(
                PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                format!("HTTP request to {host} canceled"),
                None,
            )
        }
        Err(error) => {
            let code = match &error {
                CallError::Policy(_) => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                CallError::Invalid { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                CallError::Timeout { .. } => PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
                CallError::TooLarge { .. } | CallError::Redirects { .. } => {
                    PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED
                }
                _ => PgSqlErrorCode::ERRCODE_IO_ERROR,
            };
            audit::record_http(method.as_str(), &host, None, elapsed, Some(error.kind()));
            raise(code, error.to_string(), None)
        }
    }
}

/// Response headers as a JSON object; a repeated header becomes an array.
fn headers_json(list: Vec<(String, String)>) -> Value {
    let mut headers = serde_json::Map::new();
    for (name, value) in list {
        match headers.get_mut(&name) {
            Some(Value::String(first)) => {
                let first = std::mem::take(first);
                headers.insert(name, Value::Array(vec![first.into(), value.into()]));
            }
            Some(Value::Array(values)) => values.push(value.into()),
            _ => {
                headers.insert(name, value.into());
            }
        }
    }
    Value::Object(headers)
}

fn to_row(response: Response) -> HttpResponse {
    let text = String::from_utf8(response.body.clone()).ok();
    let elapsed =
        Interval::from_micros(i64::try_from(response.elapsed.as_micros()).unwrap_or(i64::MAX));
    let mut row = PgHeapTuple::new_composite_type_by_oid(response_type())
        .unwrap_or_else(|e| error!("integration.http_response: {e}"));
    set(&mut row, "status", i32::from(response.status));
    set(&mut row, "headers", JsonB(headers_json(response.headers)));
    set(&mut row, "body", text);
    set(&mut row, "body_bytes", response.body);
    set(&mut row, "content_type", response.content_type);
    set(&mut row, "elapsed", elapsed);
    row
}

thread_local! {
    static RESPONSE_TYPE: std::cell::Cell<Option<pg_sys::Oid>> = const { std::cell::Cell::new(None) };
}

/// The OID of `integration.http_response`, looked up once per backend
/// (parsing the type name on every call cost more than the HTTP client).
fn response_type() -> pg_sys::Oid {
    if let Some(oid) = RESPONSE_TYPE.get() {
        return oid;
    }
    let oid = Spi::get_one::<pg_sys::Oid>(
        "SELECT 'integration.http_response'::pg_catalog.regtype::pg_catalog.oid",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        error!("type integration.http_response is missing: reinstall pg_integration")
    });
    RESPONSE_TYPE.set(Some(oid));
    oid
}

fn set<T: IntoDatum>(row: &mut HttpResponse, name: &str, value: T) {
    row.set_by_name(name, value)
        .unwrap_or_else(|e| error!("build integration.http_response.{name}: {e}"));
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const BYTES: &str = "application/octet-stream";
const FORM: &str = "application/x-www-form-urlencoded";

/// Any method, a raw body (its Content-Type from `headers`, else
/// application/octet-stream), query `params` URL-encoded onto the URL.
#[pg_extern(volatile, parallel_unsafe, requires = ["http_response_type"])]
fn http(
    method: &str,
    url: &str,
    headers: default!(JsonB, "'{}'"),
    body: default!(Option<Vec<u8>>, "NULL"),
    timeout: default!(Option<Interval>, "NULL"),
    params: default!(Option<JsonB>, "NULL"),
) -> pgrx::composite_type!('static, "integration.http_response") {
    let url = parse_url(url, params.as_ref().map(|p| &p.0));
    call(
        method,
        url,
        parse_headers(&headers.0),
        body.map(|b| (b, BYTES)),
        timeout,
    )
}

macro_rules! bodyless {
    ($name:ident, $method:literal) => {
        #[doc = concat!("`", $method, "` with query `params` URL-encoded onto the URL.")]
        #[pg_extern(volatile, parallel_unsafe, requires = ["http_response_type"])]
        fn $name(
            url: &str,
            params: default!(Option<JsonB>, "NULL"),
            headers: default!(JsonB, "'{}'"),
            timeout: default!(Option<Interval>, "NULL"),
) -> pgrx::composite_type!('static, "integration.http_response") {
            let url = parse_url(url, params.as_ref().map(|p| &p.0));
            call($method, url, parse_headers(&headers.0), None, timeout)
        }
    };
}

bodyless!(http_get, "GET");
bodyless!(http_head, "HEAD");
bodyless!(http_delete, "DELETE");

macro_rules! with_body {
    ($json:ident, $text:ident, $bytes:ident, $sql:literal, $method:literal) => {
        #[doc = concat!("`", $method, "` with a JSON body.")]
        #[pg_extern(volatile, parallel_unsafe, name = $sql, requires = ["http_response_type"])]
        fn $json(
            url: &str,
            body: JsonB,
            headers: default!(JsonB, "'{}'"),
            timeout: default!(Option<Interval>, "NULL"),
        ) -> pgrx::composite_type!('static, "integration.http_response") {
            let bytes = serde_json::to_vec(&body.0).unwrap_or_default();
            call($method, parse_url(url, None), parse_headers(&headers.0), Some((bytes, JSON)), timeout)
        }

        #[doc = concat!("`", $method, "` with a text body (text/plain unless `headers` names a Content-Type, e.g. application/xml).")]
        #[pg_extern(volatile, parallel_unsafe, name = $sql, requires = ["http_response_type"])]
        fn $text(
            url: &str,
            body: &str,
            headers: default!(JsonB, "'{}'"),
            timeout: default!(Option<Interval>, "NULL"),
        ) -> pgrx::composite_type!('static, "integration.http_response") {
            let bytes = body.as_bytes().to_vec();
            call($method, parse_url(url, None), parse_headers(&headers.0), Some((bytes, TEXT)), timeout)
        }

        #[doc = concat!("`", $method, "` with a binary body.")]
        #[pg_extern(volatile, parallel_unsafe, name = $sql, requires = ["http_response_type"])]
        fn $bytes(
            url: &str,
            body: Vec<u8>,
            headers: default!(JsonB, "'{}'"),
            timeout: default!(Option<Interval>, "NULL"),
        ) -> pgrx::composite_type!('static, "integration.http_response") {
            call($method, parse_url(url, None), parse_headers(&headers.0), Some((body, BYTES)), timeout)
        }
    };
}

with_body!(
    http_post_json,
    http_post_text,
    http_post_bytes,
    "http_post",
    "POST"
);
with_body!(
    http_put_json,
    http_put_text,
    http_put_bytes,
    "http_put",
    "PUT"
);
with_body!(
    http_patch_json,
    http_patch_text,
    http_patch_bytes,
    "http_patch",
    "PATCH"
);

/// `POST` of `fields` (a JSON object) as application/x-www-form-urlencoded.
#[pg_extern(volatile, parallel_unsafe, requires = ["http_response_type"])]
fn http_post_form(
    url: &str,
    fields: JsonB,
    headers: default!(JsonB, "'{}'"),
    timeout: default!(Option<Interval>, "NULL"),
) -> pgrx::composite_type!('static, "integration.http_response") {
    let Value::Object(map) = &fields.0 else {
        invalid("fields must be a JSON object".into());
    };
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in map {
        match value {
            Value::Null => {}
            Value::String(s) => {
                form.append_pair(name, s);
            }
            other => {
                form.append_pair(name, &other.to_string());
            }
        }
    }
    let bytes = form.finish().into_bytes();
    call(
        "POST",
        parse_url(url, None),
        parse_headers(&headers.0),
        Some((bytes, FORM)),
        timeout,
    )
}

extension_sql!(
    r#"
CREATE FUNCTION integration.http_post_multipart(
    url      text,
    fields   jsonb DEFAULT '{}',
    files    integration.http_file[] DEFAULT '{}',
    headers  jsonb DEFAULT '{}',
    timeout  interval DEFAULT NULL
) RETURNS integration.http_response
LANGUAGE sql VOLATILE AS $$
    SELECT integration.http_post_multipart_arrays(
        url, fields,
        ARRAY(SELECT f.field FROM unnest(files) WITH ORDINALITY f ORDER BY ordinality),
        ARRAY(SELECT f.filename FROM unnest(files) WITH ORDINALITY f ORDER BY ordinality),
        ARRAY(SELECT f.content_type FROM unnest(files) WITH ORDINALITY f ORDER BY ordinality),
        ARRAY(SELECT f.data FROM unnest(files) WITH ORDINALITY f ORDER BY ordinality),
        headers, timeout)
$$;
COMMENT ON FUNCTION integration.http_post_multipart(text, jsonb, integration.http_file[], jsonb, interval) IS
    'POST a multipart/form-data body: text fields from a JSON object and files from bytea';
"#,
    name = "http_post_multipart",
    requires = [http_post_multipart_arrays],
);

/// `POST` of a multipart/form-data body: text `fields` (a JSON object) and
/// files given as parallel arrays (what `http_post_multipart` unpacks its
/// `integration.http_file[]` into: pgrx takes no arrays of composites).
#[allow(clippy::too_many_arguments)]
#[pg_extern(volatile, parallel_unsafe, requires = ["http_response_type"])]
fn http_post_multipart_arrays<'a>(
    url: &str,
    fields: JsonB,
    file_fields: Vec<Option<String>>,
    file_names: Vec<Option<String>>,
    file_types: Vec<Option<String>>,
    file_data: pgrx::Array<'a, &'a [u8]>,
    headers: JsonB,
    timeout: Option<Interval>,
) -> pgrx::composite_type!('static, "integration.http_response") {
    let Value::Object(map) = &fields.0 else {
        invalid("fields must be a JSON object".into());
    };
    let mut parts = Vec::new();
    for (name, value) in map {
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        parts.push(Part {
            name: name.clone(),
            filename: None,
            content_type: None,
            data: text.into_bytes(),
        });
    }
    for (i, field) in file_fields.into_iter().enumerate() {
        parts.push(Part {
            name: field.unwrap_or_else(|| invalid("a file needs a field name".into())),
            filename: Some(
                file_names
                    .get(i)
                    .cloned()
                    .flatten()
                    .unwrap_or_else(|| "file".into()),
            ),
            content_type: file_types.get(i).cloned().flatten(),
            data: file_data.get(i).flatten().unwrap_or_default().to_vec(),
        });
    }
    let (body, content_type) = multipart::encode(&parts).unwrap_or_else(|e| invalid(e.to_string()));
    call(
        "POST",
        parse_url(url, None),
        parse_headers(&headers.0),
        Some((body, &content_type)),
        timeout,
    )
}
