-- Roles are cluster-wide: create them only when missing, so that
-- CREATE EXTENSION works in a second database of the same cluster.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'integration_admin') THEN
        CREATE ROLE integration_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'integration_user') THEN
        CREATE ROLE integration_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'integration_sidecar') THEN
        CREATE ROLE integration_sidecar NOLOGIN;
    END IF;
END
$roles$;

COMMENT ON ROLE integration_admin IS 'pg_integration: manages API keys, policies and reads the audit log';
COMMENT ON ROLE integration_user IS 'pg_integration: may verify API keys and JWTs and make allowed outbound calls';
COMMENT ON ROLE integration_sidecar IS 'pg_integration: the role integration-sidecar logs in as';

-- PUBLIC gets nothing in this schema; each role gets what it needs.
REVOKE ALL ON SCHEMA integration FROM PUBLIC;
GRANT USAGE ON SCHEMA integration TO integration_admin, integration_user, integration_sidecar;

-- The sidecar LISTENs on one channel per configuration it caches and reloads
-- after any committed change: statement triggers name the channel.
CREATE FUNCTION integration._notify_config_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_catalog.pg_notify(TG_ARGV[0], TG_TABLE_NAME);
    RETURN NULL;
END
$$;
