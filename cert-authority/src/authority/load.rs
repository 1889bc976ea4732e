//! Reading and writing the CA's files, with every consistency check on the way in.
//!
//! A state is accepted only if: the manifest parses; every file it names exists; key files
//! are private; each key matches its certificate; the active root is self-signed; the
//! issuer is signed by the active root; and every certificate with a trust-domain ID
//! names the manifest's trust domain. Anything else is an error naming the file.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;

use super::{CaError, InitOptions};
use crate::{
    bundle::TrustBundle,
    issuer::{self, SigningCa},
    keys::{self, KeyAlgorithm},
    pemfile,
    spiffe::TrustDomain,
    state::{KeyedCert, Manifest, RootEntry, StateDir, StateError},
    svid,
    token::{self, TokenKey},
};

/// The CA as loaded from disk.
pub(super) struct Loaded {
    pub(super) manifest: Manifest,
    pub(super) trust_domain: TrustDomain,
    pub(super) active_root: SigningCa,
    /// Retiring roots: certificate and when it leaves the bundle.
    pub(super) retiring: Vec<(CertificateDer<'static>, SystemTime)>,
    pub(super) issuer: SigningCa,
    pub(super) token_key: TokenKey,
    /// Active root first, then retiring roots.
    pub(super) bundle: TrustBundle,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("trust_domain", &self.trust_domain)
            .field("roots", &(1 + self.retiring.len()))
            .field("issuer_not_after", &self.issuer.not_after)
            .finish_non_exhaustive()
    }
}

impl Loaded {
    /// Writes a brand-new CA (root, first issuer, token key), then reads it back through
    /// the same checks as any other load.
    pub(super) fn create(
        dir: &StateDir,
        opts: &InitOptions,
        root: SigningCa,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let issuer = issuer::new_issuer(&opts.trust_domain, &root, now, opts.issuer_ttl)?;
        let token_name = format!("token-{}.key", file_id());
        dir.write_atomic(&token_name, &TokenKey::generate_bytes())?;
        let root_files = write_ca(dir, "root", &root)?;
        let manifest = Manifest {
            format: Manifest::FORMAT,
            trust_domain: opts.trust_domain.to_string(),
            issuer_ttl_secs: opts.issuer_ttl.as_secs(),
            root_ttl_secs: opts.root_ttl.as_secs(),
            bundle_sequence: 1,
            roots: vec![RootEntry {
                cert: root_files.cert,
                key: Some(root_files.key),
                retire_after: None,
            }],
            issuer: write_ca(dir, "issuer", &issuer)?,
            token_key: token_name,
        };
        dir.write_manifest(&manifest)?;
        Self::read(dir)
    }

    /// Loads and checks the state.
    pub(super) fn read(dir: &StateDir) -> Result<Self, CaError> {
        let manifest = dir
            .read_manifest()?
            .ok_or_else(|| StateError::NotInitialized(dir.path().to_owned()))?;
        let corrupt = |reason: String| StateError::Corrupt {
            file: dir.path().join(crate::state::MANIFEST),
            reason,
        };
        let mismatch = |reason: String| StateError::Mismatch {
            dir: dir.path().to_owned(),
            reason,
        };
        let trust_domain =
            TrustDomain::new(&manifest.trust_domain).map_err(|e| corrupt(e.to_string()))?;
        let (active, retiring_entries) = manifest
            .roots
            .split_first()
            .ok_or_else(|| corrupt("no root listed".into()))?;
        let (Some(active_key), None) = (&active.key, active.retire_after) else {
            return Err(mismatch(format!(
                "active root {} must have a key and no retirement time",
                active.cert
            ))
            .into());
        };

        let active_root = read_keyed(dir, &active.cert, active_key)?;
        let parsed =
            svid::parse(&active_root.cert).map_err(|e| corrupt_file(dir, &active.cert, e))?;
        parsed
            .verify_signature(None)
            .map_err(|_| mismatch(format!("active root {} is not self-signed", active.cert)))?;
        check_trust_domain(dir, &active.cert, &active_root.cert, &trust_domain, false)?;

        let mut retiring = Vec::new();
        for entry in retiring_entries {
            let Some(after) = entry.retire_after else {
                return Err(mismatch(format!(
                    "non-active root {} has no retirement time",
                    entry.cert
                ))
                .into());
            };
            let cert = read_cert(dir, &entry.cert)?;
            check_trust_domain(dir, &entry.cert, &cert, &trust_domain, false)?;
            retiring.push((cert, UNIX_EPOCH + Duration::from_secs(after)));
        }

        let issuer = read_keyed(dir, &manifest.issuer.cert, &manifest.issuer.key)?;
        let issuer_parsed =
            svid::parse(&issuer.cert).map_err(|e| corrupt_file(dir, &manifest.issuer.cert, e))?;
        issuer_parsed
            .verify_signature(Some(parsed.public_key()))
            .map_err(|_| {
                mismatch(format!(
                    "issuer {} is not signed by the active root {}",
                    manifest.issuer.cert, active.cert
                ))
            })?;
        check_trust_domain(
            dir,
            &manifest.issuer.cert,
            &issuer.cert,
            &trust_domain,
            true,
        )?;

        let token_bytes = dir.read(&manifest.token_key, true)?;
        let token_bytes: [u8; token::KEY_LEN] =
            token_bytes
                .as_slice()
                .try_into()
                .map_err(|_| StateError::Corrupt {
                    file: dir.path().join(&manifest.token_key),
                    reason: format!(
                        "expected {} bytes, found {}",
                        token::KEY_LEN,
                        token_bytes.len()
                    ),
                })?;

        let roots = std::iter::once(active_root.cert.clone())
            .chain(retiring.iter().map(|(c, _)| c.clone()))
            .collect();
        let bundle = TrustBundle::new(trust_domain.clone(), roots, manifest.bundle_sequence)
            .map_err(|e| mismatch(e.to_string()))?;
        drop(parsed);
        drop(issuer_parsed);
        Ok(Self {
            bundle,
            manifest,
            trust_domain,
            active_root,
            retiring,
            issuer,
            token_key: TokenKey::from_bytes(&token_bytes),
        })
    }
}

/// Writes a CA certificate and key under fresh names.
pub(super) fn write_ca(
    dir: &StateDir,
    prefix: &str,
    ca: &SigningCa,
) -> Result<KeyedCert, StateError> {
    let id = file_id();
    let files = KeyedCert {
        cert: format!("{prefix}-{id}.crt"),
        key: format!("{prefix}-{id}.key"),
    };
    dir.write_atomic(&files.key, ca.key().serialize_pem().as_bytes())?;
    dir.write_atomic(&files.cert, pemfile::encode_certs([&ca.cert]).as_bytes())?;
    Ok(files)
}

/// Validates an operator-supplied root: a CA, self-signed, in date, key matching, ECDSA
/// P-256/P-384, and (if it carries one) the right trust-domain ID.
pub(super) fn supplied_root(
    td: &TrustDomain,
    cert_pem: &str,
    key_pem: &str,
    now: SystemTime,
) -> Result<SigningCa, CaError> {
    let bad = |m: String| CaError::BadRoot(m);
    let certs = pemfile::decode_certs(cert_pem).map_err(|e| bad(e.to_string()))?;
    let [cert] = certs.as_slice() else {
        return Err(bad(format!(
            "expected exactly one certificate, found {}",
            certs.len()
        )));
    };
    let key = pemfile::decode_key_pair(key_pem).map_err(|e| bad(e.to_string()))?;
    if KeyAlgorithm::of(&key).is_none() {
        return Err(bad("root key must be ECDSA P-256 or P-384".into()));
    }
    let info = svid::inspect_ca(cert).map_err(|e| bad(e.to_string()))?;
    let parsed = svid::parse(cert).map_err(|e| bad(e.to_string()))?;
    if parsed.verify_signature(None).is_err() {
        return Err(bad(
            "certificate is not self-signed (supply the root, not an intermediate)".into(),
        ));
    }
    if !keys::matches_cert(&key, &parsed) {
        return Err(bad("private key does not match the certificate".into()));
    }
    if now < info.not_before || now >= info.not_after {
        return Err(bad(
            "certificate is not valid now (check its notBefore/notAfter)".into(),
        ));
    }
    if let Some(id) = &info.trust_domain_id
        && id.trust_domain_name() != td.as_str()
    {
        return Err(bad(format!(
            "certificate is for trust domain {}, not {td}",
            id.trust_domain_name()
        )));
    }
    drop(parsed);
    Ok(SigningCa::new(
        cert.clone(),
        key,
        info.not_before,
        info.not_after,
    )?)
}

fn read_cert(dir: &StateDir, name: &str) -> Result<CertificateDer<'static>, StateError> {
    let text = dir.read(name, false)?;
    let text = String::from_utf8(text).map_err(|e| corrupt_file(dir, name, e))?;
    let certs = pemfile::decode_certs(&text).map_err(|e| corrupt_file(dir, name, e))?;
    match <[_; 1]>::try_from(certs) {
        Ok([cert]) => Ok(cert),
        Err(certs) => Err(corrupt_file(
            dir,
            name,
            format!("expected one certificate, found {}", certs.len()),
        )),
    }
}

fn read_keyed(dir: &StateDir, cert_name: &str, key_name: &str) -> Result<SigningCa, CaError> {
    let cert = read_cert(dir, cert_name)?;
    let key_text = dir.read(key_name, true)?;
    let key_text = String::from_utf8(key_text).map_err(|e| corrupt_file(dir, key_name, e))?;
    let key = pemfile::decode_key_pair(&key_text).map_err(|e| corrupt_file(dir, key_name, e))?;
    let info = svid::inspect_ca(&cert).map_err(|e| corrupt_file(dir, cert_name, e))?;
    let parsed = svid::parse(&cert).map_err(|e| corrupt_file(dir, cert_name, e))?;
    if !keys::matches_cert(&key, &parsed) {
        return Err(StateError::Mismatch {
            dir: dir.path().to_owned(),
            reason: format!("{key_name} is not the key of {cert_name}"),
        }
        .into());
    }
    drop(parsed);
    Ok(SigningCa::new(cert, key, info.not_before, info.not_after)?)
}

/// Checks a CA certificate's trust-domain ID against the manifest. Vigil's issuers must
/// carry one; roots may lack one (operator-supplied).
fn check_trust_domain(
    dir: &StateDir,
    name: &str,
    cert: &CertificateDer<'_>,
    td: &TrustDomain,
    required: bool,
) -> Result<(), StateError> {
    let info = svid::inspect_ca(cert).map_err(|e| corrupt_file(dir, name, e))?;
    match info.trust_domain_id {
        Some(id) if id.trust_domain_name() == td.as_str() => Ok(()),
        None if !required => Ok(()),
        other => Err(StateError::Mismatch {
            dir: dir.path().to_owned(),
            reason: format!(
                "{name} is for trust domain {}, but the manifest says {td}",
                other.map_or_else(
                    || "(none)".to_owned(),
                    |id| id.trust_domain_name().to_owned()
                )
            ),
        }),
    }
}

fn corrupt_file(dir: &StateDir, name: &str, reason: impl std::fmt::Display) -> StateError {
    StateError::Corrupt {
        file: dir.path().join(name),
        reason: reason.to_string(),
    }
}

/// A random file-name component, so new files never overwrite old ones.
fn file_id() -> String {
    token::hex(&keys::random_bytes::<6>(false))
}
