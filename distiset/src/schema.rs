//! Column types inferred from values, for Parquet.
//!
//! Rules, applied value by value down each column:
//! - null goes with anything: the column is nullable and takes the other values' type;
//! - ints are Int64, unless one is beyond `i64::MAX` and none is negative: then UInt64 (a
//!   column holding both a negative int and one beyond `i64::MAX` has no integer type: text);
//! - ints and floats make float;
//! - lists merge their items' types; maps become structs with the union of their fields
//!   (a field missing from a row is null);
//! - any other mix (say a string and an int, or a list and a map) makes the column text:
//!   strings are kept as they are, other values are written as compact JSON;
//! - a column with only nulls is a text column of nulls.

use distill_storage::{Row, Value};
use serde::{Deserialize, Serialize};

/// The inferred type of a column or of a nested value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Ty {
    /// Only nulls seen so far.
    Null,
    /// Booleans.
    Bool,
    /// 64-bit integers.
    Int,
    /// 64-bit floats (ints are widened).
    Float,
    /// UTF-8 text.
    Str,
    /// Raw bytes.
    Bytes,
    /// Lists of the inner type.
    List(Box<Ty>),
    /// Structs with these fields, in first-seen order.
    Struct(Vec<(String, Ty)>),
    /// Mixed kinds: text, with non-strings as JSON.
    Json,
    /// 64-bit integers, none negative so far (written as Int64 like [`Ty::Int`]).
    NonNegInt,
    /// Unsigned 64-bit integers: none negative, at least one beyond `i64::MAX`.
    UInt,
}

impl Ty {
    /// The type of one value.
    pub fn of(value: &Value) -> Ty {
        match value {
            Value::Null => Ty::Null,
            Value::Bool(_) => Ty::Bool,
            Value::Int(i) if *i < 0 => Ty::Int,
            Value::Int(_) => Ty::NonNegInt,
            Value::UInt(_) => Ty::UInt,
            Value::Float(_) => Ty::Float,
            Value::Str(_) => Ty::Str,
            Value::Bytes(_) => Ty::Bytes,
            Value::List(items) => Ty::List(Box::new(
                items.iter().fold(Ty::Null, |t, v| t.merge(&Ty::of(v))),
            )),
            Value::Map(row) => {
                Ty::Struct(row.iter().map(|(k, v)| (k.to_owned(), Ty::of(v))).collect())
            }
        }
    }

    /// The type that holds values of both `self` and `other`.
    pub fn merge(self, other: &Ty) -> Ty {
        match (self, other) {
            (Ty::Null, t) => t.clone(),
            (t, Ty::Null) => t,
            (Ty::Int | Ty::NonNegInt | Ty::UInt, Ty::Float)
            | (Ty::Float, Ty::Int | Ty::NonNegInt | Ty::UInt) => Ty::Float,
            (Ty::Int, Ty::NonNegInt) | (Ty::NonNegInt, Ty::Int) => Ty::Int,
            (Ty::NonNegInt, Ty::UInt) | (Ty::UInt, Ty::NonNegInt) => Ty::UInt,
            (Ty::List(a), Ty::List(b)) => Ty::List(Box::new(a.merge(b))),
            (Ty::Struct(mut fields), Ty::Struct(more)) => {
                for (name, ty) in more {
                    match fields.iter_mut().find(|(n, _)| n == name) {
                        Some((_, t)) => *t = std::mem::replace(t, Ty::Null).merge(ty),
                        None => fields.push((name.clone(), ty.clone())),
                    }
                }
                Ty::Struct(fields)
            }
            (a, b) if a == *b => a,
            _ => Ty::Json,
        }
    }
}

/// How many non-finite floats (NaN, ±Infinity) `value` holds, at any depth: what JSON can
/// only write as null.
pub(crate) fn non_finite(value: &Value) -> u64 {
    match value {
        Value::Float(f) if !f.is_finite() => 1,
        Value::List(items) => items.iter().map(non_finite).sum(),
        Value::Map(row) => row.iter().map(|(_, v)| non_finite(v)).sum(),
        _ => 0,
    }
}

/// Column names in first-seen order and their types, over all `rows`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inferred {
    /// Columns and types.
    pub columns: Vec<(String, Ty)>,
}

impl Inferred {
    /// Takes a row into account.
    pub fn add(&mut self, row: &Row) {
        for (name, value) in row.iter() {
            let ty = Ty::of(value);
            match self.columns.iter_mut().find(|(n, _)| n == name) {
                Some((_, t)) => *t = std::mem::replace(t, Ty::Null).merge(&ty),
                None => self.columns.push((name.to_owned(), ty)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(values: Vec<Value>) -> Ty {
        let mut inferred = Inferred::default();
        for v in values {
            inferred.add(&Row::new().with("c", v));
        }
        inferred.columns.remove(0).1
    }

    #[test]
    fn integers_beyond_i64_make_uint64_unless_a_negative_one_is_there() {
        let big = Value::UInt(u64::MAX);
        assert_eq!(infer(vec![Value::Int(3), big.clone()]), Ty::UInt);
        assert_eq!(
            infer(vec![big.clone(), Value::Null, Value::Int(0)]),
            Ty::UInt
        );
        assert_eq!(infer(vec![Value::Int(-3), big.clone()]), Ty::Json);
        assert_eq!(infer(vec![big, Value::Float(0.5)]), Ty::Float);
        assert_eq!(infer(vec![Value::Int(2), Value::Int(-1)]), Ty::Int);
    }

    #[test]
    fn rules() {
        assert_eq!(infer(vec![Value::Null, Value::Int(-1)]), Ty::Int);
        assert_eq!(infer(vec![Value::Null, Value::Int(1)]), Ty::NonNegInt);
        assert_eq!(infer(vec![Value::Int(1), Value::Float(0.5)]), Ty::Float);
        assert_eq!(infer(vec![Value::from("a"), Value::Int(1)]), Ty::Json);
        assert_eq!(infer(vec![Value::Null]), Ty::Null);
        assert_eq!(
            infer(vec![
                Value::from(vec![1, 2]),
                Value::List(vec![Value::Float(1.5), Value::Null])
            ]),
            Ty::List(Box::new(Ty::Float))
        );
        let a = Value::Map(Row::new().with("x", 1));
        let b = Value::Map(Row::new().with("y", "s").with("x", Value::Null));
        assert_eq!(
            infer(vec![a, b]),
            Ty::Struct(vec![("x".into(), Ty::NonNegInt), ("y".into(), Ty::Str)])
        );
        assert_eq!(
            infer(vec![Value::from(vec![1]), Value::Map(Row::new())]),
            Ty::Json
        );
    }
}
