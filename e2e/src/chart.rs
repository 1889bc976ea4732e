//! The Helm chart as tests see it: where it is, `helm template` output as JSON
//! documents, and lookups in them.

// Test support: a panic is how a broken chart is reported.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, path::PathBuf};

use serde_json::Value;

use crate::k8s;

/// The release namespace: the controller token user is `vigil-system/vigil-controller`.
pub const NS: &str = "vigil-system";

/// `charts/vigil`.
pub fn chart_dir() -> PathBuf {
    k8s::repo_root().join("charts/vigil")
}

/// `charts/vigil`, as an argument.
pub fn chart() -> String {
    chart_dir().display().to_string()
}

/// `charts/vigil/values-ha.yaml`.
pub fn ha_values() -> String {
    chart_dir().join("values-ha.yaml").display().to_string()
}

/// The chart's appVersion (image tags default to it).
pub fn app_version() -> String {
    let text = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    let chart: Value = serde_saphyr::from_str(&text).unwrap();
    chart["appVersion"].as_str().unwrap().to_string()
}

/// `helm template vigil charts/vigil -n vigil-system <extra>`: the rendered documents.
pub fn template(cluster: &k8s::Cluster, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "vigil",
        chart.as_str(),
        "-n",
        NS,
        "--kube-version",
        "1.36.3",
    ];
    args.extend_from_slice(extra);
    let (ok, out) = cluster.helm(&args);
    assert!(ok, "helm {args:?}:\n{out}");
    documents(&out)
}

/// YAML documents of a multi-document stream (empty and comment-only ones dropped).
pub fn documents(text: &str) -> Vec<Value> {
    text.split("\n---")
        .filter(|doc| {
            doc.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{e}\n{doc}")))
        .collect()
}

/// The one rendered object of `kind` (panics if there is not exactly one).
pub fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "{} {kind} rendered", found.len());
    found[0]
}

/// The kinds rendered.
pub fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| d["kind"].as_str().unwrap().to_string())
        .collect()
}
