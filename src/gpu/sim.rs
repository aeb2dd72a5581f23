//! The simulated backend: GPUs described in a TOML file, with MIG geometry from sandman's
//! catalog. Its state (UUIDs, instances, who made them) lives in the session database, so every
//! sandman process on the host that uses that database shares it, changes it in the same
//! transactions as the sessions, and it survives restarts.
//!
//! ```toml
//! [[gpu]]
//! model = "NVIDIA A100-SXM4-40GB"   # an NVML device name
//! mig = true
//! instances = ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]   # made at start-up
//! ```

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;

use anyhow::anyhow;
use serde::Deserialize;

use super::allocate::{self, GpuState, InstanceState};
use super::catalog::{self, Model, Profile};
use super::placement::{self, Layout, Placed};
use super::{GpuAccess, GpuBackend, GpuDevice, GpuRequest, MigInstance, ProfileInfo};
use crate::error::{Error, Result};
use crate::store::{GpuLedger, GpuPick, SimGpu as StateGpu, SimInstance as StateInstance, SimState as State, Store};

const MIB: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimFile {
    #[serde(default)]
    gpu: Vec<SimGpu>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimGpu {
    model: String,
    #[serde(default = "yes")]
    mig: bool,
    #[serde(default)]
    instances: Vec<String>,
    /// A fixed GPU UUID; otherwise one is made up once and kept in the state.
    uuid: Option<String>,
}

fn yes() -> bool {
    true
}

pub struct SimBackend {
    /// Its own connection, for reads outside any transaction of the caller's.
    db: Mutex<Store>,
    default_profile: String,
    dynamic: bool,
}

impl SimBackend {
    /// Reads the description `file`; the state already in the database `db` is kept while the
    /// description is unchanged.
    pub fn open(file: &Path, db: &Path, default_profile: &str, dynamic: bool) -> Result<SimBackend> {
        let source = std::fs::read_to_string(file)
            .map_err(|e| Error::invalid("gpu_sim_file", format!("cannot read {}: {e}", file.display())))?;
        let described: SimFile = toml::from_str(&source)
            .map_err(|e| Error::invalid("gpu_sim_file", format!("{}: {}", file.display(), e.message())))?;
        let mut store = Store::open(db)?;
        // Read first: the write lock is only needed when the description changed.
        let unchanged = |state: Option<State>| state.is_some_and(|s| s.source == source);
        if !unchanged(store.read_gpu_ledger(|ledger| ledger.sim_state())?) {
            // Looked at again under the write lock: another process may have just built it.
            store.with_gpu_ledger(|ledger| match ledger.sim_state()? {
                Some(state) if state.source == source => Ok(()),
                previous => {
                    if previous.is_some() {
                        tracing::warn!(file = %file.display(), "simulated GPUs changed; starting from the new description");
                    }
                    ledger.save_sim_state(&build(&described, source, file)?)
                }
            })?;
        }
        Ok(SimBackend { db: Mutex::new(store), default_profile: default_profile.to_string(), dynamic })
    }

    fn snapshot(&self) -> Result<State> {
        let mut db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        db.read_gpu_ledger(state_in)
    }

    /// Reads, changes and writes the state in the caller's transaction.
    fn update<T>(ledger: &GpuLedger, change: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut state = state_in(ledger)?;
        let out = change(&mut state)?;
        ledger.save_sim_state(&state)?;
        Ok(out)
    }

    /// Removes sandman-made instances that `doomed` picks; returns their UUIDs.
    fn destroy_where(ledger: &GpuLedger, doomed: impl Fn(&StateInstance) -> bool) -> Result<Vec<String>> {
        Self::update(ledger, |state| {
            let mut gone = Vec::new();
            for g in &mut state.gpus {
                g.instances.retain(|i| {
                    let drop = i.created_by_sandman && doomed(i);
                    if drop {
                        gone.push(i.uuid.clone());
                    }
                    !drop
                });
            }
            Ok(gone)
        })
    }
}

fn state_in(ledger: &GpuLedger) -> Result<State> {
    ledger.sim_state()?.ok_or_else(|| Error::Internal(anyhow!("simulated GPU state is missing from the database")))
}

fn model_of(name: &str) -> Result<&'static Model> {
    catalog::model(name).ok_or_else(|| Error::Internal(anyhow!("simulated GPU model {name:?} is unknown")))
}

/// A fresh state: UUIDs for every GPU and instance, instances placed with sandman's policy.
fn build(described: &SimFile, source: String, file: &Path) -> Result<State> {
    let mut gpus = Vec::new();
    for (index, g) in described.gpu.iter().enumerate() {
        let model = catalog::model(&g.model).ok_or_else(|| {
            Error::invalid(
                "gpu_sim_file",
                format!(
                    "{}: GPU {index} has unknown model {:?}; known: {}",
                    file.display(),
                    g.model,
                    catalog::model_names()
                ),
            )
        })?;
        let mut gpu = StateGpu {
            uuid: g.uuid.clone().unwrap_or_else(|| format!("GPU-{}", uuid::Uuid::new_v4())),
            model: model.name.to_string(),
            mig: g.mig,
            instances: Vec::new(),
        };
        if !g.mig && !g.instances.is_empty() {
            return Err(Error::invalid(
                "gpu_sim_file",
                format!("{}: GPU {index} lists instances but has mig = false", file.display()),
            ));
        }
        let mut profiles = Vec::new();
        for name in &g.instances {
            let p = model.resolve(name).map_err(|e| {
                Error::invalid("gpu_sim_file", format!("{}: GPU {index}: instance {name:?}: {e}", file.display()))
            })?;
            profiles.push(p);
        }
        let layout = place_all(model, &profiles).map_err(|p| {
            Error::invalid(
                "gpu_sim_file",
                format!("{}: GPU {index}: instance {:?} does not fit beside the others", file.display(), p.name),
            )
        })?;
        for placed in layout.placed {
            let made = new_instance(&gpu, placed.profile.name, placed.start, placed.profile.memory_slices, false);
            gpu.instances.push(made);
        }
        gpus.push(gpu);
    }
    Ok(State { source, gpus })
}

/// Places start-up instances largest first, with sandman's policy: a real driver refuses some
/// orders (mig-notes 2.6), a description should not depend on them. Err names one that does not fit.
fn place_all(model: &'static Model, profiles: &[&'static Profile]) -> std::result::Result<Layout, &'static Profile> {
    let mut sorted = profiles.to_vec();
    sorted.sort_by_key(|p| std::cmp::Reverse((p.memory_slices, p.compute_slices)));
    let mut layout = Layout::new(model);
    for p in sorted {
        let c = placement::choose(std::slice::from_ref(&layout), p.name).ok_or(p)?;
        layout.placed.push(Placed { profile: c.profile, start: c.start });
    }
    Ok(layout)
}

/// A MIG device as NVML would show it: a v5-style `MIG-` UUID and the GPU instance id range the
/// driver uses for that size (7g: 0; 4 memory slices: 1-2; 2: 3-6; 1: 7-14).
fn new_instance(gpu: &StateGpu, profile: &str, start: u32, memory_slices: u32, by_sandman: bool) -> StateInstance {
    let ids = match memory_slices {
        8 => 0..=0,
        4 => 1..=2,
        2 => 3..=6,
        _ => 7..=14,
    };
    let used: HashSet<u32> = gpu.instances.iter().map(|i| i.gpu_instance_id).collect();
    let gpu_instance_id = ids.clone().find(|id| !used.contains(id)).unwrap_or(*ids.start());
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x50;
    StateInstance {
        uuid: format!("MIG-{}", uuid::Uuid::from_bytes(bytes)),
        profile: profile.to_string(),
        start,
        gpu_instance_id,
        compute_instance_id: 0,
        created_by_sandman: by_sandman,
    }
}

fn states(state: &State) -> Result<Vec<GpuState>> {
    state
        .gpus
        .iter()
        .map(|g| {
            Ok(GpuState {
                uuid: g.uuid.clone(),
                name: g.model.clone(),
                model: Some(model_of(&g.model)?),
                mig_enabled: g.mig,
                instances: g
                    .instances
                    .iter()
                    .map(|i| InstanceState { uuid: i.uuid.clone(), profile: i.profile.clone(), start: i.start })
                    .collect(),
                // Simulated instances always have their compute instance.
                occupied_only: Vec::new(),
            })
        })
        .collect()
}

impl GpuBackend for SimBackend {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn devices(&self) -> Result<Vec<GpuDevice>> {
        let state = self.snapshot()?;
        state
            .gpus
            .iter()
            .map(|g| {
                let model = model_of(&g.model)?;
                let total = model.total_memory_mib * MIB;
                Ok(GpuDevice {
                    uuid: g.uuid.clone(),
                    name: g.model.clone(),
                    memory_total: total,
                    memory_free: total,
                    memory_used: 0,
                    utilization: Some(0),
                    temperature: Some(30),
                    power_usage: None,
                    power_limit: None,
                    mig_enabled: g.mig,
                    mig_instances: g
                        .instances
                        .iter()
                        .map(|i| {
                            let p = model.profile(&i.profile);
                            MigInstance {
                                uuid: i.uuid.clone(),
                                profile: i.profile.clone(),
                                memory: p.map(|p| p.memory_mib * MIB).unwrap_or(0),
                                compute_slices: p.map(|p| p.compute_slices).unwrap_or(0),
                                memory_slices: p.map(|p| p.memory_slices).unwrap_or(0),
                                parent_gpu: g.uuid.clone(),
                                gpu_instance_id: i.gpu_instance_id,
                                compute_instance_id: i.compute_instance_id,
                                placement_start: i.start,
                                created_by_sandman: i.created_by_sandman,
                                allocated: false,
                            }
                        })
                        .collect(),
                })
            })
            .collect()
    }

    fn profiles(&self) -> Result<Vec<ProfileInfo>> {
        let state = self.snapshot()?;
        let models = state.gpus.iter().filter(|g| g.mig).map(|g| model_of(&g.model)).collect::<Result<Vec<_>>>()?;
        Ok(super::catalog_profiles(models.into_iter()))
    }

    fn pick(&self, request: &GpuRequest, taken: &HashSet<String>, ledger: &GpuLedger) -> Result<Option<GpuPick>> {
        Self::update(ledger, |state| {
            let plan = allocate::plan(&states(state)?, request, taken, &self.default_profile, self.dynamic)?;
            plan.into_pick(|gpu, profile, start| {
                let g = &mut state.gpus[gpu];
                let made = new_instance(g, profile.name, start, profile.memory_slices, true);
                let uuid = made.uuid.clone();
                g.instances.push(made);
                tracing::info!(gpu = %g.uuid, mig = %uuid, profile = profile.name, start, "simulated MIG instance created");
                Ok(Some(uuid))
            })
        })
    }

    fn release(&self, uuid: &str, ledger: &GpuLedger) -> Result<()> {
        Self::destroy_where(ledger, |i| i.uuid == uuid).map(drop)
    }

    fn reconcile(&self, owned: &HashSet<String>, ledger: &GpuLedger) -> Result<Vec<String>> {
        Self::destroy_where(ledger, |i| !owned.contains(&i.uuid))
    }

    fn access(&self, uuid: &str) -> GpuAccess {
        GpuAccess::EnvOnly(uuid.to_string())
    }

    /// What `sandman gpu sim-busy` set for the device (0 unless set).
    fn compute_processes(&self, uuid: &str) -> Result<Option<u32>> {
        let db = self.db.lock().unwrap_or_else(|p| p.into_inner());
        db.sim_processes(uuid).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(dir: &Path, sim: &str, dynamic: bool) -> Result<SimBackend> {
        let file = dir.join("gpus.toml");
        std::fs::write(&file, sim).unwrap();
        SimBackend::open(&file, &dir.join("sandman.db"), "3g.20gb", dynamic)
    }

    /// Runs `f` in a write transaction on the simulator's database, as the store does.
    fn in_tx<T>(sim: &SimBackend, f: impl FnOnce(&GpuLedger) -> Result<T>) -> Result<T> {
        sim.db.lock().unwrap().with_gpu_ledger(f)
    }

    const TWO: &str = "[[gpu]]\nmodel = \"NVIDIA A100-SXM4-40GB\"\ninstances = [\"3g.20gb\", \"2g.10gb\", \"1g.5gb\", \"1g.5gb\"]\n\n[[gpu]]\nmodel = \"NVIDIA H200\"\nmig = false\n";

    #[test]
    fn describes_gpus_with_catalog_geometry_and_keeps_state() {
        let dir = tempfile::tempdir().unwrap();
        let sim = backend(dir.path(), TWO, false).unwrap();
        let gpus = sim.devices().unwrap();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].mig_instances.len(), 4);
        let starts: Vec<(String, u32)> =
            gpus[0].mig_instances.iter().map(|m| (m.profile.clone(), m.placement_start)).collect();
        // A valid 3-2-1-1 geometry: the 3g on the upper half (leaving 4g@0 possible), no overlaps.
        assert!(starts.contains(&("3g.20gb".into(), 4)), "{starts:?}");
        let mut mask = 0u32;
        for m in &gpus[0].mig_instances {
            let bits = ((1u32 << m.memory_slices) - 1) << m.placement_start;
            assert_eq!(mask & bits, 0, "overlap in {starts:?}");
            mask |= bits;
        }
        for m in &gpus[0].mig_instances {
            assert!(m.uuid.starts_with("MIG-") && m.uuid.as_bytes()[4 + 14] == b'5', "{}", m.uuid);
        }
        assert!(gpus[1].uuid.starts_with("GPU-") && !gpus[1].mig_enabled);
        // A second process (or a restart) sees the same devices.
        let again = backend(dir.path(), TWO, false).unwrap();
        assert_eq!(again.devices().unwrap(), gpus);
    }

    #[test]
    fn bad_descriptions_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = backend(dir.path(), "[[gpu]]\nmodel = \"GeForce 256\"\n", false).err().unwrap();
        assert!(
            e.to_string().contains("unknown model \"GeForce 256\"") && e.to_string().contains("NVIDIA H200"),
            "{e}"
        );
        let e = backend(
            dir.path(),
            "[[gpu]]\nmodel = \"NVIDIA A100-SXM4-40GB\"\ninstances = [\"4g.20gb\", \"4g.20gb\"]\n",
            false,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("GPU 0: instance \"4g.20gb\" does not fit"), "{e}");
        let e = backend(dir.path(), "[[gpu]]\nmodel = \"NVIDIA A100-SXM4-40GB\"\ninstances = [\"9g\"]\n", false)
            .err()
            .unwrap();
        assert!(e.to_string().contains("\"9g\""), "{e}");
    }

    /// Whether `rest` can be added to `layout` in any placements: the exhaustive oracle.
    fn fits_somehow(layout: &mut Layout, rest: &[&'static Profile]) -> bool {
        let Some((p, rest)) = rest.split_first() else { return true };
        for start in layout.free_starts(p) {
            layout.placed.push(Placed { profile: p, start });
            if fits_somehow(layout, rest) {
                return true;
            }
            layout.placed.pop();
        }
        false
    }

    #[test]
    fn start_up_placement_finds_a_layout_whenever_one_exists() {
        // Every multiset of up to 7 instances, on both placement grids.
        fn each(model: &'static Model, from: usize, chosen: &mut Vec<&'static Profile>, checked: &mut u32) {
            if !chosen.is_empty() {
                let possible = fits_somehow(&mut Layout::new(model), chosen);
                let names: Vec<&str> = chosen.iter().map(|p| p.name).collect();
                assert_eq!(place_all(model, chosen).is_ok(), possible, "{}: {names:?}", model.name);
                *checked += 1;
            }
            if chosen.len() == 7 {
                return;
            }
            for i in from..model.profiles.len() {
                chosen.push(&model.profiles[i]);
                each(model, i, chosen, checked);
                chosen.pop();
            }
        }
        for name in ["NVIDIA A100-SXM4-40GB", "NVIDIA A30"] {
            let mut checked = 0;
            each(catalog::model(name).unwrap(), 0, &mut Vec::new(), &mut checked);
            assert!(checked > 300, "{checked}");
        }
    }

    #[test]
    fn picks_are_exclusive_and_dynamic_instances_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let sim = backend(dir.path(), "[[gpu]]\nmodel = \"NVIDIA A100-SXM4-80GB\"\n", true).unwrap();
        // A reservation that fails after its pick takes the new instance back with it.
        let e = in_tx(&sim, |l| -> Result<()> {
            sim.pick(&GpuRequest::Profile("7g".into()), &HashSet::new(), l)?;
            Err(Error::Exhausted("no free SSH port".into()))
        })
        .unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)));
        assert!(sim.devices().unwrap()[0].mig_instances.is_empty(), "rolled back with the reservation");
        let mut taken = HashSet::new();
        for _ in 0..2 {
            let p = in_tx(&sim, |l| sim.pick(&GpuRequest::Profile("3g".into()), &taken, l)).unwrap().unwrap();
            assert_eq!(p.profile.as_deref(), Some("3g.40gb"));
            assert!(taken.insert(p.uuid));
        }
        let e = in_tx(&sim, |l| sim.pick(&GpuRequest::Profile("1g".into()), &taken, l)).unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)), "two 3g fill an A100: {e}");
        // Another process on the same database sees the instances made.
        let other = backend(dir.path(), "[[gpu]]\nmodel = \"NVIDIA A100-SXM4-80GB\"\n", true).unwrap();
        assert_eq!(other.devices().unwrap()[0].mig_instances.len(), 2);
        let first = taken.iter().next().unwrap().clone();
        in_tx(&sim, |l| sim.release(&first, l)).unwrap();
        taken.remove(&first);
        assert_eq!(sim.devices().unwrap()[0].mig_instances.len(), 1);
        assert_eq!(
            in_tx(&sim, |l| sim.reconcile(&HashSet::new(), l)).unwrap().len(),
            1,
            "unowned sandman instances go"
        );
        assert!(other.devices().unwrap()[0].mig_instances.is_empty());
    }

    #[test]
    fn static_instances_are_never_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let sim = backend(dir.path(), TWO, true).unwrap();
        assert!(in_tx(&sim, |l| sim.reconcile(&HashSet::new(), l)).unwrap().is_empty());
        let p = in_tx(&sim, |l| sim.pick(&GpuRequest::Profile("3g".into()), &HashSet::new(), l)).unwrap().unwrap();
        in_tx(&sim, |l| sim.release(&p.uuid, l)).unwrap();
        assert_eq!(sim.devices().unwrap()[0].mig_instances.len(), 4);
    }
}
