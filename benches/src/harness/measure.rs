//! One measurement of one path: a load run (with the sidecars' CPU over its measured
//! window), a TCP stream, or a burst of handshakes.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use crate::load::{self, LoadSpec, Protocol, Target, TlsClient};

use super::{
    procs, syscalls, tcp,
    topology::{InboundTls, Topology},
};

/// What a measurement was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, clap::ValueEnum)]
pub enum Kind {
    /// HTTP/1.1 at a fixed rate, 16 connections (B1, B2, B12).
    H1Fixed,
    /// HTTP/1.1 closed loop, 16 connections (B3).
    H1Closed,
    /// HTTP/2 at a fixed rate, 4 connections × 25 streams (B4).
    H2Fixed,
    /// HTTP/2 closed loop, 4 × 25 (B4).
    H2Closed,
    /// One opaque TCP stream (B5).
    Tcp,
    /// A new mTLS connection per request, straight to the inbound sidecar (B6).
    NewConn,
    /// Bare mTLS handshakes against the inbound sidecar (B7).
    Handshake,
}

/// One measurement's numbers.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Sample {
    /// Requests (or handshakes) per second achieved.
    pub rate: f64,
    /// Latency percentiles, µs (load runs).
    pub p50_us: u64,
    /// p99.
    pub p99_us: u64,
    /// Latency distribution (percentile, µs).
    pub percentiles: Vec<(f64, u64)>,
    /// The load generator's own lateness at p99, µs (fixed-rate runs; see
    /// [`load::Report::send_late_p99_us`]).
    pub send_late_p99_us: u64,
    /// Sidecar CPU (both sidecars) in cores per 1,000 req/s.
    pub cpu_per_1k: f64,
    /// Sidecar CPU per request (or per handshake), µs.
    pub cpu_per_op_us: f64,
    /// Times the sidecars' threads were switched onto a CPU, per request (load runs).
    pub switches_per_op: f64,
    /// System calls the sidecars made per request over the run's warm-up (load runs;
    /// `None` where perf cannot count them, see [`super::syscalls`]).
    pub syscalls_per_op: Option<f64>,
    /// The share of the sidecars' CPU time spent in user space, from clock ticks (load
    /// runs; `None` when the run took too few ticks to split).
    pub user_share: Option<f64>,
    /// Opaque TCP throughput, Gbit/s.
    pub gbit_s: f64,
    /// Why the run does not count (errors, missed rate), if it does not.
    pub invalid: Option<String>,
}

/// Load-run settings shared by the kinds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Unmeasured warm-up before each load run.
    pub warmup: Duration,
    /// Measured time at a fixed rate.
    pub fixed: Duration,
    /// Measured time in closed loop.
    pub closed: Duration,
    /// TCP stream length.
    pub tcp: Duration,
    /// Handshakes per B7 measurement.
    pub handshakes: u32,
}

/// Fixed rate for B1/B4, requests per second.
pub const RATE: f64 = 1000.0;

/// Measures `kind` on the path called `path`.
pub async fn measure(
    topo: &Topology,
    path: &str,
    kind: Kind,
    timing: &Timing,
    tls: &TlsClients,
) -> anyhow::Result<Sample> {
    let p = topo
        .path(path)
        .ok_or_else(|| anyhow::anyhow!("no path {path}"))?;
    let target = |addr: SocketAddr, protocol, tls: Option<TlsClient>| Target {
        addr,
        path: "/index.html".into(),
        authority: "localhost".into(),
        protocol,
        tls,
    };
    let spec = |target, rate, conns, streams, duration, fresh| LoadSpec {
        target,
        rate,
        conns,
        streams,
        duration,
        warmup: Duration::ZERO,
        fresh_connections: fresh,
    };
    match kind {
        Kind::H1Fixed | Kind::H1Closed | Kind::H2Fixed | Kind::H2Closed => {
            let h2 = matches!(kind, Kind::H2Fixed | Kind::H2Closed);
            let fixed = matches!(kind, Kind::H1Fixed | Kind::H2Fixed);
            let (addr, protocol, conns, streams) = if h2 {
                (p.h2, Protocol::Http2, 4, 25)
            } else {
                (p.http, Protocol::Http1, 16, 1)
            };
            let rate = fixed.then_some(RATE);
            let duration = if fixed { timing.fixed } else { timing.closed };
            let t = target(addr, protocol, None);
            let sidecars = topo.procs_at(if h2 { &p.h2_sidecars } else { &p.sidecars });
            load_run(
                spec(t.clone(), rate, conns, streams, timing.warmup, false),
                spec(t, rate, conns, streams, duration, false),
                &sidecars,
            )
            .await
        }
        Kind::NewConn => {
            let (addr, how) = p
                .inbound
                .ok_or_else(|| anyhow::anyhow!("{path} has no inbound listener"))?;
            let t = target(addr, Protocol::Http1, Some(tls.get(how).clone()));
            let inbound = topo.procs_at(&p.inbound_proc.into_iter().collect::<Vec<_>>());
            load_run(
                spec(t.clone(), None, 16, 1, timing.warmup, true),
                spec(t, None, 16, 1, timing.closed, true),
                &inbound,
            )
            .await
        }
        Kind::Tcp => {
            let entry = p
                .tcp
                .ok_or_else(|| anyhow::anyhow!("{path} has no TCP entry"))?;
            Ok(match tcp::stream(entry, timing.tcp).await {
                Ok(t) => Sample {
                    gbit_s: t.gbit_s(),
                    ..Sample::default()
                },
                Err(e) => Sample {
                    invalid: Some(format!("stream failed: {e}")),
                    ..Sample::default()
                },
            })
        }
        Kind::Handshake => {
            let (addr, how) = p
                .inbound
                .ok_or_else(|| anyhow::anyhow!("{path} has no inbound listener"))?;
            let inbound = topo.procs_at(&p.inbound_proc.into_iter().collect::<Vec<_>>());
            Ok(handshakes(addr, tls.get(how), &inbound, timing.handshakes)
                .await
                .unwrap_or_else(|e| Sample {
                    invalid: Some(format!("handshake failed: {e}")),
                    ..Sample::default()
                }))
        }
    }
}

/// TLS clients for direct connections to inbound sidecars.
pub struct TlsClients {
    /// Requires the server SVID, ALPN `vigil/1`.
    pub vigil: TlsClient,
    /// Requires the server SVID, no ALPN (Envoy).
    pub spiffe: TlsClient,
    /// Verifies `localhost` (HAProxy, nginx).
    pub dns: TlsClient,
}

impl TlsClients {
    /// The client for `how`.
    pub fn get(&self, how: InboundTls) -> &TlsClient {
        match how {
            InboundTls::Vigil => &self.vigil,
            InboundTls::Spiffe => &self.spiffe,
            InboundTls::Dns => &self.dns,
        }
    }
}

async fn load_run(
    warm: LoadSpec,
    measured: LoadSpec,
    sidecars: &[&procs::Proc],
) -> anyhow::Result<Sample> {
    // System calls are counted over the warm-up, at the same load as the measured window,
    // which so runs without perf. (Attaching blocks this thread for perf's answer, before
    // any request is under way.)
    let mut counter = syscalls::Counter::attach(&procs::pids_of(sidecars));
    let counting = counter.as_mut().is_some_and(syscalls::Counter::enable);
    let w = load::run(&warm).await;
    let syscalls = counter
        .and_then(syscalls::Counter::finish)
        .filter(|_| counting && w.ok > 0)
        .map(|n| n as f64 / w.ok as f64);
    let (before, switches_before) = (procs::cpu_of(sidecars), procs::switches_of(sidecars));
    let ticks_before = procs::user_system_of(sidecars);
    let r = load::run(&measured).await;
    let cpu = procs::cpu_of(sidecars).saturating_sub(before).as_secs_f64();
    let switches = procs::switches_of(sidecars).saturating_sub(switches_before);
    let ticks = procs::user_system_of(sidecars);
    let user_share = share(
        ticks.0.saturating_sub(ticks_before.0),
        ticks.1.saturating_sub(ticks_before.1),
    );
    let mut invalid = r.valid().err();
    if r.ok == 0 && invalid.is_none() {
        invalid = Some("no request completed".into());
    }
    let per_second = cpu / r.window_s.max(1e-9);
    Ok(Sample {
        rate: r.achieved_rate,
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        percentiles: r.percentiles.clone(),
        send_late_p99_us: r.send_late_p99_us,
        cpu_per_1k: per_second * 1000.0 / r.achieved_rate.max(1e-9),
        cpu_per_op_us: cpu * 1e6 / (r.ok.max(1) as f64),
        switches_per_op: switches as f64 / (r.ok.max(1) as f64),
        syscalls_per_op: syscalls,
        user_share,
        gbit_s: 0.0,
        invalid,
    })
}

/// Fewest clock ticks (10 ms each) a run must take for its user/kernel split to be given:
/// below, one tick either way moves the share by more than 10 %.
const MIN_TICKS: u64 = 10;

/// The share of `user` in `user + system` clock ticks, if there are enough of them.
fn share(user: u64, system: u64) -> Option<f64> {
    let total = user + system;
    (total >= MIN_TICKS).then(|| user as f64 / total as f64)
}

/// `n` full mTLS handshakes (connect, handshake, close) one after another; the inbound
/// sidecar's CPU per handshake.
async fn handshakes(
    addr: SocketAddr,
    client: &TlsClient,
    inbound: &[&procs::Proc],
    n: u32,
) -> anyhow::Result<Sample> {
    let connector = tokio_rustls::TlsConnector::from(Arc::clone(&client.config));
    let before = procs::cpu_of(inbound);
    let start = std::time::Instant::now();
    for _ in 0..n {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let tls = connector.connect(client.server_name.clone(), tcp).await?;
        drop(tls);
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let the sidecar finish with the last connections before reading its CPU.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu = procs::cpu_of(inbound).saturating_sub(before).as_secs_f64();
    Ok(Sample {
        rate: f64::from(n) / elapsed,
        cpu_per_op_us: cpu * 1e6 / f64::from(n.max(1)),
        ..Sample::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_only_runs_long_enough_to_split() {
        assert_eq!(share(30, 10), Some(0.75));
        assert_eq!(share(0, 10), Some(0.0));
        assert_eq!(share(10, 0), Some(1.0));
        assert_eq!(share(5, 4), None, "9 ticks");
        assert_eq!(share(0, 0), None);
    }
}
