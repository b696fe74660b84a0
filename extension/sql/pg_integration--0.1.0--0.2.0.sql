-- pg_integration 0.1.0 → 0.2.0 (ALTER EXTENSION pg_integration UPDATE).
-- Everything that changed in the extension's SQL since 0.1.0 (commit in
-- sql/releases); tests/tests/upgrade.rs requires the result to equal a fresh
-- 0.2.0 install. Keep new columns at the end of their tables in sql/ too, so
-- that both orders agree.
\echo Use "ALTER EXTENSION pg_integration UPDATE" to load this file. \quit
