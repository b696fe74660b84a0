//! sso: SAML logins at the ACS of the release sidecar. `BENCH_LOGINS`
//! (default 200) SP-initiated logins are started and their Responses signed
//! by `xmlsec1` first (not timed); then each Response is posted to the ACS
//! one after the other from a client without cookies, as the IdP's browser
//! does, and timed from the POST to the sidecar's answer (signature check,
//! the single-use records in PostgreSQL, the identity upsert, the session
//! JWT). Beside it, one connection's `GET /healthz` (the HTTP limit) and
//! `GET /auth/corp/login` (the AuthnRequest), timed the same way.

use integration_tests::saml_signer::start_login;
use integration_tests::web::{answer, browser, client, sso_database};
use integration_tests::{workspace_root, PgCluster, SamlSigner, Sidecar};
use std::time::Instant;

const IDP: &str = "https://idp.example.net/saml";

/// p50 and p99 of `times` (ms).
fn percentiles(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

pub fn sso() {
    let logins: usize = std::env::var("BENCH_LOGINS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let cluster = PgCluster::start();
    let mut db = sso_database(&cluster, "bench_sso");
    let signer = SamlSigner::new("bench");
    let config = serde_json::json!({
        "idp_entity_id": IDP,
        "idp_sso_url": "https://idp.example.net/sso",
        "idp_certificates": [signer.cert_pem],
        "attributes": {"email": "mail", "name": "cn", "groups": "groups"},
    });
    db.execute(
        "SELECT integration.create_sso_provider('corp', 'saml', $1::jsonb,
             role_mapping => '[{\"group\": \"staff\", \"role\": \"app_admin\"}]',
             default_role => 'app_user')",
        &[&config],
    )
    .expect("the provider");
    std::env::set_var(
        "INTEGRATION_SIDECAR_BIN",
        workspace_root().join("target/release/integration-sidecar"),
    );
    let sidecar = Sidecar::start(&cluster.url("bench_sso", "integration_sidecar"), &[], None);
    while !sidecar.log().contains("SSO configuration loaded") {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (now, later): (String, String) = {
        let row = db
            .query_one(
                "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                        to_char((now() + interval '10 minutes') AT TIME ZONE 'UTC',
                                'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
                &[],
            )
            .expect("now");
        (row.get(0), row.get(1))
    };

    let starter = browser();
    let mut starts = Vec::with_capacity(logins);
    let mut pending = Vec::with_capacity(logins);
    for i in 0..logins {
        let began = Instant::now();
        let (relay_state, request_id) = start_login(&starter, &sidecar, "corp");
        starts.push(began.elapsed().as_secs_f64() * 1000.0);
        let response = signer.signed_response(
            IDP,
            &sidecar.base_url,
            "corp",
            Some(&request_id),
            &format!("_bench-{i}"),
            &now,
            &later,
        );
        pending.push((relay_state, response));
    }

    let poster = client();
    let mut acs = Vec::with_capacity(logins);
    for (relay_state, response) in &pending {
        let began = Instant::now();
        let a = answer(
            poster
                .post(sidecar.url("/auth/corp/callback"))
                .form(&[("SAMLResponse", response), ("RelayState", relay_state)])
                .send()
                .expect("POST the ACS"),
        );
        acs.push(began.elapsed().as_secs_f64() * 1000.0);
        // No redirect_to: the session comes back as JSON.
        assert_eq!(a.status, 200, "{}\n{}", a.text, sidecar.log());
        assert_eq!(a.body["role"], "app_admin", "{}", a.text);
    }
    let mut health = Vec::with_capacity(logins);
    for _ in 0..logins {
        let began = Instant::now();
        let status = poster
            .get(sidecar.url("/healthz"))
            .send()
            .expect("GET /healthz")
            .status();
        health.push(began.elapsed().as_secs_f64() * 1000.0);
        assert!(status.is_success());
    }
    let sessions: i64 = db
        .query_one(
            "SELECT count(*) FROM integration.audit_log WHERE action = 'sso.login' AND ok",
            &[],
        )
        .expect("count the logins")
        .get(0);

    let (acs_50, acs_99) = percentiles(&mut acs);
    let (start_50, start_99) = percentiles(&mut starts);
    let (health_50, health_99) = percentiles(&mut health);
    println!("\n## sso (SAML, {logins} logins, one connection, release sidecar)");
    println!(
        "GET /healthz (HTTP limit)           p50 {health_50:>7.2} ms  p99 {health_99:>7.2} ms"
    );
    println!("GET /auth/corp/login (AuthnRequest) p50 {start_50:>7.2} ms  p99 {start_99:>7.2} ms");
    println!("POST /auth/corp/callback (ACS)      p50 {acs_50:>7.2} ms  p99 {acs_99:>7.2} ms");
    println!("logins audited as successful        {sessions:>10}");
    println!(
        "ratio ACS / healthz (p50)           {:>10.1}x",
        acs_50 / health_50
    );
}
