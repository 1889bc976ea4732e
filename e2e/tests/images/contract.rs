//! The image archives against what runs them: the chart (users, ports, image names), the
//! injector (`proxyUid`) and `docker/*.Dockerfile` (users, entrypoints, exposed ports).
//! Reads the archives `make images` wrote, not the code that writes them — with our reader
//! and with skopeo, an independent one.

use std::{collections::BTreeSet, path::Path};

use serde_json::Value;
use vigil_e2e::{chart, k8s, node};
use vigil_images::inspect::{Inspected, inspect};

/// `USER`, `EXPOSE` and `ENTRYPOINT`/`CMD` of a Dockerfile's final stage.
struct Dockerfile {
    user: String,
    ports: BTreeSet<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

fn dockerfile(name: &str) -> Dockerfile {
    let text = std::fs::read_to_string(k8s::repo_root().join("docker").join(name)).unwrap();
    let last_stage = text.rsplit("\nFROM ").next().unwrap_or_default();
    let mut d = Dockerfile {
        user: String::new(),
        ports: BTreeSet::new(),
        entrypoint: Vec::new(),
        cmd: Vec::new(),
    };
    for line in last_stage.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "USER" => d.user = rest.trim().to_string(),
            "EXPOSE" => {
                d.ports = rest
                    .split_whitespace()
                    .map(|p| format!("{p}/tcp"))
                    .collect()
            }
            "ENTRYPOINT" => d.entrypoint = serde_json::from_str(rest).unwrap(),
            "CMD" => d.cmd = serde_json::from_str(rest).unwrap(),
            _ => {}
        }
    }
    d
}

fn config(i: &Inspected) -> (String, BTreeSet<String>, Vec<String>, Vec<String>) {
    let c = i.config.config().clone().unwrap_or_default();
    (
        c.user().clone().unwrap_or_default(),
        c.exposed_ports()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        c.entrypoint().clone().unwrap_or_default(),
        c.cmd().clone().unwrap_or_default(),
    )
}

fn archive(name: &str) -> Inspected {
    let path = node::images_dir().join(format!("{name}.tar"));
    assert!(
        path.is_file(),
        "{} is missing: run `make images` (make test does)",
        path.display()
    );
    let i = inspect(&path).unwrap_or_else(|e| panic!("{e}"));
    skopeo_reads(&path, &i);
    i
}

/// `helm template` of the chart with its defaults.
fn rendered(bin: &Path) -> Vec<Value> {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin.join("helm"))
        .args(["template", "vigil", &chart::chart(), "-n", chart::NS])
        .args(["--kube-version", "1.36.3"])
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    chart::documents(&String::from_utf8_lossy(&out.stdout))
}

/// An independent reader: skopeo (containers/image, what podman and CRI-O use) reads
/// the archive both as `docker load` sees it (`docker-archive:`, Docker's
/// `manifest.json`) and as an OCI layout (`oci-archive:`), copies it (verifying every
/// blob's digest) and reports the same configuration as ours.
fn skopeo_reads(path: &Path, i: &Inspected) {
    let run = |args: &[&str]| -> String {
        let out = std::process::Command::new("skopeo")
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("skopeo: {e} (apt-get install skopeo; .ci/run installs it)")
            });
        assert!(
            out.status.success(),
            "skopeo {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (user, ports, entrypoint, cmd) = config(i);
    for transport in ["docker-archive", "oci-archive"] {
        let reference = format!("{transport}:{}", path.display());
        let c: Value = serde_json::from_str(&run(&["inspect", "--config", &reference])).unwrap();
        let c = &c["config"];
        assert_eq!(c["User"].as_str().unwrap_or_default(), user, "{reference}");
        let exposed: BTreeSet<String> = c["ExposedPorts"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(exposed, ports, "{reference}");
        let list = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(list(&c["Entrypoint"]), entrypoint, "{reference}");
        assert_eq!(list(&c["Cmd"]), cmd, "{reference}");
        let copy = tempfile::tempdir().unwrap();
        run(&[
            "copy",
            "--quiet",
            &reference,
            &format!("oci:{}:copy", copy.path().display()),
        ]);
    }
}

pub(crate) fn check(bin: &Path) {
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(chart::chart_dir().join("values.yaml")).unwrap(),
    )
    .unwrap();
    let version = chart::app_version();
    let docs = rendered(bin);
    let deployment = chart::one(&docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];

    // The controller: the chart's image, user and container ports.
    let ctl = archive("vigil-controller");
    assert_eq!(
        ctl.reference,
        format!(
            "{}:{version}",
            values["image"]["repository"].as_str().unwrap()
        )
    );
    let (user, ports, entrypoint, _) = config(&ctl);
    let sc = &pod["securityContext"];
    assert_eq!(user, format!("{}:{}", sc["runAsUser"], sc["runAsGroup"]));
    let chart_ports: BTreeSet<String> = pod["containers"][0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}/tcp", p["containerPort"]))
        .collect();
    assert_eq!(
        ports, chart_ports,
        "the controller's exposed ports are the chart's"
    );
    let d = dockerfile("vigil-controller.Dockerfile");
    assert_eq!(
        (user.as_str(), &ports, &entrypoint),
        (d.user.as_str(), &d.ports, &d.entrypoint)
    );

    // The proxy: the injector's image and proxyUid (iptables exempts that user's traffic).
    let proxy = archive("vigil-proxy");
    assert_eq!(
        proxy.reference,
        format!(
            "{}:{version}",
            values["injector"]["proxyImage"]["repository"]
                .as_str()
                .unwrap()
        )
    );
    let (user, ports, entrypoint, cmd) = config(&proxy);
    let uid = values["injector"]["proxyUid"].as_i64().unwrap();
    assert_eq!(user, format!("{uid}:{uid}"));
    assert_eq!(
        uid,
        vigil_injector::config::InjectorConfig::default().proxy_uid,
        "chart and injector agree on the proxy's user"
    );
    for key in ["inbound", "admin"] {
        let p = format!("{}/tcp", values["injector"]["ports"][key]);
        assert!(
            ports.contains(&p),
            "the proxy exposes its {key} port {p}: {ports:?}"
        );
    }
    let d = dockerfile("vigil-proxy.Dockerfile");
    assert_eq!(
        (user.as_str(), &ports, &entrypoint, &cmd),
        (d.user.as_str(), &d.ports, &d.entrypoint, &d.cmd)
    );
    for needed in [
        "usr/sbin/iptables",
        "usr/sbin/xtables-nft-multi",
        "usr/local/bin/vigil-proxy",
    ] {
        assert!(
            proxy.files.iter().any(|f| f == needed),
            "the proxy image carries {needed} (vigil-init runs iptables)"
        );
    }
    assert!(
        proxy
            .files
            .iter()
            .any(|f| f.contains("xtables/libxt_REDIRECT.so")),
        "iptables' REDIRECT extension is in the image"
    );
    let testapp = archive("vigil-testapp");
    let (user, _, _, _) = config(&testapp);
    assert_ne!(
        user,
        format!("{uid}:{uid}"),
        "the test app is not the proxy's user"
    );
    println!(
        "images: {} ({} files), {} ({} files), {} — read by skopeo as docker-archive and oci-archive; users, entrypoints and ports match the chart, the injector and the Dockerfiles",
        ctl.reference,
        ctl.files.len(),
        proxy.reference,
        proxy.files.len(),
        testapp.reference
    );
}
