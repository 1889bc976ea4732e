//! The load generator behind the side-by-side benchmarks (`vigil-load`).
//!
//! Open loop, without coordinated omission: every request has an *intended* send time on
//! a fixed schedule (`rate` requests per second spread evenly over `conns` connections),
//! and its latency is measured from that intended time, not from when a busy connection
//! finally got to send it — a stalled server shows up as the queueing its clients really
//! suffer. Latencies go into an HdrHistogram (1 µs .. 60 s, 3 significant digits). A run
//! reports the rate it achieved; one that misses the target by more than 1 % is invalid
//! ([`Report::valid`]). A closed-loop mode (`rate = None`) measures maximum throughput.
//!
//! Connections: HTTP/1.1 (keep-alive, one request in flight per connection) or HTTP/2
//! (`streams` requests in flight per connection), over TCP or TLS (rustls, optional
//! client certificate: a SPIFFE SVID for mesh paths).

pub mod client;
pub mod report;
pub mod run;

pub use client::{Protocol, Target, TlsClient};
pub use report::Report;
pub use run::{LoadSpec, run};
