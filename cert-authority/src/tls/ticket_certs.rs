//! The certificates of a client's chain, cut out of the session state a mesh server seals
//! into tickets and put back when a ticket is opened.
//!
//! A ticket carries the resumption state rustls hands it, among it the client's whole
//! certificate chain (a resumed connection's identity is read from it): ~1 KB of a
//! ~1.1 KB state. A resumed handshake pays for each of its bytes several times: the
//! ticket rides in the ClientHello, which the server hashes twice (the PSK binder, then
//! the transcript), opens, and seals again into the next ticket. Two kinds of
//! certificate are cut out:
//! - the server's own intermediates (the *dictionary*, fixed for the ticketer's life): in
//!   a mesh the client's issuer is the server's — one issuer signs every SVID — found by
//!   their last bytes anywhere in the state; a reference is 3 bytes;
//! - the client's leaf, learned ([`Leaves`]), found where rustls' encoding puts a
//!   certificate (DER `SEQUENCE { SEQUENCE …` with a two-byte length, right after its
//!   three-byte length); a reference is 11 bytes.
//!
//! What is sealed: `count (1) ‖ count × (offset (2, big-endian) ‖ tag (1) [‖ id (8)]) ‖
//! rest` — `rest` is the state with `count` certificates cut out, each of which began at
//! `offset` of the original state (offsets ascending, cuts disjoint) and is the
//! dictionary's entry `tag`, or, for tag 255, the learned leaf `id`. A ticket is only ever
//! opened by the ticketer that sealed it (the key is the ticketer's too). Tickets are
//! authenticated before this runs, so a reference that does not fit is a bug, not an
//! attack; it opens to `None` (a full handshake), never to other bytes — as does a leaf
//! the store no longer remembers.

use std::fmt;

use memchr::memmem::{self, Finder};
use rustls::server::ProducesTickets;

use super::ticket_leaves::{Leaves, PER_GENERATION};

/// A ticketer that seals `inner`'s tickets with the client's certificates cut out.
pub(super) struct CutCertificates<T> {
    inner: T,
    /// The certificates the server holds; an index is one byte, below [`LEAF`].
    dictionary: Vec<Held>,
    /// The client leaves learned.
    leaves: Leaves,
}

/// A certificate of the dictionary.
struct Held {
    der: Box<[u8]>,
    /// Finds the certificate's last bytes (its signature's: as good as random), where a
    /// whole certificate ending there is then compared — a search for the whole
    /// certificate cost 8 times as much.
    tail: Finder<'static>,
}

/// Header bytes per cut: offset (2) and tag (1).
const CUT_LEN: usize = 3;

/// The tag of a learned leaf, whose id (8 bytes) follows.
const LEAF: u8 = u8::MAX;

/// A certificate found in a state: where, how long, and which.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Found {
    at: usize,
    /// A dictionary index; [`LEAF`] for a leaf (so a held certificate found at the same
    /// place sorts first).
    tag: u8,
    len: usize,
}

/// How many of a certificate's last bytes are searched for.
const TAIL_LEN: usize = 32;

impl Held {
    fn new(der: &[u8]) -> Self {
        let tail = &der[der.len().saturating_sub(TAIL_LEN)..];
        Self {
            der: der.into(),
            tail: Finder::new(tail).into_owned(),
        }
    }

    /// Where the certificate begins in `plain`, each time it does (ascending).
    fn find_in<'a>(&'a self, plain: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        let before_tail = self.der.len() - self.tail.needle().len();
        self.tail
            .find_iter(plain)
            .filter_map(move |tail_at| tail_at.checked_sub(before_tail))
            .filter(move |&at| plain[at..].starts_with(&self.der))
    }
}

impl<T: ProducesTickets> CutCertificates<T> {
    /// `inner` sealing states with `certificates` (DER; empty ones and any past the 255th
    /// are ignored) and the client's leaf cut out.
    pub(super) fn new<'a>(inner: T, certificates: impl IntoIterator<Item = &'a [u8]>) -> Self {
        Self::with_generations(inner, certificates, PER_GENERATION)
    }

    /// [`Self::new`], remembering two generations of `per_generation` leaves.
    fn with_generations<'a>(
        inner: T,
        certificates: impl IntoIterator<Item = &'a [u8]>,
        per_generation: usize,
    ) -> Self {
        let dictionary = certificates
            .into_iter()
            .filter(|der| !der.is_empty())
            .take(usize::from(LEAF))
            .map(Held::new)
            .collect();
        Self {
            inner,
            dictionary,
            leaves: Leaves::new(per_generation),
        }
    }

    /// The state with the client's certificates cut out, in the sealed form (`None`, no
    /// ticket, cannot happen: one id per leaf, at most 255 cuts).
    fn cut(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut found: Vec<Found> = Vec::new();
        for (tag, held) in (0u8..).zip(&self.dictionary) {
            let len = held.der.len();
            found.extend(held.find_in(plain).map(|at| Found { at, tag, len }));
        }
        found.extend(framed_certificates(plain).map(|(at, len)| Found { at, tag: LEAF, len }));
        found.sort_unstable();
        // Disjoint, at offsets that fit in two bytes, at most 255.
        let mut cuts: Vec<(u16, Found)> = Vec::with_capacity(found.len());
        let mut end = 0;
        for f in found {
            let Ok(offset) = u16::try_from(f.at) else {
                break;
            };
            if cuts.len() == usize::from(u8::MAX) {
                break;
            }
            if f.at >= end {
                cuts.push((offset, f));
                end = f.at + f.len;
            }
        }
        let ids = self.leaves.ids(
            cuts.iter()
                .filter(|(_, c)| c.tag == LEAF)
                .map(|(_, c)| &plain[c.at..c.at + c.len]),
        );
        let cut_len: usize = cuts.iter().map(|(_, c)| c.len).sum();
        let refs_len = CUT_LEN * cuts.len() + 8 * ids.len();
        let mut sealed = Vec::with_capacity(1 + refs_len + plain.len() - cut_len);
        sealed.push(u8::try_from(cuts.len()).ok()?);
        let mut ids = ids.into_iter();
        for (offset, c) in &cuts {
            sealed.extend_from_slice(&offset.to_be_bytes());
            sealed.push(c.tag);
            if c.tag == LEAF {
                sealed.extend_from_slice(&ids.next()?.to_be_bytes());
            }
        }
        let mut from = 0;
        for (_, c) in &cuts {
            sealed.extend_from_slice(&plain[from..c.at]);
            from = c.at + c.len;
        }
        sealed.extend_from_slice(&plain[from..]);
        Some(sealed)
    }

    /// The state `sealed` was cut from; `None` if a reference does not fit or names a
    /// leaf no longer remembered.
    fn restore(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let (&count, mut rest) = sealed.split_first()?;
        // (offset, dictionary index or `None` for the next leaf)
        let mut cuts = Vec::with_capacity(usize::from(count));
        let mut ids = Vec::new();
        for _ in 0..count {
            let (cut, after) = rest.split_at_checked(CUT_LEN)?;
            rest = after;
            let offset = usize::from(u16::from_be_bytes([cut[0], cut[1]]));
            if cut[2] == LEAF {
                let (id, after) = rest.split_first_chunk::<8>()?;
                rest = after;
                ids.push(u64::from_be_bytes(*id));
                cuts.push((offset, None));
            } else {
                self.dictionary.get(usize::from(cut[2]))?;
                cuts.push((offset, Some(usize::from(cut[2]))));
            }
        }
        let leaves = self.leaves.leaves(&ids)?;
        let mut leaves = leaves.iter();
        let mut certs: Vec<(usize, &[u8])> = Vec::with_capacity(cuts.len());
        for (offset, held) in cuts {
            let der = match held {
                Some(i) => &self.dictionary[i].der,
                None => &leaves.next()?[..],
            };
            certs.push((offset, der));
        }
        let total = rest.len() + certs.iter().map(|(_, c)| c.len()).sum::<usize>();
        let mut plain = Vec::with_capacity(total);
        for (offset, cert) in certs {
            let (before, after) = rest.split_at_checked(offset.checked_sub(plain.len())?)?;
            plain.extend_from_slice(before);
            plain.extend_from_slice(cert);
            rest = after;
        }
        plain.extend_from_slice(rest);
        Some(plain)
    }
}

/// Where `plain` holds a certificate the way rustls encodes one — `u24 length ‖ DER` with
/// the DER a SEQUENCE whose first element is a SEQUENCE, both with two-byte lengths
/// (what every certificate between 256 bytes and 64 KiB looks like) — as (offset, length),
/// ascending and disjoint.
fn framed_certificates(plain: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    const SEQUENCE_LONG: &[u8] = b"\x30\x82";
    let mut next = 0;
    memmem::find_iter(plain, SEQUENCE_LONG).filter_map(move |at| {
        let len_at = at.checked_sub(3)?;
        let len = 4 + usize::from(u16::from_be_bytes([
            *plain.get(at + 2)?,
            *plain.get(at + 3)?,
        ]));
        let framed = at >= next
            && plain.get(at + 4..at + 6) == Some(SEQUENCE_LONG)
            && at + len <= plain.len()
            && plain[len_at..at] == u32::try_from(len).ok()?.to_be_bytes()[1..];
        if !framed {
            return None;
        }
        next = at + len;
        Some((at, len))
    })
}

impl<T> fmt::Debug for CutCertificates<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CutCertificates")
            .field("certificates", &self.dictionary.len())
            .field("leaves", &self.leaves)
            .finish_non_exhaustive()
    }
}

impl<T: ProducesTickets> ProducesTickets for CutCertificates<T> {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.inner.encrypt(&self.cut(plain)?)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        self.restore(&self.inner.decrypt(ticket)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Seals nothing: what the wrapper hands its ticketer is the ticket — or, `Clear(false)`,
    /// refuses everything.
    #[derive(Debug)]
    struct Clear(bool);

    impl ProducesTickets for Clear {
        fn enabled(&self) -> bool {
            true
        }

        fn lifetime(&self) -> u32 {
            7
        }

        fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
            self.0.then(|| plain.to_vec())
        }

        fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
            self.0.then(|| ticket.to_vec())
        }
    }

    /// Distinct, DER-looking certificates of `len` bytes.
    fn cert(tag: u8, len: usize) -> Vec<u8> {
        let mut der = vec![0x30, 0x82, tag];
        der.extend((0..len - 3).map(|i| (i as u8).wrapping_mul(31) ^ tag));
        der
    }

    fn cutter(certs: &[Vec<u8>]) -> CutCertificates<Clear> {
        CutCertificates::new(Clear(true), certs.iter().map(Vec::as_slice))
    }

    fn round_trip(t: &CutCertificates<Clear>, plain: &[u8]) -> Vec<u8> {
        let sealed = t.encrypt(plain).unwrap();
        assert_eq!(t.decrypt(&sealed).unwrap(), plain, "{plain:?}");
        sealed
    }

    #[test]
    fn each_held_certificate_becomes_three_bytes_and_comes_back() {
        let (a, b) = (cert(1, 480), cert(2, 300));
        let t = cutter(&[a.clone(), b.clone()]);
        // A state like rustls': fields, the client's leaf, then its intermediate.
        let leaf = cert(9, 600);
        let state = [&b"\x00\x01sni"[..], &leaf[..], &a[..], &b"\x02tail"[..]].concat();
        let sealed = round_trip(&t, &state);
        assert_eq!(sealed.len(), 1 + 3 + state.len() - a.len());
        let offset = u16::try_from(5 + leaf.len()).unwrap().to_be_bytes();
        assert_eq!(
            sealed[..4],
            [1, offset[0], offset[1], 0],
            "one cut: a, after the leaf"
        );
        assert_eq!(sealed[4..9], *b"\x00\x01sni");
        // Both, several times, adjacent, at the very start and the very end.
        for state in [
            [&a[..], &b[..], &a[..]].concat(),
            [&b[..], &b"x"[..], &a[..], &a[..], &b"y"[..], &b[..]].concat(),
            [&a[..], &leaf[..]].concat(),
            [&leaf[..], &b[..]].concat(),
            a.clone(),
        ] {
            let sealed = round_trip(&t, &state);
            let cut = state.len() + 1 - sealed.len();
            assert!(cut >= a.len().min(b.len()) - 3, "{cut}");
        }
        // Nothing to cut: one byte more than the state.
        for state in [&b""[..], &b"state"[..], &leaf[..], &a[..479], &a[1..]] {
            assert_eq!(round_trip(&t, state).len(), state.len() + 1);
        }
        // Without a dictionary, or one of empty entries, nothing is ever cut.
        for t in [cutter(&[]), cutter(&[Vec::new()])] {
            assert_eq!(round_trip(&t, &a).len(), a.len() + 1);
        }
        assert_eq!(t.lifetime(), 7);
        assert!(t.enabled());
    }

    /// One certificate inside another (or two that overlap in the state): each byte is
    /// cut at most once, and what is restored is the state.
    #[test]
    fn overlapping_certificates_are_cut_once() {
        let outer = cert(3, 400);
        let inner = outer[100..250].to_vec();
        let t = cutter(&[inner.clone(), outer.clone()]);
        let sealed = round_trip(&t, &[&b"ab"[..], &outer[..], &b"cd"[..]].concat());
        assert_eq!(sealed[0], 1, "the outer one: it begins first");
        assert_eq!(sealed.len(), 1 + 3 + 4);
        round_trip(&t, &[&inner[..], &outer[..], &inner[..]].concat());
        // Overlapping occurrences of one certificate: a run of the same byte.
        let run = vec![0x30; 10];
        let t = cutter(&[run[..4].to_vec()]);
        assert_eq!(round_trip(&t, &run)[0], 2);
    }

    /// States longer than 64 KiB: offsets are two bytes, so certificates past them stay.
    #[test]
    fn certificates_past_64_kib_stay_in_the_state() {
        let a = cert(4, 500);
        let t = cutter(std::slice::from_ref(&a));
        let state = [&a[..], &vec![7; 70_000][..], &a[..]].concat();
        let sealed = round_trip(&t, &state);
        assert_eq!(sealed[0], 1);
        assert_eq!(sealed.len(), 1 + 3 + state.len() - a.len());
        // More than 255 occurrences: the first 255 are cut.
        let small = cert(5, 8);
        let t = cutter(std::slice::from_ref(&small));
        let state = small.repeat(300);
        let sealed = round_trip(&t, &state);
        assert_eq!(sealed[0], 255);
    }

    /// A DER-shaped certificate of `len` bytes (SEQUENCE { SEQUENCE … }, two-byte lengths).
    fn der(tag: u8, len: usize) -> Vec<u8> {
        let outer = u16::try_from(len - 4).unwrap().to_be_bytes();
        let inner = u16::try_from(len - 8).unwrap().to_be_bytes();
        let mut der = vec![
            0x30, 0x82, outer[0], outer[1], 0x30, 0x82, inner[0], inner[1],
        ];
        der.extend((8..len).map(|i| (i as u8).wrapping_mul(29) ^ tag));
        der
    }

    /// `der` as rustls encodes a certificate: its length in three bytes first.
    fn framed(der: &[u8]) -> Vec<u8> {
        let len = u32::try_from(der.len()).unwrap().to_be_bytes();
        [&len[1..], der].concat()
    }

    /// A state like rustls': fields, then the chain (`u24` list of `u24`-framed DER).
    fn state_with(chain: &[&[u8]]) -> Vec<u8> {
        let certs: Vec<u8> = chain.iter().flat_map(|c| framed(c)).collect();
        [
            &b"\x03\x04secret and fields"[..],
            &framed(&certs),
            b"\x00\x07vigil/1",
        ]
        .concat()
    }

    #[test]
    fn the_clients_leaf_is_learned_and_named_by_an_id() {
        let issuer = der(1, 525);
        let t = cutter(std::slice::from_ref(&issuer));
        let leaf = der(2, 504);
        let state = state_with(&[&leaf, &issuer]);
        let sealed = round_trip(&t, &state);
        // Two cuts: the leaf (3 + an 8-byte id), the issuer (3).
        assert_eq!(sealed[0], 2);
        assert_eq!(
            sealed.len(),
            1 + 11 + 3 + state.len() - leaf.len() - issuer.len()
        );
        assert_eq!(sealed[3], LEAF);
        // The same leaf sealed again: the same id, the same sealed state.
        assert_eq!(round_trip(&t, &state), sealed);
        // Another client's leaf: another id.
        let other = der(3, 610);
        let theirs = round_trip(&t, &state_with(&[&other, &issuer]));
        assert_ne!(theirs[4..12], sealed[4..12]);
        // Another ticketer does not know the id: nothing.
        assert!(
            cutter(std::slice::from_ref(&issuer))
                .decrypt(&sealed)
                .is_none()
        );
        // An issuer the server does not hold is learned like a leaf.
        let foreign = der(4, 480);
        let sealed = round_trip(&t, &state_with(&[&leaf, &foreign]));
        assert_eq!((sealed[0], sealed[3], sealed[14]), (2, LEAF, LEAF));
        // Neither leaf nor issuer: the state as it was (the count byte first).
        for state in [
            state_with(&[]),
            [&b"x"[..], &leaf].concat(),      // unframed
            [&[0, 1, 0][..], &leaf].concat(), // framed with another length
            framed(&leaf)[..400].to_vec(),    // cut short
            framed(&[&[0x30, 0x81, 0xc4, 0x30, 0x81][..], &[9; 195]].concat()), // one-byte lengths
        ] {
            assert_eq!(round_trip(&t, &state).len(), state.len() + 1, "{state:?}");
        }
    }

    #[test]
    fn a_leaf_forgotten_opens_to_none_and_its_client_starts_over() {
        let t = CutCertificates::with_generations(Clear(true), [], 1);
        let (a, b, c) = (der(1, 300), der(2, 300), der(3, 300));
        let ticket_a = t.encrypt(&state_with(&[&a])).unwrap();
        let ticket_b = t.encrypt(&state_with(&[&b])).unwrap();
        assert_eq!(
            t.decrypt(&ticket_a).unwrap(),
            state_with(&[&a]),
            "previous generation"
        );
        t.encrypt(&state_with(&[&c])).unwrap();
        assert!(t.decrypt(&ticket_a).is_none(), "two generations on");
        assert_eq!(t.decrypt(&ticket_b).unwrap(), state_with(&[&b]));
        // A full handshake later, a's next ticket opens again.
        let again = t.encrypt(&state_with(&[&a])).unwrap();
        assert_eq!(t.decrypt(&again).unwrap(), state_with(&[&a]));
        assert!(
            t.decrypt(&ticket_a).is_none(),
            "a new id: the old one stays unknown"
        );
        // A leaf reference cut short, or naming an id never given: nothing.
        let mut short = vec![1, 0, 0, LEAF, 0, 0, 0];
        assert!(t.decrypt(&short).is_none());
        short.extend_from_slice(&[0x7f; 5]);
        assert!(t.decrypt(&short).is_none());
        assert!(format!("{t:?}").contains("leaves"));
    }

    /// Random states made of random bytes and the dictionary's certificates.
    #[test]
    fn random_states_round_trip() {
        let dict = [cert(6, 40), cert(7, 64), cert(8, 5)];
        let t = cutter(&dict);
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2_000 {
            let mut state = Vec::new();
            for _ in 0..next() % 12 {
                match next() % 4 {
                    0 => state.extend_from_slice(&dict[(next() % 3) as usize]),
                    1 => state.extend_from_slice(&dict[(next() % 3) as usize][1..]),
                    _ => state.extend((0..next() % 50).map(|_| next() as u8)),
                }
            }
            round_trip(&t, &state);
        }
    }

    /// Sealed states whose references do not fit open to `None`: never to other bytes.
    #[test]
    fn references_that_do_not_fit_open_to_none() {
        let a = cert(1, 50);
        let t = cutter(std::slice::from_ref(&a));
        let bad: [&[u8]; 6] = [
            b"",                             // not even a count
            &[1],                            // a cut announced, none there
            &[1, 0, 0],                      // a cut cut short
            &[1, 0, 0, 1],                   // no entry 1
            &[1, 0, 5, 0, 1],                // an offset past the rest
            &[2, 0, 2, 0, 0, 1, 0, 0, 0, 0], // offsets going back
        ];
        for bad in bad {
            assert!(t.decrypt(bad).is_none(), "{bad:?}");
        }
        // The second cut begins inside the first certificate restored.
        let mut overlapping = vec![2, 0, 0, 0, 0, 10, 0];
        overlapping.extend_from_slice(b"rest");
        assert!(t.decrypt(&overlapping).is_none());
        // Whereas the same references, well placed, restore.
        let mut fine = vec![2, 0, 0, 0, 0, 50, 0];
        fine.extend_from_slice(b"rest");
        assert_eq!(t.decrypt(&fine).unwrap(), [&a[..], &a, b"rest"].concat());
        // And an inner ticketer's refusal stays a refusal.
        let t = CutCertificates::new(Clear(false), [a.as_slice()]);
        assert!(t.encrypt(&a).is_none());
        assert!(t.decrypt(&[0]).is_none());
    }
}
