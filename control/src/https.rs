//! HTTPS with a self-signed certificate made on first start and kept in the data dir. Clients
//! trust it by pinning: the SHA-256 of its DER, 64 lowercase hex characters (the original
//! StaticWire client's `TrustedFingerprint`).

use bitcoin::hashes::{sha256, Hash};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

pub struct Identity {
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Identity {
    /// Loads `tls.cert.der` and `tls.key.der` from `dir`, creating them on first use.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Identity> {
        let (cert_path, key_path) = (dir.join("tls.cert.der"), dir.join("tls.key.der"));
        if let (Ok(cert_der), Ok(key_der)) = (std::fs::read(&cert_path), std::fs::read(&key_path)) {
            return Ok(Identity { cert_der, key_der });
        }
        let key = rcgen::KeyPair::generate().map_err(std::io::Error::other)?;
        let mut params = rcgen::CertificateParams::new(vec!["staticwire".to_string()])
            .map_err(std::io::Error::other)?;
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params.self_signed(&key).map_err(std::io::Error::other)?;
        let id = Identity {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        };
        write_new(&key_path, &id.key_der, 0o600)?;
        write_new(&cert_path, &id.cert_der, 0o644)?;
        Ok(id)
    }

    pub fn fingerprint(&self) -> String {
        hex::encode(sha256::Hash::hash(&self.cert_der).to_byte_array())
    }

    fn server_config(&self) -> Result<rustls::ServerConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert_der.clone().into()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Serves `app` over TLS on `addr` until the process ends, within `limits` (connections per
/// client, handshake and request-head timeouts, request rates, body sizes).
pub async fn serve(
    addr: SocketAddr,
    id: &Identity,
    app: axum::Router,
    limits: Arc<crate::limits::Limits>,
) -> std::io::Result<SocketAddr> {
    let cfg = id.server_config().map_err(std::io::Error::other)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(crate::limits::serve(
        listener,
        app,
        limits,
        Some(acceptor),
        std::future::pending(),
    ));
    Ok(bound)
}
