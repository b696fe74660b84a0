-- Webhooks: configuration, secrets, received events, and the functions that
-- manage them. The sidecar verifies signatures, so it must read the secrets
-- in clear (an HMAC cannot be checked against a hash of its key): secrets
-- live in webhook_secrets, readable only by the owner and integration_sidecar.
-- Admins see webhooks through the webhook_list view, which shows no secret.
CREATE TABLE integration.webhook_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook       text NOT NULL,
    delivery_id   text,
    received_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    headers       jsonb NOT NULL DEFAULT '{}',
    payload       jsonb,
    raw_body      bytea NOT NULL,
    content_type  text,
    source        inet,
    UNIQUE (webhook, delivery_id)
);
CREATE INDEX webhook_events_received_at ON integration.webhook_events (webhook, received_at);
COMMENT ON TABLE integration.webhook_events IS
    'pg_integration received webhook events; headers never include signature or credential headers';

CREATE TABLE integration.webhooks (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text NOT NULL UNIQUE
                       CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'),
    signature          text NOT NULL CHECK (signature IN
                       ('standard', 'github', 'stripe', 'slack', 'hmac-sha256', 'api-key', 'basic', 'none')),
    signature_header   text CHECK (signature_header ~ '^[A-Za-z0-9-]{1,100}$'),
    signature_encoding text NOT NULL DEFAULT 'hex' CHECK (signature_encoding IN ('hex', 'base64')),
    tolerance          interval NOT NULL DEFAULT '5 minutes'
                       CHECK (tolerance > '0' AND tolerance <= '1 day'),
    delivery_id        text CHECK (pg_catalog.length(delivery_id) BETWEEN 1 AND 200),
    target             regclass NOT NULL DEFAULT 'integration.webhook_events',
    json_schema        jsonb,
    handler            regprocedure,
    allowed_ips        cidr[],
    max_body_bytes     integer NOT NULL DEFAULT 1048576 CHECK (max_body_bytes BETWEEN 1 AND 1048576),
    enabled            boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT pg_catalog.now(),
    created_by         name NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE integration.webhooks IS
    'pg_integration webhook configuration; managed with create_webhook/alter_webhook, listed by webhook_list';

CREATE TABLE integration.webhook_secrets (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook     bigint NOT NULL REFERENCES integration.webhooks (id) ON DELETE CASCADE,
    secret      text NOT NULL CHECK (pg_catalog.length(secret) BETWEEN 8 AND 500),
    created_at  timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    expires_at  timestamptz
);
CREATE INDEX webhook_secrets_webhook ON integration.webhook_secrets (webhook);
COMMENT ON TABLE integration.webhook_secrets IS
    'pg_integration webhook secrets in clear (the sidecar computes HMACs with them); owner and integration_sidecar only';

SELECT pg_catalog.pg_extension_config_dump('integration.webhooks', '');
SELECT pg_catalog.pg_extension_config_dump('integration.webhooks_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('integration.webhook_secrets', '');
SELECT pg_catalog.pg_extension_config_dump('integration.webhook_secrets_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('integration.webhook_events', '');
SELECT pg_catalog.pg_extension_config_dump('integration.webhook_events_id_seq', '');

CREATE VIEW integration.webhook_list AS
SELECT w.id, w.name, '/webhooks/' || w.name AS path, w.signature, w.signature_header,
       w.signature_encoding, w.tolerance, w.delivery_id, w.target, w.json_schema,
       w.handler, w.allowed_ips, w.max_body_bytes, w.enabled,
       (SELECT pg_catalog.count(*) FROM integration.webhook_secrets s
         WHERE s.webhook = w.id AND (s.expires_at IS NULL OR s.expires_at > pg_catalog.now()))
           AS active_secrets,
       (SELECT pg_catalog.max(s.created_at) FROM integration.webhook_secrets s
         WHERE s.webhook = w.id) AS secret_created_at,
       w.created_at, w.created_by, w.updated_at
FROM integration.webhooks w;
COMMENT ON VIEW integration.webhook_list IS 'pg_integration webhooks, without their secrets';

-- The sidecar reloads its webhooks after any committed change.
CREATE TRIGGER webhooks_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON integration.webhooks FOR EACH STATEMENT
    EXECUTE FUNCTION integration._notify_config_changed('integration_webhook_config');
CREATE TRIGGER webhook_secrets_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON integration.webhook_secrets FOR EACH STATEMENT
    EXECUTE FUNCTION integration._notify_config_changed('integration_webhook_config');

-- 32 random bytes from two v4 UUIDs (244 random bits): no pgcrypto needed.
CREATE FUNCTION integration._random_bytes32() RETURNS bytea
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT pg_catalog.decode(pg_catalog.replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex')
$$;

-- A fresh secret in the form the scheme expects.
CREATE FUNCTION integration._new_webhook_secret(signature text) RETURNS text
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE signature
        WHEN 'standard' THEN 'whsec_' || pg_catalog.encode(integration._random_bytes32(), 'base64')
        WHEN 'basic' THEN 'webhook:' || pg_catalog.encode(integration._random_bytes32(), 'hex')
        WHEN 'api-key' THEN NULL
        WHEN 'none' THEN NULL
        ELSE pg_catalog.encode(integration._random_bytes32(), 'hex')
    END
$$;

-- Refuses a secret the scheme cannot use, with a message naming the webhook.
CREATE FUNCTION integration._check_webhook_secret(name text, signature text, secret text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF signature IN ('api-key', 'none') THEN
        IF secret IS NOT NULL THEN
            RAISE EXCEPTION 'webhook % uses signature %, which takes no secret', name, signature
                USING ERRCODE = '22023';
        END IF;
        RETURN;
    END IF;
    IF secret IS NULL OR length(secret) < 8 THEN
        RAISE EXCEPTION 'the secret of webhook % must have at least 8 characters', name
            USING ERRCODE = '22023';
    END IF;
    IF signature = 'standard' THEN
        IF secret !~ '^(whsec_|whpk_)?[A-Za-z0-9+/]+={0,2}$' THEN
            RAISE EXCEPTION 'the secret of standard webhook % must be whsec_<base64> (or whpk_<base64> for v1a)', name
                USING ERRCODE = '22023';
        END IF;
    ELSIF signature = 'basic' AND position(':' in secret) = 0 THEN
        RAISE EXCEPTION 'the secret of basic webhook % must be user:password', name
            USING ERRCODE = '22023';
    END IF;
END
$$;

-- The rights a webhook's creator needs, checked when it is created or
-- altered and again at every delivery: INSERT on a target other than the
-- extension's own and membership in its owner (the insert runs as the
-- table's owner, see _store_webhook_events); EXECUTE on the handler and
-- membership in its owner (it runs as that owner). Running code as its
-- owner, who is a role the creator belongs to, gives it no right that
-- neither its author nor the creator had.
CREATE FUNCTION integration._check_webhook_rights(webhook text, who name, target regclass, handler regprocedure)
RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles r WHERE r.rolname = who) THEN
        RAISE EXCEPTION 'role % of webhook % no longer exists', who, webhook
            USING ERRCODE = '42501', HINT = 'Drop the webhook and create it again as an existing role.';
    END IF;
    IF target <> 'integration.webhook_events'::regclass
       AND NOT (has_table_privilege(who, target, 'INSERT')
                AND pg_has_role(who, (SELECT c.relowner FROM pg_class c WHERE c.oid = target), 'USAGE')) THEN
        RAISE EXCEPTION 'role % may not insert into %, the target of webhook %', who, target, webhook
            USING ERRCODE = '42501',
                  HINT = 'The target must be a table owned by a role you belong to, with INSERT granted.';
    END IF;
    IF handler IS NOT NULL
       AND NOT (has_function_privilege(who, handler, 'EXECUTE')
                AND pg_has_role(who, (SELECT p.proowner FROM pg_proc p WHERE p.oid = handler), 'USAGE')) THEN
        RAISE EXCEPTION 'role % may not execute %, the handler of webhook %', who, handler, webhook
            USING ERRCODE = '42501',
                  HINT = 'The handler must be a function owned by a role you belong to; it runs as that role.';
    END IF;
END
$$;

-- Checks what needs the caller's rights. The functions that call it are
-- SECURITY DEFINER: `who` is the role that called them, proven by the
-- `caller` token their default argument computes (see caller.rs), not
-- session_user (the login role, wrong after SET ROLE or under PostgREST).
CREATE FUNCTION integration._check_webhook(w integration.webhooks, who name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    columns text[];
    proc record;
BEGIN
    IF w.signature = 'hmac-sha256' AND w.signature_header IS NULL THEN
        w.signature_header := 'x-signature';
    END IF;
    SELECT array_agg(a.attname::text ORDER BY a.attname) INTO columns
      FROM pg_attribute a
     WHERE a.attrelid = w.target AND a.attnum > 0 AND NOT a.attisdropped
       AND a.attname IN ('id', 'webhook', 'delivery_id', 'headers', 'payload', 'raw_body',
                         'content_type', 'source');
    IF columns IS DISTINCT FROM ARRAY['content_type', 'delivery_id', 'headers', 'id', 'payload',
                                      'raw_body', 'source', 'webhook'] THEN
        RAISE EXCEPTION 'target % of webhook % lacks columns of integration.webhook_events', w.target, w.name
            USING ERRCODE = '42703',
                  HINT = 'Create it with CREATE TABLE t (LIKE integration.webhook_events INCLUDING ALL).';
    END IF;
    IF NOT EXISTS (
        SELECT FROM pg_index i
         WHERE i.indrelid = w.target AND i.indisunique AND i.indnkeyatts = 2
           AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
                 WHERE a.attrelid = w.target AND a.attnum = ANY (i.indkey)) = ARRAY['delivery_id', 'webhook'])
    THEN
        RAISE EXCEPTION 'target % of webhook % has no unique index on (webhook, delivery_id)', w.target, w.name
            USING ERRCODE = '42P10';
    END IF;
    IF w.handler IS NOT NULL THEN
        SELECT p.prorettype, p.pronargs, p.proargtypes[0] AS argtype, p.prokind INTO proc
          FROM pg_proc p WHERE p.oid = w.handler;
        IF proc.prokind <> 'f' OR proc.prorettype <> 'jsonb'::regtype OR proc.pronargs <> 1
           OR proc.argtype <> 'jsonb'::regtype THEN
            RAISE EXCEPTION 'handler % of webhook % must be a function (event jsonb) RETURNS jsonb', w.handler, w.name
                USING ERRCODE = '42P13';
        END IF;
    END IF;
    PERFORM integration._check_webhook_rights(w.name, who, w.target, w.handler);
    IF w.json_schema IS NOT NULL AND jsonb_typeof(w.json_schema) NOT IN ('object', 'boolean') THEN
        RAISE EXCEPTION 'json_schema of webhook % must be a JSON Schema object', w.name
            USING ERRCODE = '22023';
    END IF;
    IF w.delivery_id IS NOT NULL AND w.delivery_id !~ '^(/.*|[A-Za-z0-9-]+)$' THEN
        RAISE EXCEPTION 'delivery_id of webhook % must be a header name or a JSON pointer such as /id', w.name
            USING ERRCODE = '22023';
    END IF;
END
$$;

CREATE FUNCTION integration._webhook(webhook_name text) RETURNS integration.webhooks
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    w integration.webhooks;
BEGIN
    SELECT * INTO w FROM integration.webhooks WHERE name = webhook_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'webhook % does not exist', webhook_name
            USING ERRCODE = '42704', HINT = 'SELECT name FROM integration.webhook_list lists them.';
    END IF;
    RETURN w;
END
$$;

CREATE FUNCTION integration.create_webhook(
    name text,
    signature text,
    secret text DEFAULT NULL,
    target regclass DEFAULT 'integration.webhook_events',
    json_schema jsonb DEFAULT NULL,
    handler regprocedure DEFAULT NULL,
    allowed_ips cidr[] DEFAULT NULL,
    max_body_bytes integer DEFAULT 1048576,
    delivery_id text DEFAULT NULL,
    signature_header text DEFAULT NULL,
    signature_encoding text DEFAULT 'hex',
    tolerance interval DEFAULT '5 minutes',
    enabled boolean DEFAULT true,
    caller text DEFAULT integration._caller()
) RETURNS TABLE (path text, new_secret text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who name := integration._verified_caller(caller);
    w integration.webhooks;
    generated boolean := secret IS NULL;
    the_secret text := coalesce(secret, integration._new_webhook_secret(signature));
BEGIN
    -- It takes a secret: a failure is logged without the statement.
    PERFORM integration._statement_carries_secret();
    IF EXISTS (SELECT FROM integration.webhooks x WHERE x.name = create_webhook.name) THEN
        RAISE EXCEPTION 'webhook % already exists', name USING ERRCODE = '42710',
            HINT = 'Use integration.alter_webhook to change it.';
    END IF;
    PERFORM integration._check_webhook_secret(name, signature, the_secret);
    INSERT INTO integration.webhooks AS x (name, signature, signature_header, signature_encoding,
            tolerance, delivery_id, target, json_schema, handler, allowed_ips, max_body_bytes,
            enabled, created_by)
    VALUES (name, signature,
            CASE WHEN signature = 'hmac-sha256' THEN lower(coalesce(signature_header, 'x-signature')) END,
            signature_encoding, tolerance, delivery_id, target, json_schema, handler, allowed_ips,
            max_body_bytes, enabled, who)
    RETURNING * INTO w;
    PERFORM integration._check_webhook(w, who);
    IF the_secret IS NOT NULL THEN
        INSERT INTO integration.webhook_secrets (webhook, secret) VALUES (w.id, the_secret);
    END IF;
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (who, 'webhook.create', 'webhook:' || w.name, true,
            jsonb_build_object('signature', w.signature, 'target', w.target::text,
                               'handler', w.handler::text, 'secret_generated', generated));
    path := '/webhooks/' || w.name;
    new_secret := CASE WHEN generated THEN the_secret END;
    RETURN NEXT;
END
$$;

-- Changes the given settings; NULL leaves a setting as it is, and `reset`
-- names the optional settings to clear (json_schema, handler, allowed_ips,
-- delivery_id, signature_header).
CREATE FUNCTION integration.alter_webhook(
    name text,
    signature text DEFAULT NULL,
    target regclass DEFAULT NULL,
    json_schema jsonb DEFAULT NULL,
    handler regprocedure DEFAULT NULL,
    allowed_ips cidr[] DEFAULT NULL,
    max_body_bytes integer DEFAULT NULL,
    delivery_id text DEFAULT NULL,
    signature_header text DEFAULT NULL,
    signature_encoding text DEFAULT NULL,
    tolerance interval DEFAULT NULL,
    enabled boolean DEFAULT NULL,
    reset text[] DEFAULT '{}',
    caller text DEFAULT integration._caller()
) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who name := integration._verified_caller(caller);
    w integration.webhooks := integration._webhook(name);
    old_signature text := w.signature;
    unknown text[];
BEGIN
    unknown := ARRAY(SELECT unnest(reset) EXCEPT SELECT unnest(ARRAY['json_schema', 'handler',
                     'allowed_ips', 'delivery_id', 'signature_header']));
    IF cardinality(unknown) > 0 THEN
        RAISE EXCEPTION 'alter_webhook cannot reset %', unknown USING ERRCODE = '22023',
            HINT = 'reset takes json_schema, handler, allowed_ips, delivery_id, signature_header.';
    END IF;
    w.signature := coalesce(signature, w.signature);
    w.target := coalesce(target, w.target);
    w.json_schema := CASE WHEN 'json_schema' = ANY (reset) THEN NULL ELSE coalesce(json_schema, w.json_schema) END;
    w.handler := CASE WHEN 'handler' = ANY (reset) THEN NULL ELSE coalesce(handler, w.handler) END;
    w.allowed_ips := CASE WHEN 'allowed_ips' = ANY (reset) THEN NULL ELSE coalesce(allowed_ips, w.allowed_ips) END;
    w.delivery_id := CASE WHEN 'delivery_id' = ANY (reset) THEN NULL ELSE coalesce(delivery_id, w.delivery_id) END;
    w.signature_header := CASE WHEN 'signature_header' = ANY (reset) THEN NULL
                               ELSE lower(coalesce(signature_header, w.signature_header)) END;
    IF w.signature = 'hmac-sha256' THEN
        w.signature_header := coalesce(w.signature_header, 'x-signature');
    END IF;
    w.max_body_bytes := coalesce(max_body_bytes, w.max_body_bytes);
    w.signature_encoding := coalesce(signature_encoding, w.signature_encoding);
    w.tolerance := coalesce(tolerance, w.tolerance);
    w.enabled := coalesce(enabled, w.enabled);
    IF w.signature <> old_signature THEN
        RAISE EXCEPTION 'changing the signature scheme of webhook % needs a new secret', w.name
            USING ERRCODE = '22023',
                  HINT = 'Drop and create the webhook, or create a second one and switch the sender.';
    END IF;
    PERFORM integration._check_webhook(w, who);
    -- Deliveries are checked against the creator's rights: they must hold too.
    IF who <> w.created_by THEN
        PERFORM integration._check_webhook_rights(w.name, w.created_by, w.target, w.handler);
    END IF;
    UPDATE integration.webhooks x
       SET target = w.target, json_schema = w.json_schema, handler = w.handler,
           allowed_ips = w.allowed_ips, delivery_id = w.delivery_id,
           signature_header = w.signature_header, max_body_bytes = w.max_body_bytes,
           signature_encoding = w.signature_encoding, tolerance = w.tolerance,
           enabled = w.enabled, updated_at = now()
     WHERE x.id = w.id;
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (who, 'webhook.alter', 'webhook:' || w.name, true,
            jsonb_build_object('enabled', w.enabled, 'target', w.target::text,
                               'handler', w.handler::text, 'reset', reset));
END
$$;

-- Adds a new secret (generated when NULL) that senders should use from now
-- on. Older secrets stay accepted until drop_old_webhook_secrets, or for
-- `old_valid_for` when given.
CREATE FUNCTION integration.rotate_webhook_secret(
    name text,
    secret text DEFAULT NULL,
    old_valid_for interval DEFAULT NULL,
    caller text DEFAULT integration._caller()
) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who name := integration._verified_caller(caller);
    w integration.webhooks := integration._webhook(name);
    the_secret text := coalesce(secret, integration._new_webhook_secret(w.signature));
BEGIN
    -- It takes a secret: a failure is logged without the statement.
    PERFORM integration._statement_carries_secret();
    IF w.signature IN ('api-key', 'none') THEN
        RAISE EXCEPTION 'webhook % uses signature %, which has no secret to rotate', w.name, w.signature
            USING ERRCODE = '22023';
    END IF;
    PERFORM integration._check_webhook_secret(w.name, w.signature, the_secret);
    IF old_valid_for IS NOT NULL THEN
        UPDATE integration.webhook_secrets s
           SET expires_at = LEAST(coalesce(s.expires_at, 'infinity'), now() + old_valid_for)
         WHERE s.webhook = w.id;
    END IF;
    INSERT INTO integration.webhook_secrets (webhook, secret) VALUES (w.id, the_secret);
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (who, 'webhook.rotate_secret', 'webhook:' || w.name, true,
            jsonb_build_object('old_valid_for', old_valid_for::text, 'generated', secret IS NULL));
    RETURN the_secret;
END
$$;

-- Forgets every secret but the newest; returns how many were dropped.
CREATE FUNCTION integration.drop_old_webhook_secrets(
    name text,
    caller text DEFAULT integration._caller()
) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who name := integration._verified_caller(caller);
    w integration.webhooks := integration._webhook(name);
    dropped integer;
BEGIN
    DELETE FROM integration.webhook_secrets s
     WHERE s.webhook = w.id
       AND s.id <> (SELECT max(n.id) FROM integration.webhook_secrets n WHERE n.webhook = w.id);
    GET DIAGNOSTICS dropped = ROW_COUNT;
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (who, 'webhook.drop_old_secrets', 'webhook:' || w.name, true,
            jsonb_build_object('dropped', dropped));
    RETURN dropped;
END
$$;

-- Drops the webhook; its events stay unless drop_events.
CREATE FUNCTION integration.drop_webhook(
    name text,
    drop_events boolean DEFAULT false,
    caller text DEFAULT integration._caller()
) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    who name := integration._verified_caller(caller);
    w integration.webhooks;
    events bigint := 0;
BEGIN
    SELECT * INTO w FROM integration.webhooks x WHERE x.name = drop_webhook.name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF drop_events AND w.target = 'integration.webhook_events'::regclass THEN
        DELETE FROM integration.webhook_events e WHERE e.webhook = w.name;
        GET DIAGNOSTICS events = ROW_COUNT;
    ELSIF drop_events THEN
        -- Someone else's table: its triggers and rules run as its owner, contained.
        IF NOT has_table_privilege(who, w.target, 'DELETE') THEN
            RAISE EXCEPTION 'role % may not delete from %, the target of webhook %', who, w.target, w.name
                USING ERRCODE = '42501', HINT = 'Drop it with drop_events => false and delete the events yourself.';
        END IF;
        SELECT n::bigint INTO events
          FROM integration._run_as(
                   (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = w.target),
                   format('WITH d AS (DELETE FROM %s e WHERE e.webhook OPERATOR(pg_catalog.=) $1 RETURNING 1)
                           SELECT pg_catalog.count(*)::text FROM d', w.target),
                   w.name) AS n;
    END IF;
    DELETE FROM integration.webhooks x WHERE x.id = w.id;
    INSERT INTO integration.audit_log (actor, action, target, ok, detail)
    VALUES (who, 'webhook.drop', 'webhook:' || w.name, true,
            jsonb_build_object('events_dropped', events));
    RETURN true;
END
$$;

-- Deliveries for one target table, passed to
-- integration._run_as as one value (see _store_webhook_events).
CREATE TYPE integration._webhook_batch AS (
    ords          integer[],
    names         text[],
    delivery_ids  text[],
    headers       jsonb[],
    payloads      jsonb[],
    raw_bodies    bytea[],
    content_types text[],
    sources       inet[]
);

-- Stores `batch` in `target` and returns one row per event: its place in
-- the sidecar's batch, its id, whether it was new. A table other than the
-- extension's own belongs to someone else: the insert fires its triggers,
-- defaults and rules, which its owner wrote, so it runs as that owner,
-- contained (integration._run_as), as PostgreSQL runs a materialized view's
-- query as the view's owner. A lookup of duplicates is a second statement,
-- so that it sees a row another transaction committed while the insert waited.
CREATE FUNCTION integration._store_webhook_events(batch integration._webhook_batch, target regclass)
RETURNS TABLE (ord integer, event_id bigint, inserted boolean)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ours boolean := target = 'integration.webhook_events'::regclass;
    owner name := (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = target);
    insert_sql text := format(
        'WITH input AS (
             SELECT u.ord, pg_catalog.nextval(%L::regclass) AS id, u.name, u.delivery_id,
                    coalesce(u.headers, ''{}'') AS headers, u.payload, u.raw_body,
                    u.content_type, u.source
               FROM ROWS FROM (pg_catalog.unnest(($1).ords), pg_catalog.unnest(($1).names),
                               pg_catalog.unnest(($1).delivery_ids), pg_catalog.unnest(($1).headers),
                               pg_catalog.unnest(($1).payloads), pg_catalog.unnest(($1).raw_bodies),
                               pg_catalog.unnest(($1).content_types), pg_catalog.unnest(($1).sources))
                    AS u(ord, name, delivery_id, headers, payload, raw_body, content_type, source)),
         ins AS (
             INSERT INTO %s AS e (id, webhook, delivery_id, headers, payload, raw_body, content_type, source)
             OVERRIDING SYSTEM VALUE
             SELECT id, name, delivery_id, headers, payload, raw_body, content_type, source
               FROM input ORDER BY ord
             ON CONFLICT (webhook, delivery_id) DO NOTHING
             RETURNING e.id)
         SELECT pg_catalog.concat_ws('','', i.ord, i.id)
           FROM input i JOIN ins ON ins.id OPERATOR(pg_catalog.=) i.id',
        pg_get_serial_sequence(target::text, 'id'), target);
    lookup_sql text := format(
        'SELECT pg_catalog.concat_ws('','', d.ord, e.id)
           FROM ROWS FROM (pg_catalog.unnest(($1).ords), pg_catalog.unnest(($1).names),
                           pg_catalog.unnest(($1).delivery_ids)) AS d(ord, name, delivery_id)
           JOIN %s e ON e.webhook OPERATOR(pg_catalog.=) d.name
                    AND e.delivery_id OPERATOR(pg_catalog.=) d.delivery_id', target);
    contained text := 'SELECT * FROM integration._run_as($2, $3, $1)';
    line text;
    parts text[];
    stored integer[] := '{}';
BEGIN
    -- Our own table has no user code: the insert runs as we do.
    FOR line IN EXECUTE CASE WHEN ours THEN insert_sql ELSE contained END
                  USING batch, owner, insert_sql LOOP
        parts := string_to_array(line, ',');
        ord := parts[1]::integer;
        event_id := parts[2]::bigint;
        inserted := true;
        stored := stored || ord;
        RETURN NEXT;
    END LOOP;
    IF cardinality(stored) < cardinality(batch.ords) THEN
        -- Known (webhook, delivery_id): the original event's id.
        FOR line IN EXECUTE CASE WHEN ours THEN lookup_sql ELSE contained END
                      USING batch, owner, lookup_sql LOOP
            parts := string_to_array(line, ',');
            CONTINUE WHEN parts[1]::integer = ANY (stored);
            ord := parts[1]::integer;
            event_id := parts[2]::bigint;
            inserted := false;
            RETURN NEXT;
        END LOOP;
    END IF;
END
$$;

-- Called by the sidecar with a batch of verified deliveries, in one
-- transaction (group commit). Events of webhooks without a handler are
-- stored with one INSERT per target table; events with a handler each get
-- their own subtransaction, so a failing handler rolls back that event
-- alone. Targets other than integration.webhook_events and handlers run as
-- their owners, contained; the creator's rights are checked again for every
-- batch: a webhook whose creator lost them fails alone, audited. A
-- known (webhook, delivery_id) is a duplicate: nothing is written and the
-- original id is returned. New events notify integration_webhook.
CREATE FUNCTION integration.ingest_webhook_events(
    webhook_ids bigint[],
    delivery_ids text[],
    headers jsonb[],
    payloads jsonb[],
    raw_bodies bytea[],
    content_types text[],
    sources inet[]
) RETURNS TABLE (ord integer, event_id bigint, duplicate boolean, response jsonb, error text)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer := coalesce(array_length(webhook_ids, 1), 0);
    ids bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    dups boolean[] := array_fill(false, ARRAY[n]);
    responses jsonb[] := array_fill(NULL::jsonb, ARRAY[n]);
    errors text[] := array_fill('webhook_gone'::text, ARRAY[n]);
    w integration.webhooks;
    g record;
    r record;
    event jsonb;
    answer text;
    i integer;
    k integer;
BEGIN
    -- Webhooks without a handler: one set-based INSERT per target table.
    FOR g IN
        SELECT x.target, pg_catalog.array_agg(DISTINCT x.name) AS names,
               ROW(pg_catalog.array_agg(u.ord::integer ORDER BY u.ord), pg_catalog.array_agg(x.name ORDER BY u.ord),
                   pg_catalog.array_agg(u.delivery_id ORDER BY u.ord), pg_catalog.array_agg(u.headers ORDER BY u.ord),
                   pg_catalog.array_agg(u.payload ORDER BY u.ord), pg_catalog.array_agg(u.raw_body ORDER BY u.ord),
                   pg_catalog.array_agg(u.content_type ORDER BY u.ord), pg_catalog.array_agg(u.source ORDER BY u.ord)
               )::integration._webhook_batch AS batch
          FROM unnest(webhook_ids, delivery_ids, headers, payloads, raw_bodies, content_types, sources)
               WITH ORDINALITY AS u(webhook_id, delivery_id, headers, payload, raw_body, content_type, source, ord)
          JOIN integration.webhooks x ON x.id = u.webhook_id
         WHERE x.enabled AND x.handler IS NULL
         GROUP BY x.target
    LOOP
        BEGIN
            FOR w IN SELECT * FROM integration.webhooks x WHERE x.name = ANY (g.names) LOOP
                PERFORM integration._check_webhook_rights(w.name, w.created_by, w.target, NULL);
            END LOOP;
            FOR r IN SELECT * FROM integration._store_webhook_events(g.batch, g.target) LOOP
                errors[r.ord] := NULL;
                ids[r.ord] := r.event_id;
                dups[r.ord] := NOT r.inserted;
                IF r.inserted THEN
                    PERFORM pg_notify('integration_webhook', r.event_id::text);
                END IF;
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            FOR i IN SELECT unnest((g.batch).ords) LOOP
                errors[i] := SQLSTATE || ': ' || SQLERRM;
            END LOOP;
            IF SQLSTATE NOT IN ('42501', '42704') THEN
                -- One bad event (a trigger's error, a value the table
                -- refuses) fails alone: the others are stored one by one.
                FOR k IN 1 .. cardinality((g.batch).ords) LOOP
                    EXIT WHEN cardinality((g.batch).ords) = 1;
                    BEGIN
                        SELECT * INTO r FROM integration._store_webhook_events(
                            ROW(ARRAY[(g.batch).ords[k]], ARRAY[(g.batch).names[k]],
                                ARRAY[(g.batch).delivery_ids[k]], ARRAY[(g.batch).headers[k]],
                                ARRAY[(g.batch).payloads[k]], ARRAY[(g.batch).raw_bodies[k]],
                                ARRAY[(g.batch).content_types[k]], ARRAY[(g.batch).sources[k]]
                            )::integration._webhook_batch, g.target);
                        errors[r.ord] := NULL;
                        ids[r.ord] := r.event_id;
                        dups[r.ord] := NOT r.inserted;
                        IF r.inserted THEN
                            PERFORM pg_notify('integration_webhook', r.event_id::text);
                        END IF;
                    EXCEPTION WHEN OTHERS THEN
                        errors[(g.batch).ords[k]] := SQLSTATE || ': ' || SQLERRM;
                    END;
                END LOOP;
                CONTINUE;
            END IF;
            INSERT INTO integration.audit_log (actor, action, target, ok, detail)
            SELECT x.created_by, 'webhook.store_failed', 'webhook:' || x.name, false,
                   jsonb_build_object('target', g.target::text, 'events', d.events,
                                      'sqlstate', SQLSTATE, 'error', SQLERRM)
              FROM (SELECT v.name, count(*) AS events FROM unnest((g.batch).names) AS v(name) GROUP BY v.name) d
              JOIN integration.webhooks x ON x.name = d.name;
        END;
    END LOOP;

    -- Webhooks with a handler: one subtransaction per event.
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN errors[i] IS DISTINCT FROM 'webhook_gone';
        SELECT * INTO w FROM integration.webhooks x
         WHERE x.id = webhook_ids[i] AND x.enabled AND x.handler IS NOT NULL;
        CONTINUE WHEN NOT FOUND;
        BEGIN
            answer := NULL;
            PERFORM integration._check_webhook_rights(w.name, w.created_by, w.target, w.handler);
            SELECT * INTO r FROM integration._store_webhook_events(
                ROW(ARRAY[i], ARRAY[w.name], ARRAY[delivery_ids[i]], ARRAY[headers[i]], ARRAY[payloads[i]],
                    ARRAY[raw_bodies[i]], ARRAY[content_types[i]], ARRAY[sources[i]])::integration._webhook_batch,
                w.target);
            IF r.inserted THEN
                PERFORM pg_notify('integration_webhook', r.event_id::text);
                event := jsonb_build_object('id', r.event_id, 'webhook', w.name,
                            'delivery_id', delivery_ids[i], 'headers', headers[i],
                            'payload', payloads[i], 'content_type', content_types[i],
                            'source', host(sources[i]), 'received_at', now());
                -- The handler's code is its owner's: it runs as that role,
                -- contained, whatever SECURITY clause it has now.
                SELECT h INTO answer FROM integration._run_as(
                    (SELECT pg_get_userbyid(p.proowner) FROM pg_proc p WHERE p.oid = w.handler),
                    format('SELECT (%s($1))::text', w.handler::oid::regproc), event) AS h;
            END IF;
            ids[i] := r.event_id;
            dups[i] := NOT r.inserted;
            responses[i] := answer::jsonb;
            errors[i] := NULL;
        EXCEPTION WHEN OTHERS THEN
            ids[i] := NULL;
            dups[i] := false;
            responses[i] := NULL;
            errors[i] := SQLSTATE || ': ' || SQLERRM;
            IF SQLSTATE IN ('42501', '42704') THEN
                INSERT INTO integration.audit_log (actor, action, target, ok, detail)
                VALUES (w.created_by, 'webhook.store_failed', 'webhook:' || w.name, false,
                        jsonb_build_object('target', w.target::text, 'handler', w.handler::text,
                                           'events', 1, 'sqlstate', SQLSTATE, 'error', SQLERRM));
            END IF;
        END;
    END LOOP;

    RETURN QUERY SELECT q, ids[q], dups[q], responses[q], errors[q] FROM generate_series(1, n) q;
END
$$;

-- Refused deliveries, reported by the sidecar in batches. Only these fields
-- are kept: never a body, a header or a secret.
CREATE FUNCTION integration.record_webhook_refusals(refusals jsonb) RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    written integer;
BEGIN
    IF jsonb_typeof(refusals) <> 'array' OR jsonb_array_length(refusals) > 10000 THEN
        RAISE EXCEPTION 'refusals must be a JSON array of at most 10000 objects' USING ERRCODE = '22023';
    END IF;
    INSERT INTO integration.audit_log (at, actor, action, target, ok, detail)
    SELECT coalesce(to_timestamp((r->>'at_epoch')::double precision), now()), session_user, 'webhook.refused',
           'webhook:' || left(r->>'webhook', 100), false,
           jsonb_strip_nulls(jsonb_build_object(
               'status', (r->>'status')::integer, 'reason', left(r->>'reason', 64),
               'message', left(r->>'message', 300),
               'source', host((r->>'source')::inet), 'delivery_id', left(r->>'delivery_id', 200)))
      FROM jsonb_array_elements(refusals) r;
    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;

GRANT SELECT ON integration.webhook_list, integration.webhook_events TO integration_admin;
GRANT SELECT ON integration.webhooks, integration.webhook_secrets TO integration_sidecar;
