//! In-database tests run by `cargo pgrx test`, one file per capability.

mod api_keys;
mod jwt;
