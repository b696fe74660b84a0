-- SSO: the identity providers the sidecar logs people in with, the
-- identities that logged in, and the keys that sign session tokens.
-- Secrets (client_secret, bind_password, sp_private_key) live in sso_providers.secrets,
-- readable only by the owner and integration_sidecar; admins see providers
-- through sso_provider_list. Private signing keys are readable likewise.
--
-- Rights are checked against the invoker: each admin function is a
-- SECURITY INVOKER wrapper that checks current_user (which is the role in
-- force after SET ROLE, unlike session_user) and passes it to an inner
-- SECURITY DEFINER function, granted to integration_admin only, which
-- does everything that does not depend on who calls.
CREATE TABLE integration.sso_providers (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    kind               text NOT NULL CHECK (kind IN ('oidc', 'oauth2', 'ldap', 'saml', 'cas')),
    config             jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(config) = 'object'),
    secrets            jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(secrets) = 'object'),
    role_mapping       jsonb NOT NULL DEFAULT '[]' CHECK (pg_catalog.jsonb_typeof(role_mapping) = 'array'),
    default_role       name,
    allowed_redirects  text[] NOT NULL DEFAULT '{}',
    session_lifetime   interval NOT NULL DEFAULT '1 hour'
                       CHECK (session_lifetime BETWEEN '1 minute' AND '30 days'),
    enabled            boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by         name NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE integration.sso_providers IS
    'pg_integration SSO providers with their secrets; managed with create_sso_provider/alter_sso_provider, listed by sso_provider_list';

CREATE TABLE integration.identities (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider     text NOT NULL REFERENCES integration.sso_providers (name)
                 ON UPDATE CASCADE ON DELETE CASCADE,
    subject      text NOT NULL CHECK (pg_catalog.length(subject) BETWEEN 1 AND 500),
    email        text,
    name         text,
    groups       text[] NOT NULL DEFAULT '{}',
    claims       jsonb NOT NULL DEFAULT '{}',
    role         name,
    first_login  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    last_login   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    logins       bigint NOT NULL DEFAULT 1,
    UNIQUE (provider, subject)
);
COMMENT ON TABLE integration.identities IS
    'pg_integration people who logged in through an SSO provider; claims never hold a token or a password';

CREATE TABLE integration.signing_keys (
    kid            text PRIMARY KEY,
    alg            text NOT NULL CHECK (alg IN ('EdDSA', 'ES256')),
    private_pem    text NOT NULL,
    public_jwk     jsonb NOT NULL CHECK (pg_catalog.jsonb_typeof(public_jwk) = 'object'),
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    retired_at     timestamptz,
    publish_until  timestamptz,
    CHECK ((retired_at IS NULL) = (publish_until IS NULL))
);
-- One key signs at a time; retired keys stay published until publish_until.
CREATE UNIQUE INDEX signing_keys_one_active ON integration.signing_keys ((true)) WHERE retired_at IS NULL;
COMMENT ON TABLE integration.signing_keys IS
    'pg_integration keys signing SSO session tokens; private halves readable by the owner and integration_sidecar only';

SELECT pg_catalog.pg_extension_config_dump('integration.sso_providers', '');
SELECT pg_catalog.pg_extension_config_dump('integration.sso_providers_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('integration.identities', '');
SELECT pg_catalog.pg_extension_config_dump('integration.identities_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('integration.signing_keys', '');

CREATE VIEW integration.sso_provider_list AS
SELECT p.id, p.name, p.kind, p.config,
       ARRAY(SELECT pg_catalog.jsonb_object_keys(p.secrets) ORDER BY 1) AS secrets_set,
       p.role_mapping, p.default_role, p.allowed_redirects, p.session_lifetime, p.enabled,
       '/auth/' || p.name || '/login' AS login_path,
       p.created_at, p.created_by, p.updated_at
FROM integration.sso_providers p;
COMMENT ON VIEW integration.sso_provider_list IS 'pg_integration SSO providers, without their secrets';

CREATE VIEW integration.signing_key_list AS
SELECT k.kid, k.alg, k.public_jwk, k.created_at, k.retired_at, k.publish_until,
       CASE WHEN k.retired_at IS NULL THEN 'active'
            WHEN k.publish_until > pg_catalog.now() THEN 'published'
            ELSE 'expired' END AS status
FROM integration.signing_keys k;
COMMENT ON VIEW integration.signing_key_list IS 'pg_integration session signing keys, public halves only';

-- The sidecar reloads its SSO providers and keys after any committed change.
CREATE TRIGGER sso_providers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON integration.sso_providers FOR EACH STATEMENT
    EXECUTE FUNCTION integration._notify_config_changed('integration_sso_config');
CREATE TRIGGER signing_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON integration.signing_keys FOR EACH STATEMENT
    EXECUTE FUNCTION integration._notify_config_changed('integration_sso_config');

-- Raises unless the invoker (current_user: the role after any SET ROLE) is
-- a member of integration_admin. SECURITY INVOKER on purpose.
CREATE FUNCTION integration._require_admin(what text) RETURNS name
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT pg_has_role(current_user, 'integration_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied: % needs membership in integration_admin', what
            USING ERRCODE = '42501', HINT = format('Role %s is not a member of integration_admin.', current_user);
    END IF;
    RETURN current_user;
END
$$;

-- Inner functions take the invoker's name from their wrapper. Called
-- directly, the name must still be one the session could SET ROLE to, so
-- an audit row never names a role the session could not act as.
CREATE FUNCTION integration._check_actor(actor name) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF actor IS NULL OR NOT pg_has_role(session_user, actor, 'MEMBER')
       OR NOT pg_has_role(actor, 'integration_admin', 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied: % may not act as %', session_user, actor USING ERRCODE = '42501';
    END IF;
END
$$;

-- A role sessions may be mapped to: one that exists and grants no power
-- over the cluster or over pg_integration itself.
-- Why role `r` may not be given to SSO sessions, or NULL: it is, or is a
-- member of, a role with powers a session must not have (superuser,
-- BYPASSRLS, REPLICATION, CREATEROLE, the predefined roles that read or
-- write everything or act on the server, integration_admin and
-- integration_sidecar), or it may read the session signing keys. Checked
-- when a provider is saved and again at every login.
CREATE FUNCTION integration.session_role_unfit(r name) RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT why FROM (
        SELECT CASE WHEN x.rolname = r THEN 'the role itself is privileged'
                    ELSE 'it is a member of ' || x.rolname END AS why,
               CASE WHEN x.rolname = r THEN 0 ELSE 1 END AS rank
          FROM pg_roles x
         WHERE pg_has_role(r, x.oid, 'MEMBER')
           AND (x.rolsuper OR x.rolbypassrls OR x.rolreplication OR x.rolcreaterole
                OR x.rolname IN ('pg_read_all_data', 'pg_write_all_data', 'pg_signal_backend',
                                 'pg_read_server_files', 'pg_write_server_files',
                                 'pg_execute_server_program', 'pg_checkpoint',
                                 'integration_admin', 'integration_sidecar'))
        UNION ALL
        SELECT 'it can read integration.signing_keys', 2
         WHERE has_table_privilege(r, 'integration.signing_keys', 'SELECT')
    ) found
    ORDER BY rank, why
    LIMIT 1
$$;

CREATE FUNCTION integration._check_session_role(provider text, r name) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    why text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
        RAISE EXCEPTION 'role % of SSO provider % does not exist', r, provider USING ERRCODE = '42704';
    END IF;
    why := integration.session_role_unfit(r);
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'role % may not be given to SSO sessions of provider %: %', r, provider, why
            USING ERRCODE = '42501',
                  HINT = 'Map logins to plain roles: no superuser, BYPASSRLS, REPLICATION, CREATEROLE, '
                         'no membership in a role with them, in pg_read_all_data, pg_write_all_data, '
                         'pg_signal_backend or integration_admin/integration_sidecar.';
    END IF;
END
$$;

-- Splits secrets out of config, checks what each kind needs, and the roles.
CREATE FUNCTION integration._check_sso_provider(INOUT p integration.sso_providers)
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

CREATE FUNCTION integration._create_sso_provider(
    actor name, name text, kind text, config jsonb, role_mapping jsonb, default_role name,
    allowed_redirects text[], session_lifetime interval, enabled boolean
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p integration.sso_providers;
BEGIN
    -- It takes a secret: a failure is logged without the statement.
    PERFORM integration._statement_carries_secret();
    PERFORM integration._check_actor(actor);
    IF EXISTS (SELECT FROM integration.sso_providers x WHERE x.name = _create_sso_provider.name) THEN
        RAISE EXCEPTION 'SSO provider % already exists', name USING ERRCODE = '42710',
            HINT = 'Use integration.alter_sso_provider to change it.';
    END IF;
    p.name := name;
    p.kind := kind;
    p.config := coalesce(config, '{}');
    p.secrets := '{}';
    p.role_mapping := coalesce(role_mapping, '[]');
    p.default_role := default_role;
    p.allowed_redirects := coalesce(allowed_redirects, '{}');
    p := integration._check_sso_provider(p);
    INSERT INTO integration.sso_providers AS x (name, kind, config, secrets, role_mapping, default_role,
            allowed_redirects, session_lifetime, enabled, created_by)
    VALUES (p.name, p.kind, p.config, p.secrets, p.role_mapping, p.default_role, p.allowed_redirects,
            coalesce(session_lifetime, '1 hour'), coalesce(enabled, true), actor)
    RETURNING x.id INTO p.id;
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (actor, 'sso.provider.create', 'sso_provider:' || p.name, true,
            jsonb_build_object('kind', p.kind, 'secrets_set', ARRAY(SELECT jsonb_object_keys(p.secrets)),
                               'default_role', p.default_role));
    RETURN p.id;
END
$$;

CREATE FUNCTION integration.create_sso_provider(
    name text,
    kind text,
    config jsonb,
    role_mapping jsonb DEFAULT '[]',
    default_role name DEFAULT NULL,
    allowed_redirects text[] DEFAULT '{}',
    session_lifetime interval DEFAULT '1 hour',
    enabled boolean DEFAULT true
) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp
RETURN integration._create_sso_provider(integration._require_admin('create_sso_provider'), name, kind,
    config, role_mapping, default_role, allowed_redirects, session_lifetime, enabled);

-- Changes what is given; NULL leaves a setting as it is. `config` is merged
-- into the current one (a key set to JSON null is removed; client_secret,
-- bind_password and sp_private_key go to the secrets); `reset` may name default_role.
CREATE FUNCTION integration._alter_sso_provider(
    actor name, name text, config jsonb, role_mapping jsonb, default_role name,
    allowed_redirects text[], session_lifetime interval, enabled boolean, reset text[]
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p integration.sso_providers;
    patch jsonb := coalesce(config, '{}');
BEGIN
    -- It takes a secret: a failure is logged without the statement.
    PERFORM integration._statement_carries_secret();
    PERFORM integration._check_actor(actor);
    SELECT * INTO p FROM integration.sso_providers x WHERE x.name = _alter_sso_provider.name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'SSO provider % does not exist', name USING ERRCODE = '42704',
            HINT = 'SELECT name FROM integration.sso_provider_list lists them.';
    END IF;
    IF EXISTS (SELECT FROM unnest(coalesce(reset, '{}')) u WHERE u <> 'default_role') THEN
        RAISE EXCEPTION 'alter_sso_provider can reset only default_role' USING ERRCODE = '22023';
    END IF;
    -- Secrets named in the patch replace the stored ones (null removes them).
    p.secrets := p.secrets || coalesce((SELECT jsonb_object_agg(key, value) FROM jsonb_each(patch)
                                         WHERE key IN ('client_secret', 'bind_password', 'sp_private_key')), '{}');
    p.config := p.config || patch;
    p.role_mapping := coalesce(role_mapping, p.role_mapping);
    p.default_role := CASE WHEN 'default_role' = ANY (coalesce(reset, '{}')) THEN NULL
                           ELSE coalesce(default_role, p.default_role) END;
    p.allowed_redirects := coalesce(allowed_redirects, p.allowed_redirects);
    p := integration._check_sso_provider(p);
    UPDATE integration.sso_providers x
       SET config = p.config, secrets = p.secrets, role_mapping = p.role_mapping,
           default_role = p.default_role, allowed_redirects = p.allowed_redirects,
           session_lifetime = coalesce(_alter_sso_provider.session_lifetime, x.session_lifetime),
           enabled = coalesce(_alter_sso_provider.enabled, x.enabled), updated_at = now()
     WHERE x.id = p.id;
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (actor, 'sso.provider.alter', 'sso_provider:' || p.name, true,
            jsonb_build_object('config_keys', ARRAY(SELECT jsonb_object_keys(patch)),
                               'role_mapping_changed', role_mapping IS NOT NULL, 'enabled', enabled));
END
$$;

CREATE FUNCTION integration.alter_sso_provider(
    name text,
    config jsonb DEFAULT NULL,
    role_mapping jsonb DEFAULT NULL,
    default_role name DEFAULT NULL,
    allowed_redirects text[] DEFAULT NULL,
    session_lifetime interval DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    reset text[] DEFAULT '{}'
) RETURNS void
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp
RETURN integration._alter_sso_provider(integration._require_admin('alter_sso_provider'), name, config,
    role_mapping, default_role, allowed_redirects, session_lifetime, enabled, reset);

-- Drops the provider and the identities that logged in through it.
CREATE FUNCTION integration._drop_sso_provider(actor name, name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    identities bigint;
BEGIN
    PERFORM integration._check_actor(actor);
    SELECT count(*) INTO identities FROM integration.identities i WHERE i.provider = _drop_sso_provider.name;
    DELETE FROM integration.sso_providers x WHERE x.name = _drop_sso_provider.name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (actor, 'sso.provider.drop', 'sso_provider:' || name, true,
            jsonb_build_object('identities_dropped', identities));
    RETURN true;
END
$$;

CREATE FUNCTION integration.drop_sso_provider(name text) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp
RETURN integration._drop_sso_provider(integration._require_admin('drop_sso_provider'), name);

-- Makes a signing key when none is active (the sidecar calls it at start);
-- returns the active key's kid. Concurrent callers wait on one lock.
CREATE FUNCTION integration.ensure_signing_key() RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    active text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('integration.signing_keys'));
    SELECT kid INTO active FROM integration.signing_keys WHERE retired_at IS NULL;
    IF active IS NULL THEN
        INSERT INTO integration.signing_keys (kid, alg, private_pem, public_jwk)
        SELECT g.kid, 'EdDSA', g.private_pem, g.public_jwk FROM integration._generate_signing_key() g
        RETURNING kid INTO active;
        INSERT INTO integration.audit_log (actor, action, target, ok, detail)
        VALUES (session_user, 'sso.signing_key.create', 'signing_key:' || active, true, '{}');
    END IF;
    RETURN active;
END
$$;

-- Retires the active key and makes a new one; returns its kid. The old key
-- stays published for `grace`, by default the longest session lifetime of
-- any provider plus five minutes, so tokens it signed verify until they expire.
CREATE FUNCTION integration._rotate_signing_key(actor name, grace interval) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keep interval := coalesce(grace, (SELECT max(session_lifetime) FROM integration.sso_providers), '1 hour')
                     + CASE WHEN grace IS NULL THEN interval '5 minutes' ELSE interval '0' END;
    old text;
    new_kid text;
BEGIN
    PERFORM integration._check_actor(actor);
    IF keep < interval '0' THEN
        RAISE EXCEPTION 'grace must not be negative' USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('integration.signing_keys'));
    UPDATE integration.signing_keys SET retired_at = clock_timestamp(), publish_until = clock_timestamp() + keep
     WHERE retired_at IS NULL RETURNING kid INTO old;
    INSERT INTO integration.signing_keys (kid, alg, private_pem, public_jwk)
    SELECT g.kid, 'EdDSA', g.private_pem, g.public_jwk FROM integration._generate_signing_key() g
    RETURNING kid INTO new_kid;
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (actor, 'sso.signing_key.rotate', 'signing_key:' || new_kid, true,
            jsonb_build_object('retired', old, 'published_for', keep::text));
    RETURN new_kid;
END
$$;

CREATE FUNCTION integration.rotate_signing_key(grace interval DEFAULT NULL) RETURNS text
LANGUAGE sql VOLATILE SECURITY INVOKER SET search_path = pg_catalog, pg_temp
RETURN integration._rotate_signing_key(integration._require_admin('rotate_signing_key'), grace);

-- The public keys that verify session tokens: the active one and retired
-- ones still published. The same set the sidecar serves at /.well-known/jwks.json.
CREATE FUNCTION integration.session_jwks() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('keys', coalesce(jsonb_agg(k.public_jwk ORDER BY k.created_at DESC), '[]'))
      FROM integration.signing_keys k
     WHERE k.retired_at IS NULL OR k.publish_until > now()
$$;

-- Sessions ended by POST /auth/logout before their expiry, by token id
-- (jti); a row is kept until the token would have expired.
CREATE TABLE integration.ended_sessions (
    jti         text PRIMARY KEY CHECK (pg_catalog.length(jti) BETWEEN 1 AND 200),
    expires_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE integration.ended_sessions IS
    'pg_integration SSO sessions ended before they expired; verify_jwt(token) refuses them';
SELECT pg_catalog.pg_extension_config_dump('integration.ended_sessions', '');

-- Called by the sidecar on logout; forgets ended sessions that expired since.
CREATE FUNCTION integration.sso_end_session(jti text, expires_at timestamptz, provider text, subject text)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM integration.ended_sessions e WHERE e.expires_at < now();
    INSERT INTO integration.ended_sessions AS e (jti, expires_at) VALUES (jti, expires_at)
    ON CONFLICT ON CONSTRAINT ended_sessions_pkey DO NOTHING;
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (session_user, 'sso.logout', 'sso_provider:' || left(provider, 100), true,
            jsonb_build_object('subject', left(subject, 200)));
END
$$;

CREATE FUNCTION integration.session_ended(jti text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM integration.ended_sessions e WHERE e.jti = session_ended.jti)
$$;

-- Verifies a session token minted by the sidecar against session_jwks():
-- signature, expiry, audience 'pg_integration', and not ended by a logout.
-- Returns its claims.
CREATE FUNCTION integration.verify_jwt(token text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    claims jsonb := integration.verify_jwt(token, integration.session_jwks()::text, 'pg_integration');
BEGIN
    IF integration.session_ended(claims->>'jti') THEN
        RAISE EXCEPTION 'invalid JWT: the session was ended by a logout' USING ERRCODE = '28000';
    END IF;
    RETURN claims;
END
$$;

-- Called by the sidecar after a login: upserts the identity and writes the
-- audit row. Claims are stored as given; the sidecar never passes a token.
CREATE FUNCTION integration.sso_record_login(
    provider text, subject text, email text, name text, groups text[], claims jsonb, role name
) RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id bigint;
BEGIN
    -- The sidecar checks (and audits) this before; a backstop.
    IF integration.session_role_unfit(role) IS NOT NULL THEN
        RAISE EXCEPTION 'role % may not be given to an SSO session', role USING ERRCODE = '42501';
    END IF;
    INSERT INTO integration.identities AS i (provider, subject, email, name, groups, claims, role)
    VALUES (provider, subject, email, name, coalesce(groups, '{}'), coalesce(claims, '{}'), role)
    ON CONFLICT ON CONSTRAINT identities_provider_subject_key DO UPDATE
       SET email = EXCLUDED.email, name = EXCLUDED.name, groups = EXCLUDED.groups,
           claims = EXCLUDED.claims, role = EXCLUDED.role, last_login = now(), logins = i.logins + 1
    RETURNING i.id INTO id;
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (session_user, 'sso.login', 'sso_provider:' || provider, true,
            jsonb_build_object('subject', left(subject, 200), 'role', role, 'identity', id));
    RETURN id;
END
$$;

-- Login states already spent (their SHA-256 in hex), shared by every
-- sidecar replica: a state finishes one login only.
CREATE TABLE integration.used_login_states (
    state_hash text PRIMARY KEY CHECK (state_hash ~ '^[0-9a-f]{64}$'),
    expires_at timestamptz NOT NULL
);
CREATE INDEX used_login_states_expires_at ON integration.used_login_states (expires_at);

-- True the first time a login state is spent; prunes a bounded batch of
-- expired records.
CREATE FUNCTION integration.sso_use_login_state(hash text, valid_until timestamptz) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM integration.used_login_states u
     WHERE u.ctid = ANY (ARRAY(SELECT v.ctid FROM integration.used_login_states v
                               WHERE v.expires_at < now() LIMIT 100));
    INSERT INTO integration.used_login_states (state_hash, expires_at)
    VALUES (hash, LEAST(valid_until, now() + interval '15 minutes'))
    ON CONFLICT ON CONSTRAINT used_login_states_pkey DO NOTHING;
    RETURN FOUND;
END
$$;

-- CAS single logout: the session each service ticket started, by the
-- ticket's SHA-256 (hex; the ticket itself is never stored), kept until the
-- session would have expired. The CAS server's logoutRequest names the ticket.
CREATE TABLE integration.cas_sessions (
    provider     text NOT NULL REFERENCES integration.sso_providers (name)
                 ON UPDATE CASCADE ON DELETE CASCADE,
    ticket_hash  text NOT NULL CHECK (ticket_hash ~ '^[0-9a-f]{64}$'),
    jti          text NOT NULL CHECK (pg_catalog.length(jti) BETWEEN 1 AND 200),
    subject      text NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (provider, ticket_hash)
);
CREATE INDEX cas_sessions_expires_at ON integration.cas_sessions (expires_at);
COMMENT ON TABLE integration.cas_sessions IS
    'pg_integration CAS sessions by service ticket hash, for single logout';
SELECT pg_catalog.pg_extension_config_dump('integration.cas_sessions', '');

-- Called by the sidecar when a CAS login mints a session; prunes a bounded
-- batch of expired records.
CREATE FUNCTION integration.sso_cas_link_session(
    provider text, ticket_hash text, jti text, subject text, expires_at timestamptz
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM integration.cas_sessions c
     WHERE c.ctid = ANY (ARRAY(SELECT d.ctid FROM integration.cas_sessions d
                               WHERE d.expires_at < now() LIMIT 100));
    INSERT INTO integration.cas_sessions AS c (provider, ticket_hash, jti, subject, expires_at)
    VALUES (provider, ticket_hash, jti, left(subject, 500), expires_at)
    ON CONFLICT ON CONSTRAINT cas_sessions_pkey DO NOTHING;
END
$$;

-- Back-channel single logout: ends the session the ticket started (through
-- sso_end_session, which audits it). False, and nothing changed, for a
-- ticket that started no session still known.
CREATE FUNCTION integration.sso_cas_single_logout(provider text, ticket_hash text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s integration.cas_sessions;
BEGIN
    DELETE FROM integration.cas_sessions c
     WHERE c.provider = sso_cas_single_logout.provider AND c.ticket_hash = sso_cas_single_logout.ticket_hash
    RETURNING c.* INTO s;
    IF NOT FOUND OR s.expires_at < now() THEN
        RETURN false;
    END IF;
    PERFORM integration.sso_end_session(s.jti, s.expires_at, s.provider, s.subject);
    RETURN true;
END
$$;

-- SAML: the assertion IDs already accepted (their SHA-256 in hex; the
-- assertion itself is never stored), per provider, kept until the assertion
-- could no longer be accepted: a replayed Response is refused by every
-- sidecar replica.
CREATE TABLE integration.used_saml_assertions (
    provider         text NOT NULL REFERENCES integration.sso_providers (name)
                     ON UPDATE CASCADE ON DELETE CASCADE,
    id_hash          text NOT NULL CHECK (id_hash ~ '^[0-9a-f]{64}$'),
    not_on_or_after  timestamptz NOT NULL,
    PRIMARY KEY (provider, id_hash)
);
CREATE INDEX used_saml_assertions_not_on_or_after ON integration.used_saml_assertions (not_on_or_after);
COMMENT ON TABLE integration.used_saml_assertions IS
    'pg_integration SAML assertion IDs (hashed) already used for a login, kept until they expire';
SELECT pg_catalog.pg_extension_config_dump('integration.used_saml_assertions', '');

-- True the first time an assertion ID is used, false on a replay; prunes a
-- bounded batch of expired records. The sidecar passes the last moment it
-- would accept the assertion; it is kept until then, never less.
CREATE FUNCTION integration.sso_use_saml_assertion(provider text, id_hash text, not_on_or_after timestamptz)
RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM integration.used_saml_assertions u
     WHERE u.ctid = ANY (ARRAY(SELECT v.ctid FROM integration.used_saml_assertions v
                               WHERE v.not_on_or_after < now() LIMIT 100));
    INSERT INTO integration.used_saml_assertions AS u (provider, id_hash, not_on_or_after)
    VALUES (provider, id_hash, not_on_or_after)
    ON CONFLICT ON CONSTRAINT used_saml_assertions_pkey DO NOTHING;
    RETURN FOUND;
END
$$;

-- SAML logins in progress: the AuthnRequest's ID with where to go after the
-- login, found again at the ACS by the SHA-256 (hex) of the RelayState sent
-- with it. The IdP's POST to the ACS is cross-site, so the SameSite=Lax
-- login cookie does not come with it; the database does. Used once.
CREATE TABLE integration.saml_pending_requests (
    request_id        text PRIMARY KEY CHECK (pg_catalog.length(request_id) BETWEEN 1 AND 200),
    provider          text NOT NULL REFERENCES integration.sso_providers (name)
                      ON UPDATE CASCADE ON DELETE CASCADE,
    relay_state_hash  text NOT NULL UNIQUE CHECK (relay_state_hash ~ '^[0-9a-f]{64}$'),
    redirect_to       text,
    kept              jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(kept) = 'object'),
    expires_at        timestamptz NOT NULL
);
CREATE INDEX saml_pending_requests_expires_at ON integration.saml_pending_requests (expires_at);
COMMENT ON TABLE integration.saml_pending_requests IS
    'pg_integration SAML AuthnRequests awaiting their Response, by request ID; taken once at the ACS';
SELECT pg_catalog.pg_extension_config_dump('integration.saml_pending_requests', '');

-- Called by the sidecar when a SAML login starts; kept at most 15 minutes.
-- Prunes a bounded batch of expired requests.
CREATE FUNCTION integration.sso_saml_store_request(
    provider text, request_id text, relay_state_hash text, redirect_to text, kept jsonb, expires_at timestamptz
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM integration.saml_pending_requests r
     WHERE r.ctid = ANY (ARRAY(SELECT q.ctid FROM integration.saml_pending_requests q
                               WHERE q.expires_at < now() LIMIT 100));
    INSERT INTO integration.saml_pending_requests (request_id, provider, relay_state_hash, redirect_to, kept, expires_at)
    VALUES (request_id, provider, relay_state_hash, redirect_to, coalesce(kept, '{}'),
            LEAST(expires_at, now() + interval '15 minutes'));
END
$$;

-- Called by the sidecar at the ACS: takes (deletes) the provider's pending
-- request sent with the RelayState whose hash is given, and returns it
-- unless it expired. No row: no such login in progress, or it was taken.
CREATE FUNCTION integration.sso_saml_take_request(provider text, relay_state_hash text)
RETURNS TABLE (request_id text, redirect_to text, kept jsonb)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r integration.saml_pending_requests;
BEGIN
    DELETE FROM integration.saml_pending_requests q
     WHERE q.provider = sso_saml_take_request.provider
       AND q.relay_state_hash = sso_saml_take_request.relay_state_hash
    RETURNING q.* INTO r;
    IF FOUND AND r.expires_at >= now() THEN
        request_id := r.request_id;
        redirect_to := r.redirect_to;
        kept := r.kept;
        RETURN NEXT;
    END IF;
END
$$;

-- A refused login; `username` is what was typed (never the password).
CREATE FUNCTION integration.sso_record_failure(provider text, reason text, username text DEFAULT NULL)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (session_user, 'sso.login', 'sso_provider:' || left(provider, 100), false,
            jsonb_strip_nulls(jsonb_build_object('reason', left(reason, 300), 'username', left(username, 200))));
$$;

GRANT SELECT ON integration.sso_provider_list, integration.signing_key_list, integration.identities
    TO integration_admin;
GRANT SELECT ON integration.sso_providers, integration.signing_keys TO integration_sidecar;
