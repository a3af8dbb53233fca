//! Who may change the data dir. It holds the database and every private key, so only the
//! control's own user may write it: an existing dir that others may write is set back to
//! 0700 (with a warning naming the old mode), and one owned by another user is refused at
//! start, with what to run. (Its files' modes are `crate::secrets`'.)

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data dir {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("data dir {0} is owned by uid {1}, not by this user (uid {2}), who keeps secrets in it; run: chown {2} {0} && chmod 700 {0}")]
    Owner(PathBuf, u32, u32),
    #[error("data dir {0} is not a directory")]
    NotADir(PathBuf),
}

/// Checks the existing data dir `dir`: owned by this process's user (else an error), and not
/// writable (nor readable) by group or others (else set to 0700). Returns the mode it had
/// when it changed it.
pub fn secure(dir: &Path) -> Result<Option<u32>, DataDirError> {
    let err = |e| DataDirError::Io(dir.to_path_buf(), e);
    let meta = std::fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(DataDirError::NotADir(dir.to_path_buf()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(DataDirError::Owner(dir.to_path_buf(), meta.uid(), me));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    tracing::warn!(dir = %dir.display(), was = format!("{mode:o}"), "the data dir was open to others: set to 0700");
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_loose_dir_is_made_private_and_a_private_one_left_alone() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(secure(&dir).unwrap(), Some(0o777));
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(secure(&dir).unwrap(), None, "nothing left to fix");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(secure(&dir).unwrap(), Some(0o750), "group-readable");
        assert_eq!(mode(&dir), 0o700);
        let file = top.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(secure(&file), Err(DataDirError::NotADir(_))));
    }

    #[test]
    fn a_dir_of_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED a_dir_of_another_user_is_refused: needs root to chown");
            return;
        }
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let e = secure(&dir).unwrap_err();
        assert!(matches!(e, DataDirError::Owner(_, 65534, 0)), "{e}");
        assert!(e.to_string().contains("chown 0"), "{e}");
        assert_eq!(mode(&dir), 0o700, "left as it was");
    }
}
