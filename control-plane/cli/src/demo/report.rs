//! The demo's narration and its result: readable progress while it runs, then a summary
//! table, or one JSON object (`--json`) for scripts.

use std::{
    io::Write,
    time::{Duration, Instant},
};

use serde::Serialize;

/// The outcome of one step.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Step {
    /// Short name, e.g. `allowed calls over mTLS`.
    pub(crate) name: String,
    /// What should happen.
    pub(crate) expected: String,
    /// What did happen.
    pub(crate) observed: String,
    /// Whether the two agree.
    pub(crate) ok: bool,
    /// Wall-clock time the step took.
    pub(crate) duration_ms: u64,
    /// Measurements worth a script's attention (e.g. `contain_ms`, `requests`).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub(crate) figures: serde_json::Map<String, serde_json::Value>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) steps: Vec<Step>,
    pub(crate) ok: bool,
    pub(crate) duration_ms: u64,
}

/// Where the narration goes: stdout normally, stderr with `--json` (stdout then carries
/// only the JSON object), nowhere with `--quiet`.
pub(crate) struct Narrator {
    out: Box<dyn Write + Send>,
    started: Instant,
    steps: Vec<Step>,
    total: usize,
}

/// A step being run: collects detail lines and figures.
pub(crate) struct StepRun {
    name: String,
    expected: String,
    started: Instant,
    figures: serde_json::Map<String, serde_json::Value>,
}

impl StepRun {
    /// Records a figure for the JSON report.
    pub(crate) fn figure(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.figures.insert(key.to_string(), value.into());
    }
}

impl Narrator {
    pub(crate) fn new(out: Box<dyn Write + Send>, total: usize) -> Self {
        Self {
            out,
            started: Instant::now(),
            steps: Vec::new(),
            total,
        }
    }

    /// A free-standing line (setup, hints).
    pub(crate) fn say(&mut self, line: impl AsRef<str>) {
        let _ = writeln!(self.out, "{}", line.as_ref());
        let _ = self.out.flush();
    }

    /// Starts step `name`, announcing it and what is expected.
    pub(crate) fn begin(&mut self, name: &str, expected: &str) -> StepRun {
        let n = self.steps.len() + 1;
        self.say(format!("\n[{n}/{}] {name}", self.total));
        self.say(format!("      expect: {expected}"));
        StepRun {
            name: name.to_string(),
            expected: expected.to_string(),
            started: Instant::now(),
            figures: serde_json::Map::new(),
        }
    }

    /// A detail line within the current step.
    pub(crate) fn detail(&mut self, line: impl AsRef<str>) {
        for l in line.as_ref().lines() {
            self.say(format!("      {l}"));
        }
    }

    /// Ends a step with what was observed.
    pub(crate) fn end(&mut self, run: StepRun, ok: bool, observed: impl Into<String>) {
        let observed = observed.into();
        let took = run.started.elapsed();
        self.say(format!(
            "      {} {observed} ({})",
            if ok { "PASS" } else { "FAIL" },
            secs(took)
        ));
        self.steps.push(Step {
            name: run.name,
            expected: run.expected,
            observed,
            ok,
            duration_ms: millis(took),
            figures: run.figures,
        });
    }

    /// The summary table; returns the report.
    pub(crate) fn finish(mut self) -> Report {
        let ok = !self.steps.is_empty()
            && self.steps.len() == self.total
            && self.steps.iter().all(|s| s.ok);
        let took = self.started.elapsed();
        let width = self.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
        self.say("\nSummary");
        for (i, s) in self.steps.iter().enumerate() {
            let line = format!(
                "  {:>2}. {:<width$}  {}  {:>6}  {}",
                i + 1,
                s.name,
                if s.ok { "PASS" } else { "FAIL" },
                secs(Duration::from_millis(s.duration_ms)),
                s.observed,
            );
            let _ = writeln!(self.out, "{line}");
        }
        for i in self.steps.len()..self.total {
            let _ = writeln!(self.out, "  {:>2}. (not run)", i + 1);
        }
        self.say(format!(
            "\n{} in {}",
            if ok {
                "All steps behaved as expected"
            } else {
                "Some steps did NOT behave as expected"
            },
            secs(took)
        ));
        Report {
            steps: self.steps,
            ok,
            duration_ms: millis(took),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `1.23 s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}
