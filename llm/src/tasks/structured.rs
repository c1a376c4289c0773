//! `structured_generation`: answers that must be JSON matching a schema.
//!
//! Parameters: `schema` (a JSON schema), `template` (optional Jinja over the row; default: the
//! `instruction` column), `max_invalid_retries` (default 2), plus the connection parameters.
//! The schema is sent as `response_format: {"type": "json_object", "schema": ...}` (what
//! llama.cpp's server and others accept). Each answer is parsed and validated; an invalid one is
//! asked again (a new request, cached under its own key) up to the limit, then the row's
//! `structured` is null and `structured_error` says why.

use crate::batch::Planner;
use crate::error::{Error, Result};
use crate::prompt::UserPrompt;
use crate::response::Completion;
use crate::runner::{Request, Runner};
use crate::settings::LlmParams;
use crate::tasks::generation::text_param;
use distill_engine::step::{BuildContext, Lifecycle, StepKind, StepResult};
use distill_engine::task::{Prefetch, Ready, Task, TaskContext};
use distill_storage::{Row, Value};
use std::sync::Arc;

/// Most re-asks of one row's invalid answer.
const MAX_INVALID_RETRIES: u32 = 100;

/// The structured generation task.
pub struct Structured {
    runner: Runner,
    plan: Arc<StructuredPlan>,
}

/// How rows become requests, and when an answer is asked again (shared with batch mode's
/// manager).
struct StructuredPlan {
    params: LlmParams,
    schema: serde_json::Value,
    validator: jsonschema::Validator,
    user: UserPrompt,
    retries: u32,
}

/// Builds `structured_generation`.
pub fn structured_generation(
    params: &serde_json::Value,
    _ctx: &BuildContext,
) -> StepResult<StepKind> {
    let llm = LlmParams::from_params(params, &["schema", "max_invalid_retries", "template"])?;
    let schema = params
        .get("schema")
        .cloned()
        .ok_or_else(|| Error::params("missing field `schema`"))?;
    let validator =
        jsonschema::validator_for(&schema).map_err(|e| Error::params(format!("`schema`: {e}")))?;
    let retries = match params.get("max_invalid_retries") {
        None | Some(serde_json::Value::Null) => 2,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n <= MAX_INVALID_RETRIES)
            .ok_or_else(|| {
                Error::params(format!(
                    "`max_invalid_retries` must be a whole number from 0 to {MAX_INVALID_RETRIES}"
                ))
            })?,
    };
    let user = UserPrompt::new(text_param(params, "template")?.as_deref())?;
    Ok(StepKind::Task(Box::new(Structured {
        runner: Runner::new(llm.clone()),
        plan: Arc::new(StructuredPlan {
            params: llm,
            schema,
            validator,
            user,
            retries,
        }),
    })))
}

impl Planner for StructuredPlan {
    fn requests(&self, rows: &[Row]) -> Result<Vec<Request>> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(Request {
                    body: self.body(r, i)?,
                    generation: 0,
                })
            })
            .collect()
    }

    /// An answer that is not JSON matching the schema is asked again, as `process` does.
    fn again(&self, request: &Request, answer: &[u8]) -> Option<Request> {
        let completion = Completion::parse("the request cache", answer).ok()?;
        (self.check(&completion).is_err() && request.generation < self.retries).then(|| Request {
            body: request.body.clone(),
            generation: request.generation + 1,
        })
    }
}

impl StructuredPlan {
    fn body(&self, row: &Row, index: usize) -> Result<serde_json::Value> {
        let user = self.user.render(row, index)?;
        Ok(self.params.json_body(
            vec![serde_json::json!({"role": "user", "content": user})],
            &self.schema,
        ))
    }

    /// The answer's JSON if it parses and matches the schema, else why not.
    fn check(&self, completion: &Completion) -> std::result::Result<serde_json::Value, String> {
        let json: serde_json::Value = serde_json::from_str(&completion.text)
            .map_err(|e| format!("the answer is not JSON ({e})"))?;
        if let Some(error) = self.validator.iter_errors(&json).next() {
            return Err(format!(
                "the answer does not match the schema: {error} at '{}'",
                error.instance_path()
            ));
        }
        Ok(json)
    }
}

impl Lifecycle for Structured {
    fn load(&mut self) -> StepResult<()> {
        self.runner.load().map_err(Error::into_step_error)
    }

    fn unload(&mut self) {
        self.runner.unload();
    }
}

impl Task for Structured {
    fn check_budgeted(&self) -> StepResult<()> {
        Ok(self.runner.params.check_budgeted()?)
    }

    fn inputs(&self) -> Vec<String> {
        self.plan.user.inputs()
    }

    fn outputs(&self) -> Vec<String> {
        ["structured", "structured_error", "model_name"]
            .map(str::to_owned)
            .to_vec()
    }

    fn prefetch(
        &self,
        step: &str,
        ctx: &Arc<dyn TaskContext>,
        ready: Ready,
    ) -> StepResult<Option<Box<dyn Prefetch>>> {
        self.runner.prefetch(step, ctx, ready, self.plan.clone())
    }

    fn process(&self, rows: Vec<Row>, ctx: &Arc<dyn TaskContext>) -> StepResult<Vec<Row>> {
        let plan = &self.plan;
        let bodies: Vec<serde_json::Value> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| plan.body(r, i))
            .collect::<Result<_>>()?;
        let mut outcome: Vec<Result<(serde_json::Value, Option<String>), String>> =
            vec![Err("not asked".into()); rows.len()];
        let mut todo: Vec<usize> = (0..rows.len()).collect();
        for attempt in 0..=plan.retries {
            if todo.is_empty() {
                break;
            }
            let requests: Vec<Request> = todo
                .iter()
                .map(|&i| Request {
                    body: bodies[i].clone(),
                    generation: attempt,
                })
                .collect();
            let results = self.runner.run(requests, ctx)?;
            let mut again = Vec::new();
            for (&i, result) in todo.iter().zip(results) {
                outcome[i] = match result {
                    Ok(answered) => match plan.check(&answered.completion) {
                        Ok(json) => Ok((json, answered.completion.model)),
                        Err(why) => {
                            ctx.count("invalid_answers", 1);
                            again.push(i);
                            Err(why)
                        }
                    },
                    Err(e) => Err(e.to_string()),
                };
            }
            todo = again;
        }
        Ok(rows
            .into_iter()
            .zip(outcome)
            .map(|(mut row, result)| {
                match result {
                    Ok((json, model)) => {
                        row.insert("structured", Value::from_json(&json));
                        row.insert("structured_error", Value::Null);
                        row.insert("model_name", Value::from(model));
                    }
                    Err(why) => {
                        row.insert("structured", Value::Null);
                        row.insert("structured_error", why);
                        row.insert("model_name", Value::Null);
                    }
                }
                row
            })
            .collect())
    }
}
