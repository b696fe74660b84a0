-- API keys. The store holds a keyed hash of each secret, never the secret;
-- it is readable by its owner only. Admins read the api_keys view.
CREATE TABLE integration.api_key_store (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL CHECK (pg_catalog.btrim(name) <> '' AND pg_catalog.length(name) <= 200),
    role          name NOT NULL,
    scopes        text[] NOT NULL DEFAULT '{}',
    metadata      jsonb NOT NULL DEFAULT '{}' CHECK (pg_catalog.jsonb_typeof(metadata) = 'object'),
    secret_hash   bytea NOT NULL CHECK (pg_catalog.length(secret_hash) = 32),
    created_at    timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by    name NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    rotated_from  bigint REFERENCES integration.api_key_store (id)
);
COMMENT ON TABLE integration.api_key_store IS
    'pg_integration API keys with the keyed hash of their secret; use the api_keys view';

-- The key of the keyed hash, one per database, made on first use.
CREATE TABLE integration.hash_keys (
    purpose  text PRIMARY KEY,
    key      bytea NOT NULL CHECK (pg_catalog.length(key) >= 32)
);
COMMENT ON TABLE integration.hash_keys IS
    'pg_integration keys for keyed hashes; readable by the owner only';

SELECT pg_catalog.pg_extension_config_dump('integration.api_key_store', '');
SELECT pg_catalog.pg_extension_config_dump('integration.api_key_store_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('integration.hash_keys', '');

CREATE VIEW integration.api_keys AS
SELECT id, name, role, scopes, metadata, created_at, created_by, expires_at,
       revoked_at, last_used_at, rotated_from,
       CASE
           WHEN revoked_at IS NOT NULL THEN 'revoked'
           WHEN expires_at IS NOT NULL AND expires_at <= pg_catalog.now() THEN 'expired'
           ELSE 'active'
       END AS status
FROM integration.api_key_store;
COMMENT ON VIEW integration.api_keys IS 'pg_integration API keys, without any secret material';

GRANT SELECT ON integration.api_keys TO integration_admin;
