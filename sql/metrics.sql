-- integration.metrics: what a DBA watches, cheap enough to read at every
-- Prometheus scrape (each row comes from an index or a small table): the
-- HTTP queue, recent webhook events, dropped audit events and failed key
-- checks. The sidecar serves it at /metrics; `type` and `help` are the
-- OpenMetrics ones. Owned by the extension owner, so it sees every role's
-- queued requests (as counts only).

-- Webhook events stored in the last minute, by webhook, from each target
-- table (a target has the columns of integration.webhook_events).
CREATE FUNCTION integration._webhook_events_last_minute()
RETURNS TABLE (webhook text, events bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t regclass;
BEGIN
    FOR t IN SELECT DISTINCT w.target FROM integration.webhooks w WHERE w.enabled LOOP
        RETURN QUERY EXECUTE pg_catalog.format(
            'SELECT e.webhook, pg_catalog.count(*) FROM %s e
             WHERE e.received_at > pg_catalog.now() - interval ''1 minute''
               AND e.webhook IN (SELECT w.name FROM integration.webhooks w WHERE w.target = $1)
             GROUP BY e.webhook', t) USING t;
    END LOOP;
END
$$;

CREATE VIEW integration.metrics AS
SELECT 'integration_http_queue_requests'::text AS name, 'gauge'::text AS type,
       'Queued outbound HTTP requests, waiting or being delivered'::text AS help,
       '{}'::jsonb AS labels, pg_catalog.count(*)::float8 AS value
  FROM integration.http_requests
UNION ALL
SELECT 'integration_http_queue_oldest_due_seconds', 'gauge',
       'Age of the oldest queued request that is due and not being delivered (0 when none)',
       '{}', coalesce(extract(epoch FROM pg_catalog.now() - pg_catalog.min(q.next_attempt_at)), 0)::float8
  FROM integration.http_requests q
 WHERE q.next_attempt_at <= pg_catalog.now() AND q.claimed_by IS NULL
UNION ALL
SELECT 'integration_http_responses', 'gauge',
       'Finished queued requests kept in http_responses, by outcome',
       pg_catalog.jsonb_build_object('outcome', o.outcome), coalesce(r.n, 0)::float8
  FROM (VALUES ('ok'), ('http_error'), ('failed')) AS o(outcome)
  LEFT JOIN (SELECT CASE WHEN x.status IS NULL THEN 'failed'
                         WHEN x.status < 400 THEN 'ok' ELSE 'http_error' END AS outcome,
                    pg_catalog.count(*) AS n
               FROM integration.http_responses x GROUP BY 1) r ON r.outcome = o.outcome
UNION ALL
SELECT 'integration_webhook_events_last_minute', 'gauge',
       'Webhook events stored in the last minute, by webhook',
       pg_catalog.jsonb_build_object('webhook', w.name), coalesce(e.events, 0)::float8
  FROM integration.webhooks w
  LEFT JOIN integration._webhook_events_last_minute() e ON e.webhook = w.name
 WHERE w.enabled
UNION ALL
SELECT 'integration_audit_events_dropped', 'counter',
       'Audit events dropped because the ring was full, since the extension was created',
       '{}', coalesce(pg_catalog.sum((a.detail->>'events')::bigint), 0)::float8
  FROM integration.audit_log a WHERE a.action = 'audit.dropped'
UNION ALL
SELECT 'integration_api_key_failures_last_minute', 'gauge',
       'Failed API key verifications and authentications in the last minute, by reason',
       pg_catalog.jsonb_build_object('reason', coalesce(a.detail->>'reason', 'unknown')),
       pg_catalog.sum(coalesce((a.detail->>'count')::bigint, 1))::float8
  FROM integration.audit_log a
 WHERE a.action IN ('api_key.verify', 'api_key.authenticate') AND NOT a.ok
   AND a.at > pg_catalog.now() - interval '1 minute'
 GROUP BY a.detail->>'reason';
COMMENT ON VIEW integration.metrics IS
    'pg_integration metrics for monitoring (served by the sidecar at /metrics): HTTP queue, webhook events, dropped audit events, failed key checks';

REVOKE ALL ON integration.metrics FROM PUBLIC;
GRANT SELECT ON integration.metrics TO integration_admin, integration_sidecar;
GRANT EXECUTE ON FUNCTION integration._webhook_events_last_minute() TO integration_admin, integration_sidecar;
