//! The GPU side of the store: the MIG instances sandman created on real GPUs (so it never destroys
//! anyone else's) and the simulated GPUs. Backends reach these tables only through a `GpuLedger`
//! on the caller's transaction, so what a pick, release or reconcile records commits or rolls back
//! together with the session rows it belongs to, under the same write lock.
//!
//! Earlier versions kept both in JSON files beside the database (`nvml-created.json`,
//! `gpu-sim-state.json`, each with its own lock file); the migration that made these tables
//! imports them once and renames them to `*.imported`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Schema version 3.
pub(super) const SCHEMA: &str = "
    CREATE TABLE gpu_created (
        mig_uuid TEXT PRIMARY KEY,
        gpu_uuid TEXT NOT NULL,
        gpu_instance_id INTEGER NOT NULL);
    CREATE TABLE sim_gpus (
        position INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        model TEXT NOT NULL,
        mig INTEGER NOT NULL);
    CREATE TABLE sim_instances (
        uuid TEXT PRIMARY KEY,
        gpu_uuid TEXT NOT NULL REFERENCES sim_gpus(uuid),
        position INTEGER NOT NULL,
        profile TEXT NOT NULL,
        start INTEGER NOT NULL,
        gpu_instance_id INTEGER NOT NULL,
        compute_instance_id INTEGER NOT NULL,
        created_by_sandman INTEGER NOT NULL);";

/// The `meta` key holding the description the simulated GPUs were built from.
const SIM_SOURCE_KEY: &str = "gpu_sim_source";

/// Schema version 4: what identifies a GPU instance sandman created beyond its id, which NVML
/// reuses from small per-profile pools and which a reboot (or a MIG manager re-applying a
/// layout) hands to someone else's instance. Entries from version 3 keep NULLs there.
pub(super) const SCHEMA_IDENTITY: &str = "
    CREATE TABLE gpu_created_v4 (
        gpu_uuid TEXT NOT NULL,
        gpu_instance_id INTEGER NOT NULL,
        boot_id TEXT,
        profile_id INTEGER,
        profile TEXT,
        placement_start INTEGER,
        placement_size INTEGER,
        mig_uuid TEXT UNIQUE,
        UNIQUE (gpu_uuid, gpu_instance_id, boot_id));
    INSERT INTO gpu_created_v4 (gpu_uuid, gpu_instance_id, mig_uuid)
        SELECT gpu_uuid, gpu_instance_id, mig_uuid FROM gpu_created ORDER BY rowid;
    DROP TABLE gpu_created;
    ALTER TABLE gpu_created_v4 RENAME TO gpu_created;";

/// One GPU instance sandman created on a real GPU. Recorded as soon as the GPU instance exists
/// (before its compute instance and MIG UUID), so nothing it made goes unrecorded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CreatedInstance {
    pub gpu_uuid: String,
    pub gpu_instance_id: u32,
    /// `None` until the compute instance exists.
    pub mig_uuid: Option<String>,
    /// `/proc/sys/kernel/random/boot_id` when it was created: instances do not survive a reboot,
    /// so an entry from another boot names nothing of sandman's. `None`: recorded by a version
    /// that did not keep it, so it can never be proven to be sandman's.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// `nvmlGpuInstanceProfileInfo_t.id` and the profile's name.
    #[serde(default)]
    pub profile_id: Option<u32>,
    #[serde(default)]
    pub profile: Option<String>,
    /// (first memory slice, size).
    #[serde(default)]
    pub placement: Option<(u32, u32)>,
}

/// The simulated GPUs: UUIDs, instances and who made them. (Deserialize: the old state file.)
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SimState {
    /// The description (`gpu_sim_file`) this state was built from; a changed file starts afresh.
    pub source: String,
    pub gpus: Vec<SimGpu>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SimGpu {
    pub uuid: String,
    pub model: String,
    pub mig: bool,
    pub instances: Vec<SimInstance>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SimInstance {
    pub uuid: String,
    pub profile: String,
    pub start: u32,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
    pub created_by_sandman: bool,
}

/// The GPU tables, seen through one open transaction of the store.
pub struct GpuLedger<'c> {
    conn: &'c Connection,
}

impl<'c> GpuLedger<'c> {
    pub(super) fn new(conn: &'c Connection) -> GpuLedger<'c> {
        GpuLedger { conn }
    }

    /// The GPU UUIDs sessions hold.
    pub fn held(&self) -> Result<HashSet<String>> {
        super::collect(self.conn, "SELECT gpu_uuid FROM sessions WHERE gpu_uuid IS NOT NULL")
    }

    /// The instances sandman created on real GPUs, oldest first.
    pub fn created(&self) -> Result<Vec<CreatedInstance>> {
        let mut stmt = self.conn.prepare(
            "SELECT gpu_uuid, gpu_instance_id, mig_uuid, boot_id, profile_id, profile, placement_start, placement_size
             FROM gpu_created ORDER BY rowid",
        )?;
        let rows = stmt
            .query_map([], |r| {
                let start: Option<u32> = r.get(6)?;
                let size: Option<u32> = r.get(7)?;
                Ok(CreatedInstance {
                    gpu_uuid: r.get(0)?,
                    gpu_instance_id: r.get(1)?,
                    mig_uuid: r.get(2)?,
                    boot_id: r.get(3)?,
                    profile_id: r.get(4)?,
                    profile: r.get(5)?,
                    placement: start.zip(size),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn record_created(&self, c: &CreatedInstance) -> Result<()> {
        // The same GPU instance id in the same boot, or a MIG UUID seen again (the driver derives
        // them from the ids), is a new instance where an old entry's was destroyed: it replaces it.
        self.conn.execute(
            "INSERT OR REPLACE INTO gpu_created
                (gpu_uuid, gpu_instance_id, mig_uuid, boot_id, profile_id, profile, placement_start, placement_size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                c.gpu_uuid,
                c.gpu_instance_id,
                c.mig_uuid,
                c.boot_id,
                c.profile_id,
                c.profile,
                c.placement.map(|p| p.0),
                c.placement.map(|p| p.1)
            ],
        )?;
        Ok(())
    }

    /// Removes the entry of `c`'s GPU instance (of `c`'s boot).
    pub fn forget_created(&self, c: &CreatedInstance) -> Result<()> {
        self.conn.execute(
            "DELETE FROM gpu_created WHERE gpu_uuid = ?1 AND gpu_instance_id = ?2 AND boot_id IS ?3",
            params![c.gpu_uuid, c.gpu_instance_id, c.boot_id],
        )?;
        Ok(())
    }

    /// The simulated GPUs, if a simulator has ever run on this database.
    pub fn sim_state(&self) -> Result<Option<SimState>> {
        let source: Option<String> =
            self.conn.query_row("SELECT value FROM meta WHERE key = ?1", [SIM_SOURCE_KEY], |r| r.get(0)).optional()?;
        let Some(source) = source else { return Ok(None) };
        let mut gpus: Vec<SimGpu> = {
            let mut stmt = self.conn.prepare("SELECT uuid, model, mig FROM sim_gpus ORDER BY position")?;
            stmt.query_map([], |r| {
                Ok(SimGpu { uuid: r.get(0)?, model: r.get(1)?, mig: r.get(2)?, instances: Vec::new() })
            })?
            .collect::<rusqlite::Result<_>>()?
        };
        let mut stmt = self.conn.prepare(
            "SELECT gpu_uuid, uuid, profile, start, gpu_instance_id, compute_instance_id, created_by_sandman
             FROM sim_instances ORDER BY position",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let gpu: String = r.get(0)?;
            let instance = SimInstance {
                uuid: r.get(1)?,
                profile: r.get(2)?,
                start: r.get(3)?,
                gpu_instance_id: r.get(4)?,
                compute_instance_id: r.get(5)?,
                created_by_sandman: r.get(6)?,
            };
            // The foreign key guarantees the GPU row.
            if let Some(g) = gpus.iter_mut().find(|g| g.uuid == gpu) {
                g.instances.push(instance);
            }
        }
        Ok(Some(SimState { source, gpus }))
    }

    /// Replaces the simulated GPUs with `state` (a few rows: rewritten whole).
    pub fn save_sim_state(&self, state: &SimState) -> Result<()> {
        self.conn.execute_batch("DELETE FROM sim_instances; DELETE FROM sim_gpus;")?;
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![SIM_SOURCE_KEY, state.source],
        )?;
        let mut position = 0i64;
        for (index, g) in (0i64..).zip(&state.gpus) {
            self.conn.execute(
                "INSERT INTO sim_gpus (position, uuid, model, mig) VALUES (?1, ?2, ?3, ?4)",
                params![index, g.uuid, g.model, g.mig],
            )?;
            for i in &g.instances {
                self.conn.execute(
                    "INSERT INTO sim_instances (uuid, gpu_uuid, position, profile, start, gpu_instance_id,
                                                compute_instance_id, created_by_sandman)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        i.uuid,
                        g.uuid,
                        position,
                        i.profile,
                        i.start,
                        i.gpu_instance_id,
                        i.compute_instance_id,
                        i.created_by_sandman
                    ],
                )?;
                position += 1;
            }
        }
        Ok(())
    }
}

/// The state files of versions before the GPU tables, beside the database.
const NVML_LEDGER_FILE: &str = "nvml-created.json";
const SIM_STATE_FILE: &str = "gpu-sim-state.json";
/// Their lock files, which nothing takes any more.
const OLD_LOCK_FILES: &[&str] = &["nvml-created.lock", "locks/gpu-sim.lock"];

/// Imports the JSON state files found in `state_dir` into the GPU tables (inside the migration's
/// transaction); returns the files imported, for `retire_imported` once that has committed.
pub(super) fn import_files(conn: &Connection, state_dir: &Path) -> Result<Vec<PathBuf>> {
    let ledger = GpuLedger::new(conn);
    let mut imported = Vec::new();
    let ledger_file = state_dir.join(NVML_LEDGER_FILE);
    if let Some(created) = read_json::<Vec<CreatedInstance>>(&ledger_file)? {
        for c in &created {
            ledger.record_created(c)?;
        }
        tracing::info!(file = %ledger_file.display(), instances = created.len(), "MIG instance ledger imported into the database");
        imported.push(ledger_file);
    }
    let sim_file = state_dir.join(SIM_STATE_FILE);
    if let Some(state) = read_json::<SimState>(&sim_file)? {
        ledger.save_sim_state(&state)?;
        tracing::info!(file = %sim_file.display(), "simulated GPU state imported into the database");
        imported.push(sim_file);
    }
    Ok(imported)
}

/// Renames imported files to `*.imported` (kept, never deleted) and removes the old lock files.
/// Best effort: the data is in the database already and is never imported twice.
pub(super) fn retire_imported(state_dir: &Path, imported: &[PathBuf]) {
    for file in imported {
        let mut renamed = file.clone().into_os_string();
        renamed.push(".imported");
        if let Err(e) = std::fs::rename(file, &renamed) {
            tracing::warn!(file = %file.display(), error = %e, "imported into the database but could not be renamed; it is no longer read");
        }
    }
    for lock in OLD_LOCK_FILES {
        let _ = std::fs::remove_file(state_dir.join(lock));
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())).into()),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        Error::Unavailable(format!(
            "{} cannot be imported into the database ({e}): repair it, or move it aside to start without it",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// An entry as version 3 recorded it.
    fn created(n: u32) -> CreatedInstance {
        CreatedInstance {
            gpu_uuid: "GPU-a".into(),
            gpu_instance_id: n,
            mig_uuid: Some(format!("MIG-{n}")),
            boot_id: None,
            profile_id: None,
            profile: None,
            placement: None,
        }
    }

    fn sim_state() -> SimState {
        let instance = |uuid: &str, start, by_sandman| SimInstance {
            uuid: uuid.into(),
            profile: "3g.20gb".into(),
            start,
            gpu_instance_id: 1 + start,
            compute_instance_id: 0,
            created_by_sandman: by_sandman,
        };
        SimState {
            source: "[[gpu]]\nmodel = \"NVIDIA A100-SXM4-40GB\"\n".into(),
            gpus: vec![
                SimGpu {
                    uuid: "GPU-b".into(),
                    model: "NVIDIA A100-SXM4-40GB".into(),
                    mig: true,
                    instances: vec![instance("MIG-z", 4, false), instance("MIG-a", 0, true)],
                },
                SimGpu { uuid: "GPU-a".into(), model: "NVIDIA H200".into(), mig: false, instances: Vec::new() },
            ],
        }
    }

    #[test]
    fn ledger_and_simulator_state_round_trip_and_roll_back_with_their_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(store.read_gpu_ledger(|l| l.sim_state()).unwrap(), None);
        store
            .with_gpu_ledger(|l| {
                l.record_created(&created(1))?;
                l.record_created(&created(2))?;
                l.forget_created(&created(1))?;
                l.save_sim_state(&sim_state())
            })
            .unwrap();
        assert_eq!(store.read_gpu_ledger(|l| l.created()).unwrap(), vec![created(2)]);
        // Order is kept as written, not sorted by UUID.
        assert_eq!(store.read_gpu_ledger(|l| l.sim_state()).unwrap(), Some(sim_state()));

        // A failure later in the same transaction undoes the ledger's writes too.
        let e = store
            .with_gpu_ledger(|l| -> Result<()> {
                l.record_created(&created(3))?;
                l.save_sim_state(&SimState { source: "other".into(), gpus: Vec::new() })?;
                Err(Error::Exhausted("a later step failed".into()))
            })
            .unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)));
        assert_eq!(store.read_gpu_ledger(|l| l.created()).unwrap(), vec![created(2)]);
        assert_eq!(store.read_gpu_ledger(|l| l.sim_state()).unwrap(), Some(sim_state()));

        // Another connection (another process) sees the committed state.
        let mut other = Store::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(other.read_gpu_ledger(|l| l.sim_state()).unwrap(), Some(sim_state()));
    }

    #[test]
    fn version_3_entries_migrate_and_identities_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sandman.db");
        {
            let conn = Connection::open(&db).unwrap();
            for step in &crate::store::SCHEMA[..3] {
                conn.execute_batch(step).unwrap();
            }
            conn.pragma_update(None, "user_version", 3).unwrap();
            conn.execute("INSERT INTO gpu_created VALUES ('MIG-2', 'GPU-a', 2), ('MIG-1', 'GPU-a', 1)", []).unwrap();
        }
        let mut store = Store::open(&db).unwrap();
        // Kept in their order, with no identity: they can never be proven to be sandman's.
        assert_eq!(store.read_gpu_ledger(|l| l.created()).unwrap(), vec![created(2), created(1)]);
        let full = CreatedInstance {
            mig_uuid: None,
            boot_id: Some("boot-1".into()),
            profile_id: Some(9),
            profile: Some("3g.20gb".into()),
            placement: Some((4, 4)),
            ..created(1)
        };
        store
            .with_gpu_ledger(|l| {
                l.record_created(&full)?;
                // The MIG UUID arrives once the compute instance exists: the same GPU instance.
                l.record_created(&CreatedInstance { mig_uuid: Some("MIG-new".into()), ..full.clone() })
            })
            .unwrap();
        let entries = store.read_gpu_ledger(|l| l.created()).unwrap();
        let with_uuid = CreatedInstance { mig_uuid: Some("MIG-new".into()), ..full.clone() };
        assert_eq!(entries, vec![created(2), created(1), with_uuid.clone()]);
        // Forgetting one boot's entry leaves the same GPU instance id of another boot alone.
        store.with_gpu_ledger(|l| l.forget_created(&with_uuid)).unwrap();
        assert_eq!(store.read_gpu_ledger(|l| l.created()).unwrap(), vec![created(2), created(1)]);
    }

    /// A database of schema version 2, as the release before the GPU tables left it.
    fn version_2_database(path: &Path) {
        let conn = Connection::open(path).unwrap();
        for step in &crate::store::SCHEMA[..2] {
            conn.execute_batch(step).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
    }

    #[test]
    fn the_old_json_files_are_imported_once_and_kept_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path();
        let db = state_dir.join("sandman.db");
        version_2_database(&db);
        std::fs::write(
            state_dir.join(NVML_LEDGER_FILE),
            r#"[{"gpu_uuid": "GPU-a", "gpu_instance_id": 1, "mig_uuid": "MIG-1"},
                {"gpu_uuid": "GPU-a", "gpu_instance_id": 2, "mig_uuid": "MIG-2"}]"#,
        )
        .unwrap();
        std::fs::write(
            state_dir.join(SIM_STATE_FILE),
            r#"{"source": "[[gpu]]\nmodel = \"NVIDIA A100-SXM4-40GB\"\n", "gpus": [
                 {"uuid": "GPU-b", "model": "NVIDIA A100-SXM4-40GB", "mig": true, "instances": [
                   {"uuid": "MIG-z", "profile": "3g.20gb", "start": 4, "gpu_instance_id": 5,
                    "compute_instance_id": 0, "created_by_sandman": false},
                   {"uuid": "MIG-a", "profile": "3g.20gb", "start": 0, "gpu_instance_id": 1,
                    "compute_instance_id": 0, "created_by_sandman": true}]},
                 {"uuid": "GPU-a", "model": "NVIDIA H200", "mig": false, "instances": []}]}"#,
        )
        .unwrap();
        std::fs::write(state_dir.join("nvml-created.lock"), "").unwrap();
        std::fs::create_dir(state_dir.join("locks")).unwrap();
        std::fs::write(state_dir.join("locks/gpu-sim.lock"), "").unwrap();

        let mut store = Store::open(&db).unwrap();
        assert_eq!(store.read_gpu_ledger(|l| l.created()).unwrap(), vec![created(1), created(2)]);
        assert_eq!(store.read_gpu_ledger(|l| l.sim_state()).unwrap(), Some(sim_state()));
        for (file, renamed) in
            [("nvml-created.json", "nvml-created.json.imported"), ("gpu-sim-state.json", "gpu-sim-state.json.imported")]
        {
            assert!(!state_dir.join(file).exists(), "{file} is no longer read");
            assert!(state_dir.join(renamed).exists(), "{renamed} keeps the data");
        }
        assert!(!state_dir.join("nvml-created.lock").exists() && !state_dir.join("locks/gpu-sim.lock").exists());

        // Once: a file that appears later is not imported on the next open.
        store.with_gpu_ledger(|l| l.forget_created(&created(1))).unwrap();
        std::fs::copy(state_dir.join("nvml-created.json.imported"), state_dir.join(NVML_LEDGER_FILE)).unwrap();
        let mut again = Store::open(&db).unwrap();
        assert_eq!(again.read_gpu_ledger(|l| l.created()).unwrap(), vec![created(2)]);
        assert!(state_dir.join(NVML_LEDGER_FILE).exists(), "left alone");
    }

    #[test]
    fn a_corrupt_old_file_stops_the_upgrade_with_its_name_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sandman.db");
        version_2_database(&db);
        std::fs::write(dir.path().join(NVML_LEDGER_FILE), "[{").unwrap();
        let e = Store::open(&db).err().unwrap();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        assert!(
            e.to_string().contains("nvml-created.json cannot be imported") && e.to_string().contains("move it aside")
        );
        // Nothing half-done: still version 2, and the file is where it was.
        let conn = Connection::open(&db).unwrap();
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(version, 2);
        assert!(dir.path().join(NVML_LEDGER_FILE).exists());
    }
}
