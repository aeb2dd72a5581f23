//! A user's own public keys: stored with the user, they outlive sessions, and a running session
//! honours additions and revocations for its next login.
//!
//! How a running session sees them: each user has a host directory holding one
//! `authorized_keys` file, bind-mounted read-only into the user's containers (`ssh::USER_KEYS_DIR`)
//! and named by sshd's `AuthorizedKeysFile`. sandman rewrites the file from the store and renames
//! it into place, so sshd reads either the old list or the new one, never a partial file, and the
//! change needs no call to the engine, no knowledge of which container runs, and no race with a
//! create in progress. The directory is bound rather than the file: a single-file bind keeps the
//! inode it was given and would never see a renamed-in replacement. Written as root (sandman
//! runs as root to own homes), file and directory pass sshd's StrictModes checks; the user can
//! neither write them nor replace them. Copying the file into the container through the engine
//! was the alternative: the engine's archive upload removes the old file before writing the new
//! one, so a login at that moment could fail, and it must find the user's container and order
//! itself with a create that is still writing its files.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Sessions;
use crate::error::{Error, IoContext, Result};
use crate::locks::{self, FileLock};
use crate::store::UserKey;
use crate::{ssh, validate};

/// The host directory bound into the user's containers.
pub fn user_keys_dir(state_dir: &Path, user: &str) -> PathBuf {
    state_dir.join("keys").join(user)
}

impl Sessions {
    /// The user's keys, oldest first.
    pub fn user_keys(&self, user: &str) -> Result<Vec<UserKey>> {
        validate::user_name(user)?;
        self.store().user_keys(user)
    }

    /// Adds a key (one OpenSSH public key line) to the user's keys; `Conflict` if it is there.
    pub fn add_user_key(&self, user: &str, public_key: &str) -> Result<UserKey> {
        validate::user_name(user)?;
        let key = user_key(public_key)?;
        if !self.store().add_user_key(user, &key)? {
            return Err(Error::Conflict(format!("user {user} already has the key {}", key.fingerprint)));
        }
        self.write_user_keys(user)?;
        tracing::info!(user, fingerprint = %key.fingerprint, "key added");
        Ok(key)
    }

    /// Revokes a key by fingerprint; `NotFound` if the user has no such key.
    pub fn remove_user_key(&self, user: &str, fingerprint: &str) -> Result<()> {
        validate::user_name(user)?;
        if !self.store().remove_user_key(user, fingerprint)? {
            return Err(Error::NotFound(format!("user {user} has no key with fingerprint {fingerprint:?}")));
        }
        self.write_user_keys(user)?;
        tracing::info!(user, fingerprint, "key removed");
        Ok(())
    }

    /// Writes the user's key file from the store. Under the user's lock, each writer reads the
    /// store after its own change, so the last file written holds the latest keys.
    pub(super) fn write_user_keys(&self, user: &str) -> Result<()> {
        let state_dir = self.settings.state_dir();
        // The lock file is kept: removing a file another writer may be waiting on would let two
        // writers hold locks on different files.
        let _lock = FileLock::acquire(&locks::dir(&state_dir).join(format!("keys-{user}.lock")))?;
        let dir = user_keys_dir(&state_dir, user);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .io_context(|| format!("create the key directory {}", dir.display()))?;
        let lines: String = self.store().user_keys(user)?.iter().map(|k| format!("{}\n", k.key_line)).collect();
        let path = dir.join("authorized_keys");
        let temporary = dir.join("authorized_keys.new");
        let _ = std::fs::remove_file(&temporary);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temporary)
            .and_then(|mut f| f.write_all(lines.as_bytes()).and_then(|()| f.sync_all()))
            .io_context(|| format!("write {}", temporary.display()))?;
        std::fs::rename(&temporary, &path).io_context(|| format!("replace {}", path.display()))?;
        Ok(())
    }
}

/// A public key as stored: its clean line and fingerprint.
pub(super) fn user_key(public_key: &str) -> Result<UserKey> {
    let key_line = ssh::parse_public_key(public_key)?;
    let fingerprint = ssh::public_key_fingerprint(&key_line)?;
    Ok(UserKey { fingerprint, key_line, added_at: chrono::Utc::now().timestamp() })
}
