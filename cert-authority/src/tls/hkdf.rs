//! The mesh's TLS 1.3 cipher suites: aws-lc-rs' own, with the key schedule's HKDF run as
//! rustls' [`HkdfUsingHmac`] over aws-lc-rs HMAC keys.
//!
//! Why: aws-lc's `HKDF_expand` keys a fresh HMAC on every call — two SHA-256 (or
//! SHA-384) compressions for the pads before the two of the expansion itself — and the
//! TLS 1.3 key schedule expands most of its secrets two to four times (a traffic secret
//! into its key, its IV and its finished key; the master secret into four). Here each
//! secret is one [`aws_lc_rs::hmac::Key`], whose pads are computed once, and each
//! expansion copies it: half the hashing per expansion. The output is HKDF's (RFC 5869),
//! byte for byte — peers cannot tell, and the tests compare it with aws-lc's `HKDF`.
//! HMAC and SHA-2 stay aws-lc's; only HKDF's loop (one block per expansion here) is
//! rustls' code, as in rustls' own *ring* provider.

use std::sync::LazyLock;

use aws_lc_rs::hmac;
use rustls::{
    CipherSuiteCommon, SupportedCipherSuite, Tls13CipherSuite,
    crypto::{
        aws_lc_rs::cipher_suite,
        hmac::{Hmac, Key, Tag},
        tls13::HkdfUsingHmac,
    },
};

/// HMAC over aws-lc-rs, for [`HkdfUsingHmac`].
struct AwsLcHmac(hmac::Algorithm);

/// A key whose inner and outer pads aws-lc computed once; each signature copies them.
struct AwsLcHmacKey(hmac::Key);

impl Hmac for AwsLcHmac {
    fn with_key(&self, key: &[u8]) -> Box<dyn Key> {
        Box::new(AwsLcHmacKey(hmac::Key::new(self.0, key)))
    }

    fn hash_output_len(&self) -> usize {
        self.0.digest_algorithm().output_len()
    }
}

impl Key for AwsLcHmacKey {
    fn sign_concat(&self, first: &[u8], middle: &[&[u8]], last: &[u8]) -> Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(first);
        for part in middle {
            ctx.update(part);
        }
        ctx.update(last);
        Tag::new(ctx.sign().as_ref())
    }

    fn tag_len(&self) -> usize {
        self.0.algorithm().digest_algorithm().output_len()
    }
}

static HMAC_SHA256: AwsLcHmac = AwsLcHmac(hmac::HMAC_SHA256);
static HMAC_SHA384: AwsLcHmac = AwsLcHmac(hmac::HMAC_SHA384);
static HKDF_SHA256: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA256);
static HKDF_SHA384: HkdfUsingHmac<'static> = HkdfUsingHmac(&HMAC_SHA384);

/// `base` (an aws-lc-rs TLS 1.3 suite) with `hkdf` for its key schedule; all else its own.
fn with_hkdf(
    base: SupportedCipherSuite,
    hkdf: &'static HkdfUsingHmac<'static>,
) -> Tls13CipherSuite {
    let Some(b) = base.tls13() else {
        unreachable!("the mesh's suites are TLS 1.3 suites");
    };
    Tls13CipherSuite {
        common: CipherSuiteCommon {
            suite: b.common.suite,
            hash_provider: b.common.hash_provider,
            confidentiality_limit: b.common.confidentiality_limit,
        },
        hkdf_provider: hkdf,
        aead_alg: b.aead_alg,
        quic: b.quic,
    }
}

static AES_256_GCM_SHA384: LazyLock<Tls13CipherSuite> =
    LazyLock::new(|| with_hkdf(cipher_suite::TLS13_AES_256_GCM_SHA384, &HKDF_SHA384));
static AES_128_GCM_SHA256: LazyLock<Tls13CipherSuite> =
    LazyLock::new(|| with_hkdf(cipher_suite::TLS13_AES_128_GCM_SHA256, &HKDF_SHA256));
static CHACHA20_POLY1305_SHA256: LazyLock<Tls13CipherSuite> =
    LazyLock::new(|| with_hkdf(cipher_suite::TLS13_CHACHA20_POLY1305_SHA256, &HKDF_SHA256));

/// `TLS_AES_256_GCM_SHA384`, `TLS_AES_128_GCM_SHA256`, `TLS_CHACHA20_POLY1305_SHA256`.
pub(super) fn suites() -> [SupportedCipherSuite; 3] {
    [
        SupportedCipherSuite::Tls13(&AES_256_GCM_SHA384),
        SupportedCipherSuite::Tls13(&AES_128_GCM_SHA256),
        SupportedCipherSuite::Tls13(&CHACHA20_POLY1305_SHA256),
    ]
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::hkdf;
    use rustls::crypto::tls13::{Hkdf, OkmBlock};

    use super::*;

    struct Len(usize);

    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }

    /// aws-lc's HKDF (extract, then expand to `len`), the reference.
    fn reference(
        alg: hkdf::Algorithm,
        salt: &[u8],
        ikm: &[u8],
        info: &[&[u8]],
        len: usize,
    ) -> Vec<u8> {
        let mut out = vec![0; len];
        hkdf::Salt::new(alg, salt)
            .extract(ikm)
            .expand(info, Len(len))
            .unwrap()
            .fill(&mut out)
            .unwrap();
        out
    }

    /// RFC 5869's test case 1 (SHA-256), by value: the construction itself is HKDF.
    #[test]
    fn rfc5869_test_case_1() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let mut okm = [0u8; 42];
        HKDF_SHA256
            .extract_from_secret(Some(&salt), &ikm)
            .expand_slice(&[&info], &mut okm)
            .unwrap();
        let want =
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865";
        let got: String = okm.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, want);
    }

    /// Every way the key schedule uses it gives aws-lc's HKDF output, for both hashes,
    /// every output length a schedule asks for and more (several blocks, a split info),
    /// and keys longer than a hash block (hashed first, as HMAC says).
    #[test]
    fn agrees_with_aws_lc_hkdf() {
        let cases: [(&HkdfUsingHmac<'static>, hkdf::Algorithm, usize); 2] = [
            (&HKDF_SHA256, hkdf::HKDF_SHA256, 32),
            (&HKDF_SHA384, hkdf::HKDF_SHA384, 48),
        ];
        for (ours, alg, hash_len) in cases {
            for (salt, ikm) in [
                (vec![0u8; hash_len], vec![0u8; hash_len]),
                (b"derived".repeat(3), vec![0x42; hash_len]),
                (vec![7; 200], vec![9; 300]),
            ] {
                let expander = ours.extract_from_secret(Some(&salt), &ikm);
                for len in [12, 16, 32, hash_len, 100, 255] {
                    let info: [&[u8]; 3] = [b"\x00\x10", b"tls13 key", b"\x00"];
                    let mut got = vec![0; len];
                    expander.expand_slice(&info, &mut got).unwrap();
                    assert_eq!(got, reference(alg, &salt, &ikm, &info, len), "len {len}");
                }
                let block = expander.expand_block(&[b"tls13 c hs traffic"]);
                let want = reference(alg, &salt, &ikm, &[b"tls13 c hs traffic"], hash_len);
                assert_eq!(block.as_ref(), want.as_slice());
                // A secret handed on (`expander_for_okm`) expands as its own PRK.
                let next = ours.expander_for_okm(&OkmBlock::new(&want));
                let mut iv = [0u8; 12];
                next.expand_slice(&[b"tls13 iv"], &mut iv).unwrap();
                let prk = hkdf::Prk::new_less_safe(alg, &want);
                let mut want_iv = [0u8; 12];
                prk.expand(&[b"tls13 iv"], Len(12))
                    .unwrap()
                    .fill(&mut want_iv)
                    .unwrap();
                assert_eq!(iv, want_iv);
            }
            // No salt: a hash length of zeros (RFC 5869 §2.2).
            let mut got = [0u8; 32];
            ours.extract_from_zero_ikm(None)
                .expand_slice(&[b"x"], &mut got)
                .unwrap();
            let zeros = vec![0u8; hash_len];
            assert_eq!(got.to_vec(), reference(alg, &zeros, &zeros, &[b"x"], 32));
        }
    }

    /// HMAC signatures (the Finished messages) are aws-lc's HMAC, key after key.
    #[test]
    fn hmac_sign_is_hmac() {
        let key = OkmBlock::new(&[5u8; 32]);
        let tag = HKDF_SHA256.hmac_sign(&key, b"transcript hash");
        let want = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &[5u8; 32]),
            b"transcript hash",
        );
        assert_eq!(tag.as_ref(), want.as_ref());
        let other = HKDF_SHA256.hmac_sign(&OkmBlock::new(&[6u8; 32]), b"transcript hash");
        assert_ne!(tag.as_ref(), other.as_ref());
    }

    /// Expanding past 255 blocks is refused, not wrapped.
    #[test]
    fn refuses_an_output_longer_than_hkdf_allows() {
        let expander = HKDF_SHA256.extract_from_secret(None, b"secret");
        let mut too_long = vec![0u8; 255 * 32 + 1];
        assert!(expander.expand_slice(&[b"x"], &mut too_long).is_err());
    }

    /// The suites keep aws-lc-rs' names, hashes and AEADs: only the HKDF differs.
    #[test]
    fn suites_are_aws_lc_rs_suites_but_for_hkdf() {
        let base = [
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ];
        let hkdfs: [&HkdfUsingHmac<'static>; 3] = [&HKDF_SHA384, &HKDF_SHA256, &HKDF_SHA256];
        for ((ours, base), hkdf) in suites().into_iter().zip(base).zip(hkdfs) {
            let (o, b) = (ours.tls13().unwrap(), base.tls13().unwrap());
            assert!(
                std::ptr::addr_eq(o.hkdf_provider, hkdf),
                "{:?} expands with keys kept per secret",
                o.common.suite
            );
            assert_eq!(o.common.suite, b.common.suite);
            assert_eq!(
                o.common.hash_provider.algorithm(),
                b.common.hash_provider.algorithm()
            );
            assert_eq!(
                o.common.confidentiality_limit,
                b.common.confidentiality_limit
            );
            assert_eq!(
                o.aead_alg.key_len(),
                b.aead_alg.key_len(),
                "{:?}",
                o.common.suite
            );
            assert_eq!(
                o.hkdf_provider.extract_from_zero_ikm(None).hash_len(),
                o.common.hash_provider.output_len()
            );
        }
    }
}
