//! `vigil quarantine` / `vigil unquarantine` (local mode): write or remove a Quarantine
//! document in the policy directory; the controller applies it within a second.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

/// Flags of `vigil quarantine`.
#[derive(Debug, Args)]
pub(crate) struct QuarantineArgs {
    /// Policy directory.
    #[arg(long, env = "VIGIL_POLICY_DIR")]
    pub(crate) dir: PathBuf,
    /// Namespace of the workload(s).
    #[arg(long, short = 'n')]
    pub(crate) namespace: String,
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
}

/// Flags of `vigil unquarantine`.
#[derive(Debug, Args)]
pub(crate) struct UnquarantineArgs {
    /// Policy directory.
    #[arg(long, env = "VIGIL_POLICY_DIR")]
    pub(crate) dir: PathBuf,
    /// Namespace.
    #[arg(long, short = 'n')]
    pub(crate) namespace: String,
    /// The workload or service account that was quarantined.
    pub(crate) target: String,
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

pub(crate) fn quarantine(a: QuarantineArgs) -> Result<u8> {
    let (field, target) = match (&a.workload, &a.service_account) {
        (Some(w), _) => (Field::Workload, w.as_str()),
        (_, Some(sa)) => (Field::ServiceAccount, sa.as_str()),
        _ => bail!("pass --workload or --service-account"),
    };
    let path = write(&a.dir, &a.namespace, field, target, &a.reason)?;
    println!(
        "quarantined {}/{target} ({}): {}",
        a.namespace,
        field.as_str(),
        path.display()
    );
    Ok(0)
}

pub(crate) fn unquarantine(a: UnquarantineArgs) -> Result<u8> {
    remove(&a.dir, &a.namespace, &a.target)?;
    println!("lifted quarantine of {}/{}", a.namespace, a.target);
    Ok(0)
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
