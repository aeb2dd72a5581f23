//! Instance identity: a copy of the database never acts on the original's containers, and a
//! database lost (emptied) beside its containers is not silently started afresh.

use std::path::Path;
use std::process::{Command, Output};

use crate::harness::{Env, stderr};

/// `sandman ARGS` on `env`'s settings but with the database `db`.
fn on_db(env: &Env, db: &Path, args: &[&str]) -> Output {
    let mut c = env.cmd();
    // The last --db wins over the harness's own.
    let mut all = vec!["--db", db.to_str().unwrap()];
    all.extend_from_slice(args);
    c.args(all).output().unwrap()
}

#[test]
fn a_copied_database_refuses_to_act_until_adopted() {
    let env = Env::new("identity-copy");
    let original = env.create("orla", &[]);
    let copy = env.path("copy.db");
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()]).unwrap();
    drop(conn);
    // In the copy the session is expired: a reaper acting on it would remove the original's container.
    let past = "UPDATE sessions SET expires_at = 0";
    rusqlite::Connection::open(&copy).unwrap().execute_batch(past).unwrap();

    for args in [&["reap"][..], &["session", "rm", "--all", "--yes"], &["session", "create", "--user", "cara"]] {
        let out = on_db(&env, &copy, args);
        assert_eq!(out.status.code(), Some(5), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is a copy or was moved") && stderr(&out).contains("--adopt-database"),
            "{}",
            stderr(&out)
        );
    }
    let doctor = on_db(&env, &copy, &["doctor", "--json"]);
    assert!(String::from_utf8_lossy(&doctor.stdout).contains("is a copy or was moved"));
    assert_eq!(env.containers().len(), 1, "the original's container is still there");
    assert!(env.ssh(&original, "true").status.success());
    assert_eq!(env.sessions().len(), 1);
    // Listing is harmless.
    assert!(on_db(&env, &copy, &["session", "list"]).status.success());
}

#[test]
fn an_emptied_database_beside_its_containers_refuses_with_what_to_do() {
    let env = Env::new("identity-truncated");
    let original = env.create("tess", &[]);
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", env.db().display());
        if Path::new(&path).exists() {
            std::fs::OpenOptions::new().write(true).truncate(true).open(&path).unwrap();
        }
    }
    // Twice: the refusal is not forgotten by the second run.
    for _ in 0..2 {
        let out = env.run(&["reap"]);
        assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
        let text = stderr(&out);
        assert!(text.contains("is new (it was missing or empty)") && text.contains(&env.network), "{text}");
        assert!(text.contains("--adopt-database"), "{text}");
    }
    let out = env.run(&["session", "create", "--user", "newbie"]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let container = original.json["container_id"].as_str().unwrap();
    let alive = Command::new("docker").args(["inspect", container]).output();
    assert!(alive.unwrap().status.success(), "the lost database's container is untouched");
    // The environment's cleanup knows only the new instance: remove the old one's container here.
    let _ = Command::new("docker").args(["rm", "-f", container]).output();
}
