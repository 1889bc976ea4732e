//! The test application (`vigil-testapp`) on a real node: its manifests and its control
//! port, from which a test makes a pod call others (`POST /call`), holds a long-lived
//! stream open (`/stream/open`, `/stream/status`) and reads what the app has served
//! (`/stats`). The control port is excluded from interception
//! (`vigil.dev/skip-inbound-ports`); the calls it triggers leave through the pod's proxy
//! like any application's.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;

/// The app port (echo, probes).
pub const APP_PORT: u16 = 8080;
/// The control port.
pub const CONTROL_PORT: u16 = 9090;

/// The test app image, as `make images` tags it.
pub fn image() -> String {
    format!(
        "{}/vigil-testapp:{}",
        vigil_images::images::REGISTRY,
        crate::chart::app_version()
    )
}

/// A Deployment of the test app: `app=<name>` labels, service account `<name>`, the
/// control port left out of interception, probes on `/healthz` (which the injector turns
/// into the proxy's probe routes), and a 2-second `preStop` sleep so a deleted replica
/// keeps serving while callers learn it is going.
pub fn deployment(ns: &str, name: &str, replicas: u32, pod_annotations: &[(&str, &str)]) -> String {
    let mut annotations = format!("vigil.dev/skip-inbound-ports: \"{CONTROL_PORT}\"");
    for (k, v) in pod_annotations {
        annotations.push_str(&format!(", {k}: \"{v}\""));
    }
    let image = image();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{{annotations}}}
    spec:
      serviceAccountName: {name}
      terminationGracePeriodSeconds: 20
      containers:
      - name: app
        image: {image}
        imagePullPolicy: Never
        ports: [{{name: http, containerPort: {APP_PORT}}}, {{name: control, containerPort: {CONTROL_PORT}}}]
        env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
        readinessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 1}}
        livenessProbe: {{httpGet: {{path: /healthz, port: http}}, periodSeconds: 2}}
        lifecycle: {{preStop: {{sleep: {{seconds: 2}}}}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: {ns}}}
"#
    )
}

/// A ClusterIP Service `name` for the pods `app=<name>` on the app port.
pub fn service(ns: &str, name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: {APP_PORT}, targetPort: http}}]
"#
    )
}

/// What one call made from a pod returned.
#[derive(Clone, Debug, Deserialize)]
pub struct Call {
    /// The HTTP status, if a response came.
    pub status: Option<u16>,
    /// The body (the echo's JSON for the test app).
    pub body: Option<String>,
    /// Why no response came.
    pub error: Option<String>,
    /// How long it took, in the pod.
    pub elapsed_ms: f64,
}

impl Call {
    /// The echo's `instance` (the pod that answered), if this was the test app's echo.
    pub fn instance(&self) -> Option<String> {
        self.echo()?.get("instance")?.as_str().map(String::from)
    }

    /// The echo's `peer` (the caller's SPIFFE ID as the destination's proxy verified it).
    pub fn peer(&self) -> Option<String> {
        self.echo()?.get("peer")?.as_str().map(String::from)
    }

    fn echo(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.body.as_deref()?).ok()
    }
}

/// What one gRPC call (the test app's echo) made from a pod returned.
#[derive(Clone, Debug, Deserialize)]
pub struct Grpc {
    /// The HTTP status of the answer.
    pub http_status: Option<u16>,
    /// `grpc-status` (0 is OK).
    pub grpc_status: Option<u32>,
    /// The echoed message.
    pub message: Option<String>,
    /// Why no answer came.
    pub error: Option<String>,
}

/// A stream's state, from the pod that holds it.
#[derive(Clone, Debug, Deserialize)]
pub struct StreamStatus {
    /// Still open.
    pub open: bool,
    /// Chunks received.
    pub chunks: u64,
    /// Why it ended.
    pub error: Option<String>,
}

async fn post(addr: SocketAddr, path: &str, body: String) -> anyhow::Result<String> {
    tokio::time::timeout(Duration::from_secs(15), async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let method = if body.is_empty() { "GET" } else { "POST" };
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .body(Full::new(Bytes::from(body)))?;
        let resp = sender.send_request(req).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
    .await
    .map_err(|_| anyhow::anyhow!("{addr}{path}: no answer within 15 s"))?
}

/// Makes the pod at `pod_ip` send `method url` (through its proxy, if it has one).
pub async fn call(pod_ip: &str, method: &str, url: &str) -> Call {
    let addr = control(pod_ip);
    let body = serde_json::json!({"url": url, "method": method, "timeout_ms": 5000}).to_string();
    match post(addr, "/call", body).await {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| Call {
            status: None,
            body: None,
            error: Some(format!("control port answered {text:?}: {e}")),
            elapsed_ms: 0.0,
        }),
        Err(e) => Call {
            status: None,
            body: None,
            error: Some(format!("control port: {e}")),
            elapsed_ms: 0.0,
        },
    }
}

/// Makes the pod call the test app's gRPC echo at `base` (`http://host:port`, h2c) with
/// `message`.
pub async fn grpc(pod_ip: &str, base: &str, message: &str) -> Grpc {
    let body = serde_json::json!({"url": base, "message": message}).to_string();
    let failed = |e: String| Grpc {
        http_status: None,
        grpc_status: None,
        message: None,
        error: Some(e),
    };
    match post(control(pod_ip), "/grpc", body).await {
        Ok(text) => serde_json::from_str(&text)
            .unwrap_or_else(|e| failed(format!("control port answered {text:?}: {e}"))),
        Err(e) => failed(format!("control port: {e}")),
    }
}

/// Makes the pod open a long-lived GET of `url` (add `?stream=1` for the test app's
/// stream); returns its id.
pub async fn open_stream(pod_ip: &str, url: &str) -> anyhow::Result<u64> {
    let body = serde_json::json!({"url": url}).to_string();
    let text = post(control(pod_ip), "/stream/open", body).await?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v.get("id")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| anyhow::anyhow!("no stream id in {text}"))
}

/// The state of stream `id` held by the pod.
pub async fn stream_status(pod_ip: &str, id: u64) -> anyhow::Result<StreamStatus> {
    let text = post(
        control(pod_ip),
        &format!("/stream/status?id={id}"),
        String::new(),
    )
    .await?;
    Ok(serde_json::from_str(&text)?)
}

/// How many requests for `path` the pod's app has served (probes included).
pub async fn served(pod_ip: &str, path: &str) -> anyhow::Result<u64> {
    let text = post(control(pod_ip), "/stats", String::new()).await?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v.get("by_path")
        .and_then(|b| b.get(path))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0))
}

fn control(pod_ip: &str) -> SocketAddr {
    SocketAddr::new(
        pod_ip
            .parse()
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
        CONTROL_PORT,
    )
}
