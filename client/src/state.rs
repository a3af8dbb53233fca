//! The state dir: one subdirectory per rental (so one machine can hold several addresses), each
//! with its private key (0600, never sent anywhere), what we know of the rental, and the
//! wg-quick file; plus the auto-pay config and the payment log shared by all rentals.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Bad(PathBuf, String),
    #[error("rental name {0:?}: use 1-12 letters, digits or '-'")]
    BadName(String),
}

pub fn default_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("staticip")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Saved {
    /// The provider's API base URL.
    pub server: String,
    pub public_key: String,
    pub address: Option<String>,
    /// The provider's pinned certificate fingerprint, if it uses one.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The provider's pinned proof key (terms' `proof_key`, base64), once seen: a server with
    /// another one is refused like a changed certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_key: Option<String>,
}

pub struct Slot {
    pub name: String,
    pub dir: PathBuf,
}

fn io(p: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |e| StateError::Io(p.to_path_buf(), e)
}

/// Writes `contents` to `path` with mode 0600, replacing it atomically.
pub fn write_private(path: &Path, contents: &str) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

impl Slot {
    pub fn open(state_dir: &Path, name: &str) -> Result<Slot, StateError> {
        if name.is_empty()
            || name.len() > 12
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(StateError::BadName(name.into()));
        }
        let dir = state_dir.join("rentals").join(name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(state_dir))?;
        Ok(Slot {
            name: name.into(),
            dir,
        })
    }

    /// The WireGuard interface (and wg-quick file) name: `sw-<name>`, at most 15 characters.
    pub fn interface(&self) -> String {
        format!("sw-{}", self.name)
    }

    pub fn conf_path(&self) -> PathBuf {
        self.dir.join(format!("{}.conf", self.interface()))
    }

    /// The private key, created on first use. Returns (private, public) in base64.
    pub fn keypair(&self) -> Result<(String, String), StateError> {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let path = self.dir.join("private.key");
        let secret = match std::fs::read_to_string(&path) {
            Ok(t) => {
                let bytes = STANDARD
                    .decode(t.trim())
                    .map_err(|e| StateError::Bad(path.clone(), e.to_string()))?;
                <[u8; 32]>::try_from(bytes)
                    .map_err(|_| StateError::Bad(path.clone(), "not a 32-byte key".into()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng);
                // O_EXCL: of two processes creating the key at once, one wins and both use it.
                let created = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut f| {
                        f.write_all(format!("{}\n", STANDARD.encode(s.to_bytes())).as_bytes())?;
                        f.sync_all()
                    });
                match created {
                    Ok(()) => s.to_bytes(),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return self.keypair()
                    }
                    Err(e) => return Err(StateError::Io(path, e)),
                }
            }
            Err(e) => return Err(StateError::Io(path, e)),
        };
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret));
        Ok((STANDARD.encode(secret), STANDARD.encode(public.to_bytes())))
    }

    pub fn saved(&self) -> Result<Option<Saved>, StateError> {
        let path = self.dir.join("rental.json");
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t)
                .map(Some)
                .map_err(|e| StateError::Bad(path, e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Io(path, e)),
        }
    }

    pub fn save(&self, s: &Saved) -> Result<(), StateError> {
        write_private(
            &self.dir.join("rental.json"),
            &serde_json::to_string_pretty(s).expect("json"),
        )
    }
}

/// The server's wg-quick text with our private key filled in (locally: it never leaves):
/// `PrivateKey = …` directly after the `[Interface]` line, and the server's placeholder
/// comments (`# PrivateKey …`) in that section dropped (PROTOCOL.md, GetConf).
pub fn fill_private_key(template: &str, private_key: &str) -> String {
    let mut out = String::new();
    let mut in_interface = false;
    for line in template.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_interface = t.eq_ignore_ascii_case("[Interface]");
        } else if in_interface
            && t.starts_with('#')
            && t[1..].trim_start().starts_with("PrivateKey")
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if in_interface && t.starts_with('[') {
            out.push_str(&format!("PrivateKey = {private_key}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_and_stable() {
        let d = tempfile::tempdir().unwrap();
        let slot = Slot::open(d.path(), "web").unwrap();
        let (a, pa) = slot.keypair().unwrap();
        let (b, pb) = slot.keypair().unwrap();
        assert_eq!((a, pa), (b, pb));
        let mode = std::fs::metadata(slot.dir.join("private.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(Slot::open(d.path(), "../x").is_err());
        assert_eq!(
            Slot::open(d.path(), "node-1").unwrap().interface(),
            "sw-node-1"
        );
    }

    #[test]
    fn private_key_goes_where_the_server_left_room() {
        let t = "[Interface]\n# PrivateKey = <yours>\nAddress = 203.0.113.2/32\n\n[Peer]\nPublicKey = X\n";
        let f = fill_private_key(t, "SECRET");
        assert!(f.contains("PrivateKey = SECRET\nAddress"));
        assert!(!f.contains("# PrivateKey"));
        let g = fill_private_key("[Interface]\nAddress = 1.2.3.4/32\n", "S");
        assert!(g.starts_with("[Interface]\nPrivateKey = S\n"));
        // Directly after [Interface] wherever the placeholder is; only that section's
        // placeholder goes, and there is exactly one PrivateKey line.
        let t = "# made by a server\n[Interface]\nAddress = 1.2.3.4/32\n# PrivateKey = <yours>\n\n[Peer]\n# PrivateKey is not for this section\nPublicKey = X\n";
        let h = fill_private_key(t, "K");
        assert_eq!(
            h,
            "# made by a server\n[Interface]\nPrivateKey = K\nAddress = 1.2.3.4/32\n\n[Peer]\n# PrivateKey is not for this section\nPublicKey = X\n"
        );
        assert_eq!(h.matches("PrivateKey =").count(), 1);
    }
}
