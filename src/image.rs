//! Building the workspace image, and (offline) its Debian base with debootstrap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::progress::Progress;

pub const DOCKERFILE: &str = include_str!("../images/Dockerfile.gpu-workspace");
/// Packages the offline base needs beyond debootstrap's minimal set.
const BASE_PACKAGES: &str = "openssh-server,ca-certificates";

pub struct BuildRequest {
    pub tag: String,
    pub base_image: Option<String>,
    pub offline: bool,
    pub rebuild_base: bool,
}

pub async fn build(engine: &dyn Engine, req: &BuildRequest, progress: Progress<'_>) -> Result<()> {
    crate::validate::image_reference(&req.tag)?;
    let base = if req.offline {
        let suite = host_suite()?;
        let base = format!("sandman-base:{suite}");
        if req.rebuild_base || !engine.image_exists(&base).await? {
            build_offline_base(engine, &suite, &base, progress).await?;
        } else {
            progress(&format!("using existing base image {base}"));
        }
        Some(base)
    } else {
        req.base_image.clone()
    };
    if let Some(b) = &base {
        crate::validate::image_reference(b)?;
    }
    build_dockerfile(engine, &req.tag, base.as_deref(), progress).await
}

async fn build_dockerfile(engine: &dyn Engine, tag: &str, base: Option<&str>, progress: Progress<'_>) -> Result<()> {
    let mut context = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(DOCKERFILE.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    context.append_data(&mut header, "Dockerfile", DOCKERFILE.as_bytes())?;
    let context = context.into_inner()?;

    let mut args = HashMap::new();
    if let Some(b) = base {
        args.insert("BASE_IMAGE".to_string(), b.to_string());
    }
    progress(&format!("building {tag} FROM {}", base.unwrap_or("the Dockerfile's default base")));
    engine.build_image(context, tag, &args, progress).await?;
    if !engine.image_exists(tag).await? {
        return Err(Error::Internal(anyhow!("image build ended without producing {tag}")));
    }
    progress(&format!("built {tag}"));
    Ok(())
}

/// debootstrap a minimal Debian of the host's own release from the host's own apt mirror,
/// strip keys and caches, and import it as `tag`.
async fn build_offline_base(engine: &dyn Engine, suite: &str, tag: &str, progress: Progress<'_>) -> Result<()> {
    if which("debootstrap").is_none() {
        return Err(Error::Unavailable("debootstrap is not installed: apt-get install debootstrap".into()));
    }
    if unsafe { libc::geteuid() } != 0 {
        return Err(Error::Unavailable(
            "an offline base build runs debootstrap and needs root: run it with sudo".into(),
        ));
    }
    let mirror = host_mirror()?;
    let work = tempdir_in(Path::new("/var/tmp"), "sandman-base")?;
    let rootfs = work.join("rootfs");
    let result: Result<()> = async {
        progress(&format!("debootstrap {suite} from {mirror} (a minute or two)"));
        let out = tokio::process::Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={BASE_PACKAGES}"), suite])
            .arg(&rootfs)
            .arg(&mirror)
            .output()
            .await
            .context("cannot run debootstrap")?;
        if !out.status.success() {
            let log = String::from_utf8_lossy(&out.stdout);
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            return Err(Error::Internal(anyhow!(
                "debootstrap failed ({}): {}",
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        // No baked host keys (sandman brings one per user) and no package caches.
        for dir in ["etc/ssh", "var/cache/apt/archives", "var/lib/apt/lists"] {
            if let Ok(entries) = std::fs::read_dir(rootfs.join(dir)) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    let drop = if dir == "etc/ssh" {
                        name.starts_with("ssh_host_")
                    } else {
                        name.ends_with(".deb") || name.contains("_dists_")
                    };
                    if drop {
                        std::fs::remove_file(e.path())?;
                    }
                }
            }
        }
        progress(&format!("importing {tag}"));
        let mut tar = tokio::process::Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["--numeric-owner", "-c", "."])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("cannot run tar")?;
        let stdout = tar.stdout.take().context("tar has no stdout")?;
        engine.import_image(Box::new(stdout), tag).await?;
        let status = tar.wait().await?;
        if !status.success() {
            return Err(Error::Internal(anyhow!("tar of the base tree failed ({status})")));
        }
        Ok(())
    }
    .await;
    // The tree holds root-owned device nodes; remove it whatever happened.
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// The release codename of this host (`bookworm`), for a base that matches its apt mirror.
fn host_suite() -> Result<String> {
    let text = std::fs::read_to_string("/etc/os-release").context("cannot read /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::Unavailable("/etc/os-release names no VERSION_CODENAME; --offline needs a Debian host".into())
        })
}

/// The first Debian mirror in the host's apt sources (deb822 `URIs:` or one-line `deb` entries).
fn host_mirror() -> Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("/etc/apt/sources.list.d")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.insert(0, PathBuf::from("/etc/apt/sources.list"));
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        if let Some(m) = mirror_in(&text) {
            return Ok(m);
        }
    }
    Err(Error::Unavailable("no Debian mirror found in /etc/apt/sources.list{,.d}: configure apt first".into()))
}

fn mirror_in(text: &str) -> Option<String> {
    let candidates = text.lines().filter_map(|l| {
        let l = l.trim();
        if let Some(uris) = l.strip_prefix("URIs:") {
            uris.split_whitespace().next().map(str::to_string)
        } else if let Some(rest) = l.strip_prefix("deb ") {
            rest.split_whitespace().find(|w| w.contains("://")).map(str::to_string)
        } else {
            None
        }
    });
    // Prefer the main archive over the security one.
    let all: Vec<String> = candidates.collect();
    all.iter().find(|u| !u.contains("security")).or(all.first()).cloned()
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn tempdir_in(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let dir = parent.join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_from_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://security.example/debian-security\n\nTypes: deb\nURIs: http://deb.example/debian\n";
        assert_eq!(mirror_in(deb822).as_deref(), Some("http://deb.example/debian"));
        let one_line = "# comment\ndeb [arch=amd64] http://mirror.example/debian bookworm main\n";
        assert_eq!(mirror_in(one_line).as_deref(), Some("http://mirror.example/debian"));
        assert_eq!(mirror_in("deb-src http://x/debian bookworm main"), None);
    }

    #[test]
    fn dockerfile_takes_the_base_as_an_argument() {
        assert!(DOCKERFILE.contains("ARG BASE_IMAGE=") && DOCKERFILE.contains("FROM ${BASE_IMAGE}"));
    }
}
