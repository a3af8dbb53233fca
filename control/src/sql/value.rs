//! Values as they cross the SQL layer, and the conversions from and to Rust types (the shape
//! of rusqlite's `ToSql`/`FromSql`, so the store reads as it would on rusqlite alone).

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// Why a column's value cannot become the Rust type asked for.
#[derive(Debug, thiserror::Error)]
pub enum TypeError {
    #[error("expected {expected}, got {got:?}")]
    Mismatch { expected: &'static str, got: Value },
    /// The integer does not fit the type asked for (the wording is the standard library's).
    #[error("out of range integral type conversion attempted")]
    OutOfRange,
    #[error("no such column")]
    NoSuchColumn,
    /// The PostgreSQL client could not decode the column.
    #[error("{0}")]
    Postgres(tokio_postgres::Error),
    #[error("PostgreSQL type {0} is not used by the control (cast it)")]
    UnusedPostgresType(tokio_postgres::types::Type),
}

impl TypeError {
    fn mismatch(expected: &'static str, got: &Value) -> TypeError {
        TypeError::Mismatch {
            expected,
            got: got.clone(),
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
    fn from_value(v: &Value) -> Result<Self, TypeError>;
}

macro_rules! int_from_sql {
    ($($t:ty),*) => {$(
        impl FromSql for $t {
            fn from_value(v: &Value) -> Result<Self, TypeError> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i).map_err(|_| TypeError::OutOfRange),
                    other => Err(TypeError::mismatch("an integer", other)),
                }
            }
        }
    )*};
}
int_from_sql!(i64, i32, u32, u16, u8, u64, usize);

impl FromSql for bool {
    fn from_value(v: &Value) -> Result<Self, TypeError> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromSql for f64 {
    fn from_value(v: &Value) -> Result<Self, TypeError> {
        match v {
            Value::Real(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            other => Err(TypeError::mismatch("a number", other)),
        }
    }
}
impl FromSql for String {
    fn from_value(v: &Value) -> Result<Self, TypeError> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            other => Err(TypeError::mismatch("text", other)),
        }
    }
}
impl FromSql for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self, TypeError> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            Value::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(TypeError::mismatch("bytes", other)),
        }
    }
}
impl FromSql for Value {
    fn from_value(v: &Value) -> Result<Self, TypeError> {
        Ok(v.clone())
    }
}
impl<T: FromSql> FromSql for Option<T> {
    fn from_value(v: &Value) -> Result<Self, TypeError> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_say_why_they_fail() {
        assert_eq!(u8::from_value(&Value::Int(255)).unwrap(), 255);
        assert!(matches!(
            u8::from_value(&Value::Int(256)),
            Err(TypeError::OutOfRange)
        ));
        let e = i64::from_value(&Value::Text("7".into())).unwrap_err();
        assert!(matches!(
            e,
            TypeError::Mismatch {
                expected: "an integer",
                ..
            }
        ));
        assert_eq!(e.to_string(), "expected an integer, got Text(\"7\")");
        assert_eq!(Option::<String>::from_value(&Value::Null).unwrap(), None);
        assert!(bool::from_value(&Value::Int(2)).unwrap());
    }
}
