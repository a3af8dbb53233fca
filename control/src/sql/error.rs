//! The errors of the SQL layer: each names its database, and `is_unavailable` tells a busy or
//! unreachable database (retry later, nothing written) from a bad request.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {message}")]
    Postgres {
        message: String,
        /// The SQLSTATE code, when the server sent one.
        code: Option<String>,
    },
    #[error("query returned no rows")]
    NoRows,
    #[error("column {0}: {1}")]
    Type(usize, super::TypeError),
    /// A group commit that failed (`crate::writer`): the change it carried is gone.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The database, not the request: busy, read-only, full, unreachable, or a transaction
    /// that lost a race and may be retried. Nothing was written.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Sqlite(e) => {
                use rusqlite::ErrorCode::*;
                matches!(
                    e.sqlite_error_code(),
                    Some(
                        ReadOnly
                            | DiskFull
                            | SystemIoFailure
                            | CannotOpen
                            | DatabaseBusy
                            | DatabaseLocked
                            | OutOfMemory
                    )
                )
            }
            Error::Postgres { code, .. } => match code.as_deref() {
                // No code: the connection is gone. 08: connection; 40: serialization or
                // deadlock; 53: resources; 57: shutdown; 25006: read-only transaction.
                None => true,
                Some(c) => {
                    c.starts_with("08")
                        || c.starts_with("40")
                        || c.starts_with("53")
                        || c.starts_with("57")
                        || c == "25006"
                }
            },
            Error::Unavailable(_) => true,
            _ => false,
        }
    }
}

/// `.optional()` on a single-row result, as rusqlite's `OptionalExtension`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}
impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(Error::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
