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

#[derive(Debug)]
struct Pinned {
    der: Vec<u8>,
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
        if end_entity.as_ref() == self.der.as_slice() {
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

/// A client configuration that accepts exactly the certificate `der`.
pub fn pinned_client_config(der: Vec<u8>) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { der, provider }))
            .with_no_client_auth(),
    )
}
