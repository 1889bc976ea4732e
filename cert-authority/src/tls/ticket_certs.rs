//! The certificates a mesh server holds itself, cut out of the session state it seals into
//! tickets and put back when a ticket is opened.
//!
//! A ticket carries the resumption state rustls hands it, among it the client's whole
//! certificate chain (a resumed connection's identity is read from it). In a mesh the
//! client's intermediates are the server's own — one issuer signed both SVIDs — so every
//! ticket repeated a certificate the server already has. A resumed handshake pays for
//! each of its bytes several times: the ticket rides in the ClientHello, which the server
//! hashes twice (the PSK binder, then the transcript), opens, and seals again into the
//! next ticket. Cut out, such a certificate is three bytes of the sealed state.
//!
//! What is sealed: `count (1) ‖ count × (offset (2, big-endian) ‖ index (1)) ‖ rest` —
//! `rest` is the state with `count` certificates cut out, each the dictionary's entry
//! `index`, which began at `offset` of the original state (offsets ascending, cuts
//! disjoint). The dictionary is fixed for the ticketer's life, which is its config's: a
//! ticket is only ever opened against the dictionary it was sealed with. Tickets are
//! authenticated before this runs, so a reference that does not fit is a bug, not an
//! attack; it still opens to `None` (a full handshake), never to other bytes.

use std::fmt;

use memchr::memmem::Finder;
use rustls::server::ProducesTickets;

/// A ticketer that seals `inner`'s tickets with the dictionary's certificates cut out.
pub(super) struct CutCertificates<T> {
    inner: T,
    /// The certificates that are cut out; an index is one byte.
    dictionary: Vec<Held>,
}

/// A certificate of the dictionary.
struct Held {
    der: Box<[u8]>,
    /// Finds the certificate's last bytes (its signature's: as good as random), where a
    /// whole certificate ending there is then compared — a search for the whole
    /// certificate cost 8 times as much.
    tail: Finder<'static>,
}

/// Header bytes per cut: offset (2) and index (1).
const CUT_LEN: usize = 3;

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
    /// are ignored) cut out.
    pub(super) fn new<'a>(inner: T, certificates: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let dictionary = certificates
            .into_iter()
            .filter(|der| !der.is_empty())
            .take(usize::from(u8::MAX))
            .map(Held::new)
            .collect();
        Self { inner, dictionary }
    }

    /// The state with every dictionary certificate it holds cut out, in the sealed form.
    fn cut(&self, plain: &[u8]) -> Vec<u8> {
        // (offset, index), then sorted by offset; overlaps dropped.
        let mut found: Vec<(usize, u8)> = Vec::new();
        for (index, held) in (0u8..).zip(&self.dictionary) {
            found.extend(held.find_in(plain).map(|at| (at, index)));
        }
        found.sort_unstable();
        let mut cuts: Vec<(u16, u8)> = Vec::with_capacity(found.len());
        let mut end = 0;
        for (at, index) in found {
            let len = self.dictionary[usize::from(index)].der.len();
            let Ok(offset) = u16::try_from(at) else { break };
            if at < end || cuts.len() == usize::from(u8::MAX) {
                continue;
            }
            cuts.push((offset, index));
            end = at + len;
        }
        let cut_len: usize = cuts
            .iter()
            .map(|&(_, i)| self.dictionary[usize::from(i)].der.len())
            .sum();
        let mut sealed = Vec::with_capacity(1 + CUT_LEN * cuts.len() + plain.len() - cut_len);
        sealed.push(u8::try_from(cuts.len()).unwrap_or(u8::MAX)); // at most 255, above
        for &(offset, index) in &cuts {
            sealed.extend_from_slice(&offset.to_be_bytes());
            sealed.push(index);
        }
        let mut from = 0;
        for &(offset, index) in &cuts {
            let at = usize::from(offset);
            sealed.extend_from_slice(&plain[from..at]);
            from = at + self.dictionary[usize::from(index)].der.len();
        }
        sealed.extend_from_slice(&plain[from..]);
        sealed
    }

    /// The state `sealed` was cut from; `None` if a reference does not fit.
    fn restore(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        let (&count, rest) = sealed.split_first()?;
        let (cuts, mut rest) = rest.split_at_checked(CUT_LEN * usize::from(count))?;
        let mut certs = Vec::with_capacity(usize::from(count));
        let mut total = rest.len();
        for cut in cuts.chunks_exact(CUT_LEN) {
            let offset = usize::from(u16::from_be_bytes([cut[0], cut[1]]));
            let cert = &self.dictionary.get(usize::from(cut[2]))?.der;
            total += cert.len();
            certs.push((offset, cert));
        }
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

impl<T> fmt::Debug for CutCertificates<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CutCertificates")
            .field("certificates", &self.dictionary.len())
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
        self.inner.encrypt(&self.cut(plain))
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
