//! `staticwire-control backup FILE` and `restore FILE`.
//!
//! Backup uses SQLite's online backup API on a live database: one step copies every page
//! inside a single read transaction, so the copy is consistent while the server keeps writing
//! (WAL lets the writer go on). The copy is a self-contained database file (rollback journal,
//! no WAL beside it), checked with `PRAGMA integrity_check`, written under a temporary name and
//! renamed into place, mode 0600.
//!
//! Restore refuses while a server holds the data dir's lock, checks the file (integrity,
//! schema), keeps the current database as `staticwire.sqlite.pre-restore`, copies the backup in
//! with the same API and migrates it to this program's schema.

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a backup or restore did not happen; nothing was replaced.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("no database at {}", .0.display())]
    NoDatabase(PathBuf),
    /// A file or directory could not be opened, written or renamed.
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SQLite could not open a database file.
    #[error("{}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("backup: {0}")]
    Copy(#[source] rusqlite::Error),
    #[error("backup: the database stayed busy for 30 s")]
    Busy,
    #[error("{}: not a StaticWire database: {source}", path.display())]
    NotOurs {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: integrity check failed: {found}", path.display())]
    Corrupt { path: PathBuf, found: String },
    #[error("{}: schema version {version} is newer than this program ({known}); restore it with a newer staticwire-control", path.display())]
    Newer {
        path: PathBuf,
        version: i64,
        known: i64,
    },
    #[error("a staticwire-control is serving from {}: stop it first", .0.display())]
    Serving(PathBuf),
    #[error("keeping the current database: {0}")]
    Keep(#[source] Box<BackupError>),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::File {
        path: path.to_path_buf(),
        source,
    }
}

fn open_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> BackupError + '_ {
    move |source| BackupError::Open {
        path: path.to_path_buf(),
        source,
    }
}

/// Name of the lock a serving control holds in its data dir.
const LOCK_FILE: &str = "serve.lock";

/// Takes the data dir's lock without waiting; `None` if another process holds it.
pub fn try_lock(data_dir: &Path) -> std::io::Result<Option<File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(data_dir.join(LOCK_FILE))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(Some(f))
    } else {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

fn copy(src: &Connection, dst: &mut Connection) -> Result<(), BackupError> {
    let b = Backup::new(src, dst).map_err(BackupError::Copy)?;
    // -1: every page in one step, one read transaction: a consistent snapshot.
    for _ in 0..600 {
        match b.step(-1).map_err(BackupError::Copy)? {
            StepResult::Done => return Ok(()),
            StepResult::More => {}
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    Err(BackupError::Busy)
}

fn check(conn: &Connection, what: &Path) -> Result<i64, BackupError> {
    let bad = |source| BackupError::NotOurs {
        path: what.to_path_buf(),
        source,
    };
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(bad)?;
    if ok != "ok" {
        return Err(BackupError::Corrupt {
            path: what.to_path_buf(),
            found: ok,
        });
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(bad)?;
    conn.query_row("SELECT COUNT(*) FROM rentals", [], |r| r.get::<_, i64>(0))
        .map_err(bad)?;
    Ok(version)
}

fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Copies the live database at `db` to `dest`; returns the rentals it holds.
pub fn backup(db: &Path, dest: &Path) -> Result<i64, BackupError> {
    if !db.exists() {
        return Err(BackupError::NoDatabase(db.to_path_buf()));
    }
    let src = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err(db))?;
    src.busy_timeout(Duration::from_secs(10))?;
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    // Created 0600 before SQLite writes anything into it: it holds the business's records.
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_err(&tmp))?;
    let result = (|| {
        let mut dst = Connection::open(&tmp).map_err(open_err(&tmp))?;
        copy(&src, &mut dst)?;
        // One self-contained file: no -wal beside it.
        dst.pragma_update(None, "journal_mode", "DELETE")?;
        check(&dst, &tmp)?;
        let n: i64 = dst.query_row("SELECT COUNT(*) FROM rentals", [], |r| r.get(0))?;
        drop(dst);
        File::open(&tmp).and_then(|f| f.sync_all())?;
        std::fs::rename(&tmp, dest).map_err(file_err(dest))?;
        sync_dir(dest);
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Replaces the database at `db` with the backup `src`; the server must be stopped.
pub fn restore(data_dir: &Path, db: &Path, src: &Path) -> Result<i64, BackupError> {
    std::fs::create_dir_all(data_dir).map_err(file_err(data_dir))?;
    let _lock = try_lock(data_dir)
        .map_err(file_err(data_dir))?
        .ok_or_else(|| BackupError::Serving(data_dir.to_path_buf()))?;
    let from = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(open_err(src))?;
    let version = check(&from, src)?;
    let known = crate::db::schema_version();
    if version > known {
        return Err(BackupError::Newer {
            path: src.to_path_buf(),
            version,
            known,
        });
    }
    if db.exists() {
        let mut keep = db.as_os_str().to_owned();
        keep.push(".pre-restore");
        let keep = PathBuf::from(keep);
        backup(db, &keep).map_err(|e| BackupError::Keep(Box::new(e)))?;
        eprintln!(
            "staticwire-control: the database it replaces is kept as {}",
            keep.display()
        );
    }
    let mut dst = crate::db::open_sqlite(db)?;
    copy(&from, &mut dst)?;
    // The copy carried the backup's journal mode and schema version: back to WAL, then up to
    // this program's schema.
    dst.execute_batch("PRAGMA journal_mode = WAL;")?;
    crate::db::migrate_sqlite(&dst)?;
    check(&dst, db)?;
    let n = dst.query_row("SELECT COUNT(*) FROM rentals", [], |r| r.get(0))?;
    drop(dst);
    give_to_owner_of(data_dir, db);
    Ok(n)
}

/// Run as root, the files restore wrote belong to root, and a server running as the data
/// dir's owner (the `staticwire` user) could not write them: hand them over.
fn give_to_owner_of(data_dir: &Path, db: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(data_dir) else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || meta.uid() == 0 {
        return;
    }
    let paths = ["", "-wal", "-shm", ".pre-restore"]
        .into_iter()
        .map(|suffix| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            p
        })
        .chain([data_dir.join(LOCK_FILE).into_os_string()]);
    for p in paths {
        if Path::new(&p).exists() {
            if let Err(e) = std::os::unix::fs::chown(&p, Some(meta.uid()), Some(meta.gid())) {
                eprintln!("staticwire-control: chown {}: {e}", Path::new(&p).display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rental(db: &Connection, key: &str, addr: &str) {
        db.execute(
            "INSERT OR IGNORE INTO addresses(address, num, router) VALUES (?1, 1, 'wg0')",
            [addr],
        )
        .unwrap();
        db.execute(
            "INSERT INTO rentals(public_key, address, router, created_at) VALUES (?1, ?2, 'wg0', 1)",
            [key, addr],
        )
        .unwrap();
    }

    #[test]
    fn backup_while_writing_then_restore_over_newer_state() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("staticwire.sqlite");
        let live = crate::db::open_sqlite(&db_path).unwrap();
        rental(&live, "a", "203.0.113.2");
        // A writer keeps going in another thread while the backup runs.
        let writer = {
            let p = db_path.clone();
            std::thread::spawn(move || {
                let c = crate::db::open_sqlite(&p).unwrap();
                for i in 0..200 {
                    c.execute(
                        "INSERT INTO events(at, kind) VALUES (?1, 'tick')",
                        [i as i64],
                    )
                    .unwrap();
                }
            })
        };
        let dest = dir.path().join("backup.sqlite");
        assert_eq!(backup(&db_path, &dest).unwrap(), 1);
        writer.join().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("backup.sqlite-wal").exists());
        assert!(!dir.path().join("backup.sqlite.partial").exists());
        // Later state, then restore: the backup's state comes back.
        rental(&live, "b", "203.0.113.3");
        drop(live);
        assert_eq!(restore(dir.path(), &db_path, &dest).unwrap(), 1);
        let c = crate::db::open_sqlite(&db_path).unwrap();
        let keys: Vec<String> = c
            .prepare("SELECT public_key FROM rentals")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(keys, ["a"]);
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // The replaced database was kept.
        let kept = Connection::open(dir.path().join("staticwire.sqlite.pre-restore")).unwrap();
        let n: i64 = kept
            .query_row("SELECT COUNT(*) FROM rentals", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn restore_refuses_while_serving_and_refuses_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("staticwire.sqlite");
        drop(crate::db::open_sqlite(&db_path).unwrap());
        let dest = dir.path().join("b.sqlite");
        backup(&db_path, &dest).unwrap();
        let held = try_lock(dir.path()).unwrap().expect("free");
        let e = restore(dir.path(), &db_path, &dest).unwrap_err();
        assert!(e.to_string().contains("stop it first"), "{e}");
        drop(held);
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"not a database at all, not even close").unwrap();
        assert!(restore(dir.path(), &db_path, &junk).is_err());
        let other = dir.path().join("other.sqlite");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE x(y)")
            .unwrap();
        let e = restore(dir.path(), &db_path, &other).unwrap_err();
        assert!(e.to_string().contains("not a StaticWire database"), "{e}");
        assert!(backup(&dir.path().join("missing.sqlite"), &dest).is_err());
        // A newer schema than this program knows is refused.
        let newer = dir.path().join("newer.sqlite");
        backup(&db_path, &newer).unwrap();
        Connection::open(&newer)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99")
            .unwrap();
        let e = restore(dir.path(), &db_path, &newer).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
    }
}
