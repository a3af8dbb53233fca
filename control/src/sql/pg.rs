//! PostgreSQL on a thread of its own: tokio-postgres driven by a small runtime of that thread
//! (one that may not be entered from the tokio threads that serve the API; a blocking call on
//! a channel behaves like a blocking SQLite call there). A request is either waited for, or
//! sent without waiting ([`Pg::send`]): such requests go out with the next one, pipelined,
//! and their answers are read with its answer or while the thread is idle. Values are
//! converted to and from whatever types the server inferred.

use super::dialect::to_postgres;
use super::{Error, Result, TypeError, Value};
use std::collections::HashMap;
use std::sync::mpsc;

pub(super) enum Req {
    Execute(String, Vec<Value>),
    Query(String, Vec<Value>),
    Batch(String),
    /// `pg_advisory_xact_lock(key)`.
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

enum Job {
    /// Run, and answered once the server has.
    Wait(Req, mpsc::Sender<Result<Reply>>),
    /// Sent to the server without waiting for its answer: its outcome is the next waited
    /// request's (see [`Pg::send`]).
    Send(Req),
}

/// A PostgreSQL connection on its own thread.
pub struct Pg {
    to: std::sync::Mutex<Sender>,
    url: String,
    init: Option<String>,
}

/// The way to the connection's thread, with the advisory transaction locks its open
/// transaction holds as of the requests sent so far (followed here, in the order they are
/// sent: a request sent without waiting counts at once).
struct Sender {
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    xact: XactLocks,
}

fn gone() -> Error {
    Error::Postgres {
        message: "the connection thread is gone".into(),
        code: None,
    }
}

fn pg_error(e: tokio_postgres::Error) -> Error {
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

impl tokio_postgres::types::ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> std::result::Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>>
    {
        use tokio_postgres::types::{IsNull, Type};
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

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

fn pg_value(row: &tokio_postgres::Row, i: usize) -> Result<Value> {
    use tokio_postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    let err = |e: tokio_postgres::Error| Error::Type(i, TypeError::Postgres(e));
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

/// The advisory transaction locks the open transaction holds, so a second request for one
/// costs no round trip (a rent asks for the allocation lock in its hold, then again for each
/// change it logs). Followed from the transaction-control statements sent on the connection:
/// a lock taken inside a savepoint that is rolled back is released with it, as PostgreSQL
/// does; any statement this cannot follow, and any error, forgets every lock (the next
/// request asks the server again, which is always correct).
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
        for one in controls(sql) {
            match one {
                Control::Begin | Control::Commit | Control::Rollback => self.forget(),
                Control::Savepoint(name) => self.savepoints.push(name),
                Control::Release(name) => match self.savepoints.iter().rposition(|s| *s == name) {
                    Some(i) => {
                        self.savepoints.truncate(i);
                        for (_, depth, _) in &mut self.held {
                            *depth = (*depth).min(i);
                        }
                    }
                    None => self.forget(),
                },
                Control::RollbackTo(name) => match self.savepoints.iter().rposition(|s| *s == name)
                {
                    // The savepoint stays; what was taken inside it is released.
                    Some(i) => {
                        self.savepoints.truncate(i + 1);
                        self.held.retain(|(_, depth, _)| *depth <= i);
                    }
                    None => self.forget(),
                },
                Control::Other => {}
            }
        }
    }
}

/// What a statement does to the transaction: the one reading of transaction-control SQL,
/// for the advisory-lock tracker (caller side) and the connection's state (its thread).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Control {
    /// BEGIN, START TRANSACTION.
    Begin,
    /// COMMIT, END, PREPARE TRANSACTION: the transaction ends (committed unless aborted).
    Commit,
    /// ROLLBACK, ABORT.
    Rollback,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
    /// Anything else (a query, a SET, DDL): the transaction goes on.
    Other,
}

/// One [`Control`] per statement of a batch (`;`-separated; names upper-cased, as
/// PostgreSQL folds unquoted ones).
fn controls(sql: &str) -> impl Iterator<Item = Control> + '_ {
    sql.split(';').filter(|s| !s.trim().is_empty()).map(|one| {
        let words: Vec<String> = one
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        // ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name
        let after_rollback = match w.get(1) {
            Some(&"WORK") | Some(&"TRANSACTION") => &w[2..],
            _ => &w[1.min(w.len())..],
        };
        match w.as_slice() {
            ["COMMIT", "PREPARED", ..] | ["ROLLBACK", "PREPARED", ..] => Control::Other,
            ["BEGIN", ..] | ["START", "TRANSACTION", ..] => Control::Begin,
            ["COMMIT", ..] | ["END", ..] | ["PREPARE", "TRANSACTION", ..] => Control::Commit,
            ["ABORT", ..] => Control::Rollback,
            ["ROLLBACK", ..] => match after_rollback {
                ["TO", "SAVEPOINT", name] | ["TO", name] => Control::RollbackTo(name.to_string()),
                _ => Control::Rollback,
            },
            ["SAVEPOINT", name] => Control::Savepoint(name.to_string()),
            ["RELEASE", "SAVEPOINT", name] | ["RELEASE", name] => {
                Control::Release(name.to_string())
            }
            _ => Control::Other,
        }
    })
}

/// How a batch leaves the transaction: Some(true) when it begins one, Some(false) when it
/// ends one (its last such statement), None when neither.
fn opens_or_ends(sql: &str) -> Option<bool> {
    controls(sql).fold(None, |out, c| match c {
        Control::Begin => Some(true),
        Control::Commit | Control::Rollback => Some(false),
        _ => out,
    })
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

/// A request sent without waiting, until its outcome is known.
type InFlight = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>>>>;

/// The connection's thread: tokio-postgres driven by a runtime of its own.
struct Worker {
    url: String,
    rt: tokio::runtime::Runtime,
    client: Option<std::rc::Rc<tokio_postgres::Client>>,
    statements: HashMap<String, tokio_postgres::Statement>,
    init: Option<String>,
    stats: Option<Stats>,
    /// Requests sent without waiting, in the order sent.
    in_flight: std::collections::VecDeque<InFlight>,
    /// The first error of a request sent without waiting, not yet told.
    failed: Option<Error>,
    /// Whether a transaction is open (from the transaction-control statements run).
    in_xact: bool,
    /// The connection was lost with a transaction open: every request fails until that
    /// transaction is ended (or a new one begins), so nothing staged in it is taken for
    /// committed.
    lost_xact: bool,
    /// An error aborted the open transaction (and no savepoint was rolled back to since).
    aborted: bool,
    /// A request sent without waiting failed inside the open transaction: whoever sent it
    /// was told it was staged, so no rollback to a savepoint makes the transaction whole
    /// again. Its COMMIT fails (every change of the batch is told so, none lost silently).
    poisoned: bool,
    /// The session's plan mode: generic plans (true) or a plan made for each run; None once
    /// a transaction's end may have undone a `SET` (it is set again before the next
    /// statement).
    generic: Option<bool>,
}

/// Statements that begin with this comment run on plans made once (`force_generic_plan`),
/// with the foreign-key checks they fire; every other statement is planned for each run
/// (see `Worker::client`). For writes whose plan does not depend on their values or on how
/// full a table is: a row inserted, its keys checked through unique indexes. Planning each
/// run was half of PostgreSQL's time in a rent.
pub const GENERIC_PLAN: &str = "/* generic plan */";

fn params_of(values: &[Value]) -> Vec<Param<'_>> {
    values.iter().map(Param).collect()
}

fn sql_refs<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

fn row_values(r: &tokio_postgres::Row) -> Result<Vec<Value>> {
    (0..r.len()).map(|i| pg_value(r, i)).collect()
}

impl Worker {
    fn client(&mut self) -> Result<std::rc::Rc<tokio_postgres::Client>> {
        if let Some(c) = self.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let lost = self.client.take().is_some();
        self.statements.clear();
        self.in_flight.clear();
        if lost && self.in_xact {
            self.lost_xact = true;
        }
        self.in_xact = false;
        let (c, conn) = self
            .rt
            .block_on(tokio_postgres::connect(&self.url, tokio_postgres::NoTls))
            .map_err(pg_error)?;
        self.rt.spawn(conn);
        // Each statement is prepared once and run many times; a generic plan made while a
        // table was small (a new database's invoices) stays a sequential scan until the
        // next ANALYZE, for every lookup by key. Planned for each run instead: a plan
        // costs microseconds, the scans grew with every row.
        let mut setup = "SET plan_cache_mode = force_custom_plan".to_string();
        if let Some(init) = &self.init {
            setup = format!("{setup}; {init}");
        }
        self.rt
            .block_on(c.batch_execute(&setup))
            .map_err(pg_error)?;
        self.generic = Some(false);
        let c = std::rc::Rc::new(c);
        self.client = Some(c.clone());
        Ok(c)
    }

    fn statement(&mut self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let pg_sql = to_postgres(sql);
        let c = self.client()?;
        let s = self.rt.block_on(c.prepare(&pg_sql)).map_err(pg_error)?;
        if self.statements.len() > 512 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// The request as a future that owns what it needs (sent when first polled).
    fn future(&mut self, req: Req) -> Result<Pending> {
        if self.lost_xact {
            // Told until the lost transaction is ended (a rollback is what happened) or a
            // new one begins.
            let ends = match &req {
                Req::Batch(sql) => opens_or_ends(sql),
                _ => None,
            };
            let rollback = matches!(&req, Req::Batch(sql)
                if controls(sql).any(|c| c == Control::Rollback));
            if ends.is_some() {
                self.lost_xact = false;
            }
            match ends {
                Some(true) => {}
                Some(false) if rollback => {
                    return Ok(Box::pin(std::future::ready(Ok(Reply::Count(0)))))
                }
                _ => {
                    return Err(Error::Postgres {
                        message: "the connection to PostgreSQL was lost with a transaction \
                                  open: it was rolled back"
                            .into(),
                        code: Some("08006".into()),
                    })
                }
            }
        }
        let c = self.client()?;
        let set_plan = match &req {
            Req::Execute(sql, _) | Req::Query(sql, _) | Req::Stream(sql, _, _) => {
                let generic = sql.trim_start().starts_with(GENERIC_PLAN);
                (self.generic != Some(generic)).then(|| {
                    self.generic = Some(generic);
                    let mode = if generic { "generic" } else { "custom" };
                    format!("SET plan_cache_mode = force_{mode}_plan")
                })
            }
            Req::Batch(sql) => {
                // A session's SET made inside a transaction or after a savepoint is undone
                // by rolling back (and by the COMMIT of an aborted transaction).
                let undoes = |c: Control| {
                    matches!(
                        c,
                        Control::Commit | Control::Rollback | Control::RollbackTo(_)
                    )
                };
                if controls(sql).any(undoes) {
                    self.generic = None;
                }
                None
            }
            Req::XactLock(_) => None,
        };
        let req = match set_plan {
            None => req,
            Some(set) => {
                // Sent first, the two go out together.
                let (c, run) = (c.clone(), self.future(req)?);
                return Ok(Box::pin(async move {
                    let (set, out) = futures_util::future::join(c.batch_execute(&set), run).await;
                    set.map_err(pg_error)?;
                    out
                }));
            }
        };
        Ok(match req {
            Req::Batch(sql) => {
                if let Some(open) = opens_or_ends(&sql) {
                    self.in_xact = open;
                    self.aborted = false;
                    self.poisoned = false;
                }
                Box::pin(async move {
                    c.batch_execute(&sql).await.map_err(pg_error)?;
                    Ok(Reply::Count(0))
                })
            }
            Req::XactLock(key) => {
                let stmt = self.statement("SELECT pg_advisory_xact_lock(?1)::text")?;
                Box::pin(async move {
                    c.query(&stmt, &[&key]).await.map_err(pg_error)?;
                    Ok(Reply::Count(0))
                })
            }
            Req::Execute(sql, values) => {
                let stmt = self.statement(&sql)?;
                Box::pin(async move {
                    let params = params_of(&values);
                    let n = c
                        .execute(&stmt, &sql_refs(&params))
                        .await
                        .map_err(pg_error)?;
                    Ok(Reply::Count(n))
                })
            }
            Req::Query(sql, values) => {
                let stmt = self.statement(&sql)?;
                Box::pin(async move {
                    let params = params_of(&values);
                    let rows = c.query(&stmt, &sql_refs(&params)).await.map_err(pg_error)?;
                    let rows = rows.iter().map(row_values).collect::<Result<Vec<_>>>()?;
                    Ok(Reply::Rows(rows))
                })
            }
            Req::Stream(sql, values, rows_to) => {
                let stmt = self.statement(&sql)?;
                Box::pin(async move {
                    use futures_util::StreamExt;
                    let params = params_of(&values);
                    let rows = c.query_raw(&stmt, params.iter()).await.map_err(pg_error)?;
                    let mut rows = std::pin::pin!(rows);
                    let mut chunk = Vec::with_capacity(STREAM_CHUNK);
                    let mut n = 0u64;
                    while let Some(r) = rows.next().await {
                        chunk.push(row_values(&r.map_err(pg_error)?)?);
                        n += 1;
                        if chunk.len() == STREAM_CHUNK {
                            let full =
                                std::mem::replace(&mut chunk, Vec::with_capacity(STREAM_CHUNK));
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
                })
            }
        })
    }

    /// Sends `req` (it is on its way to the server once this returns) without waiting.
    fn send(&mut self, req: Req) {
        let fut = match self.future(req) {
            Ok(f) => f,
            Err(e) => {
                self.failed.get_or_insert(e);
                return;
            }
        };
        let mut fut: InFlight = Box::pin(async move { fut.await.map(|_| ()) });
        // Polled once, the request is queued to the connection in the order sent; the yield
        // lets the connection write it out at once.
        let first = self.rt.block_on(async {
            let first = futures_util::poll!(fut.as_mut());
            tokio::task::yield_now().await;
            first
        });
        match first {
            std::task::Poll::Ready(out) => self.note(out),
            std::task::Poll::Pending => self.in_flight.push_back(fut),
        }
    }

    /// Keeps the first error of a request sent without waiting, for the next waited one.
    fn note(&mut self, out: Result<()>) {
        if let Err(e) = out {
            if self.in_xact {
                self.poisoned = true;
            }
            self.failed.get_or_insert(e);
        }
    }

    /// Runs `req` once the requests sent before it are answered (they go out together); the
    /// first error among them is its.
    fn wait(&mut self, req: Req) -> Result<Reply> {
        let (restores, commits) = match &req {
            Req::Batch(sql) => {
                let ending = controls(sql)
                    .filter(|c| matches!(c, Control::Commit | Control::Rollback))
                    .last();
                (
                    matches!(controls(sql).next(), Some(Control::RollbackTo(_))),
                    ending == Some(Control::Commit),
                )
            }
            _ => (false, false),
        };
        let failed_before = self.aborted || self.poisoned;
        let fut = self.future(req);
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let mut earlier = Vec::new();
        let out = match fut {
            Ok(fut) => {
                self.rt
                    .block_on(futures_util::future::join(
                        drain(&mut in_flight, &mut earlier),
                        fut,
                    ))
                    .1
            }
            Err(e) => {
                self.rt.block_on(drain(&mut in_flight, &mut earlier));
                Err(e)
            }
        };
        if self.in_xact && !earlier.is_empty() {
            self.poisoned = true;
        }
        let first_err = self.failed.take().or(earlier.into_iter().next());
        if self.in_xact && !commits {
            // PostgreSQL's COMMIT of a transaction an error aborted rolls it back, and says
            // so only in its command tag: followed here, so it is told as a failure.
            if first_err.is_some() || out.is_err() {
                self.aborted = true;
            }
            if restores && first_err.is_none() && out.is_ok() {
                self.aborted = false;
            }
        }
        let out = match first_err {
            Some(e) => Err(e),
            None => out,
        };
        if commits {
            let was_aborted = failed_before || self.aborted || self.poisoned;
            self.aborted = false;
            self.poisoned = false;
            if was_aborted && out.is_ok() {
                return Err(Error::Postgres {
                    message: "the transaction had failed: COMMIT rolled it back".into(),
                    code: Some("25P02".into()),
                });
            }
        }
        out
    }

    /// The next job; while requests sent without waiting are on their way, their answers are
    /// read meanwhile (an error kept for the next waited request). None: the handle is gone.
    fn next_job(&mut self, jobs: &mut tokio::sync::mpsc::UnboundedReceiver<Job>) -> Option<Job> {
        if self.in_flight.is_empty() {
            return self.rt.block_on(jobs.recv());
        }
        let mut in_flight = std::mem::take(&mut self.in_flight);
        let mut errors = Vec::new();
        let job = self.rt.block_on(async {
            tokio::select! {
                biased;
                job = jobs.recv() => Some(job),
                () = drain(&mut in_flight, &mut errors) => None,
            }
        });
        self.in_flight = in_flight;
        for e in errors {
            self.note(Err(e));
        }
        match job {
            Some(job) => job,
            None => self.rt.block_on(jobs.recv()),
        }
    }

    fn run(&mut self, job: Job) {
        let sql = self.stats.as_ref().map(|_| match &job {
            Job::Wait(r, _) | Job::Send(r) => sql_of(r),
        });
        let start = std::time::Instant::now();
        match job {
            Job::Wait(req, reply) => {
                let _ = reply.send(self.wait(req));
            }
            Job::Send(req) => self.send(req),
        }
        if let (Some(stats), Some(sql)) = (self.stats.as_mut(), sql) {
            stats.record(&sql, start.elapsed());
        }
    }
}

/// A request on its way, as a future.
type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply>>>>;

/// Reads the answers of the requests in flight, in order, keeping their errors; cancelled,
/// it leaves those not yet answered in place.
async fn drain(in_flight: &mut std::collections::VecDeque<InFlight>, errors: &mut Vec<Error>) {
    while let Some(f) = in_flight.front_mut() {
        let out = f.as_mut().await;
        in_flight.pop_front();
        if let Err(e) = out {
            errors.push(e);
        }
    }
}

fn sql_of(req: &Req) -> String {
    match req {
        Req::Batch(s) | Req::Execute(s, _) | Req::Query(s, _) | Req::Stream(s, _, _) => s.clone(),
        Req::XactLock(_) => "SELECT pg_advisory_xact_lock(?1)".to_string(),
    }
}

impl Pg {
    /// Connects to `url` (`postgres://user@host:port/db`); `init` runs on every (re)connect,
    /// e.g. `SET search_path`.
    pub fn connect(url: &str, init: Option<String>) -> Result<Pg> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (url_, init_) = (url.to_string(), init.clone());
        // Connected on the thread itself: its runtime may not start on a tokio one.
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::Postgres {
                            message: format!("cannot start the connection's runtime: {e}"),
                            code: None,
                        }));
                        return;
                    }
                };
                let mut worker = Worker {
                    url: url_,
                    rt,
                    client: None,
                    statements: HashMap::new(),
                    init: init_,
                    stats: Stats::from_env(),
                    in_flight: Default::default(),
                    failed: None,
                    in_xact: false,
                    lost_xact: false,
                    aborted: false,
                    poisoned: false,
                    generic: None,
                };
                let first = worker.client().map(|_| ());
                let ok = first.is_ok();
                let _ = ready_tx.send(first);
                if !ok {
                    return;
                }
                while let Some(job) = worker.next_job(&mut rx) {
                    worker.run(job);
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
            to: std::sync::Mutex::new(Sender {
                jobs: tx,
                xact: XactLocks::default(),
            }),
            url: url.to_string(),
            init,
        })
    }

    fn sender(&self) -> Result<std::sync::MutexGuard<'_, Sender>> {
        self.to.lock().map_err(|_| gone())
    }

    /// Takes the advisory lock `key` until the open transaction ends, unless it holds it
    /// already; sent without waiting (see [`Pg::send`]): the statements after it run once
    /// it is granted.
    pub(super) fn lock_xact(&self, key: i64) -> Result<()> {
        let mut to = self.sender()?;
        if to.xact.holds(key) {
            return Ok(());
        }
        to.xact.taken(key);
        to.jobs
            .send(Job::Send(Req::XactLock(key)))
            .map_err(|_| gone())
    }

    /// The number of the acquisition of the advisory lock `key` the open transaction holds.
    pub(super) fn xact_lock_taken(&self, key: i64) -> Option<u64> {
        let to = self.to.lock().ok()?;
        to.xact
            .held
            .iter()
            .find(|(k, ..)| *k == key)
            .map(|(.., n)| *n)
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
        // Two chunks in flight: the reader works while the next one is read off the wire.
        let (rows_to, rows) = mpsc::sync_channel(2);
        let (tx, rx) = mpsc::channel();
        self.sender()?
            .jobs
            .send(Job::Wait(Req::Stream(sql.to_string(), values, rows_to), tx))
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
        let done = self.answer(rx);
        match failed {
            Some(e) => Err(e),
            None => done.map(|_| ()),
        }
    }

    /// Runs `req` and waits for its answer.
    pub(super) fn call(&self, req: Req) -> Result<Reply> {
        let (tx, rx) = mpsc::channel();
        {
            let mut to = self.sender()?;
            if let Req::Batch(sql) = &req {
                to.xact.ran(sql);
            }
            to.jobs.send(Job::Wait(req, tx)).map_err(|_| gone())?;
        }
        self.answer(rx)
    }

    /// Sends `req` without waiting for it: it goes to the server with the next request that
    /// is waited for (pipelined: one round trip for both), and its error, if any, is that
    /// request's. For statements inside a transaction whose outcome nobody needs at once
    /// (savepoints, a row of a log): an error there aborts the transaction, so everything
    /// after it fails as well.
    pub(super) fn send(&self, req: Req) -> Result<()> {
        let mut to = self.sender()?;
        if let Req::Batch(sql) = &req {
            to.xact.ran(sql);
        }
        to.jobs.send(Job::Send(req)).map_err(|_| gone())
    }

    fn answer(&self, rx: mpsc::Receiver<Result<Reply>>) -> Result<Reply> {
        let out = rx.recv().map_err(|_| gone())?;
        if out.is_err() {
            if let Ok(mut to) = self.to.lock() {
                to.xact.forget();
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{controls, opens_or_ends, Control, XactLocks};

    #[test]
    fn transaction_control_is_read_one_way() {
        let read = |sql: &str| controls(sql).collect::<Vec<_>>();
        let name = |n: &str| n.to_string();
        assert_eq!(
            read("BEGIN; SAVEPOINT staged"),
            [Control::Begin, Control::Savepoint(name("STAGED"))]
        );
        assert_eq!(
            read("RELEASE staged; SAVEPOINT staged;"),
            [
                Control::Release(name("STAGED")),
                Control::Savepoint(name("STAGED"))
            ]
        );
        let to_staged = || Control::RollbackTo(name("STAGED"));
        let cases = [
            ("ROLLBACK TO staged", to_staged()),
            ("rollback to savepoint staged", to_staged()),
            ("ROLLBACK WORK TO staged", to_staged()),
            ("ROLLBACK", Control::Rollback),
            ("rollback work", Control::Rollback),
            ("ROLLBACK TRANSACTION", Control::Rollback),
            ("ABORT", Control::Rollback),
            ("COMMIT", Control::Commit),
            ("END", Control::Commit),
            ("commit and chain", Control::Commit),
            ("PREPARE TRANSACTION 'x'", Control::Commit),
            (
                "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                Control::Begin,
            ),
            ("begin", Control::Begin),
            ("SET plan_cache_mode = force_custom_plan", Control::Other),
            ("ROLLBACK PREPARED 'x'", Control::Other),
            ("COMMIT PREPARED 'x'", Control::Other),
            ("SELECT 1", Control::Other),
        ];
        for (sql, want) in cases {
            assert_eq!(read(sql), [want], "{sql}");
        }
        assert_eq!(opens_or_ends("BEGIN; SAVEPOINT staged"), Some(true));
        assert_eq!(opens_or_ends("RELEASE staged; COMMIT"), Some(false));
        assert_eq!(opens_or_ends("ROLLBACK TO staged; RELEASE staged"), None);
    }

    #[test]
    fn a_lock_taken_inside_a_savepoint_rolled_back_to_is_forgotten() {
        let mut locks = XactLocks::default();
        locks.ran("BEGIN; SAVEPOINT a");
        locks.taken(1);
        locks.ran("SAVEPOINT b");
        locks.taken(2);
        locks.ran("ROLLBACK TO b");
        assert!(locks.holds(1) && !locks.holds(2));
        // Released, what was taken in it belongs to the savepoint around it.
        locks.ran("RELEASE b; RELEASE a; SAVEPOINT c");
        locks.taken(3);
        locks.ran("ROLLBACK TO c");
        assert!(locks.holds(1) && !locks.holds(3));
        locks.ran("SET plan_cache_mode = force_generic_plan");
        assert!(locks.holds(1), "a SET leaves the locks");
        locks.ran("COMMIT");
        assert!(!locks.holds(1));
    }
}
