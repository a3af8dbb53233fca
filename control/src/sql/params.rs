//! Statement parameters and result rows, in rusqlite's shapes: `[]`, `[a, b]`, `params![a, b]`
//! in, `row.get(i)?` out.

use super::{Error, FromSql, Result, ToSql, TypeError, Value};

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
    pub(super) fn new(values: Vec<Value>) -> Row {
        Row { values }
    }

    pub fn get<I: RowIndex, T: FromSql>(&self, idx: I) -> Result<T> {
        let idx = idx.index();
        let v = self
            .values
            .get(idx)
            .ok_or_else(|| Error::Type(idx, TypeError::NoSuchColumn))?;
        T::from_value(v).map_err(|e| Error::Type(idx, e))
    }
}
