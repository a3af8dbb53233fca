//! One connection type over SQLite and PostgreSQL, with the slice of rusqlite's API the
//! control uses (`execute`, `query_row`, `prepare_cached` + `query_map`/`exists`, transactions),
//! so the store's queries and the service's transactions are the same code on both.
//!
//! SQL is written once, in the dialect both accept; for PostgreSQL it is rewritten as
//! `?N` → `$N` and two-argument `MAX`/`MIN` → `GREATEST`/`LEAST`. The PostgreSQL schema keeps
//! integers as BIGINT, so values cross as i64 on both.
//!
//! PostgreSQL is driven by the synchronous `postgres` client on a thread of its own: the client
//! runs its own small runtime, which may not be entered from the tokio threads that serve the
//! API, and a blocking call on a channel behaves like a blocking SQLite call there.

use std::collections::HashMap;
use std::sync::mpsc;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {message}")]
    Postgres {
        message: String,
        /// The SQLSTATE code, when the server sent one.
        code: Option<String>,
    },
    #[error("query returned no rows")]
    NoRows,
    #[error("column {0}: {1}")]
    Type(usize, String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The database, not the request: busy, read-only, full, unreachable, or a transaction
    /// that lost a race and may be retried. Nothing was written.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Sqlite(e) => {
                use rusqlite::ErrorCode::*;
                matches!(
                    e.sqlite_error_code(),
                    Some(
                        ReadOnly
                            | DiskFull
                            | SystemIoFailure
                            | CannotOpen
                            | DatabaseBusy
                            | DatabaseLocked
                            | OutOfMemory
                    )
                )
            }
            Error::Postgres { code, .. } => match code.as_deref() {
                // No code: the connection is gone. 08: connection; 40: serialization or
                // deadlock; 53: resources; 57: shutdown; 25006: read-only transaction.
                None => true,
                Some(c) => {
                    c.starts_with("08")
                        || c.starts_with("40")
                        || c.starts_with("53")
                        || c.starts_with("57")
                        || c == "25006"
                }
            },
            _ => false,
        }
    }
}

pub trait ToSql {
    fn to_value(&self) -> Value;
}

macro_rules! int_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_value(&self) -> Value {
                Value::Int(*self as i64)
            }
        }
    )*};
}
int_to_sql!(i64, i32, u32, u16, u8, usize, u64);

impl ToSql for bool {
    fn to_value(&self) -> Value {
        Value::Int(*self as i64)
    }
}
impl ToSql for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
}
impl ToSql for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }
}
impl ToSql for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}
impl ToSql for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}
impl ToSql for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}
impl ToSql for Value {
    fn to_value(&self) -> Value {
        self.clone()
    }
}
impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}
impl<T: ToSql> ToSql for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

pub trait FromSql: Sized {
    fn from_value(v: &Value) -> std::result::Result<Self, String>;
}

macro_rules! int_from_sql {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn from_value(v: &Value) -> std::result::Result<Self, String> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i).map_err(|e| e.to_string()),
                    other => Err(format!("expected an integer, got {other:?}")),
                }
            }
        }
    )*};
}
int_from_sql!(i64, i32, u32, u16, u8, u64, usize);

impl FromSql for bool {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromSql for f64 {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(format!("expected a number, got {other:?}")),
        }
    }
}
impl FromSql for String {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(format!("expected text, got {other:?}")),
        }
    }
}
impl FromSql for Vec<u8> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(format!("expected bytes, got {other:?}")),
        }
    }
}
impl FromSql for Value {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        Ok(v.clone())
    }
}
impl<T: FromSql> FromSql for Option<T> {
    fn from_value(v: &Value) -> std::result::Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// Parameters of a statement, as rusqlite takes them: `[]`, `[a, b]`, `params![a, b]`.
pub trait Params {
    fn values(self) -> Vec<Value>;
}
impl Params for () {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}
/// `[]`: no parameters.
impl Params for [&dyn ToSql; 0] {
    fn values(self) -> Vec<Value> {
        Vec::new()
    }
}
macro_rules! array_params {
    ($($n:literal),*) => {$(
        impl<T: ToSql> Params for [T; $n] {
            fn values(self) -> Vec<Value> {
                self.iter().map(ToSql::to_value).collect()
            }
        }
        impl<T: ToSql> Params for &[T; $n] {
            fn values(self) -> Vec<Value> {
                self.iter().map(ToSql::to_value).collect()
            }
        }
    )*};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
impl Params for &[&dyn ToSql] {
    fn values(self) -> Vec<Value> {
        self.iter().map(|v| v.to_value()).collect()
    }
}
impl Params for Vec<Value> {
    fn values(self) -> Vec<Value> {
        self
    }
}

/// `params![a, b]`: parameters of mixed types.
#[macro_export]
macro_rules! params {
    () => { &[] as &[&dyn $crate::sql::ToSql] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::sql::ToSql),+] as &[&dyn $crate::sql::ToSql] };
}
pub use crate::params;

/// One result row.
#[derive(Debug, Clone)]
pub struct Row {
    values: Vec<Value>,
}

/// A column index (rusqlite's `get::<_, T>(i)` shape).
pub trait RowIndex {
    fn index(self) -> usize;
}
impl RowIndex for usize {
    fn index(self) -> usize {
        self
    }
}

impl Row {
    pub fn get<I: RowIndex, T: FromSql>(&self, idx: I) -> Result<T> {
        let idx = idx.index();
        let v = self
            .values
            .get(idx)
            .ok_or_else(|| Error::Type(idx, "no such column".into()))?;
        T::from_value(v).map_err(|e| Error::Type(idx, e))
    }
}

/// `.optional()` on a single-row result, as rusqlite's `OptionalExtension`.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}
impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(Error::NoRows) => Ok(None),
            Err(Error::Sqlite(rusqlite::Error::QueryReturnedNoRows)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

pub enum Connection {
    Sqlite(rusqlite::Connection),
    Postgres(Pg),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Connection::Sqlite(_) => "Connection::Sqlite",
            Connection::Postgres(_) => "Connection::Postgres",
        })
    }
}

fn to_rusqlite(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Int(i) => V::Integer(*i),
        Value::Real(f) => V::Real(*f),
        Value::Text(s) => V::Text(s.clone()),
        Value::Blob(b) => V::Blob(b.clone()),
    }
}

fn from_rusqlite(v: rusqlite::types::ValueRef<'_>) -> Value {
    use rusqlite::types::ValueRef as V;
    match v {
        V::Null => Value::Null,
        V::Integer(i) => Value::Int(i),
        V::Real(f) => Value::Real(f),
        V::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        V::Blob(b) => Value::Blob(b.to_vec()),
    }
}

impl Connection {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Connection::Postgres(_))
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let values = params.values();
        match self {
            Connection::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                Ok(stmt.execute(rusqlite::params_from_iter(values.iter().map(to_rusqlite)))?)
            }
            Connection::Postgres(pg) => {
                pg.call(Req::Execute(sql.to_string(), values))
                    .map(|r| match r {
                        Reply::Count(n) => n as usize,
                        Reply::Rows(_) => 0,
                    })
            }
        }
    }

    /// Every row of a query.
    pub fn query_all<P: Params>(&self, sql: &str, params: P) -> Result<Vec<Row>> {
        let values = params.values();
        match self {
            Connection::Sqlite(c) => {
                let mut stmt = c.prepare_cached(sql)?;
                let n = stmt.column_count();
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(values.iter().map(to_rusqlite)))?;
                let mut out = Vec::new();
                while let Some(r) = rows.next()? {
                    let mut vals = Vec::with_capacity(n);
                    for i in 0..n {
                        vals.push(from_rusqlite(r.get_ref(i)?));
                    }
                    out.push(Row { values: vals });
                }
                Ok(out)
            }
            Connection::Postgres(pg) => match pg.call(Req::Query(sql.to_string(), values))? {
                Reply::Rows(rows) => Ok(rows.into_iter().map(|values| Row { values }).collect()),
                Reply::Count(_) => Ok(Vec::new()),
            },
        }
    }

    /// Each row of a query handed to `f` as it is read (SQLite: one row in memory at a time;
    /// PostgreSQL: the rows are fetched first), for the rare passes over every rental.
    pub fn query_each<P: Params, F: FnMut(&Row) -> Result<()>>(
        &self,
        sql: &str,
        params: P,
        mut f: F,
    ) -> Result<()> {
        match self {
            Connection::Sqlite(c) => {
                let values = params.values();
                let mut stmt = c.prepare_cached(sql)?;
                let n = stmt.column_count();
                let mut rows =
                    stmt.query(rusqlite::params_from_iter(values.iter().map(to_rusqlite)))?;
                while let Some(r) = rows.next()? {
                    let mut vals = Vec::with_capacity(n);
                    for i in 0..n {
                        vals.push(from_rusqlite(r.get_ref(i)?));
                    }
                    f(&Row { values: vals })?;
                }
                Ok(())
            }
            Connection::Postgres(_) => {
                for row in self.query_all(sql, params)? {
                    f(&row)?;
                }
                Ok(())
            }
        }
    }

    pub fn query_row<T, P: Params, F: FnOnce(&Row) -> Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> Result<T> {
        let rows = self.query_all(sql, params)?;
        f(rows.first().ok_or(Error::NoRows)?)
    }

    /// Several statements without parameters (schema changes).
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Connection::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Connection::Postgres(pg) => pg.call(Req::Batch(sql.to_string())).map(|_| ()),
        }
    }

    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        Ok(Statement {
            conn: self,
            sql: sql.to_string(),
        })
    }

    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        self.prepare(sql)
    }

    /// The id of the row the last INSERT made on this connection.
    pub fn last_insert_rowid(&self) -> i64 {
        match self {
            Connection::Sqlite(c) => c.last_insert_rowid(),
            Connection::Postgres(_) => self
                .query_row("SELECT lastval()", [], |r| r.get(0))
                .unwrap_or(0),
        }
    }

    pub fn transaction(&mut self) -> Result<Transaction<'_>> {
        Transaction::begin(self)
    }

    /// A transaction from a shared reference (migrations), as rusqlite's.
    pub fn unchecked_transaction(&self) -> Result<Transaction<'_>> {
        Transaction::begin(self)
    }

    /// Serializes the callers of `key` across every replica until the transaction ends
    /// (PostgreSQL advisory lock). On SQLite one writer at a time is already the rule.
    pub fn lock_for_transaction(&self, key: i64) -> Result<()> {
        if self.is_postgres() {
            self.query_all("SELECT pg_advisory_xact_lock(?1)::text", [key])?;
        }
        Ok(())
    }
}

pub struct Statement<'c> {
    conn: &'c Connection,
    sql: String,
}

impl Statement<'_> {
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        self.conn.execute(&self.sql, params)
    }

    pub fn query_map<T, P: Params, F: FnMut(&Row) -> Result<T>>(
        &mut self,
        params: P,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.conn.query_all(&self.sql, params)?;
        Ok(rows.iter().map(&mut f).collect::<Vec<_>>().into_iter())
    }
}

/// Rolled back when dropped without `commit`.
pub struct Transaction<'c> {
    conn: &'c Connection,
    done: bool,
}

impl<'c> Transaction<'c> {
    fn begin(conn: &'c Connection) -> Result<Self> {
        conn.execute_batch("BEGIN")?;
        Ok(Transaction { conn, done: false })
    }

    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.conn.execute_batch("COMMIT")
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// The SQL the control writes, in PostgreSQL's spelling.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut in_str = false;
    let mut next_anon = 1;
    while let Some(c) = chars.next() {
        if c == '\'' {
            in_str = !in_str;
            out.push(c);
        } else if c == '?' && !in_str {
            let mut n = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                n.push(*d);
                chars.next();
            }
            if n.is_empty() {
                n = next_anon.to_string();
                next_anon += 1;
            }
            out.push('$');
            out.push_str(&n);
        } else {
            out.push(c);
        }
    }
    scalar_max_min(&out)
}

/// `MAX(a, b)` → `GREATEST(a, b)` and `MIN(a, b)` → `LEAST(a, b)`; aggregates (one argument)
/// stay.
fn scalar_max_min(sql: &str) -> String {
    let mut out = sql.to_string();
    for (from, to) in [("MAX(", "GREATEST("), ("MIN(", "LEAST(")] {
        let mut at = 0;
        while let Some(i) = out[at..].to_ascii_uppercase().find(from).map(|i| i + at) {
            let word_start = i == 0
                || !out.as_bytes()[i - 1].is_ascii_alphanumeric() && out.as_bytes()[i - 1] != b'_';
            let open = i + from.len() - 1;
            let mut depth = 0;
            let mut top_comma = false;
            for (j, ch) in out[open..].char_indices() {
                match ch {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            let _ = j;
                            break;
                        }
                    }
                    ',' if depth == 1 => top_comma = true,
                    _ => {}
                }
            }
            if word_start && top_comma {
                out.replace_range(i..i + from.len(), to);
                at = i + to.len();
            } else {
                at = i + from.len();
            }
        }
    }
    out
}

enum Req {
    Execute(String, Vec<Value>),
    Query(String, Vec<Value>),
    Batch(String),
}

enum Reply {
    Count(u64),
    Rows(Vec<Vec<Value>>),
}

type Job = (Req, mpsc::Sender<Result<Reply>>);

/// A PostgreSQL connection on its own thread.
pub struct Pg {
    jobs: std::sync::Mutex<mpsc::Sender<Job>>,
}

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
    let err = |e: postgres::Error| Error::Type(i, e.to_string());
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
        other => {
            return Err(Error::Type(
                i,
                format!("PostgreSQL type {other} is not used by the control (cast it)"),
            ))
        }
    }
    .unwrap_or(Value::Null))
}

struct Worker {
    url: String,
    client: Option<postgres::Client>,
    statements: HashMap<String, postgres::Statement>,
    init: Option<String>,
}

impl Worker {
    fn client(&mut self) -> Result<&mut postgres::Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.statements.clear();
            let mut c = postgres::Client::connect(&self.url, postgres::NoTls).map_err(pg_error)?;
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
        match req {
            Req::Batch(sql) => {
                self.client()?.batch_execute(&sql).map_err(pg_error)?;
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
            init,
        };
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
        })
    }

    fn call(&self, req: Req) -> Result<Reply> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_rewritten_for_postgres() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '?'"
        );
        assert_eq!(to_postgres("VALUES (?, ?)"), "VALUES ($1, $2)");
        assert_eq!(
            to_postgres("SET x = MAX(x, ?1), y = max(y), z = MIN((a), b)"),
            "SET x = GREATEST(x, $1), y = max(y), z = LEAST((a), b)"
        );
        assert_eq!(
            to_postgres("SELECT COALESCE(MAX(n), 0), ARGMAX(a, b)"),
            "SELECT COALESCE(MAX(n), 0), ARGMAX(a, b)"
        );
    }

    #[test]
    fn sqlite_round_trip_with_the_rusqlite_shaped_api() {
        let c = Connection::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        c.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, n INTEGER)")
            .unwrap();
        let mut c = c;
        let tx = c.transaction().unwrap();
        tx.execute("INSERT INTO t(s, n) VALUES (?1, ?2)", params!["a", 5i64])
            .unwrap();
        let id = tx.last_insert_rowid();
        tx.commit().unwrap();
        {
            let tx = c.transaction().unwrap();
            tx.execute("INSERT INTO t(s, n) VALUES (?1, NULL)", ["dropped"])
                .unwrap();
        }
        let (s, n): (String, Option<i64>) = c
            .query_row("SELECT s, n FROM t WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((s.as_str(), n), ("a", Some(5)));
        let count: i64 = c
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 1, "the dropped transaction rolled back");
        assert!(c
            .query_row("SELECT s FROM t WHERE id = 99", [], |r| r
                .get::<_, String>(0))
            .optional()
            .unwrap()
            .is_none());
        assert!(c
            .query_row("SELECT s FROM t", [], |r| r.get::<_, i64>(0))
            .is_err());
    }
}
