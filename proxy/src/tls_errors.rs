//! Bounded reason labels for failed TLS handshakes (metrics, logs).

use rustls::{CertificateError, Error, PeerIncompatible, PeerMisbehaved};
use vigil_cert_authority::verify::PeerError;

/// A fixed label for why a handshake failed.
pub fn reason(e: &std::io::Error) -> &'static str {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "eof",
            std::io::ErrorKind::TimedOut => "timeout",
            _ => "io",
        };
    };
    rustls_reason(err)
}

/// A fixed label for why rustls (or a verifier) refused a peer.
pub fn rustls_reason(err: &Error) -> &'static str {
    match err {
        Error::NoCertificatesPresented => "no_client_cert",
        Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => "unknown_issuer",
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired",
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not_yet_valid"
            }
            CertificateError::Revoked => "revoked",
            CertificateError::Other(o) => match o.0.downcast_ref::<PeerError>() {
                Some(PeerError::UnexpectedIdentity { .. }) => "unexpected_identity",
                Some(PeerError::ForeignTrustDomain { .. }) => "foreign_trust_domain",
                Some(PeerError::Svid(_)) => "invalid_svid",
                None => "invalid_certificate",
            },
            _ => "invalid_certificate",
        },
        Error::AlertReceived(_) => "peer_alert",
        Error::PeerIncompatible(
            PeerIncompatible::NoCipherSuitesInCommon | PeerIncompatible::Tls13RequiredForQuic,
        ) => "incompatible",
        Error::PeerIncompatible(_) => "incompatible",
        Error::NoApplicationProtocol => "no_alpn",
        Error::PeerMisbehaved(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme) => {
            "misbehaved"
        }
        Error::PeerMisbehaved(_) => "misbehaved",
        _ => "other",
    }
}
