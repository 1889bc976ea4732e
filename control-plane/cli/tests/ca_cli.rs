//! `vigil ca` end to end: the real binary, real files, and openssl as an independent judge.

#![allow(clippy::unwrap_used)]

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");
const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn vigil(args: &[&str]) -> Output {
    Command::new(VIGIL).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = vigil(args);
    assert!(
        out.status.success(),
        "vigil {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its single stderr line.
fn fails(args: &[&str]) -> String {
    let out = vigil(args);
    assert!(!out.status.success(), "vigil {args:?} should fail");
    assert_eq!(out.status.code(), Some(1), "runtime errors exit 1");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (see .ci/run)")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn init_issue_verify_with_openssl() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let out = d.path().join("web");
    ok(&[
        "ca",
        "init",
        "--state-dir",
        p(&state),
        "--trust-domain",
        "cluster.local",
    ]);
    let msg = ok(&[
        "ca",
        "issue",
        "--state-dir",
        p(&state),
        "--id",
        WEB,
        "--ttl",
        "30m",
        "--out",
        p(&out),
    ]);
    assert!(msg.contains(WEB), "{msg}");

    let (svid, key, bundle) = (
        out.join("svid.pem"),
        out.join("key.pem"),
        out.join("bundle.pem"),
    );
    assert_eq!(
        fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let svid_text = fs::read_to_string(&svid).unwrap();
    assert_eq!(
        svid_text.matches("BEGIN CERTIFICATE").count(),
        2,
        "leaf + issuer"
    );

    // openssl agrees the chain is valid...
    let v = openssl(&[
        "verify",
        "-CAfile",
        p(&bundle),
        "-untrusted",
        p(&svid),
        p(&svid),
    ]);
    assert!(
        v.status.success(),
        "{}",
        String::from_utf8_lossy(&v.stdout) + String::from_utf8_lossy(&v.stderr)
    );
    // ...and fails it against a different CA's bundle.
    let other = d.path().join("other");
    ok(&["ca", "init", "--state-dir", p(&other)]);
    let other_bundle = d.path().join("other.pem");
    fs::write(
        &other_bundle,
        ok(&["ca", "bundle", "--state-dir", p(&other)]),
    )
    .unwrap();
    let v = openssl(&[
        "verify",
        "-CAfile",
        p(&other_bundle),
        "-untrusted",
        p(&svid),
        p(&svid),
    ]);
    assert!(
        !v.status.success(),
        "a foreign bundle must not verify the SVID"
    );

    // Exactly the requested URI SAN, nothing else.
    let x = openssl(&["x509", "-in", p(&svid), "-noout", "-ext", "subjectAltName"]);
    let sans = String::from_utf8(x.stdout).unwrap();
    let names: Vec<&str> = sans
        .lines()
        .skip(1)
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .collect();
    assert_eq!(names, vec![format!("URI:{WEB}")]);

    // key.pem is the key of the leaf.
    let from_cert = openssl(&["x509", "-in", p(&svid), "-noout", "-pubkey"]).stdout;
    let from_key = openssl(&["pkey", "-in", p(&key), "-pubout"]).stdout;
    assert!(!from_cert.is_empty());
    assert_eq!(from_cert, from_key);

    // 30 minutes (+ 1 minute backdate).
    let dates = String::from_utf8(
        openssl(&["x509", "-in", p(&svid), "-noout", "-startdate", "-enddate"]).stdout,
    )
    .unwrap();
    assert!(
        dates.contains("notBefore=") && dates.contains("notAfter="),
        "{dates}"
    );
    let c = openssl(&["x509", "-in", p(&svid), "-noout", "-checkend", "1740"]);
    assert!(c.status.success(), "valid for at least 29 more minutes");
    let c = openssl(&["x509", "-in", p(&svid), "-noout", "-checkend", "1860"]);
    assert!(!c.status.success(), "but not for 31");
}

#[test]
fn token_and_bundle_formats() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    ok(&["ca", "init", "--state-dir", p(&state)]);
    let token = ok(&[
        "ca",
        "token",
        "--state-dir",
        p(&state),
        "--id",
        WEB,
        "--ttl",
        "5m",
    ]);
    let token = token.trim();
    assert!(token.starts_with("vgt1.") && !token.contains(char::is_whitespace));

    // The token verifies with the CA's key for that identity only.
    let ca = vigil_ca(&state);
    let web = vigil_cert_authority::SpiffeId::parse(WEB).unwrap();
    let claims = ca
        .token_key()
        .verify(token, &web, std::time::SystemTime::now())
        .unwrap();
    assert_eq!(claims.exp - claims.iat, 300);
    let db = vigil_cert_authority::SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/db").unwrap();
    assert!(
        ca.token_key()
            .verify(token, &db, std::time::SystemTime::now())
            .is_err()
    );

    let pem = ok(&["ca", "bundle", "--state-dir", p(&state)]);
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 1);
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "ca",
        "bundle",
        "--state-dir",
        p(&state),
        "--format",
        "spiffe",
    ]))
    .unwrap();
    assert_eq!(json["keys"][0]["use"], "x509-svid");
    assert_eq!(json["spiffe_sequence"], 1);
}

fn vigil_ca(state: &Path) -> vigil_cert_authority::CertificateAuthority {
    vigil_cert_authority::CertificateAuthority::open(state, Default::default()).unwrap()
}

#[test]
fn root_rotation_keeps_old_svids_verifiable() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let old = d.path().join("old");
    ok(&[
        "ca",
        "init",
        "--state-dir",
        p(&state),
        "--root-key-algorithm",
        "p384",
    ]);
    ok(&[
        "ca",
        "issue",
        "--state-dir",
        p(&state),
        "--id",
        WEB,
        "--out",
        p(&old),
    ]);
    let msg = ok(&["ca", "rotate", "--state-dir", p(&state), "--root"]);
    assert!(msg.contains("bundle holds 2 root(s)"), "{msg}");

    let bundle = d.path().join("bundle.pem");
    fs::write(&bundle, ok(&["ca", "bundle", "--state-dir", p(&state)])).unwrap();
    let old_svid = old.join("svid.pem");
    let v = openssl(&[
        "verify",
        "-CAfile",
        p(&bundle),
        "-untrusted",
        p(&old_svid),
        p(&old_svid),
    ]);
    assert!(
        v.status.success(),
        "old-root SVID verifies against the overlap bundle"
    );

    let new = d.path().join("new");
    ok(&[
        "ca",
        "issue",
        "--state-dir",
        p(&state),
        "--id",
        WEB,
        "--out",
        p(&new),
    ]);
    let new_svid = new.join("svid.pem");
    let v = openssl(&[
        "verify",
        "-CAfile",
        p(&bundle),
        "-untrusted",
        p(&new_svid),
        p(&new_svid),
    ]);
    assert!(v.status.success());
    // The new SVID does not verify against the old root alone.
    let v = openssl(&[
        "verify",
        "-CAfile",
        p(&old.join("bundle.pem")),
        "-untrusted",
        p(&new_svid),
        p(&new_svid),
    ]);
    assert!(!v.status.success());

    let msg = ok(&["ca", "rotate", "--state-dir", p(&state)]);
    assert!(msg.contains("issuer rotated"), "{msg}");
}

#[test]
fn errors_are_one_clear_line() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let missing = d.path().join("missing");
    let out = d.path().join("out");

    let e = fails(&[
        "ca",
        "issue",
        "--state-dir",
        p(&missing),
        "--id",
        WEB,
        "--out",
        p(&out),
    ]);
    assert!(e.contains("vigil ca init"), "{e}");
    assert!(
        e.contains("vigil-controller") && e.contains("ready"),
        "a controller creates its CA on its first start: {e}"
    );
    assert!(!missing.exists(), "nothing created for a missing CA");

    ok(&["ca", "init", "--state-dir", p(&state)]);
    let e = fails(&["ca", "init", "--state-dir", p(&state)]);
    assert!(e.contains("already holds CA state"), "{e}");

    let e = fails(&[
        "ca",
        "issue",
        "--state-dir",
        p(&state),
        "--id",
        WEB,
        "--ttl",
        "2m",
        "--out",
        p(&out),
    ]);
    assert!(e.contains("outside the allowed range"), "{e}");
    ok(&[
        "ca",
        "issue",
        "--state-dir",
        p(&state),
        "--id",
        WEB,
        "--ttl",
        "2m",
        "--allow-short-ttl",
        "--out",
        p(&out),
    ]);

    let e = fails(&[
        "ca",
        "issue",
        "--state-dir",
        p(&state),
        "--id",
        "spiffe://elsewhere/ns/a/sa/b",
        "--out",
        p(&out),
    ]);
    assert!(e.contains("not in this CA's trust domain"), "{e}");
    let e = fails(&[
        "ca",
        "token",
        "--state-dir",
        p(&state),
        "--id",
        "spiffe://cluster.local",
    ]);
    assert!(e.contains("trust-domain ID"), "{e}");

    // A damaged state is reported, never repaired.
    let manifest = state.join("ca.json");
    fs::write(&manifest, "{").unwrap();
    let e = fails(&["ca", "bundle", "--state-dir", p(&state)]);
    assert!(e.contains("corrupt") && e.contains("ca.json"), "{e}");
    assert_eq!(fs::read_to_string(&manifest).unwrap(), "{");

    // Usage errors (clap) exit 2 and name the flag.
    let out = vigil(&[
        "ca",
        "issue",
        "--state-dir",
        p(&state),
        "--id",
        "spiffe://cluster.local/a/../b",
        "--out",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'--id <ID>'"));

    // A supplied root that is not a CA.
    let leaf_dir = d.path().join("leaf");
    ok(&[
        "ca",
        "issue",
        "--state-dir",
        p(&state_fresh(d.path())),
        "--id",
        WEB,
        "--out",
        p(&leaf_dir),
    ]);
    let e = fails(&[
        "ca",
        "init",
        "--state-dir",
        p(&d.path().join("s3")),
        "--root-cert",
        p(&leaf_dir.join("svid.pem")),
        "--root-key",
        p(&leaf_dir.join("key.pem")),
    ]);
    assert!(e.contains("supplied root"), "{e}");
}

fn state_fresh(dir: &Path) -> std::path::PathBuf {
    let s = dir.join("fresh");
    ok(&["ca", "init", "--state-dir", p(&s)]);
    s
}
