//! Steps over embedding vectors. [`register`] adds `embedding_dedup` to a registry.
//!
//! `embedding_dedup` is a streaming global step: it drops each row whose `column` (a list of
//! numbers: an embedding) is within cosine similarity `threshold` (default 0.95) of a row kept
//! before it, in row order. While fewer than `exact_up_to` rows (default 10,000) are kept the
//! search is exact (every kept vector is compared); from there on it is approximate, with a
//! hierarchical navigable small-world graph (the `hnsw_rs` crate, whose level generator is
//! seeded, so the same rows give the same graph and the same answers in every run and after a
//! resume): a near neighbour the graph search misses lets a near-duplicate through, never the
//! other way round. `ef_search` (default 64) trades speed for recall. Memory: the kept vectors
//! (and the graph's links). Rows whose `column` is null pass through; a vector of another
//! length than the first one's, or with a value that is not a finite number, fails the step
//! naming the row.
#![deny(missing_docs)]

use distill_engine::Registry;
use distill_engine::step::{
    BuildContext, GlobalStep, GlobalStream, Lifecycle, StepKind, StepResult, parse_params,
};
use distill_storage::{Row, Value};
use hnsw_rs::anndists::dist::DistCosine;
use hnsw_rs::hnsw::Hnsw;
use serde::Deserialize;

/// Registers `embedding_dedup`.
pub fn register(registry: &mut Registry) {
    registry.register("embedding_dedup", embedding_dedup);
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "embedding")]
    column: String,
    #[serde(default = "threshold")]
    threshold: f64,
    #[serde(default = "exact_up_to")]
    exact_up_to: usize,
    #[serde(default = "ef_search")]
    ef_search: usize,
}

fn embedding() -> String {
    "embedding".into()
}
fn threshold() -> f64 {
    0.95
}
fn exact_up_to() -> usize {
    10_000
}
fn ef_search() -> usize {
    64
}

/// Links per node of the graph.
const LINKS: usize = 24;
/// Candidates considered while inserting.
const EF_CONSTRUCTION: usize = 200;
/// Layers of the graph.
const LAYERS: usize = 16;

/// `embedding_dedup`.
pub struct EmbeddingDedup {
    column: String,
    threshold: f32,
    exact_up_to: usize,
    ef_search: usize,
}

/// Builds `embedding_dedup`.
pub fn embedding_dedup(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: Params = parse_params(params)?;
    if !(p.threshold > 0.0 && p.threshold <= 1.0) {
        return Err(format!(
            "`threshold` (a cosine similarity) must be above 0 and at most 1, not {}",
            p.threshold
        )
        .into());
    }
    if !(1..=10_000).contains(&p.ef_search) {
        return Err(format!("`ef_search` must be from 1 to 10000, not {}", p.ef_search).into());
    }
    Ok(StepKind::Global(Box::new(EmbeddingDedup {
        column: p.column,
        threshold: p.threshold as f32,
        exact_up_to: p.exact_up_to,
        ef_search: p.ef_search,
    })))
}

/// The kept vectors, normalised, and the graph once there are many.
struct Kept {
    dim: Option<usize>,
    vectors: Vec<Vec<f32>>,
    graph: Option<Hnsw<'static, f32, DistCosine>>,
}

struct Stream {
    step: StreamParams,
    kept: Kept,
    /// Rows pushed so far (to name a bad one).
    seen: u64,
}

/// What the stream needs of the step's parameters.
#[derive(Clone)]
struct StreamParams {
    column: String,
    threshold: f32,
    exact_up_to: usize,
    ef_search: usize,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl Stream {
    /// The row's vector, normalised; `None` for a null.
    fn vector(&mut self, row: &Row) -> StepResult<Option<Vec<f32>>> {
        let n = self.seen;
        let items = match row.get(&self.step.column) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::List(items)) => items,
            Some(other) => {
                return Err(format!(
                    "row {n}: `{}` holds a {}, not a list of numbers",
                    self.step.column,
                    other.kind()
                )
                .into());
            }
        };
        let mut v = Vec::with_capacity(items.len());
        for item in items {
            match item.as_f64() {
                Some(x) if x.is_finite() => v.push(x as f32),
                _ => {
                    return Err(format!(
                        "row {n}: `{}` holds {}, not a finite number",
                        self.step.column,
                        item.kind()
                    )
                    .into());
                }
            }
        }
        match self.kept.dim {
            Some(d) if d != v.len() => {
                return Err(format!(
                    "row {n}: `{}` has {} numbers, the first vector had {d}",
                    self.step.column,
                    v.len()
                )
                .into());
            }
            None if v.is_empty() => {
                return Err(format!("row {n}: `{}` is empty", self.step.column).into());
            }
            None => self.kept.dim = Some(v.len()),
            _ => {}
        }
        let norm = dot(&v, &v).sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(Some(v))
    }

    /// The highest cosine similarity of `v` to a kept vector (exact, or by the graph).
    fn nearest(&self, v: &[f32]) -> f32 {
        match &self.kept.graph {
            Some(graph) => graph
                .search(v, 1, self.step.ef_search)
                .first()
                .map_or(f32::MIN, |n| 1.0 - n.distance),
            None => self
                .kept
                .vectors
                .iter()
                .map(|k| dot(k, v))
                .fold(f32::MIN, f32::max),
        }
    }

    fn keep(&mut self, v: Vec<f32>) {
        let id = self.kept.vectors.len();
        if let Some(graph) = &self.kept.graph {
            graph.insert((&v, id));
        } else if id + 1 > self.step.exact_up_to {
            // Many kept vectors: from now on, the graph (built from all of them, in order).
            let graph = Hnsw::new(LINKS, id + 1, LAYERS, EF_CONSTRUCTION, DistCosine {});
            for (i, k) in self.kept.vectors.iter().enumerate() {
                graph.insert((k, i));
            }
            graph.insert((&v, id));
            self.kept.graph = Some(graph);
        }
        self.kept.vectors.push(v);
    }
}

impl GlobalStream for Stream {
    fn push(&mut self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let v = self.vector(&row)?;
            self.seen += 1;
            match v {
                None => out.push(row),
                Some(v) if self.nearest(&v) >= self.step.threshold => {}
                Some(v) => {
                    self.keep(v);
                    out.push(row);
                }
            }
        }
        Ok(out)
    }
}

impl Lifecycle for EmbeddingDedup {}

impl GlobalStep for EmbeddingDedup {
    fn inputs(&self) -> Vec<String> {
        vec![self.column.clone()]
    }

    fn process_all(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        let mut stream = self.stream().ok_or("embedding_dedup streams")?;
        stream.push(rows)
    }

    fn stream(&self) -> Option<Box<dyn GlobalStream>> {
        Some(Box::new(Stream {
            step: StreamParams {
                column: self.column.clone(),
                threshold: self.threshold,
                exact_up_to: self.exact_up_to,
                ef_search: self.ef_search,
            },
            kept: Kept {
                dim: None,
                vectors: Vec::new(),
                graph: None,
            },
            seen: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(params: serde_json::Value) -> Box<dyn GlobalStep> {
        match embedding_dedup(&params, &BuildContext::default()).unwrap() {
            StepKind::Global(g) => g,
            _ => panic!("not global"),
        }
    }

    fn row(id: i64, v: &[f64]) -> Row {
        Row::new().with("id", id).with(
            "embedding",
            Value::List(v.iter().map(|x| Value::from(*x)).collect()),
        )
    }

    fn ids(rows: &[Row]) -> Vec<i64> {
        rows.iter()
            .map(|r| r.get("id").unwrap().as_int().unwrap())
            .collect()
    }

    #[test]
    fn close_vectors_are_dropped_in_row_order() {
        let s = step(serde_json::json!({"threshold": 0.99}));
        let out = s
            .process_all(vec![
                row(1, &[1.0, 0.0, 0.0]),
                row(2, &[2.0, 0.01, 0.0]),
                row(3, &[0.0, 1.0, 0.0]),
                Row::new().with("id", 4).with("embedding", Value::Null),
                row(5, &[0.7, 0.7, 0.0]),
                row(6, &[0.0, 0.999, 0.02]),
            ])
            .unwrap();
        assert_eq!(ids(&out), vec![1, 3, 4, 5]);
    }

    #[test]
    fn bad_vectors_name_the_row() {
        let s = step(serde_json::json!({}));
        let err = s
            .process_all(vec![row(1, &[1.0, 0.0]), row(2, &[1.0, 0.0, 0.0])])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row 1") && err.contains("3 numbers") && err.contains("had 2"),
            "{err}"
        );
        let err = s
            .process_all(vec![Row::new().with("embedding", "x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 0") && err.contains("not a list"), "{err}");
    }

    /// Random unit vectors, and near copies of some of them placed later.
    fn corpus(n: usize, dups: usize, dim: usize) -> (Vec<Row>, Vec<i64>) {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut rows = Vec::new();
        let mut base = Vec::new();
        for i in 0..n {
            let v: Vec<f64> = (0..dim).map(|_| rng.f64() - 0.5).collect();
            base.push(v.clone());
            rows.push(row(i as i64, &v));
        }
        let mut dup_ids = Vec::new();
        for k in 0..dups {
            let of = rng.usize(0..n);
            let v: Vec<f64> = base[of]
                .iter()
                .map(|x| x + (rng.f64() - 0.5) * 0.01)
                .collect();
            let id = (n + k) as i64;
            dup_ids.push(id);
            rows.push(row(id, &v));
        }
        (rows, dup_ids)
    }

    #[test]
    fn the_graph_agrees_with_exact_search_and_is_deterministic() {
        let (rows, dups) = corpus(1200, 120, 16);
        let exact = step(serde_json::json!({"threshold": 0.98, "exact_up_to": 1_000_000}))
            .process_all(rows.clone())
            .unwrap();
        let approx = || {
            step(serde_json::json!({"threshold": 0.98, "exact_up_to": 100}))
                .process_all(rows.clone())
                .unwrap()
        };
        let a = approx();
        let kept: Vec<i64> = ids(&exact);
        assert!(
            dups.iter().all(|d| !kept.contains(d)),
            "exact search drops every near copy"
        );
        assert_eq!(kept.len(), 1200);
        let missed = dups.iter().filter(|d| ids(&a).contains(d)).count();
        assert!(
            missed <= 2,
            "the graph let {missed} of 120 near copies through"
        );
        assert_eq!(
            ids(&a),
            ids(&approx()),
            "same rows, same graph, same output"
        );
    }
}
