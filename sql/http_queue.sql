-- The durable outbound HTTP queue. `http_enqueue()` inserts a request (a
-- logged table: it survives a crash); the database's background worker
-- takes due rows with FOR UPDATE SKIP LOCKED, delivers them, retries what may
-- pass, and moves each finished request into `http_responses` in the same
-- transaction that deletes it, so every request ends with exactly one
-- response row. Callers see and may cancel (DELETE) only their own rows.

CREATE TABLE integration.http_requests (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    method          text NOT NULL,
    url             text NOT NULL,
    host            text NOT NULL,
    headers         jsonb NOT NULL DEFAULT '{}',
    body            bytea,
    timeout         interval NOT NULL,
    retries         integer NOT NULL CHECK (retries BETWEEN 0 AND 100),
    backoff         interval NOT NULL,
    callback        regprocedure,
    attempts        integer NOT NULL DEFAULT 0,
    -- When the row is due; while a worker delivers it, when its claim lapses.
    next_attempt_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- The worker delivering it (a backend pid), NULL while it waits.
    claimed_by      integer,
    last_error      text,
    created_by      name NOT NULL DEFAULT CURRENT_USER,
    created_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- The caller's outbound policy when it enqueued: the worker delivers
    -- under it, so a queued call can reach nothing its caller could not.
    policy          jsonb NOT NULL
);
CREATE INDEX http_requests_due ON integration.http_requests (next_attempt_at, id);
-- Each role's requests in due order: the worker takes every role's turn
-- from it, and http_enqueue() counts a role's queued requests with it.
CREATE INDEX http_requests_role ON integration.http_requests (created_by, next_attempt_at, id);
CREATE INDEX http_requests_claimed ON integration.http_requests (claimed_by)
    WHERE claimed_by IS NOT NULL;
COMMENT ON TABLE integration.http_requests IS
    'Outbound HTTP requests waiting for delivery by the pg_integration worker';

CREATE TABLE integration.http_responses (
    id            bigint PRIMARY KEY,
    method        text NOT NULL,
    url           text NOT NULL,
    -- NULL when no response came back; error then says why.
    status        integer,
    headers       jsonb,
    body          bytea,
    content_type  text,
    error         text,
    attempts      integer NOT NULL,
    -- Duration of the last attempt.
    elapsed       interval,
    callback      regprocedure,
    callback_error text,
    created_by    name NOT NULL,
    created_at    timestamptz NOT NULL,
    completed_at  timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX http_responses_completed_at ON integration.http_responses (completed_at);
COMMENT ON TABLE integration.http_responses IS
    'Outcome of each queued outbound HTTP request; removed after integration.http_response_ttl';

ALTER TABLE integration.http_requests ENABLE ROW LEVEL SECURITY;
ALTER TABLE integration.http_responses ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_requests ON integration.http_requests
    USING (created_by = CURRENT_USER);
CREATE POLICY own_responses ON integration.http_responses
    USING (created_by = CURRENT_USER);
CREATE POLICY admin_requests ON integration.http_requests TO integration_admin
    USING (true);
CREATE POLICY admin_responses ON integration.http_responses TO integration_admin
    USING (true);

-- Reading and cancelling (DELETE) only; rows are written by http_enqueue()
-- as the owner and by the worker.
GRANT SELECT, DELETE ON integration.http_requests, integration.http_responses
    TO integration_user, integration_admin;

SELECT pg_catalog.pg_extension_config_dump('integration.http_requests', '');
SELECT pg_catalog.pg_extension_config_dump('integration.http_responses', '');
SELECT pg_catalog.pg_extension_config_dump('integration.http_requests_id_seq', '');
