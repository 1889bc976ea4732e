//! A controller and real proxies in one process on loopback.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use clap::Parser;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::Channel;
use vigil_cert_authority::{SpiffeId, creds::Credentials, tls};
use vigil_controller::{Controller, ControllerArgs};
use vigil_proxy::{Proxy, access_log::AccessLog, testing::Loopback};

pub const TD: &str = "cluster.local";

pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://{TD}/ns/shop/sa/{sa}")).unwrap()
}

#[derive(Parser)]
struct CtlCli {
    #[command(flatten)]
    args: ControllerArgs,
}

/// A controller with its state and policy directories.
pub struct Plane {
    pub dir: tempfile::TempDir,
    pub ctl: Option<Controller>,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

impl Plane {
    pub fn policy_dir(&self) -> PathBuf {
        self.dir.path().join("policy")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub async fn start() -> Self {
        if std::env::var_os("VIGIL_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter("info")
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policy")).unwrap();
        let mut plane = Self {
            dir,
            ctl: None,
            grpc: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
        };
        plane.restart().await;
        plane
    }

    /// (Re)starts the controller on the same state dir and (after the first start) the
    /// same ports.
    pub async fn restart(&mut self) {
        let args = CtlCli::parse_from([
            "vigil-controller".to_string(),
            "--local".into(),
            self.policy_dir().display().to_string(),
            "--state-dir".into(),
            self.state_dir().display().to_string(),
            "--listen".into(),
            self.grpc.to_string(),
            "--admin".into(),
            self.admin.to_string(),
            "--svid-ttl".into(),
            "1m".into(),
            "--allow-short-ttl".into(),
        ])
        .args;
        let mut last = None;
        for _ in 0..50 {
            match Controller::start(args.clone()).await {
                Ok(c) => {
                    self.grpc = c.grpc;
                    self.admin = c.admin;
                    self.ctl = Some(c);
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("controller did not start: {:?}", last);
    }

    pub async fn stop(&mut self) {
        if let Some(c) = self.ctl.take() {
            c.stop().await;
        }
    }

    pub fn ctl(&self) -> &Controller {
        self.ctl.as_ref().unwrap()
    }

    /// A bootstrap token for `sa` in namespace shop.
    pub fn token(&self, sa: &str) -> String {
        self.ctl()
            .state
            .ca()
            .token_key()
            .mint(&id(sa), Duration::from_secs(600), SystemTime::now())
    }

    /// Writes the trust bundle for proxies; returns its path.
    pub fn bundle_file(&self) -> PathBuf {
        let p = self.dir.path().join("bundle.pem");
        std::fs::write(&p, self.ctl().state.ca().bundle().to_pem()).unwrap();
        p
    }

    /// Writes a policy file atomically (the controller watches the directory).
    pub fn write(&self, name: &str, yaml: &str) {
        vigil_cert_authority::state::write_private_file(
            &self.policy_dir().join(name),
            yaml.as_bytes(),
        )
        .unwrap();
    }

    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.policy_dir().join(name));
    }

    /// Workloads shop/orders (at 127.0.0.1:1) and shop/web (127.0.0.1:2), once the
    /// controller knows both.
    pub async fn load_workloads(&self) {
        self.write(
            "workloads.yaml",
            &format!(
                "{}---\n{}",
                workload("orders", "127.0.0.1:1".parse().unwrap()),
                workload("web", "127.0.0.1:2".parse().unwrap())
            ),
        );
        eventually(10, "workloads loaded", async || {
            let ix = self.ctl().state.index();
            ["web", "orders"].iter().all(|w| {
                ix.identity(&vigil_index::ObjectKey::new("shop", *w))
                    .is_some()
            })
        })
        .await;
    }

    pub async fn status(&self) -> serde_json::Value {
        let (_, body) = http_get(self.admin, "/status").await.unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// Starts a proxy for `shop/<name>` (service account `name`) in controller mode.
    pub async fn proxy(&self, name: &str, extra: &[String]) -> Proxy {
        Loopback::new()
            .arg("--detect-timeout", "200ms")
            .controller(
                self.grpc,
                &format!("shop/{name}"),
                &self.bundle_file(),
                &self.token(name),
            )
            .args(extra.iter().cloned())
            .log(AccessLog::off())
            .start()
            .await
            .unwrap()
    }
}

/// Workload + segment documents for shop/<name> (labels app=<name>) at `addr`.
pub fn workload(name: &str, addr: SocketAddr) -> String {
    format!(
        "apiVersion: local.vigil.dev/v1alpha1\nkind: Workload\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {name}}}}}\nspec: {{serviceAccount: {name}, addresses: ['{addr}']}}\n---\napiVersion: policy.vigil.dev/v1alpha1\nkind: Segment\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{podSelector: {{matchLabels: {{app: {name}}}}}}}\n"
    )
}

pub fn allow(name: &str, target: &str, from: &str, extra: &str) -> String {
    format!(
        "apiVersion: policy.vigil.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  target: {{segment: {target}}}\n  action: Allow\n  from: [{{segment: {from}}}]\n{extra}"
    )
}

pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(http::StatusCode, String)> {
    use http_body_util::BodyExt;
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "x")
        .body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A trivial HTTP app answering 200 "hello from <name>".
pub async fn app(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |_req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(format!(
                                "hello from {name}"
                            ))),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// Polls `f` until true (panics after `secs`).
pub async fn eventually(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {secs}s waiting for: {what}");
}

/// A gRPC channel to the controller, presenting `creds` if given.
pub async fn channel(plane: &Plane, creds: Option<&Credentials>) -> Channel {
    let bundle = plane.ctl().state.ca().bundle();
    let controller = SpiffeId::parse(&format!(
        "spiffe://{TD}/ns/vigil-system/sa/vigil-controller"
    ))
    .unwrap();
    let config =
        Arc::new(tls::control_client_config(&bundle, creds, controller, tls::provider()).unwrap());
    vigil_api::connect(&plane.grpc.to_string(), config)
        .await
        .unwrap()
}

/// Credentials for `sa` issued directly by the plane's CA (a would-be impostor's).
pub fn creds_for(plane: &Plane, sa: &str) -> Credentials {
    creds_for_id(plane, &id(sa))
}

/// Credentials for any SPIFFE ID issued directly by the plane's CA.
pub fn creds_for_id(plane: &Plane, id: &SpiffeId) -> Credentials {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let ca = plane.ctl().state.ca();
    let svid = ca.issue(csr.der(), id, None).unwrap();
    let key = vigil_cert_authority::pemfile::decode_private_key(&key.serialize_pem()).unwrap();
    Credentials::new(
        svid.cert_chain(),
        key,
        ca.bundle(),
        id,
        &tls::provider(),
        SystemTime::now(),
    )
    .unwrap()
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A controller knowing shop/web and shop/orders.
pub async fn plane() -> Plane {
    let plane = Plane::start().await;
    plane.load_workloads().await;
    plane
}

/// The status report's entry for shop/<name>.
pub async fn status_of(plane: &Plane, name: &str) -> serde_json::Value {
    plane.status().await["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == format!("shop/{name}"))
        .cloned()
        .unwrap_or_else(|| panic!("shop/{name} in status"))
}
