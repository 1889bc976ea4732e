//! What the chart (`charts/vigil`, default values) installs, by name: the objects the
//! checks look for. A test below reads the chart's own files, so a renamed object or a
//! new `kubeVersion` fails here instead of silently checking the wrong thing.

/// The release namespace the README and the chart's docs use (`-n` overrides it).
pub(crate) const NAMESPACE: &str = "vigil-system";
/// The lowest Kubernetes 1.x minor the chart installs on (`kubeVersion: ">=1.28.0-0"`).
pub(crate) const MIN_MINOR: u32 = 28;
/// The controller's Deployment (and Service): `<name>-controller`.
pub(crate) const CONTROLLER: &str = "vigil-controller";
/// The injector's settings (`<fullname>-injector`) and their key: which namespaces are
/// never injected.
pub(crate) const INJECTOR_CONFIG: (&str, &str) = ("vigil-controller-injector", "config.yaml");
/// The leader-election Lease (`leaderElection.leaseName`).
pub(crate) const LEASE: &str = "vigil-controller";
/// The CA Secret (`ca.secretName`), created by the controller.
pub(crate) const CA_SECRET: &str = "vigil-ca";
/// The MutatingWebhookConfiguration (`webhook.name`).
pub(crate) const WEBHOOK: &str = "vigil-injector";
/// The CRDs: name, kind, and the id of their check.
pub(crate) const CRDS: [(&str, &str, &str); 3] = [
    ("segments.policy.vigil.dev", "Segment", "crd-segments"),
    (
        "accesspolicies.policy.vigil.dev",
        "AccessPolicy",
        "crd-accesspolicies",
    ),
    (
        "quarantines.policy.vigil.dev",
        "Quarantine",
        "crd-quarantines",
    ),
];
/// How to install: the README's command.
pub(crate) const INSTALL: &str = "helm install vigil charts/vigil -n vigil-system --create-namespace (see the README, Install on Kubernetes)";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHART: &str = include_str!("../../../../charts/vigil/Chart.yaml");
    const VALUES: &str = include_str!("../../../../charts/vigil/values.yaml");

    #[test]
    fn the_names_are_the_charts() {
        assert!(
            CHART.contains(&format!("kubeVersion: \">=1.{MIN_MINOR}.0-0\"")),
            "{CHART}"
        );
        for (key, value) in [
            ("  secretName: ", CA_SECRET),
            ("  leaseName: ", LEASE),
            ("  name: ", WEBHOOK),
        ] {
            assert!(
                VALUES.contains(&format!("{key}{value}\n")),
                "{key}{value} in values.yaml"
            );
        }
        assert!(VALUES.contains("fullnameOverride: \"\""));
        let configmap = include_str!("../../../../charts/vigil/templates/configmap.yaml");
        assert!(
            configmap.contains("name: {{ include \"vigil.fullname\" . }}-injector")
                && configmap.contains(&format!("  {}: |", INJECTOR_CONFIG.1))
                && INJECTOR_CONFIG.0 == format!("{CONTROLLER}-injector"),
            "{configmap}"
        );
        for (name, _, _) in CRDS {
            let file = format!(
                "{}/../../charts/vigil/crds/policy.vigil.dev_{}.yaml",
                env!("CARGO_MANIFEST_DIR"),
                name.split('.').next().unwrap()
            );
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(text.contains(&format!("name: {name}")), "{file}");
        }
    }
}
