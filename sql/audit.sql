-- The audit log: who did what to which object, and whether it worked.
-- Append-only for everyone but its owner: nobody else is granted INSERT,
-- UPDATE, DELETE or TRUNCATE; rows are written by the extension's own
-- functions (as the owner) and by its background worker.
CREATE TABLE integration.audit_log (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    actor   text NOT NULL DEFAULT CURRENT_USER,
    action  text NOT NULL,
    target  text,
    ok      boolean NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON integration.audit_log (at);
CREATE INDEX audit_log_action_at ON integration.audit_log (action, at);
COMMENT ON TABLE integration.audit_log IS
    'pg_integration audit trail; never holds a secret, a token or a body';

SELECT pg_catalog.pg_extension_config_dump('integration.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('integration.audit_log_id_seq', '');

GRANT SELECT ON integration.audit_log TO integration_admin;
