//! What the bench binaries share: a pipeline of a generator and four CPU steps.
#![deny(missing_docs)]

pub mod text;

use distill_engine::step::{Generator, Lifecycle, Step, StepKind, StepResult};
use distill_engine::{
    BuildContext, CheckpointSpec, Pipeline, PipelineSpec, PushSpec, Registry, StepSpec,
};
use distill_storage::{Row, Value};

/// Rows when the environment does not say.
pub const DEFAULT_ROWS: u64 = 1_000_000;
/// Rows per batch when the environment does not say.
pub const DEFAULT_BATCH: usize = 1_000;
const WORDS: [&str; 8] = [
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
];

struct Source {
    rows: u64,
}
impl Lifecycle for Source {}
impl Generator for Source {
    fn outputs(&self) -> Vec<String> {
        vec!["id".into(), "text".into()]
    }
    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        let end = (offset + count as u64).min(self.rows);
        let rows = (offset..end)
            .map(|i| {
                let text: Vec<&str> = (0..6)
                    .map(|k| WORDS[((i * 7 + k * 3) % 8) as usize])
                    .collect();
                Row::new().with("id", i as i64).with("text", text.join(" "))
            })
            .collect();
        Ok((rows, end >= self.rows))
    }
}

/// What a CPU step computes from a row's text.
type TextFn = fn(&str) -> Value;

/// A CPU step: computes `output` from `text` with `f`.
struct Map {
    output: &'static str,
    f: TextFn,
}
impl Lifecycle for Map {}
impl Step for Map {
    fn inputs(&self) -> Vec<String> {
        vec!["text".into()]
    }
    fn outputs(&self) -> Vec<String> {
        vec![self.output.into()]
    }
    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        Ok(rows
            .into_iter()
            .map(|mut row| {
                let v = (self.f)(row.get("text").and_then(Value::as_str).unwrap_or(""));
                row.insert(self.output, v);
                row
            })
            .collect())
    }
}

fn registry(rows: u64) -> Registry {
    let mut r = Registry::default();
    r.register("bench_source", move |_, _: &BuildContext| {
        Ok(StepKind::Generator(Box::new(Source { rows })))
    });
    let maps: [(&'static str, TextFn); 4] = [
        ("upper", |t| Value::Str(t.to_uppercase())),
        ("words", |t| Value::Int(t.split_whitespace().count() as i64)),
        ("digest", |t| {
            Value::Str(blake3::hash(t.as_bytes()).to_hex()[..16].to_owned())
        }),
        ("chars", |t| {
            Value::Int(t.chars().filter(|c| "aeiou".contains(*c)).count() as i64)
        }),
    ];
    for (output, f) in maps {
        r.register(output, move |_, _: &BuildContext| {
            Ok(StepKind::Step(Box::new(Map { output, f })))
        });
    }
    r
}

/// The bench pipeline: `source` then `upper`, `words`, `digest`, `chars` (the leaf).
pub fn pipeline(rows: u64, batch: usize) -> Pipeline {
    pipeline_pushing(rows, batch, None)
}

/// The bench pipeline with a `push:` section.
pub fn pipeline_pushing(rows: u64, batch: usize, push: Option<PushSpec>) -> Pipeline {
    let mut spec = bench_spec(batch);
    spec.push = push;
    Pipeline::build(spec, &registry(rows), &BuildContext::default()).expect("valid bench pipeline")
}

/// [`pipeline`] with a `checkpoint:` section, when given.
pub fn pipeline_checkpointing(
    rows: u64,
    batch: usize,
    checkpoint: Option<CheckpointSpec>,
) -> Pipeline {
    let mut spec = bench_spec(batch);
    spec.checkpoint = checkpoint;
    Pipeline::build(spec, &registry(rows), &BuildContext::default()).expect("valid bench pipeline")
}

/// The bench pipeline's definition.
fn bench_spec(batch: usize) -> PipelineSpec {
    PipelineSpec::new("bench")
        .step(StepSpec::new("source", "bench_source").batch_size(batch))
        .step(
            StepSpec::new("upper", "upper")
                .after("source")
                .input_batch_size(batch),
        )
        .step(
            StepSpec::new("words", "words")
                .after("upper")
                .input_batch_size(batch),
        )
        .step(
            StepSpec::new("digest", "digest")
                .after("words")
                .input_batch_size(batch),
        )
        .step(
            StepSpec::new("chars", "chars")
                .after("digest")
                .input_batch_size(batch),
        )
}

/// A number from the environment, or `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
