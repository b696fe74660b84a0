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

-- The sidecar's docs sign-in cookies name a key by id (sidecar/src/docs/sign_in.rs).
GRANT EXECUTE ON FUNCTION integration.api_key_allows(bigint, text) TO integration_sidecar;

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

-- The API reference: what each function does (COMMENT ON every overload of
-- a name; `nargs` picks one overload where they differ), read back by the
-- view integration.api_reference with the capability and SQLSTATEs below.
DO $comments$
DECLARE
    f record;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure AS fn, c.comment
        FROM (VALUES
            ('create_api_key', NULL, 'Creates an API key for a role with scopes and an optional lifetime; returns the key once (only its hash is kept).'),
            ('revoke_api_key', NULL, 'Revokes an API key by id at once; verifications refuse it from the next call, in every session.'),
            ('rotate_api_key', NULL, 'Issues a new key with the same role, scopes and metadata; the old one keeps working for the grace interval, then is revoked.'),
            ('api_key_allows', NULL, 'For the sidecar: whether API key id is still valid (not revoked or expired) and holds the scope; refusals are audited.'),
            ('verify_api_key', NULL, 'Checks an API key (and a scope if given) and returns its id, name, role, scopes and metadata, or no row; every refusal is audited.'),
            ('authenticate', NULL, 'The pre-request hook for PostgREST: verifies the API key and switches to its role for the transaction (SET LOCAL ROLE); raises when the key is refused.'),
            ('sign_jwt', NULL, 'Signs a JWT with the given claims, key and algorithm (HS256/384/512, RS256, ES256, EdDSA), adding iat and exp.'),
            ('verify_jwt', 1, 'Verifies a session JWT of the SSO sidecar (signature by a published signing key, audience, expiry, not logged out) and returns its claims.'),
            ('verify_jwt', 6, 'Verifies a JWT with the given key, audience and issuer (leeway in seconds) and returns its claims; raises when it does not verify.'),
            ('http', NULL, 'Makes an HTTP request now and returns status, headers and body; the URL must pass the outbound policy (public addresses unless allowed), with bounded time and size.'),
            ('http_get', NULL, 'GET a URL now (query parameters from a JSON object); the answer as http() gives it.'),
            ('http_head', NULL, 'HEAD a URL now; the answer (without a body) as http() gives it.'),
            ('http_delete', NULL, 'DELETE a URL now; the answer as http() gives it.'),
            ('http_post', NULL, 'POST a body (jsonb as JSON, text, or bytea) now; the answer as http() gives it.'),
            ('http_put', NULL, 'PUT a body (jsonb as JSON, text, or bytea) now; the answer as http() gives it.'),
            ('http_patch', NULL, 'PATCH a body (jsonb as JSON, text, or bytea) now; the answer as http() gives it.'),
            ('http_post_form', NULL, 'POST the fields of a JSON object as application/x-www-form-urlencoded now.'),
            ('http_post_multipart', NULL, 'POST a multipart/form-data body: text fields from a JSON object and files as integration.http_file values.'),
            ('http_post_multipart_arrays', NULL, 'POST a multipart/form-data body with the files given as parallel arrays of field names, file names, types and contents.'),
            ('http_enqueue', NULL, 'Queues an HTTP request for the background worker, delivered after this transaction commits with retries and backoff; returns its id.'),
            ('http_result', NULL, 'The outcome of a queued request by id, waiting up to the given interval for it; raises when the id is unknown.'),
            ('create_webhook', NULL, 'Creates a webhook the sidecar serves at /webhooks/{name}: its signature scheme, secret, target table, JSON Schema, handler and limits.'),
            ('alter_webhook', NULL, 'Changes a webhook''s settings; reset names settings to put back to their defaults.'),
            ('rotate_webhook_secret', NULL, 'Adds a new secret to a webhook; the old ones stay valid for the given interval, so senders can switch without lost deliveries.'),
            ('drop_old_webhook_secrets', NULL, 'Drops a webhook''s secrets other than the newest at once.'),
            ('drop_webhook', NULL, 'Drops a webhook, and its stored events when drop_events is true.'),
            ('create_sso_provider', NULL, 'Creates an SSO provider (oidc, oauth2, saml, cas or ldap) with its configuration, secrets, role mapping and allowed redirects.'),
            ('alter_sso_provider', NULL, 'Changes an SSO provider; reset names settings to put back to their defaults.'),
            ('drop_sso_provider', NULL, 'Drops an SSO provider; sessions it issued stay valid until they expire unless ended.'),
            ('rotate_signing_key', NULL, 'Makes a new session signing key; the old one still verifies for the grace interval.'),
            ('ensure_signing_key', NULL, 'Makes a session signing key if none is active; returns its key id.'),
            ('session_jwks', NULL, 'The public session signing keys as a JWKS document (what /.well-known/jwks.json serves).'),
            ('session_ended', NULL, 'Whether the session with this token id (jti) was ended by a logout.'),
            ('session_role_unfit', NULL, 'Why a role may not be given to SSO sessions (superuser, BYPASSRLS, one of ours...), or NULL when it may.'),
            ('add_data_source', NULL, 'Connects an external database (postgresql:// or mysql:// URL): creates its server, your user mapping and a local schema of foreign tables.'),
            ('test_data_source', NULL, 'Connects to a data source and reports the server version and round-trip time, or the error.'),
            ('query', NULL, 'Runs SQL on a data source as it is (pass-through) with JSON parameters and returns each row as a JSON object, streamed.'),
            ('_webhook_events_last_minute', NULL, 'Webhook events stored in the last minute per webhook (read by integration.metrics).'),
            ('_caller', NULL, 'Internal: who calls an admin function (the verified API key''s name or the session user), the default of its caller argument.'),
            ('_require_admin', NULL, 'Internal: raises unless the session user is a member of integration_admin.'),
            ('_check_actor', NULL, 'Internal: raises unless the given actor is the session user.'),
            ('_create_sso_provider', NULL, 'Internal: the SECURITY DEFINER half of create_sso_provider; call create_sso_provider.'),
            ('_alter_sso_provider', NULL, 'Internal: the SECURITY DEFINER half of alter_sso_provider; call alter_sso_provider.'),
            ('_drop_sso_provider', NULL, 'Internal: the SECURITY DEFINER half of drop_sso_provider; call drop_sso_provider.'),
            ('_rotate_signing_key', NULL, 'Internal: the SECURITY DEFINER half of rotate_signing_key; call rotate_signing_key.')
        ) AS c(name, nargs, comment)
        JOIN pg_catalog.pg_proc p
          ON p.proname = c.name AND p.pronamespace = 'integration'::regnamespace
         AND (c.nargs IS NULL OR p.pronargs = c.nargs)
    LOOP
        EXECUTE pg_catalog.format('COMMENT ON FUNCTION %s IS %L', f.fn, f.comment);
    END LOOP;
END
$comments$;

-- Every function, view and table a user of integration_user or
-- integration_admin may call or read, and every setting, with what it does,
-- its capability and the SQLSTATEs it raises (tests/api_reference.rs raises
-- each listed one). Settings show when the library is loaded (preloaded).
CREATE VIEW integration.api_reference AS
WITH facts(name, capability, sqlstates) AS (VALUES
    ('create_api_key', 'api keys', '{22023,42501}'::text[]),
    ('revoke_api_key', 'api keys', '{42501}'),
    ('rotate_api_key', 'api keys', '{42501}'),
    ('verify_api_key', 'api keys', '{}'),
    ('authenticate', 'api keys', '{28000}'),
    ('api_keys', 'api keys', '{}'),
    ('api_key_id', 'api keys', '{}'),
    ('sign_jwt', 'jwt', '{22023,42501}'),
    ('verify_jwt', 'jwt', '{22023,28000}'),
    ('http', 'http', '{22023,42501}'),
    ('http_get', 'http', '{22023,42501}'),
    ('http_head', 'http', '{22023,42501}'),
    ('http_delete', 'http', '{22023,42501}'),
    ('http_post', 'http', '{22023,42501}'),
    ('http_put', 'http', '{22023,42501}'),
    ('http_patch', 'http', '{22023,42501}'),
    ('http_post_form', 'http', '{22023,42501}'),
    ('http_post_multipart', 'http', '{22023,42501}'),
    ('http_post_multipart_arrays', 'http', '{22023,42501}'),
    ('http_enqueue', 'queue', '{22023,42501,53400}'),
    ('http_result', 'queue', '{P0002}'),
    ('http_requests', 'queue', '{}'),
    ('http_responses', 'queue', '{}'),
    ('create_webhook', 'webhooks', '{23514,42501,42710}'),
    ('alter_webhook', 'webhooks', '{23514,42501,42704}'),
    ('rotate_webhook_secret', 'webhooks', '{42501,42704}'),
    ('drop_old_webhook_secrets', 'webhooks', '{42501,42704}'),
    ('drop_webhook', 'webhooks', '{42501}'),
    ('webhook_list', 'webhooks', '{}'),
    ('webhook_events', 'webhooks', '{}'),
    ('_webhook_events_last_minute', 'metrics', '{}'),
    ('create_sso_provider', 'sso', '{22023,42501,42710}'),
    ('alter_sso_provider', 'sso', '{22023,42501,42704}'),
    ('drop_sso_provider', 'sso', '{42501}'),
    ('rotate_signing_key', 'sso', '{42501}'),
    ('ensure_signing_key', 'sso', '{42501}'),
    ('session_jwks', 'sso', '{}'),
    ('session_ended', 'sso', '{}'),
    ('session_role_unfit', 'sso', '{42501}'),
    ('sso_provider_list', 'sso', '{}'),
    ('signing_key_list', 'sso', '{}'),
    ('identities', 'sso', '{}'),
    ('add_data_source', 'data sources', '{22023,42501}'),
    ('test_data_source', 'data sources', '{42501}'),
    ('query', 'data sources', '{42501}'),
    ('audit_log', 'audit', '{}'),
    ('metrics', 'metrics', '{}'),
    ('api_reference', 'reference', '{}'),
    ('_caller', 'roles', '{}'),
    ('_require_admin', 'roles', '{42501}'),
    ('_check_actor', 'roles', '{42501}'),
    ('_create_sso_provider', 'sso', '{42501}'),
    ('_alter_sso_provider', 'sso', '{42501}'),
    ('_drop_sso_provider', 'sso', '{42501}'),
    ('_rotate_signing_key', 'sso', '{42501}')
)
SELECT o.kind, o.name, o.signature, o.returns, o.description,
       coalesce(f.capability,
                CASE WHEN o.kind = 'setting' AND o.short LIKE 'http_queue%' THEN 'queue'
                     WHEN o.kind = 'setting' AND o.short LIKE 'http%' THEN 'http'
                     WHEN o.kind = 'setting' THEN 'api keys' END) AS capability,
       coalesce(f.sqlstates, '{}') AS sqlstates
FROM (
    SELECT 'function' AS kind, p.proname::text AS short, 'integration.' || p.proname AS name,
           p.proname || '(' || pg_catalog.pg_get_function_arguments(p.oid) || ')' AS signature,
           pg_catalog.pg_get_function_result(p.oid) AS returns,
           pg_catalog.obj_description(p.oid, 'pg_proc') AS description
    FROM pg_catalog.pg_proc p
    WHERE p.pronamespace = 'integration'::regnamespace
      AND (pg_catalog.has_function_privilege('integration_user', p.oid, 'EXECUTE')
           OR pg_catalog.has_function_privilege('integration_admin', p.oid, 'EXECUTE'))
    UNION ALL
    SELECT CASE c.relkind WHEN 'v' THEN 'view' ELSE 'table' END, c.relname::text,
           'integration.' || c.relname, NULL, NULL,
           pg_catalog.obj_description(c.oid, 'pg_class')
    FROM pg_catalog.pg_class c
    WHERE c.relnamespace = 'integration'::regnamespace AND c.relkind IN ('r', 'v')
      AND (pg_catalog.has_table_privilege('integration_user', c.oid, 'SELECT')
           OR pg_catalog.has_table_privilege('integration_admin', c.oid, 'SELECT'))
    UNION ALL
    SELECT 'setting', pg_catalog.substr(s.name, 13), s.name,
           s.vartype || coalesce(' DEFAULT ' || pg_catalog.quote_literal(s.boot_val), '')
               || coalesce(' (' || s.unit || ')', ''),
           NULL, s.short_desc || coalesce(' ' || s.extra_desc, '')
    FROM pg_catalog.pg_settings s
    WHERE s.name LIKE 'integration.%'
) o
LEFT JOIN facts f ON f.name = o.short
ORDER BY capability, o.kind, o.name, o.signature;
COMMENT ON VIEW integration.api_reference IS
    'pg_integration API reference: every function, view, table and setting a user may call or read, with what it does, its capability and the SQLSTATEs it raises';
GRANT SELECT ON integration.api_reference TO integration_user, integration_admin, integration_sidecar;
