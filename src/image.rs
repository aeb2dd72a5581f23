//! Building the workspace image, and (offline) its Debian base with debootstrap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use ssh_key::sha2::{Digest, Sha256};

use crate::engine::Engine;
use crate::error::{Error, IoContext, Result};
use crate::progress::Progress;

pub const DOCKERFILE: &str = include_str!("../images/Dockerfile.gpu-workspace");
/// The research toolset of the full flavor, one package a line (`#` starts a comment).
const TOOLSET: &str = include_str!("../images/toolset.txt");
/// What every flavor needs: sshd, and the trust store that `--ca-cert` adds to.
const BASE_PACKAGES: [&str; 2] = ["openssh-server", "ca-certificates"];
/// The build context's folder of site CAs, copied into the image's trust store.
const CA_DIR: &str = "ca-certificates";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// sshd and the trust store only.
    Minimal,
    /// Also the research toolset of `images/toolset.txt`.
    Full,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Minimal => "minimal",
            Flavor::Full => "full",
        }
    }
}

pub struct BuildRequest {
    pub tag: String,
    pub base_image: Option<String>,
    pub offline: bool,
    pub rebuild_base: bool,
    pub flavor: Flavor,
    /// `--packages` values as given: names separated by spaces or commas.
    pub extra_packages: Vec<String>,
    /// `--ca-cert` files: PEM certificates to trust inside the image.
    pub ca_certs: Vec<PathBuf>,
}

/// Everything that goes into a build, checked: the same inputs give the same digest.
pub struct BuildInputs {
    pub packages: Vec<String>,
    /// One PEM certificate each, in the order given.
    pub ca_certs: Vec<String>,
    pub base: BaseSource,
    pub flavor: Flavor,
}

pub enum BaseSource {
    /// `--base-image`, or `None` for the Dockerfile's default (a CUDA base from a registry).
    Image(Option<String>),
    /// debootstrap of this host's release (its codename).
    Offline(String),
}

impl BuildInputs {
    /// Validates the request's names and files; reads nothing from Docker.
    pub fn from_request(req: &BuildRequest) -> Result<BuildInputs> {
        crate::validate::image_reference(&req.tag)?;
        let base = if req.offline {
            BaseSource::Offline(host_suite()?)
        } else {
            if let Some(b) = &req.base_image {
                crate::validate::image_reference(b)?;
            }
            BaseSource::Image(req.base_image.clone())
        };
        let mut ca_certs = Vec::new();
        for file in &req.ca_certs {
            ca_certs.extend(read_ca_cert(file)?);
        }
        Ok(BuildInputs { packages: package_list(req.flavor, &req.extra_packages)?, ca_certs, base, flavor: req.flavor })
    }

    /// The `sandman.image.digest` label: a SHA-256 of the Dockerfile and every build input.
    pub fn digest(&self) -> String {
        let base = match &self.base {
            BaseSource::Image(b) => format!("image {}", b.as_deref().unwrap_or("default")),
            BaseSource::Offline(suite) => format!("debootstrap {suite}"),
        };
        let mut parts = vec![DOCKERFILE.to_string(), base, self.flavor.name().to_string(), self.packages.join(" ")];
        parts.extend(self.ca_certs.iter().cloned());
        format!("sha256:{}", hex(&length_prefixed_hash(&parts)))
    }
}

pub async fn build(engine: &dyn Engine, req: &BuildRequest, progress: Progress<'_>) -> Result<()> {
    let inputs = BuildInputs::from_request(req)?;
    let base = match &inputs.base {
        BaseSource::Offline(suite) => {
            let base = offline_base_tag(suite, &inputs.packages);
            if req.rebuild_base || !engine.image_exists(&base).await? {
                build_offline_base(engine, suite, &inputs.packages, &base, progress).await?;
            } else {
                progress(&format!("using existing base image {base}"));
            }
            Some(base)
        }
        BaseSource::Image(b) => b.clone(),
    };
    build_dockerfile(engine, &req.tag, base.as_deref(), &inputs, progress).await
}

/// Offline bases are kept per package set, so a changed toolset or `--packages` gets its own.
/// The minimal set's base keeps the plain name, `sandman-base:<suite>`: other images (the serve
/// image, the package tests) start from it.
fn offline_base_tag(suite: &str, packages: &[String]) -> String {
    let minimal = package_list(Flavor::Minimal, &[]).unwrap_or_default();
    if packages == minimal.as_slice() {
        return format!("sandman-base:{suite}");
    }
    format!("sandman-base:{suite}-{}", &hex(&length_prefixed_hash(packages))[..12])
}

/// The packages of a flavor plus the extra names, validated, without duplicates.
pub fn package_list(flavor: Flavor, extra: &[String]) -> Result<Vec<String>> {
    let mut packages: Vec<String> = BASE_PACKAGES.iter().map(|p| p.to_string()).collect();
    if flavor == Flavor::Full {
        packages.extend(toolset());
    }
    for name in extra.iter().flat_map(|v| v.split(|c: char| c.is_whitespace() || c == ',')).filter(|n| !n.is_empty()) {
        if !is_debian_package_name(name) {
            return Err(Error::invalid(
                "--packages",
                format!(
                    "{name:?} is not a Debian package name (lower-case letters, digits, '+', '-' and '.', \
                     at least two characters, starting with a letter or digit)"
                ),
            ));
        }
        packages.push(name.to_string());
    }
    let mut seen = std::collections::HashSet::new();
    packages.retain(|p| seen.insert(p.clone()));
    Ok(packages)
}

fn toolset() -> impl Iterator<Item = String> {
    TOOLSET.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string)
}

/// Debian Policy 5.6.1: `[a-z0-9][a-z0-9+.-]+`.
fn is_debian_package_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.len() >= 2
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// The certificates of one `--ca-cert` file, each as its own PEM block.
fn read_ca_cert(file: &Path) -> Result<Vec<String>> {
    let bad = |why: String| Error::invalid("--ca-cert", format!("{}: {why}", file.display()));
    let meta = std::fs::metadata(file).map_err(|e| bad(format!("cannot read it ({e})")))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > 1 << 20 {
        return Err(bad("larger than 1 MiB; expected PEM certificates".into()));
    }
    let text = std::fs::read_to_string(file).map_err(|e| bad(format!("cannot read it as text ({e})")))?;
    let certs = pem_certificates(&text).map_err(bad)?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

/// Splits PEM text into certificate blocks, checking each body is base64 of a DER sequence.
/// Text outside the blocks (the comments `openssl x509 -text` writes) is allowed.
fn pem_certificates(text: &str) -> std::result::Result<Vec<String>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut body: Option<String> = None;
    for (n, line) in text.lines().map(str::trim).enumerate() {
        match (&mut body, line) {
            (None, BEGIN) => body = Some(String::new()),
            (None, l) if l.starts_with("-----BEGIN ") => {
                return Err(format!("line {}: {l} is not a certificate (a private key?)", n + 1));
            }
            (None, _) => {}
            (Some(b), END) => {
                let der =
                    base64_decode(b).ok_or_else(|| format!("line {}: the certificate is not valid base64", n + 1))?;
                if der.first() != Some(&0x30) || der.len() < 64 {
                    return Err(format!("line {}: the block does not hold a DER certificate", n + 1));
                }
                certs.push(format!("{BEGIN}\n{}\n{END}\n", wrap(b, 64)));
                body = None;
            }
            (Some(_), l) if l.starts_with("-----") => return Err(format!("line {}: unexpected {l}", n + 1)),
            (Some(b), l) => b.push_str(l),
        }
    }
    if body.is_some() { Err(format!("the last certificate has no {END} line")) } else { Ok(certs) }
}

fn wrap(text: &str, width: usize) -> String {
    text.as_bytes().chunks(width).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\n")
}

/// Standard base64 with padding; `None` for anything else (empty text included).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64ct::Encoding;
    if text.is_empty() {
        return None;
    }
    base64ct::Base64::decode_vec(text).ok()
}

fn length_prefixed_hash(parts: &[String]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update((p.len() as u64).to_be_bytes());
        hasher.update(p.as_bytes());
    }
    hasher.finalize().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The build context: the Dockerfile and the folder of site CAs (empty when there are none).
fn build_context(ca_certs: &[String]) -> Result<Vec<u8>> {
    context_archive(ca_certs).io_context(|| "assemble the image build context")
}

fn context_archive(ca_certs: &[String]) -> std::io::Result<Vec<u8>> {
    let mut context = tar::Builder::new(Vec::new());
    let mut append = |path: &str, mode: u32, data: &[u8], kind: tar::EntryType| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        context.append_data(&mut header, path, data)
    };
    append("Dockerfile", 0o644, DOCKERFILE.as_bytes(), tar::EntryType::Regular)?;
    append(&format!("{CA_DIR}/"), 0o755, &[], tar::EntryType::Directory)?;
    for (i, pem) in ca_certs.iter().enumerate() {
        // update-ca-certificates takes only `.crt` files, one certificate each.
        append(&format!("{CA_DIR}/site-{:02}.crt", i + 1), 0o644, pem.as_bytes(), tar::EntryType::Regular)?;
    }
    context.into_inner()
}

async fn build_dockerfile(
    engine: &dyn Engine,
    tag: &str,
    base: Option<&str>,
    inputs: &BuildInputs,
    progress: Progress<'_>,
) -> Result<()> {
    let context = build_context(&inputs.ca_certs)?;
    let packages = inputs.packages.join(" ");
    let digest = inputs.digest();
    let mut args: HashMap<String, String> =
        [("PACKAGES", packages.as_str()), ("FLAVOR", inputs.flavor.name()), ("IMAGE_DIGEST", digest.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    if let Some(b) = base {
        args.insert("BASE_IMAGE".to_string(), b.to_string());
    }
    progress(&format!(
        "building {tag} ({} flavor, {} packages, {} site CAs) FROM {}",
        inputs.flavor.name(),
        inputs.packages.len(),
        inputs.ca_certs.len(),
        base.unwrap_or("the Dockerfile's default base")
    ));
    engine.build_image(context, tag, &args, progress).await?;
    if !engine.image_exists(tag).await? {
        return Err(Error::Internal(anyhow!("image build ended without producing {tag}")));
    }
    progress(&format!("built {tag}"));
    Ok(())
}

/// debootstrap a minimal Debian of the host's own release from the host's own apt mirror,
/// strip keys and caches, and import it as `tag`.
async fn build_offline_base(
    engine: &dyn Engine,
    suite: &str,
    packages: &[String],
    tag: &str,
    progress: Progress<'_>,
) -> Result<()> {
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
    let result = async {
        progress(&format!("debootstrap {suite} with {} packages from {mirror} (a few minutes)", packages.len()));
        let out = tokio::process::Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={}", packages.join(",")), suite])
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
                        let path = e.path();
                        std::fs::remove_file(&path).io_context(|| format!("remove {}", path.display()))?;
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
        let status = tar.wait().await.io_context(|| "wait for tar")?;
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
    fn dockerfile_takes_the_base_and_the_inputs_as_arguments() {
        assert!(DOCKERFILE.contains("ARG BASE_IMAGE=") && DOCKERFILE.contains("FROM ${BASE_IMAGE}"));
        for arg in ["PACKAGES", "FLAVOR", "IMAGE_DIGEST"] {
            assert!(DOCKERFILE.contains(&format!("ARG {arg}=")), "{arg}");
        }
        assert!(DOCKERFILE.contains(&format!("COPY {CA_DIR}/")));
        assert!(DOCKERFILE.contains("sandman.image.digest=\"${IMAGE_DIGEST}\""));
    }

    #[test]
    fn flavors_and_extra_packages() {
        let minimal = package_list(Flavor::Minimal, &[]).unwrap();
        assert_eq!(minimal, ["openssh-server", "ca-certificates"]);
        let full = package_list(Flavor::Full, &[]).unwrap();
        for p in ["python3-venv", "build-essential", "locales", "rsync", "tmux", "file"] {
            assert!(full.iter().any(|f| f == p), "{p} in {full:?}");
        }
        assert_eq!(full.len(), 2 + 24, "{full:?}");
        let extra = package_list(Flavor::Minimal, &["g++ libssl-dev,r-base-core".into(), "git  git".into()]).unwrap();
        assert_eq!(extra, ["openssh-server", "ca-certificates", "g++", "libssl-dev", "r-base-core", "git"]);
        for bad in ["Vim", "a", "-x", "rm;ls", "pkg=1.0", "bash:amd64", "\u{e9}dit"] {
            let e = package_list(Flavor::Full, &[bad.into()]).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::Error::invalid("", "").exit_code(), "{bad}");
            assert!(e.to_string().contains("--packages") && e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    /// A self-signed certificate (`openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256`).
    const CERT: &str = include_str!("../tests/e2e/fixtures/site-ca.pem");

    #[test]
    fn ca_certificates_are_checked_and_split() {
        let dir = tempfile::tempdir().unwrap();
        let two = dir.path().join("two.pem");
        std::fs::write(&two, format!("subject=CN = site-test\n{CERT}\n{CERT}")).unwrap();
        let certs = read_ca_cert(&two).unwrap();
        assert_eq!(certs.len(), 2);
        assert!(
            certs[0].starts_with("-----BEGIN CERTIFICATE-----\nMIIB")
                && certs[0].ends_with("-----END CERTIFICATE-----\n")
        );

        let cases: [(&str, &str); 5] = [
            ("empty.pem", ""),
            ("key.pem", "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n"),
            ("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"),
            ("cut.pem", &CERT[..200]),
            ("short.pem", "-----BEGIN CERTIFICATE-----\nMAAA\n-----END CERTIFICATE-----\n"),
        ];
        for (name, text) in cases {
            let file = dir.path().join(name);
            std::fs::write(&file, text).unwrap();
            let e = read_ca_cert(&file).unwrap_err();
            assert!(matches!(e, Error::InvalidInput { field: "--ca-cert", .. }), "{name}: {e}");
            assert!(e.to_string().contains(name), "names the file: {e}");
        }
        let e = read_ca_cert(&dir.path().join("missing.pem")).unwrap_err();
        assert!(e.to_string().contains("missing.pem") && e.to_string().contains("cannot read"), "{e}");
        let e = read_ca_cert(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    #[test]
    fn base64_decodes_standard_text_only() {
        assert_eq!(base64_decode("aMOpbGxv").unwrap(), "h\u{e9}llo".as_bytes());
        assert_eq!(base64_decode("aGk=").unwrap(), b"hi");
        assert_eq!(base64_decode("aA==").unwrap(), b"h");
        for bad in ["", "aGk", "a===", "aG!=", "aGk=aGk="] {
            assert!(base64_decode(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn the_digest_follows_every_input() {
        let inputs = |flavor, packages: &[&str], certs: &[&str], base: Option<&str>| BuildInputs {
            packages: packages.iter().map(|p| p.to_string()).collect(),
            ca_certs: certs.iter().map(|c| c.to_string()).collect(),
            base: BaseSource::Image(base.map(str::to_string)),
            flavor,
        };
        let a = inputs(Flavor::Full, &["vim"], &[], None).digest();
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
        assert_eq!(a, inputs(Flavor::Full, &["vim"], &[], None).digest(), "stable");
        let others = [
            inputs(Flavor::Minimal, &["vim"], &[], None),
            inputs(Flavor::Full, &["vim", "git"], &[], None),
            inputs(Flavor::Full, &["vim"], &[CERT], None),
            inputs(Flavor::Full, &["vim"], &[], Some("debian:12")),
            BuildInputs { base: BaseSource::Offline("bookworm".into()), ..inputs(Flavor::Full, &["vim"], &[], None) },
        ];
        for other in others {
            assert_ne!(a, other.digest());
        }
        assert_ne!(offline_base_tag("bookworm", &["a".into()]), offline_base_tag("bookworm", &["b".into()]));
        assert!(offline_base_tag("bookworm", &["a".into()]).starts_with("sandman-base:bookworm-"));
        let minimal = package_list(Flavor::Minimal, &[]).unwrap();
        assert_eq!(offline_base_tag("bookworm", &minimal), "sandman-base:bookworm");
    }

    #[test]
    fn the_context_holds_the_dockerfile_and_one_file_per_certificate() {
        let context = build_context(&[CERT.to_string(), CERT.to_string()]).unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(
            names,
            ["Dockerfile", "ca-certificates/", "ca-certificates/site-01.crt", "ca-certificates/site-02.crt"]
        );
    }
}
