//! The CA Secret is there and holds a CA whose root and issuer are far from expiry. The
//! issuer is replaced before half its life, so one with less than a third left means
//! rotation is not happening; the root is rotated by hand (`vigil ca rotate`), so it
//! warns a month ahead.

use std::time::{Duration, SystemTime};

use super::ca_secret::{CaCerts, CaSecretError};
use crate::check::{chart, report::Check};

pub(super) const ID: &str = "ca-secret";
pub(super) const TITLE: &str = "CA Secret present";
const ROOT_ID: &str = "ca-root-expiry";
const ISSUER_ID: &str = "ca-issuer-expiry";
/// A root closer than this to its end is a warning.
const ROOT_WARN: Duration = Duration::from_secs(30 * 24 * 3600);

/// `ca-secret`, `ca-root-expiry`, `ca-issuer-expiry`.
pub(super) fn check(ca: Result<CaCerts, CaSecretError>, ns: &str) -> Vec<Check> {
    let ca = match ca {
        Ok(ca) => ca,
        Err(e @ CaSecretError::Missing(_)) => {
            return vec![Check::fail(
                ID,
                TITLE,
                e.to_string(),
                format!(
                    "the controller creates it on its first start: check it runs (kubectl -n {ns} logs deploy/{}); to bring your own root, see the README (Install on Kubernetes, The CA)",
                    chart::CONTROLLER
                ),
            )];
        }
        Err(e) => {
            return vec![Check::fail(
                ID,
                TITLE,
                e.to_string(),
                format!(
                    "restore the Secret from your backup of the CA state (kubectl -n {ns} create secret generic {} --from-file=<state dir>/)",
                    chart::CA_SECRET
                ),
            )];
        }
    };
    let now = SystemTime::now();
    vec![
        Check::ok(ID, TITLE).with_detail(format!("{} root(s)", ca.roots.len())),
        expiry(ROOT_ID, "CA root", &ca.roots[0], now, |_| ROOT_WARN, ns),
        expiry(ISSUER_ID, "CA issuer", &ca.issuer, now, |life| life / 3, ns),
    ]
}

/// Judges a certificate's remaining life at `now`; `warn_within(lifetime)` is how close
/// to the end a warning starts.
fn expiry(
    id: &'static str,
    what: &str,
    der: &[u8],
    now: SystemTime,
    warn_within: impl Fn(Duration) -> Duration,
    ns: &str,
) -> Check {
    let title = format!("{what} not expiring");
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Check::fail(
            id,
            title,
            format!("the {what} certificate does not parse"),
            "restore the CA Secret from your backup",
        );
    };
    let secs = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    let (from, until) = (
        secs(cert.validity().not_before.timestamp()),
        secs(cert.validity().not_after.timestamp()),
    );
    let at = humantime::format_rfc3339_seconds(until);
    let fix = if id == ROOT_ID {
        "rotate the root: vigil ca rotate --root on the CA state, then store it in the Secret (the README, The CA state directory)".to_string()
    } else {
        format!(
            "the leader rotates the issuer: check the controller runs and leads (kubectl -n {ns} logs deploy/{})",
            chart::CONTROLLER
        )
    };
    match until.duration_since(now) {
        Err(_) => Check::fail(id, title, format!("expired at {at}"), fix),
        Ok(left) if left < warn_within(until.duration_since(from).unwrap_or_default()) => {
            Check::warn(
                id,
                title,
                format!(
                    "expires at {at}, in {}",
                    humantime::format_duration(Duration::from_secs(left.as_secs()))
                ),
                fix,
            )
        }
        Ok(_) => Check::ok(id, title).with_detail(format!("expires at {at}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::check::report::Outcome;

    fn cert(days: i64) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.not_before = rcgen::date_time_ymd(2026, 1, 1);
        p.not_after =
            p.not_before + std::time::Duration::from_secs(u64::try_from(days).unwrap() * 86_400);
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn warns_near_the_end_and_fails_after_it() {
        let der = cert(7);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600); // 2026-01-01
        let day = Duration::from_secs(86_400);
        let at = |d: u32| start + day * d;
        let third = |life: Duration| life / 3;
        assert_eq!(
            expiry(ISSUER_ID, "CA issuer", &der, at(1), third, "ns").outcome,
            Outcome::Ok
        );
        let warn = expiry(ISSUER_ID, "CA issuer", &der, at(6), third, "ns");
        assert_eq!(warn.outcome, Outcome::Warn);
        assert!(
            warn.detail
                .unwrap()
                .starts_with("expires at 2026-01-08T00:00:00Z, in 1day")
        );
        let failed = expiry(ISSUER_ID, "CA issuer", &der, at(8), third, "ns");
        assert_eq!(failed.outcome, Outcome::Fail);
        assert!(failed.fix.unwrap().contains("logs deploy/vigil-controller"));
    }
}
