//! Which device a request gets: shared by every backend, so the simulator and NVML decide alike.
//! Backends describe their GPUs as `GpuState`; `plan` answers with an existing free device or,
//! in dynamic MIG mode, a placement to create. Exclusivity comes from `taken` (the store's view).

use std::collections::HashSet;

use super::GpuRequest;
use super::catalog::{Model, Profile, ProfileName};
use super::placement::{self, Layout, Placed};
use crate::error::{Error, Result};
use crate::store::GpuPick;

/// One GPU as a backend sees it now.
#[derive(Debug, Clone)]
pub struct GpuState {
    pub uuid: String,
    pub name: String,
    /// `None` for a model sandman's catalog does not know: its existing instances can still be
    /// handed out, but none are created on it.
    pub model: Option<&'static Model>,
    pub mig_enabled: bool,
    /// The MIG devices a session can be given.
    pub instances: Vec<InstanceState>,
    /// GPU instances that occupy slices but are not among `instances` under their profile's
    /// name: those without a compute instance (no MIG device), and those split into several
    /// compute instances. Placement counts them; nobody is handed them by profile.
    pub occupied_only: Vec<Occupied>,
}

/// A GPU instance's profile and first memory slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Occupied {
    pub profile: String,
    pub start: u32,
}

#[derive(Debug, Clone)]
pub struct InstanceState {
    pub uuid: String,
    /// The profile name as the driver reports it (`3g.20gb`).
    pub profile: String,
    /// First memory slice of its placement.
    pub start: u32,
}

/// What to give a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// No GPU: a CPU-only session.
    None,
    /// A device that exists and is free: a MIG instance (with its profile) or a whole GPU.
    Existing { uuid: String, profile: Option<String> },
    /// Create an instance: the free placements, best first, each as a GPU (index into the
    /// states), the profile the request means there, and its first memory slice.
    Create { choices: Vec<(usize, &'static Profile, u32)> },
}

impl Plan {
    /// The slice this plan gives a session. `create` makes the instance a `Create` choice asks
    /// for and returns its UUID, or `None` where the driver finds the placement taken (another
    /// process or an admin got there first): the next choice is tried.
    pub fn into_pick(
        self,
        mut create: impl FnMut(usize, &'static Profile, u32) -> Result<Option<String>>,
    ) -> Result<Option<GpuPick>> {
        Ok(match self {
            Plan::None => None,
            Plan::Existing { uuid, profile } => Some(GpuPick { uuid, profile }),
            Plan::Create { choices } => {
                let tried = choices.len();
                for (gpu, profile, start) in choices {
                    if let Some(uuid) = create(gpu, profile, start)? {
                        return Ok(Some(GpuPick { uuid, profile: Some(profile.name.to_string()) }));
                    }
                }
                return Err(Error::Exhausted(format!(
                    "the driver refused all {tried} free placement(s) as taken (NVML insufficient resources): \
                     instances were made outside sandman meanwhile; retry, or see `sandman gpu ls`"
                )));
            }
        })
    }
}

pub fn plan(
    gpus: &[GpuState],
    request: &GpuRequest,
    taken: &HashSet<String>,
    default_profile: &str,
    dynamic: bool,
) -> Result<Plan> {
    match request {
        GpuRequest::Uuid(uuid) => by_uuid(gpus, uuid, taken),
        GpuRequest::Profile(p) => by_profile(gpus, p, taken, dynamic),
        GpuRequest::Default => {
            let mig: Vec<&GpuState> = gpus.iter().filter(|g| g.mig_enabled).collect();
            if mig.is_empty() {
                // No MIG: a whole free GPU, or a CPU-only session where there is none at all.
                return match gpus.iter().find(|g| !taken.contains(&g.uuid)) {
                    Some(g) => Ok(Plan::Existing { uuid: g.uuid.clone(), profile: None }),
                    None if gpus.is_empty() => Ok(Plan::None),
                    None => Err(Error::Exhausted(format!("all {} GPUs are held by sessions", gpus.len()))),
                };
            }
            // "3g.20gb" is an A100-40GB name; on other models the default means its size, "3g".
            let exact = mig.iter().any(|g| g.model.is_some_and(|m| m.profile(default_profile).is_some()));
            let request = match ProfileName::parse(default_profile) {
                Some(name) if !exact => name.shorthand(),
                _ => default_profile.to_string(),
            };
            // The client asked for nothing: a default that fits no GPU is the host's setting to fix.
            by_profile(gpus, &request, taken, dynamic).map_err(|e| match e {
                Error::InvalidInput { message, .. } => unusable_default(&mig, default_profile, &message),
                other => other,
            })
        }
    }
}

fn unusable_default(mig: &[&GpuState], default_profile: &str, why: &str) -> Error {
    let mut models: Vec<&str> = mig.iter().map(|g| g.name.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    Error::Unavailable(format!(
        "the setting default_profile = {default_profile:?} fits none of the GPUs here ({}): {why}; \
         set default_profile in the sandman configuration to a profile of these models (or a size such \
         as 1g), or name a profile in the request",
        models.join(", ")
    ))
}

fn by_uuid(gpus: &[GpuState], uuid: &str, taken: &HashSet<String>) -> Result<Plan> {
    let held = || Error::Conflict(format!("GPU device {uuid} is held by another session"));
    for g in gpus {
        if let Some(i) = g.instances.iter().find(|i| i.uuid == uuid) {
            return if taken.contains(uuid) {
                Err(held())
            } else {
                Ok(Plan::Existing { uuid: uuid.to_string(), profile: Some(i.profile.clone()) })
            };
        }
        if g.uuid == uuid {
            if g.mig_enabled {
                let names: Vec<&str> = g.instances.iter().map(|i| i.uuid.as_str()).collect();
                return Err(Error::invalid(
                    "mig_instance_uuid",
                    format!(
                        "{uuid} is in MIG mode: name one of its MIG devices instead ({})",
                        or_none(&names.join(", "))
                    ),
                ));
            }
            return if taken.contains(uuid) {
                Err(held())
            } else {
                Ok(Plan::Existing { uuid: uuid.to_string(), profile: None })
            };
        }
    }
    Err(Error::invalid(
        "mig_instance_uuid",
        format!("{uuid:?} is not a MIG device or GPU of this host; see `sandman gpu ls`"),
    ))
}

fn by_profile(gpus: &[GpuState], request: &str, taken: &HashSet<String>, dynamic: bool) -> Result<Plan> {
    let mig: Vec<(usize, &GpuState)> = gpus.iter().enumerate().filter(|(_, g)| g.mig_enabled).collect();
    if mig.is_empty() {
        return Err(Error::invalid(
            "mig_profile",
            format!("{request:?} asks for a MIG slice, but no GPU here has MIG enabled"),
        ));
    }
    // What the request means on each GPU: the catalog's profile, or for unknown models the
    // exact name the driver reports.
    let wanted = |g: &GpuState| -> Option<String> {
        match g.model {
            Some(m) => m.resolve(request).ok().map(|p| p.name.to_string()),
            None => g.instances.iter().any(|i| i.profile == request).then(|| request.to_string()),
        }
    };
    if mig.iter().all(|(_, g)| wanted(g).is_none()) {
        let first_error = mig.iter().find_map(|(_, g)| g.model.and_then(|m| m.resolve(request).err()));
        return Err(match first_error {
            Some(e @ Error::InvalidInput { .. }) => e,
            _ => Error::invalid("mig_profile", format!("{request:?} is not a MIG profile of the GPUs here")),
        });
    }
    for (_, g) in &mig {
        let Some(name) = wanted(g) else { continue };
        let mut free: Vec<&InstanceState> =
            g.instances.iter().filter(|i| i.profile == name && !taken.contains(&i.uuid)).collect();
        free.sort_by_key(|i| i.start);
        if let Some(i) = free.first() {
            return Ok(Plan::Existing { uuid: i.uuid.clone(), profile: Some(i.profile.clone()) });
        }
    }
    if dynamic {
        // Only GPUs whose model is known can be planned; the layout counts every instance,
        // held or free, since both occupy their slices.
        let known: Vec<(usize, Layout)> = mig
            .iter()
            .filter_map(|(index, g)| {
                let model = g.model?;
                let whole = g.instances.iter().map(|i| (i.profile.as_str(), i.start));
                let others = g.occupied_only.iter().map(|o| (o.profile.as_str(), o.start));
                let placed = whole
                    .chain(others)
                    .filter_map(|(profile, start)| Some(Placed { profile: model.profile(profile)?, start }))
                    .collect();
                Some((*index, Layout { model, placed }))
            })
            .collect();
        let layouts: Vec<Layout> = known.iter().map(|(_, l)| l.clone()).collect();
        let choices: Vec<(usize, &'static Profile, u32)> =
            placement::ranked(&layouts, request).into_iter().map(|c| (known[c.gpu].0, c.profile, c.start)).collect();
        if !choices.is_empty() {
            return Ok(Plan::Create { choices });
        }
    }
    Err(Error::Exhausted(format!(
        "no free {request} MIG device{}; free now: {}",
        if dynamic { " and no room to create one" } else { " (mig_mode static: instances are not created on demand)" },
        or_none(&free_list(gpus, taken))
    )))
}

/// "1g.5gb MIG-…, 2g.10gb MIG-…" of every free device, for messages.
pub fn free_list(gpus: &[GpuState], taken: &HashSet<String>) -> String {
    let mut free = Vec::new();
    for g in gpus {
        if g.mig_enabled {
            free.extend(
                g.instances.iter().filter(|i| !taken.contains(&i.uuid)).map(|i| format!("{} {}", i.profile, i.uuid)),
            );
        } else if !taken.contains(&g.uuid) {
            free.push(format!("whole GPU {}", g.uuid));
        }
    }
    free.join(", ")
}

fn or_none(list: &str) -> &str {
    if list.is_empty() { "none" } else { list }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(uuid: &str, instances: &[(&str, &str, u32)]) -> GpuState {
        GpuState {
            uuid: uuid.into(),
            name: "NVIDIA A100-SXM4-40GB".into(),
            model: crate::gpu::catalog::model("NVIDIA A100-SXM4-40GB"),
            mig_enabled: true,
            instances: instances
                .iter()
                .map(|(u, p, s)| InstanceState { uuid: u.to_string(), profile: p.to_string(), start: *s })
                .collect(),
            occupied_only: Vec::new(),
        }
    }

    fn taken(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn existing_free_instances_first_then_exhaustion_lists_what_is_free() {
        let gpus = [gpu("GPU-a", &[("MIG-3", "3g.20gb", 4), ("MIG-1", "1g.5gb", 0)])];
        let want = Plan::Existing { uuid: "MIG-3".into(), profile: Some("3g.20gb".into()) };
        assert_eq!(plan(&gpus, &GpuRequest::Profile("3g".into()), &taken(&[]), "3g.20gb", false).unwrap(), want);
        assert_eq!(plan(&gpus, &GpuRequest::Default, &taken(&[]), "3g.20gb", false).unwrap(), want);
        let e = plan(&gpus, &GpuRequest::Profile("3g.20gb".into()), &taken(&["MIG-3"]), "3g.20gb", false).unwrap_err();
        assert!(matches!(e, Error::Exhausted(_)));
        assert!(e.to_string().contains("free now: 1g.5gb MIG-1"), "{e}");
    }

    #[test]
    fn dynamic_mode_plans_a_creation_where_room_is_kept() {
        let gpus = [gpu("GPU-a", &[("MIG-3", "3g.20gb", 4)]), gpu("GPU-b", &[])];
        match plan(&gpus, &GpuRequest::Profile("1g".into()), &taken(&[]), "3g.20gb", true).unwrap() {
            // The split GPU takes the small slice, keeping GPU-b whole for a 7g.
            Plan::Create { choices } => assert_eq!((choices[0].0, choices[0].1.name), (0, "1g.5gb")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn uuids_are_checked() {
        let gpus = [gpu("GPU-a", &[("MIG-3", "3g.20gb", 4)])];
        let e = plan(&gpus, &GpuRequest::Uuid("MIG-3".into()), &taken(&["MIG-3"]), "3g", false).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)));
        let e = plan(&gpus, &GpuRequest::Uuid("GPU-a".into()), &taken(&[]), "3g", false).unwrap_err();
        assert!(e.to_string().contains("is in MIG mode"), "{e}");
        let e = plan(&gpus, &GpuRequest::Uuid("MIG-x".into()), &taken(&[]), "3g", false).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { field: "mig_instance_uuid", .. }));
        let e = plan(&gpus, &GpuRequest::Profile("5g".into()), &taken(&[]), "3g", false).unwrap_err();
        assert!(e.to_string().contains("valid: 1g.5gb"), "{e}");
    }

    #[test]
    fn a_default_profile_that_fits_nothing_is_the_hosts_setting_not_the_clients_request() {
        let mut a30 = gpu("GPU-a30", &[("MIG-2", "2g.12gb", 0)]);
        a30.name = "NVIDIA A30".into();
        a30.model = crate::gpu::catalog::model("NVIDIA A30");
        let gpus = [a30];
        // The A30 has no 3g: the default (meaning "3g" there) cannot be served.
        let e = plan(&gpus, &GpuRequest::Default, &taken(&[]), "3g.20gb", false).unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
        let text = e.to_string();
        for part in ["default_profile = \"3g.20gb\"", "NVIDIA A30", "valid: 1g.6gb", "set default_profile"] {
            assert!(text.contains(part), "{part:?} missing: {text}");
        }
        assert!(!text.contains("mig_profile"), "the client sent no mig_profile: {text}");
        // The same profile asked for by the client is the client's mistake.
        let e = plan(&gpus, &GpuRequest::Profile("3g".into()), &taken(&[]), "3g.20gb", false).unwrap_err();
        assert!(matches!(e, Error::InvalidInput { field: "mig_profile", .. }), "{e:?}");
        // A default that does fit is used, by its size.
        assert_eq!(
            plan(&gpus, &GpuRequest::Default, &taken(&[]), "2g.10gb", false).unwrap(),
            Plan::Existing { uuid: "MIG-2".into(), profile: Some("2g.12gb".into()) }
        );
    }

    #[test]
    fn without_mig_whole_gpus_or_cpu_only() {
        assert_eq!(plan(&[], &GpuRequest::Default, &taken(&[]), "3g.20gb", false).unwrap(), Plan::None);
        let mut whole = gpu("GPU-w", &[]);
        whole.mig_enabled = false;
        let gpus = [whole];
        assert_eq!(
            plan(&gpus, &GpuRequest::Default, &taken(&[]), "3g.20gb", false).unwrap(),
            Plan::Existing { uuid: "GPU-w".into(), profile: None }
        );
        assert!(matches!(plan(&gpus, &GpuRequest::Default, &taken(&["GPU-w"]), "3g", false), Err(Error::Exhausted(_))));
    }
}
