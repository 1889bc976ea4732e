//! The floors printed beside B5 and B7 (see `tcp::relay` and `tls_server`): what the
//! least program on sockets reaches on the SUT's core, against the in-memory baselines
//! those targets divide by, and vigil's share of it. Informational: BENCHMARKS.md's
//! targets stay as they are (`suite::ratios`).

use super::{
    measure::{Kind, Sample},
    suite::{Results, per_round, sample, summarize, valid, vigil_vs},
};

/// B5's floor, medians over rounds: what the SUT's core moves through two plain relays,
/// and what a TLS pair there can move at most — the relays' socket work plus the crypto
/// ceiling's, one after the other on one core: `1 / (1/relay + 1/ceiling)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpaqueFloor {
    /// Two plain relays (`relay` path), Gbit/s.
    pub relay_gbit_s: f64,
    /// The bound for a TLS pair, Gbit/s.
    pub bound_gbit_s: f64,
    /// vigil's throughput over the bound, per round (median, min, max).
    pub vigil_share: (f64, f64, f64),
}

/// B5's floor, if the relays, the ceiling and vigil were measured in some round.
pub fn opaque_floor(r: &Results) -> Option<OpaqueFloor> {
    let bound = |r: &Results, i: usize| {
        let relay = sample(r, Kind::Tcp, "relay", i)?.gbit_s;
        let ceiling = r.crypto_ceiling.get(i)? * 8.0 / 1e9;
        (relay > 0.0 && ceiling > 0.0).then(|| 1.0 / (1.0 / relay + 1.0 / ceiling))
    };
    let rounds = r.get(Kind::Tcp, "relay").len();
    let relay: Vec<_> = (0..rounds)
        .map(|i| sample(r, Kind::Tcp, "relay", i).map(|s| s.gbit_s))
        .collect();
    let bounds: Vec<_> = (0..rounds).map(|i| bound(r, i)).collect();
    let share = per_round(
        r,
        Kind::Tcp,
        "vigil",
        |_, _, s| valid(s, |s| s.gbit_s),
        bound,
    );
    Some(OpaqueFloor {
        relay_gbit_s: summarize(&relay)?.0,
        bound_gbit_s: summarize(&bounds)?.0,
        vigil_share: summarize(&share)?,
    })
}

/// B7's floor, medians over rounds: the smallest rustls server on sockets (`rustls`
/// path, [`super::tls_server`]) against the in-memory handshake B7 divides by, and vigil
/// against it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HandshakeFloor {
    /// Server CPU per handshake of the socket floor, µs.
    pub rustls_us: f64,
    /// The floor over the in-memory handshake (what B7 would be for that server).
    pub rustls_vs_bare: f64,
    /// vigil's inbound over the floor, per round (median, min, max).
    pub vigil_vs_rustls: (f64, f64, f64),
}

/// B7's floor, if the floor, the in-memory baseline and vigil were measured.
pub fn handshake_floor(r: &Results) -> Option<HandshakeFloor> {
    let cpu = |s: &Sample| s.cpu_per_op_us;
    let rustls: Vec<_> = r
        .get(Kind::Handshake, "rustls")
        .iter()
        .map(|s| valid(s, cpu))
        .collect();
    let vs_bare = per_round(
        r,
        Kind::Handshake,
        "rustls",
        |_, _, s| valid(s, cpu),
        |r, i| r.bare_handshake_us.get(i).copied(),
    );
    Some(HandshakeFloor {
        rustls_us: summarize(&rustls)?.0,
        rustls_vs_bare: summarize(&vs_bare)?.0,
        vigil_vs_rustls: summarize(&vigil_vs(r, Kind::Handshake, "rustls", cpu))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_floor_compares_the_socket_server_with_both_sides() {
        let hs = |us: f64| Sample {
            cpu_per_op_us: us,
            ..Sample::default()
        };
        let mut r = Results::default();
        assert_eq!(handshake_floor(&r), None, "nothing measured");
        // Per round: floor, in-memory, vigil (µs per handshake).
        for (floor, bare, vigil) in [
            (260.0, 130.0, 286.0),
            (300.0, 120.0, 300.0),
            (250.0, 125.0, 325.0),
        ] {
            r.push(Kind::Handshake, "rustls", hs(floor));
            r.push(Kind::Handshake, "vigil", hs(vigil));
            r.bare_handshake_us.push(bare);
        }
        let f = handshake_floor(&r).unwrap();
        assert!((f.rustls_us - 260.0).abs() < 1e-9, "{f:?}");
        // 2.0, 2.5, 2.0
        assert!((f.rustls_vs_bare - 2.0).abs() < 1e-9, "{f:?}");
        // 1.1, 1.0, 1.3
        let (median, min, max) = f.vigil_vs_rustls;
        assert!(
            (median - 1.1).abs() < 1e-9 && (min - 1.0).abs() < 1e-9 && (max - 1.3).abs() < 1e-9,
            "{f:?}"
        );
    }

    #[test]
    fn opaque_floor_is_the_relays_and_the_crypto_in_series() {
        let tcp = |gbit_s: f64| Sample {
            gbit_s,
            ..Sample::default()
        };
        let mut r = Results::default();
        assert_eq!(opaque_floor(&r), None, "nothing measured");
        // Round 1: relays 8, ceiling 24 Gbit/s: bound 6; vigil 3 of it.
        // Round 2: relays 6, ceiling 12: bound 4; vigil 4 of it.
        // Round 3: the relays' run did not count: no bound, vigil's round left out.
        for (relay, ceiling, vigil) in [(8.0, 24.0, 3.0), (6.0, 12.0, 4.0), (7.0, 12.0, 9.0)] {
            r.push(Kind::Tcp, "relay", tcp(relay));
            r.push(Kind::Tcp, "vigil", tcp(vigil));
            r.crypto_ceiling.push(ceiling * 1e9 / 8.0);
        }
        if let Some(v) = r.samples.get_mut("Tcp").and_then(|m| m.get_mut("relay")) {
            v[2].invalid = Some("lost bytes".into());
        }
        let f = opaque_floor(&r).unwrap();
        assert!((f.relay_gbit_s - 7.0).abs() < 1e-9, "{f:?}");
        assert!((f.bound_gbit_s - 5.0).abs() < 1e-9, "{f:?}");
        let (median, min, max) = f.vigil_share;
        assert!(
            (median - 0.75).abs() < 1e-9 && (min - 0.5).abs() < 1e-9 && (max - 1.0).abs() < 1e-9,
            "{f:?}"
        );
    }
}
