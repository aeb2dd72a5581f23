//! SQLite state shared by every sandman process on the host. Each reservation (user, uid, port,
//! GPU slice, session row) happens in one IMMEDIATE transaction, so concurrent processes never
//! hand out the same thing twice; UNIQUE constraints back that up. The GPU backends' own state
//! lives here too (`gpu.rs`), written inside those same transactions.

mod gpu;

pub use gpu::{CreatedInstance, GpuLedger, SimGpu, SimInstance, SimState};

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::{Error, IoContext, Result};

const SCHEMA: &[&str] = &[
    // version 1
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE users (
        name TEXT PRIMARY KEY,
        uid INTEGER NOT NULL UNIQUE,
        host_key TEXT NOT NULL,
        created_at INTEGER NOT NULL);
     CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL UNIQUE REFERENCES users(name),
        state TEXT NOT NULL CHECK (state IN ('creating', 'running')),
        ssh_port INTEGER NOT NULL UNIQUE,
        container_id TEXT,
        container_ip TEXT,
        image TEXT NOT NULL,
        gpu_uuid TEXT UNIQUE,
        mig_profile TEXT,
        ttl_minutes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        workspace TEXT NOT NULL,
        host_key_fingerprint TEXT NOT NULL);",
    // version 2: an image's own passwd and group files, read once per image id
    "CREATE TABLE image_accounts (image_id TEXT PRIMARY KEY, passwd BLOB NOT NULL, grp BLOB NOT NULL);",
    // version 3: the GPU backends' state, which earlier versions kept in JSON files
    gpu::SCHEMA,
    // version 4: boot id, profile and placement of the GPU instances sandman created
    gpu::SCHEMA_IDENTITY,
    // version 5: the `failed` state and why. SQLite cannot change a CHECK constraint in place,
    // so the table is rebuilt (nothing references it).
    "CREATE TABLE sessions_v5 (
        id TEXT PRIMARY KEY,
        user_name TEXT NOT NULL UNIQUE REFERENCES users(name),
        state TEXT NOT NULL CHECK (state IN ('creating', 'running', 'failed')),
        ssh_port INTEGER NOT NULL UNIQUE,
        container_id TEXT,
        container_ip TEXT,
        image TEXT NOT NULL,
        gpu_uuid TEXT UNIQUE,
        mig_profile TEXT,
        ttl_minutes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        workspace TEXT NOT NULL,
        host_key_fingerprint TEXT NOT NULL,
        failure TEXT);
     INSERT INTO sessions_v5 (id, user_name, state, ssh_port, container_id, container_ip, image, gpu_uuid,
                              mig_profile, ttl_minutes, created_at, expires_at, workspace, host_key_fingerprint)
        SELECT id, user_name, state, ssh_port, container_id, container_ip, image, gpu_uuid,
               mig_profile, ttl_minutes, created_at, expires_at, workspace, host_key_fingerprint FROM sessions;
     DROP TABLE sessions;
     ALTER TABLE sessions_v5 RENAME TO sessions;",
];

/// The first schema version with the GPU tables: migrating to it imports the old JSON files.
const GPU_TABLES_VERSION: usize = 3;

/// A session's state. Its names are stored, printed and served: `as_str` and `FromStr` are
/// the one place they are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Creating,
    Running,
    /// Its container or sshd stopped answering: a reaper pass removed the container and released
    /// the slice; the row stays, with `failure`, until the user's next create, its port is
    /// needed, or its expiry.
    Failed,
}

impl State {
    pub const ALL: [State; 3] = [State::Creating, State::Running, State::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Running => "running",
            State::Failed => "failed",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = Error;

    fn from_str(text: &str) -> Result<State> {
        State::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
            Error::invalid("state", format!("{text:?} is not one of {}", names.join(", ")))
        })
    }
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub user: String,
    pub state: State,
    pub ssh_port: u16,
    pub container_id: Option<String>,
    pub container_ip: Option<String>,
    pub image: String,
    pub gpu_uuid: Option<String>,
    pub mig_profile: Option<String>,
    pub ttl_minutes: u32,
    pub created_at: i64,
    pub expires_at: i64,
    pub workspace: String,
    pub host_key_fingerprint: String,
    /// Why a `failed` session failed.
    pub failure: Option<String>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub name: String,
    pub uid: u32,
    pub host_key: String,
}

/// What a create asks to reserve.
pub struct Reservation<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub image: &'a str,
    pub ttl_minutes: u32,
    pub now: i64,
    pub workspace: &'a str,
    pub port_range: (u16, u16),
    pub uid_start: u32,
}

/// A GPU slice chosen inside the reservation transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuPick {
    pub uuid: String,
    pub profile: Option<String>,
}

pub struct Store {
    conn: Connection,
    identity: Identity,
}

/// Whether this database file is the one it was created as (see `Store::identity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The file it was created as, and confirmed as this host's database.
    Confirmed,
    /// Created by this open or the last ones (the file was missing or empty), and not yet
    /// checked against the engine for containers of a lost database.
    New,
    /// A copy or a move: the file is not the one the database was created as.
    Moved { recorded: String, actual: String },
}

/// The meta keys of the database's identity: the file it was created as (`device:inode`), and
/// whether it was confirmed as this host's database.
const META_FILE: &str = "database_file";
const META_CONFIRMED: &str = "confirmed";

fn file_identity(path: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).io_context(|| format!("read the metadata of database {}", path.display()))?;
    Ok(format!("{}:{}", meta.dev(), meta.ino()))
}

/// See `Store::version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(i64, u64);

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create state directory {}", dir.display()))?;
        // A missing or empty file becomes a new database: it must not adopt a lost one's containers.
        let fresh = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
        let conn = Connection::open(path).with_context(|| format!("cannot open database {}", path.display()))?;
        // The database holds the users' SSH host keys: owner only.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .io_context(|| format!("restrict the database {} to its owner", path.display()))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL cannot corrupt the database; a power cut may lose the last commits,
        // which the reaper reconciles like any crash. It saves an fsync per write.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let mut store = Store { conn, identity: Identity::Confirmed };
        store.migrate(dir)?;
        store.identity = store.read_identity(path, fresh)?;
        Ok(store)
    }

    /// Records the file's identity on first open; then compares it with the recorded one.
    fn read_identity(&mut self, path: &Path, fresh: bool) -> Result<Identity> {
        let actual = file_identity(path)?;
        // Immediate: it may write, and a read transaction upgraded to a write fails at once
        // (without waiting) when another process writes meanwhile.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let recorded: Option<String> =
            tx.query_row("SELECT value FROM meta WHERE key = ?1", [META_FILE], |r| r.get(0)).optional()?;
        let identity = match recorded {
            None => {
                tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", [META_FILE, &actual])?;
                // A database from before identities existed is this host's; a fresh one must
                // first be checked against the engine.
                if !fresh {
                    tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, 'yes')", [META_CONFIRMED])?;
                }
                if fresh { Identity::New } else { Identity::Confirmed }
            }
            Some(recorded) if recorded != actual => Identity::Moved { recorded, actual },
            Some(_) => {
                let confirmed: Option<String> =
                    tx.query_row("SELECT value FROM meta WHERE key = ?1", [META_CONFIRMED], |r| r.get(0)).optional()?;
                if confirmed.is_some() { Identity::Confirmed } else { Identity::New }
            }
        };
        tx.commit()?;
        Ok(identity)
    }

    /// Whether this database is the file it was created as, and confirmed as this host's.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Makes this file the host's database: records its identity and confirms it.
    pub fn adopt(&mut self, path: &Path) -> Result<()> {
        let actual = file_identity(path)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", [META_FILE, &actual])?;
        tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, 'yes')", [META_CONFIRMED])?;
        tx.commit()?;
        self.identity = Identity::Confirmed;
        Ok(())
    }

    /// Brings the schema up to date; `state_dir` holds the files older versions kept state in.
    fn migrate(&mut self, state_dir: &Path) -> Result<()> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(usize::MAX);
        if version > SCHEMA.len() {
            return Err(Error::Unavailable(format!(
                "database schema version {version} is newer than this sandman understands ({}); upgrade sandman",
                SCHEMA.len()
            )));
        }
        for step in &SCHEMA[version..] {
            tx.execute_batch(step)?;
        }
        let imported = if version < GPU_TABLES_VERSION { gpu::import_files(&tx, state_dir)? } else { Vec::new() };
        tx.pragma_update(None, "user_version", SCHEMA.len() as i64)?;
        // An id unique to this database, so its containers can be told from those of another.
        tx.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('instance_id', ?1)",
            [uuid::Uuid::new_v4().simple().to_string()[..12].to_string()],
        )?;
        tx.commit()?;
        gpu::retire_imported(state_dir, &imported);
        Ok(())
    }

    pub fn instance_id(&self) -> Result<String> {
        Ok(self.conn.query_row("SELECT value FROM meta WHERE key = 'instance_id'", [], |r| r.get(0))?)
    }

    /// Reserves everything a new session needs, or nothing. `new_host_key` is called only for a
    /// user seen for the first time; `port_free` checks a candidate port on the host; `pick_gpu`
    /// gets the GPU UUIDs already taken and the GPU tables, in this transaction.
    pub fn reserve(
        &mut self,
        r: &Reservation,
        new_host_key: impl FnOnce() -> Result<String>,
        host_key_fingerprint: impl FnOnce(&str) -> Result<String>,
        port_free: impl Fn(u16) -> bool,
        pick_gpu: impl FnOnce(&HashSet<String>, &GpuLedger) -> Result<Option<GpuPick>>,
    ) -> Result<(SessionRow, UserRow)> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // A failed session whose container is gone is only a record of what happened: a new
        // create replaces it.
        tx.execute(&format!("DELETE FROM sessions WHERE user_name = ?1 AND {}", failed_and_cleaned()), [r.user])?;
        let existing: Option<String> =
            tx.query_row("SELECT id FROM sessions WHERE user_name = ?1", [r.user], |row| row.get(0)).optional()?;
        if let Some(id) = existing {
            return Err(Error::Conflict(format!("session for user {} already exists ({id})", r.user)));
        }

        let user = match query_user(&tx, r.user)? {
            Some(u) => u,
            None => {
                let next: u32 =
                    tx.query_row("SELECT COALESCE(MAX(uid) + 1, ?1) FROM users", [r.uid_start], |row| row.get(0))?;
                let uid = next.max(r.uid_start);
                if uid >= 60000 {
                    return Err(Error::Exhausted(format!(
                        "no uid left for user {}: uids {}-59999 are all taken",
                        r.user, r.uid_start
                    )));
                }
                let host_key = new_host_key()?;
                tx.execute(
                    "INSERT INTO users (name, uid, host_key, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![r.user, uid, host_key, r.now],
                )?;
                UserRow { name: r.user.to_string(), uid, host_key }
            }
        };
        let fingerprint = host_key_fingerprint(&user.host_key)?;

        let used_ports: HashSet<u16> =
            collect(&tx, &format!("SELECT ssh_port FROM sessions WHERE NOT ({})", failed_and_cleaned()))?;
        let (start, end) = r.port_range;
        let port = (start..=end).find(|p| !used_ports.contains(p) && port_free(*p)).ok_or_else(|| {
            Error::Exhausted(format!(
                "no free SSH port in {start}-{end}: widen ssh_port_start/ssh_port_end or remove sessions"
            ))
        })?;
        // A failed session's port is free (its container is gone); its record makes way.
        tx.execute(&format!("DELETE FROM sessions WHERE ssh_port = ?1 AND {}", failed_and_cleaned()), [port])?;

        let ledger = GpuLedger::new(&tx);
        let gpu = pick_gpu(&ledger.held()?, &ledger)?;

        let row = SessionRow {
            id: r.id.to_string(),
            user: r.user.to_string(),
            state: State::Creating,
            ssh_port: port,
            container_id: None,
            container_ip: None,
            image: r.image.to_string(),
            gpu_uuid: gpu.as_ref().map(|g| g.uuid.clone()),
            mig_profile: gpu.and_then(|g| g.profile),
            ttl_minutes: r.ttl_minutes,
            created_at: r.now,
            expires_at: r.now + i64::from(r.ttl_minutes) * 60,
            workspace: r.workspace.to_string(),
            host_key_fingerprint: fingerprint,
            failure: None,
        };
        tx.execute(
            "INSERT INTO sessions (id, user_name, state, ssh_port, image, gpu_uuid, mig_profile, ttl_minutes,
                                   created_at, expires_at, workspace, host_key_fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                row.id,
                row.user,
                row.state.as_str(),
                row.ssh_port,
                row.image,
                row.gpu_uuid,
                row.mig_profile,
                row.ttl_minutes,
                row.created_at,
                row.expires_at,
                row.workspace,
                row.host_key_fingerprint
            ],
        )?;
        tx.commit()?;
        Ok((row, user))
    }

    /// Runs `f` on the GPU tables in a write transaction, so no reservation runs meanwhile;
    /// what `f` writes is committed only if it succeeds.
    pub fn with_gpu_ledger<T>(&mut self, f: impl FnOnce(&GpuLedger) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&GpuLedger::new(&tx))?;
        tx.commit()?;
        Ok(out)
    }

    /// Reads the GPU tables as of one moment (a read transaction: it never waits for writers).
    pub fn read_gpu_ledger<T>(&mut self, f: impl FnOnce(&GpuLedger) -> Result<T>) -> Result<T> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        f(&GpuLedger::new(&tx))
    }

    /// The passwd and group files of an image, if read before.
    pub fn image_accounts(&self, image_id: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        Ok(self
            .conn
            .query_row("SELECT passwd, grp FROM image_accounts WHERE image_id = ?1", [image_id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    pub fn save_image_accounts(&self, image_id: &str, passwd: &[u8], group: &[u8]) -> Result<()> {
        self.conn.execute(
            "INSERT OR REPLACE INTO image_accounts (image_id, passwd, grp) VALUES (?1, ?2, ?3)",
            params![image_id, passwd, group],
        )?;
        Ok(())
    }

    /// Marks a session ready. False if the row vanished meanwhile (removed by `rm` or a reaper).
    pub fn mark_running(&self, id: &str, container_id: &str, container_ip: Option<&str>) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE sessions SET state = ?4, container_id = ?2, container_ip = ?3 WHERE id = ?1",
            params![id, container_id, container_ip, State::Running.as_str()],
        )?;
        Ok(n == 1)
    }

    /// Sets a new expiry; false if no such session.
    pub fn set_ttl(&self, id: &str, ttl_minutes: u32, expires_at: i64) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE sessions SET ttl_minutes = ?2, expires_at = ?3 WHERE id = ?1",
            params![id, ttl_minutes, expires_at],
        )?;
        Ok(n == 1)
    }

    /// Deletes the row; false if another process already did.
    pub fn delete_session(&self, id: &str) -> Result<bool> {
        Ok(self.conn.execute("DELETE FROM sessions WHERE id = ?1", [id])? == 1)
    }

    /// Deletes a running (or failed) session's row if it has expired by `now`; false if it has
    /// not (an extend committed first) or is gone. The check and the delete are one statement, so
    /// an extend is never lost to a reaper that judged an older copy of the row.
    pub fn delete_expired(&self, id: &str, now: i64) -> Result<bool> {
        let n = self.conn.execute(
            "DELETE FROM sessions WHERE id = ?1 AND state IN (?2, ?3) AND expires_at <= ?4",
            params![id, State::Running.as_str(), State::Failed.as_str(), now],
        )?;
        Ok(n == 1)
    }

    /// Marks a running session failed, with why; false if it is gone or no longer running.
    /// A session already failed keeps its first reason (and answers true).
    pub fn mark_failed(&self, id: &str, reason: &str) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE sessions SET state = ?2, failure = COALESCE(failure, ?3) WHERE id = ?1 AND state IN (?4, ?2)",
            params![id, State::Failed.as_str(), reason, State::Running.as_str()],
        )?;
        Ok(n == 1)
    }

    /// A failed session's container is gone: it holds no container and no GPU slice any more
    /// (`container_id` NULL marks a failed row as cleaned up).
    pub fn finish_failed(&self, id: &str) -> Result<()> {
        self.conn.execute(
            "UPDATE sessions SET gpu_uuid = NULL, container_id = NULL, container_ip = NULL WHERE id = ?1 AND state = ?2",
            params![id, State::Failed.as_str()],
        )?;
        Ok(())
    }

    /// Deletes a running session's row (its container vanished); false if it is gone.
    pub fn delete_running(&self, id: &str) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM sessions WHERE id = ?1 AND state = ?2", params![id, State::Running.as_str()])?;
        Ok(n == 1)
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionRow>> {
        Ok(self.conn.query_row(&format!("{SELECT_SESSION} WHERE id = ?1"), [id], session_from_row).optional()?)
    }

    pub fn sessions(&self) -> Result<Vec<SessionRow>> {
        let mut stmt = self.conn.prepare(&format!("{SELECT_SESSION} ORDER BY created_at, id"))?;
        let rows = stmt.query_map([], session_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Changes whenever the stored sessions may have changed: on commits by other connections
    /// (`data_version`, across processes) and on this connection's own writes (`total_changes`).
    /// Lets a caller cache what it derives from `sessions()`; read it before reading the rows.
    pub fn version(&self) -> Result<Version> {
        let data: i64 = self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        Ok(Version(data, self.conn.total_changes()))
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRow>> {
        query_user(&self.conn, name)
    }
}

/// The condition for a failed row whose container is gone.
fn failed_and_cleaned() -> String {
    format!("state = '{}' AND container_id IS NULL", State::Failed.as_str())
}

const SELECT_SESSION: &str = "SELECT id, user_name, state, ssh_port, container_id, container_ip, image, gpu_uuid,
    mig_profile, ttl_minutes, created_at, expires_at, workspace, host_key_fingerprint, failure FROM sessions";

fn session_from_row(r: &rusqlite::Row) -> rusqlite::Result<SessionRow> {
    let state: String = r.get(2)?;
    let state = state
        .parse()
        .map_err(|e: Error| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into()))?;
    Ok(SessionRow {
        id: r.get(0)?,
        user: r.get(1)?,
        state,
        ssh_port: r.get(3)?,
        container_id: r.get(4)?,
        container_ip: r.get(5)?,
        image: r.get(6)?,
        gpu_uuid: r.get(7)?,
        mig_profile: r.get(8)?,
        ttl_minutes: r.get(9)?,
        created_at: r.get(10)?,
        expires_at: r.get(11)?,
        workspace: r.get(12)?,
        host_key_fingerprint: r.get(13)?,
        failure: r.get(14)?,
    })
}

fn query_user(conn: &Connection, name: &str) -> Result<Option<UserRow>> {
    Ok(conn
        .query_row("SELECT name, uid, host_key FROM users WHERE name = ?1", [name], |r| {
            Ok(UserRow { name: r.get(0)?, uid: r.get(1)?, host_key: r.get(2)? })
        })
        .optional()?)
}

fn collect<T: rusqlite::types::FromSql + std::hash::Hash + Eq>(conn: &Connection, sql: &str) -> Result<HashSet<T>> {
    let mut stmt = conn.prepare(sql)?;
    let set = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<HashSet<T>>>()?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reservation<'a>(id: &'a str, user: &'a str) -> Reservation<'a> {
        Reservation {
            id,
            user,
            image: "img",
            ttl_minutes: 60,
            now: 1000,
            workspace: "/w",
            port_range: (10000, 10002),
            uid_start: 20000,
        }
    }

    fn reserve(
        store: &mut Store,
        id: &str,
        user: &str,
        port_free: impl Fn(u16) -> bool,
    ) -> Result<(SessionRow, UserRow)> {
        store.reserve(
            &reservation(id, user),
            || Ok(format!("key-of-{user}")),
            |k| Ok(format!("fp({k})")),
            port_free,
            |_, _| Ok(None),
        )
    }

    #[test]
    fn reserves_distinct_ports_and_stable_uids() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let (a, ua) = reserve(&mut store, "1", "alice", |_| true).unwrap();
        let (b, ub) = reserve(&mut store, "2", "bob", |p| p != 10001).unwrap();
        assert_eq!((a.ssh_port, b.ssh_port), (10000, 10002), "busy host port 10001 is skipped");
        assert_eq!((ua.uid, ub.uid), (20000, 20001));
        assert_eq!(a.expires_at, 1000 + 3600);
        let e = reserve(&mut store, "3", "carol", |p| p != 10001).unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)) && e.to_string().contains("10000-10002"), "{e}");
        let e = reserve(&mut store, "4", "alice", |_| true).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)) && e.to_string().contains("session for user alice already exists"));
        // A user keeps uid and host key across sessions.
        assert!(store.delete_session("1").unwrap());
        assert!(!store.delete_session("1").unwrap());
        let (_, again) = store
            .reserve(
                &reservation("5", "alice"),
                || panic!("no new key for a known user"),
                |k| Ok(k.into()),
                |_| true,
                |_, _| Ok(None),
            )
            .unwrap();
        assert_eq!((again.uid, again.host_key.as_str()), (20000, "key-of-alice"));
        assert!(store.session("3").unwrap().is_none());
        assert_eq!(store.sessions().unwrap().len(), 2);
    }

    #[test]
    fn failed_gpu_pick_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let e = store
            .reserve(
                &reservation("1", "alice"),
                || Ok("k".into()),
                |k| Ok(k.into()),
                |_| true,
                |_, _| Err(Error::Exhausted("no slice".into())),
            )
            .unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)));
        assert!(store.sessions().unwrap().is_empty());
        assert!(store.user("alice").unwrap().is_none(), "the user row is rolled back too");
    }

    #[test]
    fn state_names_round_trip() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>().unwrap(), state);
        }
        let e = "stopped".parse::<State>().unwrap_err();
        assert!(e.to_string().contains("\"stopped\" is not one of creating, running, failed"), "{e}");
    }

    #[test]
    fn expiry_is_judged_in_the_delete() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        reserve(&mut store, "1", "alice", |_| true).unwrap();
        let expires = 1000 + 3600;
        assert!(!store.delete_expired("1", expires).unwrap(), "a session still creating is not expired");
        assert!(store.mark_running("1", "c1", None).unwrap());
        assert!(!store.delete_expired("1", expires - 1).unwrap(), "not yet expired");
        store.set_ttl("1", 120, expires + 3600).unwrap();
        assert!(!store.delete_expired("1", expires).unwrap(), "extended");
        assert!(store.delete_expired("1", expires + 3600).unwrap());
        assert!(!store.delete_running("1").unwrap(), "already gone");
    }

    #[test]
    fn a_database_knows_its_own_file_and_a_copy_must_be_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        assert_eq!(Store::open(&path).unwrap().identity(), &Identity::New, "created by this open");
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.identity(), &Identity::New, "still unconfirmed");
        store.adopt(&path).unwrap();
        drop(store);
        assert_eq!(Store::open(&path).unwrap().identity(), &Identity::Confirmed);
        let copy = dir.path().join("copy.db");
        std::fs::copy(&path, &copy).unwrap();
        let mut copied = Store::open(&copy).unwrap();
        assert!(matches!(copied.identity(), Identity::Moved { .. }), "{:?}", copied.identity());
        copied.adopt(&copy).unwrap();
        assert_eq!(Store::open(&copy).unwrap().identity(), &Identity::Confirmed);
        assert_eq!(Store::open(&path).unwrap().identity(), &Identity::Confirmed, "the original is unaffected");
    }

    #[test]
    fn version_changes_on_own_and_other_connections_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = Store::open(&path).unwrap();
        let v0 = store.version().unwrap();
        assert_eq!(store.version().unwrap(), v0, "reading changes nothing");
        reserve(&mut store, "1", "alice", |_| true).unwrap();
        let v1 = store.version().unwrap();
        assert_ne!(v1, v0, "this connection's write");
        let other = Store::open(&path).unwrap();
        other.set_ttl("1", 5, 2000).unwrap();
        assert_ne!(store.version().unwrap(), v1, "another connection's write");
    }
}
