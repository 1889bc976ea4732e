//! The source index: from a peer to the few rules that can concern it, without scanning.
//!
//! Rules are bucketed by destination port (plus one bucket for "any port"), then by
//! source: exact SPIFFE IDs in a hash map, ID patterns by their literal prefix (probed only
//! at the prefix lengths that exist), and short lists for "any authenticated",
//! "unauthenticated" and CIDR sources.

use std::net::IpAddr;

use ipnet::IpNet;
use rustc_hash::FxHashMap;
use vigil_cert_authority::SpiffeId;

use crate::pattern::SpiffePattern;

/// Rule indices per port.
#[derive(Debug, Default)]
pub(crate) struct Index {
    by_port: FxHashMap<u16, SourceIndex>,
    any_port: SourceIndex,
}

#[derive(Debug, Default)]
struct SourceIndex {
    exact: FxHashMap<Box<str>, Vec<u32>>,
    patterns: FxHashMap<Box<str>, Vec<(u32, SpiffePattern)>>,
    /// Distinct literal-prefix lengths in `patterns`, ascending.
    prefix_lens: Vec<usize>,
    authenticated: Vec<u32>,
    unauthenticated: Vec<u32>,
    cidrs: Vec<(u32, IpNet)>,
}

/// A rule's source, as the index stores it.
#[derive(Debug)]
pub(crate) enum IndexedSource {
    Pattern(SpiffePattern),
    Authenticated,
    Unauthenticated,
    Cidr(IpNet),
}

/// Who is asking: the index's view of a request's source.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Who<'a> {
    pub(crate) id: Option<&'a SpiffeId>,
    pub(crate) ip: Option<IpAddr>,
}

impl Index {
    pub(crate) fn insert(&mut self, rule: u32, ports: &[u16], source: &IndexedSource) {
        if ports.is_empty() {
            self.any_port.insert(rule, source);
        } else {
            for p in ports {
                self.by_port.entry(*p).or_default().insert(rule, source);
            }
        }
    }

    /// Calls `f` with every rule whose port and source match `who` (a rule may be
    /// reported more than once if several of its sources match).
    pub(crate) fn for_each_candidate(&self, port: u16, who: Who<'_>, mut f: impl FnMut(u32)) {
        if let Some(bucket) = self.by_port.get(&port) {
            bucket.for_each(who, &mut f);
        }
        self.any_port.for_each(who, &mut f);
    }
}

impl SourceIndex {
    fn insert(&mut self, rule: u32, source: &IndexedSource) {
        match source {
            IndexedSource::Pattern(p) if p.is_exact() => {
                self.exact.entry(p.as_str().into()).or_default().push(rule);
            }
            IndexedSource::Pattern(p) => {
                let prefix = p.literal_prefix();
                if let Err(pos) = self.prefix_lens.binary_search(&prefix.len()) {
                    self.prefix_lens.insert(pos, prefix.len());
                }
                self.patterns
                    .entry(prefix.into())
                    .or_default()
                    .push((rule, p.clone()));
            }
            IndexedSource::Authenticated => self.authenticated.push(rule),
            IndexedSource::Unauthenticated => self.unauthenticated.push(rule),
            IndexedSource::Cidr(net) => self.cidrs.push((rule, *net)),
        }
    }

    fn for_each(&self, who: Who<'_>, f: &mut impl FnMut(u32)) {
        match who.id {
            Some(id) => {
                let s = id.as_str();
                if let Some(rules) = self.exact.get(s) {
                    rules.iter().copied().for_each(&mut *f);
                }
                for &len in &self.prefix_lens {
                    if len > s.len() {
                        break;
                    }
                    if s.as_bytes()[len - 1] != b'/' {
                        continue;
                    }
                    if let Some(rules) = self.patterns.get(&s[..len]) {
                        for (rule, pattern) in rules {
                            if pattern.matches(id) {
                                f(*rule);
                            }
                        }
                    }
                }
                self.authenticated.iter().copied().for_each(&mut *f);
            }
            None => self.unauthenticated.iter().copied().for_each(&mut *f),
        }
        if let Some(ip) = who.ip {
            for (rule, net) in &self.cidrs {
                if net.contains(&ip) {
                    f(*rule);
                }
            }
        }
    }
}
