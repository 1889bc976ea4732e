//! The node's configuration files: containerd, CNI, kubelet, kube-proxy, CoreDNS.
//!
//! What is specific to these machines (cgroup v1, no CAP_SYS_RESOURCE, no systemd, no
//! registry) is here and only here; the chart knows nothing of it:
//! - kubelet: `cgroupDriver: cgroupfs` and `failCgroupV1: false` (cgroup v1 is in
//!   maintenance mode and refused by default since 1.35), `failSwapOn: false`, its own
//!   `cgroupRoot` so several test nodes can run side by side;
//! - containerd: `restrict_oom_score_adj = true` — root here lacks CAP_SYS_RESOURCE and
//!   every sandbox otherwise fails in runc ("can't get final child's PID from pipe: EOF");
//!   the pause image is imported, never pulled.

use std::path::Path;

use super::{CLUSTER_DOMAIN, NODE_IP, PAUSE_IMAGE, POD_CIDR};

/// kube-proxy's `/healthz`: 200 once its rules are in sync with the API server.
pub(super) const KUBE_PROXY_HEALTHZ: &str = "127.0.0.1:10256";
/// CoreDNS's `/ready`: 200 once the `kubernetes` plugin has synced.
pub(super) const COREDNS_READY: &str = "127.0.0.1:8181";

/// containerd 1.6 (Debian's), every path under `dir`; pod network namespaces are mounted
/// under its state directory (nothing in the host's /run/netns).
pub(super) fn containerd(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{d}/cni"
"#,
        cni_bin = super::CNI_BIN_DIR,
    )
}

/// The pod network: the reference `bridge` plugin (gateway on the node, hairpin so a pod
/// reaches itself through a Service) with `host-local` addresses, and `portmap`.
pub(super) fn cni(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "vigil-node",
        "plugins": [
            {
                "type": "bridge",
                "bridge": super::BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": dir.join("cni-ipam").display().to_string(),
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// kubelet: cgroup v1 via cgroupfs, its own cgroup root, anonymous access inside the
/// node's namespace only, cluster DNS on the node address, no image GC or eviction (the
/// images are imported once and must stay).
pub(super) fn kubelet(dir: &Path, cgroup_root: &str) -> String {
    let d = dir.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{d}/containerd.sock
authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}
authorization: {{mode: AlwaysAllow}}
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
enforceNodeAllocatable: []
resolvConf: {d}/resolv.conf
clusterDNS: [{NODE_IP}]
clusterDomain: {CLUSTER_DOMAIN}
podLogsDir: {d}/pod-logs
evictionHard: {{}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
"#
    )
}

/// kube-proxy in iptables mode; conntrack sysctls are left alone (not writable from a
/// network namespace).
pub(super) fn kube_proxy(kubeconfig: &Path, node: &str) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kc}}}
mode: iptables
clusterCIDR: {POD_CIDR}
hostnameOverride: {node}
bindAddress: {NODE_IP}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: {KUBE_PROXY_HEALTHZ}
iptables: {{minSyncPeriod: 0s, syncPeriod: 30s}}
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
"#,
        kc = kubeconfig.display()
    )
}

/// CoreDNS as the node's DNS (as NodeLocal DNSCache would be): the `kubernetes` plugin
/// answers `<svc>.<ns>.svc.cluster.local`; nothing is forwarded outside. `/ready` on
/// 127.0.0.1:8181 says when it has synced with the API server.
pub(super) fn corefile(kubeconfig: &Path) -> String {
    format!(
        r#".:53 {{
    bind {NODE_IP}
    errors
    ready 127.0.0.1:8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kc} e2e
        pods insecure
    }}
}}
"#,
        kc = kubeconfig.display()
    )
}

/// The host's DNS is never used: pods with `dnsPolicy: Default` get the node's DNS too.
pub(super) fn resolv_conf() -> String {
    format!("nameserver {NODE_IP}\n")
}
