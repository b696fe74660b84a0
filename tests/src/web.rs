//! What the SSO end-to-end tests use to talk to the sidecar as a browser
//! or a server would: clients that show each redirect hop, answers read
//! once (status, JSON or text body, cookies, Location), URL helpers and the
//! SQL check of a session token.

use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;
use serde_json::Value;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A client without cookies that does not follow redirects, so tests see
/// each hop (also what an IdP's cross-site POST looks like to us).
pub fn client() -> Client {
    builder(false).build().expect("client")
}

/// A browser: keeps cookies, does not follow redirects.
pub fn browser() -> Client {
    browser_trusting(None)
}

/// A browser that also trusts `ca` (PEM), for a provider serving https.
pub fn browser_trusting(ca: Option<&str>) -> Client {
    let mut builder = builder(true);
    if let Some(pem) = ca {
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(pem.as_bytes()).expect("a PEM CA"),
        );
    }
    builder.build().expect("browser")
}

fn builder(cookies: bool) -> reqwest::blocking::ClientBuilder {
    Client::builder()
        .redirect(Policy::none())
        .cookie_store(cookies)
        .no_proxy()
        .timeout(Duration::from_secs(20))
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The body as text (for pages that are not JSON).
    pub text: String,
    pub cookies: Vec<String>,
    pub location: Option<String>,
}

pub fn answer(response: Response) -> Answer {
    let status = response.status().as_u16();
    let cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_owned())
        .collect();
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let text = response.text().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        body,
        text,
        cookies,
        location,
    }
}

/// `location` resolved against `base`.
pub fn resolve(base: &str, location: &str) -> String {
    reqwest::Url::parse(base)
        .and_then(|b| b.join(location))
        .expect("a valid Location")
        .to_string()
}

/// The value of query parameter `name` of `url`.
pub fn query(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Retries `attempt` every 50 ms until it holds; panics after 15 s.
pub fn wait_until(mut attempt: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !attempt() {
        assert!(Instant::now() < deadline, "condition not met within 15 s");
        sleep(Duration::from_millis(50));
    }
}

/// `GET /auth/session` with `token` as the bearer.
pub fn session(sidecar: &crate::Sidecar, token: &str) -> Answer {
    answer(
        client()
            .get(sidecar.url("/auth/session"))
            .bearer_auth(token)
            .send()
            .expect("GET /auth/session"),
    )
}

/// What `integration.verify_jwt(token)` says: the claims, or its error.
pub fn verify_in_sql(db: &mut postgres::Client, token: &str) -> Result<Value, String> {
    db.query_one("SELECT integration.verify_jwt($1)", &[&token])
        .map(|row| row.get(0))
        .map_err(|e| {
            e.as_db_error()
                .map_or(e.to_string(), |d| d.message().to_owned())
        })
}

/// Database `db` of `cluster` as every SSO test starts it: the extension,
/// `integration_sidecar` allowed to log in, the roles `app_admin` and
/// `app_user` to map logins to, and a session signing key.
pub fn sso_database(cluster: &crate::PgCluster, db: &str) -> postgres::Client {
    let mut admin = cluster.create_database(db);
    admin
        .batch_execute(
            "ALTER ROLE integration_sidecar LOGIN;
             CREATE ROLE app_admin NOLOGIN;
             CREATE ROLE app_user NOLOGIN;
             SELECT integration.ensure_signing_key();",
        )
        .unwrap_or_else(|e| panic!("SSO setup: {:?}", e.as_db_error()));
    admin
}
