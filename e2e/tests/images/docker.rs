//! `docker load` of the archives into a real Docker daemon (Debian's docker.io), started
//! for the test with no networking of its own (no bridge, no iptables rules, containers
//! with `--network none`) and everything under a temporary directory; then each image
//! runs (its binary and libraries work outside the kubelet too) and the proxy image's
//! `vigil-proxy init` programs iptables in its own network namespace.

use std::{path::Path, process::Command, time::Duration};

use vigil_e2e::{kube_procs::spawn_for_life, node};

struct Daemon {
    dir: tempfile::TempDir,
    pid: u32,
}

impl Daemon {
    fn start() -> Self {
        for tool in ["dockerd", "docker"] {
            assert!(
                Command::new(tool).arg("--version").output().is_ok(),
                "{tool} is missing: apt-get install docker.io (.ci/run installs it)"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("vigil-docker-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let args: Vec<String> = vec![
            format!("--data-root={}", d.join("data").display()),
            format!("--exec-root={}", d.join("exec").display()),
            format!("--pidfile={}", d.join("dockerd.pid").display()),
            format!("--host=unix://{}", d.join("docker.sock").display()),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--bridge=none".into(),
            "--ip-forward=false".into(),
            "--ip-masq=false".into(),
        ];
        let pid = spawn_for_life(
            None,
            Path::new("dockerd"),
            &args,
            log.try_clone().unwrap(),
            log,
        );
        let daemon = Self { dir, pid };
        for _ in 0..150 {
            if daemon
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .0
            {
                return daemon;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "dockerd did not answer in 30 s:\n{}",
            node::tail(&daemon.dir.path().join("dockerd.log"), 30)
        );
    }

    fn docker(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("docker")
            .arg("--host")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.docker(args);
        assert!(ok, "docker {args:?}:\n{out}");
        out
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containers and its containerd, and unmounts.
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for _ in 0..100 {
            let alive = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
                .is_ok_and(|s| !s.contains(") Z "));
            if !alive {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        node::remove_leftovers(self.dir.path());
    }
}

pub(crate) fn load_and_run() {
    let daemon = Daemon::start();
    let version = chart_version();
    for name in ["vigil-controller", "vigil-proxy", "vigil-testapp"] {
        let archive = node::images_dir().join(format!("{name}.tar"));
        assert!(
            archive.is_file(),
            "{} is missing: run `make images`",
            archive.display()
        );
        let out = daemon.ok(&["load", "--input", &archive.display().to_string()]);
        let reference = format!("ghcr.io/vigil-mesh/{name}:{version}");
        assert!(out.contains(&format!("Loaded image: {reference}")), "{out}");
    }
    let run = |args: &[&str]| -> String {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend_from_slice(args);
        daemon.ok(&all)
    };
    let proxy = format!("ghcr.io/vigil-mesh/vigil-proxy:{version}");
    let controller = format!("ghcr.io/vigil-mesh/vigil-controller:{version}");
    assert!(run(&[&proxy, "--version"]).contains(&format!("vigil-proxy {version}")));
    assert!(run(&[&controller, "--version"]).contains(&format!("vigil-controller {version}")));
    let whoami = daemon.ok(&[
        "image",
        "inspect",
        &proxy,
        "--format",
        "{{.Config.User}} {{json .Config.Entrypoint}}",
    ]);
    assert_eq!(whoami.trim(), "2102:2102 [\"/usr/local/bin/vigil-proxy\"]");
    // The init container's job, in the container's own network namespace: root with
    // NET_ADMIN and NET_RAW only, as the injector runs it.
    let init = run(&[
        "--user",
        "0",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_ADMIN",
        "--cap-add",
        "NET_RAW",
        &proxy,
        "init",
        "--proxy-uid",
        "2102",
    ]);
    // "N iptables rules applied, M ip6tables rules applied": the same chains in both
    // families (M is 0 only where the container's IPv6 is off and none was needed).
    let counts: Vec<usize> = init
        .split(" rules applied")
        .filter_map(|part| part.split_whitespace().rev().nth(1)?.parse().ok())
        .collect();
    assert!(
        init.contains(" iptables rules applied") && init.contains(" ip6tables rules applied"),
        "{init}"
    );
    assert!(
        matches!(counts[..], [v4, v6] if v4 > 0 && (v6 == v4 || v6 == 0)),
        "{init}: {counts:?}"
    );
    println!(
        "docker: the three archives load (docker load) and run; vigil-proxy init programs iptables in a container: {}",
        init.trim()
    );
}

fn chart_version() -> String {
    vigil_e2e::chart::app_version()
}
