//! `mysql_wrapper`: MySQL ≥ 5.7 and MariaDB ≥ 10.3 as foreign tables, over
//! mysql_async. Scans stream rows through a bounded channel (`fetch_size`);
//! writes go by the real primary key inside a remote transaction tied to the
//! local one. Errors carry the remote SQLSTATE and message, never the user
//! mapping.

mod connection;
mod decode;
mod deparse;
mod import;
mod lent;
mod mysql_wrapper;
pub mod pass_through;

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgSqlErrorCode;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MysqlWrapperError {
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
    #[error("{0}")]
    Nul(String),
    #[error("{0}")]
    ZeroDate(String),
}

pub type Result<T> = std::result::Result<T, MysqlWrapperError>;

impl MysqlWrapperError {
    /// A remote failure: the server's SQLSTATE and message, or the socket
    /// error. mysql_async's messages never include the password.
    pub fn remote(server: &str, e: mysql_async::Error) -> Self {
        let server = format!("remote server \"{server}\"");
        match e {
            mysql_async::Error::Server(s) => MysqlWrapperError::Remote {
                server,
                code: Some(s.state.clone()),
                message: format!("{} (MySQL error {})", s.message, s.code),
            },
            other => MysqlWrapperError::Remote {
                server,
                code: None,
                message: other.to_string(),
            },
        }
    }

    pub fn option(option: &str, reason: impl Into<String>) -> Self {
        MysqlWrapperError::Option {
            option: option.to_string(),
            reason: reason.into(),
        }
    }

    /// True when the connection itself failed (the server went away),
    /// not the statement.
    pub fn is_connection_loss(e: &mysql_async::Error) -> bool {
        match e {
            // Connection killed, server shutdown, gone away, lost.
            mysql_async::Error::Server(s) => matches!(s.code, 1053 | 1927 | 2006 | 2013),
            _ => true,
        }
    }
}

impl From<crate::fdw::statements::Problem> for MysqlWrapperError {
    fn from(p: crate::fdw::statements::Problem) -> Self {
        match p {
            crate::fdw::statements::Problem::Option { option, reason } => {
                MysqlWrapperError::Option { option, reason }
            }
            crate::fdw::statements::Problem::Value(v) => MysqlWrapperError::Value(v),
        }
    }
}

pub use connection::{end_savepoints, finish_remote_transactions, in_remote_transaction};

impl From<MysqlWrapperError> for ErrorReport {
    fn from(value: MysqlWrapperError) -> Self {
        let code = match &value {
            MysqlWrapperError::Remote { code: Some(c), .. } => crate::fdw::sqlstate_code(c),
            MysqlWrapperError::Remote { code: None, .. } => {
                PgSqlErrorCode::ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION
            }
            MysqlWrapperError::Option { .. } => PgSqlErrorCode::ERRCODE_FDW_INVALID_OPTION_NAME,
            MysqlWrapperError::Unsupported(_) => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            MysqlWrapperError::Runtime(_) => PgSqlErrorCode::ERRCODE_FDW_ERROR,
            MysqlWrapperError::Value(_) => PgSqlErrorCode::ERRCODE_FDW_INVALID_DATA_TYPE,
            MysqlWrapperError::Nul(_) => PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            MysqlWrapperError::ZeroDate(_) => PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
        };
        ErrorReport::new(code, format!("mysql_wrapper: {value}"), "")
    }
}
