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

/// The identity served, and the one announced to replace it (the rotation's overlap).
pub struct Identities {
    pub current: Identity,
    pub next: Option<Identity>,
}

const CURRENT: (&str, &str) = ("tls.cert.der", "tls.key.der");
const NEXT: (&str, &str) = ("tls.next.cert.der", "tls.next.key.der");

impl Identity {
    /// Loads `tls.cert.der` and `tls.key.der` from `dir`, creating them on first use.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Identity> {
        if let Some(id) = Identity::load(dir, CURRENT)? {
            return Ok(id);
        }
        Identity::create(dir, CURRENT)
    }

    fn load(dir: &Path, (cert, key): (&str, &str)) -> std::io::Result<Option<Identity>> {
        match (std::fs::read(dir.join(cert)), std::fs::read(dir.join(key))) {
            (Ok(cert_der), Ok(key_der)) => Ok(Some(Identity { cert_der, key_der })),
            (Err(e), _) | (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            (Err(e), _) | (_, Err(e)) => Err(e),
        }
    }

    fn create(dir: &Path, (cert_name, key_name): (&str, &str)) -> std::io::Result<Identity> {
        let key = rcgen::KeyPair::generate().map_err(std::io::Error::other)?;
        let mut params = rcgen::CertificateParams::new(vec!["staticwire".to_string()])
            .map_err(std::io::Error::other)?;
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let cert = params.self_signed(&key).map_err(std::io::Error::other)?;
        let id = Identity {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        };
        write_new(&dir.join(key_name), &id.key_der, 0o600)?;
        write_new(&dir.join(cert_name), &id.cert_der, 0o644)?;
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

impl Identities {
    /// The current identity (made on first start) and the announced next one, if any.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Identities> {
        Ok(Identities {
            current: Identity::load_or_create(dir)?,
            next: Identity::load(dir, NEXT)?,
        })
    }

    /// Starts a rotation: makes the next identity (once; again it returns the same one).
    /// Served only after `retire`; announced from the next start on.
    pub fn create_next(dir: &Path) -> std::io::Result<Identity> {
        Identity::load_or_create(dir)?;
        match Identity::load(dir, NEXT)? {
            Some(id) => Ok(id),
            None => Identity::create(dir, NEXT),
        }
    }

    /// Ends a rotation: the next identity becomes the current one and the old one is
    /// deleted. Refused when no next identity was made. Returns the new current identity.
    pub fn retire_current(dir: &Path) -> std::io::Result<Identity> {
        let Some(next) = Identity::load(dir, NEXT)? else {
            return Err(std::io::Error::other(
                "no next identity: run `staticwire-control tls next` first, and let clients learn it",
            ));
        };
        // Renames are atomic, the key first: a crash between the two leaves the next
        // certificate with the current key, which the next `retire` completes.
        std::fs::rename(dir.join(NEXT.1), dir.join(CURRENT.1))?;
        std::fs::rename(dir.join(NEXT.0), dir.join(CURRENT.0))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(next)
    }

    /// The fingerprints clients may pin now: the current one, then the next one.
    pub fn fingerprints(&self) -> serde_json::Value {
        let next = self.next.as_ref().map(Identity::fingerprint);
        serde_json::json!({
            "current": self.current.fingerprint(),
            "next": next,
            "fingerprints": std::iter::once(self.current.fingerprint()).chain(next).collect::<Vec<_>>(),
        })
    }
}

/// `GET /.well-known/staticwire-tls`: the HTTPS fingerprints to pin, on both listeners.
pub fn well_known(fingerprints: serde_json::Value) -> axum::Router {
    let body = Arc::new(fingerprints);
    axum::Router::new().route(
        "/.well-known/staticwire-tls",
        axum::routing::get(move || {
            let body = body.clone();
            async move { axum::Json((*body).clone()) }
        }),
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_identity_survives_restarts_and_rotates_with_an_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identities::load_or_create(dir.path()).unwrap();
        assert!(first.next.is_none());
        let again = Identities::load_or_create(dir.path()).unwrap();
        assert_eq!(
            again.current.fingerprint(),
            first.current.fingerprint(),
            "same after a restart"
        );
        assert!(
            Identities::retire_current(dir.path()).is_err(),
            "nothing to rotate to yet"
        );

        let next = Identities::create_next(dir.path()).unwrap();
        assert_ne!(next.fingerprint(), first.current.fingerprint());
        assert_eq!(
            Identities::create_next(dir.path()).unwrap().fingerprint(),
            next.fingerprint(),
            "asking twice makes one"
        );
        let mode = |n: &str| {
            std::fs::metadata(dir.path().join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("tls.next.key.der"), 0o600);
        // The overlap: the old one is served, both are announced.
        let overlap = Identities::load_or_create(dir.path()).unwrap();
        assert_eq!(overlap.current.fingerprint(), first.current.fingerprint());
        let fp = overlap.fingerprints();
        assert_eq!(fp["current"], first.current.fingerprint());
        assert_eq!(fp["next"], next.fingerprint());
        assert_eq!(fp["fingerprints"].as_array().unwrap().len(), 2);
        overlap.current.server_config().unwrap();

        let now = Identities::retire_current(dir.path()).unwrap();
        assert_eq!(now.fingerprint(), next.fingerprint());
        let after = Identities::load_or_create(dir.path()).unwrap();
        assert_eq!(
            after.current.fingerprint(),
            next.fingerprint(),
            "the next one is served"
        );
        assert!(after.next.is_none());
        assert_eq!(
            after.fingerprints()["fingerprints"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(mode("tls.key.der"), 0o600);
        after.current.server_config().unwrap();
    }
}
