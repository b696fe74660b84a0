//! End-to-end tests of CAS logins: the real sidecar in front of a real
//! PostgreSQL with pg_integration and a real CAS server (django-cas-server),
//! driven through the CAS login form like a browser. CAS 3 logins with
//! attributes mapped to a role and a session that `integration.verify_jwt`
//! accepts; CAS 2 logins (the user only, the default role); replayed tickets
//! and tickets issued for another service refused (401, audited without the
//! ticket); back-channel single logout ending the session of its ticket; a
//! stopped CAS server answered 502; and a CAS server of ours answering
//! garbage, error statuses and hostile XML (DOCTYPE, 10 MB, deep nesting):
//! 502, never a ticket in the answer, the audit log or the sidecar log.

use integration_tests::cas_server::{CAS_PASSWORD, CAS_USER, OTHER_SERVICE};
use integration_tests::web::{
    answer, browser, query, resolve, session, sso_database, verify_in_sql, wait_until, Answer,
};
use integration_tests::{CasServer, PgCluster, Sidecar};
use reqwest::blocking::Client;
use serde_json::Value;

const DB: &str = "sso_cas_e2e";

/// A cluster with the extension, a login for the sidecar, two plain roles,
/// a signing key, a CAS server and the providers `campus` (CAS 3, groups
/// `dba` → `app_admin`, else `app_user`) and `campus2` (CAS 2, same
/// mapping), and the sidecar.
fn setup() -> (PgCluster, postgres::Client, CasServer, Sidecar) {
    let cluster = PgCluster::start();
    let mut admin = sso_database(&cluster, DB);
    let cas = CasServer::start();
    let server_url = cas.server_url();
    admin
        .batch_execute(&format!(
            r#"SELECT integration.create_sso_provider('campus', 'cas',
                 jsonb_build_object('server_url', '{server_url}', 'allow_http', true, 'version', 3,
                     'attributes', '{{"email": "mail", "name": "cn", "groups": "groups"}}'::jsonb),
                 role_mapping => '[{{"group": "dba", "role": "app_admin"}}]', default_role => 'app_user');
             SELECT integration.create_sso_provider('campus2', 'cas',
                 jsonb_build_object('server_url', '{server_url}', 'allow_http', true, 'version', 2,
                     'attributes', '{{"email": "mail", "name": "cn", "groups": "groups"}}'::jsonb),
                 role_mapping => '[{{"group": "dba", "role": "app_admin"}}]', default_role => 'app_user');"#
        ))
        .unwrap_or_else(|e| panic!("setup: {:?}", e.as_db_error()));
    let sidecar = Sidecar::start(&cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(|| sidecar.log().contains("SSO configuration loaded"));
    (cluster, admin, cas, sidecar)
}

/// Starts a login at the sidecar; returns the CAS login URL it redirects to.
fn start_login(browser: &Client, sidecar: &Sidecar, provider: &str) -> String {
    let a = answer(
        browser
            .get(sidecar.url(&format!("/auth/{provider}/login")))
            .send()
            .expect("GET login"),
    );
    assert_eq!(a.status, 302, "{}\n{}", a.text, sidecar.log());
    a.location.expect("a Location")
}

/// The hidden fields of the CAS login form (csrf token, login ticket, service).
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let attribute = |tag: &str, name: &str| {
        let key = format!(" {name}=\"");
        tag.find(&key).map(|at| {
            let rest = &tag[at + key.len()..];
            rest[..rest.find('"').unwrap_or(rest.len())]
                .replace("&quot;", "\"")
                .replace("&#x27;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        })
    };
    html.split("<input")
        .skip(1)
        .map(|rest| &rest[..rest.find('>').unwrap_or(rest.len())])
        .filter(|tag| tag.contains("type=\"hidden\""))
        .filter_map(|tag| {
            Some((
                attribute(tag, "name")?,
                attribute(tag, "value").unwrap_or_default(),
            ))
        })
        .collect()
}

/// Logs in at the CAS server from its login URL (through the form, or at
/// once when the browser has a CAS session); returns where the CAS server
/// sends the browser back, with the ticket (not visited).
fn login_at_cas(browser: &Client, cas: &CasServer, login_url: &str) -> String {
    let a = answer(browser.get(login_url).send().expect("GET the CAS login"));
    if let Some(location) = a.location {
        return resolve(login_url, &location);
    }
    assert_eq!(a.status, 200, "{login_url}: {}\n{}", a.text, cas.log());
    let mut fields = hidden_fields(&a.text);
    fields.push(("username".into(), CAS_USER.into()));
    fields.push(("password".into(), CAS_PASSWORD.into()));
    let a = answer(
        browser
            .post(login_url)
            .form(&fields)
            .send()
            .expect("POST the CAS login form"),
    );
    let location = a.location.unwrap_or_else(|| {
        panic!(
            "the CAS form answered {}: {}\n{}",
            a.status,
            a.text,
            cas.log()
        )
    });
    resolve(login_url, &location)
}

/// A whole login: sidecar → CAS form → callback. Returns the callback's
/// answer and the ticket it carried.
fn cas_login(
    browser: &Client,
    sidecar: &Sidecar,
    cas: &CasServer,
    provider: &str,
) -> (Answer, String) {
    let login_url = start_login(browser, sidecar, provider);
    let callback = login_at_cas(browser, cas, &login_url);
    assert!(
        callback.starts_with(&sidecar.url(&format!("/auth/{provider}/callback?"))),
        "{callback}"
    );
    let ticket = query(&callback, "ticket").expect("a ticket");
    let a = answer(browser.get(&callback).send().expect("GET the callback"));
    (a, ticket)
}

/// The reasons of refused logins of `provider`, oldest first.
fn refusals(admin: &mut postgres::Client, provider: &str) -> Vec<String> {
    admin
        .query(
            "SELECT detail->>'reason' FROM integration.audit_log
              WHERE action = 'sso.login' AND NOT ok AND target = 'sso_provider:' || $1 ORDER BY id",
            &[&provider],
        )
        .expect("audit rows")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every audit row as text, to show that no ticket reached it.
fn audit_text(admin: &mut postgres::Client) -> String {
    admin
        .query_one(
            "SELECT coalesce(string_agg(a::text, E'\\n'), '') FROM integration.audit_log a",
            &[],
        )
        .expect("audit")
        .get(0)
}

#[test]
fn cas_3_login_maps_attributes_to_a_role_and_sql_accepts_the_session() {
    let (_cluster, mut admin, cas, sidecar) = setup();
    let browser = browser();
    let login_url = start_login(&browser, &sidecar, "campus");
    // The service is our callback with the login's state, encoded once.
    let service = query(&login_url, "service").expect("a service");
    assert!(
        login_url.starts_with(&format!("{}/login?service=", cas.server_url())),
        "{login_url}"
    );
    assert!(
        service.starts_with(&sidecar.url("/auth/campus/callback?state=")),
        "{service}"
    );
    let callback = login_at_cas(&browser, &cas, &login_url);
    let ticket = query(&callback, "ticket").expect("a ticket");
    assert!(ticket.starts_with("ST-"), "{callback}");
    let a = answer(browser.get(&callback).send().expect("GET the callback"));
    assert_eq!(a.status, 200, "{}\n{}", a.text, sidecar.log());
    assert_eq!(a.body["role"], "app_admin", "{}", a.body);
    assert_eq!(a.body["sub"], "campus:alice");
    assert_eq!(a.body["email"], "alice@example.org");
    let token = a.body["access_token"].as_str().expect("a token").to_owned();

    let claims = verify_in_sql(&mut admin, &token).expect("verify_jwt accepts the session");
    assert_eq!(claims["role"], "app_admin");
    assert_eq!(claims["idp"], "campus");
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(session(&sidecar, &token).status, 200);

    let row = admin
        .query_one(
            "SELECT email, name, groups, claims, role::text FROM integration.identities
              WHERE provider = 'campus' AND subject = 'alice'",
            &[],
        )
        .expect("the identity");
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("alice@example.org")
    );
    assert_eq!(row.get::<_, Vec<String>>(2), vec!["dba", "staff"]);
    let stored: Value = row.get(3);
    assert_eq!(stored["groups"], serde_json::json!(["dba", "staff"]));
    assert_eq!(stored["cn"], "Alice Liddell");
    assert_eq!(row.get::<_, String>(4), "app_admin");
    assert!(
        !audit_text(&mut admin).contains(&ticket),
        "a ticket reached the audit log"
    );

    // Logging out at the sidecar ends the session and names the CAS logout.
    let a = answer(
        sidecar
            .client
            .post(sidecar.url("/auth/logout"))
            .bearer_auth(&token)
            .send()
            .expect("POST /auth/logout"),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["session_ended"], true);
    assert_eq!(
        a.body["end_session_url"],
        format!("{}/logout", cas.server_url())
    );
    assert_eq!(session(&sidecar, &token).status, 401);
}

#[test]
fn cas_2_login_has_the_user_only_and_gets_the_default_role() {
    let (_cluster, mut admin, cas, sidecar) = setup();
    let browser = browser();
    let login_url = start_login(&browser, &sidecar, "campus2");
    let callback = login_at_cas(&browser, &cas, &login_url);
    let a = answer(browser.get(&callback).send().expect("GET the callback"));
    assert_eq!(a.status, 200, "{}\n{}", a.text, sidecar.log());
    // CAS 2 validation (/serviceValidate) releases no attributes: no group, no mail.
    assert_eq!(a.body["role"], "app_user", "{}", a.body);
    assert_eq!(a.body["sub"], "campus2:alice");
    assert_eq!(a.body["email"], Value::Null);
    let token = a.body["access_token"].as_str().expect("a token");
    assert_eq!(
        verify_in_sql(&mut admin, token).expect("valid")["role"],
        "app_user"
    );
    assert!(
        cas.log().contains("GET /cas/serviceValidate?"),
        "validated at /serviceValidate:\n{}",
        cas.log()
    );
}

#[test]
fn replayed_tickets_and_tickets_for_another_service_are_refused() {
    let (_cluster, mut admin, cas, sidecar) = setup();
    let browser = browser();
    let (first, ticket) = cas_login(&browser, &sidecar, &cas, "campus");
    assert_eq!(first.status, 200, "{}\n{}", first.text, sidecar.log());

    // The same ticket in a new login of the same browser: the CAS server
    // refuses it (spent, and issued for the first login's service).
    let login_url = start_login(&browser, &sidecar, "campus");
    let service = query(&login_url, "service").expect("a service");
    let replay = format!("{service}&ticket={ticket}");
    let a = answer(
        browser
            .get(&replay)
            .send()
            .expect("GET the replayed callback"),
    );
    assert_eq!(a.status, 401, "{}\n{}", a.text, sidecar.log());
    assert_eq!(
        a.body["error"], "the login was refused; start again",
        "{}",
        a.text
    );

    // A ticket the CAS server issued for another service (the browser has a
    // CAS session now, so it is issued at once).
    let other = login_at_cas(
        &browser,
        &cas,
        &format!(
            "{}/login?service={}",
            cas.server_url(),
            OTHER_SERVICE.replace(':', "%3A").replace('/', "%2F")
        ),
    );
    assert!(other.starts_with(OTHER_SERVICE), "{other}");
    let foreign = query(&other, "ticket").expect("a ticket for the other service");
    let login_url = start_login(&browser, &sidecar, "campus");
    let service = query(&login_url, "service").expect("a service");
    let a = answer(
        browser
            .get(format!("{service}&ticket={foreign}"))
            .send()
            .expect("GET the callback with a foreign ticket"),
    );
    assert_eq!(a.status, 401, "{}\n{}", a.text, sidecar.log());

    let reasons = refusals(&mut admin, "campus");
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("the CAS server refused the ticket: INVALID_")),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("INVALID_SERVICE"), "{reasons:?}");
    let audit = audit_text(&mut admin);
    assert!(
        !audit.contains(&ticket) && !audit.contains(&foreign),
        "a ticket reached the audit log"
    );
}

#[test]
fn back_channel_logout_ends_the_session_of_its_ticket_only() {
    let (_cluster, mut admin, cas, sidecar) = setup();
    let browser = browser();
    let (a, _ticket) = cas_login(&browser, &sidecar, &cas, "campus");
    assert_eq!(a.status, 200, "{}\n{}", a.text, sidecar.log());
    let token = a.body["access_token"].as_str().expect("a token").to_owned();

    // A logoutRequest for a ticket that started no session: 200, nothing ends.
    let unknown = r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="x" Version="2.0" IssueInstant="2026-12-06T00:00:00Z"><saml:NameID>@NOT_USED@</saml:NameID><samlp:SessionIndex>ST-unknown</samlp:SessionIndex></samlp:LogoutRequest>"#;
    let a = answer(
        sidecar
            .client
            .post(sidecar.url("/auth/campus/callback"))
            .form(&[("logoutRequest", unknown)])
            .send()
            .expect("POST a logoutRequest"),
    );
    assert_eq!(a.status, 200, "{}\n{}", a.text, sidecar.log());
    assert_eq!(a.body["session_ended"], false);
    assert_eq!(session(&sidecar, &token).status, 200);

    // Logging out at the CAS server makes it post the logoutRequest of our ticket.
    let a = answer(
        browser
            .get(format!("{}/logout", cas.server_url()))
            .send()
            .expect("GET the CAS logout"),
    );
    assert!(a.status < 400, "{}: {}", a.status, cas.log());
    wait_until(|| session(&sidecar, &token).status == 401);
    let refused = session(&sidecar, &token);
    assert!(
        refused.text.contains("ended by a logout"),
        "{}",
        refused.text
    );
    let e = verify_in_sql(&mut admin, &token).expect_err("verify_jwt refuses an ended session");
    assert!(e.contains("ended by a logout"), "{e}");
}

#[test]
fn a_stopped_cas_server_is_a_bad_gateway() {
    let (_cluster, mut admin, mut cas, sidecar) = setup();
    let browser = browser();
    let login_url = start_login(&browser, &sidecar, "campus");
    let callback = login_at_cas(&browser, &cas, &login_url);
    let ticket = query(&callback, "ticket").expect("a ticket");
    cas.stop();
    let a = answer(browser.get(&callback).send().expect("GET the callback"));
    assert_eq!(a.status, 502, "{}\n{}", a.text, sidecar.log());
    assert!(
        !a.text.contains("127.0.0.1"),
        "the answer names the CAS server: {}",
        a.text
    );
    let reasons = refusals(&mut admin, "campus");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("the CAS server cannot be reached")),
        "{reasons:?}"
    );
    assert!(
        !audit_text(&mut admin).contains(&ticket),
        "a ticket reached the audit log"
    );
}

#[test]
fn cas_configs_are_checked_when_saved() {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database(DB);
    let error = |admin: &mut postgres::Client, config: &str| -> String {
        let e = admin
            .execute(
                &format!("SELECT integration.create_sso_provider('bad', 'cas', '{config}')"),
                &[],
            )
            .expect_err(config);
        e.as_db_error()
            .map_or(e.to_string(), |d| d.message().to_owned())
    };
    assert!(error(&mut admin, "{}").contains("lacks server_url"));
    assert!(error(
        &mut admin,
        r#"{"server_url": "http://cas.example.org/cas"}"#
    )
    .contains("must be https://"));
    assert!(error(
        &mut admin,
        r#"{"server_url": "https://cas.example.org/cas?x=1"}"#
    )
    .contains("without user info, query or fragment"));
    assert!(error(
        &mut admin,
        r#"{"server_url": "https://cas.example.org/cas", "version": 4}"#
    )
    .contains("must be the number 2 or 3"));
    assert!(error(
        &mut admin,
        r#"{"server_url": "https://cas.example.org/cas", "attributes": {"email": 1}}"#
    )
    .contains("attributes of CAS provider bad"));
    assert!(error(
        &mut admin,
        r#"{"server_url": "https://cas.example.org/cas", "attributes": {"mail": "mail"}}"#
    )
    .contains("attributes of CAS provider bad"));
    admin
        .execute(
            r#"SELECT integration.create_sso_provider('good', 'cas', '{"server_url": "https://cas.example.org/cas", "version": 2, "attributes": {"email": "mail"}}')"#,
            &[],
        )
        .expect("a valid CAS provider");
}

/// A CAS server of ours that answers every request with the status and
/// body it is given (a bad or hostile server); stops with the test process.
struct RogueCas {
    port: u16,
    answer: std::sync::Arc<std::sync::Mutex<(u16, Vec<u8>)>>,
}

impl RogueCas {
    fn start() -> RogueCas {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let answer = std::sync::Arc::new(std::sync::Mutex::new((200, Vec::new())));
        let shared = answer.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // Read the request head; the sidecar sends no body.
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                let (status, body) = shared.lock().expect("answer").clone();
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: text/xml\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        RogueCas { port, answer }
    }

    fn answer_with(&self, status: u16, body: impl Into<Vec<u8>>) {
        *self.answer.lock().expect("answer") = (status, body.into());
    }
}

#[test]
fn garbage_and_hostile_answers_of_a_cas_server_are_a_bad_gateway() {
    let cluster = PgCluster::start();
    let mut admin = cluster.create_database(DB);
    let rogue = RogueCas::start();
    admin
        .batch_execute(&format!(
            "ALTER ROLE integration_sidecar LOGIN;
             CREATE ROLE app_user NOLOGIN;
             SELECT integration.ensure_signing_key();
             SELECT integration.create_sso_provider('rogue', 'cas',
                 jsonb_build_object('server_url', 'http://127.0.0.1:{}/cas', 'allow_http', true),
                 default_role => 'app_user');",
            rogue.port
        ))
        .unwrap_or_else(|e| panic!("setup: {:?}", e.as_db_error()));
    let sidecar = Sidecar::start(&cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(|| sidecar.log().contains("SSO configuration loaded"));
    let ticket = "ST-42-secretticketvalue";
    let attempt = |status: u16, body: Vec<u8>| -> Answer {
        rogue.answer_with(status, body);
        let browser = browser();
        let login_url = start_login(&browser, &sidecar, "rogue");
        let service = query(&login_url, "service").expect("a service");
        answer(
            browser
                .get(format!("{service}&ticket={ticket}"))
                .send()
                .expect("GET the callback"),
        )
    };
    let success = |user: &str| {
        format!(
            r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess><cas:user>{user}</cas:user></cas:authenticationSuccess></cas:serviceResponse>"#
        )
    };
    let billion_laughs = format!(
        r#"<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>{}"#,
        success("&b;")
    );
    let huge = success(&"a".repeat(10 * 1024 * 1024));
    let deep = format!(
        r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess><cas:user>u</cas:user><cas:proxies>{}{}</cas:proxies></cas:authenticationSuccess></cas:serviceResponse>"#,
        "<a>".repeat(5000),
        "</a>".repeat(5000)
    );
    for (status, body, reason) in [
        (200, "<html><body>Maintenance</body></html>".to_owned(), "not a CAS serviceResponse"),
        (500, success("alice"), "answered the ticket validation with 500"),
        (200, billion_laughs, "DOCTYPE"),
        (200, huge, "larger than 1048576 bytes"),
        (200, deep, "deeper than 32"),
        (
            200,
            r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationFailure code="INTERNAL_ERROR">oops</cas:authenticationFailure></cas:serviceResponse>"#.to_owned(),
            "could not validate the ticket: INTERNAL_ERROR",
        ),
    ] {
        let a = attempt(status, body.into_bytes());
        assert_eq!(a.status, 502, "{reason}: {}\n{}", a.text, sidecar.log());
        let last = refusals(&mut admin, "rogue").pop().unwrap_or_default();
        assert!(last.contains(reason), "{reason}: {last}");
    }
    // A refusal quoting the ticket: 401, and the ticket goes nowhere.
    let a = attempt(
        200,
        format!(r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationFailure code="INVALID_TICKET">Ticket {ticket} not recognized</cas:authenticationFailure></cas:serviceResponse>"#).into_bytes(),
    );
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(!a.text.contains(ticket));
    assert!(
        !audit_text(&mut admin).contains(ticket),
        "a ticket reached the audit log"
    );
    assert!(
        !sidecar.log().contains(ticket),
        "a ticket reached the sidecar log"
    );
    // And a good answer still logs in: the refusals above changed nothing.
    let a = attempt(200, success("alice").into_bytes());
    assert_eq!(a.status, 200, "{}\n{}", a.text, sidecar.log());
    assert_eq!(a.body["sub"], "rogue:alice");
}
