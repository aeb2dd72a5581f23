//! Domain errors. They know nothing of HTTP or terminals; the front ends map them
//! (`exit_code` for the CLI, an HTTP status for the server).

use std::process::ExitCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value given by a user or client is wrong; `field` names where it came from.
    #[error("invalid {field}: {message}")]
    InvalidInput { field: &'static str, message: String },

    #[error("{0}")]
    NotFound(String),

    /// The request clashes with existing state (the user already has a session).
    #[error("{0}")]
    Conflict(String),

    /// A finite resource (ports, GPU slices, uids) is used up.
    #[error("{0}")]
    Exhausted(String),

    /// A system sandman depends on (Docker, NVML, the image) cannot be used right now.
    #[error("{0}")]
    Unavailable(String),

    /// The person pressed Ctrl-C.
    #[error("interrupted")]
    Interrupted,

    /// Anything else: a bug or an unexpected failure of the host.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidInput { field, message: message.into() }
    }

    /// Exit codes are part of the CLI's contract (documented in the man page).
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Error::Internal(_) => 1,
            Error::InvalidInput { .. } => 2,
            Error::Conflict(_) | Error::Exhausted(_) => 3,
            Error::NotFound(_) => 4,
            Error::Unavailable(_) => 5,
            Error::Interrupted => 130,
        })
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Internal(anyhow::Error::new(e).context("session database"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Internal(e.into())
    }
}
