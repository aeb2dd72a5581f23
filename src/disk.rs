//! Disk use of workspaces and what the host can do to bound it: a walk that measures one
//! workspace, and the detection of project quotas and of a writable-layer size limit.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes a directory tree occupies on disk (allocated blocks, each hard-linked file once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    /// False when the walk ran out of time or met unreadable directories: `bytes` is then a
    /// lower bound.
    pub complete: bool,
}

/// Measures `dir` like `du -sx`: symlinks are counted, never followed, and other file systems
/// mounted inside are not entered. Stops at `budget`, so a huge or hostile tree (the user owns
/// its contents) cannot stall the caller.
pub fn usage(dir: &Path, budget: Duration) -> std::io::Result<Usage> {
    let deadline = Instant::now() + budget;
    let top = std::fs::symlink_metadata(dir)?;
    let device = top.dev();
    let mut seen = HashSet::new();
    let mut bytes = top.blocks() * 512;
    let mut complete = true;
    let mut pending: Vec<PathBuf> = if top.is_dir() { vec![dir.to_path_buf()] } else { Vec::new() };
    while let Some(path) = pending.pop() {
        if Instant::now() > deadline {
            return Ok(Usage { bytes, complete: false });
        }
        let Ok(entries) = std::fs::read_dir(&path) else {
            complete = false;
            continue;
        };
        for entry in entries.flatten() {
            // DirEntry::metadata does not follow symlinks.
            let Ok(meta) = entry.metadata() else {
                complete = false;
                continue;
            };
            if meta.dev() != device {
                continue;
            }
            if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(Usage { bytes, complete })
}

/// Whether the file system holding `path` enforces project quotas: ext4 or xfs mounted with
/// `prjquota` (xfs also spells it `pquota`/`pqnoenforce`). Returns the mount line's words for
/// the report: `(supported, "ext4 on / (rw,relatime)")`.
pub fn project_quotas(path: &Path) -> (bool, String) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let Some((point, fs, options)) = mount_of(&mounts, path) else {
        return (false, format!("no mount found for {}", path.display()));
    };
    let quota = options.split(',').any(|o| matches!(o, "prjquota" | "pquota" | "prjjquota"));
    let supported = quota && matches!(fs.as_str(), "ext4" | "xfs");
    (supported, format!("{fs} on {point} ({options})"))
}

/// Whether the engine's storage can limit a container's writable layer (`--storage-opt size=`):
/// overlay2 on xfs (whose data root must also be mounted with `pquota`, which the engine checks
/// at create), or btrfs, zfs, devicemapper, windowsfilter. `backing` is the engine's "Backing
/// Filesystem" (`xfs`, `extfs`).
pub fn layer_limit_possible(driver: &str, backing: Option<&str>) -> bool {
    match driver {
        "overlay2" => backing == Some("xfs"),
        "btrfs" | "zfs" | "devicemapper" | "windowsfilter" => true,
        _ => false,
    }
}

/// The engine's storage in words: `overlay2 on extfs`.
pub fn storage_words(driver: &str, backing: Option<&str>) -> String {
    let driver = if driver.is_empty() { "(unknown)" } else { driver };
    match backing {
        Some(b) => format!("{driver} on {b}"),
        None => driver.to_string(),
    }
}

/// The block device mounted where `path` lives (the mount's source, such as `/dev/loop3`), which
/// `quotactl` names the file system by.
pub fn mount_device(path: &Path) -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let (point, _, _) = mount_of(&mounts, path)?;
    mounts.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 2 && f[1].replace("\\040", " ") == point).then(|| PathBuf::from(f[0]))
    })
}

/// The mount (point, type, options) of the deepest mount point holding `path` (or its nearest
/// existing ancestor).
fn mount_of(mounts: &str, path: &Path) -> Option<(String, String, String)> {
    let mut probe = path.to_path_buf();
    while !probe.exists() && probe.pop() {}
    let path = probe.canonicalize().unwrap_or(probe);
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 4).then(|| (f[1].replace("\\040", " "), f[2].to_string(), f[3].to_string()))
        })
        .filter(|(point, _, _)| path.starts_with(point))
        .max_by_key(|(point, _, _)| point.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_files_once_and_follows_no_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![1u8; 1 << 20]).unwrap();
        let empty = usage(dir.path(), Duration::from_secs(5)).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/data"), vec![7u8; 256 << 10]).unwrap();
        std::fs::hard_link(dir.path().join("sub/data"), dir.path().join("again")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let used = usage(dir.path(), Duration::from_secs(5)).unwrap();
        assert!(used.complete);
        let grown = used.bytes - empty.bytes;
        assert!((256 << 10..(256 << 10) + (64 << 10)).contains(&grown), "{grown}: one copy, not the link's target");
        let rushed = usage(dir.path(), Duration::ZERO).unwrap();
        assert!(!rushed.complete && rushed.bytes <= used.bytes, "{rushed:?}");
    }

    #[test]
    fn the_writable_layer_can_be_limited_on_few_storage_drivers() {
        assert!(layer_limit_possible("overlay2", Some("xfs")));
        assert!(!layer_limit_possible("overlay2", Some("extfs")));
        assert!(!layer_limit_possible("overlay2", None));
        assert!(!layer_limit_possible("fuse-overlayfs", None));
        assert!(!layer_limit_possible("vfs", Some("xfs")));
        assert!(layer_limit_possible("btrfs", Some("btrfs")) && layer_limit_possible("zfs", None));
        assert_eq!(storage_words("overlay2", Some("extfs")), "overlay2 on extfs");
        assert_eq!(storage_words("", None), "(unknown)");
    }

    #[test]
    fn project_quotas_are_read_from_the_mount_options() {
        let mounts = "/dev/vda / ext4 rw,relatime 0 0\n/dev/vdb /srv xfs rw,prjquota 0 0\n";
        let (point, fs, options) = mount_of(mounts, Path::new("/srv/workspaces/x")).unwrap();
        assert_eq!((point.as_str(), fs.as_str(), options.as_str()), ("/srv", "xfs", "rw,prjquota"));
        assert_eq!(mount_of(mounts, Path::new("/home")).unwrap().0, "/");
        assert!(mount_device(Path::new("/")).is_some(), "the root file system has a source");
        let (supported, words) = project_quotas(Path::new("/"));
        assert!(words.contains(" on /"), "{words}");
        assert_eq!(supported, words.contains("quota"), "{words}");
    }
}
