//! Built-in global steps: exact dedup and seeded sampling.

use crate::canonical::hash_value;
use crate::step::{BuildContext, GlobalStep, Lifecycle, StepKind, StepResult, parse_params};
use distill_storage::{Row, Value};
use serde::Deserialize;
use std::collections::HashSet;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DedupParams {
    columns: Vec<String>,
}

/// `dedup`: keeps the first row of each distinct combination of `columns`, in order. Values
/// are compared exactly (blake3 of their canonical form, see `hash_value`): `1` and `1.0` differ.
pub struct Dedup {
    columns: Vec<String>,
}

/// Builds `dedup`.
pub fn dedup(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: DedupParams = parse_params(params)?;
    if p.columns.is_empty() {
        return Err("`columns` must name at least one column".into());
    }
    Ok(StepKind::Global(Box::new(Dedup { columns: p.columns })))
}

impl Lifecycle for Dedup {}

impl GlobalStep for Dedup {
    fn inputs(&self) -> Vec<String> {
        self.columns.clone()
    }

    fn process_all(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        let mut seen = HashSet::with_capacity(rows.len());
        let mut out = Vec::new();
        for row in rows {
            let mut key = blake3::Hasher::new();
            for column in &self.columns {
                hash_value(&mut key, row.get(column).unwrap_or(&Value::Null));
            }
            if seen.insert(*key.finalize().as_bytes()) {
                out.push(row);
            }
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleParams {
    n: usize,
    #[serde(default)]
    seed: u64,
}

/// `sample`: keeps `n` rows chosen uniformly at random with `seed` (default 0), in their
/// original order; all rows when there are fewer. Same seed and input, same sample.
pub struct Sample {
    n: usize,
    seed: u64,
}

/// Builds `sample`.
pub fn sample(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: SampleParams = parse_params(params)?;
    Ok(StepKind::Global(Box::new(Sample {
        n: p.n,
        seed: p.seed,
    })))
}

impl Lifecycle for Sample {}

impl GlobalStep for Sample {
    fn inputs(&self) -> Vec<String> {
        Vec::new()
    }

    fn process_all(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        if rows.len() <= self.n {
            return Ok(rows);
        }
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let mut chosen = rand_indices(&mut rng, rows.len(), self.n);
        chosen.sort_unstable();
        let mut keep = chosen.into_iter().peekable();
        Ok(rows
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.next_if_eq(i).is_some())
            .map(|(_, r)| r)
            .collect())
    }
}

/// `n` distinct indices below `len` (partial Fisher-Yates).
fn rand_indices(rng: &mut fastrand::Rng, len: usize, n: usize) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..len).collect();
    for i in 0..n {
        let j = rng.usize(i..len);
        indices.swap(i, j);
    }
    indices.truncate(n);
    indices
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(
        kind: fn(&serde_json::Value, &BuildContext) -> StepResult<StepKind>,
        params: serde_json::Value,
    ) -> Box<dyn GlobalStep> {
        match kind(&params, &BuildContext::default()).unwrap() {
            StepKind::Global(g) => g,
            _ => panic!("not global"),
        }
    }

    #[test]
    fn dedup_keeps_first_by_key_only() {
        let g = global(dedup, serde_json::json!({"columns": ["k"]}));
        let rows = vec![
            Row::new().with("k", 1).with("v", "a"),
            Row::new().with("k", 1).with("v", "b"),
            Row::new().with("k", 1.0).with("v", "c"),
            Row::new().with("v", "d"),
            Row::new().with("k", Value::Null).with("v", "e"),
        ];
        let out = g.process_all(rows).unwrap();
        let vs: Vec<_> = out
            .iter()
            .map(|r| r.get("v").unwrap().to_string())
            .collect();
        assert_eq!(vs, vec!["a", "c", "d"]);
        assert!(
            dedup(
                &serde_json::json!({"columns": []}),
                &BuildContext::default()
            )
            .is_err()
        );
    }

    #[test]
    fn sample_is_seeded_and_keeps_order() {
        let rows: Vec<Row> = (0..100).map(|i| Row::new().with("i", i)).collect();
        let ids = |seed: u64| -> Vec<i64> {
            global(sample, serde_json::json!({"n": 10, "seed": seed}))
                .process_all(rows.clone())
                .unwrap()
                .iter()
                .map(|r| r.get("i").unwrap().as_int().unwrap())
                .collect()
        };
        let a = ids(1);
        assert_eq!(a.len(), 10);
        assert_eq!(a, ids(1));
        assert_ne!(a, ids(2));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        let few = global(sample, serde_json::json!({"n": 500}))
            .process_all(rows.clone())
            .unwrap();
        assert_eq!(few.len(), 100);
    }
}
