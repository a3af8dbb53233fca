//! One connection over either database, with rusqlite's API (`execute`, `query_row`,
//! `prepare_cached` + `query_map`, transactions): SQLite called in place, PostgreSQL through
//! its thread (`super::pg`).

use super::pg::{Pg, Reply, Req};
use super::{Error, Params, Result, Row};

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

impl Connection {
    pub fn is_postgres(&self) -> bool {
        matches!(self, Connection::Postgres(_))
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        let values = params.values();
        match self {
            Connection::Sqlite(c) => super::sqlite::execute(c, sql, &values),
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
                let mut out = Vec::new();
                super::sqlite::for_each_row(c, sql, &values, |row| {
                    out.push(row);
                    Ok(())
                })?;
                Ok(out)
            }
            Connection::Postgres(pg) => match pg.call(Req::Query(sql.to_string(), values))? {
                Reply::Rows(rows) => Ok(rows.into_iter().map(Row::new).collect()),
                Reply::Count(_) => Ok(Vec::new()),
            },
        }
    }

    /// Each row of a query handed to `f` as it is read (SQLite: one row in memory at a time;
    /// PostgreSQL: a chunk of rows at a time, streamed from the server), for the rare passes
    /// over every rental.
    pub fn query_each<P: Params, F: FnMut(&Row) -> Result<()>>(
        &self,
        sql: &str,
        params: P,
        mut f: F,
    ) -> Result<()> {
        match self {
            Connection::Sqlite(c) => {
                super::sqlite::for_each_row(c, sql, &params.values(), |row| f(&row))
            }
            Connection::Postgres(pg) => pg.stream(sql, params.values(), |vals| f(&Row::new(vals))),
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

    /// [`Connection::execute_batch`] whose outcome nobody needs at once, inside a transaction
    /// (savepoints): PostgreSQL sends it without waiting, with the next statement that is
    /// waited for (one round trip for both); an error of it is that statement's, and the
    /// transaction's COMMIT then fails (`super::pg`).
    pub fn send_batch(&self, sql: &str) -> Result<()> {
        match self {
            Connection::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Connection::Postgres(pg) => pg.send(Req::Batch(sql.to_string())),
        }
    }

    /// [`Connection::execute`] sent as [`Connection::send_batch`] is (a row of a log).
    pub fn send<P: Params>(&self, sql: &str, params: P) -> Result<()> {
        let values = params.values();
        match self {
            Connection::Sqlite(c) => super::sqlite::execute(c, sql, &values).map(|_| ()),
            Connection::Postgres(pg) => pg.send(Req::Execute(sql.to_string(), values)),
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

    /// Whether a transaction is open (SQLite rolls one back by itself on some errors, a full
    /// disk among them; PostgreSQL keeps it open until told).
    pub fn in_transaction(&self) -> bool {
        match self {
            Connection::Sqlite(c) => !c.is_autocommit(),
            Connection::Postgres(_) => true,
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
        match self {
            Connection::Sqlite(_) => Ok(()),
            // Asked of the server once per transaction (`super::pg` follows it), without
            // waiting: the statements after it run once it is granted.
            Connection::Postgres(pg) => pg.lock_xact(key),
        }
    }

    /// While the open transaction holds the lock of [`Connection::lock_for_transaction`]
    /// `key`: a number that stays the same as long as it is held without a break, and is new
    /// after each acquisition (None on SQLite, or when not held).
    pub fn lock_held_since(&self, key: i64) -> Option<u64> {
        match self {
            Connection::Sqlite(_) => None,
            Connection::Postgres(pg) => pg.xact_lock_taken(key),
        }
    }

    /// PostgreSQL: another connection to the same database, a session of its own (work that
    /// must not wait for, nor join, this one's open transaction), `setup` run on each of its
    /// (re)connects. SQLite: None.
    pub fn another(&self, setup: Option<&str>) -> Result<Option<Connection>> {
        match self {
            Connection::Sqlite(_) => Ok(None),
            Connection::Postgres(pg) => Ok(Some(Connection::Postgres(pg.another(setup)?))),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::{params, OptionalExtension};

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
        assert!(matches!(
            c.query_row("SELECT s FROM t", [], |r| r.get::<_, i64>(0)),
            Err(Error::Type(0, crate::sql::TypeError::Mismatch { .. }))
        ));
        assert!(matches!(
            c.query_row("SELECT s FROM t", [], |r| r.get::<_, String>(1)),
            Err(Error::Type(1, crate::sql::TypeError::NoSuchColumn))
        ));
    }

    /// Statements marked with `GENERIC_PLAN` run on generic plans, the rest planned for each
    /// run, also after a rollback undid the session's `SET` (PostgreSQL only).
    #[test]
    fn plan_modes_follow_the_marker_across_rollbacks() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open_store(&dir.path().join("db")).unwrap();
        if !db.is_postgres() {
            eprintln!("SKIPPED: STATICWIRE_TEST_PG is not set (ops/test.sh sets it)");
            return;
        }
        let mode = |generic: bool| -> String {
            let sql = "SELECT current_setting('plan_cache_mode') WHERE ?1 = 1";
            let sql = match generic {
                true => format!("{} {sql}", crate::sql::GENERIC_PLAN),
                false => sql.to_string(),
            };
            db.query_row(&sql, [1i64], |r| r.get(0)).unwrap()
        };
        let (generic, custom) = ("force_generic_plan", "force_custom_plan");
        assert_eq!(mode(false), custom);
        assert_eq!(mode(true), generic);
        assert_eq!(mode(false), custom);
        // Set inside a transaction rolled back: undone by PostgreSQL, set again here.
        db.execute_batch("BEGIN").unwrap();
        assert_eq!(mode(true), generic);
        db.execute_batch("ROLLBACK").unwrap();
        assert_eq!(mode(true), generic);
        // Set after a savepoint rolled back to.
        db.execute_batch("BEGIN; SAVEPOINT s").unwrap();
        assert_eq!(mode(false), custom);
        db.execute_batch("ROLLBACK TO s").unwrap();
        assert_eq!(mode(false), custom);
        assert_eq!(mode(true), generic);
        db.execute_batch("COMMIT").unwrap();
        assert_eq!(mode(true), generic);
        assert_eq!(mode(false), custom);
    }
}
