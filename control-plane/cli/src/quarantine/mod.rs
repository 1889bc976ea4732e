//! `vigil quarantine` / `vigil unquarantine`: create or delete a `Quarantine`.
//!
//! With `--dir` (local mode) they write or remove a Quarantine document in the policy
//! directory; without it they create or delete the Quarantine resource in the cluster
//! ([`cluster`]). Either way the controller applies it within a second. The Quarantine is
//! named after its target, so `vigil unquarantine TARGET` finds it.

mod cluster;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;

use crate::{cluster::ClusterArgs, output::OutputArgs};

/// Flags of `vigil quarantine` (the namespace is the global `-n`).
#[derive(Debug, Args)]
pub(crate) struct QuarantineArgs {
    /// Policy directory (local mode); omit it to create the Quarantine in the cluster.
    #[arg(long, env = "VIGIL_POLICY_DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// One workload by name.
    #[arg(
        long,
        conflicts_with = "service_account",
        required_unless_present = "service_account"
    )]
    pub(crate) workload: Option<String>,
    /// Every workload running as this service account.
    #[arg(long)]
    pub(crate) service_account: Option<String>,
    /// Why (recorded in the document, logs and status).
    #[arg(long)]
    pub(crate) reason: String,
    /// `-o table|json|yaml`.
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

/// Flags of `vigil unquarantine` (the namespace is the global `-n`).
#[derive(Debug, Args)]
pub(crate) struct UnquarantineArgs {
    /// Policy directory (local mode); omit it to delete the Quarantine in the cluster.
    #[arg(long, env = "VIGIL_POLICY_DIR")]
    pub(crate) dir: Option<PathBuf>,
    /// The workload or service account that was quarantined.
    pub(crate) target: String,
    /// `-o table|json|yaml`.
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

/// What `-o json|yaml` prints.
#[derive(Debug, Serialize)]
struct Outcome<'a> {
    /// True after `quarantine`, false after `unquarantine`.
    quarantined: bool,
    namespace: &'a str,
    /// The workload or service account (and the Quarantine's name).
    target: &'a str,
    /// `workload` or `serviceAccount` (`quarantine` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    selects: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    /// The file written or removed (local mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<PathBuf>,
}

fn file_name(namespace: &str, target: &str) -> String {
    format!("quarantine-{namespace}-{target}.yaml")
}

fn check_name(s: &str, what: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !ok {
        bail!("{what} {s:?} is not a valid Kubernetes name");
    }
    Ok(())
}

pub(crate) fn quarantine(a: QuarantineArgs, clusters: &ClusterArgs) -> Result<u8> {
    let (field, target) = match (&a.workload, &a.service_account) {
        (Some(w), _) => (Field::Workload, w.as_str()),
        (_, Some(sa)) => (Field::ServiceAccount, sa.as_str()),
        _ => bail!("pass --workload or --service-account"),
    };
    check_name(target, field.as_str())?;
    if a.reason.trim().is_empty() {
        bail!("--reason must not be empty");
    }
    let (namespace, file) = match &a.dir {
        Some(dir) => {
            let namespace = local_namespace(clusters)?;
            let path = write(dir, namespace, field, target, &a.reason)?;
            (namespace.to_string(), Some(path))
        }
        None => (cluster::create(clusters, field, target, &a.reason)?, None),
    };
    let outcome = Outcome {
        quarantined: true,
        namespace: &namespace,
        target,
        selects: Some(field.as_str()),
        reason: Some(&a.reason),
        file,
    };
    a.out.print(&outcome, |o| match &o.file {
        Some(path) => println!(
            "quarantined {namespace}/{target} ({}): {}",
            field.as_str(),
            path.display()
        ),
        None => println!(
            "quarantined {namespace}/{target} ({}): Quarantine {namespace}/{target} created",
            field.as_str()
        ),
    })?;
    Ok(0)
}

pub(crate) fn unquarantine(a: UnquarantineArgs, clusters: &ClusterArgs) -> Result<u8> {
    check_name(&a.target, "target")?;
    let (namespace, file) = match &a.dir {
        Some(dir) => {
            let namespace = local_namespace(clusters)?;
            let path = remove(dir, namespace, &a.target)?;
            (namespace.to_string(), Some(path))
        }
        None => (cluster::delete(clusters, &a.target)?, None),
    };
    let outcome = Outcome {
        quarantined: false,
        namespace: &namespace,
        target: &a.target,
        selects: None,
        reason: None,
        file,
    };
    a.out.print(&outcome, |o| {
        println!("lifted quarantine of {}/{}", o.namespace, o.target);
    })?;
    Ok(0)
}

/// Local mode has no kubeconfig context to default the namespace from.
fn local_namespace(clusters: &ClusterArgs) -> Result<&str> {
    clusters
        .namespace
        .as_deref()
        .context("pass the workload's namespace with -n NAMESPACE")
}

/// What a quarantine selects.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Field {
    /// One workload by name.
    Workload,
    /// Every workload of a service account.
    ServiceAccount,
}

impl Field {
    fn as_str(self) -> &'static str {
        match self {
            Self::Workload => "workload",
            Self::ServiceAccount => "serviceAccount",
        }
    }
}

/// Writes the Quarantine document into `dir`; returns its path.
pub(crate) fn write(
    dir: &Path,
    namespace: &str,
    field: Field,
    target: &str,
    reason: &str,
) -> Result<PathBuf> {
    check_name(namespace, "namespace")?;
    check_name(target, field.as_str())?;
    if reason.trim().is_empty() {
        bail!("--reason must not be empty");
    }
    let doc = format!(
        "# Written by `vigil quarantine`; `vigil unquarantine -n {namespace} {target}` removes it.\napiVersion: policy.vigil.dev/v1alpha1\nkind: Quarantine\nmetadata:\n  name: {target}\n  namespace: {namespace}\nspec:\n  {field}: {target}\n  reason: {reason}\n",
        field = field.as_str(),
        reason = serde_json::to_string(reason)?,
    );
    let path = dir.join(file_name(namespace, target));
    vigil_cert_authority::state::write_private_file(&path, doc.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Removes a Quarantine written by [`write`]; returns its path.
pub(crate) fn remove(dir: &Path, namespace: &str, target: &str) -> Result<PathBuf> {
    check_name(namespace, "namespace")?;
    check_name(target, "target")?;
    let path = dir.join(file_name(namespace, target));
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "no quarantine written by `vigil quarantine` for {namespace}/{target} ({} does not exist)",
                path.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}
