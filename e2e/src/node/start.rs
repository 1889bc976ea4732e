//! Starting a node's parts, in order: the network namespace, the cgroup root, the API
//! server and the control plane, containerd, then the kubelet, kube-proxy and CoreDNS;
//! and waiting until the node is Ready.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::Api;

use super::{
    NODE_IP, Node, SERVICE_CIDR, config,
    error::{NodeError, sh, write},
    report::tail,
    teardown,
};
use crate::{
    k8s::{ApiOptions, Cluster},
    kube_procs::spawn_for_life,
};

impl Node {
    pub(super) fn network(&self) -> Result<(), NodeError> {
        let ns = self.netns.as_str();
        let _ = sh(&["ip", "netns", "del", ns]);
        sh(&["ip", "netns", "add", ns])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{NODE_IP}/32"),
            "dev",
            "lo",
        ])?;
        // Service IPs: to lo, where kube-proxy's OUTPUT rules DNAT them (with no route at
        // all, connect() fails before iptables sees the packet).
        sh(&["ip", "-n", ns, "route", "add", SERVICE_CIDR, "dev", "lo"])?;
        let nsenter = format!("--net=/run/netns/{ns}");
        sh(&[
            "nsenter",
            &nsenter,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        // Bridged pod-to-pod traffic must pass iptables, or replies from a Service's
        // backend on the same bridge bypass kube-proxy's NAT.
        sh(&[
            "nsenter",
            &nsenter,
            "sysctl",
            "-qw",
            "net.bridge.bridge-nf-call-iptables=1",
        ])?;
        Ok(())
    }

    pub(super) fn cgroups(&self) -> Result<(), NodeError> {
        for h in teardown::cgroup_hierarchies() {
            let dir = h.join(&self.footprint.cgroup_root);
            std::fs::create_dir_all(&dir).map_err(|e| NodeError::Setup {
                command: format!("mkdir {}", dir.display()),
                output: e.to_string(),
            })?;
            // A new cpuset cgroup has no CPUs or memory nodes until told.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = std::fs::read_to_string(h.join(f)) {
                    write(&dir.join(f), v.trim())?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
    ) -> Result<u32, NodeError> {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| NodeError::Setup {
                    command: format!("opening {}", log.display()),
                    output: e.to_string(),
                })
        };
        let pid = spawn_for_life(Some(&self.netns), program, args, open()?, open()?);
        self.pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), pid));
        Ok(pid)
    }

    pub(super) fn control_plane(&mut self, bin: &Path) -> Result<(), NodeError> {
        std::fs::create_dir_all(self.dir.join("logs")).map_err(|e| NodeError::Setup {
            command: "mkdir logs".into(),
            output: e.to_string(),
        })?;
        let api = self.dir.join("api");
        std::fs::create_dir_all(&api).map_err(|e| NodeError::Setup {
            command: "mkdir api".into(),
            output: e.to_string(),
        })?;
        let user = |token: &str, user: &str, groups: &[&str]| {
            (
                token.to_string(),
                user.to_string(),
                groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            )
        };
        let node_user = format!("system:node:{}", self.name);
        let opts = ApiOptions {
            netns: Some(self.netns.clone()),
            address: NODE_IP.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST),
            service_cidr: SERVICE_CIDR.into(),
            sans: [
                "10.96.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from)
            .to_vec(),
            tokens: vec![
                user("node-kcm-token", "system:kube-controller-manager", &[]),
                user("node-scheduler-token", "system:kube-scheduler", &[]),
                user("node-proxy-token", "system:kube-proxy", &[]),
                user("node-kubelet-token", &node_user, &["system:nodes"]),
                // CoreDNS reads Services, EndpointSlices and Namespaces cluster-wide.
                user("node-coredns-token", "coredns", &["system:masters"]),
            ],
            authorization: "Node,RBAC".into(),
            // Logs and exec go to the kubelet at the node's address, never by host name
            // (which would ask the host's DNS, outside the namespace).
            extra_args: vec!["--kubelet-preferred-address-types=InternalIP".into()],
        };
        let bin_dir = bin.to_path_buf();
        self.cluster = Some(crate::netns::blocking_in(&self.netns, move || {
            Cluster::start_in(bin_dir, api, &opts)
        }));
        let cluster = self.cluster();
        let kubeconfig = |name: &str, token: &str| -> PathBuf {
            let p = self.dir.join(format!("{name}.kubeconfig"));
            cluster.write_kubeconfig_for(token, &p);
            p
        };
        let kcm = kubeconfig("kcm", "node-kcm-token");
        let sched = kubeconfig("scheduler", "node-scheduler-token");
        let ca = cluster.ca_file();
        let sa_key = cluster.dir.join("sa.key");
        self.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", kcm.display()),
                "--leader-elect=false".into(),
                format!("--service-account-private-key-file={}", sa_key.display()),
                format!("--root-ca-file={}", ca.display()),
                "--use-service-account-credentials=true".into(),
                "--controllers=*".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=10257".into(),
                "--v=1".into(),
            ],
        )?;
        self.spawn(
            "kube-scheduler",
            &bin.join("kube-scheduler"),
            &[
                format!("--kubeconfig={}", sched.display()),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=10259".into(),
                "--v=1".into(),
            ],
        )?;
        Ok(())
    }

    pub(super) fn containerd(&self) -> Result<(), NodeError> {
        let cfg = self.dir.join("containerd.toml");
        write(&cfg, &config::containerd(&self.dir))?;
        self.spawn(
            "containerd",
            Path::new("containerd"),
            &["--config".into(), cfg.display().to_string()],
        )?;
        let sock = self.dir.join("containerd.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err(NodeError::Setup {
                    command: "containerd".into(),
                    output: format!(
                        "no socket after 30 s:\n{}",
                        tail(&self.log("containerd"), 20)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub(super) fn kubelet(&self, bin: &Path, cni: bool) -> Result<(), NodeError> {
        let d = &self.dir;
        for sub in ["cni", "kubelet", "pod-logs"] {
            std::fs::create_dir_all(d.join(sub)).map_err(|e| NodeError::Setup {
                command: format!("mkdir {sub}"),
                output: e.to_string(),
            })?;
        }
        if cni {
            write(&d.join("cni/10-vigil-node.conflist"), &config::cni(d))?;
        }
        write(&d.join("resolv.conf"), &config::resolv_conf())?;
        let cfg = d.join("kubelet.yaml");
        write(&cfg, &config::kubelet(d, &self.footprint.cgroup_root))?;
        let kubelet_kc = d.join("kubelet.kubeconfig");
        self.cluster()
            .write_kubeconfig_for("node-kubelet-token", &kubelet_kc);
        self.spawn(
            "kubelet",
            &bin.join("kubelet"),
            &[
                format!("--config={}", cfg.display()),
                format!("--kubeconfig={}", kubelet_kc.display()),
                format!("--root-dir={}", d.join("kubelet").display()),
                format!("--cert-dir={}", d.join("kubelet/pki").display()),
                format!("--hostname-override={}", self.name),
                format!("--node-ip={NODE_IP}"),
                "--v=1".into(),
            ],
        )?;
        let proxy_kc = d.join("kube-proxy.kubeconfig");
        self.cluster()
            .write_kubeconfig_for("node-proxy-token", &proxy_kc);
        let proxy_cfg = d.join("kube-proxy.yaml");
        write(&proxy_cfg, &config::kube_proxy(&proxy_kc, &self.name))?;
        self.spawn(
            "kube-proxy",
            &bin.join("kube-proxy"),
            &[format!("--config={}", proxy_cfg.display()), "--v=1".into()],
        )?;
        let dns_kc = d.join("coredns.kubeconfig");
        self.cluster()
            .write_kubeconfig_for("node-coredns-token", &dns_kc);
        let corefile = d.join("Corefile");
        write(&corefile, &config::corefile(&dns_kc))?;
        self.spawn(
            "coredns",
            &bin.join("coredns"),
            &["-conf".into(), corefile.display().to_string()],
        )?;
        Ok(())
    }

    pub(super) fn wait_ready(&self, timeout: Duration) -> Result<(), NodeError> {
        let cfg = self.cluster().client_config(crate::k8s::ADMIN_TOKEN);
        let name = self.name.clone();
        let start = Instant::now();
        let condition = self.run(move || async move {
            let mut last = String::from("the node has not registered");
            while start.elapsed() < timeout {
                if let Ok(client) = kube::Client::try_from(cfg.clone())
                    && let Ok(Some(n)) = Api::<NodeObject>::all(client).get_opt(&name).await
                {
                    let ready = n
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .into_iter()
                        .find(|c| c.type_ == "Ready");
                    match ready {
                        Some(c) if c.status == "True" => break,
                        Some(c) => {
                            last = format!(
                                "{}: {}",
                                c.reason.unwrap_or_default(),
                                c.message.unwrap_or_default()
                            );
                        }
                        None => last = "no Ready condition yet".into(),
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            if start.elapsed() >= timeout {
                return Some(last);
            }
            // Services need kube-proxy's rules, names need CoreDNS: both in sync before a
            // test deploys anything.
            for (what, addr, path) in [
                ("kube-proxy", config::KUBE_PROXY_HEALTHZ, "/healthz"),
                ("CoreDNS", config::COREDNS_READY, "/ready"),
            ] {
                let Ok(sock) = addr.parse::<std::net::SocketAddr>() else {
                    return Some(format!("{what}: bad address {addr}"));
                };
                loop {
                    let answer = crate::apps::get(sock, path).await;
                    if answer.is_ok_and(|(s, _)| s.is_success()) {
                        break;
                    }
                    if start.elapsed() >= timeout {
                        return Some(format!(
                            "the node is Ready but {what} is not ({addr}{path})"
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            None
        });
        match condition {
            None => Ok(()),
            Some(condition) => Err(NodeError::NotReady {
                name: self.name.clone(),
                waited: timeout,
                condition,
                log: self.log("kubelet"),
                kubelet_tail: tail(&self.log("kubelet"), 25),
            }),
        }
    }
}
