//! Domain errors and the one table of error kinds: each kind's exit code (the CLI), HTTP status
//! and stable code string (the server's `{"error": ..., "code": ...}`). The errors themselves
//! know nothing of HTTP or terminals; the front ends read the table.

use std::process::ExitCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as the CLI's exit code and the API's status and `code` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidInput,
    /// HTTP only: no token, a wrong one, or another scheme than Bearer.
    Unauthorized,
    NotFound,
    /// HTTP only: the path exists but not with this method.
    MethodNotAllowed,
    /// HTTP only: the request body did not arrive in time.
    Timeout,
    Conflict,
    /// HTTP only: the request body is larger than the limit.
    PayloadTooLarge,
    Exhausted,
    Unavailable,
    Interrupted,
    Internal,
}

/// One row of the table.
pub struct KindSpec {
    pub exit_code: u8,
    pub http_status: u16,
    pub code: &'static str,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::InvalidInput,
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::Timeout,
        ErrorKind::Conflict,
        ErrorKind::PayloadTooLarge,
        ErrorKind::Exhausted,
        ErrorKind::Unavailable,
        ErrorKind::Interrupted,
        ErrorKind::Internal,
    ];

    /// The table. Exit codes and codes are part of the contract (README, man page, OpenAPI).
    /// The HTTP-only kinds are a client's mistake, so their exit code is that of invalid input.
    pub const fn spec(self) -> KindSpec {
        let (exit_code, http_status, code) = match self {
            ErrorKind::InvalidInput => (2, 400, "invalid_input"),
            ErrorKind::Unauthorized => (2, 401, "unauthorized"),
            ErrorKind::NotFound => (4, 404, "not_found"),
            ErrorKind::MethodNotAllowed => (2, 405, "method_not_allowed"),
            ErrorKind::Timeout => (2, 408, "timeout"),
            ErrorKind::Conflict => (3, 409, "conflict"),
            ErrorKind::PayloadTooLarge => (2, 413, "payload_too_large"),
            ErrorKind::Exhausted => (3, 409, "exhausted"),
            ErrorKind::Unavailable => (5, 503, "unavailable"),
            // Only the CLI is interrupted (Ctrl-C); a server shutting down finishes its requests.
            ErrorKind::Interrupted => (130, 503, "interrupted"),
            ErrorKind::Internal => (1, 500, "internal"),
        };
        KindSpec { exit_code, http_status, code }
    }

    pub const fn exit_code(self) -> u8 {
        self.spec().exit_code
    }

    pub const fn http_status(self) -> u16 {
        self.spec().http_status
    }

    pub const fn code(self) -> &'static str {
        self.spec().code
    }
}

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

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Exhausted(_) => ErrorKind::Exhausted,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Interrupted => ErrorKind::Interrupted,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The CLI's exit status, from the table.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind().exit_code())
    }
}

impl Error {
    /// A failed operation on the host's files or processes; `what` names it and its path. A full
    /// disk, a read-only file system or missing permissions are the host's state, not a bug:
    /// those are `Unavailable`, with the fix.
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> Self {
        let fix = match e.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Some("the file system is full: free space, then try again"),
            Some(libc::EROFS) => Some("the file system is read-only: remount it read-write"),
            Some(libc::EACCES | libc::EPERM) => Some("permission denied: run sandman as root (sudo)"),
            _ => None,
        };
        match fix {
            Some(fix) => Error::Unavailable(format!("cannot {what}: {fix} ({e})")),
            None => Error::Internal(anyhow::Error::new(e).context(format!("cannot {what}"))),
        }
    }
}

/// `.io_context(|| "write /path")` on I/O results: `Error::io` with the operation's name.
pub trait IoContext<T> {
    fn io_context<D: std::fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context<D: std::fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Internal(anyhow::Error::new(e).context("session database"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_io_failures_are_classified() {
        let full = Error::io("write /db", std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.kind(), ErrorKind::Unavailable);
        assert!(full.to_string().contains("write /db") && full.to_string().contains("full"), "{full}");
        let denied = Error::io("open /db", std::io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(denied.kind(), ErrorKind::Unavailable);
        let other = Error::io("read /x", std::io::Error::other("boom"));
        assert_eq!(other.kind(), ErrorKind::Internal);
        assert!(format!("{other:#}").contains("read /x"));
    }

    #[test]
    fn every_kind_has_its_own_code_and_an_error_status() {
        let codes: std::collections::HashSet<_> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), ErrorKind::ALL.len(), "codes are unique");
        for k in ErrorKind::ALL {
            assert!((400..600).contains(&k.http_status()), "{k:?}");
            assert!(k.exit_code() != 0, "{k:?}");
        }
    }

    #[test]
    fn errors_take_their_exit_code_from_the_table() {
        let cases = [
            (Error::invalid("user", "x"), 2, "invalid_input"),
            (Error::NotFound("x".into()), 4, "not_found"),
            (Error::Conflict("x".into()), 3, "conflict"),
            (Error::Exhausted("x".into()), 3, "exhausted"),
            (Error::Unavailable("x".into()), 5, "unavailable"),
            (Error::Interrupted, 130, "interrupted"),
            (Error::Internal(anyhow::anyhow!("x")), 1, "internal"),
        ];
        for (e, exit, code) in cases {
            assert_eq!((e.kind().exit_code(), e.kind().code()), (exit, code), "{e:?}");
            assert_eq!(e.exit_code(), ExitCode::from(exit));
        }
    }
}
