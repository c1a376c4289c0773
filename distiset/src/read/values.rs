//! Arrow arrays to [`Value`]s: every type `datasets` and pyarrow write has a value.
//!
//! Integers of every width are ints (unsigned ones beyond `i64::MAX` are uints), floats of
//! every width are 64-bit floats (a float32 is widened exactly: 0.1f32 reads as
//! 0.10000000149011612, as Python shows it), strings (also large and view) are strings, binary
//! of every kind is bytes, lists (also large and fixed-size) are lists, structs are maps, maps
//! are lists of `{key, value}` maps, dictionary-encoded columns are their values. Dates are
//! `YYYY-MM-DD`; timestamps are RFC 3339 text (`2024-05-01T12:30:00.5Z`; the UTC instant, with
//! `Z`, when the column has a time zone; no offset when it has none); times are `HH:MM:SS[.f]`;
//! durations are an integer count of the column's unit; decimals are their exact text.
//! Interval, union, run-end-encoded and list-view columns have no value: an error.

use arrow_array::cast::AsArray;
use arrow_array::temporal_conversions as tc;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type,
    DurationMicrosecondType, DurationMillisecondType, DurationNanosecondType, DurationSecondType,
    Float16Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    Time32MillisecondType, Time32SecondType, Time64MicrosecondType, Time64NanosecondType,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrowPrimitiveType, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use distill_storage::{Row, Value};

/// The first type inside `data_type` that has no [`Value`] (itself, or a nested one).
pub fn unsupported(data_type: &DataType) -> Option<&DataType> {
    use DataType as D;
    match data_type {
        D::Null
        | D::Boolean
        | D::Int8
        | D::Int16
        | D::Int32
        | D::Int64
        | D::UInt8
        | D::UInt16
        | D::UInt32
        | D::UInt64
        | D::Float16
        | D::Float32
        | D::Float64
        | D::Utf8
        | D::LargeUtf8
        | D::Utf8View
        | D::Binary
        | D::LargeBinary
        | D::BinaryView
        | D::FixedSizeBinary(_)
        | D::Date32
        | D::Date64
        | D::Timestamp(_, _)
        | D::Time32(TimeUnit::Second | TimeUnit::Millisecond)
        | D::Time64(TimeUnit::Microsecond | TimeUnit::Nanosecond)
        | D::Duration(_)
        | D::Decimal32(_, _)
        | D::Decimal64(_, _)
        | D::Decimal128(_, _)
        | D::Decimal256(_, _) => None,
        D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) | D::Map(f, _) => {
            unsupported(f.data_type())
        }
        D::Struct(fields) => fields.iter().find_map(|f| unsupported(f.data_type())),
        D::Dictionary(_, values) => unsupported(values),
        other => Some(other),
    }
}

/// The rows of `batch`, columns in the batch's order.
pub fn batch_rows(batch: &RecordBatch) -> Vec<Row> {
    let schema = batch.schema();
    let mut columns: Vec<(String, std::vec::IntoIter<Value>)> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| (field.name().clone(), values(array.as_ref()).into_iter()))
        .collect();
    (0..batch.num_rows())
        .map(|_| {
            columns
                .iter_mut()
                .map(|(name, values)| (name.clone(), values.next().unwrap_or_default()))
                .collect()
        })
        .collect()
}

/// `batch` with its columns in the order of `order` (a projection returns them in the file's).
pub fn in_order(
    batch: RecordBatch,
    order: &[String],
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let schema = batch.schema();
    if schema.fields().iter().map(|f| f.name()).eq(order.iter()) {
        return Ok(batch);
    }
    let indices = order
        .iter()
        .map(|name| schema.index_of(name))
        .collect::<Result<Vec<_>, _>>()?;
    batch.project(&indices)
}

fn primitive<T: ArrowPrimitiveType>(a: &dyn Array, f: impl Fn(T::Native) -> Value) -> Vec<Value> {
    let a = a.as_primitive::<T>();
    (0..a.len())
        .map(|i| {
            if a.is_null(i) {
                Value::Null
            } else {
                f(a.value(i))
            }
        })
        .collect()
}

fn each(len: usize, is_null: impl Fn(usize) -> bool, f: impl Fn(usize) -> Value) -> Vec<Value> {
    (0..len)
        .map(|i| if is_null(i) { Value::Null } else { f(i) })
        .collect()
}

fn text(value: Option<String>) -> Value {
    value.map_or(Value::Null, Value::Str)
}

fn date(d: Option<chrono::NaiveDateTime>) -> Value {
    text(d.map(|d| d.format("%Y-%m-%d").to_string()))
}

fn timestamp(d: Option<chrono::NaiveDateTime>, zoned: bool) -> Value {
    text(d.map(|d| {
        let mut s = d.format("%Y-%m-%dT%H:%M:%S%.f").to_string();
        if zoned {
            s.push('Z');
        }
        s
    }))
}

fn time(t: Option<chrono::NaiveTime>) -> Value {
    text(t.map(|t| t.format("%H:%M:%S%.f").to_string()))
}

/// A list-like column: the child's values cut at `bounds` (each row's start and end in the
/// child, or `None` for a null row).
fn nested(child: Vec<Value>, bounds: impl Iterator<Item = Option<(usize, usize)>>) -> Vec<Value> {
    let mut child = child.into_iter().enumerate().peekable();
    bounds
        .map(|b| match b {
            None => Value::Null,
            Some((start, end)) => {
                while child.peek().is_some_and(|(i, _)| *i < start) {
                    child.next();
                }
                let mut items = Vec::with_capacity(end - start);
                while let Some((_, v)) = child.next_if(|(i, _)| *i < end) {
                    items.push(v);
                }
                Value::List(items)
            }
        })
        .collect()
}

/// The values of `array`, one per row. Types [`unsupported`] names become nulls: check the
/// schema first.
pub fn values(array: &dyn Array) -> Vec<Value> {
    use DataType as D;
    let n = array.len();
    let null = |i| array.is_null(i);
    match array.data_type() {
        D::Null => vec![Value::Null; n],
        D::Boolean => {
            let a = array.as_boolean();
            each(n, null, |i| Value::Bool(a.value(i)))
        }
        D::Int8 => primitive::<Int8Type>(array, |v| Value::Int(v.into())),
        D::Int16 => primitive::<Int16Type>(array, |v| Value::Int(v.into())),
        D::Int32 => primitive::<Int32Type>(array, |v| Value::Int(v.into())),
        D::Int64 => primitive::<Int64Type>(array, Value::Int),
        D::UInt8 => primitive::<UInt8Type>(array, |v| Value::Int(v.into())),
        D::UInt16 => primitive::<UInt16Type>(array, |v| Value::Int(v.into())),
        D::UInt32 => primitive::<UInt32Type>(array, |v| Value::Int(v.into())),
        D::UInt64 => primitive::<UInt64Type>(array, Value::from),
        D::Float16 => primitive::<Float16Type>(array, |v| Value::Float(v.to_f64())),
        D::Float32 => primitive::<Float32Type>(array, |v| Value::Float(v.into())),
        D::Float64 => primitive::<Float64Type>(array, Value::Float),
        D::Utf8 => {
            let a = array.as_string::<i32>();
            each(n, null, |i| Value::Str(a.value(i).to_owned()))
        }
        D::LargeUtf8 => {
            let a = array.as_string::<i64>();
            each(n, null, |i| Value::Str(a.value(i).to_owned()))
        }
        D::Utf8View => {
            let a = array.as_string_view();
            each(n, null, |i| Value::Str(a.value(i).to_owned()))
        }
        D::Binary => {
            let a = array.as_binary::<i32>();
            each(n, null, |i| Value::Bytes(a.value(i).to_vec()))
        }
        D::LargeBinary => {
            let a = array.as_binary::<i64>();
            each(n, null, |i| Value::Bytes(a.value(i).to_vec()))
        }
        D::BinaryView => {
            let a = array.as_binary_view();
            each(n, null, |i| Value::Bytes(a.value(i).to_vec()))
        }
        D::FixedSizeBinary(_) => {
            let a = array.as_fixed_size_binary();
            each(n, null, |i| Value::Bytes(a.value(i).to_vec()))
        }
        D::Date32 => primitive::<Date32Type>(array, |v| date(tc::date32_to_datetime(v))),
        D::Date64 => primitive::<Date64Type>(array, |v| date(tc::date64_to_datetime(v))),
        D::Timestamp(unit, tz) => {
            let z = tz.is_some();
            match unit {
                TimeUnit::Second => primitive::<TimestampSecondType>(array, |v| {
                    timestamp(tc::timestamp_s_to_datetime(v), z)
                }),
                TimeUnit::Millisecond => primitive::<TimestampMillisecondType>(array, |v| {
                    timestamp(tc::timestamp_ms_to_datetime(v), z)
                }),
                TimeUnit::Microsecond => primitive::<TimestampMicrosecondType>(array, |v| {
                    timestamp(tc::timestamp_us_to_datetime(v), z)
                }),
                TimeUnit::Nanosecond => primitive::<TimestampNanosecondType>(array, |v| {
                    timestamp(tc::timestamp_ns_to_datetime(v), z)
                }),
            }
        }
        D::Time32(TimeUnit::Second) => {
            primitive::<Time32SecondType>(array, |v| time(tc::time32s_to_time(v)))
        }
        D::Time32(TimeUnit::Millisecond) => {
            primitive::<Time32MillisecondType>(array, |v| time(tc::time32ms_to_time(v)))
        }
        D::Time64(TimeUnit::Microsecond) => {
            primitive::<Time64MicrosecondType>(array, |v| time(tc::time64us_to_time(v)))
        }
        D::Time64(TimeUnit::Nanosecond) => {
            primitive::<Time64NanosecondType>(array, |v| time(tc::time64ns_to_time(v)))
        }
        D::Duration(TimeUnit::Second) => primitive::<DurationSecondType>(array, Value::Int),
        D::Duration(TimeUnit::Millisecond) => {
            primitive::<DurationMillisecondType>(array, Value::Int)
        }
        D::Duration(TimeUnit::Microsecond) => {
            primitive::<DurationMicrosecondType>(array, Value::Int)
        }
        D::Duration(TimeUnit::Nanosecond) => primitive::<DurationNanosecondType>(array, Value::Int),
        D::Decimal32(_, _) => {
            let a = array.as_primitive::<Decimal32Type>();
            each(n, null, |i| Value::Str(a.value_as_string(i)))
        }
        D::Decimal64(_, _) => {
            let a = array.as_primitive::<Decimal64Type>();
            each(n, null, |i| Value::Str(a.value_as_string(i)))
        }
        D::Decimal128(_, _) => {
            let a = array.as_primitive::<Decimal128Type>();
            each(n, null, |i| Value::Str(a.value_as_string(i)))
        }
        D::Decimal256(_, _) => {
            let a = array.as_primitive::<Decimal256Type>();
            each(n, null, |i| Value::Str(a.value_as_string(i)))
        }
        D::List(_) => {
            let a = array.as_list::<i32>();
            let offsets = a.value_offsets();
            nested(
                values(a.values().as_ref()),
                (0..n).map(|i| {
                    (!a.is_null(i)).then(|| (offsets[i] as usize, offsets[i + 1] as usize))
                }),
            )
        }
        D::LargeList(_) => {
            let a = array.as_list::<i64>();
            let offsets = a.value_offsets();
            nested(
                values(a.values().as_ref()),
                (0..n).map(|i| {
                    (!a.is_null(i)).then(|| (offsets[i] as usize, offsets[i + 1] as usize))
                }),
            )
        }
        D::FixedSizeList(_, _) => {
            let a = array.as_fixed_size_list();
            let len = a.value_length() as usize;
            nested(
                values(a.values().as_ref()),
                (0..n).map(|i| {
                    (!a.is_null(i)).then(|| {
                        let start = a.value_offset_at(i);
                        (start, start + len)
                    })
                }),
            )
        }
        D::Map(_, _) => {
            let a = array.as_map();
            let offsets = a.value_offsets();
            let entries: &dyn Array = a.entries();
            nested(
                values(entries),
                (0..n).map(|i| {
                    (!a.is_null(i)).then(|| (offsets[i] as usize, offsets[i + 1] as usize))
                }),
            )
        }
        D::Struct(fields) => {
            let a = array.as_struct();
            let mut children: Vec<(String, std::vec::IntoIter<Value>)> = fields
                .iter()
                .zip(a.columns())
                .map(|(f, c)| (f.name().clone(), values(c.as_ref()).into_iter()))
                .collect();
            (0..n)
                .map(|i| {
                    let row: Row = children
                        .iter_mut()
                        .map(|(name, vals)| (name.clone(), vals.next().unwrap_or_default()))
                        .collect();
                    if a.is_null(i) {
                        Value::Null
                    } else {
                        Value::Map(row)
                    }
                })
                .collect()
        }
        D::Dictionary(_, _) => {
            let a = array.as_any_dictionary();
            let dictionary = values(a.values().as_ref());
            let keys = a.normalized_keys();
            each(n, null, |i| {
                dictionary.get(keys[i]).cloned().unwrap_or_default()
            })
        }
        _ => vec![Value::Null; n],
    }
}
