-- pg_integration 0.1.0 → 0.2.0 (ALTER EXTENSION pg_integration UPDATE).
-- Everything that changed in the extension's SQL since 0.1.0 (commit in
-- sql/releases); tests/tests/upgrade.rs requires the result to equal a fresh
-- 0.2.0 install. Keep new columns at the end of their tables in sql/ too, so
-- that both orders agree.
\echo Use "ALTER EXTENSION pg_integration UPDATE" to load this file. \quit

-- SAML providers may give the IdP by idp_metadata_url, and sp_private_key
-- comes with sp_certificate (sql/sso.sql).
CREATE OR REPLACE FUNCTION integration._check_sso_provider(INOUT p integration.sso_providers)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    secret_keys constant text[] := ARRAY['client_secret', 'bind_password', 'sp_private_key'];
    by_parts boolean;
    certificate jsonb;
    needed text[];
    missing text[];
    rule jsonb;
    r name;
    redirect text;
BEGIN
    p.secrets := p.secrets || coalesce((SELECT jsonb_object_agg(key, value) FROM jsonb_each(p.config)
                                         WHERE key = ANY (secret_keys)), '{}');
    p.config := p.config - secret_keys;
    p.secrets := jsonb_strip_nulls(p.secrets);
    p.config := jsonb_strip_nulls(p.config);
    IF EXISTS (SELECT FROM jsonb_each(p.secrets) WHERE jsonb_typeof(value) <> 'string') THEN
        RAISE EXCEPTION 'secrets of SSO provider % must be strings', p.name USING ERRCODE = '22023';
    END IF;
    needed := CASE p.kind
        WHEN 'oidc' THEN ARRAY['issuer', 'client_id']
        WHEN 'oauth2' THEN ARRAY['authorize_url', 'token_url', 'userinfo_url', 'client_id']
        WHEN 'ldap' THEN ARRAY['url']
        WHEN 'cas' THEN ARRAY['server_url']
        ELSE ARRAY[]::text[] END;
    missing := ARRAY(SELECT unnest(needed) EXCEPT SELECT jsonb_object_keys(p.config) ORDER BY 1);
    IF cardinality(missing) > 0 THEN
        RAISE EXCEPTION 'config of % provider % lacks %', p.kind, p.name, array_to_string(missing, ', ')
            USING ERRCODE = '22023';
    END IF;
    IF p.kind = 'ldap' THEN
        IF p.config->>'url' !~ '^ldaps?://' THEN
            RAISE EXCEPTION 'url of LDAP provider % must start with ldap:// or ldaps://', p.name USING ERRCODE = '22023';
        END IF;
        IF (p.config ? 'user_dn_template') = (p.config ? 'search_filter') THEN
            RAISE EXCEPTION 'LDAP provider % needs exactly one of user_dn_template (direct bind) or search_base + search_filter (search then bind)', p.name
                USING ERRCODE = '22023';
        END IF;
        IF coalesce(p.config->>'user_dn_template', p.config->>'search_filter') NOT LIKE '%{username}%' THEN
            RAISE EXCEPTION 'the user_dn_template or search_filter of LDAP provider % must contain {username}', p.name
                USING ERRCODE = '22023';
        END IF;
        IF p.config ? 'search_filter' AND NOT p.config ? 'search_base' THEN
            RAISE EXCEPTION 'LDAP provider % searches, so it needs search_base', p.name USING ERRCODE = '22023';
        END IF;
    END IF;
    IF p.kind = 'cas' THEN
        IF jsonb_typeof(p.config->'server_url') IS DISTINCT FROM 'string'
           OR p.config->>'server_url' !~ '^https?://[^/@?#]+(/[^?#]*)?$' THEN
            RAISE EXCEPTION 'server_url of CAS provider % must be an absolute URL without user info, query or fragment (the CAS server''s base, as https://cas.example.org/cas)', p.name
                USING ERRCODE = '22023';
        END IF;
        IF p.config->>'server_url' NOT LIKE 'https://%' AND p.config->'allow_http' IS DISTINCT FROM 'true' THEN
            RAISE EXCEPTION 'server_url of CAS provider % must be https:// (tickets are validated over it); set "allow_http": true only for a test server', p.name
                USING ERRCODE = '22023';
        END IF;
        IF p.config ? 'version' AND p.config->'version' NOT IN ('2', '3') THEN
            RAISE EXCEPTION 'version of CAS provider % must be the number 2 or 3, not %', p.name, left((p.config->'version')::text, 50)
                USING ERRCODE = '22023';
        END IF;
        IF p.config ? 'attributes' AND (jsonb_typeof(p.config->'attributes') <> 'object'
           OR EXISTS (SELECT FROM jsonb_each(p.config->'attributes') a
                      WHERE jsonb_typeof(a.value) <> 'string' OR a.key NOT IN ('email', 'name', 'groups'))) THEN
            RAISE EXCEPTION 'attributes of CAS provider % must be an object naming the CAS attribute of email, name or groups, as {"email": "mail", "name": "cn", "groups": "memberOf"}', p.name
                USING ERRCODE = '22023';
        END IF;
    END IF;
    IF p.kind = 'saml' THEN
        by_parts := p.config ?| ARRAY['idp_entity_id', 'idp_sso_url', 'idp_certificates'];
        IF (p.config ? 'idp_metadata_url')::int + (p.config ? 'idp_metadata_xml')::int + by_parts::int <> 1 THEN
            RAISE EXCEPTION 'SAML provider % needs its IdP given by exactly one of idp_metadata_url, idp_metadata_xml, or idp_entity_id + idp_sso_url + idp_certificates', p.name
                USING ERRCODE = '22023';
        END IF;
        IF p.config ? 'idp_metadata_url' THEN
            IF jsonb_typeof(p.config->'idp_metadata_url') <> 'string'
               OR p.config->>'idp_metadata_url' !~ '^https?://[^/@?#]+(/[^#]*)?$' THEN
                RAISE EXCEPTION 'idp_metadata_url of SAML provider % must be an absolute http(s) URL without user info or fragment (where the IdP publishes its metadata)', p.name
                    USING ERRCODE = '22023';
            END IF;
            IF p.config->>'idp_metadata_url' NOT LIKE 'https://%' AND p.config->'allow_http' IS DISTINCT FROM 'true' THEN
                RAISE EXCEPTION 'idp_metadata_url of SAML provider % must be https:// (the IdP''s certificates come from it); set "allow_http": true only for a test IdP', p.name
                    USING ERRCODE = '22023';
            END IF;
        ELSIF p.config ? 'idp_metadata_xml' THEN
            IF jsonb_typeof(p.config->'idp_metadata_xml') <> 'string' THEN
                RAISE EXCEPTION 'idp_metadata_xml of SAML provider % must be a string (the IdP''s EntityDescriptor)', p.name
                    USING ERRCODE = '22023';
            END IF;
            -- Entities are how XML bombs and external-file reads start: no
            -- IdP's metadata needs them.
            IF p.config->>'idp_metadata_xml' ~* '<!(DOCTYPE|ENTITY)' THEN
                RAISE EXCEPTION 'idp_metadata_xml of SAML provider % holds a DOCTYPE or ENTITY declaration: give the IdP''s metadata without one', p.name
                    USING ERRCODE = '22023';
            END IF;
        ELSE
            missing := ARRAY(SELECT unnest(ARRAY['idp_entity_id', 'idp_sso_url', 'idp_certificates'])
                             EXCEPT SELECT jsonb_object_keys(p.config) ORDER BY 1);
            IF cardinality(missing) > 0 THEN
                RAISE EXCEPTION 'config of saml provider % lacks % (or give idp_metadata_xml instead)', p.name, array_to_string(missing, ', ')
                    USING ERRCODE = '22023';
            END IF;
            IF jsonb_typeof(p.config->'idp_entity_id') <> 'string' OR btrim(p.config->>'idp_entity_id') = '' THEN
                RAISE EXCEPTION 'idp_entity_id of SAML provider % must be a non-empty string (the IdP''s entity ID)', p.name
                    USING ERRCODE = '22023';
            END IF;
            IF jsonb_typeof(p.config->'idp_sso_url') <> 'string'
               OR p.config->>'idp_sso_url' !~ '^https?://[^/@?#]+(/[^#]*)?$' THEN
                RAISE EXCEPTION 'idp_sso_url of SAML provider % must be an absolute http(s) URL without user info or fragment (the IdP''s HTTP-Redirect SingleSignOnService)', p.name
                    USING ERRCODE = '22023';
            END IF;
            IF jsonb_typeof(p.config->'idp_certificates') <> 'array'
               OR jsonb_array_length(p.config->'idp_certificates') = 0 THEN
                RAISE EXCEPTION 'idp_certificates of SAML provider % must be a non-empty array of PEM certificates (the IdP''s signing certificates): without one nothing could be verified', p.name
                    USING ERRCODE = '22023';
            END IF;
            FOR certificate IN SELECT value FROM jsonb_array_elements(p.config->'idp_certificates') LOOP
                IF jsonb_typeof(certificate) <> 'string'
                   OR certificate #>> '{}' NOT LIKE '%-----BEGIN CERTIFICATE-----%' THEN
                    RAISE EXCEPTION 'idp_certificates of SAML provider % must hold PEM certificates (-----BEGIN CERTIFICATE-----), not %', p.name, left(certificate::text, 50)
                        USING ERRCODE = '22023';
                END IF;
            END LOOP;
        END IF;
        IF p.config ? 'allow_idp_initiated' AND jsonb_typeof(p.config->'allow_idp_initiated') <> 'boolean' THEN
            RAISE EXCEPTION 'allow_idp_initiated of SAML provider % must be true or false', p.name USING ERRCODE = '22023';
        END IF;
        IF p.config ? 'attributes' AND (jsonb_typeof(p.config->'attributes') <> 'object'
           OR EXISTS (SELECT FROM jsonb_each(p.config->'attributes') a
                      WHERE jsonb_typeof(a.value) <> 'string' OR a.value #>> '{}' = '' OR a.key NOT IN ('email', 'name', 'groups'))) THEN
            RAISE EXCEPTION 'attributes of SAML provider % must be an object naming the SAML attribute (Name or OID) of email, name or groups, as {"email": "mail", "name": "cn", "groups": "groups"}', p.name
                USING ERRCODE = '22023';
        END IF;
        -- Our key signs AuthnRequests and decrypts assertions: it comes
        -- with the certificate the IdP gets from our metadata, or not at all.
        IF (p.secrets ? 'sp_private_key') <> (p.config ? 'sp_certificate') THEN
            RAISE EXCEPTION 'SAML provider % needs sp_private_key and sp_certificate together (or neither)', p.name
                USING ERRCODE = '22023';
        END IF;
        IF p.config ? 'sp_certificate' AND (jsonb_typeof(p.config->'sp_certificate') <> 'string'
           OR p.config->>'sp_certificate' NOT LIKE '%-----BEGIN CERTIFICATE-----%') THEN
            RAISE EXCEPTION 'sp_certificate of SAML provider % must be a PEM certificate (-----BEGIN CERTIFICATE-----)', p.name
                USING ERRCODE = '22023';
        END IF;
    END IF;
    FOR rule IN SELECT value FROM jsonb_array_elements(p.role_mapping) LOOP
        IF jsonb_typeof(rule) <> 'object' OR jsonb_typeof(rule->'role') IS DISTINCT FROM 'string'
           OR NOT (rule ? 'group' OR (rule ? 'claim' AND rule ? 'equals')) THEN
            RAISE EXCEPTION 'role_mapping of SSO provider %: % is not {"group": G, "role": R} or {"claim": C, "equals": V, "role": R}',
                p.name, left(rule::text, 200) USING ERRCODE = '22023';
        END IF;
        PERFORM integration._check_session_role(p.name, (rule->>'role')::name);
    END LOOP;
    IF p.default_role IS NOT NULL THEN
        PERFORM integration._check_session_role(p.name, p.default_role);
    END IF;
    FOREACH redirect IN ARRAY p.allowed_redirects LOOP
        IF redirect !~ '^https?://[^/@?#]+(/[^?#]*)?$' THEN
            RAISE EXCEPTION 'allowed redirect % of SSO provider % must be an absolute http(s) URL without user info, query or fragment',
                redirect, p.name USING ERRCODE = '22023';
        END IF;
    END LOOP;
END
$$;

-- Whether a key, by id, is still valid with a scope: the sidecar's docs
-- sign-in cookies name a key instead of carrying it (extension/src/api_keys.rs).
CREATE FUNCTION integration.api_key_allows("id" bigint, "required_scope" text) RETURNS bool
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c AS 'MODULE_PATHNAME', 'api_key_allows_wrapper';
REVOKE ALL ON FUNCTION integration.api_key_allows(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION integration.api_key_allows(bigint, text) TO integration_sidecar;

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
