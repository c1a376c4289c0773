//! `filter`: keeps the rows whose column satisfies a simple condition.

use crate::step::{BuildContext, Lifecycle, Step, StepKind, StepResult, parse_params};
use distill_storage::{Row, Value};
use serde::Deserialize;
use std::cmp::Ordering;

/// The comparison a filter makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// Substring of a string, or element of a list.
    Contains,
    /// The column is null or missing.
    IsNull,
    /// The column is present and not null.
    NotNull,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    column: String,
    op: Op,
    #[serde(default)]
    value: Option<serde_json::Value>,
}

/// Keeps rows where `column` `op` `value` holds. Numbers compare as numbers (ints and floats
/// together), strings lexicographically; comparing values of other kinds is false, not an
/// error. A missing column is null.
pub struct Filter {
    column: String,
    op: Op,
    value: Value,
}

/// Builds `filter`.
pub fn filter(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: Params = parse_params(params)?;
    let value = match (p.op, p.value) {
        (Op::IsNull | Op::NotNull, _) => Value::Null,
        (_, Some(v)) => Value::from_json(&v),
        (op, None) => return Err(format!("`value` is required with op {op:?}").into()),
    };
    Ok(StepKind::Step(Box::new(Filter {
        column: p.column,
        op: p.op,
        value,
    })))
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

impl Filter {
    fn keeps(&self, row: &Row) -> bool {
        let v = row.get(&self.column).unwrap_or(&Value::Null);
        let ord = || compare(v, &self.value);
        match self.op {
            Op::Eq => ord() == Some(Ordering::Equal) || v == &self.value,
            Op::Ne => !(ord() == Some(Ordering::Equal) || v == &self.value),
            Op::Lt => ord() == Some(Ordering::Less),
            Op::Le => matches!(ord(), Some(Ordering::Less | Ordering::Equal)),
            Op::Gt => ord() == Some(Ordering::Greater),
            Op::Ge => matches!(ord(), Some(Ordering::Greater | Ordering::Equal)),
            Op::Contains => match (v, &self.value) {
                (Value::Str(s), Value::Str(needle)) => s.contains(needle.as_str()),
                (Value::List(items), needle) => items.contains(needle),
                _ => false,
            },
            Op::IsNull => v.is_null(),
            Op::NotNull => !v.is_null(),
        }
    }
}

impl Lifecycle for Filter {}

impl Step for Filter {
    fn keeps_rows(&self) -> bool {
        false
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.column.clone()]
    }

    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        Ok(rows.into_iter().filter(|r| self.keeps(r)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(params: serde_json::Value, values: Vec<Value>) -> Vec<Value> {
        let StepKind::Step(s) = filter(&params, &BuildContext::default()).unwrap() else {
            panic!()
        };
        let rows = values
            .into_iter()
            .map(|v| Row::new().with("c", v))
            .collect();
        s.process(rows)
            .unwrap()
            .into_iter()
            .map(|r| r.get("c").cloned().unwrap())
            .collect()
    }

    #[test]
    fn numeric_string_list_and_null_conditions() {
        let nums = || {
            vec![
                Value::Int(1),
                Value::Float(2.5),
                Value::Int(3),
                Value::from("3"),
            ]
        };
        assert_eq!(
            kept(
                serde_json::json!({"column": "c", "op": "ge", "value": 2.5}),
                nums()
            ),
            vec![Value::Float(2.5), Value::Int(3)]
        );
        assert_eq!(
            kept(
                serde_json::json!({"column": "c", "op": "eq", "value": 3}),
                nums()
            ),
            vec![Value::Int(3)]
        );
        assert_eq!(
            kept(
                serde_json::json!({"column": "c", "op": "ne", "value": 3}),
                nums()
            )
            .len(),
            3
        );
        let words = vec![
            Value::from("apple"),
            Value::from("banana"),
            Value::List(vec![Value::from("an")]),
        ];
        assert_eq!(
            kept(
                serde_json::json!({"column": "c", "op": "contains", "value": "an"}),
                words
            )
            .len(),
            2
        );
        let mixed = vec![Value::Null, Value::Int(0)];
        assert_eq!(
            kept(
                serde_json::json!({"column": "c", "op": "is_null"}),
                mixed.clone()
            ),
            vec![Value::Null]
        );
        assert_eq!(
            kept(serde_json::json!({"column": "c", "op": "not_null"}), mixed),
            vec![Value::Int(0)]
        );
    }

    #[test]
    fn missing_value_and_unknown_op_are_errors() {
        let err = filter(
            &serde_json::json!({"column": "c", "op": "lt"}),
            &BuildContext::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("value"), "{err}");
        let err = filter(
            &serde_json::json!({"column": "c", "op": "like", "value": 1}),
            &BuildContext::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("like"), "{err}");
    }
}
