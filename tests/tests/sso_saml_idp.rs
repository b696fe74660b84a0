//! SAML logins against a real identity provider: pysaml2 (tests/saml/idp.py)
//! on `localhost`, the sidecar on `127.0.0.1` — two sites, so the IdP's POST
//! to the ACS is cross-site for the browser. SP-initiated logins are driven
//! through headless Chromium (Response signed, and only the Assertion
//! signed) and end in a session JWT that `integration.verify_jwt` accepts
//! with the mapped role; IdP-initiated logins are taken only where the
//! provider allows them; real Responses are refused when replayed, posted
//! for another login, or checked against another IdP certificate. An IdP
//! that wants signed AuthnRequests and encrypts its assertions logs in
//! through the provider with our key pair only: it refuses the unsigned
//! requests of the others, and they refuse what they cannot decrypt.

use integration_tests::chromium::run_script;
use integration_tests::saml_idp::{Posted, Signing, Strict, ALICE, BOB};
use integration_tests::web::{
    answer, browser, client, query, sso_database, verify_in_sql, wait_until, Answer,
};
use integration_tests::{free_port, PgCluster, SamlIdp, SamlSigner, Sidecar};
use serde_json::{json, Value};

const DB: &str = "sso_saml_idp_e2e";
/// The providers: `corp` (SP-initiated only), `open` (IdP-initiated
/// allowed), both trusting the IdP's metadata; `other` names the IdP's
/// entity and SSO URL but another IdP certificate; `keyed` is `open` with
/// our key pair (`sp_private_key`, `sp_certificate`).
const PROVIDERS: [&str; 4] = ["corp", "open", "other", "keyed"];

struct Setup {
    _cluster: PgCluster,
    admin: postgres::Client,
    idp: SamlIdp,
    sidecar: Sidecar,
}

impl Setup {
    /// The IdP (signing as `signing`), then the cluster with the providers
    /// (group `staff` → `app_admin`, else `app_user`; `{sidecar}/healthz`
    /// an allowed redirect), then the sidecar on the port the IdP was told.
    fn start(name: &str, signing: Signing) -> Setup {
        Setup::start_strict(name, signing, Strict::default())
    }

    /// [`Setup::start`] with an IdP demanding what `strict` says.
    fn start_strict(name: &str, signing: Signing, strict: Strict) -> Setup {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let sp_metadata: Vec<String> = PROVIDERS
            .iter()
            .map(|p| format!("{base}/auth/{p}/metadata"))
            .collect();
        let idp = SamlIdp::start_strict(name, signing, &sp_metadata, strict);
        let metadata = idp.metadata();
        let cluster = PgCluster::start();
        let mut admin = sso_database(&cluster, DB);
        let attributes = json!({"email": "mail", "name": "cn", "groups": "groups"});
        let another_key = SamlSigner::new(&format!("{name}-another-key"));
        let sp_key = SamlSigner::new(&format!("{name}-sp-key"));
        for provider in PROVIDERS {
            let config = match provider {
                "other" => json!({
                    "idp_entity_id": idp.url("/metadata"),
                    "idp_sso_url": idp.url("/sso"),
                    "idp_certificates": [another_key.cert_pem],
                    "allow_http": true,
                    "attributes": attributes,
                }),
                // The IdP's metadata fetched by the sidecar, as a deployment gives it.
                "corp" => json!({
                    "idp_metadata_url": idp.url("/metadata"),
                    "allow_http": true,
                    "attributes": attributes,
                }),
                "keyed" => json!({
                    "idp_metadata_xml": metadata,
                    "allow_http": true,
                    "attributes": attributes,
                    "sp_private_key": sp_key.key_pem(),
                    "sp_certificate": sp_key.cert_pem,
                }),
                _ => json!({
                    "idp_metadata_xml": metadata,
                    "allow_http": true,
                    "attributes": attributes,
                    "allow_idp_initiated": provider == "open",
                }),
            };
            admin
                .execute(
                    "SELECT integration.create_sso_provider($1, 'saml', $2::jsonb,
                         role_mapping => '[{\"group\": \"staff\", \"role\": \"app_admin\"}]',
                         default_role => 'app_user',
                         allowed_redirects => ARRAY[$3])",
                    &[&provider, &config, &format!("{base}/healthz")],
                )
                .unwrap_or_else(|e| panic!("{provider}: {:?}", e.as_db_error()));
        }
        let sidecar = Sidecar::start_on(port, &cluster.url(DB, "integration_sidecar"), &[], None);
        wait_until(|| sidecar.log().contains("SSO configuration loaded"));
        Setup {
            _cluster: cluster,
            admin,
            idp,
            sidecar,
        }
    }

    /// Starts a login at `provider` without a browser: the IdP's SSO URL
    /// with the AuthnRequest, and the RelayState.
    fn start_login(&self, provider: &str) -> String {
        let a = answer(
            browser()
                .get(self.sidecar.url(&format!("/auth/{provider}/login")))
                .send()
                .expect("GET login"),
        );
        assert_eq!(a.status, 302, "{}\n{}", a.text, self.sidecar.log());
        let location = a.location.expect("a Location");
        assert!(location.starts_with(&self.idp.url("/sso?")), "{location}");
        location
    }

    /// Posts what the IdP answered to `provider`'s ACS from a client
    /// without cookies, with `relay_state` instead of the posted one if given.
    fn post_acs(&self, provider: &str, posted: &Posted, relay_state: Option<&str>) -> Answer {
        let mut form = vec![("SAMLResponse", posted.saml_response.as_str())];
        if let Some(relay_state) = relay_state.or(posted.relay_state.as_deref()) {
            form.push(("RelayState", relay_state));
        }
        answer(
            client()
                .post(self.sidecar.url(&format!("/auth/{provider}/callback")))
                .form(&form)
                .send()
                .expect("POST ACS"),
        )
    }

    /// The reasons of refused SAML logins of `provider` in the audit log.
    fn refusals(&mut self, provider: &str) -> Vec<String> {
        self.admin
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
}

/// Alice logs in at `provider` through Chromium, the IdP demanding what
/// `strict` says; the session JWT in the redirect's fragment is one
/// `verify_jwt` accepts with the mapped role.
fn browser_login(name: &str, signing: Signing, strict: Strict, provider: &str) -> Setup {
    let mut s = Setup::start_strict(name, signing, strict);
    let done = s.sidecar.url("/healthz");
    let start = s
        .sidecar
        .url(&format!("/auth/{provider}/login?redirect_to={done}"));
    let result = run_script(
        "saml-login.mjs",
        name,
        json!({"start_url": start, "username": ALICE.0, "password": ALICE.1, "done_prefix": done}),
    );
    let url = result["url"].as_str().expect("the final URL");
    assert!(
        url.starts_with(&format!("{done}#access_token=")),
        "{result}\n{}\n{}",
        s.sidecar.log(),
        s.idp.log()
    );
    assert_eq!(result["acs"]["status"], 303, "{result}");
    eprintln!(
        "{name}: ACS POST to session answer: {} ms (debug build)",
        result["acs"]["ms"]
    );
    // The browser went to the IdP's site, and the IdP's page posted the
    // Response cross-site to the ACS.
    let requests: Vec<&str> = result["requests"]
        .as_array()
        .expect("requests")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        requests.iter().any(|r| r.starts_with(&s.idp.url("/sso?"))),
        "{requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| *r == s.sidecar.url(&format!("/auth/{provider}/callback"))),
        "{requests:?}"
    );
    let fragment = url.split_once('#').expect("a fragment").1;
    let token = query(&format!("http://x/?{fragment}"), "access_token").expect("access_token");
    let claims = verify_in_sql(&mut s.admin, &token).expect("verify_jwt accepts the session");
    assert_eq!(claims["role"], "app_admin", "{claims}");
    let cookies = result["cookies"].as_array().expect("cookies");
    assert!(
        cookies
            .iter()
            .any(|c| c["domain"] == "127.0.0.1" && c["value"] == token.as_str()),
        "the session cookie was set: {cookies:?}"
    );
    let (email, name_, groups): (Option<String>, Option<String>, Vec<String>) = s
        .admin
        .query_one(
            "SELECT email, name, groups FROM integration.identities
              WHERE provider = $1 AND subject = 'alice@example.org'",
            &[&provider],
        )
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .expect("the identity");
    assert_eq!(email.as_deref(), Some("alice@example.org"));
    assert_eq!(name_.as_deref(), Some("Alice Liddell"));
    assert_eq!(groups, vec!["staff", "dba"]);
    s
}

#[test]
fn an_sp_initiated_login_in_chromium_with_the_response_signed_ends_in_a_session() {
    browser_login(
        "saml-idp-response-signed",
        Signing::Response,
        Strict::default(),
        "corp",
    );
}

#[test]
fn an_sp_initiated_login_in_chromium_with_only_the_assertion_signed_ends_in_a_session() {
    browser_login(
        "saml-idp-assertion-signed",
        Signing::AssertionOnly,
        Strict::default(),
        "corp",
    );
}

#[test]
fn an_idp_initiated_login_is_taken_where_the_provider_allows_it_and_refused_by_default() {
    let mut s = Setup::start("saml-idp-initiated", Signing::Response);
    let entity = |p: &str| s.sidecar.url(&format!("/auth/{p}/metadata"));
    let open = s.idp.log_in(
        &s.idp.url(&format!("/idp-initiated?sp={}", entity("open"))),
        BOB,
    );
    assert_eq!(open.action, s.sidecar.url("/auth/open/callback"));
    let a = s.post_acs("open", &open, None);
    assert_eq!(a.status, 200, "{}\n{}", a.text, s.sidecar.log());
    assert_eq!(a.body["role"], "app_user", "{}", a.text);
    let token = a.body["access_token"].as_str().expect("a session token");
    let claims = verify_in_sql(&mut s.admin, token).expect("verify_jwt accepts the session");
    assert_eq!(claims["role"], "app_user", "{claims}");

    let corp = s.idp.log_in(
        &s.idp.url(&format!("/idp-initiated?sp={}", entity("corp"))),
        ALICE,
    );
    let a = s.post_acs("corp", &corp, None);
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(a.body.get("access_token").is_none(), "{}", a.text);
    let reasons = s.refusals("corp");
    assert!(
        reasons.iter().any(|r| r.contains("IdP-initiated")),
        "{reasons:?}"
    );
}

#[test]
fn a_real_response_replayed_is_refused_even_where_idp_initiated_logins_are_allowed() {
    let mut s = Setup::start("saml-idp-replay", Signing::Response);
    let posted = s.idp.log_in(&s.start_login("open"), ALICE);
    let a = s.post_acs("open", &posted, None);
    assert_eq!(a.status, 200, "{}\n{}", a.text, s.sidecar.log());
    // The login in progress is taken, and an IdP-initiated one is allowed
    // here: only the record of used assertions stops it.
    let a = s.post_acs("open", &posted, None);
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(a.body.get("access_token").is_none(), "{}", a.text);
    let reasons = s.refusals("open");
    assert!(
        reasons.iter().any(|r| r.contains("used already")),
        "{reasons:?}"
    );
}

#[test]
fn a_real_response_posted_for_another_login_is_refused() {
    let mut s = Setup::start("saml-idp-other-login", Signing::Response);
    let first = s.start_login("corp");
    let second = s.start_login("corp");
    let posted = s.idp.log_in(&first, ALICE);
    let second_state = query(&second, "RelayState").expect("RelayState");
    let a = s.post_acs("corp", &posted, Some(&second_state));
    assert_eq!(a.status, 401, "{}", a.text);
    let reasons = s.refusals("corp");
    assert!(
        reasons.iter().any(|r| r.contains("InResponseTo")),
        "{reasons:?}"
    );
    // The same Response for its own login is taken: it was refused for
    // answering another login, not for anything else.
    let a = s.post_acs("corp", &posted, None);
    assert_eq!(a.status, 200, "{}\n{}", a.text, s.sidecar.log());
}

#[test]
fn a_real_response_checked_against_another_idp_certificate_is_refused() {
    let mut s = Setup::start("saml-idp-other-cert", Signing::Response);
    let posted = s.idp.log_in(&s.start_login("other"), ALICE);
    assert_eq!(posted.action, s.sidecar.url("/auth/other/callback"));
    let a = s.post_acs("other", &posted, None);
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(a.body.get("access_token").is_none(), "{}", a.text);
    let reasons = s.refusals("other");
    // samael finds no signature by a configured certificate.
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("must be signed"), "{reasons:?}");
    assert!(
        !reasons[0].contains("alice"),
        "no assertion content: {reasons:?}"
    );
}

#[test]
fn a_real_response_for_another_provider_is_refused_for_its_destination() {
    let mut s = Setup::start("saml-idp-other-sp", Signing::Response);
    // Signed by the right IdP for `open`, posted to `corp`'s ACS with a
    // login of `corp` in progress: its Destination and Audience are open's.
    let corp_state = query(&s.start_login("corp"), "RelayState").expect("RelayState");
    let posted = s.idp.log_in(&s.start_login("open"), ALICE);
    let a = s.post_acs("corp", &posted, Some(&corp_state));
    assert_eq!(a.status, 401, "{}", a.text);
    let reasons = s.refusals("corp");
    assert!(
        reasons.iter().any(|r| r.contains("Destination")),
        "{reasons:?}"
    );
}

const STRICT: Strict = Strict {
    want_signed_requests: true,
    encrypt: true,
};

/// The XML of a posted `SAMLResponse`.
fn response_xml(posted: &Posted) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(posted.saml_response.replace(['\r', '\n'], ""))
        .expect("base64");
    String::from_utf8(bytes).expect("UTF-8")
}

#[test]
fn a_login_with_a_signed_request_and_an_encrypted_assertion_in_chromium_ends_in_a_session() {
    for (name, signing) in [
        ("saml-idp-keyed-response-signed", Signing::Response),
        ("saml-idp-keyed-assertion-signed", Signing::AssertionOnly),
    ] {
        let s = browser_login(name, signing, STRICT, "keyed");
        // What the IdP answered was encrypted: nothing of Alice in the clear.
        let posted = s.idp.log_in(&s.start_login("keyed"), ALICE);
        let xml = response_xml(&posted);
        assert!(xml.contains("EncryptedAssertion"), "{xml}");
        assert!(!xml.contains("alice@example.org"), "{xml}");
        let a = s.post_acs("keyed", &posted, None);
        assert_eq!(a.status, 200, "{}\n{}", a.text, s.sidecar.log());
        assert_eq!(a.body["role"], "app_admin", "{}", a.text);
    }
}

#[test]
fn an_idp_wanting_signed_requests_refuses_ours_without_the_key_or_the_signature() {
    let s = Setup::start_strict("saml-idp-wants-signed", Signing::Response, STRICT);
    let keyed = s.start_login("keyed");
    for param in ["SigAlg=", "Signature="] {
        assert!(keyed.contains(&format!("&{param}")), "{keyed}");
    }
    let get = |url: &str| answer(browser().get(url).send().expect("GET the IdP"));
    let a = get(&keyed);
    assert_eq!(a.status, 200, "{}\n{}", a.text, s.idp.log());
    // The same provider's request without its signature, and a provider
    // without a key: refused by the IdP.
    let unsigned = keyed[..keyed.find("&Signature=").expect("signed")].to_owned();
    let a = get(&unsigned);
    assert_eq!(a.status, 403, "{}", a.text);
    let mut tampered = reqwest::Url::parse(&keyed).expect("url");
    let pairs: Vec<(String, String)> = tampered
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "RelayState" {
                (k, format!("{v}x"))
            } else {
                (k, v)
            }
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(&pairs);
    assert_eq!(
        get(tampered.as_str()).status,
        403,
        "the signature covers the RelayState"
    );
    let a = get(&s.start_login("corp"));
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.text.contains("IncorrectlySigned"), "{}", a.text);
}

#[test]
fn an_encrypted_assertion_to_a_provider_without_the_key_is_refused() {
    let mut s = Setup::start_strict("saml-idp-encrypted-unkeyed", Signing::Response, STRICT);
    // `open` takes IdP-initiated logins but has no key: the IdP encrypts
    // to a certificate it cannot decrypt with.
    let entity = s.sidecar.url("/auth/open/metadata");
    let posted = s
        .idp
        .log_in(&s.idp.url(&format!("/idp-initiated?sp={entity}")), ALICE);
    assert!(response_xml(&posted).contains("EncryptedAssertion"));
    let a = s.post_acs("open", &posted, None);
    assert_eq!(a.status, 401, "{}", a.text);
    assert!(a.body.get("access_token").is_none(), "{}", a.text);
    let reasons = s.refusals("open");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("encrypted") && r.contains("sp_private_key")),
        "{reasons:?}"
    );
}
