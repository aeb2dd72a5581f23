//! File locks beside the database. A create holds its session's lock from before the row is
//! written until the session is ready, so a reaper that can take the lock knows the creator died.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::error::{IoContext, Result};

pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Waits for the lock.
    pub fn acquire(path: &Path) -> Result<FileLock> {
        let file = open(path)?;
        file.lock().with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(FileLock { file, path: path.to_path_buf() })
    }

    /// Takes the lock if nobody holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        let file = open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { file, path: path.to_path_buf() })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(anyhow::Error::new(e).context(format!("cannot lock {}", path.display())).into())
            }
        }
    }

    /// Removes the lock file, then releases the lock.
    pub fn release_and_remove(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .io_context(|| format!("create the lock directory {}", dir.display()))?;
    }
    Ok(OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?)
}

/// The directory of sandman's lock files, in its state directory (beside the database).
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("locks")
}

pub fn session_lock_path(state_dir: &Path, session_id: &str) -> PathBuf {
    dir(state_dir).join(format!("session-{session_id}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_seen_as_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = session_lock_path(dir.path(), "abc");
        let held = FileLock::acquire(&path).unwrap();
        assert!(FileLock::try_acquire(&path).unwrap().is_none());
        held.release_and_remove();
        assert!(!path.exists());
        assert!(FileLock::try_acquire(&path).unwrap().is_some());
    }
}
