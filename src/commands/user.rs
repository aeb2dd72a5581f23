//! `sandman user key`: a user's own public keys.

use std::io::Read;

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};

use super::print_json;
use crate::cli::{KeyCommand, UserCommand};
use crate::error::{Error, Result};
use crate::sessions::Sessions;
use crate::views::UserKeyView;

pub fn run(sessions: &Sessions, cmd: UserCommand) -> Result<()> {
    let UserCommand::Key(cmd) = cmd;
    match cmd {
        KeyCommand::Add { user, file } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| Error::invalid("public key", format!("cannot read stdin: {e}")))?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| Error::invalid("public key", format!("cannot read {}: {e}", file.display())))?
            };
            let key = sessions.add_user_key(&user, &text)?;
            println!("added {} for {user}", key.fingerprint);
            Ok(())
        }
        KeyCommand::Rm { user, fingerprint } => {
            sessions.remove_user_key(&user, &fingerprint)?;
            println!("removed {fingerprint} for {user}");
            Ok(())
        }
        KeyCommand::Ls { user, json } => {
            let keys: Vec<UserKeyView> =
                sessions.user_keys(&user)?.iter().map(|k| UserKeyView::new(&user, k)).collect();
            if json {
                return print_json(&keys);
            }
            if keys.is_empty() {
                eprintln!("{user} has no keys");
                return Ok(());
            }
            let mut table = Table::new();
            table.load_preset(UTF8_BORDERS_ONLY).set_header(["FINGERPRINT", "TYPE", "COMMENT", "ADDED"]);
            for k in keys {
                let mut parts = k.public_key.splitn(3, ' ');
                let kind = parts.next().unwrap_or_default().to_string();
                let comment = parts.nth(1).unwrap_or_default().to_string();
                table.add_row([k.fingerprint, kind, comment, k.added_at]);
            }
            println!("{table}");
            Ok(())
        }
    }
}
