//! `vigil policy test`: policy as code — a file of expected decisions, checked against a
//! policy directory or the cluster's policies, optionally with a change laid over them
//! (`--overlay`: in users' own CI, "what would this PR change").

use std::{collections::BTreeMap, path::PathBuf, time::SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use vigil_cert_authority::TrustDomain;

use crate::{
    cluster::ClusterArgs,
    local_policy::{Case, Loaded},
    output::OutputArgs,
    policy_source::SourceArgs,
};

/// Flags of `vigil policy test`.
#[derive(Debug, Args)]
pub(crate) struct PolicyTestArgs {
    /// The cases (YAML list).
    pub(crate) file: PathBuf,
    /// Where the policy comes from: `--dir`, else the cluster; `--overlay` lays a change
    /// over it.
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Trust domain.
    #[arg(long, env = "VIGIL_TRUST_DOMAIN", default_value = "cluster.local", value_parser = crate::parse_trust_domain)]
    pub(crate) trust_domain: TrustDomain,
    /// `-o table|json|yaml`.
    #[command(flatten)]
    pub(crate) out: OutputArgs,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    /// Optional label.
    #[serde(default)]
    name: Option<String>,
    from: String,
    to: String,
    port: u16,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    source_ip: Option<std::net::IpAddr>,
    /// RFC 3339; default now.
    #[serde(default)]
    at: Option<String>,
    /// `allow`, `deny` or `audit`.
    expect: Expect,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
    Audit,
}

/// What `-o json|yaml` prints: every case and the totals.
#[derive(Debug, Serialize)]
struct Report {
    cases: Vec<Outcome>,
    passed: usize,
    failed: usize,
}

/// One case's result.
#[derive(Debug, Serialize)]
struct Outcome {
    name: String,
    passed: bool,
    expected: Expect,
    /// `allow`, `deny` or `audit`.
    got: &'static str,
    /// What decided (the policy and rule, or the default).
    reason: String,
}

/// Exit code: 0 all pass, 1 any mismatch.
pub(crate) fn run(a: PolicyTestArgs, cluster: &ClusterArgs) -> Result<u8> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let cases: Vec<TestCase> = serde_saphyr::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", a.file.display(), e.without_snippet()))?;
    let loaded = Loaded::new(
        a.source.load(cluster)?,
        &a.trust_domain,
        vigil_policy::model::DefaultPolicy::Deny,
    );
    let mut outcomes = Vec::with_capacity(cases.len());
    for (i, c) in cases.iter().enumerate() {
        let label = c.name.clone().unwrap_or_else(|| format!("case {}", i + 1));
        let at = match &c.at {
            Some(t) => {
                humantime::parse_rfc3339_weak(t).with_context(|| format!("{label}: at {t:?}"))?
            }
            None => SystemTime::now(),
        };
        let case = Case {
            from: c.from.clone(),
            to: c.to.clone(),
            port: c.port,
            method: c.method.clone(),
            path: c.path.clone(),
            headers: c
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            source_ip: c.source_ip,
            at: at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let got = loaded.decide(&case).with_context(|| label.clone())?;
        let got_kind = match got.decision {
            "allow" => Expect::Allow,
            "audit" => Expect::Audit,
            _ => Expect::Deny,
        };
        outcomes.push(Outcome {
            name: label,
            passed: got_kind == c.expect,
            expected: c.expect,
            got: got.decision,
            reason: got.reason,
        });
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    let report = Report {
        passed: outcomes.len() - failed,
        failed,
        cases: outcomes,
    };
    a.out.print(&report, print_table)?;
    Ok(u8::from(failed > 0))
}

fn print_table(r: &Report) {
    for o in &r.cases {
        if o.passed {
            println!("ok   {}", o.name);
        } else {
            println!(
                "FAIL {}: expected {:?}, got {} ({})",
                o.name, o.expected, o.got, o.reason
            );
        }
    }
    println!("{} passed, {} failed", r.passed, r.failed);
}
