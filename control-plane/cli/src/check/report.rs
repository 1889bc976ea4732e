//! What one check found, and the report of a run: one line per check (`✔`, `!` or `✘`),
//! the fix under each failure or warning, and the exit code (1 if any check failed).
//! `vigil verify` reports its checks the same way ([`check_lines`], [`exit_code`]).

use serde::Serialize;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// As it should be.
    Ok,
    /// Works, but deserves attention (does not change the exit code).
    Warn,
    /// Broken: the exit code is 1.
    Fail,
}

/// One check's result.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Check {
    /// Stable identifier for scripts (`controller-ready`, `webhook-ca-bundle`, ...).
    pub(crate) id: &'static str,
    /// What is checked, one line.
    pub(crate) title: String,
    /// How it came out.
    pub(crate) outcome: Outcome,
    /// What was found (always set for a warning or failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) detail: Option<String>,
    /// What to do about a warning or failure: a command or an action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
}

/// Every check of a run, in order.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    /// `pre-install` or `installed`.
    pub(crate) mode: &'static str,
    /// The API server checked.
    pub(crate) cluster: String,
    /// The namespace Vigil is (to be) installed in.
    pub(crate) namespace: String,
    /// The checks.
    pub(crate) checks: Vec<Check>,
    /// How many failed.
    pub(crate) failed: usize,
    /// How many warned.
    pub(crate) warnings: usize,
}

// === impl Check ===

impl Check {
    /// A passed check.
    pub(crate) fn ok(id: &'static str, title: impl Into<String>) -> Self {
        Self {
            id,
            title: title.into(),
            outcome: Outcome::Ok,
            detail: None,
            fix: None,
        }
    }

    /// A failed check: what was found and what to do.
    pub(crate) fn fail(
        id: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            id,
            title: title.into(),
            outcome: Outcome::Fail,
            detail: Some(detail.into()),
            fix: Some(fix.into()),
        }
    }

    /// A warning: what was found and what to do.
    pub(crate) fn warn(
        id: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            outcome: Outcome::Warn,
            ..Self::fail(id, title, detail, fix)
        }
    }

    /// Adds what was found to a passed check (e.g. the version).
    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

// === impl Report ===

impl Report {
    /// Adds checks, counting failures and warnings.
    pub(crate) fn extend(&mut self, checks: impl IntoIterator<Item = Check>) {
        for c in checks {
            match c.outcome {
                Outcome::Fail => self.failed += 1,
                Outcome::Warn => self.warnings += 1,
                Outcome::Ok => {}
            }
            self.checks.push(c);
        }
    }

    /// 0 if no check failed, else 1.
    pub(crate) fn exit_code(&self) -> u8 {
        exit_code(&self.checks)
    }

    /// The lines for people.
    pub(crate) fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "vigil check ({}) on {}, namespace {}",
            self.mode, self.cluster, self.namespace
        )];
        out.extend(check_lines(&self.checks));
        out.push(format!(
            "{} checks: {} failed, {} warnings",
            self.checks.len(),
            self.failed,
            self.warnings
        ));
        out
    }
}

/// One line per check (`✔`, `!`, `✘`, what was found), the fix under each failure or
/// warning.
pub(crate) fn check_lines(checks: &[Check]) -> Vec<String> {
    let mut out = Vec::new();
    for c in checks {
        let mark = match c.outcome {
            Outcome::Ok => "✔",
            Outcome::Warn => "!",
            Outcome::Fail => "✘",
        };
        match &c.detail {
            Some(d) => out.push(format!("{mark} {}: {}", c.title, one_line(d))),
            None => out.push(format!("{mark} {}", c.title)),
        }
        if let Some(fix) = &c.fix {
            out.push(format!("    fix: {}", one_line(fix)));
        }
    }
    out
}

/// 0 if no check failed, else 1.
pub(crate) fn exit_code(checks: &[Check]) -> u8 {
    u8::from(checks.iter().any(|c| c.outcome == Outcome::Fail))
}

/// A message on one line (a compiler's reason may span several, e.g. a regex error).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_sets_the_exit_code_and_prints_its_fix_a_warning_does_not() {
        let mut r = Report::default();
        r.extend([Check::ok("a", "A").with_detail("v1.36")]);
        r.extend([Check::warn("b", "B", "old", "upgrade")]);
        assert_eq!(r.exit_code(), 0);
        r.extend([Check::fail("c", "C", "missing:\n  ^(x\n", "install it")]);
        assert_eq!(r.exit_code(), 1);
        let lines = r.lines();
        assert_eq!(lines[1], "✔ A: v1.36");
        assert_eq!(lines[2], "! B: old");
        assert_eq!(lines[3], "    fix: upgrade");
        assert_eq!(lines[4], "✘ C: missing: ^(x");
        assert_eq!(lines[5], "    fix: install it");
        assert_eq!(lines[6], "3 checks: 1 failed, 1 warnings");
    }
}
