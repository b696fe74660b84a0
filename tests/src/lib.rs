//! The end-to-end harness: starts real servers on loopback, each with its own
//! data folder and a free port, and stops them when the handle is dropped.
//! PostgreSQL refuses to run as root, so when the tests run as root the
//! servers run as the `postgres` OS user.

pub mod cas_server;
pub mod certs;
pub mod chromium;
mod httpbin;
pub mod ldap;
mod mariadb;
mod nginx;
pub mod oidc_provider;
mod postgres_cluster;
mod process;
pub mod remotes;
pub mod rogue_oidc;
pub mod saml_idp;
pub mod saml_signer;
mod sidecar;
pub mod sql;
mod test_server;
pub mod web;

pub use cas_server::CasServer;
pub use httpbin::HttpBin;
pub use ldap::Slapd;
pub use mariadb::{MariaDb, MARIADB_ROOT_PASSWORD};
pub use nginx::Nginx;
pub use oidc_provider::OidcProvider;
pub use postgres_cluster::PgCluster;
pub use process::{free_port, workspace_root};
pub use rogue_oidc::RogueOidc;
pub use saml_idp::SamlIdp;
pub use saml_signer::SamlSigner;
pub use sidecar::{sample, scratch_dir, sidecar_command, Sidecar, SIDECAR_VARIABLES};
pub use test_server::TestServer;
