//! The egress policy of sessions: firewall rules on the session bridge that keep sessions away
//! from the host's own addresses and from blocked networks (169.254.0.0/16, cloud metadata).
//!
//! sandman owns two chains per bridge, `SANDMAN-IN-<bridge>` (jumped to from INPUT: traffic
//! from a session to any address of the host) and `SANDMAN-FWD-<bridge>` (jumped to from
//! DOCKER-USER: traffic the host forwards for a session). Each jump carries the comment
//! `sandman:<network>`, so sandman finds exactly its own rules, also after the network is gone;
//! it never changes a rule without that comment or a chain without its prefix. The rules only
//! reject or hand back (`RETURN`): they never accept anything the host's own rules refuse.
//!
//! `desired` is the pure part (settings and bridge in, rule lines out, in the form `iptables -S`
//! prints them); `plan_apply` and `plan_removal` compare with what `iptables -S` lists and write
//! an `iptables-restore --noflush` script, so that a change is one atomic transaction. `Runner`
//! runs iptables (`Iptables`) or keeps the rules in memory for tests (`Memory`).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use serde::Serialize;

use crate::config::Settings;
use crate::error::{Error, Result};

/// Every chain sandman makes starts with this.
pub const CHAIN_PREFIX: &str = "SANDMAN-";
const REJECT: &str = "-j REJECT --reject-with icmp-port-unreachable";
const ESTABLISHED: &str = "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN";

/// An IPv4 network, `a.b.c.d/n` (a bare address is `/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses one `blocked_cidrs` entry; the error names the value and what is wrong with it.
pub fn parse_cidr(text: &str) -> std::result::Result<Cidr, String> {
    let bad = |why: &str| format!("blocked_cidrs entry {text:?} {why}");
    let (addr, prefix) = match text.trim().split_once('/') {
        Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad("has no prefix length of 0 to 32 after '/'"))?),
        None => (text.trim(), 32),
    };
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad("is not an IPv4 network such as 169.254.0.0/16"))?;
    if prefix > 32 {
        return Err(bad("has a prefix length above 32"));
    }
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    let network = Ipv4Addr::from(u32::from(addr) & mask);
    if network != addr {
        return Err(bad(&format!("has host bits set: write {network}/{prefix}")));
    }
    Ok(Cidr { addr, prefix })
}

/// What the settings ask of the firewall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub block_host: bool,
    #[serde(serialize_with = "cidrs_as_text")]
    pub blocked_cidrs: Vec<Cidr>,
    pub allowed_host_ports: Vec<u16>,
}

fn cidrs_as_text<S: serde::Serializer>(cidrs: &[Cidr], s: S) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(cidrs.iter().map(Cidr::to_string))
}

impl Policy {
    /// The settings' policy (`Settings::check` has validated its values).
    pub fn from_settings(s: &Settings) -> Result<Policy> {
        let blocked_cidrs = s
            .blocked_cidrs
            .iter()
            .map(|c| parse_cidr(c))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::invalid("blocked_cidrs", e))?;
        let mut allowed_host_ports = Vec::new();
        for p in &s.allowed_host_ports {
            match u16::try_from(*p) {
                Ok(port) if port > 0 => allowed_host_ports.push(port),
                _ => {
                    return Err(Error::invalid(
                        "allowed_host_ports",
                        format!("allowed_host_ports entry {p} is not a port (1-65535)"),
                    ));
                }
            }
        }
        allowed_host_ports.sort_unstable();
        allowed_host_ports.dedup();
        Ok(Policy { block_host: s.block_host, blocked_cidrs, allowed_host_ports })
    }

    /// Whether any rule is wanted at all.
    pub fn enabled(&self) -> bool {
        self.block_host || !self.blocked_cidrs.is_empty()
    }
}

/// The names of sandman's two chains for a bridge (at most 27 characters: bridge names have at
/// most 15, iptables allows 28).
pub fn chains(bridge: &str) -> (String, String) {
    (format!("{CHAIN_PREFIX}IN-{bridge}"), format!("{CHAIN_PREFIX}FWD-{bridge}"))
}

/// The comment on sandman's jumps for `network`.
pub fn comment(network: &str) -> String {
    format!("sandman:{network}")
}

/// The rules sandman wants for a network, each as `iptables -S` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Rules {
    /// `SANDMAN-IN-<bridge>`'s rules, in order.
    pub input: Vec<String>,
    /// `SANDMAN-FWD-<bridge>`'s rules, in order.
    pub forward: Vec<String>,
    /// The jumps: one in INPUT, one in DOCKER-USER.
    pub jumps: Vec<String>,
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.input.is_empty() && self.forward.is_empty() && self.jumps.is_empty()
    }

    pub fn lines(&self) -> Vec<String> {
        self.jumps.iter().chain(&self.input).chain(&self.forward).cloned().collect()
    }
}

/// The rules `policy` asks for on `bridge` of `network`; none when the policy is off.
///
/// INPUT (a session to the host's own addresses): replies of established connections first
/// (a session's sshd answers docker-proxy and the reaper's probe through it), then the allowed
/// host ports, then the blocked networks, then, with `block_host`, everything else.
/// DOCKER-USER (forwarded): replies first, then the blocked networks; the chain's end returns
/// to Docker's own rules.
pub fn desired(policy: &Policy, network: &str, bridge: &str) -> Rules {
    if !policy.enabled() {
        return Rules::default();
    }
    let (input, forward) = chains(bridge);
    let mut rules = Rules::default();
    rules.input.push(format!("-A {input} {ESTABLISHED}"));
    for port in &policy.allowed_host_ports {
        for proto in ["tcp", "udp"] {
            rules.input.push(format!("-A {input} -p {proto} -m {proto} --dport {port} -j RETURN"));
        }
    }
    for cidr in &policy.blocked_cidrs {
        rules.input.push(format!("-A {input} -d {cidr} {REJECT}"));
    }
    if policy.block_host {
        rules.input.push(format!("-A {input} {REJECT}"));
    }
    rules.forward.push(format!("-A {forward} {ESTABLISHED}"));
    for cidr in &policy.blocked_cidrs {
        rules.forward.push(format!("-A {forward} -d {cidr} {REJECT}"));
    }
    let note = comment(network);
    rules.jumps.push(format!("-A INPUT -i {bridge} -m comment --comment {note} -j {input}"));
    rules.jumps.push(format!("-A DOCKER-USER -i {bridge} -m comment --comment {note} -j {forward}"));
    rules
}

/// A line of `iptables -S` with quotes dropped and spaces collapsed, for comparison.
fn normal(line: &str) -> String {
    line.replace('"', "").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `iptables -S` output, read: chains (built-in and user) and each chain's rules, in order.
#[derive(Debug, Default)]
pub struct Listing {
    pub chains: BTreeMap<String, Vec<String>>,
}

impl Listing {
    pub fn parse(text: &str) -> Listing {
        let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines().map(normal) {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["-P" | "-N", chain, ..] => {
                    chains.entry(chain.to_string()).or_default();
                }
                ["-A", chain, ..] => chains.entry(chain.to_string()).or_default().push(line.clone()),
                _ => {}
            }
        }
        Listing { chains }
    }

    fn rules(&self, chain: &str) -> &[String] {
        self.chains.get(chain).map(Vec::as_slice).unwrap_or_default()
    }

    /// sandman's jumps for `network` in INPUT and DOCKER-USER: (rule, its target chain).
    pub fn jumps(&self, network: &str) -> Vec<(String, String)> {
        let note = comment(network);
        ["INPUT", "DOCKER-USER"]
            .iter()
            .flat_map(|c| self.rules(c))
            .filter_map(|rule| {
                let words: Vec<&str> = rule.split(' ').collect();
                let tagged = words.windows(2).any(|w| w[0] == "--comment" && w[1] == note);
                let target = words.windows(2).find(|w| w[0] == "-j").map(|w| w[1])?;
                (tagged && target.starts_with(CHAIN_PREFIX)).then(|| (rule.clone(), target.to_string()))
            })
            .collect()
    }

    /// sandman's rules for `network` as they are now: its jumps and the chains they lead to.
    pub fn current(&self, network: &str) -> Vec<String> {
        let jumps = self.jumps(network);
        let mut lines: Vec<String> = jumps.iter().map(|(r, _)| r.clone()).collect();
        let mut seen = Vec::new();
        for (_, chain) in jumps {
            if !seen.contains(&chain) {
                lines.extend(self.rules(&chain).iter().cloned());
                seen.push(chain);
            }
        }
        lines
    }
}

/// The `iptables-restore --noflush` script that makes the rules of `network` what `want` says,
/// or `None` when they already are. Declaring a chain creates or flushes it; stale jumps (to
/// another bridge's chains, or repeated) are deleted with their chains.
pub fn plan_apply(listing: &Listing, network: &str, want: &Rules) -> Result<Option<String>> {
    let jumps = listing.jumps(network);
    let wanted_chains: Vec<String> =
        want.jumps.iter().filter_map(|j| j.rsplit(' ').next().map(str::to_string)).collect();
    let mut script = Vec::new();
    for (chain, rules) in wanted_chains.iter().zip([&want.input, &want.forward]) {
        if listing.rules(chain) != rules.as_slice() || !listing.chains.contains_key(chain) {
            script.push(format!(":{chain} - [0:0]"));
            script.extend(rules.iter().cloned());
        }
    }
    // Keep the first copy of each wanted jump; delete every other sandman jump of the network.
    let mut kept: Vec<&str> = Vec::new();
    let mut stale_chains: Vec<String> = Vec::new();
    for (rule, target) in &jumps {
        if want.jumps.contains(rule) && !kept.contains(&rule.as_str()) {
            kept.push(rule);
        } else {
            script.push(format!("-D{}", &rule[2..]));
            if !wanted_chains.contains(target) && !stale_chains.contains(target) {
                stale_chains.push(target.clone());
            }
        }
    }
    for jump in &want.jumps {
        if !kept.contains(&jump.as_str()) {
            let chain = jump.split(' ').nth(1).unwrap_or_default();
            if !listing.chains.contains_key(chain) {
                return Err(Error::Unavailable(format!(
                    "the {chain} chain is missing, so sandman's firewall rules cannot be hooked in: Docker makes it \
                     when it manages iptables (the default; check \"iptables\" in /etc/docker/daemon.json and restart \
                     Docker)"
                )));
            }
            script.push(format!("-I {chain} 1{}", &jump[3 + chain.len()..]));
        }
    }
    for chain in stale_chains {
        if !is_referenced_elsewhere(listing, &chain, network) {
            script.push(format!("-F {chain}"));
            script.push(format!("-X {chain}"));
        }
    }
    Ok((!script.is_empty()).then(|| restore_script(&script)))
}

/// The script that removes every rule sandman made for `network` (its jumps and their chains,
/// and the chains of `bridge` when given), or `None` when there is none.
pub fn plan_removal(listing: &Listing, network: &str, bridge: Option<&str>) -> Option<String> {
    let mut script = Vec::new();
    let mut chains = Vec::new();
    for (rule, target) in listing.jumps(network) {
        script.push(format!("-D{}", &rule[2..]));
        if !chains.contains(&target) {
            chains.push(target);
        }
    }
    if let Some(bridge) = bridge {
        let (input, forward) = self::chains(bridge);
        for chain in [input, forward] {
            if listing.chains.contains_key(&chain) && !chains.contains(&chain) {
                chains.push(chain);
            }
        }
    }
    for chain in chains {
        if listing.chains.contains_key(&chain) && !is_referenced_elsewhere(listing, &chain, network) {
            script.push(format!("-F {chain}"));
            script.push(format!("-X {chain}"));
        }
    }
    (!script.is_empty()).then(|| restore_script(&script))
}

/// Whether a rule other than `network`'s own jumps leads to `chain` (then it is kept).
fn is_referenced_elsewhere(listing: &Listing, chain: &str, network: &str) -> bool {
    let ours: Vec<String> = listing.jumps(network).into_iter().map(|(r, _)| r).collect();
    listing.chains.iter().filter(|(name, _)| name.as_str() != chain).flat_map(|(_, rules)| rules).any(|r| {
        !ours.contains(r) && r.split(' ').collect::<Vec<_>>().windows(2).any(|w| w[0] == "-j" && w[1] == chain)
    })
}

fn restore_script(lines: &[String]) -> String {
    let mut text = String::from("*filter\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

/// Whether the rules of `network` are what the policy wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub network: String,
    pub bridge: Option<String>,
    pub policy: Policy,
    /// sandman's rules for the network as the host has them now.
    pub current: Vec<String>,
    pub desired: Vec<String>,
    pub up_to_date: bool,
}

/// Runs iptables, or stands in for it.
pub trait Runner: Send + Sync {
    /// `iptables -S`: the filter table's chains and rules.
    fn list(&self) -> Result<String>;
    /// `iptables-restore --noflush` with `script` on its input.
    fn restore(&self, script: &str) -> Result<()>;
}

/// The host's iptables (`iptables -w`, `iptables-restore -w --noflush`; no shell).
pub struct Iptables;

impl Iptables {
    fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                Error::Unavailable(if e.kind() == std::io::ErrorKind::NotFound {
                    format!("{program} is not installed: install it (apt-get install iptables)")
                } else {
                    format!("cannot run {program}: {e}")
                })
            })?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).map_err(|e| Error::Unavailable(format!("cannot feed {program}: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| Error::Unavailable(format!("{program} failed: {e}")))?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let err: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.starts_with("# Warning"))
            .collect::<Vec<_>>()
            .join("; ");
        Err(Error::Unavailable(if err.contains("Permission denied") || err.contains("must be root") {
            format!("{program} was refused ({err}): run sandman as root")
        } else {
            format!("{program} {} failed: {err}", args.join(" "))
        }))
    }
}

impl Runner for Iptables {
    fn list(&self) -> Result<String> {
        Iptables::run("iptables", &["-w", "5", "-S"], None)
    }

    fn restore(&self, script: &str) -> Result<()> {
        Iptables::run("iptables-restore", &["-w", "5", "--noflush"], Some(script)).map(|_| ())
    }
}

/// An in-memory filter table for tests, with the built-in chains and DOCKER-USER; it applies
/// restore scripts the way iptables-restore does for the lines sandman writes.
#[derive(Default)]
pub struct Memory {
    table: Mutex<Vec<(String, Vec<String>)>>,
    /// When set, every call fails with this message (iptables missing, not root).
    pub fail: Mutex<Option<String>>,
}

impl Memory {
    pub fn new() -> Memory {
        let chains = ["INPUT", "FORWARD", "OUTPUT", "DOCKER-USER"];
        Memory {
            table: Mutex::new(chains.iter().map(|c| (c.to_string(), Vec::new())).collect()),
            fail: Mutex::new(None),
        }
    }

    fn check(&self) -> Result<()> {
        match self.fail.lock().unwrap().clone() {
            Some(m) => Err(Error::Unavailable(m)),
            None => Ok(()),
        }
    }
}

impl Runner for Memory {
    fn list(&self) -> Result<String> {
        self.check()?;
        let table = self.table.lock().unwrap();
        let mut out = String::new();
        for (chain, _) in table.iter() {
            let builtin = matches!(chain.as_str(), "INPUT" | "FORWARD" | "OUTPUT");
            out.push_str(&if builtin { format!("-P {chain} ACCEPT\n") } else { format!("-N {chain}\n") });
        }
        for (_, rules) in table.iter() {
            for r in rules {
                out.push_str(r);
                out.push('\n');
            }
        }
        Ok(out)
    }

    fn restore(&self, script: &str) -> Result<()> {
        self.check()?;
        let mut table = self.table.lock().unwrap();
        let mut next = table.clone();
        let find = |t: &mut Vec<(String, Vec<String>)>, chain: &str| -> Result<usize> {
            t.iter().position(|(c, _)| c == chain).ok_or_else(|| Error::Unavailable(format!("no chain {chain}")))
        };
        for line in script.lines().filter(|l| !matches!(*l, "*filter" | "COMMIT")) {
            let words: Vec<&str> = line.split(' ').collect();
            if let Some(chain) = words[0].strip_prefix(':') {
                match next.iter_mut().find(|(c, _)| c == chain) {
                    Some((_, rules)) => rules.clear(),
                    None => next.push((chain.to_string(), Vec::new())),
                }
                continue;
            }
            let chain = words.get(1).copied().unwrap_or_default();
            let i = find(&mut next, chain)?;
            match words[0] {
                "-A" => next[i].1.push(normal(line)),
                "-I" => {
                    let rest = words[3..].join(" ");
                    next[i].1.insert(0, normal(&format!("-A {chain} {rest}")));
                }
                "-D" => {
                    let rule = normal(&format!("-A{}", &line[2..]));
                    let at = next[i].1.iter().position(|r| *r == rule);
                    let at = at.ok_or_else(|| Error::Unavailable(format!("no rule {rule}")))?;
                    next[i].1.remove(at);
                }
                "-F" => next[i].1.clear(),
                "-X" => {
                    next.remove(i);
                }
                other => return Err(Error::Internal(anyhow::anyhow!("unknown restore line {other}"))),
            }
        }
        *table = next;
        Ok(())
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The rules were already right: one listing, nothing changed.
    Unchanged,
    Changed,
}

/// The status of `network`'s rules (bridge `bridge`, if the network exists).
pub fn status(runner: &dyn Runner, policy: &Policy, network: &str, bridge: Option<&str>) -> Result<Status> {
    let listing = Listing::parse(&runner.list()?);
    let desired = bridge.map(|b| desired(policy, network, b)).unwrap_or_default();
    let up_to_date = match bridge {
        Some(_) => plan_apply(&listing, network, &desired)?.is_none(),
        None => listing.jumps(network).is_empty(),
    };
    Ok(Status {
        network: network.to_string(),
        bridge: bridge.map(str::to_string),
        policy: policy.clone(),
        current: listing.current(network),
        desired: desired.lines(),
        up_to_date,
    })
}

/// Makes `network`'s rules what `policy` asks: nothing is run but one listing when they are.
pub fn apply(runner: &dyn Runner, policy: &Policy, network: &str, bridge: &str) -> Result<Applied> {
    let listing = Listing::parse(&runner.list()?);
    match plan_apply(&listing, network, &desired(policy, network, bridge))? {
        None => Ok(Applied::Unchanged),
        Some(script) => {
            runner.restore(&script)?;
            tracing::info!(network, bridge, "firewall rules of the session network installed");
            Ok(Applied::Changed)
        }
    }
}

/// Removes every rule sandman made for `network`; whether there were any.
pub fn remove(runner: &dyn Runner, network: &str, bridge: Option<&str>) -> Result<bool> {
    let listing = Listing::parse(&runner.list()?);
    match plan_removal(&listing, network, bridge) {
        None => Ok(false),
        Some(script) => runner.restore(&script).map(|()| true),
    }
}

/// The message of a create refused because the rules could not be installed.
pub fn install_failure(network: &str, bridge: &str, cause: &Error) -> Error {
    Error::Unavailable(format!(
        "cannot install the firewall rules that keep sessions on network {network} (bridge {bridge}) away from the \
         host and blocked_cidrs: {cause}; run sandman as root with iptables installed, or set block_host = false and \
         blocked_cidrs = [] to run sessions without them"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(block_host: bool, cidrs: &[&str], ports: &[u16]) -> Policy {
        Policy {
            block_host,
            blocked_cidrs: cidrs.iter().map(|c| parse_cidr(c).unwrap()).collect(),
            allowed_host_ports: ports.to_vec(),
        }
    }

    #[test]
    fn cidrs_are_checked_and_named() {
        assert_eq!(parse_cidr("169.254.0.0/16").unwrap().to_string(), "169.254.0.0/16");
        assert_eq!(parse_cidr("10.1.2.3").unwrap().to_string(), "10.1.2.3/32");
        for (bad, why) in [
            ("10.1.2.3/8", "host bits set: write 10.0.0.0/8"),
            ("fe80::/10", "not an IPv4 network"),
            ("10.0.0.0/33", "prefix length above 32"),
            ("10.0.0.0/x", "prefix length"),
            ("metadata", "not an IPv4 network"),
        ] {
            let e = parse_cidr(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")) && e.contains(why), "{e}");
        }
    }

    #[test]
    fn replies_come_first_then_allowed_ports_then_rejections() {
        let rules = desired(&policy(true, &["169.254.0.0/16"], &[53, 8443]), "worknet", "br-0123456789ab");
        assert_eq!(
            rules.input,
            [
                "-A SANDMAN-IN-br-0123456789ab -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                "-A SANDMAN-IN-br-0123456789ab -p tcp -m tcp --dport 53 -j RETURN",
                "-A SANDMAN-IN-br-0123456789ab -p udp -m udp --dport 53 -j RETURN",
                "-A SANDMAN-IN-br-0123456789ab -p tcp -m tcp --dport 8443 -j RETURN",
                "-A SANDMAN-IN-br-0123456789ab -p udp -m udp --dport 8443 -j RETURN",
                "-A SANDMAN-IN-br-0123456789ab -d 169.254.0.0/16 -j REJECT --reject-with icmp-port-unreachable",
                "-A SANDMAN-IN-br-0123456789ab -j REJECT --reject-with icmp-port-unreachable",
            ]
        );
        assert_eq!(
            rules.forward,
            [
                "-A SANDMAN-FWD-br-0123456789ab -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
                "-A SANDMAN-FWD-br-0123456789ab -d 169.254.0.0/16 -j REJECT --reject-with icmp-port-unreachable",
            ]
        );
        assert_eq!(
            rules.jumps,
            [
                "-A INPUT -i br-0123456789ab -m comment --comment sandman:worknet -j SANDMAN-IN-br-0123456789ab",
                "-A DOCKER-USER -i br-0123456789ab -m comment --comment sandman:worknet -j SANDMAN-FWD-br-0123456789ab",
            ]
        );
        // Chain names fit iptables' 28 characters for the longest bridge name (15).
        let (i, f) = chains("abcdefghijklmno");
        assert!(i.len() <= 28 && f.len() <= 28, "{i} {f}");
    }

    #[test]
    fn without_block_host_only_the_blocked_networks_are_rejected() {
        let rules = desired(&policy(false, &["172.18.0.1/32"], &[]), "n", "br-x");
        assert_eq!(rules.input.len(), 2);
        assert_eq!(rules.input[1], "-A SANDMAN-IN-br-x -d 172.18.0.1/32 -j REJECT --reject-with icmp-port-unreachable");
        assert!(
            !rules
                .input
                .iter()
                .any(|r| r.ends_with("-A SANDMAN-IN-br-x -j REJECT --reject-with icmp-port-unreachable"))
        );
        assert!(desired(&policy(false, &[], &[22]), "n", "br-x").is_empty(), "nothing to enforce: no rules");
    }

    #[test]
    fn apply_is_idempotent_replaces_changed_rules_and_leaves_others_alone() {
        let fw = Memory::new();
        fw.restore("*filter\n-A INPUT -i eth0 -p tcp -m tcp --dport 22 -j ACCEPT\n-A DOCKER-USER -j RETURN\nCOMMIT\n")
            .unwrap();
        let p = policy(true, &["169.254.0.0/16"], &[]);
        assert_eq!(apply(&fw, &p, "net", "br-a").unwrap(), Applied::Changed);
        let after_first = fw.list().unwrap();
        assert_eq!(apply(&fw, &p, "net", "br-a").unwrap(), Applied::Unchanged);
        assert_eq!(fw.list().unwrap(), after_first);
        let listing = Listing::parse(&after_first);
        assert_eq!(listing.chains["INPUT"][0], "-A INPUT -i br-a -m comment --comment sandman:net -j SANDMAN-IN-br-a");
        assert_eq!(listing.chains["INPUT"][1], "-A INPUT -i eth0 -p tcp -m tcp --dport 22 -j ACCEPT");
        assert_eq!(listing.chains["DOCKER-USER"].last().unwrap(), "-A DOCKER-USER -j RETURN");

        // New settings: the chain's contents are replaced, the jumps stay single.
        let p2 = policy(true, &[], &[8080]);
        assert_eq!(apply(&fw, &p2, "net", "br-a").unwrap(), Applied::Changed);
        let listing = Listing::parse(&fw.list().unwrap());
        assert_eq!(listing.jumps("net").len(), 2);
        assert!(listing.chains["SANDMAN-IN-br-a"].iter().any(|r| r.contains("--dport 8080")));
        assert!(!listing.chains["SANDMAN-IN-br-a"].iter().any(|r| r.contains("169.254")));

        // The network was made anew on another bridge: the old chains and jumps go.
        assert_eq!(apply(&fw, &p2, "net", "br-b").unwrap(), Applied::Changed);
        let listing = Listing::parse(&fw.list().unwrap());
        assert!(!listing.chains.contains_key("SANDMAN-IN-br-a") && listing.chains.contains_key("SANDMAN-IN-br-b"));
        assert_eq!(listing.jumps("net").len(), 2);

        // Another network's rules are not touched by this one's removal; removal is complete.
        apply(&fw, &p, "other", "br-c").unwrap();
        assert!(remove(&fw, "net", None).unwrap());
        assert!(!remove(&fw, "net", None).unwrap(), "nothing left to remove");
        let listing = Listing::parse(&fw.list().unwrap());
        assert!(listing.current("net").is_empty());
        assert_eq!(listing.current("other").len(), 2 + 3 + 2);
        assert!(!listing.chains.keys().any(|c| c.ends_with("br-b")));
        assert_eq!(listing.chains["INPUT"][1], "-A INPUT -i eth0 -p tcp -m tcp --dport 22 -j ACCEPT");

        // Turning the policy off removes the rules.
        let off = policy(false, &[], &[]);
        assert_eq!(apply(&fw, &off, "other", "br-c").unwrap(), Applied::Changed);
        assert!(Listing::parse(&fw.list().unwrap()).current("other").is_empty());
        assert_eq!(apply(&fw, &off, "other", "br-c").unwrap(), Applied::Unchanged);
    }

    #[test]
    fn a_repeated_jump_is_deleted_and_a_missing_docker_user_is_explained() {
        let fw = Memory::new();
        let p = policy(true, &[], &[]);
        apply(&fw, &p, "net", "br-a").unwrap();
        let jump = "-A INPUT -i br-a -m comment --comment \"sandman:net\" -j SANDMAN-IN-br-a";
        fw.restore(&format!("*filter\n-I INPUT 1{}\nCOMMIT\n", &jump[8..])).unwrap();
        assert_eq!(Listing::parse(&fw.list().unwrap()).jumps("net").len(), 3);
        assert_eq!(apply(&fw, &p, "net", "br-a").unwrap(), Applied::Changed);
        assert_eq!(Listing::parse(&fw.list().unwrap()).jumps("net").len(), 2);

        let bare = Memory::new();
        bare.restore("*filter\n-X DOCKER-USER\nCOMMIT\n").unwrap();
        let e = apply(&bare, &p, "net", "br-a").unwrap_err();
        assert!(e.to_string().contains("DOCKER-USER chain is missing"), "{e}");
    }

    #[test]
    fn the_listing_reads_what_iptables_prints() {
        let text = "-P INPUT ACCEPT\n-N DOCKER-USER\n-N SANDMAN-IN-br-a\n\
                    -A INPUT -i br-a -m comment --comment \"sandman:net\" -j SANDMAN-IN-br-a\n\
                    -A INPUT -i br-a -m comment --comment \"sandman:network2\" -j SANDMAN-IN-br-z\n\
                    -A SANDMAN-IN-br-a -j REJECT --reject-with icmp-port-unreachable\n";
        let l = Listing::parse(text);
        assert_eq!(l.jumps("net").len(), 1, "the comment is matched whole");
        assert_eq!(l.current("net").len(), 2);
    }
}
