//! The TLS parameters a mesh may choose between: key-exchange groups and cipher suites,
//! their names as operators write them, and the crypto provider built from a choice.
//!
//! Both lists are TLS 1.3 only and ordered by preference. A rustls server follows the
//! client's order among what both support, so the connecting side's preference decides
//! and two peers interoperate as long as they share one group and one suite.
//!
//! The default suite order puts AES-256-GCM first to match the default hybrid
//! post-quantum key exchange (CNSA 2.0 asks for both). With classical X25519 or P-256
//! the key exchange is the 128-bit link, and AES-128-GCM (whose key schedule runs on
//! SHA-256, about half the cost of SHA-384 per HKDF step) gives up nothing: a mesh that
//! pins `x25519` may list `TLS_AES_128_GCM_SHA256` first.

use std::sync::{Arc, LazyLock};

use rustls::{
    SupportedCipherSuite,
    crypto::{CryptoProvider, SupportedKxGroup, aws_lc_rs},
};

/// Key-exchange groups, most preferred first.
pub static KX_GROUPS: &[&dyn SupportedKxGroup] = &[
    aws_lc_rs::kx_group::X25519MLKEM768,
    aws_lc_rs::kx_group::X25519,
    aws_lc_rs::kx_group::SECP256R1,
];

/// Names accepted by [`kx_group`], in [`KX_GROUPS`] order.
pub const KX_GROUP_NAMES: &[&str] = &["x25519mlkem768", "x25519", "p256"];

/// TLS 1.3 cipher suites, most preferred first: aws-lc-rs' AES-256-GCM-SHA384,
/// AES-128-GCM-SHA256 and ChaCha20-Poly1305-SHA256, with the key schedule's HKDF keyed
/// once per secret ([`super::hkdf`]).
pub static CIPHER_SUITES: LazyLock<[SupportedCipherSuite; 3]> = LazyLock::new(super::hkdf::suites);

/// The IANA names of [`CIPHER_SUITES`], in that order: what [`cipher_suite_name`] returns.
pub const CIPHER_SUITE_NAMES: &[&str] = &[
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The crypto provider for all mesh TLS: aws-lc-rs, [`CIPHER_SUITES`], [`KX_GROUPS`].
pub fn provider() -> Arc<CryptoProvider> {
    provider_with(KX_GROUPS, &*CIPHER_SUITES)
}

/// The canonical name (from [`KX_GROUP_NAMES`]) of the group called `name` (case
/// insensitive; `secp256r1` is accepted for `p256`), if it is one.
pub fn kx_group_name(name: &str) -> Option<&'static str> {
    let name = name.trim().to_ascii_lowercase();
    let name = if name == "secp256r1" { "p256" } else { &name };
    KX_GROUP_NAMES.iter().copied().find(|n| *n == name)
}

/// The key-exchange group called `name` (any spelling [`kx_group_name`] accepts).
pub fn kx_group(name: &str) -> Option<&'static dyn SupportedKxGroup> {
    let name = kx_group_name(name)?;
    let at = KX_GROUP_NAMES.iter().position(|n| *n == name)?;
    Some(KX_GROUPS[at])
}

/// The IANA name (from [`CIPHER_SUITE_NAMES`]) of the suite called `name`: case
/// insensitive, and rustls' spelling (`TLS13_AES_128_GCM_SHA256`) is accepted too.
/// Only TLS 1.3 suites exist here; TLS 1.2 names are unknown.
pub fn cipher_suite_name(name: &str) -> Option<&'static str> {
    let name = name.trim().to_ascii_uppercase();
    let name = match name.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => name,
    };
    CIPHER_SUITE_NAMES.iter().copied().find(|n| *n == name)
}

/// The cipher suite called `name` (any spelling [`cipher_suite_name`] accepts).
pub fn cipher_suite(name: &str) -> Option<SupportedCipherSuite> {
    let name = cipher_suite_name(name)?;
    let at = CIPHER_SUITE_NAMES.iter().position(|n| *n == name)?;
    Some(CIPHER_SUITES[at])
}

/// A kind of TLS parameter that settings name: the one place that knows the names of
/// each kind, how to spell them and what to say about a wrong one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsParam {
    /// A key-exchange group ([`KX_GROUP_NAMES`]).
    KxGroup,
    /// A TLS 1.3 cipher suite ([`CIPHER_SUITE_NAMES`]).
    CipherSuite,
}

impl TlsParam {
    /// What one of these is, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Self::KxGroup => "key-exchange group",
            Self::CipherSuite => "TLS 1.3 cipher suite",
        }
    }

    /// Every canonical name, most preferred first.
    pub fn known(self) -> &'static [&'static str] {
        match self {
            Self::KxGroup => KX_GROUP_NAMES,
            Self::CipherSuite => CIPHER_SUITE_NAMES,
        }
    }

    /// The canonical name of `name` ([`kx_group_name`], [`cipher_suite_name`]).
    pub fn canonical(self, name: &str) -> Option<&'static str> {
        match self {
            Self::KxGroup => kx_group_name(name),
            Self::CipherSuite => cipher_suite_name(name),
        }
    }

    /// A list the way a setting gives it, by canonical names, in order and without
    /// duplicates; the first name not known is the error.
    pub fn canonical_list<'a>(
        self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<&'static str>, UnknownTlsName> {
        let mut out = Vec::new();
        for name in names {
            let c = self.canonical(name).ok_or_else(|| UnknownTlsName {
                param: self,
                name: name.to_owned(),
            })?;
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }
}

/// A setting named a group or suite that does not exist here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {} {name:?} (known: {})", param.what(), param.known().join(", "))]
pub struct UnknownTlsName {
    /// What kind of name it was meant to be.
    pub param: TlsParam,
    /// The name as given.
    pub name: String,
}

/// The name (from [`CIPHER_SUITE_NAMES`]) of a negotiated suite; no allocation, for
/// per-connection labels.
pub fn name_of_suite(suite: rustls::CipherSuite) -> Option<&'static str> {
    let at = CIPHER_SUITES.iter().position(|s| s.suite() == suite)?;
    Some(CIPHER_SUITE_NAMES[at])
}

/// The name (from [`KX_GROUP_NAMES`]) of a negotiated key-exchange group.
pub fn name_of_group(group: rustls::NamedGroup) -> Option<&'static str> {
    let at = KX_GROUPS.iter().position(|g| g.name() == group)?;
    Some(KX_GROUP_NAMES[at])
}

/// Like [`provider`] but restricted to the given key-exchange groups (a deployment that
/// must use FIPS groups only, or a benchmark that pins one), with every suite.
pub fn provider_with_groups(groups: &[&'static dyn SupportedKxGroup]) -> Arc<CryptoProvider> {
    provider_with(groups, &*CIPHER_SUITES)
}

/// A provider with exactly these groups and suites, in this order. An empty list makes
/// every config built from it fail (rustls refuses a provider it cannot negotiate with).
pub fn provider_with(
    groups: &[&'static dyn SupportedKxGroup],
    suites: &[SupportedCipherSuite],
) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        cipher_suites: suites.to_vec(),
        kx_groups: groups.to_vec(),
        ..aws_lc_rs::default_provider()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lists_agree() {
        assert_eq!(KX_GROUP_NAMES.len(), KX_GROUPS.len());
        for (name, group) in KX_GROUP_NAMES.iter().zip(KX_GROUPS) {
            assert_eq!(kx_group(name).map(|g| g.name()), Some(group.name()));
            assert_eq!(name_of_group(group.name()), Some(*name));
        }
        assert_eq!(CIPHER_SUITE_NAMES.len(), CIPHER_SUITES.len());
        for (name, suite) in CIPHER_SUITE_NAMES.iter().zip(CIPHER_SUITES.iter()) {
            // rustls' Debug spelling of the suite is the IANA name with TLS13_.
            let rustls_name = format!("{:?}", suite.suite());
            assert_eq!(cipher_suite_name(&rustls_name), Some(*name));
            assert_eq!(cipher_suite(name).map(|s| s.suite()), Some(suite.suite()));
            assert_eq!(name_of_suite(suite.suite()), Some(*name));
            assert_eq!(suite.version(), &rustls::version::TLS13);
        }
    }

    #[test]
    fn spellings() {
        assert_eq!(kx_group_name(" SECP256R1 "), Some("p256"));
        assert_eq!(kx_group_name("X25519"), Some("x25519"));
        assert_eq!(kx_group_name("x448"), None);
        assert_eq!(name_of_group(rustls::NamedGroup::X448), None);
        assert_eq!(
            name_of_suite(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
            None
        );
        assert_eq!(
            cipher_suite_name("tls_aes_128_gcm_sha256"),
            Some("TLS_AES_128_GCM_SHA256")
        );
        assert_eq!(
            cipher_suite_name("TLS13_CHACHA20_POLY1305_SHA256"),
            Some("TLS_CHACHA20_POLY1305_SHA256")
        );
        for unknown in [
            "",
            "AES128",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            "TLS_AES_128_CCM_SHA256",
            "TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384",
        ] {
            assert_eq!(cipher_suite_name(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn canonical_lists() {
        assert_eq!(
            TlsParam::KxGroup.canonical_list(["X25519", "secp256r1", "x25519"]),
            Ok(vec!["x25519", "p256"])
        );
        let err = TlsParam::CipherSuite
            .canonical_list(["tls13_aes_128_gcm_sha256", "x", "y"])
            .unwrap_err();
        assert_eq!(err.name, "x");
        assert_eq!(
            err.to_string(),
            "unknown TLS 1.3 cipher suite \"x\" (known: TLS_AES_256_GCM_SHA384, \
             TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256)"
        );
        assert_eq!(TlsParam::CipherSuite.canonical_list([]), Ok(vec![]));
    }

    #[test]
    fn provider_keeps_the_order_given() {
        let p = provider_with(
            &[aws_lc_rs::kx_group::X25519],
            &[
                aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
                aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
            ],
        );
        let suites: Vec<_> = p.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            [
                rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
                rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
            ]
        );
        assert_eq!(provider().cipher_suites.len(), 3);
        assert_eq!(provider().kx_groups.len(), 3);
    }
}
