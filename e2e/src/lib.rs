//! Vigil's end-to-end testbed: network namespaces as pods on a bridge, the real
//! `vigil-controller`, `vigil-proxy` and `vigil` binaries, real iptables interception,
//! and packet captures read by tshark. Needs root (CI runs as root); see `README.md`.

pub mod apps;
pub mod capture;
pub mod chart;
pub mod k8s;
pub mod kube_procs;
pub mod mesh;
pub mod netns;
pub mod node;
pub mod soak;
pub mod workloads;
