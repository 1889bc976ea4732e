//! The eight steps of the demo. Each one acts on the running mesh the way a user or an
//! attacker would (HTTP calls through the proxies, files in the policy directory) and
//! checks what happened against what should.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use http::StatusCode;
use vigil_policy::{model::DefaultPolicy, unix_now};

use super::{
    client::{self, Reply, outcome},
    mesh::{Mesh, NAMESPACE, TRUST_DOMAIN, workload_id},
    policies,
    report::{Narrator, StepRun, secs},
};
use crate::local_policy::{Case, Loaded};

mod containment;
mod rotation;

/// How long a step waits for a change to take effect before calling it a failure.
const PATIENCE: Duration = Duration::from_secs(10);
/// Longest wait for every proxy's certificate to rotate (SVIDs live 1 min; renewal is due
/// at 40–60 % of that).
const ROTATION_LIMIT: Duration = Duration::from_secs(70);

/// The number of steps.
pub(crate) const STEPS: usize = 8;

/// What a step function returns: (as expected?, what was observed).
type Outcome = Result<(bool, String)>;

pub(crate) struct Demo {
    pub(crate) mesh: Mesh,
    pub(crate) n: Narrator,
}

impl Demo {
    /// Runs every step; a step that errors is reported as failed and the demo goes on.
    pub(crate) async fn run_all(&mut self) {
        macro_rules! step {
            ($name:expr, $expected:expr, $f:ident) => {{
                let mut run = self.n.begin($name, $expected);
                let result = self.$f(&mut run).await;
                let (ok, observed) = result.unwrap_or_else(|e| (false, format!("error: {e:#}")));
                self.n.end(run, ok, observed);
            }};
        }
        step!(
            "Allowed calls succeed over mTLS",
            "200s; each app sees its caller's verified SPIFFE ID",
            allowed_calls
        );
        step!(
            "A call no policy allows is denied",
            "403 before the app; `vigil explain` names the reason",
            denied_call
        );
        step!(
            "Plaintext to an inbound port is refused",
            "403 from the proxy; the app never sees the request",
            plaintext
        );
        step!(
            "A policy edit applies live",
            "the generation changes and the denied call now succeeds",
            live_edit
        );
        step!(
            "Audit mode logs without blocking",
            "the call still succeeds; the access log says \"would deny\"",
            audit
        );
        step!(
            "Just-in-time access expires by itself",
            "allowed until validUntil, then denied with no further edit",
            jit
        );
        step!(
            "Quarantine cuts a workload off mesh-wide",
            "its open connection is closed and new calls refused; lifting it restores access",
            quarantine
        );
        step!(
            "Certificates rotate under traffic",
            "every proxy gets a new certificate; 0 failed requests",
            rotation
        );
    }

    async fn call(&self, from: &str, to: &str, method: &str, path: &str) -> Result<Reply> {
        let via = self.mesh.svc(from)?.route(to)?;
        client::call(via, method, path).await
    }

    /// Polls a call until its status is `want`; returns how long that took.
    async fn until_status(
        &self,
        from: &str,
        to: &str,
        method: &str,
        path: &str,
        want: StatusCode,
    ) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let r = self.call(from, to, method, path).await;
            if matches!(&r, Ok(r) if r.status == want) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > PATIENCE {
                anyhow::bail!(
                    "{from} -> {to} {method} {path} still answers {} after {PATIENCE:?}",
                    outcome(&r)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `vigil explain` for one call, printed as the command a user would type.
    fn explain(&mut self, from: &str, to: &str, method: &str, path: &str) -> Result<String> {
        let port = self.mesh.svc(to)?.app.addr.port();
        let from_id = workload_id(from)?.to_string();
        self.n.detail(format!(
            "$ vigil explain --dir {} --from {from_id} --to {NAMESPACE}/{to} --port {port} --method {method} --path {path}",
            self.mesh.policy_dir.display()
        ));
        let td = vigil_cert_authority::TrustDomain::new(TRUST_DOMAIN)?;
        let loaded = Loaded::read(&self.mesh.policy_dir, &td, DefaultPolicy::Deny)?;
        let v = loaded.decide(&Case {
            from: from_id,
            to: format!("{NAMESPACE}/{to}"),
            port,
            method: Some(method.into()),
            path: Some(path.into()),
            at: unix_now(),
            ..Case::default()
        })?;
        let line = format!("{}: {}", v.decision.to_uppercase(), v.reason);
        self.n.detail(format!("  {line}"));
        Ok(line)
    }

    // 1
    async fn allowed_calls(&mut self, run: &mut StepRun) -> Outcome {
        let mut ok = true;
        let mut callers = Vec::new();
        for (from, to, method, path) in [
            ("frontend", "orders", "GET", "/orders/42"),
            ("orders", "payments", "POST", "/charge"),
        ] {
            let r = self.call(from, to, method, path).await;
            let caller = r.as_ref().ok().and_then(Reply::caller).unwrap_or_default();
            let expected_caller = workload_id(from)?.to_string();
            let good =
                matches!(&r, Ok(r) if r.status == StatusCode::OK) && caller == expected_caller;
            ok &= good;
            self.n
                .detail(format!("{from} -> {to}  {method} {path}  {}", outcome(&r)));
            self.n.detail(format!("  {to} saw the caller as {caller}"));
            // The caller's proxy verified the callee's certificate; the callee's proxy
            // logged the decision.
            let out = self
                .mesh
                .svc(from)?
                .wait_log(|e| e["direction"] == "outbound" && e["path"] == path)
                .await;
            let inb = self
                .mesh
                .svc(to)?
                .wait_log(|e| e["direction"] == "inbound" && e["path"] == path)
                .await;
            let dst = out
                .as_ref()
                .and_then(|e| e["dst_id"].as_str().map(str::to_string))
                .unwrap_or_default();
            self.n
                .detail(format!("  the {from} proxy verified the callee as {dst}"));
            if let Some(e) = &inb {
                self.n.detail(format!(
                    "  the {to} proxy: {} ({})",
                    e["decision"].as_str().unwrap_or("?"),
                    e["reason"].as_str().unwrap_or("?")
                ));
            }
            ok &= dst == workload_id(to)?.to_string() && inb.is_some();
            callers.push(format!("{to} saw {from}"));
        }
        run.figure("calls", 2);
        Ok((
            ok,
            format!("2 calls answered 200 over mTLS; {}", callers.join(", ")),
        ))
    }

    // 2
    async fn denied_call(&mut self, _run: &mut StepRun) -> Outcome {
        let mut ok = true;
        let mut why = String::new();
        for (from, to, method, path) in [
            ("frontend", "payments", "GET", "/balance"),
            ("intruder", "orders", "GET", "/orders/42"),
        ] {
            let hits = self.mesh.svc(to)?.app.hits();
            let r = self.call(from, to, method, path).await;
            let denied = matches!(&r, Ok(r) if r.status == StatusCode::FORBIDDEN);
            let untouched = self.mesh.svc(to)?.app.hits() == hits;
            self.n.detail(format!(
                "{from} -> {to}  {method} {path}  {}{}",
                outcome(&r),
                if untouched {
                    " (the app never saw it)"
                } else {
                    " (BUT the app received it)"
                }
            ));
            let rid = r.ok().and_then(|r| r.request_id);
            if let Some(rid) = &rid {
                let entry = self
                    .mesh
                    .svc(to)?
                    .wait_log(|e| e["request_id"] == rid.as_str())
                    .await;
                if let Some(e) = entry {
                    self.n.detail(format!(
                        "  the {to} proxy's access log, request {rid}: deny ({})",
                        e["reason"].as_str().unwrap_or("?")
                    ));
                }
            }
            let line = self.explain(from, to, method, path)?;
            ok &= denied && untouched && line.starts_with("DENY");
            if why.is_empty() {
                why = line;
            }
        }
        Ok((ok, format!("403 for both; explain: {why}")))
    }

    // 3
    async fn plaintext(&mut self, _run: &mut StepRun) -> Outcome {
        let payments = self.mesh.svc("payments")?;
        let hits = payments.app.hits();
        let inbound = payments.proxy.inbound;
        self.n.detail(format!(
            "plain HTTP (no TLS, no identity): GET http://{inbound}/balance"
        ));
        let r = client::call(inbound, "GET", "/balance").await;
        let untouched = payments.app.hits() == hits;
        let refused = match &r {
            Ok(r) => r.status == StatusCode::FORBIDDEN,
            Err(_) => true,
        };
        self.n.detail(format!("  -> {}", outcome(&r)));
        let entry = payments
            .wait_log(|e| e["direction"] == "inbound" && e["src_id"] == "unauthenticated")
            .await;
        if let Some(e) = &entry {
            self.n.detail(format!(
                "  the payments proxy's access log: {} ({})",
                e["decision"].as_str().unwrap_or("?"),
                e["reason"].as_str().unwrap_or("?")
            ));
        }
        Ok((
            refused && untouched,
            format!(
                "{} from the payments proxy; the app received {} of these requests",
                outcome(&r),
                payments.app.hits() - hits
            ),
        ))
    }

    // 4
    async fn live_edit(&mut self, run: &mut StepRun) -> Outcome {
        let before = self.mesh.generation();
        let path = self
            .mesh
            .write("frontend-reads-balance.yaml", policies::BALANCE)?;
        self.n.detail(format!(
            "wrote {} (allow frontend -> payments GET /balance)",
            path.display()
        ));
        let took = self
            .until_status("frontend", "payments", "GET", "/balance", StatusCode::OK)
            .await?;
        self.mesh.wait_converged(before, PATIENCE).await?;
        let after = self.mesh.generation();
        self.n.detail(format!(
            "controller generation {before} -> {after}; every proxy has acknowledged its new policy"
        ));
        self.n.detail(format!(
            "frontend -> payments  GET /balance  200 ({} after the write)",
            secs(took)
        ));
        self.explain("frontend", "payments", "GET", "/balance")?;
        run.figure("generation_before", before);
        run.figure("generation_after", after);
        run.figure("apply_ms", millis(took));
        Ok((
            after > before,
            format!(
                "generation {before} -> {after}; the call answered 200 {} after the edit",
                secs(took)
            ),
        ))
    }

    // 5
    async fn audit(&mut self, _run: &mut StepRun) -> Outcome {
        let before = self.mesh.generation();
        let path = self.mesh.write("orders-freeze.yaml", policies::AUDIT)?;
        self.n.detail(format!(
            "wrote {} (Deny frontend -> orders, mode: Audit)",
            path.display()
        ));
        self.mesh.wait_converged(before, PATIENCE).await?;
        let r = self.call("frontend", "orders", "GET", "/orders/7").await;
        self.n.detail(format!(
            "frontend -> orders  GET /orders/7  {}",
            outcome(&r)
        ));
        let entry = self
            .mesh
            .svc("orders")?
            .wait_log(|e| e["path"] == "/orders/7" && e["direction"] == "inbound")
            .await;
        let audit = entry
            .as_ref()
            .and_then(|e| e["audit"].as_str().map(str::to_string))
            .unwrap_or_default();
        self.n.detail(format!(
            "  the orders proxy's access log: audit = {audit:?}"
        ));
        let before = self.mesh.generation();
        self.mesh.remove("orders-freeze.yaml")?;
        self.mesh.wait_converged(before, PATIENCE).await?;
        self.n.detail("removed the dry run");
        let passed = matches!(&r, Ok(r) if r.status == StatusCode::OK);
        Ok((
            passed && audit.contains("would deny"),
            format!("{} and the log says: {audit}", outcome(&r)),
        ))
    }

    // 6
    async fn jit(&mut self, run: &mut StepRun) -> Outcome {
        let until = SystemTime::now() + Duration::from_secs(4);
        let until_s = humantime::format_rfc3339_seconds(until).to_string();
        // What the policy means: not in effect from this second on.
        let until_t = humantime::parse_rfc3339(&until_s)?;
        let path = self
            .mesh
            .write("oncall-refunds.yaml", &policies::jit(&until_s))?;
        self.n.detail(format!(
            "wrote {} (allow frontend -> payments GET /refunds, validUntil {until_s})",
            path.display()
        ));
        self.until_status("frontend", "payments", "GET", "/refunds", StatusCode::OK)
            .await?;
        self.n.detail("frontend -> payments  GET /refunds  200");
        self.until_status(
            "frontend",
            "payments",
            "GET",
            "/refunds",
            StatusCode::FORBIDDEN,
        )
        .await
        .context("the grant did not expire")?;
        let lag = SystemTime::now()
            .duration_since(until_t)
            .unwrap_or_default();
        self.n.detail(format!(
            "frontend -> payments  GET /refunds  403, {} after validUntil (no edit)",
            secs(lag)
        ));
        self.explain("frontend", "payments", "GET", "/refunds")?;
        self.mesh.remove("oncall-refunds.yaml")?;
        run.figure("expiry_lag_ms", millis(lag));
        Ok((
            true,
            format!("200, then 403 {} after validUntil", secs(lag)),
        ))
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
