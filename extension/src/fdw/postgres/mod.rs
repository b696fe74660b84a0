//! `postgres_wrapper`: PostgreSQL and PostgreSQL-compatible engines
//! (KingbaseES) as foreign tables, over tokio-postgres. Scans stream through
//! a remote cursor in `fetch_size` batches; writes go by the real primary key
//! inside a remote transaction tied to the local one (see `connection`).
//! Errors carry the remote SQLSTATE and message, never the user mapping.

mod connection;
mod decode;
mod deparse;
mod import;
pub mod pass_through;
mod postgres_wrapper;
mod tls;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum PostgresWrapperError {
    #[error("{server}: {message}")]
    Remote {
        server: String,
        code: Option<String>,
        message: String,
    },
    #[error("invalid option {option}: {reason}")]
    Option { option: String, reason: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
    #[error("{0}")]
    Value(String),
}

pub type Result<T> = std::result::Result<T, PostgresWrapperError>;

impl PostgresWrapperError {
    /// A remote failure with its SQLSTATE. tokio-postgres' messages name the
    /// server's answer or the socket error, never the connection settings.
    pub fn remote(server: &str, e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => PostgresWrapperError::Remote {
                server: format!("remote server \"{server}\""),
                code: Some(db.code().code().to_string()),
                message: match db.detail() {
                    Some(detail) => format!("{} ({detail})", db.message()),
                    None => db.message().to_string(),
                },
            },
            None => PostgresWrapperError::Remote {
                server: format!("remote server \"{server}\""),
                code: None,
                message: e.to_string(),
            },
        }
    }

    pub fn option(option: &str, reason: impl Into<String>) -> Self {
        PostgresWrapperError::Option {
            option: option.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<crate::fdw::statements::Problem> for PostgresWrapperError {
    fn from(p: crate::fdw::statements::Problem) -> Self {
        match p {
            crate::fdw::statements::Problem::Option { option, reason } => {
                PostgresWrapperError::Option { option, reason }
            }
            crate::fdw::statements::Problem::Value(v) => PostgresWrapperError::Value(v),
        }
    }
}

pub use connection::{end_savepoints, finish_remote_transactions, in_remote_transaction};

impl From<PostgresWrapperError> for ErrorReport {
    fn from(value: PostgresWrapperError) -> Self {
        let code = match &value {
            PostgresWrapperError::Remote { code: Some(c), .. } => crate::fdw::sqlstate_code(c),
            PostgresWrapperError::Remote { code: None, .. } => {
                PgSqlErrorCode::ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION
            }
            PostgresWrapperError::Option { .. } => PgSqlErrorCode::ERRCODE_FDW_INVALID_OPTION_NAME,
            PostgresWrapperError::Unsupported(_) => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            PostgresWrapperError::Runtime(_) => PgSqlErrorCode::ERRCODE_FDW_ERROR,
            PostgresWrapperError::Value(_) => PgSqlErrorCode::ERRCODE_FDW_INVALID_DATA_TYPE,
        };
        ErrorReport::new(code, format!("postgres_wrapper: {value}"), "")
    }
}
