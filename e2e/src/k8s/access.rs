//! Access to the test cluster: kubeconfigs, helm, kube clients, fresh namespaces and the
//! CRDs.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::Ordering,
    time::Duration,
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{Api, Client, api::PostParams};

use super::{ADMIN_TOKEN, CONTROLLER_TOKEN, Cluster, repo_root};

impl Cluster {
    /// `<dir>/kubeconfig` (admin), for helm and kubectl-style tools.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub(super) fn write_kubeconfig(&self) {
        self.write_kubeconfig_for(ADMIN_TOKEN, &self.kubeconfig());
    }

    /// Writes a kubeconfig authenticating with `token` (e.g. [`CONTROLLER_TOKEN`], for a
    /// controller process).
    pub fn write_kubeconfig_for(&self, token: &str, path: &Path) {
        let mut f =
            std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ca = base64_encode(self.ca_pem.as_bytes());
        let _ = writeln!(
            f,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: user}}\ncurrent-context: e2e",
            self.url
        );
    }

    /// Runs helm (admin kubeconfig; helm's own state under the cluster's directory):
    /// success and stdout+stderr.
    pub fn helm(&self, args: &[&str]) -> (bool, String) {
        let home = self.dir.join("helm-home");
        let out = Command::new(self.bin.join("helm"))
            .args(args)
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"))
            .output()
            .unwrap_or_else(|e| panic!("running helm: {e}"));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// `helm install vigil charts/vigil -n vigil-system` with the webhook at `webhook_url`
    /// (never a Service: the apiserver must only dial loopback here).
    pub fn install_chart(&self, webhook_url: &str, failure_policy: &str) -> String {
        let chart = repo_root().join("charts/vigil");
        self.helm_ok(&[
            "install",
            "vigil",
            &chart.display().to_string(),
            "-n",
            "vigil-system",
            "--create-namespace",
            "--set",
            &format!("webhook.url={webhook_url}"),
            "--set",
            &format!("webhook.failurePolicy={failure_policy}"),
        ])
    }

    /// [`Self::helm`], which must succeed; its output.
    pub fn helm_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.helm(args);
        assert!(ok, "helm {args:?}:\n{out}");
        out
    }

    /// A client config authenticating with `token`.
    pub fn client_config(&self, token: &str) -> kube::Config {
        let mut cfg = kube::Config::new(self.url.parse().unwrap_or_else(|e| panic!("{e}")));
        cfg.root_cert = Some(vec![
            <rustls_pki_types::CertificateDer<'_> as rustls_pki_types::pem::PemObject>::from_pem_slice(
                self.ca_pem.as_bytes(),
            )
            .unwrap_or_else(|e| panic!("{e}"))
            .to_vec(),
        ]);
        cfg.auth_info.token = Some(token.to_string().into());
        cfg.read_timeout = Some(Duration::from_secs(60));
        cfg
    }

    /// An admin client (create it inside the test's runtime).
    pub fn admin(&self) -> Client {
        Client::try_from(self.client_config(ADMIN_TOKEN)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A client authenticated as the controller's ServiceAccount.
    pub fn as_controller(&self) -> Client {
        Client::try_from(self.client_config(CONTROLLER_TOKEN)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates a fresh namespace `<prefix>-<n>` with its `default` ServiceAccount and
    /// returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id() % 100_000);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        Api::<Namespace>::all(self.admin())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        // Without a controller-manager, create the `default` ServiceAccount it would (with
        // one, it may have been quicker).
        let sa: k8s_openapi::api::core::v1::ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}}))
                .unwrap_or_else(|e| panic!("{e}"));
        match Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(self.admin(), &name)
            .create(&PostParams::default(), &sa)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => panic!("creating {name}/default: {e}"),
        }
        name
    }
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Applies `crds/*.yaml` (server-side apply; idempotent, so every test may call it) and
/// waits until each CRD is Established. Returns their names.
pub async fn install_crds(client: &Client) -> Vec<String> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let mut names = Vec::new();
    let dir = repo_root().join("crds");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("vigil-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {name}: {e}"));
        names.push(name);
    }
    for name in &names {
        let cond = kube::runtime::conditions::is_crd_established();
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(api.clone(), name, cond),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established in 30 s"))
        .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
    }
    names
}
