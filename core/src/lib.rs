//! Pure Rust shared by the extension and the sidecar: no pgrx, no server.
//! Everything here is tested with a plain `cargo test -p integration-core`.

pub mod api_keys;
pub mod cas;
pub mod data_sources;
pub mod http_policy;
pub mod http_retry;
pub mod jwt;
pub mod multipart;
pub mod pg_numeric;
pub mod sql_dialect;
pub mod sql_names;
pub mod sso;
pub mod webhooks;
