//! Project quotas on workspaces (`workspace_quota`): on ext4 or xfs mounted with `prjquota`,
//! each workspace directory gets a project id (its user's uid, stable forever) that everything
//! created in it inherits, and the project gets a hard block limit. The kernel then answers
//! writes past it with EDQUOT ("Disk quota exceeded"), inside the session as on the host.
//!
//! Nothing here deletes or moves data: setting a project id only changes which project the
//! blocks of existing files count against.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// `struct fsxattr` of <linux/fs.h>.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
const PRJQUOTA: libc::c_int = 2;
const Q_GETQUOTA: libc::c_int = 0x80_0007;
const Q_SETQUOTA: libc::c_int = 0x80_0008;
const QIF_BLIMITS: u32 = 1;
/// Quota block limits are counted in units of 1 KiB.
const QUOTA_BLOCK: u64 = 1024;

fn qcmd(cmd: libc::c_int, kind: libc::c_int) -> libc::c_int {
    ((cmd as u32) << 8 | (kind as u32 & 0xff)) as libc::c_int
}

/// Opens without following a symlink and without blocking on a FIFO.
fn open_nofollow(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
}

fn get_xattr(file: &std::fs::File) -> io::Result<FsXattr> {
    let mut attr = FsXattr::default();
    // SAFETY: the ioctl fills a struct fsxattr, which `attr` is.
    if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FSGETXATTR, &mut attr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

fn set_xattr(file: &std::fs::File, attr: &FsXattr) -> io::Result<()> {
    // SAFETY: the ioctl reads a struct fsxattr, which `attr` is.
    if unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FSSETXATTR, attr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The project id of `dir` and whether its new entries inherit it.
pub fn project_of(dir: &Path) -> io::Result<(u32, bool)> {
    let attr = get_xattr(&open_nofollow(dir)?)?;
    Ok((attr.projid, attr.xflags & FS_XFLAG_PROJINHERIT != 0))
}

/// Puts `dir` and everything in it (symlinks themselves excepted: they cannot be opened without
/// following them, and take no blocks worth counting) into project `projid`, directories with
/// the inherit flag. Does nothing when `dir` already has it, so a create pays one ioctl once the
/// workspace is set up. Other file systems mounted inside are not entered.
pub fn assign_project(dir: &Path, projid: u32) -> io::Result<()> {
    if project_of(dir)? == (projid, true) {
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::symlink_metadata(dir)?.dev();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() || meta.dev() != device {
            continue;
        }
        if !(meta.is_dir() || meta.is_file()) {
            // Sockets, FIFOs: no blocks; opening them is not needed.
            continue;
        }
        let file = open_nofollow(&path)?;
        let mut attr = get_xattr(&file)?;
        attr.projid = projid;
        if meta.is_dir() {
            attr.xflags |= FS_XFLAG_PROJINHERIT;
        }
        set_xattr(&file, &attr).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(())
}

fn dqblk() -> libc::dqblk {
    // SAFETY: dqblk is plain integers; all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

fn device_cstr(device: &Path) -> io::Result<CString> {
    CString::new(device.as_os_str().as_bytes()).map_err(|_| io::Error::other("device path holds a NUL byte"))
}

/// Sets project `projid`'s hard block limit on the file system of block device `device`.
pub fn set_limit(device: &Path, projid: u32, bytes: u64) -> io::Result<()> {
    let dev = device_cstr(device)?;
    let mut q = dqblk();
    q.dqb_bhardlimit = bytes.div_ceil(QUOTA_BLOCK);
    q.dqb_bsoftlimit = 0;
    q.dqb_valid = QIF_BLIMITS;
    // SAFETY: a valid C string and a dqblk the kernel reads.
    let rc =
        unsafe { libc::quotactl(qcmd(Q_SETQUOTA, PRJQUOTA), dev.as_ptr(), projid as libc::c_int, (&raw mut q).cast()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Project `projid`'s hard limit (bytes, `None` when unlimited) and the bytes it uses.
pub fn get(device: &Path, projid: u32) -> io::Result<(Option<u64>, u64)> {
    let dev = device_cstr(device)?;
    let mut q = dqblk();
    // SAFETY: a valid C string and a dqblk the kernel fills.
    let rc =
        unsafe { libc::quotactl(qcmd(Q_GETQUOTA, PRJQUOTA), dev.as_ptr(), projid as libc::c_int, (&raw mut q).cast()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let limit = (q.dqb_bhardlimit > 0).then(|| q.dqb_bhardlimit * QUOTA_BLOCK);
    Ok((limit, q.dqb_curspace))
}

/// What a workspace's quota is now, for `session show` and `doctor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WorkspaceQuota {
    pub project_id: u32,
    pub limit_bytes: Option<u64>,
    pub used_bytes: u64,
}

/// Gives `workspace` (under `root`) project `projid` with a limit of `bytes`. `root` must be on
/// a file system with project quotas (see `disk::project_quotas`).
pub fn apply(root: &Path, workspace: &Path, projid: u32, bytes: u64) -> io::Result<()> {
    let device = crate::disk::mount_device(root)
        .ok_or_else(|| io::Error::other(format!("no mount found for {}", root.display())))?;
    assign_project(workspace, projid)?;
    set_limit(&device, projid, bytes)
}

/// The quota of `workspace` (its project id, limit and use), where it has one.
pub fn of(root: &Path, workspace: &Path) -> Option<WorkspaceQuota> {
    let (projid, inherit) = project_of(workspace).ok()?;
    if projid == 0 || !inherit {
        return None;
    }
    let device = crate::disk::mount_device(root)?;
    let (limit_bytes, used_bytes) = get(&device, projid).ok()?;
    Some(WorkspaceQuota { project_id: projid, limit_bytes, used_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_command_is_built_like_the_kernel_macro() {
        // QCMD(Q_SETQUOTA, PRJQUOTA) from <sys/quota.h>.
        assert_eq!(qcmd(Q_SETQUOTA, PRJQUOTA) as u32, 0x8000_0802);
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
    }

    /// Project id 0 needs no project quota feature, so the walk and both ioctls run on any ext4
    /// or xfs, such as the one holding the build tree.
    #[test]
    fn every_directory_gets_the_inherit_flag_and_links_are_not_followed() {
        let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        let dir = tempfile::tempdir_in(&base).unwrap();
        let outside = tempfile::tempdir_in(&base).unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("sub/file"), b"data").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        assert_eq!(project_of(dir.path()).unwrap(), (0, false));
        assign_project(dir.path(), 0).unwrap();
        for d in ["", "sub", "sub/deeper"] {
            assert_eq!(project_of(&dir.path().join(d)).unwrap(), (0, true), "{d}");
        }
        assert_eq!(project_of(outside.path()).unwrap(), (0, false), "the link was followed");
        assert_eq!(std::fs::read(dir.path().join("sub/file")).unwrap(), b"data", "data untouched");
        assign_project(dir.path(), 0).unwrap();
    }
}
