//! End-to-end: no secret that a statement passes to pg_integration reaches
//! the server log (issue 23, item 2). Each call below fails; PostgreSQL
//! logs each error, and by default (`log_min_error_statement = error`) the
//! statement that raised it: ours are logged without it.

use integration_tests::PgCluster;

#[test]
fn failing_calls_that_carry_secrets_leave_them_out_of_the_server_log() {
    let cluster = PgCluster::start();
    let mut db = cluster.create_database("app");
    db.batch_execute("CREATE ROLE web_user NOLOGIN").unwrap();
    let token: String = db
        .query_one("SELECT integration.create_api_key('k', 'web_user')", &[])
        .unwrap()
        .get(0);
    db.query_one("SELECT integration.revoke_api_key(1)", &[])
        .unwrap();
    let failing = [
        format!("SELECT integration.authenticate('{token}')"),
        "SELECT integration.verify_jwt('eyJhbGciOiJIUzI1NiJ9.e30.sig-marker-1',
             'jwt-key-marker-2-0123456789abcdef0123456789')"
            .to_string(),
        "SELECT integration.sign_jwt('{}', 'short-key-marker-3')".to_string(),
        "SELECT integration.add_data_source('remote',
             'postgresql://u:pw-marker-4@127.0.0.1:1/db')"
            .to_string(),
        "SELECT integration.http_get('http://127.0.0.1:1/',
             headers => '{\"Authorization\": \"Bearer hdr-marker-5\"}')"
            .to_string(),
        "SELECT integration.http_enqueue('GET', 'http://127.0.0.1:1/',
             headers => '{\"X-Api-Key\": \"hdr-marker-6\"}')"
            .to_string(),
        "SELECT * FROM integration.create_webhook('w', 'standard',
             secret => 'not-base64 marker-7')"
            .to_string(),
    ];
    let markers = [
        token.as_str(),
        "sig-marker-1",
        "jwt-key-marker-2",
        "short-key-marker-3",
        "pw-marker-4",
        "hdr-marker-5",
        "hdr-marker-6",
        "marker-7",
    ];
    for sql in &failing {
        let error = db.batch_execute(sql).unwrap_err();
        let message = error.as_db_error().map(|e| e.message().to_string());
        assert!(message.is_some(), "{sql}: {error}");
    }
    let log = cluster.log();
    assert!(
        log.matches("ERROR:").count() >= failing.len(),
        "every failure is logged\n{log}"
    );
    for marker in markers {
        assert!(
            !log.contains(marker),
            "{marker} reached the server log:\n{log}"
        );
    }
}

/// A user mapping that PostgreSQL refuses (here a repeated option) must
/// not quote the password in the error's CONTEXT, to the client or the log.
#[test]
fn a_refused_user_mapping_does_not_quote_the_password() {
    let cluster = PgCluster::start();
    let mut db = cluster.create_database("app");
    let error = db
        .batch_execute(
            "SELECT integration.add_data_source('dup',
                 'postgresql://u:pw-marker-9@127.0.0.1:1/db?sslcert=/a&sslcert=/b')",
        )
        .unwrap_err();
    let db_error = error.as_db_error().expect("a database error");
    let everything = format!(
        "{} {:?} {:?} {:?}",
        db_error.message(),
        db_error.detail(),
        db_error.hint(),
        db_error.where_()
    );
    assert!(everything.contains("sslcert"), "{everything}");
    assert!(!everything.contains("pw-marker-9"), "{everything}");
    assert!(!cluster.log().contains("pw-marker-9"), "{}", cluster.log());
}
