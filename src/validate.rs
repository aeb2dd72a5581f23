//! Checks on values that come from users and clients. Each error names the value and the rule.

use crate::error::{Error, Result};

/// Names that belong to the system inside any image; a session user may not take them.
pub const RESERVED_USERS: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nogroup",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "messagebus",
    "sshd",
    "_apt",
    "admin",
    "adm",
    "wheel",
    "sudo",
    "staff",
    "operator",
    "halt",
    "shutdown",
    "docker",
    "sandman",
    "ubuntu",
    "debian",
];

/// A login name: `^[a-z_][a-z0-9_-]{0,31}$`, not reserved. It becomes a host path, a container
/// name and a passwd entry, so nothing else may pass.
pub fn user_name(name: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid("user", format!("{name:?} {why}")));
    if name.is_empty() {
        return Err(Error::invalid("user", "the user name is empty"));
    }
    if name.len() > 32 {
        return bad(&format!("is {} characters long; the limit is 32", name.chars().count()));
    }
    let first = name.as_bytes()[0];
    if !(first.is_ascii_lowercase() || first == b'_') {
        return bad("must start with a lowercase letter a-z or '_'");
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')) {
        return bad(&format!("contains {c:?}; only a-z, 0-9, '_' and '-' are allowed"));
    }
    if RESERVED_USERS.contains(&name) {
        return bad("is a reserved system account name");
    }
    Ok(())
}

/// TTL in minutes, 1..=max. Signed so that a negative request gets a precise message.
pub fn ttl_minutes(ttl: i64, max: u32) -> Result<u32> {
    if ttl < 1 || ttl > i64::from(max) {
        return Err(Error::invalid("ttl_minutes", format!("{ttl} is out of range; use 1 to {max} minutes")));
    }
    Ok(ttl as u32)
}

/// A Docker image reference: a conservative subset of `[registry/]name[:tag][@digest]`.
pub fn image_reference(image: &str) -> Result<()> {
    if image.len() <= 255 && is_image_reference(image) {
        return Ok(());
    }
    Err(Error::invalid(
        "image",
        format!("{image:?} is not a valid image reference (lower-case name[:tag][@digest], as Docker spells them)"),
    ))
}

/// Docker's reference grammar: `[domain[:port]/]path[:tag][@digest]`, where the path's
/// components are lower-case (the engine refuses `H` with an error of its own).
fn is_image_reference(image: &str) -> bool {
    let (rest, digest) = image.split_once('@').map_or((image, None), |(r, d)| (r, Some(d)));
    let digest_ok = digest.is_none_or(|d| {
        d.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty()
                && alg.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && hex.len() >= 3
                && hex.chars().all(|c| c.is_ascii_hexdigit())
        })
    });
    // A ':' after the last '/' starts the tag; one before it belongs to a registry's port.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].find(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    let tag_ok = tag.is_none_or(|t| {
        (1..=128).contains(&t.len())
            && t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    });
    let mut parts: Vec<&str> = name.split('/').collect();
    let is_domain = |p: &str| parts.len() > 1 && (p.contains('.') || p.contains(':') || p == "localhost");
    if is_domain(parts[0]) {
        let domain = parts.remove(0);
        let (host, port) = domain.split_once(':').map_or((domain, None), |(h, p)| (h, Some(p)));
        let host_ok = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !host_ok || port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
            return false;
        }
    }
    let component_ok = |c: &str| {
        let bytes = c.as_bytes();
        !c.is_empty()
            && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && !c.contains("..")
    };
    digest_ok && tag_ok && !parts.is_empty() && parts.iter().all(|c| component_ok(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for good in ["alice", "_svc", "a", "bob-2", "x_y", &"a".repeat(32)] {
            assert!(user_name(good).is_ok(), "{good}");
        }
        let cases = [
            ("", "the user name is empty"),
            ("../x", "must start with a lowercase letter"),
            ("Root", "must start with a lowercase letter"),
            ("root", "reserved"),
            ("sshd", "reserved"),
            ("al ice", "contains ' '"),
            ("x;id", "contains ';'"),
            ("jos\u{e9}", "contains '\u{e9}'"),
            ("aB", "contains 'B'"),
        ];
        for (name, want) in cases {
            let e = user_name(name).unwrap_err().to_string();
            assert!(e.contains(want), "{name:?}: {e}");
        }
        assert!(user_name(&"a".repeat(40)).unwrap_err().to_string().contains("40 characters"));
    }

    #[test]
    fn ttls() {
        assert_eq!(ttl_minutes(60, 100).unwrap(), 60);
        assert_eq!(ttl_minutes(100, 100).unwrap(), 100);
        for bad in [0, -1, 101, i64::MAX] {
            let e = ttl_minutes(bad, 100).unwrap_err().to_string();
            assert!(e.contains(&bad.to_string()) && e.contains("1 to 100"), "{e}");
        }
    }

    #[test]
    fn images() {
        for good in
            ["gpu-workspace", "registry.local:5000/lab/ws:1.2", "ws@sha256:abc", "ws:V1_x", "Reg.Example/a/b", "a/b_c"]
        {
            assert!(image_reference(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "a;b", "../x", "a//b", "Ünï", "H", "Lab/ws", "ws:", "ws:-x", "a-", "ws@sha256:xyz"]
        {
            assert!(image_reference(bad).is_err(), "{bad}");
        }
    }
}

/// A TTL typed by a person: the text is kept for the message when it is not a number at all
/// or too large for one.
pub fn ttl_text(text: &str, max: u32) -> Result<u32> {
    let t = text.trim();
    match t.parse::<i64>() {
        Ok(n) => ttl_minutes(n, max),
        Err(_) if !t.is_empty() && t.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()) => {
            Err(Error::invalid("ttl_minutes", format!("{t} is out of range; use 1 to {max} minutes")))
        }
        Err(_) => Err(Error::invalid("ttl_minutes", format!("{text:?} is not a whole number of minutes"))),
    }
}

#[cfg(test)]
mod ttl_text_tests {
    use super::*;

    #[test]
    fn typed_ttls() {
        assert_eq!(ttl_text(" 30 ", 60).unwrap(), 30);
        let huge = "99999999999999999999999";
        assert_eq!(
            ttl_text(huge, 60).unwrap_err().to_string(),
            format!("invalid ttl_minutes: {huge} is out of range; use 1 to 60 minutes")
        );
        assert_eq!(
            ttl_text("1h", 60).unwrap_err().to_string(),
            "invalid ttl_minutes: \"1h\" is not a whole number of minutes"
        );
    }
}

const KIB: u64 = 1024;
const UNITS: [(char, u64); 4] = [('k', KIB), ('m', KIB * KIB), ('g', KIB * KIB * KIB), ('t', KIB * KIB * KIB * KIB)];

/// A size as Docker writes them: bytes (`1048576`, `100b`), or a number with a binary unit
/// `k`, `m`, `g`, `t` (`512m`, `16g`, `1.5g`; a trailing `b` or `ib` is allowed, case does not
/// matter). `field` names the value in the error.
pub fn size(field: &'static str, text: &str) -> Result<u64> {
    let bad = |why: &str| {
        Err(Error::invalid(field, format!("{text:?} {why}; write bytes or a size such as 512m, 16g or 1.5g")))
    };
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix("ib").or_else(|| t.strip_suffix('b')).unwrap_or(&t);
    let (number, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => match UNITS.iter().find(|(u, _)| *u == c) {
            Some((_, factor)) => (&t[..i], *factor),
            None => return bad(&format!("has an unknown unit {c:?}")),
        },
        _ => (t, 1),
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') || number.matches('.').count() > 1 {
        return bad("is not a size");
    }
    let value: f64 = match number.parse() {
        Ok(v) => v,
        Err(_) => return bad("is not a size"),
    };
    let bytes = (value * unit as f64).round();
    if bytes < 1.0 {
        return bad("is zero");
    }
    // Far above any host's memory or disk, and below i64::MAX, which the engine takes.
    if bytes > (1u64 << 60) as f64 {
        return bad("is too large");
    }
    Ok(bytes as u64)
}

/// `bytes` the way `size` reads it back: the largest unit that divides it, else bytes.
pub fn format_size(bytes: u64) -> String {
    for (unit, factor) in UNITS.iter().rev() {
        if bytes >= *factor && bytes.is_multiple_of(*factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

/// A CPU count: more than zero, at most `max` (fractions allowed: `1.5`).
pub fn cpus(value: f64, max: f64, max_name: &str) -> Result<f64> {
    if !value.is_finite() || value < 0.01 {
        return Err(Error::invalid("cpus", format!("{value} is not a CPU count; use a number from 0.01 up")));
    }
    if value > max {
        return Err(Error::invalid("cpus", format!("{value} is above the maximum {max} ({max_name})")));
    }
    Ok(value)
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn sizes_parse_once_and_read_back() {
        let g = 1u64 << 30;
        for (text, want) in [
            ("512m", 512 << 20),
            ("16g", 16 * g),
            ("16G", 16 * g),
            ("16GiB", 16 * g),
            ("1.5g", 3 * g / 2),
            ("1048576", 1 << 20),
            ("100b", 100),
            (" 10m ", 10 << 20),
            ("2t", 2 << 40),
        ] {
            assert_eq!(size("memory", text).unwrap(), want, "{text}");
        }
        for (text, why) in [
            ("", "is not a size"),
            ("g", "is not a size"),
            ("-1g", "is not a size"),
            ("1.2.3g", "is not a size"),
            ("16x", "unknown unit 'x'"),
            ("0", "is zero"),
            ("0.1b", "is zero"),
            ("99999999t", "too large"),
            ("sixteen", "unknown unit"),
        ] {
            let e = size("shm_size", text).unwrap_err().to_string();
            assert!(e.contains("shm_size") && e.contains(&format!("{text:?}")) && e.contains(why), "{text}: {e}");
        }
        for bytes in [1, 100, 1 << 20, 3 * g / 2, 16 * g, (1 << 20) + 1] {
            assert_eq!(size("memory", &format_size(bytes)).unwrap(), bytes);
        }
        assert_eq!(format_size(16 * g), "16g");
        assert_eq!(format_size(3 * g / 2), "1536m");
    }

    #[test]
    fn cpu_counts() {
        assert_eq!(cpus(1.5, 4.0, "max_cpus").unwrap(), 1.5);
        let e = cpus(8.0, 4.0, "max_cpus").unwrap_err().to_string();
        assert!(e.contains("8 is above the maximum 4 (max_cpus)"), "{e}");
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(cpus(bad, 4.0, "max_cpus").unwrap_err().to_string().contains("not a CPU count"), "{bad}");
        }
    }
}
