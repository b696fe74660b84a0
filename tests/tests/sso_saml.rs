//! End-to-end tests of the SAML ACS: the real sidecar in front of a real
//! PostgreSQL with pg_integration, with Responses signed by `xmlsec1` with a
//! key of the test's (the real pysaml2 IdP and the browser are in
//! sso_saml_idp.rs). An SP-initiated login finishes at the ACS from
//! a client without the login cookie (the IdP's POST is cross-site), once;
//! an IdP-initiated one only where the provider allows it; a replayed
//! assertion is refused; each refusal is audited without the assertion.

use integration_tests::saml_signer::start_login;
use integration_tests::web::{answer, browser, client, sso_database, wait_until, Answer};
use integration_tests::{PgCluster, SamlSigner, Sidecar};
use serde_json::Value;

const DB: &str = "sso_saml_e2e";
const IDP: &str = "https://idp.example.net/saml";

/// A cluster with the extension, two plain roles, a signing key, the
/// providers `corp` (SP-initiated only; group `staff` → `app_admin`, else
/// `app_user`) and `open` (IdP-initiated allowed) trusting `signer`, and
/// the sidecar.
fn setup(signer: &SamlSigner) -> (PgCluster, postgres::Client, Sidecar) {
    let cluster = PgCluster::start();
    let mut admin = sso_database(&cluster, DB);
    for (name, idp_initiated) in [("corp", false), ("open", true)] {
        let config = serde_json::json!({
            "idp_entity_id": IDP,
            "idp_sso_url": "https://idp.example.net/sso",
            "idp_certificates": [signer.cert_pem],
            "attributes": {"email": "mail", "name": "cn", "groups": "groups"},
            "allow_idp_initiated": idp_initiated,
        });
        admin
            .execute(
                "SELECT integration.create_sso_provider($1, 'saml', $2::jsonb,
                     role_mapping => '[{\"group\": \"staff\", \"role\": \"app_admin\"}]',
                     default_role => 'app_user')",
                &[&name, &config],
            )
            .unwrap_or_else(|e| panic!("{name}: {:?}", e.as_db_error()));
    }
    let sidecar = Sidecar::start(&cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(|| sidecar.log().contains("SSO configuration loaded"));
    (cluster, admin, sidecar)
}

/// UTC `seconds` from now, as SAML writes instants (the database's clock).
fn instant(admin: &mut postgres::Client, seconds: i64) -> String {
    admin
        .query_one(
            "SELECT to_char((now() + make_interval(secs => $1::float8)) AT TIME ZONE 'UTC',
                            'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[&(seconds as f64)],
        )
        .expect("now")
        .get(0)
}

/// A Response for `provider` of the sidecar at `base`, signed by `signer`,
/// answering `in_response_to` (None: IdP-initiated), with assertion `id`,
/// valid for five minutes of the database's clock.
fn signed_response(
    admin: &mut postgres::Client,
    signer: &SamlSigner,
    base: &str,
    provider: &str,
    in_response_to: Option<&str>,
    id: &str,
) -> String {
    let (now, later) = (instant(admin, 0), instant(admin, 300));
    signer.signed_response(IDP, base, provider, in_response_to, id, &now, &later)
}

/// Posts `saml_response` (with `relay_state`) to the ACS from a client
/// without cookies.
fn post_acs(
    sidecar: &Sidecar,
    provider: &str,
    saml_response: &str,
    relay_state: Option<&str>,
) -> Answer {
    let mut form = vec![("SAMLResponse", saml_response)];
    if let Some(relay_state) = relay_state {
        form.push(("RelayState", relay_state));
    }
    answer(
        client()
            .post(sidecar.url(&format!("/auth/{provider}/callback")))
            .form(&form)
            .send()
            .expect("POST ACS"),
    )
}

/// The reasons of refused SAML logins of `provider` in the audit log.
fn refusals(admin: &mut postgres::Client, provider: &str) -> Vec<String> {
    admin
        .query(
            "SELECT detail->>'reason' FROM integration.audit_log
              WHERE action = 'sso.login' AND NOT ok AND target = 'sso_provider:' || $1 ORDER BY id",
            &[&provider],
        )
        .expect("audit")
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect()
}

#[test]
fn a_saml_login_finishes_at_the_acs_without_the_login_cookie_once() {
    let signer = SamlSigner::new("e2e-idp");
    let (_cluster, mut admin, sidecar) = setup(&signer);
    let base = sidecar.base_url.clone();
    let base = base.trim_end_matches('/');
    let (relay_state, request_id) = start_login(&browser(), &sidecar, "corp");
    let response = signed_response(&mut admin, &signer, base, "corp", Some(&request_id), "_a1");

    let a = post_acs(&sidecar, "corp", &response, Some(&relay_state));
    assert_eq!(a.status, 200, "{}\n{}", a.text, sidecar.log());
    assert_eq!(a.body["role"], "app_admin", "{}", a.text);
    assert_eq!(a.body["idp_sub"], "alice@example.org", "{}", a.text);
    let token = a.body["access_token"].as_str().expect("a session token");
    let claims: Value = admin
        .query_one("SELECT integration.verify_jwt($1)", &[&token])
        .expect("verify_jwt accepts the session")
        .get(0);
    assert_eq!(claims["role"], "app_admin", "{claims}");
    let (email, groups): (Option<String>, Vec<String>) = admin
        .query_one(
            "SELECT email, groups FROM integration.identities WHERE provider = 'corp' AND subject = 'alice@example.org'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .expect("the identity");
    assert_eq!(email.as_deref(), Some("alice@example.org"));
    assert_eq!(groups, vec!["staff"]);
    let pending: i64 = admin
        .query_one(
            "SELECT count(*) FROM integration.saml_pending_requests",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(pending, 0, "the login in progress was taken");

    // The same POST again: the login in progress was taken, and this
    // provider takes no IdP-initiated login.
    let a = post_acs(&sidecar, "corp", &response, Some(&relay_state));
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(a.body.get("access_token").is_none(), "{}", a.text);
    // A response to another login, posted with this login's RelayState.
    let (relay_state, _) = start_login(&browser(), &sidecar, "corp");
    let other = signed_response(&mut admin, &signer, base, "corp", Some("_another"), "_a2");
    let a = post_acs(&sidecar, "corp", &other, Some(&relay_state));
    assert_eq!(a.status, 401, "{}", a.text);
    let reasons = refusals(&mut admin, "corp");
    assert!(
        reasons.iter().any(|r| r.contains("InResponseTo")),
        "{reasons:?}"
    );
    let audit: String = admin
        .query_one(
            "SELECT coalesce(string_agg(detail::text, ' '), '') FROM integration.audit_log",
            &[],
        )
        .expect("audit")
        .get(0);
    assert!(!audit.contains(&response), "no assertion in the audit log");
    assert!(!audit.contains("SAMLResponse"), "{audit}");
}

#[test]
fn an_idp_initiated_login_is_taken_only_where_allowed_and_an_assertion_only_once() {
    let signer = SamlSigner::new("e2e-idp-initiated");
    let (_cluster, mut admin, sidecar) = setup(&signer);
    let base = sidecar.base_url.clone();
    let base = base.trim_end_matches('/');

    let refused = signed_response(&mut admin, &signer, base, "corp", None, "_b1");
    let a = post_acs(&sidecar, "corp", &refused, None);
    assert_eq!(a.status, 401, "{}", a.text);
    let reasons = refusals(&mut admin, "corp");
    assert!(
        reasons.iter().any(|r| r.contains("IdP-initiated")),
        "{reasons:?}"
    );

    let response = signed_response(&mut admin, &signer, base, "open", None, "_b2");
    let a = post_acs(&sidecar, "open", &response, None);
    assert_eq!(a.status, 200, "{}\n{}", a.text, sidecar.log());
    assert!(a.body["access_token"].is_string(), "{}", a.text);
    // Replayed: refused, on this replica and on any other (the record is
    // in the database).
    let a = post_acs(&sidecar, "open", &response, None);
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(a.body.get("access_token").is_none(), "{}", a.text);
    let reasons = refusals(&mut admin, "open");
    assert!(
        reasons.iter().any(|r| r.contains("used already")),
        "{reasons:?}"
    );
    let used: i64 = admin
        .query_one(
            "SELECT count(*) FROM integration.used_saml_assertions WHERE provider = 'open'",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(used, 1);
}

#[test]
fn saml_configs_are_checked_when_saved_and_the_sp_key_is_a_secret() {
    let signer = SamlSigner::new("e2e-config");
    let (_cluster, mut admin, sidecar) = setup(&signer);
    let create =
        "SELECT integration.create_sso_provider($1, 'saml', $2::jsonb, default_role => 'app_user')";
    let refused = [
        (
            serde_json::json!({}),
            "exactly one of idp_metadata_url, idp_metadata_xml, or idp_entity_id",
        ),
        (
            serde_json::json!({"idp_metadata_url": "https://idp.example.net/metadata",
                               "idp_metadata_xml": "<EntityDescriptor/>"}),
            "exactly one of",
        ),
        (
            serde_json::json!({"idp_metadata_url": "http://idp.example.net/metadata"}),
            "must be https://",
        ),
        (
            serde_json::json!({"idp_metadata_url": "https://user@idp.example.net/metadata"}),
            "without user info",
        ),
        (
            serde_json::json!({"idp_entity_id": IDP, "idp_sso_url": "https://idp.example.net/sso"}),
            "lacks idp_certificates",
        ),
        (
            serde_json::json!({"idp_entity_id": IDP, "idp_sso_url": "https://idp.example.net/sso", "idp_certificates": []}),
            "non-empty array",
        ),
        (
            serde_json::json!({"idp_metadata_xml": "<!DOCTYPE x [<!ENTITY a \"b\">]><x/>"}),
            "DOCTYPE or ENTITY",
        ),
        (
            serde_json::json!({"idp_metadata_url": "https://idp.example.net/metadata",
                               "sp_private_key": "-----BEGIN PRIVATE KEY-----"}),
            "sp_private_key and sp_certificate together",
        ),
        (
            serde_json::json!({"idp_metadata_url": "https://idp.example.net/metadata",
                               "sp_private_key": "-----BEGIN PRIVATE KEY-----",
                               "sp_certificate": "not a certificate"}),
            "must be a PEM certificate",
        ),
    ];
    for (config, expected) in refused {
        let e = admin
            .execute(create, &[&"bad", &config])
            .expect_err("refused");
        let message = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        assert!(message.contains(expected), "{config}: {message}");
    }
    let sp = SamlSigner::new("e2e-config-sp");
    let config = serde_json::json!({
        "idp_entity_id": IDP, "idp_sso_url": "https://idp.example.net/sso",
        "idp_certificates": [signer.cert_pem],
        "sp_private_key": sp.key_pem(), "sp_certificate": sp.cert_pem,
    });
    admin.execute(create, &[&"keyed", &config]).expect("keyed");
    // The sidecar reads the key from the secrets: the provider loads, and
    // its metadata offers the certificate (never the key).
    let certificate: String = sp
        .cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    wait_until(|| {
        let a = answer(
            client()
                .get(sidecar.url("/auth/keyed/metadata"))
                .send()
                .expect("GET metadata"),
        );
        a.status == 200
            && a.text.contains(&certificate)
            && a.text.contains(r#"AuthnRequestsSigned="true""#)
    });
    let a = answer(
        client()
            .get(sidecar.url("/auth/keyed/metadata"))
            .send()
            .expect("GET metadata"),
    );
    assert!(!a.text.contains("PRIVATE"), "{}", a.text);
    let by_url = serde_json::json!({"idp_metadata_url": "https://idp.example.net/metadata"});
    admin
        .execute(create, &[&"by_url", &by_url])
        .expect("by_url");
    let row = admin
        .query_one(
            "SELECT config ? 'sp_private_key', secrets_set FROM integration.sso_provider_list WHERE name = 'keyed'",
            &[],
        )
        .expect("listed");
    assert!(!row.get::<_, bool>(0), "the key is not in the config");
    assert_eq!(row.get::<_, Vec<String>>(1), vec!["sp_private_key"]);
}
