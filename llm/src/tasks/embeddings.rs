//! `embeddings`: one vector per row from an OpenAI-compatible `/embeddings` endpoint.
//!
//! Parameters: `template` (optional Jinja over the row; default: the `input` column),
//! `dimensions` (optional, sent as asked and checked in the answer), `encoding_format`
//! (`float` or `base64`, which is decoded; not sent unless given), `rows_per_request` (inputs
//! per request, default 64), plus the connection parameters (but no `generation`,
//! `num_generations` or `keep_raw`). Outputs: `embedding` (a list of floats), `model_name`
//! and `embedding_error`.
//!
//! The request cache holds one record per input, keyed by the request that input alone would
//! make, so a changed `rows_per_request` or batch size still finds every vector. Inputs met
//! twice in a batch are asked once.

use crate::api::Api;
use crate::embedding::{CachedVector, Embeddings, share};
use crate::error::{Error, Result};
use crate::prompt::UserPrompt;
use crate::runner::{Caller, Paid, Runner, cache_key};
use crate::settings::{Generation, LlmParams};
use crate::tasks::generation::text_param;
use distill_engine::step::{BuildContext, Lifecycle, StepKind, StepResult};
use distill_engine::task::{Task, TaskContext};
use distill_storage::{Row, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Inputs per request when not given.
pub const DEFAULT_ROWS_PER_REQUEST: u64 = 64;
/// Most inputs per request (OpenAI's own limit).
pub const MAX_ROWS_PER_REQUEST: u64 = 2048;
/// Most dimensions asked.
pub const MAX_DIMENSIONS: u64 = 65_536;

/// How vectors travel in answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    Float,
    Base64,
}

impl Encoding {
    fn as_str(self) -> &'static str {
        match self {
            Encoding::Float => "float",
            Encoding::Base64 => "base64",
        }
    }
}

/// The embeddings task.
pub struct EmbeddingsTask {
    runner: Runner,
    input: UserPrompt,
    dimensions: Option<u64>,
    encoding: Option<Encoding>,
    rows_per_request: usize,
}

fn whole(params: &serde_json::Value, key: &str, min: u64, max: u64) -> Result<Option<u64>> {
    match params.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                Error::params(format!(
                    "`{key}` must be a whole number from {min} to {max}, not {v}"
                ))
            }),
    }
}

/// Builds `embeddings`.
pub fn embeddings(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let own = [
        "template",
        "dimensions",
        "encoding_format",
        "rows_per_request",
    ];
    let llm = LlmParams::from_params(params, &own)?;
    if llm.generation != Generation::default() || llm.num_generations != 1 || llm.keep_raw {
        return Err(Error::params(
            "`generation`, `num_generations` and `keep_raw` do not apply to embeddings",
        )
        .into());
    }
    let encoding = match params.get("encoding_format") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(serde_json::from_value::<Encoding>(v.clone()).map_err(|_| {
            Error::params(format!(
                "`encoding_format` must be `float` or `base64`, not {v}"
            ))
        })?),
    };
    let rows_per_request = whole(params, "rows_per_request", 1, MAX_ROWS_PER_REQUEST)?
        .unwrap_or(DEFAULT_ROWS_PER_REQUEST) as usize;
    Ok(StepKind::Task(Box::new(EmbeddingsTask {
        runner: Runner::for_api(llm, Api::Embeddings),
        input: UserPrompt::or_column(text_param(params, "template")?.as_deref(), "input")?,
        dimensions: whole(params, "dimensions", 1, MAX_DIMENSIONS)?,
        encoding,
        rows_per_request,
    })))
}

/// What became of one input: its vector, or why it failed for good.
type Vector = std::result::Result<CachedVector, String>;

impl EmbeddingsTask {
    /// The request for `inputs`.
    fn body(&self, inputs: serde_json::Value) -> serde_json::Value {
        let mut body = serde_json::json!({"model": self.runner.params.model, "input": inputs});
        if let Some(obj) = body.as_object_mut() {
            if let Some(d) = self.dimensions {
                obj.insert("dimensions".into(), d.into());
            }
            if let Some(e) = self.encoding {
                obj.insert("encoding_format".into(), e.as_str().into());
            }
        }
        body
    }

    /// Asks for the vectors of `texts` (cache misses) in one request; one result per text.
    fn ask(
        caller: &Caller,
        body: &serde_json::Value,
        texts: &[String],
        keys: &[[u8; 32]],
        dimensions: Option<u64>,
    ) -> Result<Option<Vec<Vector>>> {
        let failed_all = |e: Error| -> Result<Option<Vec<Vector>>> {
            let why = caller.as_data(e)?;
            Ok(Some(texts.iter().map(|_| Err(why.clone())).collect()))
        };
        let (answer, reservation) = match caller.pay(body)? {
            Paid::Answer { body, reservation } => (body, reservation),
            Paid::Failed(e) => return failed_all(e),
            Paid::Stopped => return Ok(None),
        };
        let parsed = match Embeddings::parse("POST embeddings", &answer, texts.len(), dimensions) {
            Ok(parsed) => parsed,
            Err(unusable) => {
                caller.unusable(&answer, reservation);
                return failed_all(unusable);
            }
        };
        let weights: Vec<u64> = texts.iter().map(|t| t.len() as u64 + 1).collect();
        let tokens = share(parsed.input_tokens, &weights);
        let vectors: Vec<CachedVector> = parsed
            .vectors
            .into_iter()
            .zip(tokens)
            .map(|(embedding, input_tokens)| CachedVector {
                embedding,
                model: parsed.model.clone(),
                input_tokens,
            })
            .collect();
        let mut entries = Vec::with_capacity(vectors.len());
        for (key, vector) in keys.iter().zip(&vectors) {
            let record = serde_json::to_vec(vector)
                .map_err(|e| Error::params(format!("cannot encode a vector: {e}")))?;
            entries.push((*key, record));
        }
        // Paid for and usable: durable before anything else happens with it.
        caller.keep(entries, parsed.input_tokens, 0, reservation)?;
        Ok(Some(vectors.into_iter().map(Ok).collect()))
    }
}

impl Lifecycle for EmbeddingsTask {
    fn load(&mut self) -> StepResult<()> {
        self.runner.load().map_err(Error::into_step_error)
    }

    fn unload(&mut self) {
        self.runner.unload();
    }
}

impl Task for EmbeddingsTask {
    fn check_budgeted(&self) -> std::result::Result<(), String> {
        self.runner.params.check_budgeted()
    }

    fn inputs(&self) -> Vec<String> {
        self.input.inputs()
    }

    fn outputs(&self) -> Vec<String> {
        ["embedding", "model_name", "embedding_error"]
            .map(str::to_owned)
            .to_vec()
    }

    fn process(&self, rows: Vec<Row>, ctx: &Arc<dyn TaskContext>) -> StepResult<Vec<Row>> {
        let texts: Vec<String> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| self.input.render(r, i))
            .collect::<Result<_>>()?;
        let caller = Arc::new(self.runner.caller(ctx)?);
        // Each distinct input once: from the cache, or in a request with other misses.
        let mut results: Vec<Option<Vector>> = vec![None; texts.len()];
        let mut first: HashMap<&str, usize> = HashMap::new();
        let mut misses: Vec<usize> = Vec::new();
        let keys: Vec<[u8; 32]> = texts
            .iter()
            .map(|t| cache_key(&self.body(t.as_str().into()), 0))
            .collect();
        let mut distinct: Vec<usize> = Vec::new();
        for (i, text) in texts.iter().enumerate() {
            if !first.contains_key(text.as_str()) {
                first.insert(text, i);
                distinct.push(i);
            }
        }
        let wanted: Vec<[u8; 32]> = distinct.iter().map(|&i| keys[i]).collect();
        let found = ctx
            .cached_all(&wanted)
            .map_err(|e| Error::from(e).into_step_error())?;
        for (&i, bytes) in distinct.iter().zip(found) {
            match bytes {
                Some(bytes) => {
                    let cached: CachedVector = serde_json::from_slice(&bytes).map_err(|e| {
                        Error::DamagedCache {
                            key: keys[i].iter().map(|b| format!("{b:02x}")).collect(),
                            detail: format!("not a cached vector: {e}"),
                        }
                        .into_step_error()
                    })?;
                    caller.hit(cached.input_tokens, 0);
                    results[i] = Some(Ok(cached));
                }
                None => misses.push(i),
            }
        }
        let groups: Vec<Vec<usize>> = misses
            .chunks(self.rows_per_request)
            .map(<[usize]>::to_vec)
            .collect();
        let requests: Vec<(serde_json::Value, Vec<String>, Vec<[u8; 32]>)> = groups
            .iter()
            .map(|group| {
                let texts: Vec<String> = group.iter().map(|&i| texts[i].clone()).collect();
                let keys = group.iter().map(|&i| keys[i]).collect();
                (self.body(texts.clone().into()), texts, keys)
            })
            .collect();
        let answered = {
            let (caller, requests) = (caller.clone(), Arc::new(requests));
            let dimensions = self.dimensions;
            self.runner.run_jobs(requests.len(), ctx, move |g| {
                let (body, texts, keys) = &requests[g];
                Self::ask(&caller, body, texts, keys, dimensions)
            })?
        };
        for (group, vectors) in groups.iter().zip(answered) {
            for (&i, vector) in group.iter().zip(vectors) {
                results[i] = Some(vector);
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for (i, mut row) in rows.into_iter().enumerate() {
            let at = first.get(texts[i].as_str()).copied().unwrap_or(i);
            let result = results[at]
                .clone()
                .unwrap_or_else(|| Err("no vector came for this input".into()));
            match result {
                Ok(v) => {
                    row.insert(
                        "embedding",
                        Value::List(v.embedding.into_iter().map(Value::Float).collect()),
                    );
                    row.insert("model_name", v.model.map_or(Value::Null, Value::from));
                    row.insert("embedding_error", Value::Null);
                }
                Err(why) => {
                    row.insert("embedding", Value::Null);
                    row.insert("model_name", Value::Null);
                    row.insert("embedding_error", Value::from(why));
                }
            }
            out.push(row);
        }
        Ok(out)
    }
}
