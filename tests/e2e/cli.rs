//! The CLI surface: help with examples, and generated files that are committed and current.

use std::path::Path;
use std::process::Command;

use crate::harness::BIN;

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_command_shows_examples_in_its_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["session", "create"],
        &["session", "list"],
        &["session", "show"],
        &["session", "extend"],
        &["session", "rm"],
        &["reap"],
        &["serve"],
        &["image", "build"],
        &["doctor"],
        &["completions"],
        &["man"],
    ];
    for c in commands {
        let mut args = c.to_vec();
        args.push("--help");
        let help = run(&args);
        assert!(help.contains("Examples:"), "`sandman {}` help has no examples", c.join(" "));
    }
}

#[test]
fn committed_completions_and_man_pages_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (shell, file) in [("bash", "sandman.bash"), ("zsh", "_sandman"), ("fish", "sandman.fish")] {
        let committed = std::fs::read_to_string(root.join("completions").join(file))
            .unwrap_or_else(|e| panic!("completions/{file}: {e}; run scripts/gen-docs.sh"));
        assert_eq!(committed, run(&["completions", shell]), "completions/{file} is stale: run scripts/gen-docs.sh");
    }
    let fresh = tempfile::tempdir().unwrap();
    run(&["man", "--dir", fresh.path().to_str().unwrap()]);
    let mut names: Vec<_> = std::fs::read_dir(fresh.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    names.sort();
    assert!(names.len() > 8, "one page per command: {names:?}");
    for name in names {
        let want = std::fs::read(fresh.path().join(&name)).unwrap();
        let have = std::fs::read(root.join("man").join(&name))
            .unwrap_or_else(|e| panic!("man/{}: {e}; run scripts/gen-docs.sh", name.to_string_lossy()));
        assert!(want == have, "man/{} is stale: run scripts/gen-docs.sh", name.to_string_lossy());
    }
}
