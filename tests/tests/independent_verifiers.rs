//! Our tokens checked by code that is not ours. panva's `jose` (Node) and
//! PyJWT with `cryptography` (Python) fetch the sidecar's
//! `/.well-known/jwks.json` over HTTP and verify real session tokens from LDAP
//! logins (EdDSA signature, `aud`, `iss`, `exp`, `role`), tokens from
//! `integration.sign_jwt` with the published key, and a session that expires
//! while the test waits; both refuse another audience, an expired token, a
//! token with one payload byte changed, another key's signature and a token
//! without `role`. Then PostgREST's request sequence replayed in SQL as a
//! NOINHERIT `authenticator`: the role and claims of a token that `jose`
//! verified, the `db-pre-request` hook (`integration.authenticate` for an
//! `x-api-key` header, `session_ended` for a session), and row-level security
//! on the `sub` claim and on the key id; ended sessions, revoked and unknown
//! keys make the hook raise.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_tests::ldap::{ADMINS_GROUP, BASE_DN};
use integration_tests::web::{answer, client, sso_database, verify_in_sql, wait_until};
use integration_tests::{workspace_root, PgCluster, Sidecar, Slapd};
use serde_json::{json, Value};
use std::fs;
use std::io::Write;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DB: &str = "verifiers_e2e";
/// The `aud` of every session token.
const AUDIENCE: &str = "pg_integration";

/// A cluster with the extension, roles to map logins to, a signing key, a
/// directory server and two LDAP providers using it: `corp` (sessions of an
/// hour) and `brief` (sessions of a minute, the shortest allowed).
fn setup() -> (PgCluster, postgres::Client, Slapd) {
    let cluster = PgCluster::start();
    let mut admin = sso_database(&cluster, DB);
    let slapd = Slapd::start();
    let provider = |name: &str, lifetime: &str| {
        format!(
            "SELECT integration.create_sso_provider('{name}', 'ldap',
                jsonb_build_object('url', '{}', 'user_dn_template', 'uid={{username}},ou=people,{BASE_DN}'),
                role_mapping => '[{{\"group\": \"{ADMINS_GROUP}\", \"role\": \"app_admin\"}}]',
                default_role => 'app_user', session_lifetime => '{lifetime}');",
            slapd.url()
        )
    };
    admin
        .batch_execute(&format!(
            "{}{}",
            provider("corp", "1 hour"),
            provider("brief", "1 minute"),
        ))
        .expect("roles and providers");
    (cluster, admin, slapd)
}

fn start_sidecar(cluster: &PgCluster) -> Sidecar {
    let sidecar = Sidecar::start(&cluster.url(DB, "integration_sidecar"), &[], None);
    wait_until(|| sidecar.log().contains("SSO configuration loaded"));
    sidecar
}

/// Logs `user` in at `provider` with a password and returns the session token.
fn login(sidecar: &Sidecar, provider: &str, user: &str) -> String {
    let a = answer(
        client()
            .post(sidecar.url(&format!("/auth/{provider}/login")))
            .header("content-type", "application/json")
            .body(json!({"username": user, "password": format!("{user}-secret")}).to_string())
            .send()
            .expect("POST login"),
    );
    assert_eq!(a.status, 200, "{user}: {}\n{}", a.body, sidecar.log());
    a.body["access_token"].as_str().expect("a token").to_owned()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// The claims of `token`, read without any check.
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

/// What one verifier answered, by token name.
type Verdicts = serde_json::Map<String, Value>;

/// Runs a verifier `command` with `input` on its stdin and returns its verdicts.
fn run_verifier(mut command: Command, input: &Value) -> Verdicts {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The sidecar is on loopback: no proxy of the caller's environment.
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .spawn()
        .expect("spawn a verifier");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write the verifier's input");
    let output = child.wait_with_output().expect("wait for the verifier");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?}: {stdout}\n{stderr}");
    match stdout.lines().last().map(serde_json::from_str) {
        Some(Ok(Value::Object(verdicts))) => verdicts,
        _ => panic!("{command:?} printed no verdicts\nstdout: {stdout}\nstderr: {stderr}"),
    }
}

/// panva's `jose`, run from build/oidc where `make test-deps` installs it.
/// Tests run in parallel: the script is written aside and renamed into place.
fn jose(input: &Value) -> Verdicts {
    let home = workspace_root().join("build/oidc");
    assert!(
        home.join("node_modules/jose").exists(),
        "{} lacks jose: run `make test-deps` (make test does it)",
        home.display()
    );
    let script = home.join("jose_verify.mjs");
    let fresh = home.join(format!("jose_verify.mjs.{}", std::process::id()));
    fs::copy(
        workspace_root().join("tests/verifiers/jose_verify.mjs"),
        &fresh,
    )
    .expect("copy jose_verify.mjs next to node_modules");
    fs::rename(&fresh, &script).expect("move jose_verify.mjs into place");
    let mut command = Command::new("node");
    command.arg(&script);
    run_verifier(command, input)
}

/// PyJWT with `cryptography`, from the test virtualenv.
fn pyjwt(input: &Value) -> Verdicts {
    let python = workspace_root().join("build/venv/bin/python");
    let ready = workspace_root().join("build/venv/.pyjwt");
    assert!(
        ready.exists(),
        "{} is missing: run `make test-deps` (make test does it)",
        ready.display()
    );
    let mut command = Command::new(python);
    command.arg(workspace_root().join("tests/verifiers/pyjwt_verify.py"));
    run_verifier(command, input)
}

/// What a verifier is asked: check `tokens` against the sidecar's JWKS,
/// expecting `audience` and the sidecar as the issuer.
fn verifier_input(sidecar: &Sidecar, audience: &str, tokens: &Value) -> Value {
    json!({
        "jwks_url": sidecar.url("/.well-known/jwks.json"),
        "audience": audience,
        "issuer": sidecar.base_url,
        "tokens": tokens,
    })
}

/// Both verifiers, named, on `tokens` with the expected `audience`.
fn verify_everywhere(
    sidecar: &Sidecar,
    audience: &str,
    tokens: &Value,
) -> [(&'static str, Verdicts); 2] {
    let input = verifier_input(sidecar, audience, tokens);
    [("jose", jose(&input)), ("PyJWT", pyjwt(&input))]
}

/// The claims a verifier accepted for `name`; panics on a refusal.
fn accepted<'v>(verifier: &str, verdicts: &'v Verdicts, name: &str) -> &'v Value {
    let verdict = &verdicts[name];
    assert_eq!(verdict["ok"], true, "{verifier} refused {name}: {verdict}");
    &verdict["claims"]
}

/// Asserts that a verifier refused `name` with `error` (jose's error code
/// or PyJWT's exception class) and returns the verdict.
fn refused<'v>(verifier: &str, verdicts: &'v Verdicts, name: &str, error: &str) -> &'v Value {
    let verdict = &verdicts[name];
    assert_eq!(
        verdict["ok"], false,
        "{verifier} accepted {name}: {verdict}"
    );
    assert_eq!(verdict["error"], error, "{verifier} on {name}: {verdict}");
    verdict
}

/// `claims` signed with `pem` under `kid` by `integration.sign_jwt` (EdDSA).
fn sign(admin: &mut postgres::Client, claims: &Value, pem: &str, kid: &str) -> String {
    admin
        .query_one(
            "SELECT integration.sign_jwt($1, $2, 'EdDSA', kid => $3)",
            &[claims, &pem, &kid],
        )
        .expect("sign_jwt")
        .get(0)
}

#[test]
fn jose_and_pyjwt_verify_session_tokens_from_the_jwks_and_refuse_forgeries() {
    let (cluster, mut admin, _slapd) = setup();
    let sidecar = start_sidecar(&cluster);
    // First, so that it has expired by the end of the test.
    let brief = login(&sidecar, "brief", "bob");
    let ada = login(&sidecar, "corp", "ada");
    let bob = login(&sidecar, "corp", "bob");

    // Tokens made with the published key through the project's own API:
    // one valid, the others each wrong in one way.
    let (kid, pem): (String, String) = {
        let row = admin
            .query_one(
                "SELECT kid, private_pem FROM integration.signing_keys WHERE retired_at IS NULL",
                &[],
            )
            .expect("the active key");
        (row.get(0), row.get(1))
    };
    let now = unix_now();
    let bob_claims = payload(&bob);
    let with = |changes: Value| {
        let mut claims = bob_claims.clone();
        for (k, v) in changes.as_object().expect("an object") {
            match v {
                Value::Null => claims.as_object_mut().expect("an object").remove(k),
                v => claims
                    .as_object_mut()
                    .expect("an object")
                    .insert(k.clone(), v.clone()),
            };
        }
        claims
    };
    let signed_in_sql = sign(&mut admin, &with(json!({"exp": now + 600})), &pem, &kid);
    let other_audience = sign(
        &mut admin,
        &with(json!({"aud": "another-service"})),
        &pem,
        &kid,
    );
    let expired = sign(
        &mut admin,
        &with(json!({"iat": now - 3600, "exp": now - 120})),
        &pem,
        &kid,
    );
    let no_role = sign(&mut admin, &with(json!({"role": null})), &pem, &kid);
    let other_pem: String = admin
        .query_one(
            "SELECT private_pem FROM integration._generate_signing_key()",
            &[],
        )
        .expect("another key")
        .get(0);
    let other_key = sign(&mut admin, &bob_claims, &other_pem, &kid);
    // One byte of the payload changed: bob's role `app_user` becomes `App_user`.
    let parts: Vec<&str> = bob.split('.').collect();
    let mut bytes = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url");
    let at = bytes
        .windows(10)
        .position(|w| w == b"\"app_user\"")
        .expect("the role in the payload");
    bytes[at + 1] = b'A';
    let changed_byte = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(&bytes),
        parts[2]
    );

    let tokens = json!({
        "ada": ada, "bob": bob, "brief": brief, "signed_in_sql": signed_in_sql,
        "other_audience": other_audience, "expired": expired, "no_role": no_role,
        "other_key": other_key, "changed_byte": changed_byte,
    });
    let sql_bob = verify_in_sql(&mut admin, &bob).expect("SQL verifies bob's session");
    for (verifier, verdicts) in verify_everywhere(&sidecar, AUDIENCE, &tokens) {
        let claims = accepted(verifier, &verdicts, "ada");
        assert_eq!(claims["role"], "app_admin", "{verifier}");
        assert_eq!(claims["sub"], format!("corp:uid=ada,ou=people,{BASE_DN}"));
        assert_eq!(claims["aud"], AUDIENCE);
        assert!(
            claims["exp"].as_i64().expect("exp") > now,
            "{verifier}: {claims}"
        );
        let claims = accepted(verifier, &verdicts, "bob");
        assert_eq!(claims["role"], "app_user", "{verifier}");
        assert_eq!(claims, &sql_bob, "{verifier} reads what verify_jwt reads");
        assert_eq!(accepted(verifier, &verdicts, "brief")["idp"], "brief");
        assert_eq!(
            accepted(verifier, &verdicts, "signed_in_sql")["role"],
            "app_user"
        );
        let (audience, expiry, signature, missing) = match verifier {
            "jose" => (
                "ERR_JWT_CLAIM_VALIDATION_FAILED",
                "ERR_JWT_EXPIRED",
                "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
                "ERR_JWT_CLAIM_VALIDATION_FAILED",
            ),
            _ => (
                "InvalidAudienceError",
                "ExpiredSignatureError",
                "InvalidSignatureError",
                "MissingRequiredClaimError",
            ),
        };
        let verdict = refused(verifier, &verdicts, "other_audience", audience);
        if verifier == "jose" {
            assert_eq!(verdict["claim"], "aud", "{verdict}");
        }
        refused(verifier, &verdicts, "expired", expiry);
        refused(verifier, &verdicts, "changed_byte", signature);
        refused(verifier, &verdicts, "other_key", signature);
        let verdict = refused(verifier, &verdicts, "no_role", missing);
        assert!(
            verdict["message"]
                .as_str()
                .unwrap_or_default()
                .contains("role"),
            "{verifier}: {verdict}"
        );
    }

    // A verifier expecting another audience refuses our genuine tokens.
    for (verifier, verdicts) in verify_everywhere(&sidecar, "someone-else", &tokens) {
        let error = if verifier == "jose" {
            "ERR_JWT_CLAIM_VALIDATION_FAILED"
        } else {
            "InvalidAudienceError"
        };
        refused(verifier, &verdicts, "ada", error);
        refused(verifier, &verdicts, "bob", error);
    }

    // The one-minute session, once its `exp` is past (no leeway in either).
    let exp = payload(&brief)["exp"].as_i64().expect("exp");
    assert!(exp <= unix_now() + 60, "a one-minute session: {exp}");
    let wait = exp + 2 - unix_now();
    if wait > 0 {
        sleep(Duration::from_secs(wait as u64));
    }
    for (verifier, verdicts) in verify_everywhere(&sidecar, AUDIENCE, &json!({"brief": brief})) {
        let expiry = if verifier == "jose" {
            "ERR_JWT_EXPIRED"
        } else {
            "ExpiredSignatureError"
        };
        refused(verifier, &verdicts, "brief", expiry);
    }
}

// ---- PostgREST's request sequence, replayed in SQL ----

/// What PostgREST knows of a request once it has checked the JWT (if any).
struct Request {
    /// The `role` claim, or the anonymous role without a JWT.
    role: String,
    claims: Value,
    /// Header names in lower case, as PostgREST publishes them.
    headers: Value,
}

/// Runs `query` as PostgREST runs a request, in one transaction of the
/// `authenticator` login: the locals first (`set_config('role', …, true)` is
/// PostgREST's `SET LOCAL ROLE`), then the `db-pre-request` function, then
/// the query. Returns `current_user` after the hook and the query's first
/// column, or the error that fails the request.
fn postgrest(
    authenticator: &mut postgres::Client,
    request: &Request,
    query: &str,
) -> Result<(String, Vec<String>), postgres::Error> {
    let mut tx = authenticator.transaction()?;
    tx.execute(
        "SELECT set_config('search_path', 'api', true),
                set_config('role', $1, true),
                set_config('request.jwt.claims', $2, true),
                set_config('request.method', 'GET', true),
                set_config('request.path', '/notes', true),
                set_config('request.headers', $3, true),
                set_config('request.cookies', '{}', true)",
        &[
            &request.role,
            &request.claims.to_string(),
            &request.headers.to_string(),
        ],
    )?;
    let row = tx.query_one("SELECT current_user::text, session_user::text", &[])?;
    assert_eq!(
        row.get::<_, String>(0),
        request.role,
        "the role is switched"
    );
    assert_eq!(row.get::<_, String>(1), "authenticator");
    tx.execute("SELECT api.pre_request()", &[])?;
    let user: String = tx.query_one("SELECT current_user::text", &[])?.get(0);
    let rows = tx.query(query, &[])?.iter().map(|r| r.get(0)).collect();
    tx.commit()?;
    Ok((user, rows))
}

fn sqlstate(result: Result<(String, Vec<String>), postgres::Error>) -> String {
    let e = result.expect_err("the request fails");
    e.code()
        .map(|c| c.code().to_owned())
        .unwrap_or_else(|| e.to_string())
}

/// A request carrying a session token that `jose` verified: its role and claims.
fn session_request(token: &str, claims: &Value) -> Request {
    Request {
        role: claims["role"].as_str().expect("a role claim").to_owned(),
        claims: claims.clone(),
        headers: json!({"authorization": format!("Bearer {token}")}),
    }
}

/// A request without a JWT (the anonymous role) carrying an API key.
fn key_request(key: &str) -> Request {
    Request {
        role: "web_anon".into(),
        claims: json!({"role": "web_anon"}),
        headers: json!({"x-api-key": key}),
    }
}

#[test]
fn the_postgrest_request_sequence_applies_the_role_the_hook_and_row_level_security() {
    let (cluster, mut admin, _slapd) = setup();
    // The README's PostgREST setup: a NOINHERIT authenticator granted the
    // API roles, an anonymous role, a hook calling integration.authenticate
    // for an API key (and refusing ended sessions), and row-level security
    // on the session's `sub` and on the key id.
    admin
        .batch_execute(
            "CREATE ROLE web_anon NOLOGIN;
             CREATE ROLE app_other NOLOGIN;
             CREATE ROLE authenticator LOGIN NOINHERIT;
             GRANT web_anon, app_user, app_admin TO authenticator;
             GRANT integration_user TO web_anon, app_user, app_admin;
             CREATE SCHEMA api;
             GRANT USAGE ON SCHEMA api TO web_anon, app_user, app_admin;
             CREATE TABLE api.notes (
                 owner text NOT NULL DEFAULT current_setting('request.jwt.claims', true)::jsonb->>'sub',
                 body text NOT NULL);
             ALTER TABLE api.notes ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own_notes ON api.notes
                 USING (owner = current_setting('request.jwt.claims', true)::jsonb->>'sub');
             GRANT SELECT, INSERT ON api.notes TO app_user, app_admin;
             INSERT INTO api.notes VALUES
                 ('corp:uid=bob,ou=people,dc=example,dc=org', 'bob''s note'),
                 ('corp:uid=ada,ou=people,dc=example,dc=org', 'ada''s note');
             CREATE TABLE api.orders (api_key bigint NOT NULL, item text NOT NULL);
             ALTER TABLE api.orders ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own_orders ON api.orders
                 USING (api_key = nullif(current_setting('integration.api_key_id', true), '')::bigint);
             GRANT SELECT ON api.orders TO app_user;
             CREATE FUNCTION api.pre_request() RETURNS void LANGUAGE plpgsql AS $$
             BEGIN
                 IF current_setting('request.headers', true)::json->>'x-api-key' IS NOT NULL THEN
                     PERFORM integration.authenticate(current_setting('request.headers', true)::json->>'x-api-key');
                 ELSIF integration.session_ended(current_setting('request.jwt.claims', true)::jsonb->>'jti') THEN
                     RAISE EXCEPTION 'the session was ended by a logout' USING ERRCODE = '28000';
                 END IF;
             END $$;
             GRANT EXECUTE ON FUNCTION api.pre_request() TO web_anon, app_user, app_admin;",
        )
        .expect("schema");
    let sidecar = start_sidecar(&cluster);
    let ada = login(&sidecar, "corp", "ada");
    let bob = login(&sidecar, "corp", "bob");
    // PostgREST's part: the token checked by someone else's code.
    let verdicts = jose(&verifier_input(
        &sidecar,
        AUDIENCE,
        &json!({"ada": ada, "bob": bob}),
    ));
    let ada_request = session_request(&ada, accepted("jose", &verdicts, "ada"));
    let bob_request = session_request(&bob, accepted("jose", &verdicts, "bob"));
    let mut authenticator = cluster.connect_as(DB, "authenticator");

    // NOINHERIT: without the role switch the authenticator reads nothing.
    let direct = authenticator.query("SELECT body FROM api.notes", &[]);
    assert_eq!(
        direct
            .expect_err("no rights of its own")
            .code()
            .map(|c| c.code()),
        Some("42501")
    );
    let notes = "SELECT body FROM notes ORDER BY body";
    let (user, seen) = postgrest(&mut authenticator, &bob_request, notes).expect("bob");
    assert_eq!(user, "app_user");
    assert_eq!(seen, vec!["bob's note"]);
    let (user, seen) = postgrest(&mut authenticator, &ada_request, notes).expect("ada");
    assert_eq!(user, "app_admin");
    assert_eq!(seen, vec!["ada's note"]);
    // A new row belongs to the session; one for someone else is refused.
    let insert = "INSERT INTO notes (body) VALUES ('bob''s second note') RETURNING owner";
    let (_, owner) = postgrest(&mut authenticator, &bob_request, insert).expect("insert");
    assert_eq!(
        owner,
        vec![bob_request.claims["sub"].as_str().expect("sub")]
    );
    let forged =
        "INSERT INTO notes VALUES ('corp:uid=ada,ou=people,dc=example,dc=org', 'x') RETURNING body";
    assert_eq!(
        sqlstate(postgrest(&mut authenticator, &bob_request, forged)),
        "42501"
    );
    let (_, seen) = postgrest(&mut authenticator, &bob_request, notes).expect("bob again");
    assert_eq!(seen, vec!["bob's note", "bob's second note"]);

    // A logout ends the session: jose still accepts the token (it cannot
    // know), the hook refuses it, so the request fails.
    let out = answer(
        client()
            .post(sidecar.url("/auth/logout"))
            .header("cookie", format!("pg_integration_session={bob}"))
            .send()
            .expect("logout"),
    );
    assert_eq!(out.body["session_ended"], true, "{}", out.body);
    assert_eq!(
        sqlstate(postgrest(&mut authenticator, &bob_request, notes)),
        "28000"
    );
    assert!(postgrest(&mut authenticator, &ada_request, notes).is_ok());

    // API keys: the anonymous role, an x-api-key header, and the hook's
    // integration.authenticate switching to the key's role.
    let key = |admin: &mut postgres::Client, name: &str, role: &str| -> (i64, String) {
        let token: String = admin
            .query_one("SELECT integration.create_api_key($1, $2)", &[&name, &role])
            .expect("create_api_key")
            .get(0);
        let id = admin
            .query_one("SELECT (integration.verify_api_key($1)).id", &[&token])
            .expect("verify_api_key")
            .get(0);
        (id, token)
    };
    let (first_id, first) = key(&mut admin, "first service", "app_user");
    let (second_id, second) = key(&mut admin, "second service", "app_user");
    let (_, elsewhere) = key(&mut admin, "not the authenticator's", "app_other");
    admin
        .execute(
            "INSERT INTO api.orders VALUES ($1, 'first''s order'), ($2, 'second''s order')",
            &[&first_id, &second_id],
        )
        .expect("orders");
    let orders =
        "SELECT item || ' as key ' || current_setting('integration.api_key_id') FROM orders";
    let (user, seen) = postgrest(&mut authenticator, &key_request(&first), orders).expect("first");
    assert_eq!(user, "app_user", "the hook switched from web_anon");
    assert_eq!(seen, vec![format!("first's order as key {first_id}")]);
    let (_, seen) = postgrest(&mut authenticator, &key_request(&second), orders).expect("second");
    assert_eq!(seen, vec![format!("second's order as key {second_id}")]);
    // Refusals fail the request (PostgREST answers with an error status).
    admin
        .execute("SELECT integration.revoke_api_key($1)", &[&second_id])
        .expect("revoke");
    assert_eq!(
        sqlstate(postgrest(&mut authenticator, &key_request(&second), orders)),
        "28000"
    );
    // A mistyped key: its checksum no longer matches.
    let mut unknown = first.clone();
    let last = if first.ends_with('0') { "1" } else { "0" };
    unknown.replace_range(first.len() - 1.., last);
    assert_eq!(
        sqlstate(postgrest(
            &mut authenticator,
            &key_request(&unknown),
            orders
        )),
        "28000"
    );
    assert_eq!(
        sqlstate(postgrest(
            &mut authenticator,
            &key_request(&elsewhere),
            orders
        )),
        "42501",
        "a key for a role the authenticator was not granted"
    );
    // Without a key the anonymous role has no rights on the table.
    let anonymous = Request {
        role: "web_anon".into(),
        claims: json!({"role": "web_anon"}),
        headers: json!({}),
    };
    assert_eq!(
        sqlstate(postgrest(&mut authenticator, &anonymous, orders)),
        "42501"
    );
}
