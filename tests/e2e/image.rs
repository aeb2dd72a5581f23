//! The workspace image: its toolset, no setuid or setgid file, site CAs, checked build inputs.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::{BIN, rand_suffix, require_docker, stderr, stdout};

const SITE_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/fixtures/site-ca.pem");

fn docker(args: &[&str]) -> Output {
    Command::new("docker").args(args).output().unwrap()
}

#[test]
fn the_workspace_image_has_the_toolset_and_no_setuid_or_setgid_file() {
    require_docker();
    let label = |name: &str| {
        stdout(&docker(&[
            "image",
            "inspect",
            "-f",
            &format!("{{{{index .Config.Labels \"{name}\"}}}}"),
            "gpu-workspace",
        ]))
    };
    assert_eq!(label("sandman.image.flavor"), "full\n", "scripts/test.sh builds the full flavor");
    assert!(label("sandman.image.digest").starts_with("sha256:"));

    let found = docker(&[
        "run",
        "--rm",
        "--user",
        "0",
        "--entrypoint",
        "find",
        "gpu-workspace",
        "/",
        "-xdev",
        "-perm",
        "/6000",
    ]);
    assert!(found.status.success(), "{}", stderr(&found));
    assert_eq!(stdout(&found), "", "setuid or setgid files in the image");

    let tools = "python3 pip3 git curl wget ssh rsync tmux screen vim nano less htop ps unzip zip xz bzip2 gcc g++ make \
                 jq file ip update-ca-certificates";
    let probe = format!(
        "for t in {tools}; do command -v $t >/dev/null || echo missing $t; done; \
         python3 -c 'import venv, ensurepip, pip' || echo missing venv; locale -a | grep -qiE '^c[.]utf-?8$' || echo missing C.UTF-8; \
         echo LANG=$LANG"
    );
    let out = docker(&["run", "--rm", "--user", "65534:65534", "--entrypoint", "sh", "gpu-workspace", "-c", &probe]);
    assert_eq!(stdout(&out), "LANG=C.UTF-8\n", "{}", stderr(&out));
}

fn sandman(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("SANDMAN_LOG").output().unwrap()
}

#[test]
fn image_build_inputs_are_checked_and_make_the_digest() {
    let digest = |extra: &[&str]| {
        let mut args = vec!["image", "build", "--print-digest"];
        args.extend_from_slice(extra);
        let out = sandman(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    let full = digest(&[]);
    assert!(full.starts_with("sha256:") && full.len() == 71, "{full}");
    assert_eq!(full, digest(&["--flavor", "full"]), "full is the default");
    let others = [
        digest(&["--flavor", "minimal"]),
        digest(&["--packages", "octave r-base-core"]),
        digest(&["--ca-cert", SITE_CA]),
        digest(&["--base-image", "debian:12"]),
    ];
    for other in &others {
        assert_ne!(&full, other);
    }
    assert_eq!(digest(&["--packages", "octave,r-base-core"]), others[1], "commas or spaces");

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    let cases: [(&[&str], &str); 4] = [
        (&["--packages", "vim Bad!"], "\"Bad!\" is not a Debian package name"),
        (&["--packages=--force-yes"], "\"--force-yes\" is not a Debian package name"),
        (&["--ca-cert", missing.to_str().unwrap()], "missing.pem: cannot read it"),
        (&["--ca-cert", key.to_str().unwrap()], "is not a certificate"),
    ];
    for (extra, message) in cases {
        for print in [true, false] {
            // A real build checks the same way, before it reaches Docker.
            let mut args = vec!["image", "build", "--tag", "sandman-never-built"];
            if print {
                args.push("--print-digest");
            }
            args.extend_from_slice(extra);
            let out = sandman(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
            assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
        }
    }
    assert_eq!(docker(&["image", "inspect", "sandman-never-built"]).status.code(), Some(1));
}

#[test]
fn an_image_built_with_a_site_ca_trusts_it() {
    require_docker();
    let tag = format!("sandman-e2e-ca-{}", rand_suffix());
    // Offline, on the full flavor's base that scripts/test.sh built for gpu-workspace.
    let out = sandman(&["image", "build", "--offline", "--quiet", "--tag", &tag, "--ca-cert", SITE_CA]);
    let verify = |image: &str| {
        let mount = format!("{}:/tmp/site-ca.pem:ro", Path::new(SITE_CA).display());
        docker(&["run", "--rm", "-v", &mount, "--entrypoint", "openssl", image, "verify", "/tmp/site-ca.pem"])
    };
    let with_ca = verify(&tag);
    let without = verify("gpu-workspace");
    let digest =
        stdout(&docker(&["image", "inspect", "-f", "{{index .Config.Labels \"sandman.image.digest\"}}", &tag]));
    let expected = stdout(&sandman(&["image", "build", "--offline", "--print-digest", "--ca-cert", SITE_CA]));
    let _ = docker(&["rmi", "-f", &tag]);
    assert!(out.status.success(), "build: {}", stderr(&out));
    assert!(with_ca.status.success() && stdout(&with_ca).contains(": OK"), "{}{}", stdout(&with_ca), stderr(&with_ca));
    assert!(!without.status.success(), "the site CA is trusted only where it was added");
    assert_eq!(digest, expected, "the label carries the digest of the inputs");
}
