//! Values and rows: the data model every stored batch is made of.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One cell of a row. Externally tagged so that bincode can store it (unlike `serde_json::Value`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub enum Value {
    /// No value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// UTF-8 text.
    Str(String),
    /// An ordered list of values.
    List(Vec<Value>),
    /// An ordered map of names to values.
    Map(Row),
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// An unsigned integer beyond `i64::MAX` (smaller ones are [`Value::Int`], so each number
    /// has one form). Last, so that databases written before it keep their encoding.
    UInt(u64),
}

/// An ordered map of column names to values. Columns keep the order in which they were added.
///
/// Rows are small (a handful of columns), so a vector of pairs beats a hash map in memory and
/// speed; names are unique, which [`Row::insert`] maintains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Row {
    fields: Vec<(String, Value)>,
}

impl Row {
    /// An empty row.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `column`, if present.
    pub fn get(&self, column: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(k, _)| k == column)
            .map(|(_, v)| v)
    }

    /// Whether `column` is present.
    pub fn contains(&self, column: &str) -> bool {
        self.get(column).is_some()
    }

    /// Sets `column` to `value`, replacing an existing value in place or appending a new column.
    pub fn insert(&mut self, column: impl Into<String>, value: impl Into<Value>) {
        let column = column.into();
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| *k == column) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((column, value)),
        }
    }

    /// Builder form of [`Row::insert`].
    pub fn with(mut self, column: impl Into<String>, value: impl Into<Value>) -> Self {
        self.insert(column, value);
        self
    }

    /// Removes `column` and returns its value.
    pub fn remove(&mut self, column: &str) -> Option<Value> {
        let index = self.fields.iter().position(|(k, _)| k == column)?;
        Some(self.fields.remove(index).1)
    }

    /// Renames `from` to `to` in place; does nothing when `from` is absent. An existing `to` is
    /// replaced.
    pub fn rename(&mut self, from: &str, to: &str) {
        if from == to {
            return;
        }
        if let Some(value) = self.remove(from) {
            self.insert(to, value);
        }
    }

    /// Keeps only the columns for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.fields.retain(|(k, _)| keep(k));
    }

    /// Column names in order.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(k, _)| k.as_str())
    }

    /// Columns and values in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether the row has no column.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

impl<K: Into<String>, V: Into<Value>> FromIterator<(K, V)> for Row {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut row = Row::new();
        for (k, v) in iter {
            row.insert(k, v);
        }
        row
    }
}

impl IntoIterator for Row {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.fields.into_iter()
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<i32> for Value {
    fn from(v: i32) -> Self {
        Value::Int(v.into())
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::Int(v.into())
    }
}
impl From<u64> for Value {
    /// An `Int` when it fits, else a `UInt`.
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or(Value::UInt(v), Value::Int)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<Row> for Value {
    fn from(v: Row) -> Self {
        Value::Map(v)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl Value {
    /// The text, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an int.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The integer, if this is an int or a uint that is not negative.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::UInt(u) => Some(*u),
            _ => None,
        }
    }

    /// The number as a float, if this is an int, a uint or a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// Whether this is null.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "map",
            Value::Bytes(_) => "bytes",
        }
    }

    /// Converts to JSON. Non-finite floats become null; bytes become a list of numbers.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::UInt(u) => J::from(*u),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::List(items) => J::Array(items.iter().map(Value::to_json).collect()),
            Value::Map(row) => row.to_json(),
            Value::Bytes(b) => J::Array(b.iter().map(|x| J::from(*x)).collect()),
        }
    }

    /// Converts from JSON. Integers stay integers (`Int`, or `UInt` beyond `i64::MAX`); other
    /// numbers are floats. (JSON integers beyond `u64` arrive here already as floats: readers of
    /// JSON text refuse them first, see `big_integer` in the engine's JSONL reader.)
    pub fn from_json(json: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match json {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Value::Int(i),
                (None, Some(u)) => Value::UInt(u),
                _ => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::List(items.iter().map(Value::from_json).collect()),
            J::Object(map) => Value::Map(Row::from_json_map(map)),
        }
    }
}

impl Row {
    /// Converts to a JSON object, keeping column order.
    pub fn to_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = self
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_json()))
            .collect();
        serde_json::Value::Object(map)
    }

    /// Converts from a JSON object, keeping its key order.
    pub fn from_json_map(map: &serde_json::Map<String, serde_json::Value>) -> Row {
        map.iter()
            .map(|(k, v)| (k.clone(), Value::from_json(v)))
            .collect()
    }
}

impl fmt::Display for Value {
    /// Text as itself; everything else as compact JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            other => write!(f, "{}", other.to_json()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_replaces_in_place_and_keeps_order() {
        let mut row = Row::new().with("a", 1).with("b", "x");
        row.insert("a", 2);
        row.insert("c", true);
        assert_eq!(row.columns().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(row.get("a"), Some(&Value::Int(2)));
    }

    #[test]
    fn rename_moves_value_and_replaces_target() {
        let mut row = Row::new().with("a", 1).with("b", 2);
        row.rename("a", "b");
        assert_eq!(row.len(), 1);
        assert_eq!(row.get("b"), Some(&Value::Int(1)));
        row.rename("missing", "z");
        assert!(!row.contains("z"));
    }

    #[test]
    fn json_round_trip_keeps_types_and_order() {
        let json: serde_json::Value =
            serde_json::from_str(r#"{"z":1,"a":[1.5,"s",null,{"k":true}]}"#).unwrap();
        let value = Value::from_json(&json);
        let Value::Map(row) = &value else {
            panic!("expected a map, got {value:?}")
        };
        assert_eq!(row.columns().collect::<Vec<_>>(), ["z", "a"]);
        assert_eq!(value.to_json(), json);
    }

    #[test]
    fn integers_beyond_i64_stay_exact_integers() {
        let json: serde_json::Value = serde_json::from_str("18446744073709551615").unwrap();
        let value = Value::from_json(&json);
        assert_eq!(value, Value::UInt(u64::MAX));
        assert_eq!(value.to_json(), json);
        assert_eq!(Value::from(5_u64), Value::Int(5));
        assert_eq!(Value::from(u64::MAX).as_u64(), Some(u64::MAX));
        assert_eq!(Value::Int(-1).as_u64(), None);
    }

    #[test]
    fn non_finite_float_becomes_json_null() {
        assert_eq!(Value::Float(f64::NAN).to_json(), serde_json::Value::Null);
    }
}
