//! SSH material and the sshd set-up inside a session container: client and host keys, the
//! sshd configuration, passwd/group entries, and the readiness probe.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};

/// Port sshd listens on inside the container (unprivileged: sshd runs as the user).
pub const CONTAINER_SSH_PORT: u16 = 2222;
/// Where sandman puts its sshd files inside the container; root-owned, so the user cannot edit them.
pub const CONFIG_DIR: &str = "etc/sandman";

/// Where the user's own keys appear inside the container: a read-only bind of a per-user host
/// directory that sandman rewrites whenever the user's keys change (see `sessions::keys`).
pub const USER_KEYS_DIR: &str = "etc/sandman/keys";

/// Written after every other file; the container's command waits for it before starting sshd.
pub const READY_FILE: &str = "etc/sandman/ready";

/// The container's command: wait for sandman's files, then run sshd as the user in the
/// foreground, logging to stderr (the container log).
pub fn container_command() -> Vec<String> {
    let script = format!(
        "until [ -e /{READY_FILE} ]; do sleep 0.01; done; exec /usr/sbin/sshd -D -e -f /{CONFIG_DIR}/sshd_config"
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

/// A fresh ed25519 key pair: (private key in OpenSSH format, public key line).
pub fn generate_key_pair(comment: &str) -> Result<(String, String)> {
    let mut key =
        PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).context("cannot generate an ed25519 key")?;
    key.set_comment(comment);
    let private = key.to_openssh(LineEnding::LF).context("cannot encode private key")?;
    let public = key.public_key().to_openssh().context("cannot encode public key")?;
    Ok((private.to_string(), public))
}

/// Checks a user-supplied public key and returns it as one clean `authorized_keys` line.
pub fn parse_public_key(text: &str) -> Result<String> {
    let line = text.trim();
    if line.lines().count() != 1 {
        return Err(Error::invalid("public key", "expected exactly one OpenSSH public key line"));
    }
    let key = PublicKey::from_openssh(line)
        .map_err(|e| Error::invalid("public key", format!("not an OpenSSH public key ({e}): {:.40}", line)))?;
    Ok(key.to_openssh().context("cannot encode public key")?)
}

/// The `SHA256:…` fingerprint of a public key line (as `parse_public_key` returns).
pub fn public_key_fingerprint(line: &str) -> Result<String> {
    let key = PublicKey::from_openssh(line)
        .map_err(|e| Error::invalid("public key", format!("not an OpenSSH public key ({e}): {:.40}", line)))?;
    Ok(key.fingerprint(HashAlg::Sha256).to_string())
}

/// Public half of a stored host key: (`ssh-ed25519 AAAA…` line, `SHA256:…` fingerprint).
pub fn host_public_key(private_openssh: &str) -> Result<(String, String)> {
    let key = PrivateKey::from_openssh(private_openssh).context("stored host key is unreadable")?;
    let public = key.public_key();
    let line = public.to_openssh().context("cannot encode host key")?;
    Ok((line, public.fingerprint(HashAlg::Sha256).to_string()))
}

/// sshd as the unprivileged user: key-only, no PAM (it cannot work under no-new-privileges),
/// keys and config owned by root so the user cannot change who may log in.
pub fn sshd_config(user: &str, gpu: Option<&str>) -> String {
    // sshd does not pass the container's environment to logins: set the locale (so non-ASCII
    // text is typed and shown intact) and name the GPU for them here, on one line because sshd
    // keeps only the first SetEnv directive.
    let gpu = gpu.map(|g| format!(" NVIDIA_VISIBLE_DEVICES={g} SANDMAN_GPU={g}")).unwrap_or_default();
    let env = format!("SetEnv LANG=C.UTF-8{gpu}\n");
    format!(
        "# Written by sandman for this session.
Port {CONTAINER_SSH_PORT}
HostKey /{CONFIG_DIR}/ssh_host_ed25519_key
AuthorizedKeysFile /{CONFIG_DIR}/authorized_keys /{USER_KEYS_DIR}/authorized_keys
PidFile none
UsePAM no
PermitRootLogin no
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
AllowAgentForwarding yes
X11Forwarding no
PrintMotd no
PrintLastLog no
Subsystem sftp internal-sftp
{env}"
    )
}

pub fn passwd_entry(user: &str, uid: u32) -> String {
    format!("{user}:x:{uid}:{uid}:sandman user {user}:/home/{user}:/bin/bash\n")
}

pub fn group_entry(user: &str, uid: u32) -> String {
    format!("{user}:x:{uid}:\n")
}

/// `[host]:port key` for the user's known_hosts.
pub fn known_hosts_line(host: &str, port: u16, host_public: &str) -> String {
    format!("[{host}]:{port} {}", key_without_comment(host_public))
}

/// A public key line's type and data, without its comment.
fn key_without_comment(public: &str) -> String {
    public.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// The name a user's session goes by in ssh configs and known_hosts, whatever its port.
pub fn host_alias(user: &str) -> String {
    format!("sandman-{user}")
}

/// An OpenSSH client `Host` block for the user's session. `HostKeyAlias` makes the client look
/// the host key up under the alias rather than `[host]:port`, so one known_hosts line stays
/// valid when the port changes; `IdentitiesOnly` keeps an agent with many keys from using up
/// the server's authentication attempts before the right key is offered.
pub fn ssh_config(user: &str, host: &str, port: u16, identity_file: Option<&str>) -> String {
    let alias = host_alias(user);
    let identity = identity_file.map(|f| format!("    IdentityFile {f}\n")).unwrap_or_default();
    format!(
        "Host {alias}\n    HostName {host}\n    Port {port}\n    User {user}\n{identity}    IdentitiesOnly yes\n    HostKeyAlias {alias}\n"
    )
}

/// The known_hosts line for the `ssh_config` block's alias.
pub fn alias_known_hosts_line(user: &str, host_public: &str) -> String {
    format!("{} {}", host_alias(user), key_without_comment(host_public))
}

/// Waits until something at `addr` speaks SSH (sends an `SSH-` banner). Connecting alone is not
/// enough: Docker's port proxy accepts connections before sshd listens.
pub async fn wait_for_banner(addr: SocketAddr, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut last_error = String::from("no answer");
    while start.elapsed() < timeout {
        match read_banner(addr).await {
            Ok(()) => return Ok(start.elapsed()),
            Err(e) => last_error = e,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(Error::Unavailable(format!(
        "sshd did not answer on {addr} within {}s (last: {last_error}); see the container's log",
        timeout.as_secs()
    )))
}

async fn read_banner(addr: SocketAddr) -> std::result::Result<(), String> {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf == b"SSH-" { Ok(()) } else { Err(format!("unexpected greeting {:?}", String::from_utf8_lossy(&buf))) }
    };
    tokio::time::timeout(Duration::from_secs(2), probe).await.map_err(|_| "timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip() {
        let (private, public) = generate_key_pair("alice@sandman").unwrap();
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(public.starts_with("ssh-ed25519 ") && public.ends_with(" alice@sandman"), "{public}");
        assert_eq!(parse_public_key(&format!("  {public}\n")).unwrap(), public);
        let (line, fp) = host_public_key(&private).unwrap();
        assert_eq!(line, public);
        assert!(fp.starts_with("SHA256:"), "{fp}");
        assert_eq!(
            known_hosts_line("gpu1", 10001, &line),
            format!("[gpu1]:10001 {}", line.rsplit_once(' ').unwrap().0)
        );
    }

    #[test]
    fn ssh_config_names_the_alias_and_its_known_hosts_line() {
        let block = ssh_config("alice", "gpu1", 10001, Some("~/.ssh/alice.key"));
        assert_eq!(
            block,
            "Host sandman-alice\n    HostName gpu1\n    Port 10001\n    User alice\n    IdentityFile ~/.ssh/alice.key\n    \
             IdentitiesOnly yes\n    HostKeyAlias sandman-alice\n"
        );
        assert!(!ssh_config("alice", "gpu1", 10001, None).contains("IdentityFile"));
        assert_eq!(
            alias_known_hosts_line("alice", "ssh-ed25519 AAAAC3 host-alice"),
            "sandman-alice ssh-ed25519 AAAAC3"
        );
        let (_, public) = generate_key_pair("x").unwrap();
        assert!(public_key_fingerprint(&public).unwrap().starts_with("SHA256:"));
    }

    #[test]
    fn bad_public_keys_are_refused() {
        for bad in ["", "ssh-ed25519", "ssh-ed25519 AAAA", "hello world", "ssh-ed25519 AAAAC3 x\nssh-rsa AAAA y"] {
            let e = parse_public_key(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidInput { field: "public key", .. }), "{bad:?}: {e}");
        }
    }

    #[test]
    fn sshd_config_is_key_only_for_one_user() {
        let c = sshd_config("alice", None);
        assert!(c.contains("\nSetEnv LANG=C.UTF-8\n"), "{c}");
        let with_gpu = sshd_config("bob", Some("MIG-1"));
        assert!(
            with_gpu.contains("\nSetEnv LANG=C.UTF-8 NVIDIA_VISIBLE_DEVICES=MIG-1 SANDMAN_GPU=MIG-1\n"),
            "{with_gpu}"
        );
        assert_eq!(with_gpu.matches("SetEnv").count(), 1, "sshd reads only the first SetEnv");
        assert!(c.contains("AllowUsers alice\n"));
        assert!(
            c.contains("\nAuthorizedKeysFile /etc/sandman/authorized_keys /etc/sandman/keys/authorized_keys\n"),
            "the session's key file and the user's own keys: {c}"
        );
        assert!(c.contains("PasswordAuthentication no\n") && c.contains("UsePAM no\n"));
    }
}
