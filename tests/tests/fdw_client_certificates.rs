//! End-to-end: a user mapping's client certificate (`sslcert`/`sslkey`
//! for postgres_wrapper, `ssl_cert`/`ssl_key` for mysql_wrapper) logs in
//! to a remote that requires one; without it, or with one of another CA,
//! the remote refuses; a certificate without its key is an option error;
//! add_data_source takes the certificate as URL parameters.

use integration_tests::certs::ServerCertificate;
use integration_tests::sql::{db_message, texts};
use integration_tests::{MariaDb, PgCluster};
use postgres::Client;
use std::path::Path;

/// Creates server `name` (`server_options` after host and port), a
/// mapping for the current user with `mapping` and foreign table `name`
/// over the remote table `t`.
fn source(db: &mut Client, wrapper: &str, name: &str, server_options: &str, mapping: &str) {
    db.batch_execute(&format!(
        "CREATE SERVER {name} FOREIGN DATA WRAPPER {wrapper} OPTIONS ({server_options});
         CREATE USER MAPPING FOR CURRENT_USER SERVER {name} OPTIONS ({mapping});
         CREATE FOREIGN TABLE {name} (id int, v text) SERVER {name} OPTIONS (table_name 't')"
    ))
    .unwrap();
}

/// add_data_source `by_url` for `url` (table `t` only) reads the row.
fn by_url(db: &mut Client, url: &str) {
    db.execute(
        "SELECT integration.add_data_source('by_url', $1, '{\"tables\": [\"t\"]}')",
        &[&url],
    )
    .unwrap_or_else(|e| panic!("{url}: {e:?}"));
    assert_eq!(texts(db, "SELECT v FROM by_url.t"), ["sealed"]);
}

fn refused(db: &mut Client, table: &str, cause: &str) {
    let err = db
        .query(&format!("SELECT v FROM {table}"), &[])
        .expect_err(table);
    let message = db_message(&err);
    assert!(message.contains(cause), "{table}: {message}");
}

/// The identity options of a mapping: `user`, and the certificate files.
fn identity(
    user: &str,
    names: (&str, &str),
    (cert, key): &(impl AsRef<Path>, impl AsRef<Path>),
) -> String {
    format!(
        "user '{user}', {} '{}', {} '{}'",
        names.0,
        cert.as_ref().display(),
        names.1,
        key.as_ref().display()
    )
}

fn folder(name: &str) -> std::path::PathBuf {
    std::env::temp_dir()
        .join("pg_integration-e2e")
        .join(format!("{name}-{}", std::process::id()))
}

#[test]
fn postgres_wrapper_logs_in_with_a_client_certificate() {
    let dir = folder("pg-client-cert");
    let certs = ServerCertificate::new(&dir.join("remote"), "DNS:localhost");
    let stranger = ServerCertificate::new(&dir.join("stranger"), "DNS:localhost");
    let remote = PgCluster::start_with_tls(&certs.cert, &certs.key);
    remote
        .connect("postgres")
        .batch_execute(
            "CREATE ROLE cert_user LOGIN;
             CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'sealed');
             GRANT SELECT ON t TO cert_user;",
        )
        .unwrap();
    remote.require_client_certificate(&certs.ca, "cert_user");
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    let server = format!(
        "host 'localhost', port '{}', dbname 'postgres', sslmode 'verify-full', sslrootcert '{}'",
        remote.port(),
        certs.ca.display()
    );
    let names = ("sslcert", "sslkey");
    let client = certs.client("cert_user");
    let mine = identity("cert_user", names, &client);
    source(&mut db, "postgres_wrapper", "with_cert", &server, &mine);
    assert_eq!(texts(&mut db, "SELECT v FROM with_cert"), ["sealed"]);
    // add_data_source takes the certificate as URL parameters (libpq's).
    let url = format!(
        "postgresql://cert_user@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        remote.port(),
        certs.ca.display(),
        client.0.display(),
        client.1.display()
    );
    by_url(&mut db, &url);
    let dn = texts(
        &mut db,
        "SELECT q->>'client_dn' FROM integration.query('with_cert',
           'SELECT client_dn FROM pg_stat_ssl WHERE pid = pg_backend_pid()') q",
    );
    assert_eq!(dn, ["/CN=cert_user"]);

    source(
        &mut db,
        "postgres_wrapper",
        "no_cert",
        &server,
        "user 'cert_user'",
    );
    refused(&mut db, "no_cert", "certificate");
    let theirs = identity("cert_user", names, &stranger.client("cert_user"));
    source(&mut db, "postgres_wrapper", "other_ca", &server, &theirs);
    refused(&mut db, "other_ca", "UnknownCA");

    db.batch_execute("ALTER USER MAPPING FOR CURRENT_USER SERVER with_cert OPTIONS (DROP sslkey)")
        .unwrap();
    refused(&mut db, "with_cert", "sslkey");
}

#[test]
fn mysql_wrapper_logs_in_with_a_client_certificate() {
    let dir = folder("mariadb-client-cert");
    let certs = ServerCertificate::new(&dir.join("remote"), "DNS:localhost");
    let stranger = ServerCertificate::new(&dir.join("stranger"), "DNS:localhost");
    let remote = MariaDb::start_with_tls(&certs.ca, &certs.cert, &certs.key);
    remote.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v TEXT);
         INSERT INTO shop.t VALUES (1, 'sealed');
         CREATE USER 'cert_user'@'127.0.0.1' REQUIRE SUBJECT '/CN=cert_user';
         GRANT SELECT ON shop.* TO 'cert_user'@'127.0.0.1';",
    );
    let local = PgCluster::start();
    let mut db = local.create_database("app");
    let server = format!(
        "host 'localhost', port '{}', dbname 'shop', ssl_mode 'verify_identity', ssl_ca '{}'",
        remote.port(),
        certs.ca.display()
    );
    let names = ("ssl_cert", "ssl_key");
    let client = certs.client("cert_user");
    let mine = identity("cert_user", names, &client);
    source(&mut db, "mysql_wrapper", "with_cert", &server, &mine);
    assert_eq!(texts(&mut db, "SELECT v FROM with_cert"), ["sealed"]);
    let url = format!(
        "mysql://cert_user@localhost:{}/shop?ssl-mode=verify_identity&ssl-ca={}&ssl-cert={}&ssl-key={}",
        remote.port(),
        certs.ca.display(),
        client.0.display(),
        client.1.display()
    );
    by_url(&mut db, &url);

    source(
        &mut db,
        "mysql_wrapper",
        "no_cert",
        &server,
        "user 'cert_user'",
    );
    refused(&mut db, "no_cert", "Access denied");
    let theirs = identity("cert_user", names, &stranger.client("cert_user"));
    source(&mut db, "mysql_wrapper", "other_ca", &server, &theirs);
    refused(&mut db, "other_ca", "UnknownCA");

    db.batch_execute("ALTER USER MAPPING FOR CURRENT_USER SERVER with_cert OPTIONS (DROP ssl_key)")
        .unwrap();
    refused(&mut db, "with_cert", "ssl_key");
}
