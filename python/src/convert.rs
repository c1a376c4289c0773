//! Values across the boundary: distill's `Value` as Python objects and back, and JSON (step
//! parameters, status reports) through Python's `json` module.

use distill_storage::{Row, Value};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use std::collections::HashMap;

/// A value as a Python object: None, bool, int, float, str, list, dict, bytes.
pub fn value_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::UInt(u) => u.into_pyobject(py)?.into_any(),
        Value::Float(f) => PyFloat::new(py, *f).into_any(),
        Value::Str(s) => PyString::new(py, s).into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(row) => {
            let dict = PyDict::new(py);
            for (k, v) in row.iter() {
                dict.set_item(k, value_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// Rows as a list of dicts; column names are made into Python strings once per batch.
pub fn rows_to_py<'py>(py: Python<'py>, rows: &[Row]) -> PyResult<Bound<'py, PyList>> {
    let mut keys: HashMap<&str, Bound<'py, PyString>> = HashMap::new();
    let list = PyList::empty(py);
    for row in rows {
        let dict = PyDict::new(py);
        for (k, v) in row.iter() {
            let key = keys
                .entry(k)
                .or_insert_with(|| PyString::intern(py, k))
                .clone();
            dict.set_item(key, value_to_py(py, v)?)?;
        }
        list.append(dict)?;
    }
    Ok(list)
}

/// A Python object as a value. Where it is (`row 3, column 'x'`) is added by the caller.
pub fn py_to_value(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if let Ok(i) = obj.cast::<PyInt>() {
        if let Ok(v) = i.extract::<i64>() {
            return Ok(Value::Int(v));
        }
        return match i.extract::<u64>() {
            Ok(v) => Ok(Value::UInt(v)),
            Err(_) => Err(PyValueError::new_err(format!(
                "the integer {i} is beyond the 64-bit range distill stores"
            ))),
        };
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::Str(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return Ok(Value::Map(dict_to_row(d)?));
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return l
            .iter()
            .map(|item| py_to_value(&item))
            .collect::<PyResult<_>>()
            .map(Value::List);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t
            .iter()
            .map(|item| py_to_value(&item))
            .collect::<PyResult<_>>()
            .map(Value::List);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Value::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Value::Bytes(b.to_vec()));
    }
    // Numbers of other libraries (numpy's, say): integers by `__index__`, floats by `__float__`.
    if obj.hasattr("__index__")? {
        return py_to_value(&obj.call_method0("__index__")?);
    }
    if obj.hasattr("__float__")? {
        return py_to_value(&obj.call_method0("__float__")?);
    }
    Err(PyTypeError::new_err(format!(
        "a value of type '{}' cannot be stored (distill stores None, bool, int, float, str, bytes, lists and dicts of them)",
        obj.get_type().name()?
    )))
}

/// A dict with string keys as a row, keys in the dict's order.
pub fn dict_to_row(dict: &Bound<'_, PyDict>) -> PyResult<Row> {
    let mut fields = Vec::with_capacity(dict.len());
    for (k, v) in dict.iter() {
        let key = k.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!(
                "a row's keys are column names (str), not {}",
                k.repr().map(|r| r.to_string()).unwrap_or_default()
            ))
        })?;
        let key = key.to_cow()?.into_owned();
        let value = py_to_value(&v).map_err(|e| in_column(v.py(), e, &key))?;
        fields.push((key, value));
    }
    Ok(fields.into_iter().collect())
}

/// Rows from a Python iterable of dicts; errors name the row and column.
pub fn py_to_rows(obj: &Bound<'_, PyAny>) -> PyResult<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, item) in obj.try_iter()?.enumerate() {
        let item = item?;
        let dict = item.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!(
                "row {i}: a row is a dict of column names to values, not '{}'",
                item.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        rows.push(dict_to_row(dict).map_err(|e| in_row(item.py(), e, i))?);
    }
    Ok(rows)
}

fn prefixed(py: Python<'_>, err: PyErr, prefix: &str) -> PyErr {
    let message = format!("{prefix}{}", err.value(py));
    if err.is_instance_of::<PyTypeError>(py) {
        PyTypeError::new_err(message)
    } else {
        PyValueError::new_err(message)
    }
}

fn in_column(py: Python<'_>, err: PyErr, column: &str) -> PyErr {
    prefixed(py, err, &format!("column '{column}': "))
}

fn in_row(py: Python<'_>, err: PyErr, row: usize) -> PyErr {
    prefixed(py, err, &format!("row {row}, "))
}

/// A JSON value as a Python object (through `json.loads`).
pub fn json_to_py<'py>(py: Python<'py>, json: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(json).map_err(|e| PyValueError::new_err(e.to_string()))?;
    py.import("json")?.call_method1("loads", (text,))
}

/// A Python object as JSON (through `json.dumps`; parameters must be JSON data).
pub fn py_to_json(obj: &Bound<'_, PyAny>) -> PyResult<serde_json::Value> {
    let text: String = obj
        .py()
        .import("json")?
        .call_method1("dumps", (obj,))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Any serializable report as a Python object.
pub fn to_py<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_value(value).map_err(|e| PyValueError::new_err(e.to_string()))?;
    json_to_py(py, &json)
}
