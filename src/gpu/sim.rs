//! The simulated backend: GPUs described in a TOML file, with MIG geometry from sandman's
//! catalog. Its state (UUIDs, instances, who made them) lives in a JSON file beside the database,
//! shared by every sandman process on the host under a file lock, and survives restarts.
//!
//! ```toml
//! [[gpu]]
//! model = "NVIDIA A100-SXM4-40GB"   # an NVML device name
//! mig = true
//! instances = ["3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb"]   # made at start-up
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};

use super::allocate::{self, GpuState, InstanceState};
use super::catalog::{self, Model, Profile};
use super::placement::{self, Layout, Placed};
use super::{GpuAccess, GpuBackend, GpuDevice, GpuRequest, MigInstance, ProfileInfo};
use crate::error::{Error, Result};
use crate::locks::FileLock;
use crate::store::GpuPick;

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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// The description this state was built from; a changed file starts afresh.
    source: String,
    gpus: Vec<StateGpu>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateGpu {
    uuid: String,
    model: String,
    mig: bool,
    instances: Vec<StateInstance>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateInstance {
    uuid: String,
    profile: String,
    start: u32,
    gpu_instance_id: u32,
    compute_instance_id: u32,
    created_by_sandman: bool,
}

pub struct SimBackend {
    state_path: PathBuf,
    lock_path: PathBuf,
    default_profile: String,
    dynamic: bool,
}

impl SimBackend {
    pub fn open(file: &Path, state_dir: &Path, default_profile: &str, dynamic: bool) -> Result<SimBackend> {
        let source = std::fs::read_to_string(file)
            .map_err(|e| Error::invalid("gpu_sim_file", format!("cannot read {}: {e}", file.display())))?;
        let described: SimFile = toml::from_str(&source)
            .map_err(|e| Error::invalid("gpu_sim_file", format!("{}: {}", file.display(), e.message())))?;
        let backend = SimBackend {
            state_path: state_dir.join("gpu-sim-state.json"),
            lock_path: state_dir.join("locks").join("gpu-sim.lock"),
            default_profile: default_profile.to_string(),
            dynamic,
        };
        let _lock = FileLock::acquire(&backend.lock_path)?;
        match backend.read()? {
            Some(state) if state.source == source => {}
            previous => {
                if previous.is_some() {
                    tracing::warn!(file = %file.display(), "simulated GPUs changed; starting from the new description");
                }
                backend.write(&build(&described, source, file)?)?;
            }
        }
        Ok(backend)
    }

    fn read(&self) -> Result<Option<State>> {
        match std::fs::read_to_string(&self.state_path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text).with_context(|| format!("{} is corrupt", self.state_path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&self, state: &State) -> Result<()> {
        let tmp = self.state_path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state).map_err(|e| Error::Internal(e.into()))?)?;
        std::fs::rename(&tmp, &self.state_path)?;
        Ok(())
    }

    /// Reads, changes and writes the state under the lock.
    fn update<T>(&self, change: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let _lock = FileLock::acquire(&self.lock_path)?;
        let mut state = self.read()?.ok_or_else(|| Error::Internal(anyhow!("simulated GPU state is missing")))?;
        let out = change(&mut state)?;
        self.write(&state)?;
        Ok(out)
    }

    fn snapshot(&self) -> Result<State> {
        let _lock = FileLock::acquire(&self.lock_path)?;
        self.read()?.ok_or_else(|| Error::Internal(anyhow!("simulated GPU state is missing")))
    }

    /// Removes sandman-made instances that `doomed` picks; returns their UUIDs.
    fn destroy_where(&self, doomed: impl Fn(&StateInstance) -> bool) -> Result<Vec<String>> {
        self.update(|state| {
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

    fn pick(&self, request: &GpuRequest, taken: &HashSet<String>) -> Result<Option<GpuPick>> {
        self.update(|state| {
            let plan = allocate::plan(&states(state)?, request, taken, &self.default_profile, self.dynamic)?;
            plan.into_pick(|gpu, profile, start| {
                let g = &mut state.gpus[gpu];
                let made = new_instance(g, profile.name, start, profile.memory_slices, true);
                let uuid = made.uuid.clone();
                g.instances.push(made);
                tracing::info!(gpu = %g.uuid, mig = %uuid, profile = profile.name, start, "simulated MIG instance created");
                Ok(uuid)
            })
        })
    }

    fn release(&self, uuid: &str) -> Result<()> {
        self.destroy_where(|i| i.uuid == uuid).map(drop)
    }

    fn reconcile(&self, owned: &HashSet<String>) -> Result<Vec<String>> {
        self.destroy_where(|i| !owned.contains(&i.uuid))
    }

    fn access(&self, uuid: &str) -> GpuAccess {
        GpuAccess::EnvOnly(uuid.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(dir: &Path, sim: &str, dynamic: bool) -> Result<SimBackend> {
        let file = dir.join("gpus.toml");
        std::fs::write(&file, sim).unwrap();
        SimBackend::open(&file, dir, "3g.20gb", dynamic)
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
        let mut taken = HashSet::new();
        for _ in 0..2 {
            let p = sim.pick(&GpuRequest::Profile("3g".into()), &taken).unwrap().unwrap();
            assert_eq!(p.profile.as_deref(), Some("3g.40gb"));
            assert!(taken.insert(p.uuid));
        }
        let e = sim.pick(&GpuRequest::Profile("1g".into()), &taken).unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)), "two 3g fill an A100: {e}");
        let first = taken.iter().next().unwrap().clone();
        sim.release(&first).unwrap();
        taken.remove(&first);
        assert_eq!(sim.devices().unwrap()[0].mig_instances.len(), 1);
        assert_eq!(sim.reconcile(&HashSet::new()).unwrap().len(), 1, "unowned sandman instances go");
        assert!(sim.devices().unwrap()[0].mig_instances.is_empty());
    }

    #[test]
    fn static_instances_are_never_destroyed() {
        let dir = tempfile::tempdir().unwrap();
        let sim = backend(dir.path(), TWO, true).unwrap();
        assert!(sim.reconcile(&HashSet::new()).unwrap().is_empty());
        let p = sim.pick(&GpuRequest::Profile("3g".into()), &HashSet::new()).unwrap().unwrap();
        sim.release(&p.uuid).unwrap();
        assert_eq!(sim.devices().unwrap()[0].mig_instances.len(), 4);
    }
}
