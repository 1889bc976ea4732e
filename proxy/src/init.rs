//! `vigil-proxy init`: program iptables and ip6tables (nat) so a pod's traffic flows
//! through its proxy.
//!
//! ```text
//! PREROUTING ─► VIGIL_INBOUND:  skip-inbound-ports, admin port ─► RETURN
//!                               tcp ─► REDIRECT to the inbound port
//! OUTPUT     ─► VIGIL_OUTBOUND: owner uid == proxy uid ─► RETURN   (the proxy's own traffic)
//!                               out via lo              ─► RETURN   (loopback)
//!                               skip-cidrs, skip-outbound-ports ─► RETURN
//!                               tcp ─► REDIRECT to the outbound port
//! ```
//!
//! Idempotent: the two chains are created if missing and flushed, then refilled; the jumps
//! into them are added only if absent. Running it twice leaves the same rules. The original
//! destination survives REDIRECT and is read back with SO_ORIGINAL_DST
//! (IP6T_SO_ORIGINAL_DST for IPv6).
//!
//! Both families get the same chains (loopback is `127.0.0.0/8` or `::1/128`; each
//! `--skip-cidrs` entry goes to its own family). IPv6 (`--ipv6`): `on` programs ip6tables
//! and fails if it cannot; `off` leaves it alone; `auto` (the default) programs it and
//! fails if it cannot *when the pod has a routable IPv6 address* — traffic over an address
//! the rules do not cover would bypass the proxy — and otherwise (IPv6 disabled, or only
//! link-local addresses, as in an IPv4 cluster) skips it or tolerates a failure, saying so.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
};

use clap::Args;
use vigil_policy::model::port_list;

const INBOUND_CHAIN: &str = "VIGIL_INBOUND";
const OUTBOUND_CHAIN: &str = "VIGIL_OUTBOUND";
/// iptables' multiport match takes at most 15 ports per rule.
const MULTIPORT_MAX: usize = 15;

/// Flags of `vigil-proxy init`.
#[derive(Clone, Debug, Args)]
pub struct InitArgs {
    /// Port of the proxy's inbound listener.
    #[arg(long, env = "VIGIL_PROXY_INIT_INBOUND_PORT", default_value_t = 4143)]
    pub inbound_port: u16,
    /// Port of the proxy's outbound listener.
    #[arg(long, env = "VIGIL_PROXY_INIT_OUTBOUND_PORT", default_value_t = 4140)]
    pub outbound_port: u16,
    /// Port of the proxy's admin server (never redirected, so probes reach it).
    #[arg(long, env = "VIGIL_PROXY_INIT_ADMIN_PORT", default_value_t = 4191)]
    pub admin_port: u16,
    /// UID the proxy runs as; its own connections are not redirected.
    #[arg(long, env = "VIGIL_PROXY_INIT_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// Inbound ports that bypass the proxy.
    #[arg(
        long,
        env = "VIGIL_PROXY_INIT_SKIP_INBOUND_PORTS",
        value_delimiter = ','
    )]
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports that bypass the proxy.
    #[arg(
        long,
        env = "VIGIL_PROXY_INIT_SKIP_OUTBOUND_PORTS",
        value_delimiter = ','
    )]
    pub skip_outbound_ports: Vec<u16>,
    /// Outbound destination networks (CIDR, IPv4 or IPv6) that bypass the proxy.
    #[arg(long, env = "VIGIL_PROXY_INIT_SKIP_CIDRS", value_delimiter = ',')]
    pub skip_cidrs: Vec<ipnet::IpNet>,
    /// Print the iptables commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove Vigil's rules instead of installing them.
    #[arg(long)]
    pub remove: bool,
    /// The iptables binary.
    #[arg(long, env = "VIGIL_PROXY_INIT_IPTABLES", default_value = "iptables")]
    pub iptables: String,
    /// The ip6tables binary.
    #[arg(long, env = "VIGIL_PROXY_INIT_IP6TABLES", default_value = "ip6tables")]
    pub ip6tables: String,
    /// Whether to program IPv6 too (see the module docs).
    #[arg(long, env = "VIGIL_PROXY_INIT_IPV6", value_enum, default_value_t = Ipv6Mode::Auto)]
    pub ipv6: Ipv6Mode,
}

/// `--ipv6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6Mode {
    /// Required when the pod has a routable IPv6 address, best effort otherwise.
    Auto,
    /// Always; a failure is an error.
    On,
    /// Never.
    Off,
}

/// An address family the rules are written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// iptables.
    V4,
    /// ip6tables.
    V6,
}

impl Family {
    fn loopback(self) -> String {
        match self {
            Self::V4 => format!("{}/8", Ipv4Addr::new(127, 0, 0, 0)),
            Self::V6 => format!("{}/128", Ipv6Addr::LOCALHOST),
        }
    }

    fn holds(self, net: &ipnet::IpNet) -> bool {
        matches!(
            (self, net),
            (Self::V4, ipnet::IpNet::V4(_)) | (Self::V6, ipnet::IpNet::V6(_))
        )
    }
}

/// Why rules could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The binary is missing.
    #[error("`{0}` not found: install iptables (the init container image must include it)")]
    NotFound(String),
    /// iptables refused (usually a missing capability).
    #[error("`{command}` failed: {stderr}{hint}")]
    Failed {
        /// The command line.
        command: String,
        /// What iptables said.
        stderr: String,
        /// What to check.
        hint: &'static str,
    },
    /// Could not run it at all.
    #[error("running `{0}`: {1}")]
    Spawn(String, std::io::Error),
}

/// One iptables invocation (arguments after the binary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule(pub Vec<String>);

impl Rule {
    fn new(args: &[&str]) -> Self {
        Self(args.iter().map(|s| s.to_string()).collect())
    }
    fn render(&self, bin: &str) -> String {
        format!("{bin} {}", self.0.join(" "))
    }
}

/// The rules of the two chains for `family`, in order (without chain creation or jumps).
pub fn chain_rules(a: &InitArgs, family: Family) -> Vec<Rule> {
    let mut rules = Vec::new();
    let mut skip_in = a.skip_inbound_ports.clone();
    skip_in.push(a.admin_port);
    rules.extend(skip_ports(INBOUND_CHAIN, skip_in));
    rules.push(append(
        INBOUND_CHAIN,
        &[
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &a.inbound_port.to_string(),
        ],
    ));

    let uid = a.proxy_uid.to_string();
    rules.push(append(
        OUTBOUND_CHAIN,
        &["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"],
    ));
    rules.push(append(OUTBOUND_CHAIN, &["-o", "lo", "-j", "RETURN"]));
    rules.push(append(
        OUTBOUND_CHAIN,
        &["-d", &family.loopback(), "-j", "RETURN"],
    ));
    for cidr in a.skip_cidrs.iter().filter(|c| family.holds(c)) {
        rules.push(append(
            OUTBOUND_CHAIN,
            &["-d", &cidr.trunc().to_string(), "-j", "RETURN"],
        ));
    }
    rules.extend(skip_ports(OUTBOUND_CHAIN, a.skip_outbound_ports.clone()));
    rules.push(append(
        OUTBOUND_CHAIN,
        &[
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            &a.outbound_port.to_string(),
        ],
    ));
    rules
}

/// `-t nat -A <chain> <args...>`.
fn append(chain: &str, args: &[&str]) -> Rule {
    let mut v = vec!["-t", "nat", "-A", chain];
    v.extend_from_slice(args);
    Rule::new(&v)
}

/// RETURN rules for `ports`, 15 per rule (the multiport limit).
fn skip_ports(chain: &str, mut ports: Vec<u16>) -> Vec<Rule> {
    ports.sort_unstable();
    ports.dedup();
    ports
        .chunks(MULTIPORT_MAX)
        .map(|chunk| {
            append(
                chain,
                &[
                    "-p",
                    "tcp",
                    "-m",
                    "multiport",
                    "--dports",
                    &port_list(chunk),
                    "-j",
                    "RETURN",
                ],
            )
        })
        .collect()
}

fn jumps() -> [Rule; 2] {
    [
        append("PREROUTING", &["-p", "tcp", "-j", INBOUND_CHAIN]),
        append("OUTPUT", &["-p", "tcp", "-j", OUTBOUND_CHAIN]),
    ]
}

/// Prints (dry run) or applies the rules, IPv4 and (see `--ipv6`) IPv6. Returns the
/// commands, for the caller to print; a tolerated IPv6 failure is logged.
pub fn run(a: &InitArgs) -> Result<Vec<String>, InitError> {
    let mut shown = run_family(a, Family::V4)?;
    let routable_v6 = routable_ipv6();
    match (a.ipv6, routable_v6) {
        (Ipv6Mode::Off, _) => {}
        (Ipv6Mode::On, _) | (Ipv6Mode::Auto, Some(_)) => {
            shown.extend(run_family(a, Family::V6)?);
        }
        (Ipv6Mode::Auto, None) => match run_family(a, Family::V6) {
            Ok(lines) => shown.extend(lines),
            Err(e) => tracing::warn!(
                error = %e,
                "IPv6 rules not programmed; the pod has no routable IPv6 address"
            ),
        },
    }
    Ok(shown)
}

/// A global-scope IPv6 address of this network namespace, if it has one
/// (`/proc/net/if_inet6`: address, index, prefix, scope, flags, name; scope 0 is global).
pub fn routable_ipv6() -> Option<Ipv6Addr> {
    let table = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    parse_if_inet6(&table).into_iter().next()
}

fn parse_if_inet6(table: &str) -> Vec<Ipv6Addr> {
    table
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let hex = f.next()?;
            let scope = f.nth(2)?;
            let bits = u128::from_str_radix(hex, 16).ok()?;
            let addr = Ipv6Addr::from(bits);
            (scope == "00" && !IpAddr::V6(addr).is_loopback()).then_some(addr)
        })
        .collect()
}

fn run_family(a: &InitArgs, family: Family) -> Result<Vec<String>, InitError> {
    let bin = match family {
        Family::V4 => a.iptables.as_str(),
        Family::V6 => a.ip6tables.as_str(),
    };
    let mut shown = Vec::new();
    if a.remove {
        for j in jumps() {
            let mut del = j.0.clone();
            del[2] = "-D".into();
            let del = Rule(del);
            shown.push(del.render(bin));
            if !a.dry_run {
                // Delete every copy; a missing rule is fine.
                while exec(bin, &del, true)? {}
            }
        }
        for chain in [INBOUND_CHAIN, OUTBOUND_CHAIN] {
            for op in ["-F", "-X"] {
                let r = Rule::new(&["-t", "nat", op, chain]);
                shown.push(r.render(bin));
                if !a.dry_run {
                    exec(bin, &r, true)?;
                }
            }
        }
        return Ok(shown);
    }
    for chain in [INBOUND_CHAIN, OUTBOUND_CHAIN] {
        let create = Rule::new(&["-t", "nat", "-N", chain]);
        let flush = Rule::new(&["-t", "nat", "-F", chain]);
        shown.push(format!("{} 2>/dev/null || true", create.render(bin)));
        shown.push(flush.render(bin));
        if !a.dry_run {
            exec(bin, &create, true)?; // exists already: fine, it is flushed next
            exec(bin, &flush, false)?;
        }
    }
    for r in chain_rules(a, family) {
        shown.push(r.render(bin));
        if !a.dry_run {
            exec(bin, &r, false)?;
        }
    }
    for j in jumps() {
        let mut check = j.0.clone();
        check[2] = "-C".into();
        let check = Rule(check);
        shown.push(format!(
            "{} 2>/dev/null || {}",
            check.render(bin),
            j.render(bin)
        ));
        if !a.dry_run && !exec(bin, &check, true)? {
            exec(bin, &j, false)?;
        }
    }
    Ok(shown)
}

/// Runs one command; with `tolerate`, a non-zero exit returns `Ok(false)` instead of an
/// error (unless it is a permission problem).
fn exec(bin: &str, rule: &Rule, tolerate: bool) -> Result<bool, InitError> {
    let out = Command::new(bin).args(&rule.0).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            InitError::NotFound(bin.to_string())
        } else {
            InitError::Spawn(bin.to_string(), e)
        }
    })?;
    if out.status.success() {
        return Ok(true);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let permission = stderr.contains("Permission denied")
        || stderr.contains("you must be root")
        || stderr.contains("Operation not permitted");
    if tolerate && !permission {
        return Ok(false);
    }
    Err(InitError::Failed {
        command: rule.render(bin),
        hint: if permission {
            " — iptables needs CAP_NET_ADMIN and CAP_NET_RAW (run the init container as root with those capabilities)"
        } else {
            ""
        },
        stderr,
    })
}

#[cfg(test)]
mod tests;
