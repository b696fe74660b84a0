//! The server-rendered pages of `/docs` (the SQL API reference and the
//! sign-in form): HTML escaping, one inline style sheet allowed by its hash
//! in the Content-Security-Policy, and no script, image or other origin.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The style sheet of every page, inline.
const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;\
padding:0 1rem;line-height:1.45;color:#222}code,pre{font-family:ui-monospace,monospace}\
pre{background:#f4f4f4;padding:.5rem;overflow-x:auto;white-space:pre-wrap}\
article{border-top:1px solid #ddd;padding:.5rem 0}.kind{font-size:.8rem;color:#555;\
border:1px solid #aaa;border-radius:.3rem;padding:0 .3rem;margin-left:.5rem}\
dt{font-weight:600}dd{margin:0 0 .4rem 1rem}.error{color:#a00}\
input{font-family:ui-monospace,monospace;width:30rem;max-width:100%}";

/// No script, nothing from anywhere but the style above; forms post to
/// the sidecar only.
static CONTENT_SECURITY_POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'"
    ))
    .expect("base64 is a header value")
});

/// `text` with `&`, `<`, `>`, `"` and `'` as entities: safe in element
/// content and in quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole document: `title` (escaped here) and `body` (already HTML).
pub fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        escape(title)
    )
}

/// `page` answered with `status`, its policy, and not cached by the browser.
pub fn respond(status: StatusCode, page: String) -> Response {
    let mut response = (status, page).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY.clone(),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_quotes_are_escaped() {
        assert_eq!(
            escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn the_policy_allows_the_inline_style_and_nothing_else() {
        let policy = CONTENT_SECURITY_POLICY.to_str().expect("text");
        let hash = STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        assert!(
            policy.contains(&format!("style-src 'sha256-{hash}'")),
            "{policy}"
        );
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(!policy.contains("script-src"), "{policy}");
        let page = document("a <title>", "<p>x</p>");
        assert!(page.contains(&format!("<style>{STYLE}</style>")), "{page}");
        assert!(page.contains("<title>a &lt;title&gt;</title>"), "{page}");
    }
}
