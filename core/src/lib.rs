//! Pure Rust shared by the extension and the sidecar: no pgrx, no server.
//! Everything here is tested with a plain `cargo test -p integration-core`.

pub mod api_keys;
pub mod data_sources;
pub mod http_policy;
pub mod jwt;
pub mod pg_numeric;
pub mod sql_dialect;
pub mod webhooks;
