//! The live unpaid holds as `crate::holds` counts them, in memory: per client prefix, per host,
//! per host and listener, per host, listener and prefix, and, for takeover, each host's
//! holders ordered by what their prefix holds and then by their oldest hold. A rent's checks
//! read these in O(log n) instead of every unpaid hold in the database.
//!
//! The database stays the truth and this index follows it exactly (the caps decide from it):
//! built from the database (at start, and whenever the group commit lost a batch), and told of
//! every rental whose unpaid state may have changed ([`UnpaidIndex::touch`] reads that one row
//! back, so it holds what the open transaction holds). When a staged change is rolled back (its
//! savepoint), the rentals it touched are read back again ([`UnpaidIndex::resync_touched`]).
//!
//! On PostgreSQL other replicas change the holds too. There every change is also written to
//! `unpaid_changes` (the rental's id, in a sequence) in the transaction that makes it, under
//! the allocation lock: a transaction holding the lock sees every change committed before it
//! and none can commit meanwhile, so before each placement (under the lock) a replica reads
//! the rentals changed since it last looked ([`UnpaidIndex::refresh_if_shared`]): the work is
//! the others' changes, not the holds. Rows older than half an hour of this replica's time are
//! deleted; a replica that has not looked for twenty minutes reads every hold again.

use crate::config::LimitsConfig;
use crate::sql::{params, Connection};
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The advisory lock key under which rentals are placed and unpaid holds change (PostgreSQL):
/// replicas place one at a time, so no block goes out twice, and the changes to unpaid holds
/// are written in the order they commit.
pub const ALLOCATION_LOCK: i64 = 0x5357_414c; // "SWAL"

/// A replica that has not read the changes for this long reads every hold again (the rows it
/// has not read may be deleted after [`LOG_KEPT`]).
const STALE_AFTER: Duration = Duration::from_secs(20 * 60);
/// Changes read from the log per round trip (a small page: the planner then reads the log
/// and each rental through their keys).
const LOG_PAGE: i64 = 64;
/// Changes are kept this long after a replica has read past them.
const LOG_KEPT: Duration = Duration::from_secs(30 * 60);

/// The listener a hold was asked for through: each has its own share of every host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Listener {
    /// `/v1`.
    V1,
    /// The original client's protocol.
    Compat,
}

impl Listener {
    /// From the metrics' name of the request's API (`v1`, or the original client's).
    pub fn of_api(api: &str) -> Self {
        if api == "v1" {
            Listener::V1
        } else {
            Listener::Compat
        }
    }

    pub(crate) fn share(self, l: &LimitsConfig) -> f64 {
        match self {
            Listener::V1 => l.max_unpaid_share,
            Listener::Compat => l.compat_unpaid_share,
        }
    }
}

/// A live unpaid hold as the caps see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpaid {
    pub id: i64,
    /// Its client prefix (without the listener mark); `#id` when unknown.
    pub prefix: String,
    pub listener: Listener,
    pub router: String,
    /// IPv4 addresses held.
    pub v4: u64,
    /// IPv6 prefixes held (0 or 1).
    pub v6: u64,
    pub created_at: i64,
}

impl Unpaid {
    /// What it counts in its client's cap.
    pub fn units(&self) -> u64 {
        if self.v4 > 0 {
            self.v4
        } else {
            self.v6
        }
    }
}

fn block(prefix_len: u8) -> u64 {
    1u64 << (32 - u32::from(prefix_len.min(32)))
}

const COLUMNS: &str = "id, client, router, address, prefix_len, ipv6, created_at";

fn of_row(r: &crate::sql::Row) -> crate::sql::Result<Unpaid> {
    of_row_at(r, 0)
}

/// The hold in the row's columns from `at` on ([`COLUMNS`]); None when they are NULL (an
/// outer join that found no live unpaid hold).
fn hold_at(r: &crate::sql::Row, at: usize) -> crate::sql::Result<Option<Unpaid>> {
    match r.get::<_, Option<i64>>(at + 7)? {
        Some(1) => of_row_at(r, at).map(Some),
        _ => Ok(None),
    }
}

/// [`COLUMNS`] of the outer join that reads a changed rental with its log row, and whether
/// it is a live unpaid hold (false when the rental is gone: a hold forgotten). That is decided from the row, not by the join's condition: with
/// the condition, PostgreSQL's planner may read the rental through the index of unpaid holds
/// (every one of them) instead of its key.
const JOINED: &str = "r.id, r.client, r.router, r.address, r.prefix_len, r.ipv6, r.created_at, \
     (r.id IS NOT NULL AND r.started_at IS NULL AND r.released_at IS NULL)";

fn of_row_at(r: &crate::sql::Row, at: usize) -> crate::sql::Result<Unpaid> {
    let client: Option<String> = r.get(at + 1)?;
    let address: Option<String> = r.get(at + 3)?;
    let prefix_len: i64 = r.get(at + 4)?;
    let ipv6: Option<String> = r.get(at + 5)?;
    Ok(Unpaid::of_hold(
        r.get(at)?,
        client.as_deref(),
        r.get(at + 2)?,
        address.as_deref(),
        prefix_len.clamp(0, 32) as u8,
        ipv6.is_some(),
        r.get(at + 6)?,
    ))
}

impl Unpaid {
    /// The hold of a rental with these columns (`client` as the rentals' column has it).
    pub fn of_hold(
        id: i64,
        client: Option<&str>,
        router: String,
        address: Option<&str>,
        prefix_len: u8,
        ipv6: bool,
        created_at: i64,
    ) -> Unpaid {
        let (listener, prefix) = match client {
            Some(c) => match c.strip_prefix("compat ") {
                Some(p) => (Listener::Compat, p.to_string()),
                None => (Listener::V1, c.to_string()),
            },
            None => (Listener::V1, format!("#{id}")),
        };
        Unpaid {
            id,
            prefix,
            listener,
            router,
            v4: if address.is_some_and(|a| !a.is_empty()) {
                block(prefix_len)
            } else {
                0
            },
            v6: u64::from(ipv6),
            created_at,
        }
    }
}

/// Every live unpaid hold in the database (a read of all of them: the build, and the check
/// of the index in debug builds).
pub fn read_all(db: &Connection) -> crate::sql::Result<Vec<Unpaid>> {
    let mut out = Vec::new();
    db.query_each(
        &format!("SELECT {COLUMNS} FROM rentals WHERE started_at IS NULL AND released_at IS NULL"),
        [],
        |r| {
            out.push(of_row(r)?);
            Ok(())
        },
    )?;
    Ok(out)
}

/// Rental `id` if it is a live unpaid hold (one row through the primary key).
fn read_one(db: &Connection, id: i64) -> crate::sql::Result<Option<Unpaid>> {
    // Through the key; whether it is a live unpaid hold from the row (see [`JOINED`]).
    let rows = db.query_all(
        &format!(
            "SELECT {COLUMNS}, (started_at IS NULL AND released_at IS NULL) FROM rentals
             WHERE id = ?1"
        ),
        params![id],
    )?;
    Ok(rows.first().map(|r| hold_at(r, 0)).transpose()?.flatten())
}

/// IPv4 addresses and IPv6 prefixes held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub v4: u64,
    pub v6: u64,
}

impl Sums {
    fn add(&mut self, h: &Unpaid, sign: i8) {
        if sign > 0 {
            self.v4 += h.v4;
            self.v6 += h.v6;
        } else {
            self.v4 -= h.v4;
            self.v6 -= h.v6;
        }
    }

    fn is_zero(&self) -> bool {
        self.v4 == 0 && self.v6 == 0
    }
}

/// Which of a hold's families a takeover looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

/// The holds of one host, listener and family that a takeover may pick from.
type GroupKey = (String, Listener, Family);

/// (what its prefix holds, reversed; its oldest hold's time and id; the prefix): the first
/// entry is the prefix holding the most, ties to the one whose oldest hold is oldest.
type Rank = (Reverse<u64>, i64, i64, String);

#[derive(Debug, Default)]
struct Group {
    /// Each prefix's holds in this group, oldest first.
    members: HashMap<String, BTreeSet<(i64, i64)>>,
    /// One entry per prefix of `members`.
    order: BTreeSet<Rank>,
}

/// A hold a takeover may take: its id, and what its prefix holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub id: i64,
    pub prefix_units: u64,
    created_at: i64,
}

/// The live unpaid holds, counted; see the module doc.
#[derive(Debug, Default)]
pub struct UnpaidIndex {
    holds: HashMap<i64, Unpaid>,
    by_prefix: HashMap<String, u64>,
    host: HashMap<String, Sums>,
    host_listener: HashMap<(String, Listener), Sums>,
    host_listener_prefix: HashMap<(String, Listener, String), Sums>,
    groups: HashMap<GroupKey, Group>,
    /// The groups each prefix has holds in (to re-rank it when what it holds changes).
    groups_of: HashMap<String, HashSet<GroupKey>>,
    /// Rentals touched since [`UnpaidIndex::mark`]: read back if their change is rolled back.
    touched: Vec<i64>,
    /// PostgreSQL: the last change read from `unpaid_changes`, when, and (time, last change)
    /// checkpoints for deleting the rows every replica has read.
    log_seen: i64,
    read_at: Option<Instant>,
    checkpoints: VecDeque<(Instant, i64)>,
    /// Live holds read from the log since the free-space index last took them out.
    seen_held: Vec<SeenHold>,
    /// The allocation lock's acquisition ([`Connection::lock_held_since`]) the last read of
    /// the log was made under: while it is held, no other replica logs a change.
    fresh_under: Option<u64>,
}

/// Where a live unpaid hold read from the log (perhaps another replica's) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenHold {
    pub router: String,
    /// Its first IPv4 address (None: IPv6 only).
    pub address: Option<String>,
    pub prefix_len: u8,
    pub ipv6: Option<String>,
}

impl UnpaidIndex {
    /// Reads every live unpaid hold.
    pub fn build(db: &Connection) -> crate::sql::Result<Self> {
        let mut ix = UnpaidIndex::default();
        if db.is_postgres() {
            // The log's position first: a change committed between the two reads is read
            // again later, never missed (the holds' read sees it or the log has it after).
            ix.log_seen = db.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM unpaid_changes",
                [],
                |r| r.get(0),
            )?;
            ix.read_at = Some(Instant::now());
        }
        for h in read_all(db)? {
            ix.insert(h);
        }
        Ok(ix)
    }

    /// On PostgreSQL (several replicas may share the database), reads the rentals other
    /// replicas changed since the last look (every hold again after [`STALE_AFTER`]). Call it
    /// under the allocation lock. On SQLite this control is the only writer: nothing to read.
    pub fn refresh_if_shared(&mut self, db: &Connection) -> crate::sql::Result<()> {
        if !db.is_postgres() {
            return Ok(());
        }
        // Read since the lock was taken: nobody else can have logged a change since.
        let held = db.lock_held_since(ALLOCATION_LOCK);
        if held.is_some() && held == self.fresh_under {
            return Ok(());
        }
        let now = Instant::now();
        if self
            .read_at
            .is_none_or(|t| now.duration_since(t) > STALE_AFTER)
        {
            let (touched, checkpoints) = (
                std::mem::take(&mut self.touched),
                std::mem::take(&mut self.checkpoints),
            );
            *self = UnpaidIndex::build(db)?;
            (self.touched, self.checkpoints) = (touched, checkpoints);
            self.fresh_under = held;
            return Ok(());
        }
        // Each changed rental read with its log row: one round trip for all of them (up to
        // a page of them). The log through its key from where this replica stopped, each
        // rental through its own (a lateral join the planner cannot flatten: never a hash
        // join over every rental, whatever its statistics say).
        let mut changed = Vec::new();
        loop {
            let page = db.query_all(
                &format!(
                    "SELECT c.seq, c.rental_id, {JOINED}
                     FROM (SELECT seq, rental_id FROM unpaid_changes WHERE seq > ?1
                           ORDER BY seq LIMIT ?2) c
                     LEFT JOIN LATERAL (SELECT * FROM rentals WHERE id = c.rental_id LIMIT 1) r
                       ON TRUE
                     ORDER BY c.seq"
                ),
                params![
                    changed
                        .last()
                        .map_or(Ok(self.log_seen), |r: &crate::sql::Row| r.get(0))?,
                    LOG_PAGE
                ],
            )?;
            let full = page.len() as i64 == LOG_PAGE;
            changed.extend(page);
            if !full {
                break;
            }
        }
        let mut seen = HashSet::new();
        for r in &changed {
            let (seq, id): (i64, i64) = (r.get(0)?, r.get(1)?);
            self.log_seen = self.log_seen.max(seq);
            if seen.insert(id) {
                let row = hold_at(r, 2)?;
                if let Some(h) = &row {
                    // Where it is, for the free-space index (`FreeSpace::refresh_if_shared`).
                    self.seen_held.push(SeenHold {
                        router: h.router.clone(),
                        address: r.get(5)?,
                        prefix_len: r.get::<_, i64>(6)?.clamp(0, 32) as u8,
                        ipv6: r.get(7)?,
                    });
                }
                self.set(id, row);
            }
        }
        self.read_at = Some(now);
        self.fresh_under = held;
        // Rows every live replica has read: those before a checkpoint older than LOG_KEPT
        // (a replica that has not read since STALE_AFTER reads every hold instead).
        if self
            .checkpoints
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) > Duration::from_secs(60))
        {
            self.checkpoints.push_back((now, self.log_seen));
        }
        let mut upto = None;
        while let Some(&(t, seq)) = self.checkpoints.front() {
            if now.duration_since(t) <= LOG_KEPT {
                break;
            }
            upto = Some(seq);
            self.checkpoints.pop_front();
        }
        if let Some(seq) = upto {
            db.execute("DELETE FROM unpaid_changes WHERE seq <= ?1", params![seq])?;
        }
        Ok(())
    }

    /// The live holds read from the log since the last call (their space is not free,
    /// whatever this replica's free-space index believed).
    pub fn take_seen_holds(&mut self) -> Vec<SeenHold> {
        std::mem::take(&mut self.seen_held)
    }

    /// Reads rental `id` back after a change to it in the open transaction: it is counted as
    /// the database holds it now. On PostgreSQL the change is also written to the log, under
    /// the allocation lock, for the other replicas.
    pub fn touch(&mut self, db: &Connection, id: i64) -> crate::sql::Result<()> {
        if db.is_postgres() {
            db.lock_for_transaction(ALLOCATION_LOCK)?;
            // The log row and the read back in one round trip.
            let rows = db.query_all(
                &format!(
                    "/* generic plan */
                     WITH l AS (INSERT INTO unpaid_changes(rental_id) VALUES (?1) RETURNING seq)
                     SELECT l.seq, {JOINED} FROM l LEFT JOIN rentals r ON r.id = ?1"
                ),
                params![id],
            )?;
            let now = rows.first().map(|r| hold_at(r, 1)).transpose()?.flatten();
            self.set(id, now);
        } else {
            self.reread(db, id)?;
        }
        self.touched.push(id);
        Ok(())
    }

    /// [`UnpaidIndex::touch`] of a hold just inserted, as it was inserted (no read back): on
    /// PostgreSQL its log row is sent without waiting (it goes with the next statement).
    pub fn inserted(&mut self, db: &Connection, hold: Unpaid) -> crate::sql::Result<()> {
        let id = hold.id;
        if db.is_postgres() {
            db.lock_for_transaction(ALLOCATION_LOCK)?;
            db.send(
                "/* generic plan */ INSERT INTO unpaid_changes(rental_id) VALUES (?1)",
                params![id],
            )?;
        }
        self.set(id, Some(hold));
        self.touched.push(id);
        Ok(())
    }

    /// Reads rental `id` back (after a transaction that changed it ended, or a rollback).
    pub fn reread(&mut self, db: &Connection, id: i64) -> crate::sql::Result<()> {
        let now = read_one(db, id)?;
        self.set(id, now);
        Ok(())
    }

    /// Starts a staged change: forgets the rentals touched before (their changes are kept or
    /// were read back already).
    pub fn mark(&mut self) {
        self.touched.clear();
    }

    /// After a rollback of what was staged since [`UnpaidIndex::mark`] (or of a savepoint
    /// taken at `since`, a position of [`UnpaidIndex::touched_len`]): reads those rentals back.
    pub fn resync_touched(&mut self, db: &Connection, since: usize) -> crate::sql::Result<()> {
        let ids: Vec<i64> = self.touched.split_off(since.min(self.touched.len()));
        let mut seen = HashSet::new();
        for id in ids {
            if seen.insert(id) {
                self.reread(db, id)?;
            }
        }
        Ok(())
    }

    /// How many rentals were touched since the mark (a savepoint's position).
    pub fn touched_len(&self) -> usize {
        self.touched.len()
    }

    fn set(&mut self, id: i64, now: Option<Unpaid>) {
        if self.holds.get(&id) == now.as_ref() {
            return;
        }
        self.remove(id);
        if let Some(h) = now {
            self.insert(h);
        }
    }

    fn groups_of_hold(h: &Unpaid) -> impl Iterator<Item = GroupKey> + '_ {
        [(Family::V4, h.v4 > 0), (Family::V6, h.v6 > 0)]
            .into_iter()
            .filter(|(_, has)| *has)
            .map(|(f, _)| (h.router.clone(), h.listener, f))
    }

    /// Takes `prefix`'s rank entries out of its groups (before what it holds changes).
    fn unrank(&mut self, prefix: &str) {
        let Some(keys) = self.groups_of.get(prefix) else {
            return;
        };
        let units = self.by_prefix.get(prefix).copied().unwrap_or(0);
        for k in keys {
            let g = self.groups.get_mut(k).expect("a group of the prefix");
            if let Some(&(c, i)) = g.members.get(prefix).and_then(|m| m.first()) {
                g.order.remove(&(Reverse(units), c, i, prefix.to_string()));
            }
        }
    }

    /// Puts `prefix`'s rank entries back (after what it holds changed).
    fn rerank(&mut self, prefix: &str) {
        let Some(keys) = self.groups_of.get(prefix) else {
            return;
        };
        let units = self.by_prefix.get(prefix).copied().unwrap_or(0);
        for k in keys {
            let g = self.groups.get_mut(k).expect("a group of the prefix");
            if let Some(&(c, i)) = g.members.get(prefix).and_then(|m| m.first()) {
                g.order.insert((Reverse(units), c, i, prefix.to_string()));
            }
        }
    }

    fn insert(&mut self, h: Unpaid) {
        self.unrank(&h.prefix);
        *self.by_prefix.entry(h.prefix.clone()).or_insert(0) += h.units();
        self.host.entry(h.router.clone()).or_default().add(&h, 1);
        self.host_listener
            .entry((h.router.clone(), h.listener))
            .or_default()
            .add(&h, 1);
        self.host_listener_prefix
            .entry((h.router.clone(), h.listener, h.prefix.clone()))
            .or_default()
            .add(&h, 1);
        let keys: Vec<GroupKey> = Self::groups_of_hold(&h).collect();
        for k in keys {
            self.groups
                .entry(k.clone())
                .or_default()
                .members
                .entry(h.prefix.clone())
                .or_default()
                .insert((h.created_at, h.id));
            self.groups_of
                .entry(h.prefix.clone())
                .or_default()
                .insert(k);
        }
        let prefix = h.prefix.clone();
        self.holds.insert(h.id, h);
        self.rerank(&prefix);
    }

    fn remove(&mut self, id: i64) {
        let Some(h) = self.holds.remove(&id) else {
            return;
        };
        self.unrank(&h.prefix);
        let units = self.by_prefix.get_mut(&h.prefix).expect("counted");
        *units -= h.units();
        if *units == 0 {
            self.by_prefix.remove(&h.prefix);
        }
        fn sub<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Sums>, k: K, h: &Unpaid) {
            if let Some(s) = m.get_mut(&k) {
                s.add(h, -1);
                if s.is_zero() {
                    m.remove(&k);
                }
            }
        }
        sub(&mut self.host, h.router.clone(), &h);
        sub(&mut self.host_listener, (h.router.clone(), h.listener), &h);
        sub(
            &mut self.host_listener_prefix,
            (h.router.clone(), h.listener, h.prefix.clone()),
            &h,
        );
        let keys: Vec<GroupKey> = Self::groups_of_hold(&h).collect();
        for k in keys {
            let g = self.groups.get_mut(&k).expect("the hold's group");
            let m = g.members.get_mut(&h.prefix).expect("the hold's prefix");
            m.remove(&(h.created_at, h.id));
            if m.is_empty() {
                g.members.remove(&h.prefix);
                if let Some(gs) = self.groups_of.get_mut(&h.prefix) {
                    gs.remove(&k);
                    if gs.is_empty() {
                        self.groups_of.remove(&h.prefix);
                    }
                }
                if g.members.is_empty() {
                    self.groups.remove(&k);
                }
            }
        }
        self.rerank(&h.prefix);
    }

    /// Units `prefix` holds unpaid over every host and listener.
    pub fn held_by(&self, prefix: &str) -> u64 {
        self.by_prefix.get(prefix).copied().unwrap_or(0)
    }

    /// What every unpaid hold on `router` holds.
    pub fn on_host(&self, router: &str) -> Sums {
        self.host.get(router).copied().unwrap_or_default()
    }

    /// What `listener`'s unpaid holds on `router` hold.
    pub fn on_host_of(&self, router: &str, listener: Listener) -> Sums {
        self.host_listener
            .get(&(router.to_string(), listener))
            .copied()
            .unwrap_or_default()
    }

    /// What `prefix`'s unpaid holds through `listener` on `router` hold.
    pub fn on_host_of_prefix(&self, router: &str, listener: Listener, prefix: &str) -> Sums {
        self.host_listener_prefix
            .get(&(router.to_string(), listener, prefix.to_string()))
            .copied()
            .unwrap_or_default()
    }

    /// The hold a takeover on `router` picks among `listeners`' holds of `families`, leaving
    /// out `except`'s: of the prefix holding the most, the oldest (ties: the oldest hold,
    /// then the lowest id).
    pub fn best(
        &self,
        router: &str,
        listeners: &[Listener],
        families: &[Family],
        except: Option<&str>,
    ) -> Option<Candidate> {
        let mut best: Option<Candidate> = None;
        for &l in listeners {
            for &f in families {
                let Some(g) = self.groups.get(&(router.to_string(), l, f)) else {
                    continue;
                };
                let first = g
                    .order
                    .iter()
                    .find(|(_, _, _, p)| Some(p.as_str()) != except);
                if let Some((Reverse(units), created_at, id, _)) = first {
                    let c = Candidate {
                        id: *id,
                        prefix_units: *units,
                        created_at: *created_at,
                    };
                    let key = |c: &Candidate| (Reverse(c.prefix_units), c.created_at, c.id);
                    if best.is_none_or(|b| key(&c) < key(&b)) {
                        best = Some(c);
                    }
                }
            }
        }
        best
    }

    /// Every hold, by id (tests and the debug check compare it with the database).
    pub fn holds(&self) -> Vec<Unpaid> {
        let mut v: Vec<Unpaid> = self.holds.values().cloned().collect();
        v.sort_by_key(|h| h.id);
        v
    }

    /// Whether the counts agree with a fresh build from `db` (tests; debug builds check it
    /// before each placement).
    pub fn matches(&self, db: &Connection) -> crate::sql::Result<Result<(), String>> {
        let fresh = UnpaidIndex::build(db)?;
        let same = self.holds == fresh.holds
            && self.by_prefix == fresh.by_prefix
            && self.host == fresh.host
            && self.host_listener == fresh.host_listener
            && self.host_listener_prefix == fresh.host_listener_prefix
            && self.groups_of == fresh.groups_of
            && self.groups.len() == fresh.groups.len()
            && self.groups.iter().all(|(k, g)| {
                fresh
                    .groups
                    .get(k)
                    .is_some_and(|f| f.order == g.order && f.members == g.members)
            });
        Ok(if same {
            Ok(())
        } else {
            Err(format!(
                "unpaid index drifted from the database: index {:?}, database {:?}",
                self.holds(),
                fresh.holds()
            ))
        })
    }
}

/// Debug builds check the index against the database before each placement (every test is a
/// check that it does not drift); tests that count the database's work turn it off.
#[cfg(debug_assertions)]
pub static CHECK_IN_DEBUG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// In debug builds (unless turned off), panics when the index is not what the database holds.
pub fn debug_check(ix: &UnpaidIndex, db: &Connection) {
    #[cfg(debug_assertions)]
    if CHECK_IN_DEBUG.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(Err(e)) = ix.matches(db) {
            panic!("{e}");
        }
    }
    let _ = (ix, db);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(id: i64, prefix: &str, router: &str, v4: u64, v6: u64, at: i64) -> Unpaid {
        Unpaid {
            id,
            prefix: prefix.into(),
            listener: Listener::V1,
            router: router.into(),
            v4,
            v6,
            created_at: at,
        }
    }

    /// The index's counts and takeover choice agree with a direct count over the holds (the
    /// rule `crate::holds` had read from the database) through a long mix of changes.
    #[test]
    fn counts_and_choice_agree_with_a_count_over_every_hold() {
        let mut rng = 0x9e37_79b9u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut ix = UnpaidIndex::default();
        let mut all: HashMap<i64, Unpaid> = HashMap::new();
        for id in 0..4000i64 {
            if next() % 3 == 0 && !all.is_empty() {
                let k = *all.keys().nth((next() as usize) % all.len()).unwrap();
                all.remove(&k);
                ix.set(k, None);
            } else {
                let prefix = format!("p{}", next() % 40);
                let router = ["a", "b"][(next() % 2) as usize];
                let (v4, v6) = match next() % 4 {
                    0 => (8, 1),
                    1 => (1, 0),
                    2 => (0, 1),
                    _ => (2, 0),
                };
                let mut h = hold(id, &prefix, router, v4, v6, (next() % 50) as i64);
                if next() % 3 == 0 {
                    h.listener = Listener::Compat;
                }
                all.insert(id, h.clone());
                ix.set(id, Some(h));
            }
            let mut by: HashMap<&str, u64> = HashMap::new();
            for h in all.values() {
                *by.entry(h.prefix.as_str()).or_default() += h.units();
            }
            for router in ["a", "b"] {
                let sum: u64 = all
                    .values()
                    .filter(|h| h.router == router)
                    .map(|h| h.v4)
                    .sum();
                assert_eq!(ix.on_host(router).v4, sum);
                let except = "p3";
                for fams in [&[Family::V4][..], &[Family::V6], &[Family::V4, Family::V6]] {
                    let want = all
                        .values()
                        .filter(|h| h.router == router && h.listener == Listener::V1)
                        .filter(|h| h.prefix != except)
                        .filter(|h| {
                            (fams.contains(&Family::V4) && h.v4 > 0)
                                || (fams.contains(&Family::V6) && h.v6 > 0)
                        })
                        .max_by(|a, b| {
                            by[a.prefix.as_str()]
                                .cmp(&by[b.prefix.as_str()])
                                .then(b.created_at.cmp(&a.created_at))
                                .then(b.id.cmp(&a.id))
                        })
                        .map(|h| h.id);
                    let got = ix.best(router, &[Listener::V1], fams, Some(except));
                    assert_eq!(got.map(|c| c.id), want);
                    if let Some(c) = got {
                        assert_eq!(c.prefix_units, by[all[&c.id].prefix.as_str()]);
                    }
                }
            }
        }
        assert!(ix.matches_holds(&all));
    }

    impl UnpaidIndex {
        fn matches_holds(&self, all: &HashMap<i64, Unpaid>) -> bool {
            self.holds.len() == all.len() && all.iter().all(|(k, h)| self.holds.get(k) == Some(h))
        }
    }
}
