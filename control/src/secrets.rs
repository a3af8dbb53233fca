//! Who may read the data dir. Everything in it but the HTTPS certificates is a secret (the
//! database with every customer's key and payment, the routers' and the dev node's private
//! keys, the HTTPS private keys): files are created 0600 and the directory 0700. At start,
//! a file found group- or world-readable (made by an older version, copied in, restored by
//! hand) is set back to 0600 with a warning naming it; one that cannot be fixed (another
//! owner) stops the start with an error that says what to run. Secret files kept elsewhere
//! (a router key's `private_key_file`, LND's macaroon) are not ours to change: a warning.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("data dir {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("{0} is readable by others (mode {1:o}) and cannot be made private ({2}); run: chmod 600 {0}")]
    Unfixable(PathBuf, u32, std::io::Error),
}

/// A file that was readable by others and is now 0600.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub path: PathBuf,
    pub was: u32,
}

/// Whether a file of the data dir is public (a certificate clients pin, nothing secret).
fn public(name: &str) -> bool {
    name.ends_with(".cert.der")
}

/// Makes the data dir (0700 when new), and the database file (0600 when new, so SQLite's
/// WAL and shared-memory files, which take its mode, are private too).
pub fn create_data_dir(dir: &Path, db: Option<&Path>) -> Result<(), SecretsError> {
    let err = |e| SecretsError::Dir(dir.to_path_buf(), e);
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(dir)
            .map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    if let Some(db) = db.filter(|db| !db.exists()) {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
            .map_err(err)?;
    }
    Ok(())
}

/// Sets every secret file of `dir` that others may read back to 0600; returns what it fixed.
pub fn tighten(dir: &Path) -> Result<Vec<Fixed>, SecretsError> {
    let mut fixed = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| SecretsError::Dir(dir.to_path_buf(), e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        // Not following links: a link's target is not ours to change.
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if !meta.is_file() || public(&name) {
            continue;
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 == 0 {
            continue;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| SecretsError::Unfixable(path.clone(), mode, e))?;
        fixed.push(Fixed { path, was: mode });
    }
    fixed.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(fixed)
}

/// The mode of a secret file kept outside the data dir, when others may read it.
pub fn readable_by_others(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// `<data_dir>/proof.key`: the private half of the proof key (PROTOCOL.md 3.1), hex.
pub const PROOF_KEY_FILE: &str = "proof.key";

/// The proof key's private half, made on first start (0600, O_EXCL: of two processes starting
/// at once one makes it and both read it). Replicas must share it: copy the file.
pub fn proof_key(dir: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(PROOF_KEY_FILE);
    let bad = |m: &str| std::io::Error::other(format!("{}: {m}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let t = text.trim();
            if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad("not 64 hex characters"));
            }
            let mut k = [0u8; 32];
            for (i, byte) in k.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| bad("not hex"))?;
            }
            Ok(k)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = staticwire_api::proof::fresh_key();
            let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(hex.as_bytes())?;
                    f.sync_all()?;
                    Ok(k)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => proof_key(dir),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_proof_key_is_made_once_private_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let a = super::proof_key(d.path()).unwrap();
        assert_eq!(
            super::proof_key(d.path()).unwrap(),
            a,
            "read back, not made again"
        );
        let mode = std::fs::metadata(d.path().join(super::PROOF_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(d.path().join(super::PROOF_KEY_FILE), "zz").unwrap();
        assert!(
            super::proof_key(d.path()).is_err(),
            "a damaged key is an error"
        );
    }

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_data_dir_and_database_are_private() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("data");
        let db = dir.join("staticwire.sqlite");
        create_data_dir(&dir, Some(&db)).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&db), 0o600);
        // SQLite's WAL and shared-memory files take the database's mode.
        let c = crate::db::open(&db).unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
            .unwrap();
        for f in ["staticwire.sqlite-wal", "staticwire.sqlite-shm"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        assert!(tighten(&dir).unwrap().is_empty(), "nothing to fix");
    }

    #[test]
    fn readable_secrets_are_made_private_and_certificates_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, m: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, b"x").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
            p
        };
        let key = put("wg0.key", 0o644);
        let db = put("staticwire.sqlite", 0o640);
        let ok = put("dev-node.key", 0o600);
        let cert = put("tls.cert.der", 0o644);
        let fixed = tighten(dir.path()).unwrap();
        assert_eq!(
            fixed,
            vec![
                Fixed {
                    path: db.clone(),
                    was: 0o640
                },
                Fixed {
                    path: key.clone(),
                    was: 0o644
                },
            ]
        );
        for p in [&key, &db, &ok] {
            assert_eq!(mode(p), 0o600);
        }
        assert_eq!(mode(&cert), 0o644);
        assert_eq!(readable_by_others(&cert), Some(0o644));
        assert_eq!(readable_by_others(&key), None);
        assert_eq!(readable_by_others(&dir.path().join("missing")), None);
    }
}
