//! `vigil-bench layout` (`make proxy-layout`): writes `proxy/layout/hot-functions.txt`,
//! the functions of `vigil-proxy` that run, which its build links together ahead of the
//! rest of its code (`vigil_proxy::link_layout`).
//!
//! It starts the benchmark topology with the vigil sidecars under callgrind, symbol names
//! as linked ([`super::topology::Launch::Layout`]), dumps each sidecar once it is up and
//! idle (startup), then two more started as B8 starts its proxies, one with a plain policy
//! (startup too) and one whose policy uses every part of the format, then
//! drives every kind of traffic the benchmarks measure — new and resumed mTLS
//! connections to an inbound, opaque TCP through a pair, HTTP/1.1 and HTTP/2 through a
//! pair, a `/metrics` scrape and a readiness check on every admin listener — dumping
//! after each kind (serving). Every function of the binary in any dump is
//! listed, startup first, then what the rich policy's startup adds (kept apart, so that a
//! proxy with a plain policy does not have it in the windows its startup faults in), then
//! what each kind of traffic adds, each as the pattern
//! [`vigil_proxy::link_layout::pattern_of`] makes of its symbol (hash-free, so the list
//! outlives a rebuild).

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Write as _,
    net::SocketAddr,
    path::Path,
    time::Duration,
};

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    callgrind,
    count::{self, Workload},
    measure::TlsClients,
    procs::Proc,
    topology::{CALLGRIND_START, PathDef, Topology, free_port},
};

/// The kernel's fault-around window (`fault_around_bytes`, 64 KiB by default): a fault in
/// a file mapping maps up to this much around it. A pattern that would pull more than
/// this into the list per function of it that ran, in instances that did not run, costs
/// more listed than left out.
pub const WINDOW: u64 = 64 * 1024;

/// The smallest useful policy, B8's (`benches/benches/memory.rs` starts its proxies with
/// it): one sidecar more starts with it, as the rich one does, so that what only the rich
/// policy runs is told apart from what the flags run.
pub const PLAIN_POLICY: &str = "\
generation: 1
workload: spiffe://cluster.local/ns/bench/sa/server
defaultPolicy: deny
inbound:
  - {policy: bench/all, rule: 0, action: allow, mode: enforce, from: [authenticated, unauthenticated]}
outbound: {passthrough: false}
";

/// A policy that uses every part of the policy format: a proxy starting with it runs the
/// parsing and compiling a real workload's policy needs (the topology's are minimal).
const RICH_POLICY: &str = "\
generation: 3
workload: spiffe://cluster.local/ns/bench/sa/server
defaultPolicy: deny
inbound:
  - policy: bench/reads
    rule: 0
    action: allow
    mode: enforce
    ports: [8080]
    from: [{id: \"spiffe://cluster.local/ns/bench/sa/*\"}, authenticated, {cidr: 10.0.0.0/8}]
    http:
      methods: [GET, HEAD]
      paths: [{prefix: /api/}, {exact: /healthz}, {glob: \"/static/**\"}]
      headers: [{name: x-tenant, exact: a}, {name: x-trace, regex: \"^[0-9a-f]{32}$\"}, {name: x-debug, present: false}]
    rateLimit: {requestsPerSecond: 100, burst: 200}
  - policy: bench/grpc
    rule: 1
    action: allow
    mode: audit
    from: [authenticated]
    http: {grpc: [{service: shop.Cart, method: Add}]}
    validFrom: 1700000000
    validUntil: 4100000000
  - {policy: bench/plain, rule: 2, action: deny, mode: enforce, from: [unauthenticated]}
revoked: {ids: [spiffe://cluster.local/ns/bench/sa/old], serials: [\"0a1b2c\"]}
outbound:
  passthrough: false
  destinations:
    - {address: 127.0.0.1:9, identities: [spiffe://cluster.local/ns/bench/sa/server], endpoints: [127.0.0.1:9]}
";

/// Requests per workload: enough for every branch a steady stream takes (pool reuse,
/// the resumption cache), few enough for callgrind.
const REQUESTS: u32 = 50;

/// The functions that ran in two phases.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// From start until idle and ready.
    pub startup: BTreeSet<String>,
    /// From start until idle and ready, with a policy that uses every part of the format.
    pub rich: BTreeSet<String>,
    /// While serving, phase by phase: what each kind of traffic ran.
    pub serving: Vec<(String, BTreeSet<String>)>,
}

/// Profiles the vigil sidecars of `topo` (started with `Launch::Layout(dumps)` from
/// `binary`).
pub async fn profile(
    topo: &Topology,
    dumps: &Path,
    tls: &TlsClients,
    binary: &Path,
) -> anyhow::Result<Profile> {
    let object = binary
        .file_name()
        .and_then(|n| n.to_str())
        .context("the binary's path has no file name")?;
    let sidecars: Vec<u32> = topo
        .procs
        .iter()
        .filter(|p| p.name.starts_with("vigil"))
        .map(|p| p.pid())
        .collect();
    anyhow::ensure!(!sidecars.is_empty(), "no vigil sidecar in the topology");
    // Idle for a moment: what the runtime's timers and the sweeper do belongs to startup.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut out = Profile::default();
    for &pid in &sidecars {
        out.startup.extend(functions(pid, dumps, object)?);
    }
    out.startup.extend(
        one_more_startup(topo, dumps, binary, object, "vigil-plain", PLAIN_POLICY)
            .await
            .context("one more sidecar, with a plain policy")?,
    );
    out.rich = one_more_startup(topo, dumps, binary, object, "vigil-rich", RICH_POLICY)
        .await
        .context("one more sidecar, with every part of the policy format")?;
    // Phase by phase, so that what each kind of traffic runs lies together (new mTLS
    // connections first: what an idle-connection burst touches, then opaque TCP).
    let vigil = topo.path("vigil").context("no vigil path")?;
    let mut phase = |name: &str| -> anyhow::Result<()> {
        let mut ran = BTreeSet::new();
        for &pid in &sidecars {
            ran.extend(functions(pid, dumps, object)?);
        }
        out.serving.push((name.to_string(), ran));
        Ok(())
    };
    for w in [Workload::Conn, Workload::Resume] {
        run_workload(vigil, w, tls).await?;
        phase(&format!("{w}"))?;
    }
    let tcp = vigil.tcp.context("the vigil path has no TCP entry")?;
    for _ in 0..3 {
        opaque_tcp(tcp).await.context("opaque TCP through vigil")?;
    }
    phase("tcp")?;
    for w in [Workload::H1, Workload::H2] {
        run_workload(vigil, w, tls).await?;
        phase(&format!("{w}"))?;
    }
    for &(_, admin) in &topo.admins {
        for path in ["/metrics", "/ready"] {
            admin_get(admin, path)
                .await
                .with_context(|| format!("GET {path} from {admin}"))?;
        }
    }
    // Let the sidecars finish closing what the clients closed.
    tokio::time::sleep(Duration::from_secs(1)).await;
    phase("admin")?;
    anyhow::ensure!(
        !out.startup.is_empty() && out.serving.iter().any(|(_, ran)| !ran.is_empty()),
        "no function of {object} in the dumps (was it started with Launch::Layout?)"
    );
    Ok(out)
}

/// What one more sidecar `name`, `binary` under callgrind, runs starting with `policy`
/// (an inbound to the backend, as B8 starts one) until idle.
async fn one_more_startup(
    topo: &Topology,
    dumps: &Path,
    binary: &Path,
    object: &str,
    name: &str,
    policy: &str,
) -> anyhow::Result<BTreeSet<String>> {
    let path = topo.dir.join(format!("conf/{name}.yaml"));
    std::fs::write(&path, policy)?;
    let (inbound, admin) = (free_port(), free_port());
    let file = |f: &str| topo.dir.join(f).display().to_string();
    let args: Vec<String> = [
        "run",
        "--access-log",
        "off",
        "--detect-timeout",
        "100ms",
        "--inbound",
        &format!("127.0.0.1:{inbound}"),
        "--outbound",
        "127.0.0.1:0",
        "--admin",
        &format!("127.0.0.1:{admin}"),
        "--app",
        "127.0.0.1:8080",
        "--svid",
        &file("server.crt"),
        "--key",
        &file("server.key"),
        "--bundle",
        &file("ca.crt"),
        "--policy",
        &path.display().to_string(),
        "--max-connections",
        "6000",
    ]
    .map(String::from)
    .to_vec();
    let (prog, args) = callgrind::wrap_with(dumps, name, binary, &args, &["--demangle=no"]);
    let mut p = Proc::start(name, &prog, &args, None, &topo.dir.join("logs"))?;
    p.wait_listening_within(inbound, CALLGRIND_START)?;
    // The admin listener binds on its own: on a busy machine it may come after the inbound.
    p.wait_listening_within(admin, CALLGRIND_START)?;
    admin_get(SocketAddr::from(([127, 0, 0, 1], admin)), "/ready").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ran = functions(p.pid(), dumps, object)?;
    drop(p);
    Ok(ran)
}

/// [`REQUESTS`] of `w` through the vigil path.
async fn run_workload(vigil: &PathDef, w: Workload, tls: &TlsClients) -> anyhow::Result<()> {
    let (t, _) = count::target(vigil, w, tls).with_context(|| format!("no {w} target"))?;
    let mut sender = crate::load::client::connect(&t).await?;
    count::requests(&t, &mut sender, REQUESTS, w.fresh())
        .await
        .with_context(|| format!("{w} through vigil"))
}

/// The functions of `object` that `pid` ran since its last dump.
fn functions(pid: u32, dumps: &Path, object: &str) -> anyhow::Result<BTreeSet<String>> {
    let (_, file) = callgrind::dump(pid, dumps)?;
    let text = std::fs::read_to_string(&file).with_context(|| file.display().to_string())?;
    Ok(callgrind::functions_in(&text, object))
}

/// The function symbols of the ELF file at `binary`: name → size in bytes.
pub fn symbols(binary: &Path) -> anyhow::Result<HashMap<String, u64>> {
    use object::{Object, ObjectSymbol, SymbolKind};
    let data = std::fs::read(binary).with_context(|| binary.display().to_string())?;
    let file = object::File::parse(&*data).with_context(|| binary.display().to_string())?;
    let mut out = HashMap::new();
    for sym in file.symbols() {
        if sym.kind() == SymbolKind::Text
            && let Ok(name) = sym.name()
        {
            *out.entry(name.to_string()).or_default() += sym.size();
        }
    }
    anyhow::ensure!(
        !out.is_empty(),
        "{}: no function symbols (stripped?)",
        binary.display()
    );
    Ok(out)
}

/// The list file for `p`, given the binary's `symbols`: what startup runs, then what a
/// rich policy's startup and each serving phase run that no earlier group did, each group
/// sorted, every pattern once. Startup first: an idle proxy has run only that group (and
/// the rich one if its policy needs it), so its resident code is that group's extent;
/// each kind of traffic adds its own group, next to it. A pattern whose
/// instances that did not run (a generic function's other instances share its hash-free
/// name) weigh more than [`WINDOW`] per instance that ran is left out, and said so at
/// the end.
pub fn list(p: &Profile, symbols: &HashMap<String, u64>, header: &str) -> String {
    use vigil_proxy::link_layout::pattern_of;
    // Per pattern: bytes of every instance in the binary; instances and bytes that ran.
    let mut all: HashMap<String, u64> = HashMap::new();
    for (name, size) in symbols {
        if let Some(pat) = pattern_of(name) {
            *all.entry(pat).or_default() += size;
        }
    }
    let mut ran: HashMap<String, (u64, u64)> = HashMap::new();
    // Each function once: callgrind names a recursion level `f'2` beside `f`.
    let every: BTreeSet<&str> = p
        .startup
        .iter()
        .chain(&p.rich)
        .chain(p.serving.iter().flat_map(|(_, r)| r))
        .map(|n| n.rsplit_once('\'').map_or(n.as_str(), |(b, _)| b))
        .collect();
    for base in every {
        let Some(pat) = pattern_of(base) else {
            continue;
        };
        let e = ran.entry(pat).or_default();
        e.0 += 1;
        e.1 += symbols.get(base).copied().unwrap_or(0);
    }
    let excess = |pat: &str| {
        let (count, bytes) = ran.get(pat).copied().unwrap_or_default();
        let other = all.get(pat).copied().unwrap_or(0).saturating_sub(bytes);
        (other > count * WINDOW).then_some((other, count))
    };
    let mut groups = vec![
        ("startup".to_string(), &p.startup),
        (
            "startup with every part of the policy format, not run before".to_string(),
            &p.rich,
        ),
    ];
    groups.extend(
        p.serving
            .iter()
            .map(|(n, r)| (format!("serving: {n}, not run before"), r)),
    );
    let mut seen = BTreeSet::new();
    let mut left_out = Vec::new();
    let mut s = String::new();
    for line in header.lines() {
        let _ = writeln!(s, "# {line}");
    }
    for (title, names) in groups {
        let mut keep = Vec::new();
        for pat in names
            .iter()
            .filter_map(|n| pattern_of(n))
            .collect::<BTreeSet<_>>()
        {
            if !seen.insert(pat.clone()) {
                continue;
            }
            match excess(&pat) {
                Some(x) => left_out.push((pat, x)),
                None => keep.push(pat),
            }
        }
        let _ = writeln!(s, "\n# {title}: {} patterns", keep.len());
        for pat in keep {
            let _ = writeln!(s, "{pat}");
        }
    }
    if !left_out.is_empty() {
        let _ = writeln!(
            s,
            "\n# left out: instances that did not run (KiB), instances that ran, pattern"
        );
        for (pat, (other, count)) in left_out {
            let _ = writeln!(s, "#   {} {count} {pat}", other / 1024);
        }
    }
    s
}

/// Streams 256 KiB through an opaque TCP entry to the sink and reads its count back.
async fn opaque_tcp(entry: SocketAddr) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(entry).await?;
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..4 {
        s.write_all(&chunk).await?;
    }
    s.shutdown().await?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await?;
    anyhow::ensure!(
        u64::from_be_bytes(count) == 4 * chunk.len() as u64,
        "the sink counted {} bytes",
        u64::from_be_bytes(count)
    );
    Ok(())
}

/// GET `path` from an admin listener (plain HTTP/1.1, one request per connection);
/// fails unless the status is 200.
async fn admin_get(admin: SocketAddr, path: &str) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(admin).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    anyhow::ensure!(
        resp.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&resp[..resp.len().min(80)])
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// A policy the proxy would refuse would stop `make proxy-layout` at its start.
    #[test]
    fn the_policies_are_accepted_and_the_rich_one_uses_every_part_of_the_format() {
        let model = vigil_proxy::policy_store::parse_file(Path::new("rich.yaml"), RICH_POLICY)
            .expect("parses");
        let rules = &model.inbound;
        assert!(rules.iter().any(|r| r.rate_limit.is_some()));
        assert!(rules.iter().any(|r| r.valid_until.is_some()));
        assert!(
            rules
                .iter()
                .any(|r| r.http.as_ref().is_some_and(|h| !h.grpc.is_empty()))
        );
        assert!(
            rules
                .iter()
                .any(|r| r.http.as_ref().is_some_and(|h| h.headers.len() == 3))
        );
        assert!(!model.revoked.ids.is_empty() && !model.outbound.destinations.is_empty());
        vigil_policy::Policy::compile(model).expect("compiles");
        let plain = vigil_proxy::policy_store::parse_file(Path::new("plain.yaml"), PLAIN_POLICY)
            .expect("parses");
        vigil_policy::Policy::compile(plain).expect("compiles");
    }

    #[test]
    fn the_list_puts_startup_first_then_the_rich_policy_then_each_phase_each_pattern_once() {
        let p = Profile {
            startup: set(&[
                "_ZN11vigil_proxy4main17h0123456789abcdefE",
                "_ZN5hyper4body17h1111111111111111E",
                "(below main)",
            ]),
            rich: set(&[
                "_ZN5hyper4body17h5555555555555555E",
                "_ZN12regex_syntax5parse17h6666666666666666E",
            ]),
            serving: vec![
                (
                    "conn".into(),
                    set(&[
                        // two instances of one generic: one pattern, already listed
                        "_ZN5hyper4body17h2222222222222222E",
                        "_ZN5hyper4body17h3333333333333333E.llvm.77'2",
                        "aws_lc_0_47_0_aes_gcm_encrypt_avx512",
                        "0x0000000000282460",
                    ]),
                ),
                (
                    "h1".into(),
                    set(&[
                        "aws_lc_0_47_0_aes_gcm_encrypt_avx512",
                        "_ZN5hyper2h117h4444444444444444E",
                    ]),
                ),
            ],
        };
        let text = list(&p, &HashMap::new(), "made by a test\nsecond line");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "# made by a test",
                "# second line",
                "",
                "# startup: 2 patterns",
                "_ZN11vigil_proxy4main17h*E*",
                "_ZN5hyper4body17h*E*",
                "",
                "# startup with every part of the policy format, not run before: 1 patterns",
                "_ZN12regex_syntax5parse17h*E*",
                "",
                "# serving: conn, not run before: 1 patterns",
                "aws_lc_0_47_0_aes_gcm_encrypt_avx512",
                "",
                "# serving: h1, not run before: 1 patterns",
                "_ZN5hyper2h117h*E*",
            ]
        );
        // What the proxy's build makes of it.
        let pats = vigil_proxy::link_layout::patterns(&text).unwrap();
        assert_eq!(pats.len(), 5);
    }

    #[test]
    fn a_pattern_dragging_in_more_than_a_window_per_run_instance_is_left_out() {
        let name = |t: &str, h: u64| format!("_ZN4core3fmt{}{t}17h{h:016x}E", t.len());
        let p = Profile {
            // A recursion level of the one Debug instance that ran is the same function.
            startup: set(&[
                &name("Debug", 1),
                &format!("{}'2", name("Debug", 1)),
                &name("Small", 1),
            ]),
            rich: BTreeSet::new(),
            serving: vec![("h2".into(), set(&[&name("Poll", 1), &name("Poll", 2)]))],
        };
        let mut symbols = HashMap::new();
        // Debug: one instance ran (100 B), 200 others of 1 KiB did not: 200 KiB > 64 KiB.
        for h in 1..=201 {
            symbols.insert(name("Debug", h), if h == 1 { 100 } else { 1024 });
        }
        // Small: 10 others of 1 KiB: 10 KiB, kept.
        for h in 1..=11 {
            symbols.insert(name("Small", h), 1024);
        }
        // Poll: two ran; 100 others of 1 KiB = 100 KiB < 2 windows: kept.
        for h in 1..=102 {
            symbols.insert(name("Poll", h), 1024);
        }
        let text = list(&p, &symbols, "t");
        let pats = vigil_proxy::link_layout::patterns(&text).unwrap();
        assert_eq!(
            pats,
            ["_ZN4core3fmt5Small17h*E*", "_ZN4core3fmt4Poll17h*E*"],
            "{text}"
        );
        assert!(
            text.contains("#   200 1 _ZN4core3fmt5Debug17h*E*"),
            "the left-out pattern is named with its weight: {text}"
        );
        assert!(text.contains("# startup: 1 patterns"), "{text}");
    }
}
