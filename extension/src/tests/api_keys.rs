//! In-database tests of the API key functions (one transaction each).

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn one<T: pgrx::FromDatum + pgrx::IntoDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).expect(sql)
    }

    fn create(extra: &str) -> String {
        one::<String>(&format!(
            "SELECT integration.create_api_key('test key', 'postgres'{extra})"
        ))
        .expect("a token")
    }

    fn verifies(token: &str, scope: Option<&str>) -> bool {
        let scope = scope.map_or("NULL".to_string(), |s| format!("'{s}'"));
        one::<i64>(&format!(
            "SELECT count(*) FROM integration.verify_api_key('{token}', {scope})"
        )) == Some(1)
    }

    #[pg_test]
    fn a_created_key_verifies_and_returns_its_row() {
        let token = create(", scopes => '{orders:read}', metadata => '{\"team\":\"billing\"}'");
        assert!(token.starts_with("pgik_"));
        let row = Spi::get_three::<String, String, pgrx::JsonB>(&format!(
            "SELECT name, role, metadata FROM integration.verify_api_key('{token}')"
        ))
        .unwrap();
        assert_eq!(row.0.as_deref(), Some("test key"));
        assert_eq!(row.1.as_deref(), Some("postgres"));
        assert_eq!(row.2.unwrap().0["team"], "billing");
    }

    #[pg_test]
    fn only_a_hash_is_stored() {
        let token = create("");
        let stored = one::<bool>(&format!(
            "SELECT bool_or(position(convert_to('{}', 'UTF8') in secret_hash) > 0)
             FROM integration.api_key_store",
            &token[token.len() - 49..]
        ));
        assert_eq!(stored, Some(false));
        assert_eq!(
            one::<i32>("SELECT length(secret_hash) FROM integration.api_key_store LIMIT 1"),
            Some(32)
        );
    }

    #[pg_test]
    fn wrong_tampered_and_malformed_tokens_return_no_row() {
        let token = create("");
        let id: i64 = token[5..token
            .find('_')
            .map_or(5, |_| token[5..].find('_').unwrap() + 5)]
            .parse()
            .unwrap();
        let other = integration_core::api_keys::generate(id);
        assert!(verifies(&token, None));
        assert!(
            !verifies(&other, None),
            "a well-formed token with another secret"
        );
        assert!(!verifies(&token.replace("pgik_", "pgik_9"), None));
        assert!(!verifies(&token[..token.len() - 1], None));
        assert!(!verifies("", None));
        assert!(!verifies("pgik_1_x", None));
    }

    #[pg_test]
    fn scopes_are_enforced() {
        let token = create(", scopes => '{orders:read,webhooks:*}'");
        assert!(verifies(&token, None));
        assert!(verifies(&token, Some("orders:read")));
        assert!(verifies(&token, Some("webhooks:github")));
        assert!(!verifies(&token, Some("orders:write")));
    }

    #[pg_test]
    fn revoked_keys_stop_verifying_at_once() {
        let token = create("");
        assert!(verifies(&token, None), "warms the cache");
        let id = one::<i64>(&format!(
            "SELECT id FROM integration.verify_api_key('{token}')"
        ))
        .unwrap();
        assert_eq!(
            one::<bool>(&format!("SELECT integration.revoke_api_key({id})")),
            Some(true)
        );
        assert!(!verifies(&token, None));
        assert_eq!(
            one::<bool>(&format!("SELECT integration.revoke_api_key({id})")),
            Some(false)
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT status FROM integration.api_keys WHERE id = {id}"
            ))
            .as_deref(),
            Some("revoked")
        );
    }

    #[pg_test]
    fn expired_keys_do_not_verify() {
        let token = create(", expires_in => '1 hour'");
        assert!(verifies(&token, None));
        Spi::run("UPDATE integration.api_key_store SET expires_at = now() - interval '1 second'")
            .unwrap();
        assert!(!verifies(&token, None));
    }

    #[pg_test]
    fn rotation_keeps_the_old_token_for_the_grace_period() {
        let old = create(", scopes => '{a:b}', expires_in => '30 days'");
        let id = one::<i64>(&format!(
            "SELECT id FROM integration.verify_api_key('{old}')"
        ))
        .unwrap();
        let new = one::<String>(&format!(
            "SELECT integration.rotate_api_key({id}, interval '10 minutes')"
        ))
        .unwrap();
        assert_ne!(old, new);
        assert!(verifies(&old, Some("a:b")));
        assert!(verifies(&new, Some("a:b")));
        let (grace_ok, lifetime_ok) = Spi::get_two::<bool, bool>(&format!(
            "SELECT (SELECT expires_at <= now() + interval '10 minutes' FROM integration.api_key_store WHERE id = {id}),
                    (SELECT expires_at > now() + interval '29 days' FROM integration.api_key_store WHERE rotated_from = {id})"
        ))
        .unwrap();
        assert_eq!((grace_ok, lifetime_ok), (Some(true), Some(true)));
        let zero = one::<String>(&format!(
            "SELECT integration.rotate_api_key((SELECT id FROM integration.verify_api_key('{new}')), interval '0')"
        ))
        .unwrap();
        assert!(
            !verifies(&new, None),
            "no grace: the old token stops at once"
        );
        assert!(verifies(&zero, None));
    }

    #[pg_test]
    fn changes_are_audited_without_secrets() {
        let token = create("");
        let id = one::<i64>(&format!(
            "SELECT id FROM integration.verify_api_key('{token}')"
        ))
        .unwrap();
        let rotated = one::<String>(&format!("SELECT integration.rotate_api_key({id})")).unwrap();
        Spi::run(&format!("SELECT integration.revoke_api_key({id})")).unwrap();
        let actions = one::<String>(&format!(
            "SELECT string_agg(action, ',' ORDER BY id) FROM integration.audit_log WHERE target = 'api_key:{id}'"
        ));
        assert_eq!(
            actions.as_deref(),
            Some("api_key.create,api_key.rotate,api_key.revoke")
        );
        for secret in [&token, &rotated] {
            let leaks = one::<i64>(&format!(
                "SELECT count(*) FROM integration.audit_log WHERE detail::text LIKE '%{}%'",
                &secret[secret.len() - 49..]
            ));
            assert_eq!(leaks, Some(0));
        }
    }

    #[pg_test(error = "role \"no_such_role\" does not exist")]
    fn unknown_roles_are_refused() {
        Spi::run("SELECT integration.create_api_key('k', 'no_such_role')").unwrap();
    }

    #[pg_test(error = "API key name must have 1 to 200 characters")]
    fn empty_names_are_refused() {
        Spi::run("SELECT integration.create_api_key('  ', 'postgres')").unwrap();
    }

    #[pg_test(error = "invalid scope \"a b\": segments use only letters, digits and . _ / -")]
    fn bad_scopes_are_refused() {
        Spi::run("SELECT integration.create_api_key('k', 'postgres', '{a b}')").unwrap();
    }

    #[pg_test(error = "expires_in must be a positive interval")]
    fn negative_lifetimes_are_refused() {
        Spi::run("SELECT integration.create_api_key('k', 'postgres', expires_in => '-1 day')")
            .unwrap();
    }

    #[pg_test(error = "invalid API key")]
    fn authenticate_refuses_bad_tokens() {
        Spi::run("SELECT integration.authenticate('pgik_1_nope')").unwrap();
    }

    #[pg_test]
    fn verify_works_in_every_set_returning_position() {
        let token = create(", scopes => '{a}'");
        let sql = format!(
            "WITH t(token) AS (VALUES ('{token}'), ('bad'), ('{token}'), (NULL))
             SELECT (SELECT count(*) FROM t, LATERAL integration.verify_api_key(t.token)),
                    (SELECT count(*) FROM (SELECT integration.verify_api_key(token) FROM t) s),
                    (SELECT count(*) FROM (SELECT integration.verify_api_key(token) FROM t LIMIT 1) s),
                    (SELECT count(*) FROM t WHERE EXISTS (SELECT FROM integration.verify_api_key(t.token, 'a')))"
        );
        let counts = Spi::connect(|client| {
            let row = client.select(&sql, Some(1), &[]).unwrap().first();
            (1..=4)
                .map(|n| row.get::<i64>(n).unwrap().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(counts, vec![2, 2, 1, 2]);
        let columns = one::<String>(&format!(
            "SELECT concat_ws('|', name, role, scopes::text, metadata::text)
             FROM integration.verify_api_key('{token}')"
        ));
        assert_eq!(columns.as_deref(), Some("test key|postgres|{a}|{}"));
    }
}
