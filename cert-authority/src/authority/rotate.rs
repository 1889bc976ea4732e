//! Issuer and root rotation.
//!
//! - **Issuer**: replaced before it reaches half its life — once it has lived
//!   [`ISSUER_ROTATION_POINT`] of it ([`CertificateAuthority::maintain`] does this; the
//!   controller calls it periodically) — so a fresh issuer always outlives any SVID it
//!   signs by a wide margin. Leaves signed by the old issuer keep verifying:
//!   they carry their own chain and the root is unchanged.
//! - **Root**: [`CertificateAuthority::rotate_root`] makes a new root and issuer; the old
//!   root stays in the bundle, without its key, until one maximum SVID TTL has passed —
//!   by then every SVID it anchored has expired — and `maintain` retires it.
//!
//! Every change runs under the state directory's exclusive lock, starting from the state
//! *on disk* (another process may have rotated meanwhile), and is saved before it is used.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{CaError, CertificateAuthority, RootSource, load};
use crate::{
    issuer,
    keys::KeyAlgorithm,
    state::{KeyedCert, Manifest, RootEntry, StateDir},
};

/// Fraction of an issuer's lifetime after which `maintain` replaces it: a little before
/// half life, so periodic maintenance lands before the halfway mark.
pub const ISSUER_ROTATION_POINT: f64 = 0.45;

/// What [`CertificateAuthority::maintain`] changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// A new issuer replaced the old one.
    pub issuer_rotated: bool,
    /// How many retiring roots left the bundle.
    pub roots_retired: usize,
}

impl CertificateAuthority {
    /// True once the issuer has lived [`ISSUER_ROTATION_POINT`] of its validity.
    pub fn issuer_needs_rotation(&self, now: SystemTime) -> bool {
        issuer_due(&self.state, now)
    }

    /// Rotates the issuer when due and retires roots whose overlap has ended.
    /// Cheap when there is nothing to do (no lock, no I/O).
    pub fn maintain(&mut self, now: SystemTime) -> Result<Maintenance, CaError> {
        if !issuer_due(&self.state, now) && !has_expired_roots(&self.state, now) {
            return Ok(Maintenance::default());
        }
        let mut report = Maintenance::default();
        self.mutate(|current, dir| {
            let mut manifest = current.manifest.clone();
            let mut changed = false;
            if issuer_due(current, now) {
                manifest.issuer = new_issuer_files(current, dir, now)?;
                report.issuer_rotated = true;
                changed = true;
            }
            let before = manifest.roots.len();
            let now_secs = unix(now);
            manifest
                .roots
                .retain(|r| r.retire_after.is_none_or(|after| after > now_secs));
            report.roots_retired = before - manifest.roots.len();
            if report.roots_retired > 0 {
                manifest.bundle_sequence += 1;
                changed = true;
            }
            Ok(changed.then_some(manifest))
        })?;
        if report.issuer_rotated {
            tracing::info!(not_after = ?self.state.issuer.not_after, "CA issuer rotated");
        }
        if report.roots_retired > 0 {
            tracing::info!(
                retired = report.roots_retired,
                "retired roots left the trust bundle"
            );
        }
        Ok(report)
    }

    /// Replaces the issuer now, whatever its age.
    pub fn rotate_issuer(&mut self, now: SystemTime) -> Result<(), CaError> {
        self.mutate(|current, dir| {
            let mut manifest = current.manifest.clone();
            manifest.issuer = new_issuer_files(current, dir, now)?;
            Ok(Some(manifest))
        })?;
        tracing::info!(not_after = ?self.state.issuer.not_after, "CA issuer rotated on request");
        Ok(())
    }

    /// Starts a root rotation: a new root (generated with the current root's algorithm,
    /// or supplied) becomes active with a new issuer; the old root stays in the bundle,
    /// keyless, for one maximum SVID TTL.
    pub fn rotate_root(
        &mut self,
        source: Option<RootSource>,
        now: SystemTime,
    ) -> Result<(), CaError> {
        let overlap = self.ttl.max();
        self.mutate(|current, dir| {
            let td = &current.trust_domain;
            let mut manifest = current.manifest.clone();
            let root = match source {
                Some(RootSource::Supplied { cert_pem, key_pem }) => {
                    load::supplied_root(td, &cert_pem, &key_pem, now)?
                }
                Some(RootSource::Generate(alg)) => {
                    issuer::new_root(td, alg, now, Duration::from_secs(manifest.root_ttl_secs))?
                }
                None => {
                    let alg = KeyAlgorithm::of(current.active_root.key()).unwrap_or_default();
                    issuer::new_root(td, alg, now, Duration::from_secs(manifest.root_ttl_secs))?
                }
            };
            let new_issuer = issuer::new_issuer(
                td,
                &root,
                now,
                Duration::from_secs(manifest.issuer_ttl_secs),
            )?;
            let root_files = load::write_ca(dir, "root", &root)?;
            let mut roots = vec![RootEntry {
                cert: root_files.cert,
                key: Some(root_files.key),
                retire_after: None,
            }];
            for (i, old) in manifest.roots.iter().enumerate() {
                roots.push(RootEntry {
                    cert: old.cert.clone(),
                    key: None,
                    retire_after: if i == 0 {
                        Some(unix(now + overlap))
                    } else {
                        old.retire_after
                    },
                });
            }
            manifest.roots = roots;
            manifest.issuer = load::write_ca(dir, "issuer", &new_issuer)?;
            manifest.bundle_sequence += 1;
            Ok(Some(manifest))
        })?;
        tracing::info!(
            retire_old_after = ?now + overlap,
            bundle_sequence = self.state.manifest.bundle_sequence,
            "CA root rotated; the previous root stays in the bundle for one max SVID TTL"
        );
        Ok(())
    }

    /// Runs `change` on the state as it is on disk, under the exclusive lock. If it
    /// returns a new manifest, saves it, reloads through the full checks, and removes files
    /// nothing refers to any more. Returns whether anything changed.
    fn mutate(
        &mut self,
        change: impl FnOnce(&load::Loaded, &StateDir) -> Result<Option<Manifest>, CaError>,
    ) -> Result<bool, CaError> {
        let _lock = self.dir.lock(true)?;
        let current = load::Loaded::read(&self.dir)?;
        match change(&current, &self.dir)? {
            Some(manifest) => {
                self.dir.write_manifest(&manifest)?;
                self.state = load::Loaded::read(&self.dir)?;
                self.dir.remove_unreferenced(&manifest)?;
                Ok(true)
            }
            None => {
                self.state = current;
                Ok(false)
            }
        }
    }
}

/// A new issuer under the active root, written to fresh files.
fn new_issuer_files(
    current: &load::Loaded,
    dir: &StateDir,
    now: SystemTime,
) -> Result<KeyedCert, CaError> {
    let ttl = Duration::from_secs(current.manifest.issuer_ttl_secs);
    let new = issuer::new_issuer(&current.trust_domain, &current.active_root, now, ttl)?;
    Ok(load::write_ca(dir, "issuer", &new)?)
}

fn issuer_due(state: &load::Loaded, now: SystemTime) -> bool {
    let issuer = &state.issuer;
    let life = issuer
        .not_after
        .duration_since(issuer.not_before)
        .unwrap_or_default();
    now >= issuer.not_before + life.mul_f64(ISSUER_ROTATION_POINT)
}

fn has_expired_roots(state: &load::Loaded, now: SystemTime) -> bool {
    state.retiring.iter().any(|(_, after)| *after <= now)
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
