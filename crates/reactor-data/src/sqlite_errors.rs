//! SQLite's errors in Postgres's words: the SQLSTATE a client would have seen on O2 for the
//! same constraint, so both adapters answer with the same code and status.

use rusqlite::ErrorCode;
use rusqlite::ffi;

use crate::error::DataError;

pub fn translate(e: rusqlite::Error) -> DataError {
    if let rusqlite::Error::SqliteFailure(failure, message) = &e
        && failure.code == ErrorCode::ConstraintViolation
    {
        let message = message.clone().unwrap_or_default();
        let code = match failure.extended_code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => "23505",
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => "23503",
            ffi::SQLITE_CONSTRAINT_NOTNULL => "23502",
            ffi::SQLITE_CONSTRAINT_CHECK => "23514",
            _ => "23000",
        };
        let message = match code {
            "23505" => format!("duplicate key value violates unique constraint ({message})"),
            "23503" => "insert or update violates a foreign key constraint".to_string(),
            "23502" => format!("null value violates not-null constraint ({message})"),
            "23514" => format!("new row violates check constraint ({message})"),
            _ => message,
        };
        return DataError::Database {
            code: code.to_string(),
            message,
            details: None,
            hint: None,
        };
    }
    if let rusqlite::Error::SqliteFailure(_, Some(message)) = &e
        && message.starts_with("datatype mismatch")
    {
        return DataError::Database {
            code: "22P02".to_string(),
            message: message.clone(),
            details: None,
            hint: None,
        };
    }
    DataError::Internal(e.to_string())
}
