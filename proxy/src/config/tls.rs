//! The `--tls-*` settings: validating the lists by name, and the crypto provider they
//! choose (names and providers themselves live in `vigil_cert_authority::tls`).

use super::Config;

impl Config {
    /// The crypto provider for this proxy's mesh TLS: the configured key-exchange groups
    /// and cipher suites.
    pub fn tls_provider(&self) -> std::sync::Arc<rustls::crypto::CryptoProvider> {
        use vigil_cert_authority::tls;
        let groups: Vec<_> = self
            .tls_groups
            .iter()
            .filter_map(|g| tls::kx_group(g))
            .collect();
        let suites: Vec<_> = (self.tls_cipher_suites.iter())
            .filter_map(|s| tls::cipher_suite(s))
            .collect();
        tls::provider_with(&groups, &suites)
    }
}

/// A `--tls-*` list by canonical names; what is wrong goes to `errors`.
pub(super) fn tls_names(
    flag: &str,
    param: vigil_cert_authority::tls::TlsParam,
    names: &[String],
    errors: &mut Vec<String>,
) -> Vec<String> {
    match param.canonical_list(names.iter().map(String::as_str)) {
        Ok(list) if list.is_empty() => {
            errors.push(format!("{flag}: at least one {} is needed", param.what()));
            Vec::new()
        }
        Ok(list) => list.into_iter().map(String::from).collect(),
        Err(e) => {
            errors.push(format!("{flag}: {e}"));
            Vec::new()
        }
    }
}
