//! Step 7 of the demo: quarantine cuts a workload off mesh-wide, and lifting it restores.

use std::time::{Duration, Instant};

use http::StatusCode;

use super::{Demo, Outcome, PATIENCE, millis};
use crate::{
    demo::{
        client::{self, outcome},
        mesh::NAMESPACE,
        report::{StepRun, secs},
    },
    quarantine,
};

impl Demo {
    /// Step 7: a Quarantine closes the workload's open connection and refuses its new
    /// calls, and lifting it restores them; other workloads are unaffected.
    pub(super) async fn quarantine(&mut self, run: &mut StepRun) -> Outcome {
        let via = self.mesh.svc("frontend")?.route("orders")?;
        let (mut live, conn) = client::open(via).await?;
        let first = client::send(&mut live, "GET", "/orders/1").await;
        self.n.detail(format!(
            "frontend holds an open connection to orders: GET /orders/1  {}",
            outcome(&first)
        ));
        let start = Instant::now();
        let path = quarantine::write(
            &self.mesh.policy_dir,
            NAMESPACE,
            quarantine::Field::Workload,
            "frontend",
            "suspected compromise (demo)",
        )?;
        self.n.detail(format!(
            "$ vigil quarantine --dir {} -n {NAMESPACE} --workload frontend --reason 'suspected compromise (demo)'",
            self.mesh.policy_dir.display()
        ));
        self.n.detail(format!("  wrote {}", path.display()));
        while !conn.is_finished() && start.elapsed() < PATIENCE {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let contained = conn.is_finished().then(|| start.elapsed());
        match contained {
            Some(t) => self.n.detail(format!(
                "frontend's open connection was closed {} after the Quarantine was written",
                secs(t)
            )),
            None => self.n.detail(format!(
                "frontend's connection is STILL open after {PATIENCE:?}"
            )),
        }
        let again = self.call("frontend", "orders", "GET", "/orders/1").await;
        let refused = !matches!(&again, Ok(r) if r.status == StatusCode::OK);
        self.n
            .detail(format!("frontend -> orders, new call: {}", outcome(&again)));
        let others = self.call("orders", "payments", "POST", "/charge").await;
        let unaffected = matches!(&others, Ok(r) if r.status == StatusCode::OK);
        self.n.detail(format!(
            "orders -> payments (not quarantined): {}",
            outcome(&others)
        ));

        quarantine::remove(&self.mesh.policy_dir, NAMESPACE, "frontend")?;
        self.n.detail(format!(
            "$ vigil unquarantine --dir {} -n {NAMESPACE} frontend",
            self.mesh.policy_dir.display()
        ));
        let restored = self
            .until_status("frontend", "orders", "GET", "/orders/1", StatusCode::OK)
            .await?;
        self.n.detail(format!(
            "frontend -> orders  200 again, {} after the quarantine was lifted",
            secs(restored)
        ));
        let first_ok = matches!(&first, Ok(r) if r.status == StatusCode::OK);
        if let Some(t) = contained {
            run.figure("contain_ms", millis(t));
        }
        run.figure("restore_ms", millis(restored));
        Ok((
            first_ok && contained.is_some() && refused && unaffected,
            match contained {
                Some(t) => format!(
                    "contained in {} (open connection closed, new calls {}); restored in {}",
                    secs(t),
                    match &again {
                        Ok(r) => format!("answered {}", r.status.as_u16()),
                        Err(_) => "refused".into(),
                    },
                    secs(restored)
                ),
                None => "the open connection survived the quarantine".to_string(),
            },
        ))
    }
}
