//! Per-user persistent homes: `<workspace_root>/<user>`, owned by the user's uid, mode 0700,
//! seeded once. sandman never deletes or rewrites anything inside one.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const BASHRC: &str = r#"# ~/.bashrc: created once by sandman; yours to change.
case ":$PATH:" in *":$HOME/.local/bin:"*) ;; *) PATH="$HOME/.local/bin:$PATH" ;; esac
[ -z "$PS1" ] && return
export PS1='\u@sandman:\w\$ '
alias ll='ls -alF'
"#;

/// ssh logins with a terminal run a login shell, which reads this and not `~/.bashrc`.
const PROFILE: &str = r#"# ~/.profile: created by sandman; yours to change. Login shells read it.
case ":$PATH:" in *":$HOME/.local/bin:"*) ;; *) PATH="$HOME/.local/bin:$PATH" ;; esac
export PATH
if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then
    . "$HOME/.bashrc"
fi
"#;

/// bash reads the first of these that exists at login; with any of them the user has chosen.
const LOGIN_FILES: [&str; 3] = [".bash_profile", ".bash_login", ".profile"];

/// For a user seen for the first time, who will get `uid`: an existing `<root>/<user>` that
/// `uid` does not own belongs to someone else (a person's home, another system's data), and
/// `ensure` would hand it over; refused unless an admin adopts it on purpose.
pub fn check_new_owner(root: &Path, user: &str, uid: u32, adopt: bool) -> Result<()> {
    let dir = root.join(user);
    let meta = match std::fs::symlink_metadata(&dir) {
        Ok(meta) => meta,
        // Nothing there; a root that is not usable is `ensure`'s to report.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Ok(());
        }
        Err(e) => {
            return Err(Error::Unavailable(format!(
                "workspace root {} is not usable ({}: {e})",
                root.display(),
                dir.display()
            )));
        }
    };
    if adopt || meta.uid() == uid {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "workspace {} already exists and belongs to uid {}, not to the new user {user} (uid {uid});          move it away, or create the session with --adopt-workspace (API: \"adopt_workspace\": true)          to give it to {user}",
        dir.display(),
        meta.uid()
    )))
}

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
    // Everything inside the home is written relative to this descriptor, without following
    // links: the user controls the home's contents and may have planted symlinks to host files.
    let home = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&dir)
        .map_err(|e| unwritable(e, &dir))?;
    if created {
        seed(&home, uid).map_err(|e| unwritable(e, &dir))?;
    }
    // Homes made before sandman seeded ~/.profile get one, unless the user has a login file.
    seed_login_profile(&home, uid).map_err(|e| unwritable(e, &dir))?;
    if meta.uid() != uid || meta.gid() != uid {
        std::os::unix::fs::lchown(&dir, Some(uid), Some(uid)).map_err(|e| unwritable(e, &dir))?;
    }
    if meta.mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| unwritable(e, &dir))?;
    }
    Ok(dir)
}

fn seed(home: &File, uid: u32) -> std::io::Result<()> {
    create_new_file_at(home, ".bashrc", BASHRC, uid)?;
    for sub in ["projects", "data"] {
        let name = CString::new(sub)?;
        // mkdirat never follows a final symlink; it fails if anything has the name.
        if unsafe { libc::mkdirat(home.as_raw_fd(), name.as_ptr(), 0o755) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if unsafe { libc::fchownat(home.as_raw_fd(), name.as_ptr(), uid, uid, libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn seed_login_profile(home: &File, uid: u32) -> std::io::Result<()> {
    for name in LOGIN_FILES {
        if exists_at(home, name)? {
            return Ok(());
        }
    }
    create_new_file_at(home, ".profile", PROFILE, uid)?;
    Ok(())
}

/// Whether anything, a dangling symlink included, has this name in the directory.
fn exists_at(dir: &File, name: &str) -> std::io::Result<bool> {
    let name = CString::new(name)?;
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    if unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), stat.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::NotFound { Ok(false) } else { Err(e) }
}

/// Creates `name` in the directory, owned by `uid`, only when nothing has that name: O_EXCL
/// with O_NOFOLLOW fails on an existing file and on any symlink, dangling or not, so a
/// user's file is never overwritten and no link is followed. Returns whether it was created.
fn create_new_file_at(dir: &File, name: &str, contents: &str, uid: u32) -> std::io::Result<bool> {
    let cname = CString::new(name)?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let fd = unsafe { libc::openat(dir.as_raw_fd(), cname.as_ptr(), flags, 0o644 as libc::c_uint) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(false) } else { Err(e) };
    }
    let mut file = unsafe { File::from_raw_fd(fd) };
    let written =
        file.write_all(contents.as_bytes()).and_then(|()| std::os::unix::fs::fchown(&file, Some(uid), Some(uid)));
    if let Err(e) = written {
        // Leave no half-written file behind.
        unsafe { libc::unlinkat(dir.as_raw_fd(), cname.as_ptr(), 0) };
        return Err(e);
    }
    Ok(true)
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
    fn new_homes_get_a_login_profile_that_reads_bashrc() {
        let root = tempfile::tempdir().unwrap();
        let me = unsafe { libc::getuid() };
        let dir = ensure(root.path(), "carol", me).unwrap();
        let profile = std::fs::symlink_metadata(dir.join(".profile")).unwrap();
        assert!(profile.is_file() && profile.uid() == me && profile.mode() & 0o777 == 0o644);
        let text = std::fs::read_to_string(dir.join(".profile")).unwrap();
        assert!(text.contains(". \"$HOME/.bashrc\"") && text.contains("$HOME/.local/bin:$PATH"), "{text}");
        let bashrc = std::fs::read_to_string(dir.join(".bashrc")).unwrap();
        assert!(bashrc.find(".local/bin").unwrap() < bashrc.find("return").unwrap(), "PATH also for ssh commands");
    }

    /// Homes from before ~/.profile was seeded: symlinks the user planted are never followed,
    /// and the user's own login files are never replaced.
    #[test]
    fn existing_homes_get_a_missing_profile_without_following_links() {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let me = unsafe { libc::getuid() };
        let host_file = host.path().join("passwd-like");
        std::fs::write(&host_file, "host data\n").unwrap();
        let planted = |user: &str| {
            let home = root.path().join(user);
            std::fs::DirBuilder::new().mode(0o700).create(&home).unwrap();
            home
        };

        // ~/.profile -> a host file: the link stays, the host file is untouched.
        let dan = planted("dan");
        std::os::unix::fs::symlink(&host_file, dan.join(".profile")).unwrap();
        ensure(root.path(), "dan", me).unwrap();
        assert!(std::fs::symlink_metadata(dan.join(".profile")).unwrap().file_type().is_symlink());

        // A dangling ~/.profile: its target is not created.
        let eve = planted("eve");
        let absent = host.path().join("created-through-a-link");
        std::os::unix::fs::symlink(&absent, eve.join(".profile")).unwrap();
        ensure(root.path(), "eve", me).unwrap();
        assert!(!absent.exists(), "wrote through a dangling link");

        // ~/.bashrc -> a host file and no ~/.profile: the profile is made, the host file is untouched.
        let fay = planted("fay");
        std::os::unix::fs::symlink(&host_file, fay.join(".bashrc")).unwrap();
        ensure(root.path(), "fay", me).unwrap();
        assert_eq!(std::fs::read_to_string(fay.join(".profile")).unwrap(), PROFILE);
        assert!(std::fs::symlink_metadata(fay.join(".profile")).unwrap().is_file());

        // A user's own ~/.bash_profile or ~/.profile is left as it is, and no ~/.profile is added.
        let gus = planted("gus");
        std::fs::write(gus.join(".bash_profile"), "mine\n").unwrap();
        ensure(root.path(), "gus", me).unwrap();
        assert!(!gus.join(".profile").exists());
        assert_eq!(std::fs::read_to_string(gus.join(".bash_profile")).unwrap(), "mine\n");
        let hal = planted("hal");
        std::fs::write(hal.join(".profile"), "mine\n").unwrap();
        ensure(root.path(), "hal", me).unwrap();
        assert_eq!(std::fs::read_to_string(hal.join(".profile")).unwrap(), "mine\n");

        assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "host data\n");
        let host_entries: Vec<_> = std::fs::read_dir(host.path()).unwrap().collect();
        assert_eq!(host_entries.len(), 1, "nothing new on the host side");
        for user in ["dan", "eve", "gus", "hal"] {
            assert!(!root.path().join(user).join(".bashrc").exists(), "only new homes get a .bashrc: {user}");
        }
    }

    #[test]
    fn a_home_that_is_a_symlink_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join("ivy")).unwrap();
        assert!(ensure(root.path(), "ivy", unsafe { libc::getuid() }).is_err());
        assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_foreign_directory_is_refused_for_a_new_user_unless_adopted() {
        let root = tempfile::tempdir().unwrap();
        let me = unsafe { libc::getuid() };
        assert!(check_new_owner(root.path(), "kim", me + 1, false).is_ok(), "nothing there yet");
        std::fs::create_dir(root.path().join("kim")).unwrap();
        assert!(check_new_owner(root.path(), "kim", me, false).is_ok(), "already the user's");
        let e = check_new_owner(root.path(), "kim", me + 1, false).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
        let text = e.to_string();
        let path = root.path().join("kim");
        assert!(text.contains(&path.display().to_string()) && text.contains("--adopt-workspace"), "{text}");
        assert!(text.contains(&format!("belongs to uid {me}")), "{text}");
        assert!(check_new_owner(root.path(), "kim", me + 1, true).is_ok(), "adopted on purpose");
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("bob"), "x").unwrap();
        let e = ensure(root.path(), "bob", 1000).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }
}
