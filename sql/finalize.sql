-- Functions are executable by PUBLIC unless revoked: take that back, then
-- grant each role exactly what it needs.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA integration FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    integration.verify_api_key(text, text),
    integration.authenticate(text),
    integration.verify_jwt(text, text, text, text, integer, boolean)
TO integration_user, integration_admin, integration_sidecar;

GRANT EXECUTE ON FUNCTION
    integration.create_api_key(text, text, text[], interval, jsonb),
    integration.revoke_api_key(bigint),
    integration.rotate_api_key(bigint, interval)
TO integration_admin;

GRANT EXECUTE ON FUNCTION
    integration.sign_jwt(jsonb, text, text, interval, text)
TO integration_admin, integration_sidecar;

-- Outbound HTTP: every overload of http and http_*.
DO $grant$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'integration'::regnamespace AND p.proname ~ '^http(_|$)'
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO integration_user, integration_admin', f);
    END LOOP;
END
$grant$;

CREATE TRIGGER api_key_store_changed
    AFTER INSERT OR DELETE OR TRUNCATE
        OR UPDATE OF name, role, scopes, metadata, secret_hash, expires_at, revoked_at
        ON integration.api_key_store
    FOR EACH STATEMENT EXECUTE FUNCTION integration._api_keys_changed();

-- Cancels (DELETE by callers) of queued requests are audited.
CREATE TRIGGER http_requests_deleted_rows AFTER DELETE ON integration.http_requests
    FOR EACH ROW EXECUTE FUNCTION integration._http_requests_deleted();
CREATE TRIGGER http_requests_deleted AFTER DELETE ON integration.http_requests
    FOR EACH STATEMENT EXECUTE FUNCTION integration._http_requests_deleted();

GRANT EXECUTE ON FUNCTION
    integration.create_webhook(text, text, text, regclass, jsonb, regprocedure, cidr[], integer,
                               text, text, text, interval, boolean, text),
    integration.alter_webhook(text, text, regclass, jsonb, regprocedure, cidr[], integer, text,
                              text, text, interval, boolean, text[], text),
    integration.rotate_webhook_secret(text, text, interval, text),
    integration.drop_old_webhook_secrets(text, text),
    integration.drop_webhook(text, boolean, text),
    -- Evaluated by the caller as the default `caller` argument of the above.
    integration._caller()
TO integration_admin;

-- The sidecar stores events only through this SECURITY DEFINER function, so
-- it needs no INSERT right on any target table.
GRANT EXECUTE ON FUNCTION
    integration.ingest_webhook_events(bigint[], text[], jsonb[], jsonb[], bytea[], text[], inet[]),
    integration.record_webhook_refusals(jsonb)
TO integration_sidecar;

-- SSO: admin functions are SECURITY INVOKER wrappers over SECURITY DEFINER
-- inner functions; both are for integration_admin only.
GRANT EXECUTE ON FUNCTION
    integration.create_sso_provider(text, text, jsonb, jsonb, name, text[], interval, boolean),
    integration._create_sso_provider(name, text, text, jsonb, jsonb, name, text[], interval, boolean),
    integration.alter_sso_provider(text, jsonb, jsonb, name, text[], interval, boolean, text[]),
    integration._alter_sso_provider(name, text, jsonb, jsonb, name, text[], interval, boolean, text[]),
    integration.drop_sso_provider(text),
    integration._drop_sso_provider(name, text),
    integration.rotate_signing_key(interval),
    integration._rotate_signing_key(name, interval),
    integration._require_admin(text),
    integration._check_actor(name)
TO integration_admin;

GRANT EXECUTE ON FUNCTION
    integration.session_role_unfit(name)
TO integration_admin, integration_sidecar;

GRANT EXECUTE ON FUNCTION
    integration.sso_use_login_state(text, timestamptz)
TO integration_sidecar;

GRANT EXECUTE ON FUNCTION
    integration.session_jwks(),
    integration.session_ended(text),
    integration.verify_jwt(text)
TO integration_user, integration_admin, integration_sidecar;

GRANT EXECUTE ON FUNCTION
    integration.ensure_signing_key()
TO integration_admin, integration_sidecar;

GRANT EXECUTE ON FUNCTION
    integration.sso_record_login(text, text, text, text, text[], jsonb, name),
    integration.sso_record_failure(text, text, text),
    integration.sso_end_session(text, timestamptz, text, text),
    integration.sso_cas_link_session(text, text, text, text, timestamptz),
    integration.sso_cas_single_logout(text, text),
    integration.sso_use_saml_assertion(text, text, timestamptz),
    integration.sso_saml_store_request(text, text, text, text, jsonb, timestamptz),
    integration.sso_saml_take_request(text, text)
TO integration_sidecar;

-- External databases: the wrappers' handler functions exist by now.
CREATE FOREIGN DATA WRAPPER postgres_wrapper
    HANDLER integration.postgres_wrapper_handler
    VALIDATOR integration.postgres_wrapper_validator;
COMMENT ON FOREIGN DATA WRAPPER postgres_wrapper IS 'pg_integration: PostgreSQL and compatible engines';
GRANT USAGE ON FOREIGN DATA WRAPPER postgres_wrapper TO integration_admin;

CREATE FOREIGN DATA WRAPPER mysql_wrapper
    HANDLER integration.mysql_wrapper_handler
    VALIDATOR integration.mysql_wrapper_validator;
COMMENT ON FOREIGN DATA WRAPPER mysql_wrapper IS 'pg_integration: MySQL and MariaDB';
GRANT USAGE ON FOREIGN DATA WRAPPER mysql_wrapper TO integration_admin;

-- Data sources: integration_admin only (the functions check membership too).
GRANT EXECUTE ON FUNCTION
    integration.add_data_source(text, text, jsonb),
    integration.test_data_source(text),
    integration.query(text, text, jsonb)
TO integration_admin;
