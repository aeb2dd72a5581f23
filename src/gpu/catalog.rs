//! sandman's own MIG catalog: per GPU model, its GPU-instance profiles with their NVML ids, slices,
//! memory, instance limits and placements. The data comes from public `nvidia-smi mig -lgip/-lgipp`
//! output and the MIG User Guide; the tests compare it with an independent reference file.
//!
//! Memory sizes (`memory_mib`) are those of one driver release each; other drivers report slightly
//! different values, so nothing should depend on them beyond display.

use crate::error::{Error, Result};

/// One GPU model as NVML names it.
#[derive(Debug, PartialEq)]
pub struct Model {
    /// `nvmlDeviceGetName` on current drivers, e.g. "NVIDIA A100-SXM4-40GB".
    pub name: &'static str,
    /// Other names for the same part. The name without the "NVIDIA " prefix (printed by drivers
    /// before R515) is accepted for every model without being listed here.
    pub aliases: &'static [&'static str],
    pub total_memory_mib: u64,
    /// Width of the placement grid (8 on A100/H100/H200, 4 on A30).
    pub memory_slices: u32,
    pub compute_slices: u32,
    /// In the order `nvidia-smi mig -lgip` lists them.
    pub profiles: &'static [Profile],
}

/// One GPU-instance profile of a model.
#[derive(Debug, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    /// `NVML_GPU_INSTANCE_PROFILE_*`: the argument of `nvmlDeviceGetGpuInstanceProfileInfo`.
    pub nvml_profile_id: u32,
    /// `nvmlGpuInstanceProfileInfo_t.id` (nvidia-smi's "Profile ID"): what placement and create
    /// calls take. Not the same number as `nvml_profile_id`.
    pub profile_info_id: u32,
    pub compute_slices: u32,
    pub memory_slices: u32,
    pub memory_mib: u64,
    pub max_instances: u32,
    pub placements: &'static [Placement],
    pub variant: Variant,
}

/// Where a GPU instance may sit on the memory-slice grid: slices `[start, start + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub start: u32,
    pub size: u32,
}

/// Profiles with the same compute size differ by what else they carry; the shorthand `3g` means
/// the plain one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Plain,
    /// `+me`: with the media engines (decoders, JPEG, OFA); one per GPU.
    MediaExtensions,
    /// `NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2`: one compute slice with two memory slices
    /// (1g.10gb on A100-40GB).
    DoubleMemory,
    /// Graphics and engine variants newer drivers offer (`*_GFX`, `*_NO_ME`, `*_ALL_ME`), seen
    /// only in the geometry the driver reports.
    Other,
}

impl Variant {
    /// The variant an `NVML_GPU_INSTANCE_PROFILE_*` enum stands for.
    pub fn of_nvml_enum(profile_enum: u32) -> Variant {
        match profile_enum {
            0..=6 => Variant::Plain,
            7 | 8 => Variant::MediaExtensions,
            9 => Variant::DoubleMemory,
            _ => Variant::Other,
        }
    }
}

const fn pl(start: u32, size: u32) -> Placement {
    Placement { start, size }
}

// Placements are the same on every 8-slot part (A100, H100, H200, GH200, B200): MIG guide lgipp.
const P8_1: &[Placement] = &[pl(0, 1), pl(1, 1), pl(2, 1), pl(3, 1), pl(4, 1), pl(5, 1), pl(6, 1)];
const P8_1X2: &[Placement] = &[pl(0, 2), pl(2, 2), pl(4, 2), pl(6, 2)];
const P8_2: &[Placement] = &[pl(0, 2), pl(2, 2), pl(4, 2)];
const P8_3: &[Placement] = &[pl(0, 4), pl(4, 4)];
const P8_4: &[Placement] = &[pl(0, 4)];
const P8_7: &[Placement] = &[pl(0, 8)];

// A30 uses a 4-slot grid.
const P4_1: &[Placement] = &[pl(0, 1), pl(1, 1), pl(2, 1), pl(3, 1)];
const P4_2: &[Placement] = &[pl(0, 2), pl(2, 2)];
const P4_4: &[Placement] = &[pl(0, 4)];

#[allow(clippy::too_many_arguments)]
const fn profile(
    name: &'static str,
    nvml_profile_id: u32,
    profile_info_id: u32,
    compute_slices: u32,
    memory_slices: u32,
    memory_mib: u64,
    max_instances: u32,
    placements: &'static [Placement],
    variant: Variant,
) -> Profile {
    Profile {
        name,
        nvml_profile_id,
        profile_info_id,
        compute_slices,
        memory_slices,
        memory_mib,
        max_instances,
        placements,
        variant,
    }
}

/// The seven profiles of an 8-slot part, which share NVML ids, slices, limits and placements and
/// differ only in names and memory. Order: 1g, 1g+me, 1g with two memory slices, 2g, 3g, 4g, 7g.
const fn grid8(names: [&'static str; 7], mib: [u64; 7]) -> [Profile; 7] {
    use Variant::*;
    [
        profile(names[0], 0, 19, 1, 1, mib[0], 7, P8_1, Plain),
        profile(names[1], 7, 20, 1, 1, mib[1], 1, P8_1, MediaExtensions),
        profile(names[2], 9, 15, 1, 2, mib[2], 4, P8_1X2, DoubleMemory),
        profile(names[3], 1, 14, 2, 2, mib[3], 3, P8_2, Plain),
        profile(names[4], 2, 9, 3, 4, mib[4], 2, P8_3, Plain),
        profile(names[5], 3, 5, 4, 4, mib[5], 1, P8_4, Plain),
        profile(names[6], 4, 0, 7, 8, mib[6], 1, P8_7, Plain),
    ]
}

const fn model8(
    name: &'static str,
    aliases: &'static [&'static str],
    total_memory_mib: u64,
    profiles: &'static [Profile],
) -> Model {
    Model { name, aliases, total_memory_mib, memory_slices: 8, compute_slices: 7, profiles }
}

const A100_40GB: [&str; 7] = ["1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"];
const A100_80GB: [&str; 7] = ["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"];
const H100_80GB: [&str; 7] = A100_80GB;

/// Every model sandman knows, by NVML device name.
pub static MODELS: &[Model] = &[
    model8("NVIDIA A100-SXM4-40GB", &[], 40960, &grid8(A100_40GB, [4864, 4864, 9856, 9856, 19968, 19968, 40192])),
    model8("NVIDIA A100-PCIE-40GB", &[], 40960, &grid8(A100_40GB, [4864, 4864, 9984, 9984, 20096, 20096, 40448])),
    // The 80GB values were observed on the PCIe card; the SXM4 part has the same profiles.
    // 1g.20gb memory is inferred (not in that driver's output).
    model8("NVIDIA A100-SXM4-80GB", &[], 81920, &grid8(A100_80GB, [9728, 9728, 19968, 19968, 40192, 40192, 80896])),
    model8("NVIDIA A100 80GB PCIe", &[], 81920, &grid8(A100_80GB, [9728, 9728, 19968, 19968, 40192, 40192, 80896])),
    Model {
        name: "NVIDIA A30",
        aliases: &[],
        total_memory_mib: 24576,
        memory_slices: 4,
        compute_slices: 4,
        profiles: &[
            profile("1g.6gb", 0, 14, 1, 1, 5952, 4, P4_1, Variant::Plain),
            profile("1g.6gb+me", 7, 21, 1, 1, 5952, 1, P4_1, Variant::MediaExtensions),
            profile("2g.12gb", 1, 5, 2, 2, 11968, 2, P4_2, Variant::Plain),
            profile("2g.12gb+me", 8, 6, 2, 2, 11968, 1, P4_2, Variant::MediaExtensions),
            profile("4g.24gb", 3, 0, 4, 4, 24000, 1, P4_4, Variant::Plain),
        ],
    },
    model8("NVIDIA H100 80GB HBM3", &[], 81559, &grid8(H100_80GB, [9984, 9984, 20096, 20096, 40448, 40448, 81152])),
    model8("NVIDIA H100 PCIe", &[], 81559, &grid8(H100_80GB, [9984, 9984, 20096, 20096, 40448, 40448, 81152])),
    model8(
        "NVIDIA H100 NVL",
        &[],
        95830,
        &grid8(
            ["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"],
            [11008, 11008, 22144, 22144, 47488, 47488, 95360],
        ),
    ),
    model8(
        "NVIDIA H200",
        &[],
        143771,
        &grid8(
            ["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"],
            [16384, 16384, 33024, 33024, 71168, 71168, 143104],
        ),
    ),
    // The driver names PCI id 0x2342 both ways; both are the 96 GB GH200.
    model8(
        "NVIDIA GH200 480GB",
        &["NVIDIA GH200 120GB"],
        97871,
        &grid8(
            ["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb"],
            [11264, 11264, 23552, 23552, 47616, 47616, 95232],
        ),
    ),
    // 3g/4g/7g memory not observed yet: estimates.
    model8(
        "NVIDIA GH200 144G HBM3e",
        &[],
        146831,
        &grid8(
            ["1g.18gb", "1g.18gb+me", "1g.36gb", "2g.36gb", "3g.72gb", "4g.72gb", "7g.144gb"],
            [17920, 17920, 36096, 36096, 72192, 72192, 145408],
        ),
    ),
    // 3g/4g/7g memory not observed yet: estimates.
    model8(
        "NVIDIA B200",
        &[],
        183359,
        &grid8(
            ["1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"],
            [22528, 22528, 45312, 45312, 90624, 90624, 182272],
        ),
    ),
];

/// A MIG profile name split into its parts, the one place profile names are parsed. A full name
/// is `<compute slices>g.<memory>gb[+<extras>]` (`3g.20gb`, `1g.5gb+me`); a shorthand is the
/// compute size alone (`3g`), meaning the plain profile of that size on whatever model is present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProfileName<'a> {
    pub compute_slices: u32,
    /// The rounded size in the name (`"20"` in `3g.20gb`); `None` for a shorthand.
    pub memory_gb: Option<&'a str>,
    /// What follows `+` (`me`), if anything.
    pub extras: Option<&'a str>,
}

impl<'a> ProfileName<'a> {
    /// `None` for text that is not shaped like a profile name. Case is ignored in the `g`/`gb`.
    pub fn parse(text: &'a str) -> Option<ProfileName<'a>> {
        let text = text.trim();
        let (size, rest) = match text.split_once('.') {
            Some((size, rest)) => (size, Some(rest)),
            None => (text, None),
        };
        let compute_slices = size.strip_suffix(['g', 'G'])?.parse().ok()?;
        let (memory_gb, extras) = match rest {
            None => (None, None),
            Some(rest) => {
                let (memory, extras) = match rest.split_once('+') {
                    Some((memory, extras)) => (memory, Some(extras)),
                    None => (rest, None),
                };
                let digits = memory.strip_suffix("gb").or_else(|| memory.strip_suffix("GB"))?;
                (Some(digits), extras)
            }
        };
        Some(ProfileName { compute_slices, memory_gb, extras })
    }

    pub fn is_shorthand(&self) -> bool {
        self.memory_gb.is_none()
    }

    /// The shorthand for this compute size: `3g` for `3g.20gb`.
    pub fn shorthand(&self) -> String {
        format!("{}g", self.compute_slices)
    }
}

/// The model NVML calls `name`: its current name, an alias, or either without "NVIDIA ".
/// Case and surrounding blanks are ignored (names come from hand-written files too).
pub fn model(name: &str) -> Option<&'static Model> {
    let name = name.trim();
    let same = |known: &str| {
        known.eq_ignore_ascii_case(name)
            || known.strip_prefix("NVIDIA ").is_some_and(|bare| bare.eq_ignore_ascii_case(name))
    };
    MODELS.iter().find(|m| same(m.name) || m.aliases.iter().any(|a| same(a)))
}

/// The known model names, for error messages.
pub fn model_names() -> String {
    MODELS.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

impl Model {
    /// The profile with exactly this name.
    pub fn profile(&self, name: &str) -> Option<&'static Profile> {
        let profiles: &'static [Profile] = self.profiles;
        profiles.iter().find(|p| p.name == name)
    }

    /// The profiles the `Ng` shorthands stand for, largest first.
    pub fn plain_profiles(&self) -> impl Iterator<Item = &'static Profile> {
        let profiles: &'static [Profile] = self.profiles;
        profiles.iter().rev().filter(|p| p.variant == Variant::Plain)
    }

    /// A profile as a user names it: exactly (`3g.20gb`), or by compute size (`3g`), which means
    /// the plain profile of that size, never `+me` or the double-memory 1g.
    pub fn resolve(&self, request: &str) -> Result<&'static Profile> {
        let request = request.trim();
        if let Some(p) = self.profile(&request.to_ascii_lowercase()) {
            return Ok(p);
        }
        let shorthand = ProfileName::parse(request).filter(ProfileName::is_shorthand);
        if let Some(p) = shorthand.and_then(|n| self.plain_profiles().find(|p| p.compute_slices == n.compute_slices)) {
            return Ok(p);
        }
        Err(Error::invalid(
            "mig_profile",
            format!(
                "{request:?} is not a MIG profile of the {}; valid: {} (or by size: {})",
                self.name,
                self.profile_names(),
                self.shorthands(),
            ),
        ))
    }

    /// "1g.5gb, 1g.5gb+me, ..." for messages.
    pub fn profile_names(&self) -> String {
        self.profiles.iter().map(|p| p.name).collect::<Vec<_>>().join(", ")
    }

    /// "1g, 2g, 3g, 4g, 7g" for messages.
    pub fn shorthands(&self) -> String {
        let mut sizes: Vec<String> = self.plain_profiles().map(|p| format!("{}g", p.compute_slices)).collect();
        sizes.reverse();
        sizes.join(", ")
    }
}

impl Profile {
    /// Memory slices `[start, start + size)` of a placement as a bit mask.
    pub fn mask(&self, start: u32) -> u32 {
        ((1u32 << self.memory_slices) - 1) << start
    }

    /// "3/7 GPU, 20GB Memory", as `GET /gpus/profiles` describes a profile.
    pub fn description(&self, model: &Model) -> String {
        // The GB figure is the one in the profile's name (rounded by NVIDIA), not memory_mib.
        let gb = ProfileName::parse(self.name).and_then(|n| n.memory_gb).unwrap_or("?");
        let mut text = format!("{}/{} GPU, {gb}GB Memory", self.compute_slices, model.compute_slices);
        if self.variant == Variant::MediaExtensions {
            text.push_str(", media extensions");
        }
        text
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The reference geometry in `tests/data/` (an independent oracle, never read
    /// by sandman itself). Missing, the test fails.
    pub(crate) fn reference() -> toml::Table {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mig-geometry.toml"));
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        text.parse().unwrap()
    }

    fn int(v: &toml::Value, key: &str) -> u64 {
        v.get(key).and_then(|x| x.as_integer()).unwrap_or_else(|| panic!("{key} missing in {v}")) as u64
    }

    #[test]
    fn catalog_matches_the_reference_geometry() {
        let reference = reference();
        let gpus = reference["gpus"].as_table().unwrap();
        for required in ["NVIDIA A100-SXM4-40GB", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA H200"] {
            assert!(gpus.contains_key(required), "{required} not in reference");
        }
        // Every reference model is in the catalog, with the same data.
        assert_eq!(gpus.len(), MODELS.len(), "model count");
        for (name, gpu) in gpus {
            let m = model(name).unwrap_or_else(|| panic!("{name} missing from catalog"));
            assert_eq!(m.name, name);
            assert_eq!(m.total_memory_mib, int(gpu, "total_memory_mib"), "{name}");
            assert_eq!(m.memory_slices as u64, int(gpu, "memory_slice_total"), "{name}");
            assert_eq!(m.compute_slices as u64, int(gpu, "compute_slice_total"), "{name}");
            for alias in gpu.get("nvml_name_aliases").and_then(|a| a.as_array()).into_iter().flatten() {
                assert_eq!(model(alias.as_str().unwrap()), Some(m), "{alias}");
            }
            let profiles = gpu["profiles"].as_array().unwrap();
            let names: Vec<&str> = profiles.iter().map(|p| p["name"].as_str().unwrap()).collect();
            let ours: Vec<&str> = m.profiles.iter().map(|p| p.name).collect();
            assert_eq!(ours, names, "{name} profile list");
            for (p, r) in m.profiles.iter().zip(profiles) {
                let what = format!("{name} {}", p.name);
                assert_eq!(p.nvml_profile_id as u64, int(r, "nvml_profile_id"), "{what}");
                assert_eq!(p.profile_info_id as u64, int(r, "profile_info_id"), "{what}");
                assert_eq!(p.compute_slices as u64, int(r, "compute_slices"), "{what}");
                assert_eq!(p.memory_slices as u64, int(r, "memory_slices"), "{what}");
                assert_eq!(p.memory_mib, int(r, "memory_mib"), "{what}");
                assert_eq!(p.max_instances as u64, int(r, "max_instances"), "{what}");
                let placements: Vec<(u32, u32)> = r["placements"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|pair| {
                        let pair = pair.as_array().unwrap();
                        (pair[0].as_integer().unwrap() as u32, pair[1].as_integer().unwrap() as u32)
                    })
                    .collect();
                let ours: Vec<(u32, u32)> = p.placements.iter().map(|x| (x.start, x.size)).collect();
                assert_eq!(ours, placements, "{what} placements");
                // The enum name tells the variant.
                let e = r["nvml_profile_enum"].as_str().unwrap();
                let variant = if e.ends_with("_REV1") {
                    Variant::MediaExtensions
                } else if e.ends_with("_REV2") {
                    Variant::DoubleMemory
                } else {
                    Variant::Plain
                };
                assert_eq!(p.variant, variant, "{what} variant");
            }
        }
    }

    #[test]
    fn placements_are_consistent() {
        for m in MODELS {
            for p in m.profiles {
                for pl in p.placements {
                    assert_eq!(pl.size, p.memory_slices, "{} {}", m.name, p.name);
                    assert!(pl.start + pl.size <= m.memory_slices, "{} {}", m.name, p.name);
                }
                // Placement logic counts free placements of one profile as independent slots.
                for (i, a) in p.placements.iter().enumerate() {
                    for b in &p.placements[i + 1..] {
                        assert_eq!(p.mask(a.start) & p.mask(b.start), 0, "{}", p.name);
                    }
                }
            }
        }
    }

    #[test]
    fn models_are_found_by_name_alias_and_old_name() {
        let a100 = model("NVIDIA A100-SXM4-40GB").unwrap();
        assert_eq!(model("A100-SXM4-40GB"), Some(a100));
        assert_eq!(model(" nvidia a100-sxm4-40gb "), Some(a100));
        assert_eq!(model("GH200 120GB").unwrap().name, "NVIDIA GH200 480GB");
        assert_eq!(model("NVIDIA A100"), None);
    }

    #[test]
    fn shorthand_means_the_plain_profile() {
        let a100 = model("NVIDIA A100-SXM4-40GB").unwrap();
        for (short, full) in
            [("1g", "1g.5gb"), ("2g", "2g.10gb"), ("3g", "3g.20gb"), ("4g", "4g.20gb"), ("7g", "7g.40gb")]
        {
            assert_eq!(a100.resolve(short).unwrap().name, full);
        }
        assert_eq!(a100.resolve("1g.10gb").unwrap().memory_slices, 2);
        assert_eq!(a100.resolve("1g.5gb+me").unwrap().max_instances, 1);
        let h200 = model("NVIDIA H200").unwrap();
        assert_eq!(h200.resolve("3g").unwrap().name, "3g.71gb");
        assert_eq!(h200.resolve("1g").unwrap().name, "1g.18gb");
        let a30 = model("NVIDIA A30").unwrap();
        assert_eq!(a30.resolve("2g").unwrap().name, "2g.12gb");
        assert!(a30.resolve("3g").is_err());
    }

    #[test]
    fn bad_profiles_are_named_with_the_valid_ones() {
        let h100 = model("NVIDIA H100 80GB HBM3").unwrap();
        let e = h100.resolve("3g.20gb").unwrap_err().to_string();
        assert!(e.contains("\"3g.20gb\""), "{e}");
        assert!(e.contains("NVIDIA H100 80GB HBM3"), "{e}");
        assert!(e.contains("3g.40gb"), "{e}");
        assert!(e.contains("1g, 2g, 3g, 4g, 7g"), "{e}");
        assert!(h100.resolve("5g").is_err());
        assert!(h100.resolve("").is_err());
    }

    #[test]
    fn profile_names_parse_into_their_parts() {
        let parse = ProfileName::parse;
        assert_eq!(parse("3g.20gb"), Some(ProfileName { compute_slices: 3, memory_gb: Some("20"), extras: None }));
        assert_eq!(
            parse("1g.5gb+me"),
            Some(ProfileName { compute_slices: 1, memory_gb: Some("5"), extras: Some("me") })
        );
        assert_eq!(parse(" 3G "), Some(ProfileName { compute_slices: 3, memory_gb: None, extras: None }));
        assert_eq!(parse("3g.20gb").unwrap().shorthand(), "3g");
        assert!(parse("7g").unwrap().is_shorthand() && !parse("7g.40gb").unwrap().is_shorthand());
        for bad in ["", "g", "3", "3x", "three g", "3g.20", "3g.", "-1g"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // Every catalog name parses, and its size is its compute slices.
        for m in MODELS {
            for p in m.profiles {
                let n = parse(p.name).unwrap_or_else(|| panic!("{}", p.name));
                assert_eq!(n.compute_slices, p.compute_slices, "{}", p.name);
                assert_eq!(n.extras == Some("me"), p.variant == Variant::MediaExtensions, "{}", p.name);
            }
        }
    }

    #[test]
    fn descriptions_follow_the_api() {
        let a100 = model("NVIDIA A100-SXM4-40GB").unwrap();
        assert_eq!(a100.resolve("3g").unwrap().description(a100), "3/7 GPU, 20GB Memory");
        assert_eq!(a100.resolve("1g.5gb").unwrap().description(a100), "1/7 GPU, 5GB Memory");
        let a30 = model("NVIDIA A30").unwrap();
        assert_eq!(a30.resolve("2g.12gb+me").unwrap().description(a30), "2/4 GPU, 12GB Memory, media extensions");
    }
}
