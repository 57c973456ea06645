//! Workflows: the only code that changes a transfer's state, and the only writer of audit
//! events. Each public function is one thing a person or a job does: open a transfer, issue a
//! token, upload, seal, approve, release, expire.

pub mod access;
pub mod admin;
pub mod archive_upload;
pub mod browse;
mod budget;
pub mod collect;
pub mod egress;
pub mod governance;
pub mod lease;
pub mod membership;
pub mod ops;
pub mod refusals;
pub mod release;
pub mod scanning;
pub mod sessions;
pub mod throttle;
pub mod transfers;
pub mod upload;

use crate::domain::PathError;

/// What went wrong, in terms a client can act on. `server::error` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credentials, or credentials that are not (or no longer) valid. 401.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials that do not allow this. 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with the current state. 409.
    #[error("{0}")]
    Conflict(String),
    /// Malformed or impossible input. 400.
    #[error("{0}")]
    BadRequest(String),
    /// A refused file path. 400.
    #[error("refused file path: {0}")]
    Path(#[from] PathError),
    /// Over a size or count limit. 413.
    #[error("{0}")]
    TooLarge(String),
    /// tus checksum extension: the chunk did not match its checksum. 460.
    #[error("{0}")]
    ChecksumMismatch(String),
    /// The client went away or sent fewer bytes than it said. 400.
    #[error("upload interrupted: {0}")]
    Interrupted(String),
    /// A volume is full, or too full for what the upload declares. 507 with Retry-After; the
    /// message names the volume, never a path.
    #[error("{0}")]
    InsufficientStorage(String),
    /// Too many refused requests from this client address or with this credential. 429, with
    /// `Retry-After`.
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    /// A download's `Range` lies outside the file (its size given). 416.
    #[error("the range lies outside the file's {0} bytes")]
    RangeNotSatisfiable(u64),
    /// A store we depend on (a volume's S3 store) is not answering: nothing past what was
    /// acknowledged was kept. 503 with Retry-After.
    #[error("{0}")]
    Unavailable(String),
    /// Our fault. 500, with the cause logged, not shown.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        // SQLITE_FULL (13): the database's disk is full. The transaction was rolled back.
        if let crate::store::StoreError::Db(sqlx::Error::Database(db)) = &e {
            if db.code().as_deref() == Some("13") {
                tracing::error!(cause = %e, "storage full");
                return Error::InsufficientStorage(
                    "the metadata store's volume is full; nothing was recorded, retry later".into(),
                );
            }
        }
        if crate::volumes::is_storage_full(&e) {
            return full(&e);
        }
        Error::Internal(e.to_string())
    }
}

impl From<crate::volumes::VolumeError> for Error {
    fn from(e: crate::volumes::VolumeError) -> Self {
        match e {
            crate::volumes::VolumeError::Full(msg) => Error::InsufficientStorage(msg),
            crate::volumes::VolumeError::Unavailable(msg) => Error::Unavailable(msg),
            e if crate::volumes::is_storage_full(&e) => full(&e),
            e if e.is_unavailable() => {
                tracing::warn!(cause = %e, "object store did not answer");
                Error::Unavailable(
                    "a volume's object store is not answering; nothing past the last \
                     acknowledged offset was kept, retry shortly"
                        .into(),
                )
            }
            e => Error::Internal(e.to_string()),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        if crate::volumes::is_storage_full(&e) {
            return full(&e);
        }
        Error::Internal(e.to_string())
    }
}

/// A full disk met where the volume is not known: the client learns only that, the log
/// gets the cause.
fn full(cause: &dyn std::fmt::Display) -> Error {
    tracing::error!(%cause, "storage full");
    Error::InsufficientStorage("the service's storage is full; retry later".into())
}
