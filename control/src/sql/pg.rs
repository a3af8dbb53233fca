//! PostgreSQL on a thread of its own: the synchronous `postgres` client runs its own small
//! runtime, which may not be entered from the tokio threads that serve the API, and a blocking
//! call on a channel behaves like a blocking SQLite call there. Values are converted to and
//! from whatever types the server inferred.

use super::dialect::to_postgres;
use super::{Error, Result, TypeError, Value};
use std::collections::HashMap;
use std::sync::mpsc;

pub(super) enum Req {
    Execute(String, Vec<Value>),
    Query(String, Vec<Value>),
    Batch(String),
    /// `pg_advisory_xact_lock(key)`, skipped when the open transaction holds it already.
    XactLock(i64),
    /// A query whose rows are sent on as they arrive, [`STREAM_CHUNK`] at a time (the
    /// passes over every rental: never all of them in memory at once).
    Stream(String, Vec<Value>, mpsc::SyncSender<Vec<Vec<Value>>>),
}

/// Rows per message of a streamed query.
const STREAM_CHUNK: usize = 1024;

pub(super) enum Reply {
    Count(u64),
    Rows(Vec<Vec<Value>>),
}

type Job = (Req, mpsc::Sender<Result<Reply>>);

/// A PostgreSQL connection on its own thread.
pub struct Pg {
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
    url: String,
    init: Option<String>,
    /// The advisory transaction locks the open transaction holds, as of the last request,
    /// each with the number of its acquisition.
    held: Held,
}

/// Advisory locks held, each with the number of the acquisition that took it (each
/// acquisition on any connection has a new one: the same number means held throughout).
type Held = std::sync::Arc<std::sync::Mutex<Vec<(i64, u64)>>>;

fn pg_error(e: postgres::Error) -> Error {
    Error::Postgres {
        code: e.code().map(|c| c.code().to_string()),
        message: match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => e.to_string(),
        },
    }
}

/// A parameter converted to whatever type the server inferred for it.
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl postgres::types::ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use postgres::types::{IsNull, Type};
        match (self.0, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Value::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Int(i), &Type::TEXT | &Type::VARCHAR) => i.to_string().to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Value::Text(s), &Type::INT8) => s.parse::<i64>()?.to_sql(ty, out),
            (Value::Text(s), _) => s.as_str().to_sql(ty, out),
            (Value::Blob(b), _) => b.as_slice().to_sql(ty, out),
            (v, ty) => Err(format!("cannot send {v:?} as {ty}").into()),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn pg_value(row: &postgres::Row, i: usize) -> Result<Value> {
    use postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    let err = |e: postgres::Error| Error::Type(i, TypeError::Postgres(e));
    Ok(match ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)
            .map_err(err)?
            .map(Value::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)
            .map_err(err)?
            .map(|v| Value::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)
            .map_err(err)?
            .map(|v| Value::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)
            .map_err(err)?
            .map(|v| Value::Int(v.into())),
        Type::FLOAT8 => row
            .try_get::<_, Option<f64>>(i)
            .map_err(err)?
            .map(Value::Real),
        Type::FLOAT4 => row
            .try_get::<_, Option<f32>>(i)
            .map_err(err)?
            .map(|v| Value::Real(v.into())),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(err)?
            .map(Value::Blob),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => row
            .try_get::<_, Option<String>>(i)
            .map_err(err)?
            .map(Value::Text),
        other => return Err(Error::Type(i, TypeError::UnusedPostgresType(other))),
    }
    .unwrap_or(Value::Null))
}

struct Worker {
    url: String,
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    init: Option<String>,
    stats: Option<Stats>,
    xact: XactLocks,
    held: Held,
}

/// The advisory transaction locks the open transaction holds, so a second request for one
/// costs no round trip (a rent asks for the allocation lock in its hold, then again for each
/// change it logs). Followed from the transaction-control statements this connection runs:
/// a lock taken inside a savepoint that is rolled back is released with it, as PostgreSQL
/// does; any statement this cannot follow forgets every lock (the next request asks the
/// server again, which is always correct).
#[derive(Debug, Default)]
struct XactLocks {
    /// Open savepoints, outermost first.
    savepoints: Vec<String>,
    /// Each lock held, with the savepoint depth it was taken at and its acquisition.
    held: Vec<(i64, usize, u64)>,
}

/// Acquisitions of advisory locks so far, on every connection (numbers them).
static ACQUIRED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl XactLocks {
    fn holds(&self, key: i64) -> bool {
        self.held.iter().any(|(k, ..)| *k == key)
    }

    fn taken(&mut self, key: i64) {
        let n = ACQUIRED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.held.push((key, self.savepoints.len(), n));
    }

    fn forget(&mut self) {
        self.savepoints.clear();
        self.held.clear();
    }

    /// Follows a batch of SQL the connection ran successfully.
    fn ran(&mut self, sql: &str) {
        for one in sql.split(';').filter(|s| !s.trim().is_empty()) {
            self.ran_one(one);
        }
    }

    fn ran_one(&mut self, sql: &str) {
        let words: Vec<String> = sql
            .trim()
            .trim_end_matches(';')
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["BEGIN"] | ["COMMIT"] | ["ROLLBACK"] | ["END"] => self.forget(),
            ["SAVEPOINT", name] => self.savepoints.push(name.to_string()),
            ["RELEASE", name] | ["RELEASE", "SAVEPOINT", name] => {
                match self.savepoints.iter().rposition(|s| s == name) {
                    Some(i) => {
                        self.savepoints.truncate(i);
                        for (_, depth, _) in &mut self.held {
                            *depth = (*depth).min(i);
                        }
                    }
                    None => self.forget(),
                }
            }
            ["ROLLBACK", "TO", name] | ["ROLLBACK", "TO", "SAVEPOINT", name] => {
                match self.savepoints.iter().rposition(|s| s == name) {
                    // The savepoint stays; what was taken inside it is released.
                    Some(i) => {
                        self.savepoints.truncate(i + 1);
                        self.held.retain(|(_, depth, _)| *depth <= i);
                    }
                    None => self.forget(),
                }
            }
            [first, ..] if *first == "SET" || *first == "SELECT" => {}
            _ => self.forget(),
        }
    }
}

/// Round trips per statement and the time spent in them, logged every `every` when the
/// environment variable `STATICWIRE_PG_STATS` names a number of seconds (a measuring aid:
/// where a request's round trips go).
struct Stats {
    every: std::time::Duration,
    since: std::time::Instant,
    by_sql: HashMap<String, (u64, std::time::Duration)>,
}

impl Stats {
    fn from_env() -> Option<Stats> {
        let secs: f64 = std::env::var("STATICWIRE_PG_STATS").ok()?.parse().ok()?;
        Some(Stats {
            every: std::time::Duration::from_secs_f64(secs.max(0.1)),
            since: std::time::Instant::now(),
            by_sql: HashMap::new(),
        })
    }

    fn record(&mut self, sql: &str, took: std::time::Duration) {
        let key: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
        let e = self.by_sql.entry(key).or_default();
        e.0 += 1;
        e.1 += took;
        if self.since.elapsed() >= self.every {
            let mut rows: Vec<_> = self.by_sql.drain().collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
            let total: u64 = rows.iter().map(|r| r.1 .0).sum();
            let time: std::time::Duration = rows.iter().map(|r| r.1 .1).sum();
            let mut out = format!(
                "postgres statements in {:.1?}: {total} round trips, {time:.1?} in them",
                self.since.elapsed()
            );
            for (sql, (n, t)) in rows.iter().take(40) {
                let short: String = sql.chars().take(110).collect();
                out.push_str(&format!("\n  {n:7} {:9.1?} {short}", t));
            }
            tracing::info!("{out}");
            self.since = std::time::Instant::now();
        }
    }
}

impl Worker {
    fn client(&mut self) -> Result<&mut postgres::Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.statements.clear();
            self.xact.forget();
            let mut c = postgres::Client::connect(&self.url, postgres::NoTls).map_err(pg_error)?;
            // Each statement is prepared once and run many times; a generic plan made while a
            // table was small (a new database's invoices) stays a sequential scan until the
            // next ANALYZE, for every lookup by key. Planned for each run instead: a plan
            // costs microseconds, the scans grew with every row.
            c.batch_execute("SET plan_cache_mode = force_custom_plan")
                .map_err(pg_error)?;
            if let Some(init) = &self.init {
                c.batch_execute(init).map_err(pg_error)?;
            }
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("connected"))
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let pg_sql = to_postgres(sql);
        let s = self.client()?.prepare(&pg_sql).map_err(pg_error)?;
        if self.statements.len() > 512 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn run(&mut self, req: Req) -> Result<Reply> {
        let out = self.run_counted(req);
        if let Ok(mut held) = self.held.lock() {
            held.clear();
            held.extend(self.xact.held.iter().map(|(k, _, n)| (*k, *n)));
        }
        out
    }

    fn run_counted(&mut self, req: Req) -> Result<Reply> {
        if self.stats.is_none() {
            return self.run_one(req);
        }
        let sql = match &req {
            Req::Batch(s) | Req::Execute(s, _) | Req::Query(s, _) => s.clone(),
            Req::XactLock(_) => "SELECT pg_advisory_xact_lock(?1)".to_string(),
            Req::Stream(s, _, _) => s.clone(),
        };
        let start = std::time::Instant::now();
        let out = self.run_one(req);
        if let Some(stats) = self.stats.as_mut() {
            stats.record(&sql, start.elapsed());
        }
        out
    }

    fn run_one(&mut self, req: Req) -> Result<Reply> {
        match req {
            Req::Batch(sql) => {
                let ran = self.client()?.batch_execute(&sql).map_err(pg_error);
                match ran {
                    Ok(()) => self.xact.ran(&sql),
                    // A failed COMMIT or ROLLBACK may have ended the transaction.
                    Err(_) => self.xact.forget(),
                }
                ran?;
                Ok(Reply::Count(0))
            }
            Req::XactLock(key) => {
                if !self.xact.holds(key) {
                    let stmt = self.statement("SELECT pg_advisory_xact_lock(?1)::text")?;
                    self.client()?.query(&stmt, &[&key]).map_err(pg_error)?;
                    self.xact.taken(key);
                }
                Ok(Reply::Count(0))
            }
            Req::Execute(sql, values) => {
                let stmt = self.statement(&sql)?;
                let params: Vec<Param> = values.iter().map(Param).collect();
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                let n = self.client()?.execute(&stmt, &refs).map_err(pg_error)?;
                Ok(Reply::Count(n))
            }
            Req::Stream(sql, values, rows_to) => {
                use postgres::fallible_iterator::FallibleIterator;
                let stmt = self.statement(&sql)?;
                let params: Vec<Param> = values.iter().map(Param).collect();
                let mut it = self
                    .client()?
                    .query_raw(&stmt, params.iter())
                    .map_err(pg_error)?;
                let mut chunk = Vec::with_capacity(STREAM_CHUNK);
                let mut n = 0u64;
                while let Some(r) = it.next().map_err(pg_error)? {
                    let mut vals = Vec::with_capacity(r.len());
                    for i in 0..r.len() {
                        vals.push(pg_value(&r, i)?);
                    }
                    chunk.push(vals);
                    n += 1;
                    if chunk.len() == STREAM_CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(STREAM_CHUNK));
                        if rows_to.send(full).is_err() {
                            // The reader stopped (its callback failed): the rest is dropped.
                            return Ok(Reply::Count(n));
                        }
                    }
                }
                if !chunk.is_empty() {
                    let _ = rows_to.send(chunk);
                }
                Ok(Reply::Count(n))
            }
            Req::Query(sql, values) => {
                let stmt = self.statement(&sql)?;
                let params: Vec<Param> = values.iter().map(Param).collect();
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params
                    .iter()
                    .map(|p| p as &(dyn postgres::types::ToSql + Sync))
                    .collect();
                let rows = self.client()?.query(&stmt, &refs).map_err(pg_error)?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    let mut vals = Vec::with_capacity(r.len());
                    for i in 0..r.len() {
                        vals.push(pg_value(r, i)?);
                    }
                    out.push(vals);
                }
                Ok(Reply::Rows(out))
            }
        }
    }
}

impl Pg {
    /// Connects to `url` (`postgres://user@host:port/db`); `init` runs on every (re)connect,
    /// e.g. `SET search_path`.
    pub fn connect(url: &str, init: Option<String>) -> Result<Pg> {
        let mut worker = Worker {
            url: url.to_string(),
            client: None,
            statements: HashMap::new(),
            init: init.clone(),
            stats: Stats::from_env(),
            xact: XactLocks::default(),
            held: Default::default(),
        };
        let held = worker.held.clone();
        // Connected on the thread itself: the client's runtime may not start on a tokio one.
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                let first = worker.client().map(|_| ());
                let ok = first.is_ok();
                let _ = ready_tx.send(first);
                if !ok {
                    return;
                }
                while let Ok((req, reply)) = rx.recv() {
                    let _ = reply.send(worker.run(req));
                }
            })
            .map_err(|e| Error::Postgres {
                message: format!("cannot start the connection thread: {e}"),
                code: None,
            })?;
        ready_rx.recv().map_err(|_| Error::Postgres {
            message: "the connection thread ended".into(),
            code: None,
        })??;
        Ok(Pg {
            jobs: std::sync::Mutex::new(tx),
            url: url.to_string(),
            init,
            held,
        })
    }

    /// Whether the open transaction holds the advisory lock `key`.
    pub(super) fn holds_xact_lock(&self, key: i64) -> bool {
        self.xact_lock_taken(key).is_some()
    }

    /// The number of the acquisition of the advisory lock `key` the open transaction holds.
    pub(super) fn xact_lock_taken(&self, key: i64) -> Option<u64> {
        let held = self.held.lock().ok()?;
        held.iter().find(|(k, _)| *k == key).map(|(_, n)| *n)
    }

    /// Another connection to the same database (its own thread and session), `also` run on
    /// every (re)connect after this one's own setup.
    pub fn another(&self, also: Option<&str>) -> Result<Pg> {
        let init = match (&self.init, also) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.clone().or(b.map(str::to_string)),
        };
        Pg::connect(&self.url, init)
    }

    /// Runs `sql`, handing each row to `f` as its chunk arrives.
    pub(super) fn stream(
        &self,
        sql: &str,
        values: Vec<Value>,
        mut f: impl FnMut(Vec<Value>) -> Result<()>,
    ) -> Result<()> {
        let gone = || Error::Postgres {
            message: "the connection thread is gone".into(),
            code: None,
        };
        // Two chunks in flight: the reader works while the next one is read off the wire.
        let (rows_to, rows) = mpsc::sync_channel(2);
        let (tx, rx) = mpsc::channel();
        self.jobs
            .lock()
            .map_err(|_| gone())?
            .send((Req::Stream(sql.to_string(), values, rows_to), tx))
            .map_err(|_| gone())?;
        let mut failed = None;
        for chunk in rows.iter() {
            for row in chunk {
                if let Err(e) = f(row) {
                    failed = Some(e);
                    break;
                }
            }
            if failed.is_some() {
                break;
            }
        }
        // Dropping the receiver ends the worker's sends (after a failure: it stops reading).
        drop(rows);
        let done = rx.recv().map_err(|_| gone())?;
        match failed {
            Some(e) => Err(e),
            None => done.map(|_| ()),
        }
    }

    pub(super) fn call(&self, req: Req) -> Result<Reply> {
        let gone = || Error::Postgres {
            message: "the connection thread is gone".into(),
            code: None,
        };
        let (tx, rx) = mpsc::channel();
        self.jobs
            .lock()
            .map_err(|_| gone())?
            .send((req, tx))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}
