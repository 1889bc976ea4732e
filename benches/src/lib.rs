//! Shared reporting for Vigil's benchmarks.
//!
//! Every benchmark states its result as a *ratio* against a baseline measured in the same
//! run (see `../shared/BENCHMARKS.md` in the project workspace), prints one line
//!
//! ```text
//! B11 svid-issuance-in-process ratio=0.71 [0.66..0.75] target=>=0.5 pass=true
//! ```
//!
//! and appends a JSON record under `target/bench-results/`.

pub mod harness;
pub mod load;

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

/// Which side of the target a ratio must be on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Goal {
    /// The ratio must be at least the target.
    AtLeast,
    /// The ratio must be at most the target.
    AtMost,
}

/// One benchmark outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Ratio {
    /// Benchmark id from BENCHMARKS.md, e.g. `B11`.
    pub id: String,
    /// What was compared.
    pub name: String,
    /// Point estimate.
    pub ratio: f64,
    /// Lowest plausible value (from the measurements' confidence bounds or rounds).
    pub min: f64,
    /// Highest plausible value.
    pub max: f64,
    /// The target.
    pub target: f64,
    /// Which side of the target passes.
    pub goal: Goal,
    /// Unit of an absolute measurement (e.g. `ns`); empty for a dimensionless ratio.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub unit: &'static str,
}

impl Ratio {
    /// True if the point estimate meets the target.
    pub fn pass(&self) -> bool {
        match self.goal {
            Goal::AtLeast => self.ratio >= self.target,
            Goal::AtMost => self.ratio <= self.target,
        }
    }

    /// The one-line summary.
    pub fn line(&self) -> String {
        let op = match self.goal {
            Goal::AtLeast => ">=",
            Goal::AtMost => "<=",
        };
        let (key, u) = if self.unit.is_empty() {
            ("ratio", "")
        } else {
            ("value", self.unit)
        };
        format!(
            "{} {} {key}={:.3}{u} [{:.3}..{:.3}] target={op}{}{u} pass={}",
            self.id,
            self.name,
            self.ratio,
            self.min,
            self.max,
            self.target,
            self.pass()
        )
    }

    /// Appends this result as one JSON line to `dir/<id>.jsonl` (with a timestamp).
    pub fn record(&self, dir: &Path) -> std::io::Result<PathBuf> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.jsonl", self.id));
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut v = serde_json::to_value(self)?;
        v["pass"] = self.pass().into();
        v["unix_time"] = ts.into();
        writeln!(f, "{v}")?;
        Ok(path)
    }
}

/// A criterion estimate: point and confidence bounds, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Point estimate.
    pub point: f64,
    /// Lower confidence bound.
    pub lower: f64,
    /// Upper confidence bound.
    pub upper: f64,
}

/// Reads the median estimate criterion wrote for `group/bench` under `criterion_dir`.
pub fn criterion_median(
    criterion_dir: &Path,
    group: &str,
    bench: &str,
) -> std::io::Result<Estimate> {
    let path = criterion_dir
        .join(group)
        .join(bench)
        .join("new")
        .join("estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&path)?)?;
    let m = &v["median"];
    let get = |p: &str| {
        m.pointer(p)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| std::io::Error::other(format!("{}: no median{p}", path.display())))
    };
    Ok(Estimate {
        point: get("/point_estimate")?,
        lower: get("/confidence_interval/lower_bound")?,
        upper: get("/confidence_interval/upper_bound")?,
    })
}

/// Throughput of `subject` relative to `baseline` (both as times): baseline / subject,
/// with bounds from the confidence intervals.
pub fn throughput_ratio(subject: Estimate, baseline: Estimate) -> (f64, f64, f64) {
    (
        baseline.point / subject.point,
        baseline.lower / subject.upper,
        baseline.upper / subject.lower,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_line_and_pass() {
        let r = Ratio {
            id: "B11".into(),
            name: "x".into(),
            ratio: 0.7,
            min: 0.6,
            max: 0.8,
            target: 0.5,
            goal: Goal::AtLeast,
            unit: "",
        };
        assert!(r.pass());
        assert_eq!(
            r.line(),
            "B11 x ratio=0.700 [0.600..0.800] target=>=0.5 pass=true"
        );
        let r = Ratio {
            goal: Goal::AtMost,
            ..r
        };
        assert!(!r.pass());
    }

    #[test]
    fn throughput_ratio_uses_opposite_bounds() {
        let subject = Estimate {
            point: 200.0,
            lower: 190.0,
            upper: 210.0,
        };
        let baseline = Estimate {
            point: 100.0,
            lower: 95.0,
            upper: 105.0,
        };
        let (r, lo, hi) = throughput_ratio(subject, baseline);
        assert_eq!(r, 0.5);
        assert!((lo - 95.0 / 210.0).abs() < 1e-12 && (hi - 105.0 / 190.0).abs() < 1e-12);
    }

    #[test]
    fn reads_criterion_estimates_and_records_results() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("g/b/new");
        fs::create_dir_all(&p).unwrap();
        fs::write(
            p.join("estimates.json"),
            r#"{"median":{"point_estimate":10.0,"confidence_interval":{"lower_bound":9.0,"upper_bound":11.0}}}"#,
        )
        .unwrap();
        let e = criterion_median(d.path(), "g", "b").unwrap();
        assert_eq!(
            e,
            Estimate {
                point: 10.0,
                lower: 9.0,
                upper: 11.0
            }
        );
        assert!(criterion_median(d.path(), "g", "missing").is_err());

        let r = Ratio {
            id: "B0".into(),
            name: "n".into(),
            ratio: 1.0,
            min: 1.0,
            max: 1.0,
            target: 1.0,
            goal: Goal::AtLeast,
            unit: "",
        };
        let path = r.record(&d.path().join("results")).unwrap();
        r.record(&d.path().join("results")).unwrap();
        let text = fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["pass"], true);
        assert_eq!(v["id"], "B0");
    }
}
