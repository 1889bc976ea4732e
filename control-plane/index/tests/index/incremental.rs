//! The incremental path against the reference: over random sequences of changes to every
//! kind of resource (and time passing), an index that recompiles incrementally publishes
//! exactly what one that recompiles everything publishes — same snapshots, same
//! generations, same verdicts, same address table, same next window edge.

use time::format_description::well_known::Rfc3339;
use vigil_index::{Resources, ServiceBackends};

use super::support::*;

const NAMESPACES: [&str; 2] = ["a", "b"];
const WORKLOADS: [&str; 6] = ["w0", "w1", "w2", "w3", "w4", "w5"];
const ADDRESSES: [&str; 4] = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"];

/// A small deterministic generator (xorshift64*): no dependency, reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn rfc3339(t: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(t).unwrap())
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

fn labels(rng: &mut Rng) -> String {
    let mut l = format!("app: {}", rng.pick(&["web", "api", "db"]));
    if rng.chance(50) {
        l += &format!(", tier: {}", rng.pick(&["front", "back"]));
    }
    l
}

fn selector(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 => "{}".into(),
        1 => format!("{{matchLabels: {{{}}}}}", labels(rng)),
        2 => format!(
            "{{matchExpressions: [{{key: tier, operator: {}, values: [front]}}]}}",
            rng.pick(&["In", "NotIn"])
        ),
        _ => format!(
            "{{matchLabels: {{app: {}}}}}",
            rng.pick(&["web", "api", "db"])
        ),
    }
}

fn random_workload(rng: &mut Rng) -> Resource {
    let ns = rng.pick(&NAMESPACES);
    let name = rng.pick(&WORKLOADS);
    let sa = rng.pick(&["s0", "s1", "s2", "Not_A_Name"]);
    let addrs: Vec<String> = (0..rng.below(3))
        .map(|_| format!("'{}'", rng.pick(&ADDRESSES)))
        .collect();
    let mut spec = format!("serviceAccount: {sa}, addresses: [{}]", addrs.join(", "));
    if rng.chance(20) {
        spec += &format!(
            ", defaultPolicy: {}",
            rng.pick(&["Deny", "Audit", "AllowAuthenticated"])
        );
    }
    if rng.chance(15) {
        spec += &format!(", labels: {{{}}}", labels(rng));
    }
    if rng.chance(10) {
        spec += ", proxy: '127.0.0.1:15006'";
    }
    if rng.chance(10) {
        spec += ", egress: Strict";
    }
    doc(&format!(
        "apiVersion: local.vigil.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{}}}}}\nspec: {{{spec}}}\n",
        labels(rng)
    ))
}

fn random_segment(rng: &mut Rng) -> Resource {
    let ns_sel = if rng.chance(30) {
        format!(
            ", namespaceSelector: {{matchLabels: {{env: {}}}}}",
            rng.pick(&["prod", "dev"])
        )
    } else {
        String::new()
    };
    doc(&format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Segment\nmetadata: {{name: {}, namespace: {}}}\nspec: {{podSelector: {}{ns_sel}}}\n",
        rng.pick(&["seg0", "seg1", "seg2"]),
        rng.pick(&NAMESPACES),
        selector(rng)
    ))
}

fn random_source(rng: &mut Rng) -> String {
    match rng.below(9) {
        0 | 1 => format!(
            "{{segment: {}}}",
            rng.pick(&["seg0", "seg1", "seg2", "b/seg0"])
        ),
        2 => format!(
            "{{spiffeId: 'spiffe://cluster.local/ns/{}/sa/{}'}}",
            rng.pick(&NAMESPACES),
            rng.pick(&["s0", "s1", "*"])
        ),
        3 => format!("{{namespace: {}}}", rng.pick(&NAMESPACES)),
        4 => format!("{{serviceAccount: {}}}", rng.pick(&["s0", "s2", "b/s1"])),
        5 => "{authenticated: true}".into(),
        6 => "{unauthenticated: true}".into(),
        7 => "{cidr: 10.0.0.0/8}".into(),
        _ => "{cidr: not-a-network}".into(),
    }
}

fn random_policy(rng: &mut Rng) -> Resource {
    let target = if rng.chance(50) {
        format!(
            "{{segment: {}}}",
            rng.pick(&["seg0", "seg1", "seg2", "missing"])
        )
    } else {
        format!("{{podSelector: {}}}", selector(rng))
    };
    let from: Vec<String> = (0..=rng.below(2)).map(|_| random_source(rng)).collect();
    let mut spec = format!(
        "  target: {target}\n  action: {}\n  mode: {}\n  from: [{}]\n",
        rng.pick(&["Allow", "Allow", "Deny"]),
        rng.pick(&["Enforce", "Enforce", "Audit"]),
        from.join(", ")
    );
    match rng.below(4) {
        0 => {}
        1 => spec += "  rules: [{methods: [GET], paths: [{prefix: /x}]}]\n",
        2 => spec += "  rules: [{ports: [8080]}, {paths: [{exact: /y}]}]\n",
        _ => spec += "  rules: [{headers: [{name: x, regex: '('}]}]\n",
    }
    let t = |rng: &mut Rng| NOW + [0, 40, 90, 150, 400][rng.below(5)] - 100;
    if rng.chance(25) {
        spec += &format!("  validFrom: '{}'\n", rfc3339(t(rng)));
    }
    if rng.chance(25) {
        spec += &format!("  validUntil: '{}'\n", rfc3339(t(rng)));
    }
    policy(
        rng.pick(&NAMESPACES),
        rng.pick(&["p0", "p1", "p2", "p3", "p4"]),
        &spec,
    )
}

fn random_quarantine(rng: &mut Rng) -> Resource {
    let by = match rng.below(3) {
        0 => format!("podSelector: {}", selector(rng)),
        1 => format!("serviceAccount: {}", rng.pick(&["s0", "s1", "s2"])),
        _ => format!("workload: {}", rng.pick(&WORKLOADS)),
    };
    doc(&format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: Quarantine\nmetadata: {{name: {}, namespace: {}}}\nspec: {{{by}, reason: test}}\n",
        rng.pick(&["q0", "q1"]),
        rng.pick(&NAMESPACES)
    ))
}

fn random_namespace(rng: &mut Rng) -> Resource {
    let mut meta = NamespaceMeta::default();
    meta.labels
        .insert("env".into(), rng.pick(&["prod", "dev"]).into());
    if rng.chance(50) {
        meta.annotations.insert(
            vigil_crds::DEFAULT_POLICY_ANNOTATION.into(),
            rng.pick(&["deny", "audit", "allow-authenticated"]).into(),
        );
    }
    Resource::Namespace(rng.pick(&NAMESPACES).into(), meta)
}

fn random_key(rng: &mut Rng, names: &[&str]) -> ObjectKey {
    ObjectKey::new(rng.pick(&NAMESPACES), rng.pick(names))
}

fn random_services(rng: &mut Rng) -> std::collections::BTreeMap<ObjectKey, ServiceBackends> {
    let mut services = std::collections::BTreeMap::new();
    for i in 0..rng.below(3) {
        let address: std::net::SocketAddr = format!("10.96.0.{}:80", i + 1).parse().unwrap();
        let backends = (0..=rng.below(2))
            .map(|_| random_key(rng, &WORKLOADS))
            .collect();
        services.insert(
            ObjectKey::new("a", format!("svc{i}")),
            ServiceBackends {
                addresses: vec![address],
                backends,
                endpoints: BTreeMap::from([(address, vec!["10.0.0.1:8080".parse().unwrap()])]),
            },
        );
    }
    services
}

/// One random step, applied the same way to both indexes.
fn step(rng: &mut Rng, both: &mut [&mut Index; 2], now: &mut u64) {
    let op = rng.below(20);
    let t = *now;
    let current = both[0].resources().clone();
    let mut each = |f: &dyn Fn(&mut Index)| {
        for ix in both.iter_mut() {
            f(ix);
        }
    };
    match op {
        0 | 1 => {
            let r = random_workload(rng);
            each(&|ix| ix.apply(r.clone(), t));
        }
        2 => {
            let k = random_key(rng, &WORKLOADS);
            each(&|ix| ix.delete(Kind::Workload, &k, t));
        }
        3 => {
            let r = random_segment(rng);
            each(&|ix| ix.apply(r.clone(), t));
        }
        4 => {
            let k = random_key(rng, &["seg0", "seg1", "seg2"]);
            each(&|ix| ix.delete(Kind::Segment, &k, t));
        }
        5..=9 => {
            let r = random_policy(rng);
            each(&|ix| ix.apply(r.clone(), t));
        }
        10 | 11 => {
            let k = random_key(rng, &["p0", "p1", "p2", "p3", "p4"]);
            each(&|ix| ix.delete(Kind::AccessPolicy, &k, t));
        }
        12 => {
            let r = random_quarantine(rng);
            each(&|ix| ix.apply(r.clone(), t));
        }
        13 => {
            let k = random_key(rng, &["q0", "q1"]);
            each(&|ix| ix.delete(Kind::Quarantine, &k, t));
        }
        14 => {
            let r = random_namespace(rng);
            each(&|ix| ix.apply(r.clone(), t));
        }
        15 => {
            // A source reload: new services, maybe a policy changed too.
            let mut res: Resources = current.clone();
            res.services = random_services(rng);
            if rng.chance(50) {
                res.apply(random_policy(rng));
            }
            each(&|ix| ix.replace(res.clone(), t));
        }
        16 | 17 => {
            // A source reload in which only policies changed (the incremental path).
            let mut res: Resources = current.clone();
            for _ in 0..=rng.below(2) {
                if rng.chance(70) {
                    res.apply(random_policy(rng));
                } else {
                    let k = random_key(rng, &["p0", "p1", "p2", "p3", "p4"]);
                    res.delete(Kind::AccessPolicy, &k);
                }
            }
            each(&|ix| ix.replace(res.clone(), t));
        }
        _ => {
            // Time passes (windows open and close), now and then backwards.
            *now = if rng.chance(5) {
                now.saturating_sub(60)
            } else {
                *now + [0, 5, 30, 100][rng.below(4)]
            };
            let t = *now;
            each(&|ix| {
                ix.tick(t);
            });
        }
    }
}

fn assert_same(inc: &mut Index, full: &mut Index, context: &str) {
    assert_eq!(inc.generation(), full.generation(), "generation, {context}");
    assert_eq!(inc.verdicts(), full.verdicts(), "verdicts, {context}");
    assert_eq!(
        inc.next_change(),
        full.next_change(),
        "next change, {context}"
    );
    for a in ADDRESSES.iter().chain(&["10.96.0.1:80", "10.96.0.2:80"]) {
        let a: std::net::SocketAddr = a.parse().unwrap();
        assert_eq!(inc.resolve(&a), full.resolve(&a), "resolve {a}, {context}");
    }
    for ns in NAMESPACES {
        for name in WORKLOADS.iter().chain(&["ghost"]) {
            let k = ObjectKey::new(ns, *name);
            assert_eq!(
                *inc.watch(&k).borrow(),
                *full.watch(&k).borrow(),
                "snapshot of {k}, {context}"
            );
            assert_eq!(inc.identity(&k), full.identity(&k), "identity of {k}");
        }
    }
    // Bystanders (if any; otherwise unknown workloads, deny-all in both).
    for i in [0, 1, 2, 150, 299] {
        let k = ObjectKey::new("by", format!("by{i}"));
        assert_eq!(
            *inc.watch(&k).borrow(),
            *full.watch(&k).borrow(),
            "snapshot of {k}, {context}"
        );
    }
}

#[test]
fn incremental_recompiles_equal_full_recompiles() {
    equivalence(0);
}

/// With many workloads that the random steps do not name, a change's workloads are few
/// next to the index's: the index searches for them instead of walking its maps
/// (`sorted.rs`), a branch the small test above never takes.
#[test]
fn incremental_recompiles_equal_full_recompiles_among_many_bystanders() {
    equivalence(300);
}

/// Runs random sequences on two indexes, one recompiling incrementally, and compares them
/// after each step; both hold `bystanders` more workloads in a namespace of their own
/// (callers of every workload open to the mesh).
#[allow(clippy::print_stderr)] // the count of incremental recompiles, as a #[test] would
fn equivalence(bystanders: usize) {
    // A few seconds by default; `VIGIL_INDEX_SEEDS=500` for a long run.
    let seeds = 1..=std::env::var("VIGIL_INDEX_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8u64);
    let mut incremental = 0;
    for seed in seeds {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut inc = Index::new(settings());
        let mut full = Index::new(settings());
        full.set_incremental(false);
        for i in 0..bystanders {
            let w = doc(&format!(
                "apiVersion: local.vigil.dev/v1alpha1\nkind: Workload\nmetadata: {{name: by{i}, namespace: by, labels: {{app: {}}}}}\nspec: {{serviceAccount: by{}, addresses: [\"10.1.{}.{}:80\"]}}\n",
                ["web", "api", "db"][i % 3],
                i % 7,
                i / 250,
                i % 250 + 1,
            ));
            inc.apply(w.clone(), NOW);
            full.apply(w, NOW);
        }
        let mut now = NOW;
        for i in 0..50 {
            step(&mut rng, &mut [&mut inc, &mut full], &mut now);
            assert_same(&mut inc, &mut full, &format!("seed {seed}, step {i}"));
        }
        assert_eq!(
            full.recompiles().1,
            0,
            "the reference never takes the incremental path"
        );
        incremental += inc.recompiles().1;
    }
    // Most policy changes take the incremental path (the rest: a window edge passed).
    eprintln!("{incremental} incremental recompiles");
    assert!(
        incremental > 100,
        "only {incremental} incremental recompiles"
    );
}

#[test]
fn a_policy_change_publishes_only_to_the_workloads_it_concerns() {
    let mut ix = shop();
    let mut rx: Vec<_> = ["web", "orders", "db"]
        .iter()
        .map(|w| ix.watch(&key(w)))
        .collect();
    for r in &mut rx {
        r.borrow_and_update();
    }
    // An allow from the frontend to orders: orders' inbound and web's outbound change.
    ix.apply(policy("shop", "web-reads-orders", WEB_READS_ORDERS), NOW);
    let changed: Vec<bool> = rx.iter().map(|r| r.has_changed().unwrap()).collect();
    assert_eq!(changed, [true, true, false], "web, orders, db");
    let web = rx[0].borrow().clone();
    assert_eq!(
        web.policy.outbound.destinations[0].identities,
        [id("orders").to_string()]
    );
    for r in &mut rx {
        r.borrow_and_update();
    }
    // A deny on db alone reaches db alone.
    ix.apply(
        policy(
            "shop",
            "no-db",
            "  target: {podSelector: {matchLabels: {app: db}}}\n  action: Deny\n  from: [{authenticated: true}]\n",
        ),
        NOW,
    );
    let changed: Vec<bool> = rx.iter().map(|r| r.has_changed().unwrap()).collect();
    assert_eq!(changed, [false, false, true], "web, orders, db");
}
