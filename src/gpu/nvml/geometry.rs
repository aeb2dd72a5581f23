//! A GPU's MIG geometry as its driver reports it: profiles, their ids and instance counts, and
//! placements, read through NVML for each GPU present. sandman's catalog is the cross-check: a
//! difference is reported (`doctor`), and the driver's answer is what sandman uses, so a model
//! the catalog lacks (H200 NVL, H20, H800, ...) works, and no size is silently wrong.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use super::api::{GPU_INSTANCE_PROFILE_ENUMS, GiProfile, NvmlApi};
use crate::gpu::catalog::{self, Model, Placement, Profile, ProfileName, Variant};

/// What reading a GPU's geometry found.
pub struct Geometry {
    /// `None` where the driver lists no profile and the catalog does not know the model.
    pub model: Option<&'static Model>,
    /// Things a person should know: calls that failed, differences from the catalog.
    pub warnings: Vec<String>,
}

/// One profile as read, before it is made `'static`.
#[derive(Debug, Clone, PartialEq)]
struct Read {
    name: String,
    info: GiProfile,
    memory_slices: u32,
    placements: Vec<(u32, u32)>,
}

pub fn read(api: &dyn NvmlApi, gpu: u32, device_name: &str) -> Geometry {
    let known = catalog::model(device_name);
    let mut warnings = Vec::new();
    let infos: Vec<GiProfile> = (0..GPU_INSTANCE_PROFILE_ENUMS).filter_map(|e| api.gi_profile(gpu, e).ok()).collect();
    if infos.is_empty() {
        if known.is_some() {
            warnings.push(format!(
                "{device_name}: the driver lists no MIG profile; using sandman's catalog for this model"
            ));
        }
        return Geometry { model: known, warnings };
    }
    let mut placements_hidden = None;
    let mut read = Vec::new();
    for info in infos {
        let from_catalog = known.and_then(|m| m.profiles.iter().find(|p| p.profile_info_id == info.id));
        let placements: Vec<(u32, u32)> = match api.gi_placements(gpu, info.id) {
            Ok(list) => list.iter().map(|p| (p.start, p.size)).collect(),
            Err(code) => {
                placements_hidden = Some(code);
                from_catalog.map(|p| p.placements.iter().map(|p| (p.start, p.size)).collect()).unwrap_or_default()
            }
        };
        let memory_slices = placements.first().map(|p| p.1).or(from_catalog.map(|p| p.memory_slices)).unwrap_or(0);
        read.push(Read { name: profile_name(&info, from_catalog), info, memory_slices, placements });
    }
    if let Some(code) = placements_hidden {
        warnings.push(format!(
            "{device_name}: cannot read MIG placements ({code}){}",
            if known.is_some() { "; using sandman's catalog" } else { "; no instance can be created on it" }
        ));
    }
    let model = intern(device_name, known, read);
    if let Some(known) = known {
        warnings.extend(differences(known, model));
    }
    Geometry { model: Some(model), warnings }
}

/// The name nvidia-smi shows (`3g.20gb`): the driver's (`MIG 3g.20gb`), else the catalog's, else
/// one made from the counts the way NVIDIA names them.
fn profile_name(info: &GiProfile, from_catalog: Option<&Profile>) -> String {
    let driver = info.name.trim().trim_start_matches("MIG ").trim();
    if !driver.is_empty() {
        return driver.to_string();
    }
    if let Some(p) = from_catalog {
        return p.name.to_string();
    }
    let gb = (info.memory_mib as f64 / 1024.0).round() as u64;
    let extras = if Variant::of_nvml_enum(info.profile_enum) == Variant::MediaExtensions { "+me" } else { "" };
    format!("{}g.{gb}gb{extras}", info.slice_count)
}

/// The model for this geometry, made `'static` once per distinct geometry (the rest of the
/// GPU code, like the catalog, works on `&'static` models); a process sees a handful at most.
fn intern(device_name: &str, known: Option<&'static Model>, read: Vec<Read>) -> &'static Model {
    static MODELS: OnceLock<Mutex<HashMap<String, &'static Model>>> = OnceLock::new();
    let key = format!("{device_name}|{read:?}");
    let mut models = MODELS.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    if let Some(model) = models.get(&key) {
        return model;
    }
    let profiles: Vec<Profile> = read
        .iter()
        .map(|r| Profile {
            name: Box::leak(r.name.clone().into_boxed_str()),
            nvml_profile_id: r.info.profile_enum,
            profile_info_id: r.info.id,
            compute_slices: r.info.slice_count,
            memory_slices: r.memory_slices,
            memory_mib: r.info.memory_mib,
            max_instances: r.info.instance_count,
            placements: Box::leak(
                r.placements
                    .iter()
                    .map(|&(start, size)| Placement { start, size })
                    .collect::<Vec<_>>()
                    .into_boxed_slice(),
            ),
            variant: Variant::of_nvml_enum(r.info.profile_enum),
        })
        .collect();
    let memory_slices = read.iter().flat_map(|r| r.placements.iter().map(|p| p.0 + p.1)).max();
    let model = Box::leak(Box::new(Model {
        name: known.map(|m| m.name).unwrap_or_else(|| Box::leak(device_name.to_string().into_boxed_str())),
        aliases: &[],
        total_memory_mib: known
            .map(|m| m.total_memory_mib)
            .unwrap_or_else(|| read.iter().map(|r| r.info.memory_mib).max().unwrap_or(0)),
        memory_slices: memory_slices.or(known.map(|m| m.memory_slices)).unwrap_or(0),
        compute_slices: read.iter().map(|r| r.info.slice_count).max().unwrap_or(0),
        profiles: Box::leak(profiles.into_boxed_slice()),
    }));
    models.insert(key, model);
    model
}

/// Where the driver's geometry differs from the catalog's, except memory sizes (which change
/// with every driver release; mig-notes §2.11).
pub fn differences(catalog: &Model, driver: &Model) -> Vec<String> {
    let mut out = Vec::new();
    let mut say = |what: String| out.push(format!("{}: {what}", driver.name));
    for d in driver.profiles {
        let Some(c) = catalog.profiles.iter().find(|c| c.name == d.name) else {
            say(format!(
                "the driver offers {} (profile id {}), which sandman's catalog lacks",
                d.name, d.profile_info_id
            ));
            continue;
        };
        let pairs = |p: &Profile| p.placements.iter().map(|p| (p.start, p.size)).collect::<Vec<_>>();
        let fields = [
            ("profile id", c.profile_info_id.to_string(), d.profile_info_id.to_string()),
            ("compute slices", c.compute_slices.to_string(), d.compute_slices.to_string()),
            ("memory slices", c.memory_slices.to_string(), d.memory_slices.to_string()),
            ("instances", c.max_instances.to_string(), d.max_instances.to_string()),
            ("placements", format!("{:?}", pairs(c)), format!("{:?}", pairs(d))),
        ];
        for (field, ours, theirs) in fields {
            if ours != theirs {
                say(format!(
                    "{} {field}: the driver says {theirs}, sandman's catalog {ours}; using the driver's",
                    d.name
                ));
            }
        }
    }
    for c in catalog.profiles {
        if !driver.profiles.iter().any(|d| d.name == c.name) {
            say(format!("sandman's catalog lists {}, which the driver does not offer", c.name));
        }
    }
    out
}

/// The profile a MIG device's name ends with (`NVIDIA H100 80GB HBM3 MIG 1g.10gb` -> `1g.10gb`,
/// `... MIG 1c.3g.40gb` for a compute instance of part of a GPU instance).
pub fn profile_of_device_name(name: &str) -> Option<&str> {
    let (_, profile) = name.rsplit_once("MIG ")?;
    let profile = profile.trim();
    let gi_part = profile.split_once("c.").map(|(_, rest)| rest).unwrap_or(profile);
    ProfileName::parse(gi_part).map(|_| profile)
}
