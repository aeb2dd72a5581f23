use std::sync::Arc;

use crate::error::Result;
use crate::server::{self, auth::TokenFile, auth::Tokens};
use crate::sessions::Sessions;

pub async fn run(sessions: Sessions) -> Result<()> {
    let path = sessions.settings.api_token_file.clone();
    // The token is shown once, when it is made, for the admin to copy; it is never logged.
    let tokens = match Tokens::open_or_create(&path)? {
        TokenFile::Existing(tokens) => {
            eprintln!("API tokens: {}", path.display());
            tokens
        }
        TokenFile::Created(tokens, token) => {
            eprintln!(
                "Created {} with a new API token (shown only now; clients send `Authorization: Bearer <token>`):\n\n  {token}\n",
                path.display()
            );
            tokens
        }
    };
    server::serve(Arc::new(sessions), tokens, |addr| {
        eprintln!("Serving the sandman API on http://{addr} (SIGTERM or Ctrl-C stops)");
    })
    .await
}
