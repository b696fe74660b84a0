-- pg_integration 0.1.0 → 0.2.0 (ALTER EXTENSION pg_integration UPDATE).
-- Everything that changed in the extension's SQL since 0.1.0 (commit in
-- sql/releases); tests/tests/upgrade.rs requires the result to equal a fresh
-- 0.2.0 install. Keep new columns at the end of their tables in sql/ too, so
-- that both orders agree.
\echo Use "ALTER EXTENSION pg_integration UPDATE" to load this file. \quit

-- SAML providers may give the IdP by idp_metadata_url (sql/sso.sql).
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
