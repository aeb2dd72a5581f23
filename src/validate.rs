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
