//! Built-in steps that reshape rows: keep columns, expand a list, combine converging branches.

use crate::canonical::hash_value;
use crate::step::{BuildContext, GlobalStep, Lifecycle, Step, StepKind, StepResult, parse_params};
use distill_storage::{Row, Value};
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepParams {
    columns: Vec<String>,
}

/// `keep_columns`: keeps only `columns`, in that order.
pub struct KeepColumns {
    columns: Vec<String>,
}

/// Builds `keep_columns`.
pub fn keep_columns(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: KeepParams = parse_params(params)?;
    if p.columns.is_empty() {
        return Err("`columns` must name at least one column".into());
    }
    Ok(StepKind::Step(Box::new(KeepColumns { columns: p.columns })))
}

impl Lifecycle for KeepColumns {}

impl Step for KeepColumns {
    fn inputs(&self) -> Vec<String> {
        self.columns.clone()
    }

    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        Ok(rows
            .into_iter()
            .map(|mut row| {
                self.columns
                    .iter()
                    .map(|c| (c.clone(), row.remove(c).unwrap_or_default()))
                    .collect()
            })
            .collect())
    }

    fn columns_after(&self, _received: &[String]) -> Vec<String> {
        self.columns.clone()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpandParams {
    column: String,
    #[serde(default)]
    output: Option<String>,
}

/// `expand_list`: one output row per item of the list in `column`, with the item in `output`
/// (default: `column` itself). A null or missing list gives no row.
pub struct ExpandList {
    column: String,
    output: String,
}

/// Builds `expand_list`.
pub fn expand_list(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: ExpandParams = parse_params(params)?;
    let output = p.output.unwrap_or_else(|| p.column.clone());
    Ok(StepKind::Step(Box::new(ExpandList {
        column: p.column,
        output,
    })))
}

impl Lifecycle for ExpandList {}

impl Step for ExpandList {
    fn keeps_rows(&self) -> bool {
        false
    }

    fn inputs(&self) -> Vec<String> {
        vec![self.column.clone()]
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        let mut out = Vec::with_capacity(rows.len());
        for (index, mut row) in rows.into_iter().enumerate() {
            let items = match row.remove(&self.column) {
                None | Some(Value::Null) => continue,
                Some(Value::List(items)) => items,
                Some(other) => {
                    return Err(format!(
                        "row {index}: column '{}' holds a {}, not a list",
                        self.column,
                        other.kind()
                    )
                    .into());
                }
            };
            for item in items {
                let mut copy = row.clone();
                copy.insert(self.output.as_str(), item);
                out.push(copy);
            }
        }
        Ok(out)
    }

    fn columns_after(&self, received: &[String]) -> Vec<String> {
        let mut out: Vec<String> = received
            .iter()
            .filter(|c| **c != self.column)
            .cloned()
            .collect();
        out.push(self.output.clone());
        out
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CombineParams {
    columns: Vec<String>,
    #[serde(default)]
    output_columns: Option<Vec<String>>,
    #[serde(default)]
    on: Option<Vec<String>>,
}

/// `combine_columns`: for converging branches. Each listed column becomes a list of that
/// column's value from every predecessor, in `output_columns` (default `merged_<col>`); other
/// columns come from the first predecessor.
///
/// Without `on`, rows are paired by position (the shortest predecessor window sets the row
/// count), which the pipeline allows only when every branch carries the same source's rows
/// through steps that keep rows. With `on: [COLUMNS]`, rows are paired by the values of those
/// columns, as an inner join: the step sees every row of each branch (a global step, so it
/// starts a new stage), the k-th row of the first branch with a key pairs with the k-th row with
/// that key of every other branch, in the first branch's order, and a row without a partner in
/// every branch is left out.
pub struct CombineColumns {
    merge: Merge,
}

/// A join by key of the branches' rows (`combine_columns` with `on`).
pub struct JoinColumns {
    merge: Merge,
    on: Vec<String>,
}

/// What both forms do with one group of paired rows.
struct Merge {
    columns: Vec<String>,
    outputs: Vec<String>,
}

impl Merge {
    fn rows(&self, mut aligned: Vec<Row>) -> Row {
        let mut merged: Vec<Vec<Value>> = vec![Vec::new(); self.columns.len()];
        for row in &mut aligned {
            for (k, column) in self.columns.iter().enumerate() {
                merged[k].push(row.remove(column).unwrap_or_default());
            }
        }
        let mut row = aligned.swap_remove(0);
        for (output, values) in self.outputs.iter().zip(merged) {
            row.insert(output.as_str(), Value::List(values));
        }
        row
    }

    fn columns_after(&self, received: &[String]) -> Vec<String> {
        let mut out: Vec<String> = received
            .iter()
            .filter(|c| !self.columns.contains(c))
            .cloned()
            .collect();
        out.extend(self.outputs.iter().cloned());
        out
    }
}

/// Builds `combine_columns` (a step, or with `on` a global step).
pub fn combine_columns(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: CombineParams = parse_params(params)?;
    if p.columns.is_empty() {
        return Err("`columns` must name at least one column".into());
    }
    let outputs = match p.output_columns {
        Some(o) if o.len() != p.columns.len() => {
            return Err(format!(
                "`output_columns` has {} names for {} `columns`",
                o.len(),
                p.columns.len()
            )
            .into());
        }
        Some(o) => o,
        None => p.columns.iter().map(|c| format!("merged_{c}")).collect(),
    };
    let merge = Merge {
        columns: p.columns,
        outputs,
    };
    Ok(match p.on {
        None => StepKind::Step(Box::new(CombineColumns { merge })),
        Some(on) if on.is_empty() => return Err("`on` must name at least one column".into()),
        Some(on) => StepKind::Global(Box::new(JoinColumns { merge, on })),
    })
}

impl Lifecycle for CombineColumns {}

impl Step for CombineColumns {
    fn inputs(&self) -> Vec<String> {
        self.merge.columns.clone()
    }

    fn outputs(&self) -> Vec<String> {
        self.merge.outputs.clone()
    }

    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        self.process_parts(vec![rows])
    }

    fn process_parts(&self, parts: Vec<Vec<Row>>) -> StepResult<Vec<Row>> {
        let count = parts.iter().map(Vec::len).min().unwrap_or(0);
        let mut parts: Vec<std::vec::IntoIter<Row>> =
            parts.into_iter().map(IntoIterator::into_iter).collect();
        Ok((0..count)
            .map(|_| {
                self.merge
                    .rows(parts.iter_mut().filter_map(Iterator::next).collect())
            })
            .collect())
    }

    fn columns_after(&self, received: &[String]) -> Vec<String> {
        self.merge.columns_after(received)
    }

    fn aligns_by_position(&self) -> bool {
        true
    }
}

impl Lifecycle for JoinColumns {}

impl JoinColumns {
    fn key(&self, row: &Row) -> [u8; 32] {
        let mut key = blake3::Hasher::new();
        for column in &self.on {
            hash_value(&mut key, row.get(column).unwrap_or(&Value::Null));
        }
        *key.finalize().as_bytes()
    }
}

impl GlobalStep for JoinColumns {
    fn inputs(&self) -> Vec<String> {
        let mut inputs = self.merge.columns.clone();
        inputs.extend(
            self.on
                .iter()
                .filter(|c| !inputs.contains(c))
                .cloned()
                .collect::<Vec<_>>(),
        );
        inputs
    }

    fn outputs(&self) -> Vec<String> {
        self.merge.outputs.clone()
    }

    fn process_all(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        self.process_all_parts(vec![rows])
    }

    fn process_all_parts(&self, parts: Vec<Vec<Row>>) -> StepResult<Vec<Row>> {
        let mut parts = parts.into_iter();
        let Some(first) = parts.next() else {
            return Ok(Vec::new());
        };
        // Per other branch: its rows by key, in order, consumed as they pair.
        let mut others: Vec<HashMap<[u8; 32], VecDeque<Row>>> = parts
            .map(|rows| {
                let mut by_key: HashMap<[u8; 32], VecDeque<Row>> = HashMap::new();
                for row in rows {
                    by_key.entry(self.key(&row)).or_default().push_back(row);
                }
                by_key
            })
            .collect();
        let mut out = Vec::new();
        for row in first {
            let key = self.key(&row);
            if !others
                .iter()
                .all(|o| o.get(&key).is_some_and(|q| !q.is_empty()))
            {
                continue;
            }
            let mut aligned = vec![row];
            for other in &mut others {
                if let Some(partner) = other.get_mut(&key).and_then(VecDeque::pop_front) {
                    aligned.push(partner);
                }
            }
            out.push(self.merge.rows(aligned));
        }
        Ok(out)
    }

    fn columns_after(&self, received: &[String]) -> Vec<String> {
        self.merge.columns_after(received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(
        kind: fn(&serde_json::Value, &BuildContext) -> StepResult<StepKind>,
        params: serde_json::Value,
    ) -> Box<dyn Step> {
        match kind(&params, &BuildContext::default()).unwrap() {
            StepKind::Step(s) => s,
            _ => panic!("not a step"),
        }
    }

    #[test]
    fn keep_columns_keeps_listed_in_order() {
        let s = step(keep_columns, serde_json::json!({"columns": ["b", "a"]}));
        let out = s
            .process(vec![Row::new().with("a", 1).with("c", 3).with("b", 2)])
            .unwrap();
        assert_eq!(out, vec![Row::new().with("b", 2).with("a", 1)]);
        let err = keep_columns(
            &serde_json::json!({"columns": []}),
            &BuildContext::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("columns"), "{err}");
    }

    #[test]
    fn expand_list_makes_a_row_per_item() {
        let s = step(
            expand_list,
            serde_json::json!({"column": "xs", "output": "x"}),
        );
        let rows = vec![
            Row::new().with("id", 1).with("xs", vec![10, 20]),
            Row::new().with("id", 2).with("xs", Value::Null),
            Row::new().with("id", 3).with("xs", Vec::<i64>::new()),
        ];
        let out = s.process(rows).unwrap();
        assert_eq!(
            out,
            vec![
                Row::new().with("id", 1).with("x", 10),
                Row::new().with("id", 1).with("x", 20)
            ]
        );
        let err = s
            .process(vec![Row::new(), Row::new().with("xs", "no")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row 1") && err.contains("'xs'") && err.contains("string"),
            "{err}"
        );
    }

    #[test]
    fn combine_columns_merges_aligned_rows() {
        let s = step(combine_columns, serde_json::json!({"columns": ["g"]}));
        let a = vec![
            Row::new().with("q", "p1").with("g", "x1"),
            Row::new().with("q", "p2").with("g", "x2"),
        ];
        let b = vec![Row::new().with("q", "p1").with("g", "y1")];
        let out = s.process_parts(vec![a, b]).unwrap();
        assert_eq!(
            out,
            vec![
                Row::new()
                    .with("q", "p1")
                    .with("merged_g", vec!["x1", "y1"])
            ]
        );
        assert_eq!(
            s.columns_after(&["q".into(), "g".into()]),
            vec!["q", "merged_g"]
        );
        let err = combine_columns(
            &serde_json::json!({"columns": ["a"], "output_columns": ["x", "y"]}),
            &BuildContext::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("output_columns"), "{err}");
    }
}
