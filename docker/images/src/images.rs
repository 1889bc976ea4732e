//! What each image is: contents, user, entrypoint, ports. The contract with
//! `docker/*.Dockerfile`, the chart's values and the injector's `proxyUid` is checked by
//! tests (this crate's and the real-node suite's).

use std::{collections::HashMap, path::Path};

use crate::{Error, ImageSpec, Rootfs};

/// Where the project publishes its images (the chart's default repositories).
pub const REGISTRY: &str = "ghcr.io/vigil-mesh";
/// The controller runs as distroless' `nonroot`.
pub const CONTROLLER_UID: u32 = 65532;
/// The proxy's user: the injector's `proxyUid` (iptables exempts this user's traffic).
pub const PROXY_UID: u32 = 2102;
/// The test app's user (anything but the proxy's).
pub const TESTAPP_UID: u32 = 65532;
/// The pause container's user (as upstream's pause image).
pub const PAUSE_UID: u32 = 65535;

/// Controller ports: gRPC (proxies), admin (/ready, /metrics), webhook.
pub const CONTROLLER_PORTS: [u16; 3] = [8443, 9191, 9443];
/// Proxy ports a pod exposes: inbound, admin.
pub const PROXY_PORTS: [u16; 2] = [4143, 4191];
/// Test app ports: app, control.
pub const TESTAPP_PORTS: [u16; 2] = [8080, 9090];

const PATH_ENV: &str = "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin";

fn passwd(user: &str, uid: u32) -> String {
    format!(
        "root:x:0:0:root:/root:/sbin/nologin\n{user}:x:{uid}:{uid}:{user}:/nonexistent:/sbin/nologin\n"
    )
}

fn group(user: &str, uid: u32) -> String {
    format!("root:x:0:\n{user}:x:{uid}:\n")
}

fn labels(title: &str, tag: &str) -> HashMap<String, String> {
    HashMap::from([
        ("org.opencontainers.image.title".into(), title.into()),
        ("org.opencontainers.image.version".into(), tag.into()),
        (
            "org.opencontainers.image.source".into(),
            "https://github.com/vigil-mesh/vigil".into(),
        ),
    ])
}

fn base(user: &str, uid: u32) -> Result<Rootfs, Error> {
    let mut r = Rootfs::new()?;
    r.data("/etc/passwd", passwd(user, uid), 0o644);
    r.data("/etc/group", group(user, uid), 0o644);
    Ok(r)
}

fn require(bin: &Path) -> Result<(), Error> {
    if bin.is_file() {
        Ok(())
    } else {
        Err(Error::MissingBinary(bin.to_owned()))
    }
}

/// `vigil-controller`: the binary and its libraries, as distroless' `nonroot`.
pub fn controller(bin: &Path, tag: &str) -> Result<ImageSpec, Error> {
    require(bin)?;
    let mut rootfs = base("nonroot", CONTROLLER_UID)?;
    rootfs.stripped_binary(bin, "/usr/local/bin/vigil-controller")?;
    Ok(ImageSpec {
        repository: format!("{REGISTRY}/vigil-controller"),
        tag: tag.into(),
        user: format!("{CONTROLLER_UID}:{CONTROLLER_UID}"),
        entrypoint: vec!["/usr/local/bin/vigil-controller".into()],
        cmd: Vec::new(),
        env: vec![PATH_ENV.into()],
        ports: CONTROLLER_PORTS.to_vec(),
        labels: labels("vigil-controller", tag),
        rootfs,
    })
}

/// `vigil-proxy`: the sidecar, plus iptables for `vigil-proxy init` (the init container).
pub fn proxy(bin: &Path, tag: &str) -> Result<ImageSpec, Error> {
    require(bin)?;
    let mut rootfs = base("vigil-proxy", PROXY_UID)?;
    rootfs.stripped_binary(bin, "/usr/local/bin/vigil-proxy")?;
    add_iptables(&mut rootfs)?;
    Ok(ImageSpec {
        repository: format!("{REGISTRY}/vigil-proxy"),
        tag: tag.into(),
        user: format!("{PROXY_UID}:{PROXY_UID}"),
        entrypoint: vec!["/usr/local/bin/vigil-proxy".into()],
        cmd: vec!["run".into()],
        env: vec![PATH_ENV.into()],
        ports: PROXY_PORTS.to_vec(),
        labels: labels("vigil-proxy", tag),
        rootfs,
    })
}

/// `vigil-testapp`: the real-node tests' echo server.
pub fn testapp(bin: &Path, tag: &str) -> Result<ImageSpec, Error> {
    require(bin)?;
    let mut rootfs = base("testapp", TESTAPP_UID)?;
    rootfs.stripped_binary(bin, "/usr/local/bin/vigil-testapp")?;
    Ok(ImageSpec {
        repository: format!("{REGISTRY}/vigil-testapp"),
        tag: tag.into(),
        user: format!("{TESTAPP_UID}:{TESTAPP_UID}"),
        entrypoint: vec!["/usr/local/bin/vigil-testapp".into()],
        cmd: Vec::new(),
        env: vec![PATH_ENV.into()],
        ports: TESTAPP_PORTS.to_vec(),
        labels: labels("vigil-testapp", tag),
        rootfs,
    })
}

/// A pause (sandbox) image from a static `pause` binary, for a test node's containerd.
pub fn pause(bin: &Path, reference: &str) -> Result<ImageSpec, Error> {
    require(bin)?;
    let (repository, tag) = reference
        .rsplit_once(':')
        .filter(|(r, t)| !r.is_empty() && !t.contains('/'))
        .ok_or_else(|| Error::Spec(format!("{reference:?} is not repository:tag")))?;
    let mut rootfs = Rootfs::default();
    rootfs.binary(bin, "/pause")?;
    Ok(ImageSpec {
        repository: repository.into(),
        tag: tag.into(),
        user: format!("{PAUSE_UID}:{PAUSE_UID}"),
        entrypoint: vec!["/pause".into()],
        cmd: Vec::new(),
        env: Vec::new(),
        ports: Vec::new(),
        labels: labels("pause", tag),
        rootfs,
    })
}

/// iptables (nft backend) with its extensions and libraries, from the host's Debian
/// packages; `iptables`, `ip6tables` and their `-save`/`-restore` are links to the one
/// multi-call binary.
fn add_iptables(rootfs: &mut Rootfs) -> Result<(), Error> {
    let multi = ["/usr/sbin/xtables-nft-multi", "/sbin/xtables-nft-multi"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingHostTool {
            what: "iptables (xtables-nft-multi)".into(),
            hint: "apt-get install iptables".into(),
        })?;
    let multi = multi.canonicalize().map_err(|e| Error::io(multi, e))?;
    rootfs.binary(&multi, "/usr/sbin/xtables-nft-multi")?;
    for name in [
        "iptables",
        "iptables-save",
        "iptables-restore",
        "ip6tables",
        "ip6tables-save",
        "ip6tables-restore",
    ] {
        rootfs.symlink(format!("/usr/sbin/{name}"), "xtables-nft-multi");
    }
    // Extensions (matches and targets) are loaded with dlopen: ldd cannot see them.
    let dir = xtables_dir().ok_or_else(|| Error::MissingHostTool {
        what: "iptables extensions (…/xtables/*.so)".into(),
        hint: "apt-get install iptables".into(),
    })?;
    let mut modules: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| Error::io(&dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "so"))
        .collect();
    modules.sort();
    for m in modules {
        rootfs.host_path(&m)?;
        rootfs.libraries_of(&m)?;
    }
    Ok(())
}

fn xtables_dir() -> Option<std::path::PathBuf> {
    let multiarch = format!("/usr/lib/{}-linux-gnu/xtables", std::env::consts::ARCH);
    [multiarch.as_str(), "/usr/lib/xtables", "/usr/lib64/xtables"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .and_then(|p| p.canonicalize().ok())
}
