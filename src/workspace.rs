//! Per-user persistent homes: `<workspace_root>/<user>`, owned by the user's uid, mode 0700,
//! seeded once. sandman never deletes or rewrites anything inside one.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const BASHRC: &str = r#"# ~/.bashrc: created once by sandman; yours to change.
[ -z "$PS1" ] && return
export PS1='\u@sandman:\w\$ '
[ -d "$HOME/.local/bin" ] && PATH="$HOME/.local/bin:$PATH"
alias ll='ls -alF'
"#;

/// Makes sure the workspace exists with the right owner and mode; seeds it when new.
/// Returns its path.
pub fn ensure(root: &Path, user: &str, uid: u32) -> Result<PathBuf> {
    let unwritable = |e: std::io::Error, what: &Path| {
        Error::Unavailable(format!(
            "workspace root {} is not usable ({what}: {e}); create it as root or set --workspace-root",
            root.display(),
            what = what.display()
        ))
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(root).map_err(|e| unwritable(e, root))?;
    let dir = root.join(user);
    let created = match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(unwritable(e, &dir)),
    };
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| unwritable(e, &dir))?;
    if !meta.is_dir() {
        return Err(Error::Unavailable(format!(
            "workspace {} exists but is not a directory; move it away",
            dir.display()
        )));
    }
    if created {
        seed(&dir, uid).map_err(|e| unwritable(e, &dir))?;
    }
    if meta.uid() != uid || meta.gid() != uid {
        std::os::unix::fs::lchown(&dir, Some(uid), Some(uid)).map_err(|e| unwritable(e, &dir))?;
    }
    if meta.mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| unwritable(e, &dir))?;
    }
    Ok(dir)
}

fn seed(dir: &Path, uid: u32) -> std::io::Result<()> {
    let bashrc = dir.join(".bashrc");
    std::fs::write(&bashrc, BASHRC)?;
    std::os::unix::fs::lchown(&bashrc, Some(uid), Some(uid))?;
    for sub in ["projects", "data"] {
        let p = dir.join(sub);
        std::fs::DirBuilder::new().mode(0o755).create(&p)?;
        std::os::unix::fs::lchown(&p, Some(uid), Some(uid))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_once_and_keeps_files() {
        let root = tempfile::tempdir().unwrap();
        let me = unsafe { libc::getuid() };
        let dir = ensure(root.path(), "alice", me).unwrap();
        assert!(dir.join("projects").is_dir() && dir.join("data").is_dir());
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        std::fs::write(dir.join(".bashrc"), "mine").unwrap();
        ensure(root.path(), "alice", me).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(".bashrc")).unwrap(), "mine", "never re-seeded");
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("bob"), "x").unwrap();
        let e = ensure(root.path(), "bob", 1000).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
}
