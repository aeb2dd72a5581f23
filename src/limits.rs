//! Per-session resource limits: the admin's defaults and maxima (`[limits]` in the config, with
//! overrides per MIG profile), what a create asks for, and the limits a session gets.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::validate;

/// A size in bytes, written in the config as Docker writes sizes (`"16g"`, `"512m"`, bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&validate::format_size(self.0))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Bytes(u64),
            Size(String),
        }
        match Text::deserialize(d)? {
            Text::Bytes(0) => Err(serde::de::Error::custom("a size of 0 bytes; write a size such as 512m or 16g")),
            Text::Bytes(n) => Ok(ByteSize(n)),
            Text::Size(text) => validate::size("size", &text).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}

/// The smallest memory limit: sshd and a shell need a few megabytes.
pub const MIN_MEMORY: u64 = 32 << 20;
/// The container log rotates at this size, keeping this many files, unless set.
const DEFAULT_LOG_SIZE: u64 = 10 << 20;
const DEFAULT_LOG_FILES: u32 = 3;
/// `/dev/shm` defaults to half the memory limit, at most this.
const DEFAULT_SHM_CAP: u64 = 8 << 30;

/// `[limits]`: what a session gets when its create names nothing, and the most it may ask for.
/// Unset values are derived from the host when a session is created (see `resolve`). The same
/// table, under `[limits.profile."<name>"]`, overrides them for sessions on that MIG profile.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Memory limit (swap included: a session gets no swap beyond it).
    pub memory: Option<ByteSize>,
    pub cpus: Option<f64>,
    pub shm_size: Option<ByteSize>,
    pub max_memory: Option<ByteSize>,
    pub max_cpus: Option<f64>,
    pub max_shm_size: Option<ByteSize>,
    /// Size at which the engine rotates the container's log (json-file `max-size`); 10m.
    pub log_size: Option<ByteSize>,
    /// Rotated log files kept (json-file `max-file`); 3.
    pub log_files: Option<u32>,
    /// Size limit of the container's writable layer (`--storage-opt size=`); unset: none. Needs a
    /// storage driver that can enforce it (see `disk::layer_limit_possible`).
    pub writable_layer: Option<ByteSize>,
    /// The most a create may ask for; default: `writable_layer` where set, else no maximum.
    pub max_writable_layer: Option<ByteSize>,
    /// Overrides for sessions on one MIG profile (in `[limits]` only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub profile: BTreeMap<String, Limits>,
}

/// The keys of `[limits]` that a `SANDMAN_LIMITS_<KEY>` variable may set.
pub const SCALAR_KEYS: &[&str] = &[
    "memory",
    "cpus",
    "shm_size",
    "max_memory",
    "max_cpus",
    "max_shm_size",
    "log_size",
    "log_files",
    "writable_layer",
    "max_writable_layer",
];

/// What one create asks for; `None` takes the default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitRequest {
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub shm_size: Option<u64>,
    pub writable_layer: Option<u64>,
}

/// The limits one session runs under, as stored on its row and given to the engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionLimits {
    pub memory: u64,
    pub cpus: f64,
    pub shm_size: u64,
    pub pids: i64,
    pub log_size: u64,
    pub log_files: u32,
    /// Size limit of the container's writable layer; `None`: none.
    pub writable_layer: Option<u64>,
}

impl SessionLimits {
    /// CPUs as the engine takes them, in billionths.
    pub fn nano_cpus(&self) -> i64 {
        (self.cpus * 1e9).round() as i64
    }
}

/// What the host has, the base of the derived defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Host {
    pub memory: u64,
    pub cpus: u32,
}

impl Host {
    /// This machine: `MemTotal` of /proc/meminfo and the CPUs this process may use.
    pub fn detect() -> Host {
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
            })
            .unwrap_or(4 << 30);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Host { memory, cpus }
    }
}

/// Derived sizes are whole MiB, so that they read well (`6026m`, not `6170896k`).
fn whole_mib(bytes: u64) -> u64 {
    bytes & !((1 << 20) - 1)
}

/// One limit's values after the profile's overrides, with the setting that set the maximum.
struct Bound<T> {
    default: Option<T>,
    max: T,
    max_name: String,
}

impl Limits {
    /// Checks the settings themselves: each default within its maximum.
    pub fn check(&self, host: Host) -> anyhow::Result<()> {
        let scopes = std::iter::once(None).chain(self.profile.keys().map(|p| Some(p.as_str())));
        for profile in scopes {
            let probe = LimitRequest::default();
            self.resolve(&probe, profile, 0, host).map_err(|e| {
                anyhow::anyhow!(
                    "[limits{}]: the defaults do not fit the maxima: {e}",
                    profile.map(|p| format!(".profile.\"{p}\"")).unwrap_or_default()
                )
            })?;
        }
        let tables = self.profile.iter().map(|(p, l)| (format!("[limits.profile.\"{p}\"]"), l, true));
        for (name, table, is_profile) in std::iter::once(("[limits]".to_string(), self, false)).chain(tables) {
            if table.log_files == Some(0) {
                anyhow::bail!("{name} log_files must be at least 1");
            }
            if is_profile && !table.profile.is_empty() {
                anyhow::bail!("{name} cannot hold profiles of its own");
            }
        }
        Ok(())
    }

    /// The writable-layer size some session may get: what the request asks, else the first
    /// `writable_layer` of `[limits]` or of a profile. A host whose storage cannot enforce it
    /// refuses such creates before anything is reserved.
    pub fn writable_layer_wanted(&self, req: &LimitRequest) -> Option<u64> {
        req.writable_layer
            .or(self.writable_layer.map(|s| s.0))
            .or_else(|| self.profile.values().find_map(|l| l.writable_layer.map(|s| s.0)))
    }

    fn bound<T: Copy>(
        &self,
        profile: Option<&str>,
        get: impl Fn(&Limits) -> Option<T>,
        get_max: impl Fn(&Limits) -> Option<T>,
        key: &str,
        (fallback_max, fallback_name): (T, &str),
    ) -> Bound<T> {
        let over = profile.and_then(|p| self.profile.get(p).map(|l| (p, l)));
        let default = over.and_then(|(_, l)| get(l)).or_else(|| get(self));
        let (max, max_name) = match over.and_then(|(p, l)| get_max(l).map(|m| (p, m))) {
            Some((p, m)) => (m, format!("max_{key} of [limits.profile.\"{p}\"]")),
            None => match get_max(self) {
                Some(m) => (m, format!("max_{key} in [limits]")),
                None => (fallback_max, fallback_name.to_string()),
            },
        };
        Bound { default, max, max_name }
    }

    /// The limits of a session on `profile` (None: no GPU or a whole GPU), for what was asked.
    /// Unset defaults come from the host: memory a quarter of its RAM, half its CPUs (at least
    /// one), `/dev/shm` half the memory limit up to 8g. Above a maximum is an invalid request
    /// naming the maximum.
    pub fn resolve(&self, req: &LimitRequest, profile: Option<&str>, pids: i64, host: Host) -> Result<SessionLimits> {
        let above = |field: &'static str, value: String, max: String, name: &str| {
            Err(Error::invalid(field, format!("{value} is above the maximum {max} ({name})")))
        };
        let memory = self.bound(
            profile,
            |l| l.memory.map(|s| s.0),
            |l| l.max_memory.map(|s| s.0),
            "memory",
            (host.memory, "the host's memory"),
        );
        let memory_value = req.memory.or(memory.default).unwrap_or_else(|| whole_mib(host.memory / 4).min(memory.max));
        if memory_value > memory.max {
            let size = validate::format_size;
            return above("memory", size(memory_value), size(memory.max), &memory.max_name);
        }
        if memory_value < MIN_MEMORY {
            return Err(Error::invalid(
                "memory",
                format!(
                    "{} is below the minimum {}",
                    validate::format_size(memory_value),
                    validate::format_size(MIN_MEMORY)
                ),
            ));
        }

        let cpus =
            self.bound(profile, |l| l.cpus, |l| l.max_cpus, "cpus", (f64::from(host.cpus), "the host's CPU count"));
        let cpus_value = req.cpus.or(cpus.default).unwrap_or_else(|| f64::from((host.cpus / 2).max(1)).min(cpus.max));
        let cpus_value = validate::cpus(cpus_value, cpus.max, &cpus.max_name)?;

        let shm = self.bound(
            profile,
            |l| l.shm_size.map(|s| s.0),
            |l| l.max_shm_size.map(|s| s.0),
            "shm_size",
            (memory_value, "the session's memory limit"),
        );
        let shm_value = req
            .shm_size
            .or(shm.default)
            .unwrap_or_else(|| whole_mib(memory_value / 2).min(DEFAULT_SHM_CAP).min(shm.max));
        let size = validate::format_size;
        if shm_value > shm.max {
            return above("shm_size", size(shm_value), size(shm.max), &shm.max_name);
        }
        // /dev/shm is memory: its pages count against the session's memory limit.
        if shm_value > memory_value {
            return above("shm_size", size(shm_value), size(memory_value), "the session's memory limit");
        }
        let layer = self.bound(
            profile,
            |l| l.writable_layer.map(|s| s.0),
            |l| l.max_writable_layer.map(|s| s.0),
            "writable_layer",
            (u64::MAX, ""),
        );
        // Without a maximum the default is the most a create may ask for (none: any size).
        let (layer_max, layer_max_name) = match (layer.max, layer.default) {
            (u64::MAX, Some(default)) => {
                let scope = match profile.filter(|p| self.profile.get(*p).is_some_and(|l| l.writable_layer.is_some())) {
                    Some(p) => format!("writable_layer of [limits.profile.\"{p}\"]"),
                    None => "writable_layer in [limits]".to_string(),
                };
                (default, scope)
            }
            (max, _) => (max, layer.max_name),
        };
        let layer_value = req.writable_layer.or(layer.default);
        if let Some(v) = layer_value.filter(|v| *v > layer_max) {
            return above("writable_layer", size(v), size(layer_max), &layer_max_name);
        }
        Ok(SessionLimits {
            memory: memory_value,
            cpus: cpus_value,
            shm_size: shm_value,
            pids,
            log_size: self
                .bound(profile, |l| l.log_size.map(|s| s.0), |_| None, "log_size", (0, ""))
                .default
                .unwrap_or(DEFAULT_LOG_SIZE),
            log_files: self
                .bound(profile, |l| l.log_files, |_| None, "log_files", (0, ""))
                .default
                .unwrap_or(DEFAULT_LOG_FILES),
            writable_layer: layer_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;
    const HOST: Host = Host { memory: 64 * G, cpus: 16 };

    fn limits(toml_text: &str) -> Limits {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn a_fresh_install_derives_safe_defaults_from_the_host() {
        let l = Limits::default().resolve(&LimitRequest::default(), None, 1024, HOST).unwrap();
        assert_eq!(
            l,
            SessionLimits {
                memory: 16 * G,
                cpus: 8.0,
                shm_size: 8 * G,
                pids: 1024,
                log_size: 10 << 20,
                log_files: 3,
                writable_layer: None
            }
        );
        let small = Host { memory: 4 * G, cpus: 1 };
        let l = Limits::default().resolve(&LimitRequest::default(), None, 1, small).unwrap();
        assert_eq!((l.memory, l.cpus, l.shm_size), (G, 1.0, G / 2));
        assert!(Limits::default().check(small).is_ok());
    }

    #[test]
    fn profiles_override_defaults_and_maxima() {
        let l = limits(
            r#"memory = "8g"
               max_memory = "16g"
               max_cpus = 4
               [profile."7g.80gb"]
               memory = "32g"
               max_memory = "48g"
               cpus = 8
               max_cpus = 12"#,
        );
        assert!(l.check(HOST).is_ok());
        let big = l.resolve(&LimitRequest::default(), Some("7g.80gb"), 1, HOST).unwrap();
        assert_eq!((big.memory, big.cpus, big.shm_size), (32 * G, 8.0, 8 * G));
        let small = l.resolve(&LimitRequest::default(), Some("1g.10gb"), 1, HOST).unwrap();
        assert_eq!(
            (small.memory, small.cpus, small.shm_size),
            (8 * G, 4.0, 4 * G),
            "cpus: half the host, capped at max_cpus"
        );

        let ask = LimitRequest { memory: Some(40 * G), cpus: Some(10.0), shm_size: Some(G), writable_layer: None };
        assert_eq!(l.resolve(&ask, Some("7g.80gb"), 1, HOST).unwrap().memory, 40 * G);
        let e = l.resolve(&ask, Some("1g.10gb"), 1, HOST).unwrap_err().to_string();
        assert_eq!(e, "invalid memory: 40g is above the maximum 16g (max_memory in [limits])");
        let e = l.resolve(&LimitRequest { memory: Some(49 * G), ..ask }, Some("7g.80gb"), 1, HOST).unwrap_err();
        assert!(e.to_string().contains("48g (max_memory of [limits.profile.\"7g.80gb\"])"), "{e}");
        let e = l.resolve(&LimitRequest { cpus: Some(5.0), ..Default::default() }, None, 1, HOST).unwrap_err();
        assert!(e.to_string().contains("5 is above the maximum 4 (max_cpus in [limits])"), "{e}");
    }

    #[test]
    fn shm_fits_in_memory_and_sizes_are_checked() {
        let l = Limits::default();
        let e = l
            .resolve(&LimitRequest { memory: Some(G), shm_size: Some(2 * G), ..Default::default() }, None, 1, HOST)
            .unwrap_err();
        assert!(e.to_string().contains("shm_size: 2g is above the maximum 1g (the session's memory limit)"), "{e}");
        let e = l.resolve(&LimitRequest { memory: Some(1 << 20), ..Default::default() }, None, 1, HOST).unwrap_err();
        assert!(e.to_string().contains("1m is below the minimum 32m"), "{e}");
        let e = l.resolve(&LimitRequest { memory: Some(65 * G), ..Default::default() }, None, 1, HOST).unwrap_err();
        assert!(e.to_string().contains("above the maximum 64g (the host's memory)"), "{e}");
    }

    #[test]
    fn bad_settings_are_named() {
        let e = toml::from_str::<Limits>("memory = \"16q\"").unwrap_err().to_string();
        assert!(e.contains("16q") && e.contains("memory"), "{e}");
        let e = toml::from_str::<Limits>("memroy = \"16g\"").unwrap_err().to_string();
        assert!(e.contains("memroy"), "{e}");
        let e = limits("memory = \"32g\"\nmax_memory = \"16g\"").check(HOST).unwrap_err().to_string();
        assert!(e.contains("[limits]") && e.contains("32g is above the maximum 16g"), "{e}");
        let e = limits("log_files = 0").check(HOST).unwrap_err().to_string();
        assert!(e.contains("[limits] log_files must be at least 1"), "{e}");
        let e = limits("[profile.a.profile.b]\ncpus = 1").check(HOST).unwrap_err().to_string();
        assert!(e.contains("[limits.profile.\"a\"] cannot hold profiles"), "{e}");
        let l = limits("log_size = \"1m\"\n[profile.big]\nlog_files = 9");
        let big = l.resolve(&LimitRequest::default(), Some("big"), 1, HOST).unwrap();
        assert_eq!((big.log_size, big.log_files), (1 << 20, 9), "a profile's log setting wins, [limits]' stays");
        let e = limits("[profile.\"3g.40gb\"]\ncpus = 20").check(HOST).unwrap_err().to_string();
        assert!(e.contains("[limits.profile.\"3g.40gb\"]") && e.contains("20 is above"), "{e}");
    }

    #[test]
    fn the_writable_layer_is_unlimited_unless_set_and_a_create_stays_within_its_maximum() {
        let none = Limits::default();
        assert_eq!(none.resolve(&LimitRequest::default(), None, 1, HOST).unwrap().writable_layer, None);
        assert_eq!(none.writable_layer_wanted(&LimitRequest::default()), None);
        let ask = LimitRequest { writable_layer: Some(G), ..Default::default() };
        assert_eq!(none.resolve(&ask, None, 1, HOST).unwrap().writable_layer, Some(G), "no maximum without a default");
        assert_eq!(none.writable_layer_wanted(&ask), Some(G));

        let l =
            limits("writable_layer = \"20g\"\n[profile.big]\nwritable_layer = \"50g\"\nmax_writable_layer = \"80g\"");
        assert!(l.check(HOST).is_ok());
        assert_eq!(l.resolve(&LimitRequest::default(), None, 1, HOST).unwrap().writable_layer, Some(20 * G));
        assert_eq!(l.resolve(&LimitRequest::default(), Some("big"), 1, HOST).unwrap().writable_layer, Some(50 * G));
        let e = l.resolve(&LimitRequest { writable_layer: Some(30 * G), ..ask }, None, 1, HOST).unwrap_err();
        assert_eq!(e.to_string(), "invalid writable_layer: 30g is above the maximum 20g (writable_layer in [limits])");
        let big = l.resolve(&LimitRequest { writable_layer: Some(60 * G), ..ask }, Some("big"), 1, HOST).unwrap();
        assert_eq!(big.writable_layer, Some(60 * G));
        let e = l.resolve(&LimitRequest { writable_layer: Some(90 * G), ..ask }, Some("big"), 1, HOST).unwrap_err();
        assert!(e.to_string().contains("80g (max_writable_layer of [limits.profile.\"big\"])"), "{e}");

        let only_profile = limits("[profile.big]\nwritable_layer = \"5g\"");
        assert_eq!(only_profile.writable_layer_wanted(&LimitRequest::default()), Some(5 * G));
        let e = limits("writable_layer = \"8g\"\nmax_writable_layer = \"4g\"").check(HOST).unwrap_err().to_string();
        assert!(e.contains("8g is above the maximum 4g"), "{e}");
    }
}
