//! In-database tests of sign_jwt / verify_jwt.

#[pgrx::pg_schema]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use pgrx::prelude::*;

    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes!!";
    const RSA_PRIVATE: &str = include_str!("../../../core/tests/fixtures/jwt/rsa_private.pem");
    const RSA_PUBLIC: &str = include_str!("../../../core/tests/fixtures/jwt/rsa_public.pem");
    const EC_PRIVATE: &str = include_str!("../../../core/tests/fixtures/jwt/ec256_private.pem");
    const EC_PUBLIC: &str = include_str!("../../../core/tests/fixtures/jwt/ec256_public.pem");
    const ED_PRIVATE: &str = include_str!("../../../core/tests/fixtures/jwt/ed25519_private.pem");
    const ED_PUBLIC: &str = include_str!("../../../core/tests/fixtures/jwt/ed25519_public.pem");

    fn lit(text: &str) -> String {
        format!("'{}'", text.replace('\'', "''"))
    }

    fn sign(claims: &str, key: &str, alg: &str) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT integration.sign_jwt('{claims}', {}, '{alg}', expires_in => '5 minutes')",
            lit(key)
        ))
        .unwrap()
        .unwrap()
    }

    fn verify(token: &str, key: &str) -> Result<pgrx::JsonB, String> {
        PgTryBuilder::new(|| {
            Ok(Spi::get_one::<pgrx::JsonB>(&format!(
                "SELECT integration.verify_jwt({}, {})",
                lit(token),
                lit(key)
            ))
            .unwrap()
            .unwrap())
        })
        .catch_others(|e| match e {
            pg_sys::panic::CaughtError::PostgresError(report) => Err(report.message().to_string()),
            other => Err(format!("{other:?}")),
        })
        .execute()
    }

    #[pg_test]
    fn every_key_type_round_trips() {
        for (alg, private, public) in [
            ("HS256", SECRET, SECRET),
            ("HS512", SECRET, SECRET),
            ("RS256", RSA_PRIVATE, RSA_PUBLIC),
            ("PS256", RSA_PRIVATE, RSA_PUBLIC),
            ("ES256", EC_PRIVATE, EC_PUBLIC),
            ("EdDSA", ED_PRIVATE, ED_PUBLIC),
        ] {
            let token = sign(r#"{"sub":"alice","role":"web_user"}"#, private, alg);
            let claims = verify(&token, public).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(claims.0["sub"], "alice", "{alg}");
            assert!(claims.0["exp"].as_i64().unwrap() > claims.0["iat"].as_i64().unwrap());
        }
    }

    #[pg_test]
    fn alg_none_and_confusion_are_refused() {
        // An unsigned token: header {"alg":"none"}.
        let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        let err = verify(none, SECRET).unwrap_err();
        assert!(err.contains("invalid JWT"), "{err}");
        // HS256 signed with the RSA public key text as the secret.
        let forged = integration_core::jwt::sign(
            &serde_json::json!({"sub": "mallory", "exp": 9_999_999_999_i64}),
            &format!("base64url:{}", URL_SAFE_NO_PAD.encode(RSA_PUBLIC)),
            "HS256",
            None,
        )
        .unwrap();
        let err = verify(&forged, RSA_PUBLIC).unwrap_err();
        assert!(err.contains("not allowed"), "{err}");
    }

    #[pg_test]
    fn expired_and_tampered_tokens_are_refused() {
        let expired = Spi::get_one::<String>(&format!(
            "SELECT integration.sign_jwt('{{\"sub\":\"a\",\"exp\":1000}}', {})",
            lit(SECRET)
        ))
        .unwrap()
        .unwrap();
        assert!(verify(&expired, SECRET).unwrap_err().contains("expired"));
        let good = sign(r#"{"sub":"alice"}"#, SECRET, "HS256");
        let mut parts: Vec<&str> = good.split('.').collect();
        let other = sign(r#"{"sub":"mallory"}"#, SECRET, "HS256");
        parts[1] = other.split('.').nth(1).unwrap();
        assert!(verify(&parts.join("."), SECRET)
            .unwrap_err()
            .contains("signature"));
    }

    #[pg_test]
    fn audience_and_issuer_are_checked_when_given() {
        let token = sign(
            r#"{"sub":"a","aud":"api","iss":"https://idp.example"}"#,
            SECRET,
            "HS256",
        );
        let ok = Spi::get_one::<bool>(&format!(
            "SELECT integration.verify_jwt({}, {}, audience => 'api', issuer => 'https://idp.example') IS NOT NULL",
            lit(&token),
            lit(SECRET)
        ))
        .unwrap();
        assert_eq!(ok, Some(true));
        let wrong = PgTryBuilder::new(|| {
            Spi::run(&format!(
                "SELECT integration.verify_jwt({}, {}, audience => 'other')",
                lit(&token),
                lit(SECRET)
            ))
            .is_ok()
        })
        .catch_others(|_| false)
        .execute();
        assert!(!wrong);
    }

    #[pg_test(
        error = "cannot sign JWT: unusable key: the shared secret is 5 bytes; at least 32 are required"
    )]
    fn short_secrets_are_refused() {
        Spi::run("SELECT integration.sign_jwt('{}', 'short')").unwrap();
    }
}
