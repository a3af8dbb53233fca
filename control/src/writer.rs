//! Group commit: many requests' changes in one transaction, one commit (one fsync with
//! `synchronous = FULL`) for all of them, and none of them answered before that commit is on
//! disk.
//!
//! A request stages its change ([`GroupCommit::stage`]) under the connection's lock, inside the
//! open batch transaction and a savepoint of its own (a change that fails rolls back alone),
//! and gets a [`Ticket`]. The writer thread commits the open batch when woken, after letting
//! the requests already queued for the lock join it; [`GroupCommit::durable`] answers once the
//! ticket's batch is committed, or with the error that failed the commit (then every request
//! of that batch gets it). Anyone else taking the connection commits the open batch first
//! ([`GroupCommit::flush`]), so no reader sees an uncommitted change and no other transaction
//! starts inside the batch.

use crate::sql::{Connection, Error};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The batch a staged change is in, of the group commit that staged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    writer: u64,
    batch: u64,
}

/// Numbers each group commit, so a ticket is only ever waited for on its own.
static WRITERS: AtomicU64 = AtomicU64::new(1);

/// How long the writer lets queued requests join a batch before committing it.
const GATHER: Duration = Duration::from_millis(2);
/// Failed batches remembered for their late waiters.
const FAILED_KEPT: usize = 4096;

#[derive(Debug, Default)]
struct State {
    /// The batch whose transaction is open.
    open: Option<u64>,
    next: u64,
    /// Batches whose commit failed (most recent last), with the error's text.
    failed: VecDeque<(u64, String)>,
    /// PostgreSQL: the last stage's savepoint is still to be released (with the next
    /// stage's, in one round trip; a commit releases it anyway).
    unreleased: bool,
}

/// The group commit of one connection; see the module doc.
#[derive(Debug)]
pub struct GroupCommit {
    id: u64,
    state: Mutex<State>,
    /// The highest batch closed (committed or failed).
    closed: watch::Sender<u64>,
    /// Requests waiting for the connection to stage a change.
    entering: AtomicUsize,
    /// Told when no request is waiting for the connection any more.
    gathered: (Mutex<()>, Condvar),
    kick: (Mutex<bool>, Condvar),
    failures: AtomicU64,
    /// Test seam: this many next commits fail (rolled back) as a full disk's would.
    fail_next: AtomicU64,
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            id: WRITERS.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
            closed: watch::channel(0).0,
            entering: AtomicUsize::new(0),
            gathered: (Mutex::new(()), Condvar::new()),
            kick: (Mutex::new(false), Condvar::new()),
            failures: AtomicU64::new(0),
            fail_next: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GroupCommit {
    /// A group commit over `db`, with its writer thread (which ends when both are dropped).
    pub fn start(db: &Arc<Mutex<Connection>>) -> Arc<Self> {
        let g = Arc::new(GroupCommit::default());
        let (weak_g, weak_db) = (Arc::downgrade(&g), Arc::downgrade(db));
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || writer(weak_g, weak_db))
            .expect("spawn the group-commit writer");
        g
    }

    /// Commits that failed so far (their batches' changes are gone).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Locks `db` to stage a change (not committing the open batch, which the change joins).
    pub fn lock<'a>(
        &self,
        db: &'a Mutex<Connection>,
    ) -> Result<MutexGuard<'a, Connection>, Poisoned> {
        self.entering.fetch_add(1, Ordering::SeqCst);
        let guard = lock_conn(db);
        if self.entering.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The last one queued is in: the writer gathering the batch may commit it.
            let _g = lock(&self.gathered.0);
            self.gathered.1.notify_all();
        }
        guard
    }

    /// Whether a batch is open (the caller holds the connection's lock).
    pub fn is_open(&self) -> bool {
        lock(&self.state).open.is_some()
    }

    /// Runs `f` in the open batch (opening one), in a savepoint: rolled back alone when it
    /// fails. The change is durable once [`GroupCommit::durable`] of the ticket answers.
    pub fn stage<T, E: From<Error>>(
        &self,
        db: &Connection,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<(T, Ticket), E> {
        // On PostgreSQL the transaction-control statements are sent together (BEGIN with the
        // first savepoint, a stage's release with the next stage's savepoint, a rollback with
        // its release), and those before a stage without waiting: they go out with its first
        // statement.
        let pg = db.is_postgres();
        let batch = {
            let mut st = lock(&self.state);
            if st.open.is_some() && !db.in_transaction() {
                self.fail_open(&mut st, "the database rolled the batch back".into());
            }
            match st.open {
                Some(b) => {
                    if std::mem::take(&mut st.unreleased) {
                        db.send_batch("RELEASE staged; SAVEPOINT staged")?;
                    } else {
                        db.send_batch("SAVEPOINT staged")?;
                    }
                    b
                }
                None => {
                    if pg {
                        db.send_batch("BEGIN; SAVEPOINT staged")?;
                    } else {
                        db.execute_batch("BEGIN")?;
                        db.execute_batch("SAVEPOINT staged")?;
                    }
                    let b = st.next;
                    st.next += 1;
                    st.open = Some(b);
                    b
                }
            }
        };
        let out = f(db);
        let end = match &out {
            Ok(_) if pg => {
                lock(&self.state).unreleased = true;
                Ok(())
            }
            Ok(_) => db.execute_batch("RELEASE staged"),
            Err(_) if pg => db.execute_batch("ROLLBACK TO staged; RELEASE staged"),
            Err(_) => db
                .execute_batch("ROLLBACK TO staged")
                .and_then(|_| db.execute_batch("RELEASE staged")),
        };
        if (out.is_err() || end.is_err()) && !db.in_transaction() {
            // The error took the whole batch with it (SQLite on a full disk): every change
            // staged in it is gone, and its waiters are told.
            let mut st = lock(&self.state);
            if st.open == Some(batch) {
                self.fail_open(&mut st, "the database rolled the batch back".into());
            }
        }
        self.wake_writer();
        end?;
        out.map(|v| {
            let t = Ticket {
                writer: self.id,
                batch,
            };
            (v, t)
        })
    }

    /// Closes the open batch as failed (its transaction is gone).
    fn fail_open(&self, st: &mut State, why: String) {
        st.unreleased = false;
        let Some(batch) = st.open.take() else {
            return;
        };
        tracing::warn!(batch, "group commit failed: {why}");
        self.failures.fetch_add(1, Ordering::SeqCst);
        if st.failed.len() >= FAILED_KEPT {
            st.failed.pop_front();
        }
        st.failed.push_back((batch, why));
        self.closed.send_replace(batch);
    }

    /// Commits the open batch, if any (the caller holds `db`'s lock): the writer, and anyone
    /// about to use the connection for something else.
    pub fn flush(&self, db: &Connection) {
        let mut st = lock(&self.state);
        let Some(batch) = st.open.take() else {
            return;
        };
        // The commit releases a savepoint left open.
        st.unreleased = false;
        let injected = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let result = if injected {
            Err("injected commit failure".to_string())
        } else {
            db.execute_batch("COMMIT").map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                drop(st);
                self.closed.send_replace(batch);
            }
            Err(e) => {
                // Nothing of the batch is kept: roll back what a failed COMMIT left open.
                if db.in_transaction() {
                    let _ = db.execute_batch("ROLLBACK");
                }
                st.open = Some(batch);
                self.fail_open(&mut st, e);
            }
        }
    }

    /// Whether `t` is a ticket of this group commit.
    pub fn issued(&self, t: Ticket) -> bool {
        t.writer == self.id
    }

    /// Answers once the ticket's batch is committed: Ok, or the commit's error.
    pub async fn durable(&self, t: Ticket) -> Result<(), Error> {
        if !self.issued(t) {
            return Err(Error::Unavailable(
                "a ticket of another group commit".into(),
            ));
        }
        let mut rx = self.closed.subscribe();
        if rx.wait_for(|&closed| closed >= t.batch).await.is_err() {
            return Err(Error::Unavailable("the group-commit writer stopped".into()));
        }
        match lock(&self.state).failed.iter().find(|(b, _)| *b == t.batch) {
            Some((_, e)) => Err(Error::Unavailable(format!("commit failed: {e}"))),
            None => Ok(()),
        }
    }

    fn wake_writer(&self) {
        let (m, c) = &self.kick;
        *lock(m) = true;
        c.notify_one();
    }

    /// Makes the next `n` commits fail, as a full disk would (tests of what the waiters get).
    #[cfg(any(test, feature = "testkit"))]
    pub fn fail_next_commits(&self, n: u64) {
        self.fail_next.store(n, Ordering::SeqCst);
    }
}

/// Locks the connection; when it is busy (perhaps through a commit's fsync), waits as
/// [`blocking`] does.
/// Err: the lock is poisoned (a panic while it was held).
pub fn lock_conn(db: &Mutex<Connection>) -> Result<MutexGuard<'_, Connection>, Poisoned> {
    match db.try_lock() {
        Ok(g) => Ok(g),
        Err(std::sync::TryLockError::Poisoned(_)) => Err(Poisoned),
        Err(std::sync::TryLockError::WouldBlock) => blocking(|| db.lock().map_err(|_| Poisoned)),
    }
}

/// The connection's lock is poisoned.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("database lock poisoned")]
pub struct Poisoned;

/// Runs `f`, which may wait for the connection (held through a commit's fsync), without
/// stalling the async runtime's other tasks: on a multi-threaded runtime the worker hands its
/// tasks on first (`block_in_place`), so the requests waiting for the disk do not hold up
/// the ones that need no database (the terms) or that are still being prepared.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The writer thread: commits the open batch whenever a change is staged, once the requests
/// queued for the connection have joined it (bounded by [`GATHER`]).
fn writer(g: Weak<GroupCommit>, db: Weak<Mutex<Connection>>) {
    loop {
        let Some(gc) = g.upgrade() else { return };
        {
            let (m, c) = &gc.kick;
            let mut kicked = lock(m);
            if !*kicked {
                kicked = c
                    .wait_timeout(kicked, Duration::from_millis(200))
                    .map(|(k, _)| k)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if !*kicked {
                continue;
            }
            *kicked = false;
        }
        let until = Instant::now() + GATHER;
        {
            let mut g = lock(&gc.gathered.0);
            while gc.entering.load(Ordering::SeqCst) > 0 {
                let Some(left) = until.checked_duration_since(Instant::now()) else {
                    break;
                };
                g = gc
                    .gathered
                    .1
                    .wait_timeout(g, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
        let Some(db) = db.upgrade() else { return };
        let conn = lock(&db);
        gc.flush(&conn);
    }
}
