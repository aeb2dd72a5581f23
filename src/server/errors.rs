//! Domain errors to HTTP answers: the status and `code` come from the table in `error.rs`; the
//! message is for the client, the detail for the log. Every error answer, the server's own
//! (401, 404, 405, 408, 413) included, is `{"error": "<message>", "code": "<code>"}`.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

use crate::error::{Error, ErrorKind};

use super::exchange::Reply;

/// `Retry-After` of a 503: about as long as a write waits for the database's lock.
pub const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong, for a person; a bad input is named by its JSON field.
    pub error: String,
    /// Stable, for programs: what kind of error this is.
    #[schema(schema_with = error_codes)]
    pub code: &'static str,
}

fn error_codes() -> Object {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(ErrorKind::ALL.iter().map(|k| k.code()))).build()
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError { kind, message: message.into(), headers: Vec::new() }
    }

    pub fn status(&self) -> u16 {
        self.kind.http_status()
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn into_reply(self) -> Reply {
        let body = ErrorBody { error: self.message, code: self.kind.code() };
        let mut reply = Reply::json(self.kind.http_status(), &body);
        // What is unavailable (the database's lock, a full disk, Docker, a free create slot) may
        // be back soon: a client that retries waits this long first.
        if reply.status == 503 && !self.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("Retry-After")) {
            reply.headers.push(("Retry-After", RETRY_AFTER_SECS.to_string()));
        }
        reply.headers.extend(self.headers);
        reply
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        let kind = e.kind();
        let message = match e {
            Error::InvalidInput { field, message } => format!("invalid {}: {message}", api_field(field)),
            Error::Unavailable(m) => {
                tracing::warn!(error = %m, "a service sandman needs is unavailable");
                m
            }
            Error::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error");
                "internal error; the server log has the details".into()
            }
            other => other.to_string(),
        };
        ApiError::new(kind, message)
    }
}

/// The service names the CLI's words; the API's clients know its JSON field names.
fn api_field(field: &'static str) -> &'static str {
    match field {
        "user" => "user_id",
        "public key" => "ssh_public_key",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_codes_and_field_names() {
        let cases: Vec<(Error, u16, &str, &str)> = vec![
            (
                Error::invalid("user", "\"Root\" must start with a lowercase letter"),
                400,
                "invalid_input",
                "invalid user_id: \"Root\" must start with a lowercase letter",
            ),
            (
                Error::invalid("public key", "expected one line"),
                400,
                "invalid_input",
                "invalid ssh_public_key: expected one line",
            ),
            (Error::NotFound("session x not found".into()), 404, "not_found", "session x not found"),
            (Error::Conflict("exists".into()), 409, "conflict", "exists"),
            (Error::Exhausted("no port".into()), 409, "exhausted", "no port"),
            (Error::Unavailable("docker down".into()), 503, "unavailable", "docker down"),
            (Error::Interrupted, 503, "interrupted", "interrupted"),
            (
                Error::Internal(anyhow::anyhow!("secret detail")),
                500,
                "internal",
                "internal error; the server log has the details",
            ),
        ];
        for (e, status, code, message) in cases {
            let reply = ApiError::from(e).into_reply();
            let body: serde_json::Value = serde_json::from_slice(reply.body.as_ref()).unwrap();
            assert_eq!(reply.status, status);
            let retry_after = reply.headers.iter().find(|(name, _)| *name == "Retry-After").map(|(_, v)| v.as_str());
            assert_eq!(retry_after, (status == 503).then_some("5"), "{message}");
            assert_eq!(body, serde_json::json!({ "error": message, "code": code }));
        }
    }
}
