//! SQLite called in place through rusqlite: statements from its cache, values converted at
//! the boundary, rows read one at a time.

use super::{Result, Row, Value};

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

pub(super) fn execute(c: &rusqlite::Connection, sql: &str, values: &[Value]) -> Result<usize> {
    let mut stmt = c.prepare_cached(sql)?;
    Ok(stmt.execute(rusqlite::params_from_iter(values.iter().map(to_rusqlite)))?)
}

/// Each row of a query handed to `f` as it is read: one row in memory at a time.
pub(super) fn for_each_row(
    c: &rusqlite::Connection,
    sql: &str,
    values: &[Value],
    mut f: impl FnMut(Row) -> Result<()>,
) -> Result<()> {
    let mut stmt = c.prepare_cached(sql)?;
    let n = stmt.column_count();
    let mut rows = stmt.query(rusqlite::params_from_iter(values.iter().map(to_rusqlite)))?;
    while let Some(r) = rows.next()? {
        let mut vals = Vec::with_capacity(n);
        for i in 0..n {
            vals.push(from_rusqlite(r.get_ref(i)?));
        }
        f(Row::new(vals))?;
    }
    Ok(())
}
