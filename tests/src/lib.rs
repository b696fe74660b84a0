//! The end-to-end harness: starts real servers on loopback, each with its own
//! data folder and a free port, and stops them when the handle is dropped.
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! servers run as the `postgres` OS user.

mod httpbin;
mod mariadb;
mod nginx;
mod postgres_cluster;
mod process;
mod sidecar;
pub mod sql;

pub use httpbin::HttpBin;
pub use mariadb::{MariaDb, MARIADB_ROOT_PASSWORD};
pub use nginx::Nginx;
pub use postgres_cluster::PgCluster;
pub use process::{free_port, workspace_root};
pub use sidecar::{sample, scratch_dir, sidecar_command, Sidecar, SIDECAR_VARIABLES};
