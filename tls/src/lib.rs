//! TLS by pinning instead of certificate authorities: a connection is trusted when the server
//! presents exactly the certificate we were given. lnd's self-signed certificate has CA:TRUE,
//! which webpki refuses as a server certificate, so pinning is the only sound way to talk to it.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("no CERTIFICATE block in PEM")]
    NoCertificate,
    #[error("bad base64 in PEM: {0}")]
    Base64(#[from] base64::DecodeError),
}

/// DER of the first certificate in a PEM file.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, PemError> {
    use base64::Engine;
    let start = pem
        .find("-----BEGIN CERTIFICATE-----")
        .ok_or(PemError::NoCertificate)?
        + "-----BEGIN CERTIFICATE-----".len();
    let end = pem[start..]
        .find("-----END CERTIFICATE-----")
        .ok_or(PemError::NoCertificate)?
        + start;
    let b64: String = pem[start..end].split_whitespace().collect();
    Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
}

/// The handshake error of a pinned connection whose server presented another certificate.
pub const PIN_MISMATCH: &str = "server certificate does not match the pinned one";

/// Whether `err` or any error it wraps is a pinned-certificate mismatch. HTTP clients bury the
/// TLS error several layers deep (and `io::Error::source` skips its own payload), so this walks
/// the chain by message: a mismatch must not read like "node down".
pub fn is_pin_mismatch(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.to_string().contains(PIN_MISMATCH) {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if is_pin_mismatch(inner) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// DER of every certificate in a PEM bundle.
pub fn all_certs_der(pem: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let tail = &rest[start..];
        let Ok(der) = first_cert_der(tail) else {
            break;
        };
        out.push(der);
        match tail.find("-----END CERTIFICATE-----") {
            Some(end) => rest = &tail[end + "-----END CERTIFICATE-----".len()..],
            None => break,
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    #[error("no CA bundle found (set SSL_CERT_FILE); tried {0}")]
    NoBundle(String),
    #[error("CA bundle {0} holds no usable certificate")]
    Empty(String),
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

/// Common places of the system's CA bundle (Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine).
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// A client configuration that validates the server's chain and name against the system's CA
/// bundle (`SSL_CERT_FILE` first): for nodes with CA-signed certificates, which have nothing
/// to pin.
pub fn system_roots_client_config() -> Result<rustls::ClientConfig, RootsError> {
    let candidates: Vec<String> = std::env::var("SSL_CERT_FILE")
        .ok()
        .into_iter()
        .chain(CA_BUNDLES.iter().map(|s| s.to_string()))
        .collect();
    let (path, pem) = candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|t| (p.clone(), t)))
        .ok_or_else(|| RootsError::NoBundle(candidates.join(", ")))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) =
        roots.add_parsable_certificates(all_certs_der(&pem).into_iter().map(CertificateDer::from));
    if added == 0 {
        return Err(RootsError::Empty(path));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// What a pinned connection accepts.
#[derive(Debug)]
enum Pin {
    /// Exactly this certificate (DER).
    Der(Vec<u8>),
    /// Any certificate whose DER has this SHA-256.
    Sha256([u8; 32]),
}

#[derive(Debug)]
struct Pinned {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let matches = match &self.pin {
            Pin::Der(der) => end_entity.as_ref() == der.as_slice(),
            Pin::Sha256(want) => {
                ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref()).as_ref() == want
            }
        };
        if matches {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(PIN_MISMATCH.into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn config(pin: Pin) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider }))
            .with_no_client_auth(),
    )
}

/// A client configuration that accepts exactly the certificate `der`.
pub fn pinned_client_config(der: Vec<u8>) -> Result<rustls::ClientConfig, rustls::Error> {
    config(Pin::Der(der))
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a certificate fingerprint is 64 hex characters (SHA-256 of the DER certificate)")]
pub struct BadFingerprint;

/// Parses a fingerprint: 64 hex characters, colons allowed, any case.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], BadFingerprint> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(BadFingerprint);
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| BadFingerprint)?;
    }
    Ok(out)
}

/// A client configuration that accepts the certificate whose DER has this SHA-256: how the
/// original StaticWire client trusts a provider (its `TrustedFingerprint`).
pub fn fingerprint_client_config(sha256: [u8; 32]) -> Result<rustls::ClientConfig, rustls::Error> {
    config(Pin::Sha256(sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        let f = "ab".repeat(32);
        assert_eq!(parse_fingerprint(&f).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint(&f.to_uppercase()).unwrap(), [0xab; 32]);
        let colons: Vec<String> = (0..32).map(|_| "AB".to_string()).collect();
        assert_eq!(parse_fingerprint(&colons.join(":")).unwrap(), [0xab; 32]);
        assert_eq!(parse_fingerprint("abc"), Err(BadFingerprint));
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), Err(BadFingerprint));
        assert_eq!(parse_fingerprint(&"é".repeat(32)), Err(BadFingerprint));
    }

    #[test]
    fn pin_mismatch_is_recognised_through_io_and_source_chains() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let tls = rustls::Error::General(PIN_MISMATCH.into());
        let wrapped = Outer(std::io::Error::other(tls));
        assert!(is_pin_mismatch(&wrapped));
        let other = Outer(std::io::Error::other("connection refused"));
        assert!(!is_pin_mismatch(&other));
    }

    #[test]
    fn pem_bundles() {
        let pem = "-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\nx\n\
                   -----BEGIN CERTIFICATE-----\nBAUG\n-----END CERTIFICATE-----\n";
        assert_eq!(all_certs_der(pem), vec![vec![1, 2, 3], vec![4, 5, 6]]);
        assert!(all_certs_der("none").is_empty());
    }

    #[test]
    fn pem_first_certificate() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        assert_eq!(first_cert_der(pem).unwrap(), [1, 2, 3]);
        assert!(first_cert_der("nothing").is_err());
    }
}
