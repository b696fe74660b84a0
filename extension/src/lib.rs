//! pg_integration: connects PostgreSQL to the outside world.
//! Each capability is one module; the SQL objects that are not functions
//! (tables, views, roles, grants) live in `sql/` and are included below.

use pgrx::prelude::*;

mod api_keys;
mod audit;
mod caller;
mod contained;
mod data_sources;
mod errors;
mod fdw;
mod http;
mod jwt;
mod owner;
mod raw_datum;
mod settings;
mod subxact;
mod worker;

pgrx::pg_module_magic!();

extension_sql_file!("../../sql/roles.sql", name = "roles", bootstrap);
extension_sql_file!("../../sql/audit.sql", name = "audit", requires = ["roles"]);
extension_sql_file!(
    "../../sql/api_keys.sql",
    name = "api_keys",
    requires = ["roles", "audit"]
);
extension_sql_file!(
    "../../sql/webhooks.sql",
    name = "webhooks",
    requires = ["roles", "audit", caller::_caller, caller::_verified_caller]
);
extension_sql_file!(
    "../../sql/sso.sql",
    name = "sso",
    requires = ["roles", "audit"]
);
extension_sql_file!(
    "../../sql/metrics.sql",
    name = "metrics",
    requires = ["http_queue", "webhooks", "audit"]
);
extension_sql_file!("../../sql/finalize.sql", name = "finalize", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    settings::init();
    errors::init();
    audit::init();
    worker::init();
    api_keys::init();
    http::init();
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'pg_integration'"]
    }
}
