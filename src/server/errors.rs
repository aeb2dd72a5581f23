//! Domain errors to HTTP statuses, in one place: the message for the client, the detail for the
//! log. Errors are always `{"error": "<message>"}`.

use crate::error::Error;

use super::exchange::Reply;

#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }

    pub fn into_reply(self) -> Reply {
        let mut reply = Reply::json(self.status, &serde_json::json!({ "error": self.message }));
        reply.headers.extend(self.headers);
        reply
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::InvalidInput { field, message } => {
                ApiError::new(400, format!("invalid {}: {message}", api_field(field)))
            }
            Error::NotFound(m) => ApiError::new(404, m),
            Error::Conflict(m) | Error::Exhausted(m) => ApiError::new(409, m),
            Error::Unavailable(m) => {
                tracing::warn!(error = %m, "a service sandman needs is unavailable");
                ApiError::new(503, m)
            }
            // Only the CLI is interrupted (Ctrl-C); a server shutting down finishes its requests.
            Error::Interrupted => ApiError::new(503, "interrupted"),
            Error::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error");
                ApiError::new(500, "internal error; the server log has the details")
            }
        }
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
    fn statuses_and_field_names() {
        let cases: Vec<(Error, u16, &str)> = vec![
            (
                Error::invalid("user", "\"Root\" must start with a lowercase letter"),
                400,
                "invalid user_id: \"Root\" must start with a lowercase letter",
            ),
            (Error::invalid("public key", "expected one line"), 400, "invalid ssh_public_key: expected one line"),
            (Error::invalid("ttl_minutes", "0 is out of range"), 400, "invalid ttl_minutes: 0 is out of range"),
            (Error::NotFound("session x not found".into()), 404, "session x not found"),
            (Error::Conflict("exists".into()), 409, "exists"),
            (Error::Exhausted("no port".into()), 409, "no port"),
            (Error::Unavailable("docker down".into()), 503, "docker down"),
            (Error::Internal(anyhow::anyhow!("secret detail")), 500, "internal error; the server log has the details"),
        ];
        for (e, status, message) in cases {
            let a = ApiError::from(e);
            assert_eq!((a.status, a.message.as_str()), (status, message));
        }
    }
}
