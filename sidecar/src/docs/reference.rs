//! `GET /docs/sql`: the SQL API reference, rendered on the server from the
//! view `integration.api_reference` (every function, view, table and
//! setting a user meets, with its signature, return type, comment and the
//! SQLSTATEs it raises), grouped by capability with a table of contents.
//! The page is kept [`TTL`] so a busy page does not query on every visit.

use super::html::{self, escape};
use crate::errors::{json_error, DATABASE_UNAVAILABLE};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a rendered page is served before the view is read again.
const TTL: Duration = Duration::from_secs(30);

const QUERY: &str = "
    SELECT kind, name, signature, returns, description, capability, sqlstates
    FROM integration.api_reference
    ORDER BY capability, kind, name";

/// One row of `integration.api_reference`.
#[derive(Debug)]
pub struct Entry {
    pub kind: String,
    pub name: String,
    pub signature: Option<String>,
    pub returns: Option<String>,
    pub description: String,
    pub capability: String,
    pub sqlstates: Vec<String>,
}

/// The page last rendered and when.
#[derive(Default)]
pub struct Cache(Mutex<Option<(Instant, String)>>);

/// `GET /docs/sql`.
pub async fn serve(State(state): State<AppState>) -> Response {
    let cached = state
        .sql_reference
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    if let Some((at, page)) = cached {
        if at.elapsed() < TTL {
            return html::respond(StatusCode::OK, page);
        }
    }
    match load(&state).await {
        Ok(entries) => {
            let page = render(&entries);
            *state
                .sql_reference
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((Instant::now(), page.clone()));
            html::respond(StatusCode::OK, page)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read integration.api_reference");
            json_error(StatusCode::SERVICE_UNAVAILABLE, DATABASE_UNAVAILABLE)
        }
    }
}

async fn load(state: &AppState) -> Result<Vec<Entry>, String> {
    let client = state.db.client().await.map_err(|e| e.to_string())?;
    let rows = client
        .query(QUERY, &[])
        .await
        .map_err(|e| crate::db::describe(&e))?;
    rows.iter()
        .map(|row| {
            Ok(Entry {
                kind: row.try_get(0)?,
                name: row.try_get(1)?,
                signature: row.try_get(2)?,
                returns: row.try_get(3)?,
                description: row.try_get::<_, Option<String>>(4)?.unwrap_or_default(),
                capability: row.try_get(5)?,
                sqlstates: row
                    .try_get::<_, Option<Vec<String>>>(6)?
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| crate::db::describe(&e))
}

/// An `id` for `text`: its letters, digits, `.` and `_`, the rest as `-`.
fn anchor(prefix: &str, text: &str) -> String {
    let mut id = prefix.to_owned();
    id.extend(text.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            c.to_ascii_lowercase()
        } else {
            '-'
        }
    }));
    id
}

/// The page: a table of contents of the capabilities in the order they
/// first appear in `entries`, then each capability's entries.
pub fn render(entries: &[Entry]) -> String {
    let mut groups: Vec<(&str, Vec<&Entry>)> = Vec::new();
    for entry in entries {
        match groups.iter_mut().find(|(c, _)| *c == entry.capability) {
            Some((_, members)) => members.push(entry),
            None => groups.push((&entry.capability, vec![entry])),
        }
    }
    let mut body = String::from(
        "<h1>pg_integration SQL API reference</h1>\n<p>Every function, view, table and \
         setting of schema <code>integration</code>, from <code>SELECT * FROM \
         integration.api_reference</code>. The HTTP API is in the \
         <a href=\"./\">interactive API docs</a>.</p>\n<nav><h2>Contents</h2><ul>\n",
    );
    for (capability, members) in &groups {
        // Writing to a String cannot fail.
        let _ = writeln!(
            body,
            "<li><a href=\"#{}\">{}</a> ({})</li>",
            escape(&anchor("cap-", capability)),
            escape(capability),
            members.len()
        );
    }
    body.push_str("</ul></nav>\n");
    if groups.is_empty() {
        body.push_str("<p>The view lists nothing.</p>\n");
    }
    let mut ids: HashMap<String, usize> = HashMap::new();
    for (capability, members) in &groups {
        let _ = writeln!(
            body,
            "<section id=\"{}\"><h2>{}</h2>",
            escape(&anchor("cap-", capability)),
            escape(capability)
        );
        for entry in members {
            // Overloads share a name: the first keeps it as its id.
            let mut id = anchor("", &entry.name);
            let seen = ids.entry(id.clone()).or_insert(0);
            *seen += 1;
            if *seen > 1 {
                id = format!("{id}-{seen}");
            }
            entry_html(&mut body, &id, entry);
        }
        body.push_str("</section>\n");
    }
    html::document("pg_integration SQL API reference", &body)
}

fn entry_html(body: &mut String, id: &str, entry: &Entry) {
    let _ = write!(
        body,
        "<article id=\"{}\"><h3><code>{}</code><span class=\"kind\">{}</span></h3><dl>",
        escape(id),
        escape(&entry.name),
        escape(&entry.kind)
    );
    if let Some(signature) = &entry.signature {
        let _ = write!(
            body,
            "<dt>Signature</dt><dd><pre>{}</pre></dd>",
            escape(signature)
        );
    }
    if let Some(returns) = &entry.returns {
        let _ = write!(
            body,
            "<dt>Returns</dt><dd><code>{}</code></dd>",
            escape(returns)
        );
    }
    let _ = write!(
        body,
        "<dt>Description</dt><dd>{}</dd>",
        escape(&entry.description)
    );
    let sqlstates = if entry.sqlstates.is_empty() {
        "none listed".to_owned()
    } else {
        entry
            .sqlstates
            .iter()
            .map(|s| format!("<code>{}</code>", escape(s)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        body,
        "<dt>SQLSTATEs</dt><dd>{sqlstates}</dd></dl></article>"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(capability: &str, name: &str, sqlstates: &[&str]) -> Entry {
        Entry {
            kind: "function".into(),
            name: name.into(),
            signature: Some(format!("{name}(a text DEFAULT '<x>'::text)")),
            returns: Some("setof \"record\"".into()),
            description: format!("Does <b>{name}</b> & more"),
            capability: capability.into(),
            sqlstates: sqlstates.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn entries_are_grouped_by_capability_in_order_of_first_appearance() {
        let page = render(&[
            entry("api keys", "integration.create_api_key", &["22023"]),
            entry("http", "integration.http", &[]),
            entry(
                "api keys",
                "integration.verify_api_key",
                &["22023", "42501"],
            ),
            entry("http", "integration.http", &["08000"]),
        ]);
        let at = |needle: &str| {
            page.find(needle)
                .unwrap_or_else(|| panic!("{needle} in {page}"))
        };
        // The contents, then the sections in the same order.
        assert!(
            at("<li><a href=\"#cap-api-keys\">api keys</a> (2)</li>")
                < at("<li><a href=\"#cap-http\">http</a> (2)</li>")
        );
        let keys = at("<section id=\"cap-api-keys\">");
        let http = at("<section id=\"cap-http\">");
        assert!(keys < at("id=\"integration.create_api_key\""));
        assert!(at("id=\"integration.verify_api_key\"") < http);
        assert!(http < at("id=\"integration.http\""));
        assert!(at("id=\"integration.http\"") < at("id=\"integration.http-2\""));
        assert!(
            page.contains("<code>22023</code>, <code>42501</code>"),
            "{page}"
        );
    }

    #[test]
    fn every_field_is_escaped_and_an_empty_sqlstate_list_says_so() {
        let mut hostile = entry("<script>", "x\"><script>alert(1)</script>", &[]);
        hostile.kind = "view'".into();
        hostile.returns = None;
        let page = render(&[hostile]);
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(
            page.contains("Does &lt;b&gt;x&quot;&gt;&lt;script&gt;"),
            "{page}"
        );
        assert!(page.contains("DEFAULT &#39;&lt;x&gt;&#39;::text"), "{page}");
        assert!(page.contains("&amp; more"), "{page}");
        assert!(page.contains("view&#39;"), "{page}");
        assert!(
            page.contains("<dt>SQLSTATEs</dt><dd>none listed</dd>"),
            "{page}"
        );
        assert!(!page.contains("<dt>Returns</dt>"), "{page}");
        assert!(page.contains("<section id=\"cap--script-\">"), "{page}");
    }

    #[test]
    fn an_empty_view_gives_a_page_that_says_so() {
        let page = render(&[]);
        assert!(page.contains("The view lists nothing."), "{page}");
        assert!(page.starts_with("<!DOCTYPE html>"));
    }
}
