//! The CA state directory: survives restarts, stays private, and is never silently
//! replaced — every broken state is a clear error that leaves the files untouched.

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use support::*;
use vigil_cert_authority::{
    CaError, CertificateAuthority, InitOptions, RootSource, state::StateError, ttl::TtlPolicy,
};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn open(dir: &Path) -> Result<CertificateAuthority, CaError> {
    CertificateAuthority::open(dir, TtlPolicy::default())
}

/// Every file and its bytes, to prove a failed load changed nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("ca.lock"))
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect()
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join("ca.json")).unwrap()).unwrap()
}

fn file(dir: &Path, pointer: &str) -> PathBuf {
    dir.join(manifest(dir).pointer(pointer).unwrap().as_str().unwrap())
}

/// Opens `dir` expecting an error; asserts nothing on disk changed.
fn open_fails(dir: &Path) -> CaError {
    let before = snapshot(dir);
    let err = open(dir).expect_err("a broken state must not load");
    assert_eq!(
        snapshot(dir),
        before,
        "a failed open must not modify the state"
    );
    err
}

#[test]
fn survives_restart() {
    let (d, ca) = new_ca();
    let dir = d.path().join("ca");
    let token = ca
        .token_key()
        .mint(&id(WEB), Duration::from_secs(60), SystemTime::now());
    let bundle = ca.bundle();
    let issuer = ca.issuer_cert().clone();
    drop(ca);

    let ca = open(&dir).unwrap();
    assert_eq!(ca.bundle(), bundle);
    assert_eq!(ca.issuer_cert(), &issuer);
    assert_eq!(ca.trust_domain(), &td());
    ca.token_key()
        .verify(&token, &id(WEB), SystemTime::now())
        .unwrap();
    // And it still issues SVIDs that chain to the same root.
    let c = creds(&ca, WEB);
    assert_eq!(c.bundle, bundle);
}

#[test]
fn files_are_private() {
    let (d, _ca) = new_ca();
    let dir = d.path().join("ca");
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(names.len() >= 7, "{names:?}"); // manifest, lock, token, 2 root, 2 issuer
    for p in names {
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
}

#[test]
fn init_refuses_existing_state() {
    let (d, _ca) = new_ca();
    let dir = d.path().join("ca");
    let before = snapshot(&dir);
    let err = CertificateAuthority::init(
        &dir,
        InitOptions::new(td()),
        TtlPolicy::default(),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, CaError::State(StateError::AlreadyInitialized(_))),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before);

    // Even a lone key file counts as state.
    let lone = tempfile::tempdir().unwrap();
    fs::write(lone.path().join("root-abc.key"), "x").unwrap();
    let err = CertificateAuthority::init(
        lone.path(),
        InitOptions::new(td()),
        TtlPolicy::default(),
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(
        matches!(err, CaError::State(StateError::AlreadyInitialized(_))),
        "{err}"
    );
}

#[test]
fn missing_state_is_not_created() {
    let d = tempfile::tempdir().unwrap();
    let err = open(&d.path().join("nope")).unwrap_err();
    assert!(
        matches!(err, CaError::State(StateError::NotInitialized(_))),
        "{err}"
    );
    assert!(
        !d.path().join("nope").exists(),
        "open must not create the directory"
    );
    let err = open(d.path()).unwrap_err();
    assert!(err.to_string().contains("vigil ca init"), "{err}");
    assert_eq!(
        fs::read_dir(d.path()).unwrap().count(),
        0,
        "open must not write into an empty dir"
    );
}

#[test]
fn partial_state_is_an_error() {
    for victim in [
        "/issuer/key",
        "/issuer/cert",
        "/roots/0/cert",
        "/roots/0/key",
        "/token_key",
    ] {
        let (d, _ca) = new_ca();
        let dir = d.path().join("ca");
        let path = file(&dir, victim);
        fs::remove_file(&path).unwrap();
        let err = open_fails(&dir);
        match &err {
            CaError::State(StateError::Partial { missing, .. }) => {
                assert_eq!(Path::new(missing), path.file_name().unwrap(), "{victim}")
            }
            other => panic!("{victim}: expected Partial, got {other}"),
        }
        assert!(err.to_string().contains("never regenerates"), "{err}");
    }

    // Manifest gone but keys still there.
    let (d, _ca) = new_ca();
    let dir = d.path().join("ca");
    fs::remove_file(dir.join("ca.json")).unwrap();
    let err = open_fails(&dir);
    assert!(
        matches!(err, CaError::State(StateError::Partial { .. })),
        "{err}"
    );
}

#[test]
fn corrupt_files_are_errors() {
    type Damage = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "manifest garbage",
            Box::new(|dir| fs::write(dir.join("ca.json"), "{not json").unwrap()),
        ),
        (
            "manifest unknown field",
            Box::new(|dir| {
                let mut m = manifest(dir);
                m["surprise"] = 1.into();
                fs::write(dir.join("ca.json"), m.to_string()).unwrap();
            }),
        ),
        (
            "manifest escapes directory",
            Box::new(|dir| {
                let mut m = manifest(dir);
                m["issuer"]["key"] = "../../etc/passwd".into();
                fs::write(dir.join("ca.json"), m.to_string()).unwrap();
            }),
        ),
        (
            "truncated issuer cert",
            Box::new(|dir| {
                let p = file(dir, "/issuer/cert");
                let text = fs::read_to_string(&p).unwrap();
                fs::write(&p, &text[..text.len() / 2]).unwrap();
            }),
        ),
        (
            "token key wrong size",
            Box::new(|dir| fs::write(file(dir, "/token_key"), [1u8; 5]).unwrap()),
        ),
        (
            "root key garbage",
            Box::new(|dir| {
                fs::write(
                    file(dir, "/roots/0/key"),
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                )
                .unwrap()
            }),
        ),
    ];
    for (label, damage) in cases {
        let (d, _ca) = new_ca();
        let dir = d.path().join("ca");
        damage(&dir);
        let err = open_fails(&dir);
        assert!(
            matches!(err, CaError::State(StateError::Corrupt { .. })),
            "{label}: expected Corrupt, got {err}"
        );
    }

    let (d, _ca) = new_ca();
    let dir = d.path().join("ca");
    let mut m = manifest(&dir);
    m["format"] = 99.into();
    fs::write(dir.join("ca.json"), m.to_string()).unwrap();
    assert!(matches!(
        open_fails(&dir),
        CaError::State(StateError::UnsupportedFormat { found: 99, .. })
    ));
}

#[test]
fn mismatched_state_is_an_error() {
    // The issuer key replaced by another key (e.g. a bad restore).
    let (d, _ca) = new_ca();
    let dir = d.path().join("ca");
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    fs::write(file(&dir, "/issuer/key"), other.serialize_pem()).unwrap();
    let err = open_fails(&dir);
    assert!(
        matches!(&err, CaError::State(StateError::Mismatch { reason, .. }) if reason.contains("is not the key of")),
        "{err}"
    );

    // An issuer from a different CA (cert and key consistent with each other).
    let (d2, _other) = new_ca();
    let dir2 = d2.path().join("ca");
    fs::copy(file(&dir2, "/issuer/cert"), file(&dir, "/issuer/cert")).unwrap();
    fs::copy(file(&dir2, "/issuer/key"), file(&dir, "/issuer/key")).unwrap();
    let err = open_fails(&dir);
    assert!(
        matches!(&err, CaError::State(StateError::Mismatch { reason, .. }) if reason.contains("not signed by the active root")),
        "{err}"
    );

    // The manifest's trust domain edited.
    let (d, _ca) = new_ca();
    let dir = d.path().join("ca");
    let mut m = manifest(&dir);
    m["trust_domain"] = "other.domain".into();
    fs::write(dir.join("ca.json"), m.to_string()).unwrap();
    let err = open_fails(&dir);
    assert!(
        matches!(&err, CaError::State(StateError::Mismatch { reason, .. }) if reason.contains("other.domain")),
        "{err}"
    );
}

#[test]
fn readable_key_files_are_refused() {
    for victim in ["/issuer/key", "/roots/0/key", "/token_key"] {
        let (d, _ca) = new_ca();
        let dir = d.path().join("ca");
        let p = file(&dir, victim);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let err = open_fails(&dir);
        assert!(
            matches!(
                err,
                CaError::State(StateError::InsecurePermissions { mode: 0o640, .. })
            ),
            "{victim}: {err}"
        );
    }
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed (see .ci/run)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn supplied_root_from_openssl() {
    let d = tempfile::tempdir().unwrap();
    let (cert, key) = (d.path().join("root.pem"), d.path().join("root.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-days",
        "30",
        "-subj",
        "/O=Example/CN=Example mesh root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let source = RootSource::Supplied {
        cert_pem: fs::read_to_string(&cert).unwrap(),
        key_pem: fs::read_to_string(&key).unwrap(),
    };
    let mut opts = InitOptions::new(td());
    opts.root = source;
    let state = d.path().join("ca");
    let ca =
        CertificateAuthority::init(&state, opts, TtlPolicy::default(), SystemTime::now()).unwrap();
    assert_eq!(ca.bundle().roots().len(), 1);
    assert_eq!(
        ca.bundle().roots()[0].as_ref(),
        vigil_cert_authority::pemfile::decode_certs(&fs::read_to_string(&cert).unwrap()).unwrap()
            [0]
        .as_ref()
    );
    let c = creds(&open(&state).unwrap(), WEB);
    assert_eq!(c.info.id.as_str(), WEB);

    // A non-CA certificate, and a key that does not match, are refused.
    let (leaf_cert, leaf_key) = (d.path().join("leaf.pem"), d.path().join("leaf.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        leaf_key.to_str().unwrap(),
        "-out",
        leaf_cert.to_str().unwrap(),
        "-days",
        "30",
        "-subj",
        "/CN=not a ca",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
    ]);
    for (label, c, k, want) in [
        ("not a CA", &leaf_cert, &leaf_key, "not a CA"),
        ("key mismatch", &cert, &leaf_key, "does not match"),
    ] {
        let mut opts = InitOptions::new(td());
        opts.root = RootSource::Supplied {
            cert_pem: fs::read_to_string(c).unwrap(),
            key_pem: fs::read_to_string(k).unwrap(),
        };
        let target = d.path().join(format!("bad-{}", label.replace(' ', "-")));
        let err =
            CertificateAuthority::init(&target, opts, TtlPolicy::default(), SystemTime::now())
                .unwrap_err();
        assert!(
            matches!(&err, CaError::BadRoot(m) if m.contains(want)),
            "{label}: {err}"
        );
        assert!(
            fs::read_dir(&target)
                .map(|d| d
                    .filter(|e| !e.as_ref().unwrap().file_name().eq("ca.lock"))
                    .count())
                .unwrap_or(0)
                == 0,
            "{label}: a refused root leaves no state behind"
        );
    }
}
