//! Step 8 of the demo: every proxy's certificate rotates under load without a failure.

use std::time::{Duration, Instant, SystemTime};

use http::StatusCode;

use super::{Demo, Outcome, ROTATION_LIMIT};
use crate::demo::{
    client::outcome,
    report::{StepRun, secs},
};

impl Demo {
    /// Step 8: every proxy renews its SVID under load, with no failed request.
    pub(super) async fn rotation(&mut self, run: &mut StepRun) -> Outcome {
        let before: Vec<(&str, Option<String>)> = self
            .mesh
            .services
            .iter()
            .map(|s| (s.name, s.serial()))
            .collect();
        let mut rotated: Vec<&str> = Vec::new();
        for s in &self.mesh.services {
            if let Some(c) = s.proxy.creds.current() {
                let left = c
                    .info
                    .not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                self.n.detail(format!(
                    "{:<9} serial {}  expires in {}",
                    s.name,
                    short(s.serial().as_deref()),
                    secs(left)
                ));
            }
        }
        self.n.detail(
            "sending traffic (frontend -> orders, orders -> payments) until every proxy has renewed...",
        );
        let start = Instant::now();
        let (mut sent, mut failed) = (0u64, 0u64);
        let mut first_failure = None;
        let mut done_at: Option<u64> = None;
        loop {
            for (from, to, method, path) in [
                ("frontend", "orders", "GET", "/orders/1"),
                ("orders", "payments", "POST", "/charge"),
            ] {
                let r = self.call(from, to, method, path).await;
                sent += 1;
                if !matches!(&r, Ok(r) if r.status == StatusCode::OK) {
                    failed += 1;
                    first_failure.get_or_insert_with(|| format!("{from} -> {to}: {}", outcome(&r)));
                }
            }
            for (name, serial) in &before {
                let now = self.mesh.svc(name)?.serial();
                if !rotated.contains(name) && now != *serial {
                    rotated.push(name);
                    self.n.detail(format!(
                        "{name:<9} renewed: serial {} -> {} after {} ({sent} requests so far)",
                        short(serial.as_deref()),
                        short(now.as_deref()),
                        secs(start.elapsed())
                    ));
                }
            }
            // Keep going a little after the last rotation: new connections use the new
            // certificates.
            if rotated.len() == before.len() && done_at.is_none() {
                done_at = Some(sent);
            }
            if done_at.is_some_and(|d| sent >= d + 100) || start.elapsed() > ROTATION_LIMIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if let Some(f) = &first_failure {
            self.n.detail(format!("first failure: {f}"));
        }
        run.figure("requests", sent);
        run.figure("failed", failed);
        run.figure("rotated", rotated.len());
        Ok((
            rotated.len() == before.len() && failed == 0,
            format!(
                "{}/{} proxies rotated; {sent} requests, {failed} failed",
                rotated.len(),
                before.len()
            ),
        ))
    }
}

fn short(serial: Option<&str>) -> String {
    serial.map_or_else(|| "none".into(), |s| format!("{}…", &s[..s.len().min(8)]))
}
