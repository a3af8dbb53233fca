//! The database's disk fails under the running service: full, then read-only. Every request
//! is answered (503 with a clear code, never a 500 or a hang), nothing half-written is left,
//! and the service recovers by itself once space or write access returns. Needs root (a
//! small tmpfs is mounted for the data dir); prints SKIPPED otherwise.

use crate::abuse_tests::{from, new_key, server_in};
use crate::config::LimitsConfig;
use serde_json::Value;
use std::process::Command;

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &std::path::Path, size: &str) -> Option<Tmpfs> {
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0700"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .ok()?
        .success();
    ok.then(|| Tmpfs(dir.to_path_buf()))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn integrity(path: &std::path::Path) -> (String, i64) {
    let db = rusqlite::Connection::open(path).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let dup: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM (SELECT address FROM rentals WHERE released_at IS NULL GROUP BY address HAVING COUNT(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (ok, dup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_and_read_only_answer_503_corrupt_nothing_and_recover() {
    if crate::db::testing_postgres() {
        // Faults of SQLite's files: the SQLite run of the suite covers them.
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED disk_full_and_read_only_answer_503_corrupt_nothing_and_recover: needs root to mount a tmpfs");
        return;
    }
    let outer = tempfile::tempdir().unwrap();
    let data = outer.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let Some(_mount) = mount_tmpfs(&data, "16m") else {
        eprintln!("SKIPPED disk_full...: mount -t tmpfs failed");
        return;
    };
    let limits = LimitsConfig {
        burst: 10_000,
        invoice_burst: 10_000,
        max_unpaid_per_client: 10_000,
        ..LimitsConfig::default()
    };
    let s = server_in(&data, "203.0.113.0/24", limits).await;
    let c = from("127.0.0.2");
    let (st, v) = s.rent(&c, &new_key()).await;
    assert_eq!(st, 201, "{v}");

    // Fill the disk.
    let filler = data.join("filler");
    let _ = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=64k",
        ])
        .stderr(std::process::Stdio::null())
        .status();
    let mut seen = std::collections::BTreeMap::new();
    let mut full_message = None;
    for _ in 0..60 {
        let (st, v) = s.rent(&c, &new_key()).await;
        assert!(st == 201 || st == 503, "disk full: {st} {v}");
        if st == 503 {
            full_message = Some(v.clone());
        }
        *seen.entry(st).or_insert(0) += 1;
        if seen.get(&503).copied().unwrap_or(0) >= 5 {
            break;
        }
    }
    let v = full_message.expect("disk full was never noticed");
    let code = v["error"]["code"].as_str().unwrap();
    assert!(
        code == "database_unavailable" || code == "lightning_unavailable",
        "{v}"
    );
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("full"), "{msg}");
    // Reading still works.
    let r = c.get(s.url("/v1/terms")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Space returns: renting works again, by itself.
    std::fs::remove_file(&filler).unwrap();
    let (st, v) = s.rent(&c, &new_key()).await;
    assert_eq!(st, 201, "after space returned: {v}");

    // Read-only. A tmpfs with open files cannot be remounted read-only, so the database is
    // made read-only from inside (SQLite answers SQLITE_READONLY, as with a read-only mount).
    s.svc
        .db()
        .unwrap()
        .execute_batch("PRAGMA query_only = 1")
        .unwrap();
    let (st, v): (u16, Value) = s.rent(&c, &new_key()).await;
    assert_eq!(st, 503, "read-only: {v}");
    assert_eq!(v["error"]["code"], "database_unavailable", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("readonly"),
        "{v}"
    );
    s.svc
        .db()
        .unwrap()
        .execute_batch("PRAGMA query_only = 0")
        .unwrap();
    let (st, v) = s.rent(&c, &new_key()).await;
    assert_eq!(st, 201, "after write access returned: {v}");

    // Nothing corrupted, no address held twice, and every rental has its invoice.
    let (ok, dup) = integrity(&data.join("staticwire.sqlite"));
    assert_eq!(ok, "ok");
    assert_eq!(dup, 0);
    let db = s.svc.db().unwrap();
    let orphans: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM rentals r WHERE released_at IS NULL AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.rental_id = r.id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "a hold without an invoice was left behind");
    drop(db);
    drop(s);
}

/// Power loss: the database file and its WAL are copied while rentals are being written, as a
/// machine that loses power mid-write leaves them (a torn last write included). Every copy
/// opens, passes `PRAGMA integrity_check`, and holds no address twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_taken_mid_write_open_consistent() {
    if crate::db::testing_postgres() {
        // Faults of SQLite's files: the SQLite run of the suite covers them.
        return;
    }
    let limits = LimitsConfig {
        max_unpaid_per_client: 100_000,
        ..LimitsConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(server_in(dir.path(), "203.0.112.0/22", limits).await);
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for _ in 0..400 {
                let _ = s.svc.rent(&new_key(), None).await;
            }
        })
    };
    let db = dir.path().join("staticwire.sqlite");
    let mut copies = 0;
    for i in 0..12 {
        tokio::time::sleep(std::time::Duration::from_millis(15)).await;
        let to = dir.path().join(format!("copy{i}"));
        std::fs::create_dir(&to).unwrap();
        // Not atomic, on purpose: the WAL may have moved on between the two copies, and its
        // last frame may be half-written.
        let main = std::fs::read(&db).unwrap();
        let wal = std::fs::read(dir.path().join("staticwire.sqlite-wal")).unwrap_or_default();
        let cut = if i % 2 == 0 {
            wal.len()
        } else {
            wal.len().saturating_sub(1000)
        };
        std::fs::write(to.join("staticwire.sqlite"), main).unwrap();
        std::fs::write(to.join("staticwire.sqlite-wal"), &wal[..cut]).unwrap();
        let conn = crate::db::open(&to.join("staticwire.sqlite")).expect("opens");
        drop(conn);
        let (ok, dup) = integrity(&to.join("staticwire.sqlite"));
        assert_eq!(ok, "ok", "copy {i}");
        assert_eq!(dup, 0, "copy {i}");
        copies += 1;
    }
    writer.await.unwrap();
    assert_eq!(copies, 12);
}
