//! SQLite state shared by every sandman process on the host. Each reservation (user, uid, port,
//! GPU slice, session row) happens in one IMMEDIATE transaction, so concurrent processes never
//! hand out the same thing twice; UNIQUE constraints back that up. The GPU backends' own state
//! lives here too (`gpu.rs`), written inside those same transactions.

mod gpu;
mod nodes;

pub use gpu::{CreatedInstance, GpuLedger, SimGpu, SimInstance, SimState};

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};

use crate::error::{Error, IoContext, Result};
use crate::limits::SessionLimits;

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
    // version 5: each user's last SSH port (kept across sessions, so the address stays stable)
    // and the user's own public keys, which outlive sessions. A key may be stored for a user
    // who has had no session yet, so `user_keys` names users without a foreign key.
    "ALTER TABLE users ADD COLUMN last_port INTEGER;
     CREATE TABLE user_keys (
        user_name TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        key_line TEXT NOT NULL,
        added_at INTEGER NOT NULL,
        PRIMARY KEY (user_name, fingerprint));",
    // version 6: the resource limits a session runs under (NULL for sessions made before)
    "ALTER TABLE sessions ADD COLUMN memory_bytes INTEGER;
     ALTER TABLE sessions ADD COLUMN nano_cpus INTEGER;
     ALTER TABLE sessions ADD COLUMN shm_size_bytes INTEGER;
     ALTER TABLE sessions ADD COLUMN pids_limit INTEGER;
     ALTER TABLE sessions ADD COLUMN log_size_bytes INTEGER;
     ALTER TABLE sessions ADD COLUMN log_files INTEGER;",
    // version 7: the `failed` state and why. SQLite cannot change a CHECK constraint in place,
    // so the table is rebuilt (nothing references it).
    "CREATE TABLE sessions_v7 (
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
        memory_bytes INTEGER,
        nano_cpus INTEGER,
        shm_size_bytes INTEGER,
        pids_limit INTEGER,
        log_size_bytes INTEGER,
        log_files INTEGER,
        failure TEXT);
     INSERT INTO sessions_v7 (id, user_name, state, ssh_port, container_id, container_ip, image, gpu_uuid,
                              mig_profile, ttl_minutes, created_at, expires_at, workspace, host_key_fingerprint,
                              memory_bytes, nano_cpus, shm_size_bytes, pids_limit, log_size_bytes, log_files)
        SELECT id, user_name, state, ssh_port, container_id, container_ip, image, gpu_uuid,
               mig_profile, ttl_minutes, created_at, expires_at, workspace, host_key_fingerprint,
               memory_bytes, nano_cpus, shm_size_bytes, pids_limit, log_size_bytes, log_files FROM sessions;
     DROP TABLE sessions;
     ALTER TABLE sessions_v7 RENAME TO sessions;",
    // version 8: idle detection. A session's own idle timeout (NULL: the host's), its last
    // activity and the signal that saw it (NULL: none since creation), what the last reap pass
    // measured, and the warning and expiry notice already given. Plus the simulated GPU compute
    // processes a test sets per device (`sandman gpu sim-busy`).
    "ALTER TABLE sessions ADD COLUMN idle_timeout_minutes INTEGER;
     ALTER TABLE sessions ADD COLUMN last_activity_at INTEGER;
     ALTER TABLE sessions ADD COLUMN last_activity_signal TEXT;
     ALTER TABLE sessions ADD COLUMN cpu_usage_usec INTEGER;
     ALTER TABLE sessions ADD COLUMN cpu_sampled_at INTEGER;
     ALTER TABLE sessions ADD COLUMN ssh_connections INTEGER;
     ALTER TABLE sessions ADD COLUMN gpu_processes INTEGER;
     ALTER TABLE sessions ADD COLUMN warned_deadline INTEGER;
     ALTER TABLE sessions ADD COLUMN warned_minutes INTEGER;
     ALTER TABLE sessions ADD COLUMN notice_deadline INTEGER;
     CREATE TABLE sim_gpu_processes (uuid TEXT PRIMARY KEY, processes INTEGER NOT NULL);",
    // version 9: swarm placement, in tables of their own (see nodes.rs)
    nodes::SCHEMA,
    // version 10: the OOM kills a reap pass last saw in each session's container, so that the
    // next pass (another process, for the CLI) reports only new ones
    "ALTER TABLE sessions ADD COLUMN oom_kills_seen INTEGER;",
    // version 11: the size limit of the session's writable layer (NULL: none)
    "ALTER TABLE sessions ADD COLUMN writable_layer_bytes INTEGER;",
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
    /// Set once the create has resolved them; `None` for sessions made before limits existed.
    pub limits: Option<SessionLimits>,
    /// Why a `failed` session failed.
    pub failure: Option<String>,
    /// Idle detection: what reap passes recorded (all unset for a new or older session).
    pub activity: Activity,
}

#[cfg(test)]
impl SessionRow {
    /// A running-or-not session for unit tests: user `alice`, port 10000, created at 0, expiring
    /// in an hour, nothing recorded.
    pub fn example(id: &str, state: State) -> SessionRow {
        SessionRow {
            id: id.into(),
            user: "alice".into(),
            state,
            ssh_port: 10000,
            container_id: None,
            container_ip: None,
            image: "img".into(),
            gpu_uuid: None,
            mig_profile: None,
            ttl_minutes: 60,
            created_at: 0,
            expires_at: 3600,
            workspace: "/w".into(),
            host_key_fingerprint: "fp".into(),
            limits: None,
            failure: None,
            activity: Activity::default(),
        }
    }
}

/// What reap passes recorded of a session's activity (see `sessions::reap::judge`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    /// The session's own idle timeout, asked for at create; `None`: the host's.
    pub idle_timeout_minutes: Option<u32>,
    /// When a pass last saw activity; `None`: never, so the session's creation counts.
    pub last_activity_at: Option<i64>,
    /// `ssh`, `cpu` or `gpu`: the signal that moved `last_activity_at`.
    pub last_activity_signal: Option<String>,
    /// The container's cumulative CPU time at the last pass, and when that pass ran.
    pub cpu_usage_usec: Option<u64>,
    pub cpu_sampled_at: Option<i64>,
    /// Established SSH connections and GPU compute processes at the last pass.
    pub ssh_connections: Option<u32>,
    pub gpu_processes: Option<u32>,
    /// The deadline (expiry or idle reap) last warned about, and the smallest warning sent for it
    /// (10 or 1 minutes).
    pub warned_deadline: Option<i64>,
    pub warned_minutes: Option<u32>,
    /// The deadline written into the session's `~/.sandman/expires_at`.
    pub notice_deadline: Option<i64>,
    /// The OOM kills in the container that a pass last reported.
    pub oom_kills_seen: Option<u64>,
}

impl Activity {
    /// When the session was last active: its last activity, else its creation.
    pub fn since(&self, created_at: i64) -> i64 {
        self.last_activity_at.unwrap_or(created_at)
    }
}

/// What one reap pass records of a running session.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivityUpdate {
    pub last_activity_at: Option<i64>,
    pub last_activity_signal: Option<String>,
    pub cpu_usage_usec: Option<u64>,
    pub cpu_sampled_at: i64,
    pub ssh_connections: Option<u32>,
    pub gpu_processes: Option<u32>,
    /// The expiry activity moved it to; `None`: not moved, whatever it is now (an extend, or
    /// a shorter expiry someone set while the pass ran, is kept).
    pub bumped_expiry: Option<i64>,
}

/// One of a user's public keys.
#[derive(Debug, Clone, PartialEq)]
pub struct UserKey {
    pub fingerprint: String,
    /// The key as one `authorized_keys` line.
    pub key_line: String,
    pub added_at: i64,
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
    /// The database file, for error messages.
    path: PathBuf,
    /// Why this connection only reads (see `read_only_fallback`), for the error of a write.
    read_only_because: Option<String>,
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

/// How long a write waits for another connection's write lock before it gives up with
/// `Unavailable`: a client gets 503 with `Retry-After`, the CLI exit status 5.
pub const WRITE_LOCK_WAIT: Duration = Duration::from_secs(5);
/// Under WAL a read never waits for a writer; only a recovery after a crash can make it wait.
const READ_WAIT: Duration = Duration::from_secs(1);

/// See `Store::version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version(i64, u64);

impl Store {
    /// The connection for writes (and reads inside them). Opening writes nothing unless the
    /// schema needs migrating, so that a full disk still lets sessions be listed.
    pub fn open(path: &Path) -> Result<Store> {
        // A missing or empty file becomes a new database: it must not adopt a lost one's containers.
        let fresh = std::fs::metadata(path).map(|m| m.len() == 0).unwrap_or(true);
        let mut store = Store::connect(path, WRITE_LOCK_WAIT)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        store.migrate(dir).map_err(|e| store.named(e))?;
        // A store that can only read (full disk) cannot record an identity; it cannot act either.
        if store.read_only_because.is_none() {
            store.identity = store.read_identity(path, fresh).map_err(|e| store.named(e))?;
        }
        Ok(store)
    }

    /// A connection that only reads, for a server's lists and lookups: under WAL it sees the last
    /// commit and never waits behind the write connection's transaction. Open the database with
    /// `open` first (it migrates the schema).
    pub fn open_reader(path: &Path) -> Result<Store> {
        let store = Store::connect(path, READ_WAIT)?;
        store.conn.pragma_update(None, "query_only", true).map_err(|e| store.named(e.into()))?;
        Ok(store)
    }

    fn connect(path: &Path, busy_wait: Duration) -> Result<Store> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .io_context(|| format!("create the state directory {}", dir.display()))?;
        check_shared_memory(path)?;
        let conn = Connection::open(path).with_context(|| format!("cannot open database {}", path.display()))?;
        let store = Store { conn, path: path.to_path_buf(), read_only_because: None, identity: Identity::Confirmed };
        // The database holds the users' SSH host keys: owner only.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .io_context(|| format!("restrict the database {} to its owner", path.display()))?;
        let setup = || -> rusqlite::Result<()> {
            store.conn.busy_timeout(busy_wait)?;
            let mode: String = store.conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                store.conn.pragma_update(None, "journal_mode", "WAL")?;
            }
            // In WAL mode NORMAL cannot corrupt the database; a power cut may lose the last
            // commits, which the reaper reconciles like any crash. It saves an fsync per write.
            store.conn.pragma_update(None, "synchronous", "NORMAL")?;
            store.conn.pragma_update(None, "foreign_keys", true)
        };
        // Switching a new database to WAL can answer "busy" at once, without waiting, while
        // another process opens it too: retry that within the same bound.
        let deadline = std::time::Instant::now() + busy_wait;
        let mut result = setup();
        while result.as_ref().is_err_and(is_busy) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            result = setup();
        }
        match result {
            Ok(()) => Ok(store),
            Err(e) if shared_memory_failed(&e, path) => {
                drop(store);
                Store::read_only_fallback(path, e)
            }
            Err(e) => Err(store.named(e.into())),
        }
    }

    /// When SQLite cannot set up its shared memory (the `-shm` file cannot grow on a full disk,
    /// or cannot be written), the database can still be read, without it, as long as no
    /// `-wal` file holds commits not yet in the database (no other connection is open): lists
    /// and lookups keep working and writes fail with the reason. Otherwise the error is named.
    fn read_only_fallback(path: &Path, cause: rusqlite::Error) -> Result<Store> {
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let shm = format!("{}-shm", path.display());
        let full = free_space(path.parent().unwrap_or(Path::new("."))) == Some(0);
        let reason = if full {
            format!("the file system is full: free space on it, then try again ({cause})")
        } else {
            format!(
                "its shared-memory file {shm} cannot be written: give it back to the user sandman runs as, or \
                 remove it while no sandman runs ({cause})"
            )
        };
        let wal_empty =
            std::fs::metadata(&wal).map_or_else(|e| e.kind() == std::io::ErrorKind::NotFound, |m| m.len() == 0);
        if !wal_empty {
            return Err(Error::Unavailable(format!("cannot read the session database {}: {reason}", path.display())));
        }
        // `immutable`: no locks and no shared memory; safe here because nothing else is open.
        let uri = format!("file:{}?immutable=1", uri_path(path));
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(uri, flags)
            .with_context(|| format!("cannot open database {} read-only", path.display()))?;
        tracing::debug!(db = %path.display(), "the session database can only be read: {reason}");
        Ok(Store { conn, path: path.to_path_buf(), read_only_because: Some(reason), identity: Identity::Confirmed })
    }

    /// `f` on the connection, its errors named (see `named`).
    fn run<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.conn).map_err(|e| self.named(e))
    }

    fn run_mut<T>(&mut self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        f(&mut self.conn).map_err(|e| self.named(e))
    }

    /// A database error with the database's path and, for the host's state (another process
    /// holding the write lock, a full disk, a read-only file system), `Unavailable` with the fix.
    fn named(&self, e: Error) -> Error {
        let Error::Internal(inner) = e else {
            return e;
        };
        let Some(rusqlite::Error::SqliteFailure(failure, _)) = inner.downcast_ref::<rusqlite::Error>() else {
            return Error::Internal(inner);
        };
        let path = self.path.display();
        if let Some(reason) = &self.read_only_because
            && failure.code == ErrorCode::ReadOnly
        {
            return Error::Unavailable(format!("cannot write the session database {path}: {reason}"));
        }
        let fix = match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => format!(
                "another process holds its write lock (waited {} s); try again, and if it persists, find \
                 the process with `fuser -v {path}`",
                WRITE_LOCK_WAIT.as_secs()
            ),
            ErrorCode::DiskFull => {
                "the file system is full: free space on it, then try again (reads still work)".to_string()
            }
            ErrorCode::ReadOnly => {
                "it is read-only: check the permissions of the database, its -wal and -shm files and its \
                 directory, or remount the file system read-write"
                    .to_string()
            }
            ErrorCode::CannotOpen | ErrorCode::PermissionDenied => {
                "permission denied on it or its -wal or -shm file: run sandman as root (sudo), or give \
                 those files back to the user sandman runs as"
                    .to_string()
            }
            _ => return Error::Internal(inner.context(format!("session database {path}"))),
        };
        Error::Unavailable(format!("cannot use the session database {path}: {fix} ({failure})"))
    }

    /// Records the file's identity on first open; then compares it with the recorded one. Only
    /// the first open writes, so opening a known database never waits for the write lock.
    fn read_identity(&mut self, path: &Path, fresh: bool) -> Result<Identity> {
        let actual = file_identity(path)?;
        let meta = |conn: &Connection, key: &str| -> Result<Option<String>> {
            Ok(conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)
        };
        if let Some(recorded) = meta(&self.conn, META_FILE)? {
            if recorded != actual {
                return Ok(Identity::Moved { recorded, actual });
            }
            let confirmed = meta(&self.conn, META_CONFIRMED)?.is_some();
            return Ok(if confirmed { Identity::Confirmed } else { Identity::New });
        }
        // Immediate: it writes, and a read transaction upgraded to a write fails at once
        // (without waiting) when another process writes meanwhile.
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(recorded) = meta(&tx, META_FILE)? {
            // Another process recorded it meanwhile.
            drop(tx);
            return Ok(if recorded != actual {
                Identity::Moved { recorded, actual }
            } else if meta(&self.conn, META_CONFIRMED)?.is_some() {
                Identity::Confirmed
            } else {
                Identity::New
            });
        }
        tx.execute("INSERT INTO meta (key, value) VALUES (?1, ?2)", [META_FILE, &actual])?;
        // A database from before identities existed is this host's; a fresh one must first be
        // checked against the engine.
        if !fresh {
            tx.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, 'yes')", [META_CONFIRMED])?;
        }
        tx.commit()?;
        Ok(if fresh { Identity::New } else { Identity::Confirmed })
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
        if self.up_to_date()? {
            return Ok(());
        }
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

    /// Whether the schema is this version's and the instance id is there: nothing to write.
    fn up_to_date(&self) -> Result<bool> {
        let version: i64 = self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if usize::try_from(version).ok() != Some(SCHEMA.len()) {
            return Ok(false);
        }
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'instance_id'", [], |_| Ok(()))
            .optional()?
            .is_some())
    }

    pub fn instance_id(&self) -> Result<String> {
        self.run(|conn| Ok(conn.query_row("SELECT value FROM meta WHERE key = 'instance_id'", [], |r| r.get(0))?))
    }

    /// Reserves everything a new session needs, or nothing. `new_user` is called only for a
    /// user seen for the first time, with the uid they get, and returns their host key (an
    /// error refuses the user); `port_free` checks a candidate port on the host; `pick_gpu`
    /// gets the GPU UUIDs already taken and the GPU tables, in this transaction.
    pub fn reserve(
        &mut self,
        r: &Reservation,
        new_user: impl FnOnce(u32) -> Result<String>,
        host_key_fingerprint: impl FnOnce(&str) -> Result<String>,
        port_free: impl Fn(u16) -> bool,
        pick_gpu: impl FnOnce(&HashSet<String>, &GpuLedger) -> Result<Option<GpuPick>>,
    ) -> Result<(SessionRow, UserRow)> {
        self.run_mut(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
                    let host_key = new_user(uid)?;
                    tx.execute(
                        "INSERT INTO users (name, uid, host_key, created_at) VALUES (?1, ?2, ?3, ?4)",
                        params![r.user, uid, host_key, r.now],
                    )?;
                    UserRow { name: r.user.to_string(), uid, host_key }
                }
            };
            let fingerprint = host_key_fingerprint(&user.host_key)?;

            let port = choose_port(&tx, r.user, r.port_range, &port_free)?;
            // A failed session's port is free (its container is gone); its record makes way.
            tx.execute(&format!("DELETE FROM sessions WHERE ssh_port = ?1 AND {}", failed_and_cleaned()), [port])?;
            tx.execute("UPDATE users SET last_port = ?2 WHERE name = ?1", params![r.user, port])?;

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
                limits: None,
                failure: None,
                activity: Activity::default(),
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
        })
    }

    /// Runs `f` on the GPU tables in a write transaction, so no reservation runs meanwhile;
    /// what `f` writes is committed only if it succeeds.
    pub fn with_gpu_ledger<T>(&mut self, f: impl FnOnce(&GpuLedger) -> Result<T>) -> Result<T> {
        self.run_mut(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&GpuLedger::new(&tx))?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// Reads the GPU tables as of one moment (a read transaction: it never waits for writers).
    pub fn read_gpu_ledger<T>(&mut self, f: impl FnOnce(&GpuLedger) -> Result<T>) -> Result<T> {
        self.run_mut(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            f(&GpuLedger::new(&tx))
        })
    }

    /// The passwd and group files of an image, if read before.
    pub fn image_accounts(&self, image_id: &str) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.run(|conn| {
            Ok(conn
                .query_row("SELECT passwd, grp FROM image_accounts WHERE image_id = ?1", [image_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?)
        })
    }

    pub fn save_image_accounts(&self, image_id: &str, passwd: &[u8], group: &[u8]) -> Result<()> {
        self.run(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO image_accounts (image_id, passwd, grp) VALUES (?1, ?2, ?3)",
                params![image_id, passwd, group],
            )?;
            Ok(())
        })
    }

    /// Marks a session ready. False if the row vanished meanwhile (removed by `rm` or a reaper).
    pub fn mark_running(&self, id: &str, container_id: &str, container_ip: Option<&str>) -> Result<bool> {
        self.run(|conn| {
            let n = conn.execute(
                "UPDATE sessions SET state = ?4, container_id = ?2, container_ip = ?3 WHERE id = ?1",
                params![id, container_id, container_ip, State::Running.as_str()],
            )?;
            Ok(n == 1)
        })
    }

    /// Records the limits a session's container is created with; false if no such session.
    pub fn set_limits(&self, id: &str, l: &SessionLimits) -> Result<bool> {
        self.run(|conn| {
            let n = conn.execute(
                "UPDATE sessions SET memory_bytes = ?2, nano_cpus = ?3, shm_size_bytes = ?4, pids_limit = ?5,
                                     log_size_bytes = ?6, log_files = ?7, writable_layer_bytes = ?8 WHERE id = ?1",
                params![
                    id,
                    l.memory as i64,
                    l.nano_cpus(),
                    l.shm_size as i64,
                    l.pids,
                    l.log_size as i64,
                    l.log_files,
                    l.writable_layer.map(|b| b as i64)
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Sets a new expiry; false if no such session.
    pub fn set_ttl(&self, id: &str, ttl_minutes: u32, expires_at: i64) -> Result<bool> {
        self.run(|conn| {
            let n = conn.execute(
                "UPDATE sessions SET ttl_minutes = ?2, expires_at = ?3 WHERE id = ?1",
                params![id, ttl_minutes, expires_at],
            )?;
            Ok(n == 1)
        })
    }

    /// Deletes the row; false if another process already did.
    pub fn delete_session(&self, id: &str) -> Result<bool> {
        self.run(|conn| Ok(conn.execute("DELETE FROM sessions WHERE id = ?1", [id])? == 1))
    }

    /// Deletes a running (or failed) session's row if it has expired by `now`; false if it has
    /// not (an extend committed first) or is gone. The check and the delete are one statement, so
    /// an extend is never lost to a reaper that judged an older copy of the row.
    pub fn delete_expired(&self, id: &str, now: i64) -> Result<bool> {
        self.run(|conn| {
            let n = conn.execute(
                "DELETE FROM sessions WHERE id = ?1 AND state IN (?2, ?3) AND expires_at <= ?4",
                params![id, State::Running.as_str(), State::Failed.as_str(), now],
            )?;
            Ok(n == 1)
        })
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
        self.run(|conn| {
            let n = conn
                .execute("DELETE FROM sessions WHERE id = ?1 AND state = ?2", params![id, State::Running.as_str()])?;
            Ok(n == 1)
        })
    }

    /// Records a session's own idle timeout; false if no such session.
    pub fn set_idle_timeout(&self, id: &str, minutes: u32) -> Result<bool> {
        self.run(|conn| {
            Ok(conn.execute("UPDATE sessions SET idle_timeout_minutes = ?2 WHERE id = ?1", params![id, minutes])? == 1)
        })
    }

    /// Records the OOM kills a pass reported for a session; false if it is gone.
    pub fn record_oom_kills(&self, id: &str, seen: u64) -> Result<bool> {
        self.run(|conn| {
            Ok(conn.execute("UPDATE sessions SET oom_kills_seen = ?2 WHERE id = ?1", params![id, seen as i64])? == 1)
        })
    }

    /// Records what a reap pass measured of a running session. The expiry moves only where the
    /// pass bumped it, and only later (an extend committed meanwhile is kept); false if it is
    /// gone or no longer running.
    pub fn record_activity(&self, id: &str, u: &ActivityUpdate) -> Result<bool> {
        self.run(|conn| {
            let n = conn.execute(
                "UPDATE sessions SET last_activity_at = COALESCE(?2, last_activity_at),
                        last_activity_signal = COALESCE(?3, last_activity_signal), cpu_usage_usec = ?4,
                        cpu_sampled_at = ?5, ssh_connections = ?6, gpu_processes = ?7,
                        expires_at = MAX(expires_at, COALESCE(?8, expires_at))
                 WHERE id = ?1 AND state = ?9",
                params![
                    id,
                    u.last_activity_at,
                    u.last_activity_signal,
                    u.cpu_usage_usec.map(|v| v as i64),
                    u.cpu_sampled_at,
                    u.ssh_connections,
                    u.gpu_processes,
                    u.bumped_expiry,
                    State::Running.as_str()
                ],
            )?;
            Ok(n == 1)
        })
    }

    /// Records that the `minutes` warning for `deadline` was given.
    pub fn set_warned(&self, id: &str, deadline: i64, minutes: u32) -> Result<()> {
        self.run(|conn| {
            conn.execute(
                "UPDATE sessions SET warned_deadline = ?2, warned_minutes = ?3 WHERE id = ?1",
                params![id, deadline, minutes],
            )?;
            Ok(())
        })
    }

    /// Records the deadline written into the session's expiry file.
    pub fn set_notice(&self, id: &str, deadline: i64) -> Result<()> {
        self.run(|conn| {
            conn.execute("UPDATE sessions SET notice_deadline = ?2 WHERE id = ?1", params![id, deadline])?;
            Ok(())
        })
    }

    /// Deletes a running session's row if it is still as idle as the pass judged it (no activity
    /// recorded since `last_activity_at`); false if not or gone.
    pub fn delete_idle(&self, id: &str, last_activity_at: Option<i64>) -> Result<bool> {
        self.run(|conn| {
            let n = conn.execute(
                "DELETE FROM sessions WHERE id = ?1 AND state = ?2 AND last_activity_at IS ?3",
                params![id, State::Running.as_str(), last_activity_at],
            )?;
            Ok(n == 1)
        })
    }

    /// The simulated compute processes set on a device (0 when none were set).
    pub fn sim_processes(&self, uuid: &str) -> Result<u32> {
        self.run(|conn| {
            Ok(conn
                .query_row("SELECT processes FROM sim_gpu_processes WHERE uuid = ?1", [uuid], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        })
    }

    /// Sets the simulated compute processes on a device (0 removes the entry).
    pub fn set_sim_processes(&self, uuid: &str, processes: u32) -> Result<()> {
        self.run(|conn| {
            if processes == 0 {
                conn.execute("DELETE FROM sim_gpu_processes WHERE uuid = ?1", [uuid])?;
            } else {
                conn.execute(
                    "INSERT OR REPLACE INTO sim_gpu_processes (uuid, processes) VALUES (?1, ?2)",
                    params![uuid, processes],
                )?;
            }
            Ok(())
        })
    }

    pub fn session(&self, id: &str) -> Result<Option<SessionRow>> {
        self.run(|conn| {
            Ok(conn.query_row(&format!("{SELECT_SESSION} WHERE id = ?1"), [id], session_from_row).optional()?)
        })
    }

    pub fn sessions(&self) -> Result<Vec<SessionRow>> {
        self.run(|conn| {
            let mut stmt = conn.prepare(&format!("{SELECT_SESSION} ORDER BY created_at, id"))?;
            let rows = stmt.query_map([], session_from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Changes whenever the stored sessions may have changed: on commits by other connections
    /// (`data_version`, across processes) and on this connection's own writes (`total_changes`).
    /// Lets a caller cache what it derives from `sessions()`; read it before reading the rows.
    pub fn version(&self) -> Result<Version> {
        self.run(|conn| {
            let data: i64 = conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
            Ok(Version(data, conn.total_changes()))
        })
    }

    pub fn user(&self, name: &str) -> Result<Option<UserRow>> {
        self.run(|conn| query_user(conn, name))
    }

    /// The user's public keys, oldest first.
    pub fn user_keys(&self, user: &str) -> Result<Vec<UserKey>> {
        self.run(|conn| {
            let mut stmt = conn.prepare(
                "SELECT fingerprint, key_line, added_at FROM user_keys WHERE user_name = ?1 ORDER BY added_at, rowid",
            )?;
            let keys = stmt
                .query_map([user], |r| {
                    Ok(UserKey { fingerprint: r.get(0)?, key_line: r.get(1)?, added_at: r.get(2)? })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(keys)
        })
    }

    /// Adds a key; false if the user already has a key with this fingerprint.
    pub fn add_user_key(&self, user: &str, key: &UserKey) -> Result<bool> {
        self.run(|conn| {
            let n = conn.execute(
                "INSERT OR IGNORE INTO user_keys (user_name, fingerprint, key_line, added_at) VALUES (?1, ?2, ?3, ?4)",
                params![user, key.fingerprint, key.key_line, key.added_at],
            )?;
            Ok(n == 1)
        })
    }

    /// Removes a key; false if the user has no key with this fingerprint.
    pub fn remove_user_key(&self, user: &str, fingerprint: &str) -> Result<bool> {
        self.run(|conn| {
            let n = conn.execute(
                "DELETE FROM user_keys WHERE user_name = ?1 AND fingerprint = ?2",
                params![user, fingerprint],
            )?;
            Ok(n == 1)
        })
    }
}

/// The condition for a failed row whose container is gone.
fn failed_and_cleaned() -> String {
    format!("state = '{}' AND container_id IS NULL", State::Failed.as_str())
}

/// A session's port: the user's last one whenever it is free (so their ssh config and
/// known_hosts entries keep working), else the first free port no other user remembers, else
/// (the range is crowded with remembered ports) the first free one.
fn choose_port(
    conn: &Connection,
    user: &str,
    (start, end): (u16, u16),
    port_free: &impl Fn(u16) -> bool,
) -> Result<u16> {
    let used: HashSet<u16> =
        collect(conn, &format!("SELECT ssh_port FROM sessions WHERE NOT ({})", failed_and_cleaned()))?;
    let free = |p: u16| (start..=end).contains(&p) && !used.contains(&p) && port_free(p);
    let last: Option<u16> = conn
        .query_row("SELECT last_port FROM users WHERE name = ?1", [user], |r| r.get::<_, Option<u16>>(0))
        .optional()?
        .flatten();
    if let Some(p) = last.filter(|p| free(*p)) {
        return Ok(p);
    }
    let mut stmt = conn.prepare("SELECT last_port FROM users WHERE name != ?1 AND last_port IS NOT NULL")?;
    let remembered = stmt.query_map([user], |r| r.get::<_, u16>(0))?.collect::<rusqlite::Result<HashSet<u16>>>()?;
    // `port_free` binds a socket: ask it once per candidate, in the order of preference.
    let unremembered = (start..=end).filter(|p| !remembered.contains(p));
    let remembered_in_range = (start..=end).filter(|p| remembered.contains(p));
    unremembered.chain(remembered_in_range).find(|p| free(*p)).ok_or_else(|| {
        Error::Exhausted(format!(
            "no free SSH port in {start}-{end}: widen ssh_port_start/ssh_port_end or remove sessions"
        ))
    })
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

/// SQLite maps the `-shm` file into memory, and a process whose mapping turns out unusable dies
/// of SIGBUS rather than getting an error. So one that is not a plain file, that belongs to
/// another user, or that its owner cannot write (made unwritable on purpose or by mistake) is
/// refused before SQLite sees it, with the fix; root's power to write it anyway is not relied on.
fn check_shared_memory(db: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let shm = format!("{}-shm", db.display());
    let meta = match std::fs::symlink_metadata(&shm) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("inspect the session database's shared-memory file {shm}"), e)),
    };
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    let problem = if !meta.file_type().is_file() {
        "is not a regular file".to_string()
    } else if meta.uid() != euid {
        format!("belongs to uid {}, not to uid {euid} that sandman runs as", meta.uid())
    } else if meta.mode() & 0o600 != 0o600 {
        format!("cannot be read and written by its owner (mode {:o})", meta.mode() & 0o7777)
    } else {
        return Ok(());
    };
    Err(Error::Unavailable(format!(
        "the session database's shared-memory file {shm} {problem}: remove it while no sandman runs \
         (`rm {shm}`); SQLite makes a new one"
    )))
}

/// Whether SQLite failed to set up or grow the shared memory of `db` (its `-shm` file).
fn shared_memory_failed(e: &rusqlite::Error, db: &Path) -> bool {
    use rusqlite::ffi;
    let rusqlite::Error::SqliteFailure(f, _) = e else {
        return false;
    };
    match f.extended_code {
        ffi::SQLITE_IOERR_SHMSIZE
        | ffi::SQLITE_IOERR_SHMOPEN
        | ffi::SQLITE_IOERR_SHMMAP
        | ffi::SQLITE_IOERR_SHMLOCK
        | ffi::SQLITE_READONLY_CANTINIT
        | ffi::SQLITE_READONLY_CANTLOCK
        | ffi::SQLITE_FULL => true,
        // The database itself opened; a -shm file that cannot be opened is the cause.
        ffi::SQLITE_CANTOPEN => Path::new(&format!("{}-shm", db.display())).exists(),
        _ => false,
    }
}

/// Bytes free to an unprivileged writer on the file system holding `dir`, if known.
fn free_space(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct statvfs to fill.
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// A path for an SQLite URI: the characters a URI gives a meaning to, escaped.
fn uri_path(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

const SELECT_SESSION: &str = "SELECT id, user_name, state, ssh_port, container_id, container_ip, image, gpu_uuid,
    mig_profile, ttl_minutes, created_at, expires_at, workspace, host_key_fingerprint,
    memory_bytes, nano_cpus, shm_size_bytes, pids_limit, log_size_bytes, log_files, failure,
    idle_timeout_minutes, last_activity_at, last_activity_signal, cpu_usage_usec, cpu_sampled_at, ssh_connections,
    gpu_processes, warned_deadline, warned_minutes, notice_deadline, oom_kills_seen, writable_layer_bytes FROM sessions";

fn session_from_row(r: &rusqlite::Row) -> rusqlite::Result<SessionRow> {
    let state: String = r.get(2)?;
    let state = state
        .parse()
        .map_err(|e: Error| rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into()))?;
    let layer: Option<i64> = r.get(32)?;
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
        limits: limits_from_row(r, 14)?.map(|l| SessionLimits { writable_layer: layer.map(|v| v as u64), ..l }),
        failure: r.get(20)?,
        activity: Activity {
            idle_timeout_minutes: r.get(21)?,
            last_activity_at: r.get(22)?,
            last_activity_signal: r.get(23)?,
            cpu_usage_usec: r.get::<_, Option<i64>>(24)?.map(|v| v as u64),
            cpu_sampled_at: r.get(25)?,
            ssh_connections: r.get(26)?,
            gpu_processes: r.get(27)?,
            warned_deadline: r.get(28)?,
            warned_minutes: r.get(29)?,
            notice_deadline: r.get(30)?,
            oom_kills_seen: r.get::<_, Option<i64>>(31)?.map(|v| v as u64),
        },
    })
}

/// The limit columns from `first` on; `None` unless all are set.
fn limits_from_row(r: &rusqlite::Row, first: usize) -> rusqlite::Result<Option<SessionLimits>> {
    let memory: Option<i64> = r.get(first)?;
    let nano_cpus: Option<i64> = r.get(first + 1)?;
    let shm: Option<i64> = r.get(first + 2)?;
    let pids: Option<i64> = r.get(first + 3)?;
    let log_size: Option<i64> = r.get(first + 4)?;
    let log_files: Option<u32> = r.get(first + 5)?;
    Ok(match (memory, nano_cpus, shm, pids, log_size, log_files) {
        (Some(memory), Some(nano_cpus), Some(shm), Some(pids), Some(log_size), Some(log_files)) => {
            Some(SessionLimits {
                memory: memory as u64,
                cpus: nano_cpus as f64 / 1e9,
                shm_size: shm as u64,
                pids,
                log_size: log_size as u64,
                log_files,
                writable_layer: None,
            })
        }
        _ => None,
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
            |_| Ok(format!("key-of-{user}")),
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
                |_| panic!("no new key for a known user"),
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
    fn a_user_gets_their_last_port_and_new_users_avoid_remembered_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let port = |row: (SessionRow, UserRow)| row.0.ssh_port;
        assert_eq!(port(reserve(&mut store, "1", "alice", |_| true).unwrap()), 10000);
        store.delete_session("1").unwrap();
        assert_eq!(port(reserve(&mut store, "2", "bob", |_| true).unwrap()), 10001, "alice's port is left to her");
        assert_eq!(port(reserve(&mut store, "3", "alice", |_| true).unwrap()), 10000, "alice's port again");
        // Her port busy on the host: another one, which she then keeps.
        store.delete_session("3").unwrap();
        assert_eq!(port(reserve(&mut store, "4", "alice", |p| p != 10000).unwrap()), 10002);
        store.delete_session("4").unwrap();
        assert_eq!(port(reserve(&mut store, "5", "alice", |_| true).unwrap()), 10002);
        store.delete_session("5").unwrap();
        assert_eq!(port(reserve(&mut store, "6", "carol", |_| true).unwrap()), 10000, "forgotten by alice");
        // Every free port is remembered by someone (carol 10000, alice 10002): a new user still gets one.
        store.delete_session("6").unwrap();
        assert_eq!(port(reserve(&mut store, "7", "dave", |_| true).unwrap()), 10000);
        assert_eq!(port(reserve(&mut store, "8", "alice", |_| true).unwrap()), 10002);
    }

    #[test]
    fn user_keys_are_per_user_and_unique() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let key =
            |fp: &str, at: i64| UserKey { fingerprint: fp.into(), key_line: format!("ssh-ed25519 {fp}"), added_at: at };
        assert!(store.add_user_key("alice", &key("B", 2)).unwrap());
        assert!(store.add_user_key("alice", &key("A", 1)).unwrap());
        assert!(!store.add_user_key("alice", &key("A", 3)).unwrap(), "duplicate fingerprint");
        assert!(store.add_user_key("bob", &key("A", 4)).unwrap(), "the same key for another user");
        assert_eq!(store.user_keys("alice").unwrap(), vec![key("A", 1), key("B", 2)]);
        assert!(store.remove_user_key("alice", "A").unwrap());
        assert!(!store.remove_user_key("alice", "A").unwrap(), "already gone");
        assert_eq!(store.user_keys("alice").unwrap(), vec![key("B", 2)]);
        assert_eq!(store.user_keys("bob").unwrap(), vec![key("A", 4)], "bob's key untouched");
        assert!(store.user_keys("carol").unwrap().is_empty());
    }

    #[test]
    fn failed_gpu_pick_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        let e = store
            .reserve(
                &reservation("1", "alice"),
                |_| Ok("k".into()),
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
    fn limits_are_stored_with_the_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        reserve(&mut store, "1", "alice", |_| true).unwrap();
        assert!(store.session("1").unwrap().unwrap().limits.is_none(), "unset until the create resolves them");
        let limits = SessionLimits {
            memory: 16 << 30,
            cpus: 1.5,
            shm_size: 8 << 30,
            pids: 512,
            log_size: 10 << 20,
            log_files: 3,
            writable_layer: Some(20 << 30),
        };
        assert!(store.set_limits("1", &limits).unwrap());
        assert_eq!(store.session("1").unwrap().unwrap().limits, Some(limits));
        assert!(!store.set_limits("2", &limits).unwrap());
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

    /// Another process's write transaction, held until the returned connection is dropped.
    fn hold_write_lock(path: &Path) -> Connection {
        let other = Connection::open(path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE; UPDATE meta SET value = value WHERE key = 'instance_id';").unwrap();
        other
    }

    #[test]
    fn a_held_write_lock_blocks_neither_opening_nor_reads_and_a_write_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let mut store = Store::open(&path).unwrap();
        store
            .reserve(&reservation("1", "alice"), |_| Ok("k".into()), |k| Ok(k.into()), |_| true, |_, _| Ok(None))
            .unwrap();
        let _holder = hold_write_lock(&path);

        // Opening a current schema writes nothing, so it does not wait for the lock.
        let started = std::time::Instant::now();
        let reader = Store::open_reader(&path).unwrap();
        let opened = Store::open(&path).unwrap();
        assert_eq!(reader.sessions().unwrap().len(), 1);
        assert!(reader.session("1").unwrap().is_some());
        reader.version().unwrap();
        assert!(started.elapsed() < Duration::from_millis(500), "reads waited {:?}", started.elapsed());

        let started = std::time::Instant::now();
        let e = opened.set_ttl("1", 5, 2000).unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= WRITE_LOCK_WAIT - Duration::from_millis(100) && waited < WRITE_LOCK_WAIT * 2, "{waited:?}");
        assert_eq!(e.kind(), crate::error::ErrorKind::Unavailable, "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&path.display().to_string()) && text.contains("another process holds its write lock"),
            "{text}"
        );
    }

    #[test]
    fn an_unwritable_shared_memory_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        store.sessions().unwrap();
        let shm = dir.path().join("s.db-shm");
        std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o000)).unwrap();
        for e in [Store::open(&path).err().unwrap(), Store::open_reader(&path).err().unwrap()] {
            assert_eq!(e.kind(), crate::error::ErrorKind::Unavailable, "{e}");
            let text = e.to_string();
            assert!(
                text.contains(&format!("{} cannot be read and written by its owner (mode 0)", shm.display())),
                "{text}"
            );
            assert!(text.contains(&format!("`rm {}`", shm.display())), "{text}");
        }
        // The connection already open goes on working.
        assert!(store.sessions().unwrap().is_empty());
        std::fs::set_permissions(&shm, std::fs::Permissions::from_mode(0o600)).unwrap();
        Store::open(&path).unwrap();
    }

    #[test]
    fn sessions_of_version_7_migrate_with_no_activity_and_then_record_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = Connection::open(&path).unwrap();
        for step in &SCHEMA[..7] {
            conn.execute_batch(step).unwrap();
        }
        conn.execute_batch(
            "PRAGMA user_version = 7;
             INSERT INTO meta (key, value) VALUES ('instance_id', 'old');
             INSERT INTO users (name, uid, host_key, created_at) VALUES ('alice', 20000, 'k', 1);
             INSERT INTO sessions (id, user_name, state, ssh_port, image, ttl_minutes, created_at, expires_at,
                                   workspace, host_key_fingerprint)
                VALUES ('1', 'alice', 'running', 10000, 'img', 60, 1000, 4600, '/w', 'fp');",
        )
        .unwrap();
        drop(conn);
        let store = Store::open(&path).unwrap();
        let row = store.session("1").unwrap().unwrap();
        assert_eq!(row.activity, Activity::default(), "nothing recorded yet");
        assert_eq!(row.activity.since(row.created_at), 1000, "idle since its creation");
        let update = ActivityUpdate {
            last_activity_at: Some(2000),
            last_activity_signal: Some("ssh".into()),
            cpu_usage_usec: Some(7),
            cpu_sampled_at: 2000,
            ssh_connections: Some(1),
            gpu_processes: None,
            bumped_expiry: Some(3000),
        };
        assert!(store.record_activity("1", &update).unwrap());
        let a = store.session("1").unwrap().unwrap();
        assert_eq!(a.expires_at, 4600, "the expiry never moves earlier");
        assert_eq!((a.activity.last_activity_at, a.activity.ssh_connections), (Some(2000), Some(1)));
        let bumped =
            ActivityUpdate { last_activity_at: None, last_activity_signal: None, bumped_expiry: Some(5000), ..update };
        assert!(store.record_activity("1", &bumped).unwrap());
        let a = store.session("1").unwrap().unwrap();
        assert_eq!((a.expires_at, a.activity.last_activity_signal.as_deref()), (5000, Some("ssh")), "kept");
        // A pass that did not move the expiry keeps one set meanwhile, even an earlier one.
        store.run(|c| Ok(c.execute("UPDATE sessions SET expires_at = 1500 WHERE id = '1'", [])?)).unwrap();
        let quiet = ActivityUpdate { bumped_expiry: None, ..bumped };
        assert!(store.record_activity("1", &quiet).unwrap());
        assert_eq!(store.session("1").unwrap().unwrap().expires_at, 1500);
        assert!(!store.delete_idle("1", None).unwrap(), "activity recorded since: not idle");
        assert!(store.delete_idle("1", Some(2000)).unwrap());
        store.set_sim_processes("MIG-x", 2).unwrap();
        assert_eq!((store.sim_processes("MIG-x").unwrap(), store.sim_processes("MIG-y").unwrap()), (2, 0));
        store.set_sim_processes("MIG-x", 0).unwrap();
        assert_eq!(store.sim_processes("MIG-x").unwrap(), 0);
    }

    #[test]
    fn the_reader_does_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        Store::open(&path).unwrap();
        let reader = Store::open_reader(&path).unwrap();
        let e = reader.delete_session("1").unwrap_err();
        assert!(format!("{e:#}").contains("readonly") || e.to_string().contains("read-only"), "{e:#}");
    }
}
