//! Chains that already passed webpki's verification, so a peer's next handshake skips the
//! two signature checks (leaf by issuer, issuer by root) that cost 41 % of a new mTLS
//! connection on the inbound.
//!
//! What a hit may skip, and what it may not:
//! - An entry keeps the exact DER of the presented leaf and intermediates, and a hit
//!   compares every byte: a hit means byte-for-byte the chain that verified — same
//!   signatures, same extensions, same EKU. A leaf with other intermediates is a miss.
//!   (The map is indexed by a fast non-cryptographic hash of those bytes; a collision can
//!   only cost a miss, never a hit. Hashing 1.2 KB with SHA-256 twice per connection cost
//!   3 % of a handshake.)
//! - Each cache belongs to one verifier, and so to one root set and one key usage (client
//!   or server auth): a trust-bundle change builds new verifiers, so it starts empty.
//! - Time is not cached: an entry stores the window in which *every* presented certificate
//!   is valid (latest `notBefore`, earliest `notAfter`), and a lookup outside it is a miss
//!   that runs the full verification (and fails it, for an expired chain).
//! - Revocation and quarantine are not cached: the caller checks the cached [`SvidInfo`]
//!   against the revocation hook on every handshake. Nor is the proof of key possession:
//!   rustls checks the peer's CertificateVerify signature on every handshake.
//! - Only successful verifications are stored; failures are never cached either way.

use std::{
    hash::Hasher,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use rustc_hash::{FxHashMap, FxHasher};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::svid::SvidInfo;

/// Most chains one verifier remembers; when full it starts over (a mesh peer's next
/// handshake re-verifies). About 1.4 KB each (the chain's DER and the SVID).
const MAX_ENTRIES: usize = 1024;

/// Where a presented chain (leaf, then intermediates in order) is looked up: a hash of
/// its bytes, which only indexes — the bytes themselves are compared on every hit.
type ChainKey = u64;

/// A chain that verified, with the leaf's SVID and the window in which it stays valid.
#[derive(Debug)]
struct Verified {
    /// The exact DER of the leaf, then of each intermediate as presented.
    chain: Box<[Box<[u8]>]>,
    /// Seconds since the epoch: the latest `notBefore` of the chain.
    valid_from: i64,
    /// Seconds since the epoch: the earliest `notAfter` of the chain.
    valid_until: i64,
    info: SvidInfo,
}

/// The verified-chain cache of one verifier.
#[derive(Debug, Default)]
pub struct VerifiedChains {
    entries: RwLock<FxHashMap<ChainKey, Verified>>,
    hits: AtomicU64,
}

impl VerifiedChains {
    /// The cache key of a presented chain.
    fn key(end_entity: &[u8], intermediates: &[CertificateDer<'_>]) -> ChainKey {
        let mut h = FxHasher::default();
        for der in chain(end_entity, intermediates) {
            h.write_usize(der.len());
            h.write(der);
        }
        h.finish()
    }

    /// The one way a verifier uses the cache. If exactly this chain verified before and
    /// every certificate in it is valid at `now`, `admit`s the remembered SVID. Otherwise
    /// runs `verify` — the full verification (chain, then SVID rules and trust domain;
    /// not revocation), returning the leaf's SVID — remembers the chain if it passed, and
    /// `admit`s that SVID. `admit` holds the checks that are never cached (revocation,
    /// the expected identities).
    pub(crate) fn verify_with<R>(
        &self,
        end_entity: &[u8],
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        verify: impl FnOnce() -> Result<SvidInfo, rustls::Error>,
        admit: impl Fn(&SvidInfo) -> Result<R, rustls::Error>,
    ) -> Result<R, rustls::Error> {
        let key = Self::key(end_entity, intermediates);
        if let Some(verdict) = self.check(key, end_entity, intermediates, now, &admit) {
            return verdict;
        }
        let info = verify()?;
        let verdict = admit(&info);
        self.insert(key, end_entity, intermediates, info);
        verdict
    }

    /// Runs `admit` on the cached SVID of the chain `end_entity` + `intermediates` (whose
    /// [`Self::key`] is `key`) if exactly that chain verified before and every
    /// certificate in it is valid at `now`; `None` (a miss) otherwise.
    fn check<R>(
        &self,
        key: ChainKey,
        end_entity: &[u8],
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        admit: impl FnOnce(&SvidInfo) -> R,
    ) -> Option<R> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let hit = entries.get(&key)?;
        let same = hit.chain.len() == 1 + intermediates.len()
            && hit
                .chain
                .iter()
                .zip(chain(end_entity, intermediates))
                .all(|(kept, presented)| **kept == *presented);
        if !same {
            return None;
        }
        let now = i64::try_from(now.as_secs()).ok()?;
        if now < hit.valid_from || now > hit.valid_until {
            return None;
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(admit(&hit.info))
    }

    /// Remembers a chain that has just passed the full verification. A chain whose
    /// intermediates cannot be read is simply not cached.
    fn insert(
        &self,
        key: ChainKey,
        end_entity: &[u8],
        intermediates: &[CertificateDer<'_>],
        info: SvidInfo,
    ) {
        let Some((valid_from, valid_until)) = window(&info, intermediates) else {
            return;
        };
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(
            key,
            Verified {
                chain: chain(end_entity, intermediates).map(Box::from).collect(),
                valid_from,
                valid_until,
                info,
            },
        );
    }

    /// How many chains are remembered.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when no chain is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many verifications were answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

/// The leaf's DER, then each intermediate's.
fn chain<'a>(
    end_entity: &'a [u8],
    intermediates: &'a [CertificateDer<'_>],
) -> impl Iterator<Item = &'a [u8]> {
    std::iter::once(end_entity).chain(intermediates.iter().map(|c| c.as_ref()))
}

/// The seconds-since-epoch window in which the leaf and every intermediate are valid.
fn window(leaf: &SvidInfo, intermediates: &[CertificateDer<'_>]) -> Option<(i64, i64)> {
    let secs = |t: std::time::SystemTime| -> Option<i64> {
        let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
        i64::try_from(d.as_secs()).ok()
    };
    let mut from = secs(leaf.not_before)?;
    let mut until = secs(leaf.not_after)?;
    for der in intermediates {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let validity = cert.validity();
        from = from.max(validity.not_before.timestamp());
        until = until.min(validity.not_after.timestamp());
    }
    (from <= until).then_some((from, until))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::SpiffeId;

    fn info() -> SvidInfo {
        SvidInfo {
            id: SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/web").unwrap(),
            serial: vec![1, 2, 3],
            not_before: UNIX_EPOCH + Duration::from_secs(1_000),
            not_after: UNIX_EPOCH + Duration::from_secs(2_000),
        }
    }

    #[test]
    fn a_hit_needs_the_same_bytes_not_only_the_same_index() {
        let cache = VerifiedChains::default();
        let (leaf, other) = (b"leaf-a".as_slice(), b"leaf-b".as_slice());
        let key = VerifiedChains::key(leaf, &[]);
        cache.insert(key, leaf, &[], info());
        let at = UnixTime::since_unix_epoch(Duration::from_secs(1_500));

        assert_eq!(
            cache.check(key, leaf, &[], at, |i| i.serial.clone()),
            Some(vec![1, 2, 3])
        );
        // Another chain under the same index (a hash collision, forced): a miss.
        assert_eq!(cache.check(key, other, &[], at, |_| ()), None);
        let inter = [CertificateDer::from(b"extra".to_vec())];
        assert_eq!(cache.check(key, leaf, &inter, at, |_| ()), None);
        // Outside the window: a miss, at both ends; the ends themselves are inside.
        for (secs, hit) in [(999, false), (1_000, true), (2_000, true), (2_001, false)] {
            let at = UnixTime::since_unix_epoch(Duration::from_secs(secs));
            assert_eq!(
                cache.check(key, leaf, &[], at, |_| ()).is_some(),
                hit,
                "{secs}"
            );
        }
        assert_eq!(cache.hits(), 3);
    }

    #[test]
    fn a_full_cache_starts_over() {
        let cache = VerifiedChains::default();
        for i in 0..MAX_ENTRIES + 1 {
            let leaf = i.to_be_bytes();
            cache.insert(VerifiedChains::key(&leaf, &[]), &leaf, &[], info());
        }
        assert_eq!(cache.len(), 1);
    }
}
