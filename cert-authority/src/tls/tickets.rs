//! Session tickets of the mesh servers: the resumption state rustls hands a client
//! (among it the client's certificate chain, which a resumed connection's identity is
//! read from) sealed with AES-256-GCM under a random key, rotated by rustls'
//! [`TicketRotator`] every 6 hours (a ticket outlives its key by at most one rotation).
//!
//! Why not `rustls::crypto::aws_lc_rs::Ticketer`: it seals with RFC 5077's AES-256-CBC
//! and HMAC-SHA256 — the HMAC hashes the whole ticket, a SHA-256 compression per 64
//! bytes, and every resumed handshake both opens a ticket and seals its successor (about
//! 8 % of a resumed handshake's instructions on the mesh's ~1 KB tickets, counted in
//! benches/RESULTS.md 39). AES-GCM authenticates with GHASH, which runs on the carry-less
//! multiply beside AES-NI. Nonces are 96 random bits from aws-lc
//! ([`RandomizedNonceKey`]); a key seals at most what one server issues in 12 hours,
//! far below the 2³² messages per key that random GCM nonces allow.
//!
//! A ticket is `key name (16) ‖ nonce (12) ‖ ciphertext ‖ tag (16)`, the key name (random,
//! per key) authenticated as associated data. Anything else — too short, another key's
//! name, a flipped bit, longer than any ticket this key sealed — opens to `None`, and the
//! client gets a full handshake.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey},
    rand,
};
use rustls::{server::ProducesTickets, ticketer::TicketRotator};
use zeroize::Zeroize;

use super::ticket_certs::CutCertificates;

/// How often the sealing key changes (seconds); a ticket can be opened for up to twice
/// this (rustls' rotator keeps the previous key), the lifetime it advertises — as with
/// rustls' own ticketer.
const ROTATE_EVERY: u32 = 6 * 60 * 60;

const KEY_NAME_LEN: usize = 16;
const TAG_LEN: usize = 16;

/// A rotating ticketer for a mesh server's config, sealing states with the client's chain
/// cut out ([`CutCertificates`]): its `own` certificates (DER; the server's intermediates)
/// by index, the client's leaf by a learned id.
pub(super) fn ticketer<'a>(
    own: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    let rotator = TicketRotator::new(ROTATE_EVERY, GcmTicketer::boxed)?;
    Ok(Arc::new(CutCertificates::new(rotator, own)))
}

/// One key's tickets.
struct GcmTicketer {
    key: RandomizedNonceKey,
    key_name: [u8; KEY_NAME_LEN],
    /// The longest ticket sealed so far: a longer one is refused before it is opened
    /// (what a partitioning-oracle attack on a non-committing AEAD would send).
    longest: AtomicUsize,
}

impl GcmTicketer {
    fn new() -> Result<Self, rustls::crypto::GetRandomFailed> {
        let mut key = [0u8; 32];
        let mut key_name = [0u8; KEY_NAME_LEN];
        rand::fill(&mut key).map_err(|_| rustls::crypto::GetRandomFailed)?;
        rand::fill(&mut key_name).map_err(|_| rustls::crypto::GetRandomFailed)?;
        let sealing = RandomizedNonceKey::new(&AES_256_GCM, &key);
        // The key's bytes live on only inside aws-lc's context.
        key.zeroize();
        Ok(Self {
            key: sealing.map_err(|_| rustls::crypto::GetRandomFailed)?,
            key_name,
            longest: AtomicUsize::new(0),
        })
    }

    fn boxed() -> Result<Box<dyn ProducesTickets>, rustls::crypto::GetRandomFailed> {
        Ok(Box::new(Self::new()?))
    }
}

impl fmt::Debug for GcmTicketer {
    // Neither the key nor its name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcmTicketer").finish_non_exhaustive()
    }
}

impl ProducesTickets for GcmTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        2 * ROTATE_EVERY
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        // One buffer: the name, room for the nonce, the state sealed in place, the tag.
        const SEALED_AT: usize = KEY_NAME_LEN + NONCE_LEN;
        let mut ticket = Vec::with_capacity(SEALED_AT + plain.len() + TAG_LEN);
        ticket.extend_from_slice(&self.key_name);
        ticket.extend_from_slice(&[0; NONCE_LEN]);
        ticket.extend_from_slice(plain);
        let (nonce, tag) = self
            .key
            .seal_in_place_separate_tag(Aad::from(self.key_name), &mut ticket[SEALED_AT..])
            .ok()?;
        ticket[KEY_NAME_LEN..SEALED_AT].copy_from_slice(nonce.as_ref());
        ticket.extend_from_slice(tag.as_ref());
        self.longest.fetch_max(ticket.len(), Ordering::Relaxed);
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() > self.longest.load(Ordering::Relaxed) {
            return None;
        }
        let (name, rest) = ticket.split_at_checked(KEY_NAME_LEN)?;
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        if name != self.key_name || sealed.len() < TAG_LEN {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut out = sealed.to_vec();
        let plain_len = self
            .key
            .open_in_place(nonce, Aad::from(self.key_name), &mut out)
            .ok()?
            .len();
        out.truncate(plain_len);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_ticket_opens_to_what_was_sealed_and_differs_each_time() {
        let t = GcmTicketer::new().unwrap();
        let plain = b"resumption state, certificate chain and all".repeat(20);
        let a = t.encrypt(&plain).unwrap();
        let b = t.encrypt(&plain).unwrap();
        assert_ne!(a, b, "a fresh nonce per ticket");
        assert_eq!(a.len(), KEY_NAME_LEN + NONCE_LEN + plain.len() + TAG_LEN);
        assert!(
            !a.windows(16).any(|w| plain.windows(16).any(|p| p == w)),
            "no plaintext in the ticket"
        );
        assert_eq!(t.decrypt(&a).unwrap(), plain);
        assert_eq!(t.decrypt(&b).unwrap(), plain);
        assert_eq!(t.decrypt(&t.encrypt(b"").unwrap()).unwrap(), b"");
    }

    #[test]
    fn anything_but_a_ticket_it_sealed_opens_to_none() {
        let t = GcmTicketer::new().unwrap();
        let other = GcmTicketer::new().unwrap();
        let ticket = t.encrypt(&[7u8; 600]).unwrap();
        // Every single bit flipped: key name, nonce, ciphertext, tag.
        for i in 0..ticket.len() {
            for bit in [0x01, 0x80] {
                let mut bad = ticket.clone();
                bad[i] ^= bit;
                assert!(t.decrypt(&bad).is_none(), "byte {i} bit {bit:#x}");
            }
        }
        // Cut short anywhere, or lengthened.
        for len in 0..ticket.len() {
            assert!(t.decrypt(&ticket[..len]).is_none(), "cut to {len}");
        }
        let mut longer = ticket.clone();
        longer.push(0);
        assert!(t.decrypt(&longer).is_none());
        // Another key's ticket, even with this key's name put in front.
        let theirs = other.encrypt(&[7u8; 600]).unwrap();
        assert!(t.decrypt(&theirs).is_none());
        let mut renamed = theirs.clone();
        renamed[..KEY_NAME_LEN].copy_from_slice(&ticket[..KEY_NAME_LEN]);
        assert!(t.decrypt(&renamed).is_none());
        assert!(t.decrypt(&[]).is_none());
    }

    /// What a ticket longer than any sealed is refused against: the longest so far.
    #[test]
    fn the_longest_ticket_sealed_is_kept() {
        let t = GcmTicketer::new().unwrap();
        let long = t.encrypt(&[1u8; 100]).unwrap();
        let short = t.encrypt(&[1u8; 50]).unwrap();
        assert_eq!(t.longest.load(Ordering::Relaxed), long.len());
        let mut forged = short.clone();
        forged.resize(long.len() + 1, 0);
        assert!(t.decrypt(&forged).is_none());
        assert_eq!(t.decrypt(&short).unwrap(), [1u8; 50]);
    }

    #[test]
    fn the_rotator_seals_and_opens_and_says_its_lifetime() {
        let t = ticketer([&b"certificate"[..]]).unwrap();
        assert!(t.enabled());
        assert_eq!(t.lifetime(), 12 * 60 * 60);
        let ticket = t.encrypt(b"state").unwrap();
        assert_eq!(t.decrypt(&ticket).unwrap(), b"state");
        let with_cert = t.encrypt(b"state, certificate, state").unwrap();
        let uncut = ticketer([])
            .unwrap()
            .encrypt(b"state, certificate, state")
            .unwrap();
        assert_eq!(
            uncut.len() - with_cert.len(),
            11 - 3,
            "cut out, three bytes instead"
        );
        assert_eq!(t.decrypt(&with_cert).unwrap(), b"state, certificate, state");
        assert!(
            ticketer([]).unwrap().decrypt(&ticket).is_none(),
            "keys are per ticketer"
        );
        assert!(!format!("{t:?}").is_empty());
    }
}
