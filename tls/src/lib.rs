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
            Err(rustls::Error::General(
                "server certificate does not match the pinned one".into(),
            ))
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
    fn pem_first_certificate() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAQID\n-----END CERTIFICATE-----\n";
        assert_eq!(first_cert_der(pem).unwrap(), [1, 2, 3]);
        assert!(first_cert_der("nothing").is_err());
    }
}
