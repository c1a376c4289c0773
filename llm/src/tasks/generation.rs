//! Built-in LLM tasks: `text_generation`, `chat_generation` and `text_completion`.
//!
//! All take the connection parameters of [`LlmParams`] beside their own, and add the columns
//! `generation` (text, or a list with `num_generations` > 1), `model_name`, `input_tokens`,
//! `output_tokens`, `generation_error` (null, or why the row's request failed for good) and,
//! with `keep_raw`, `raw_response`.

use crate::api::Api;
use crate::batch::Planner;
use crate::error::{Error, Result};
use crate::prompt::UserPrompt;
use crate::response::Completion;
use crate::runner::{Request, Runner};
use crate::settings::LlmParams;
use distill_engine::step::{BuildContext, Lifecycle, StepKind, StepResult};
use distill_engine::task::{Prefetch, Ready, Task, TaskContext};
use distill_storage::{Row, Value};
use std::sync::Arc;

/// Where a row's messages come from.
enum Prompt {
    /// The `instruction` column, or a template over the row's columns.
    Text {
        user: UserPrompt,
        system: Option<String>,
    },
    /// A `messages` column: a list of `{role, content}` maps.
    Chat,
    /// A raw prompt for the completions API: the `prompt` column, or a template.
    Completion(UserPrompt),
}

/// An LLM task: one request per row and generation.
pub struct LlmTask {
    runner: Runner,
    plan: Arc<GenerationPlan>,
}

/// How rows become requests (shared with batch mode's manager).
struct GenerationPlan {
    params: LlmParams,
    prompt: Prompt,
    api: Api,
}

/// Builds `text_generation`: parameters `template` (optional Jinja over the row; default: the
/// `instruction` column) and `system_prompt` (optional), plus the connection parameters.
pub fn text_generation(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let llm = LlmParams::from_params(params, &["template", "system_prompt"])?;
    let system = text_param(params, "system_prompt")?;
    let user = UserPrompt::new(text_param(params, "template")?.as_deref())?;
    Ok(StepKind::Task(Box::new(LlmTask::new(
        llm,
        Prompt::Text { user, system },
        Api::Chat,
    ))))
}

/// Builds `chat_generation`: the `messages` column holds the conversation.
pub fn chat_generation(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let llm = LlmParams::from_params(params, &[])?;
    Ok(StepKind::Task(Box::new(LlmTask::new(
        llm,
        Prompt::Chat,
        Api::Chat,
    ))))
}

/// Builds `text_completion` (the `/completions` API): parameters `template` (optional Jinja
/// over the row; default: the `prompt` column), plus the connection parameters.
pub fn text_completion(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let llm = LlmParams::from_params(params, &["template"])?;
    let prompt = UserPrompt::or_column(text_param(params, "template")?.as_deref(), "prompt")?;
    Ok(StepKind::Task(Box::new(LlmTask::new(
        llm,
        Prompt::Completion(prompt),
        Api::Completions,
    ))))
}

/// An optional text parameter `key` of a task; another kind of value is an error naming it.
pub(crate) fn text_param(params: &serde_json::Value, key: &str) -> Result<Option<String>> {
    match params.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
        Some(other) => Err(Error::params(format!(
            "`{key}` must be text, not {}",
            Value::from_json(other).kind()
        ))),
    }
}

impl LlmTask {
    fn new(params: LlmParams, prompt: Prompt, api: Api) -> Self {
        Self {
            runner: Runner::for_api(params.clone(), api),
            plan: Arc::new(GenerationPlan {
                params,
                prompt,
                api,
            }),
        }
    }
}

impl Planner for GenerationPlan {
    fn requests(&self, rows: &[Row]) -> Result<Vec<Request>> {
        let n = self.params.num_generations;
        let mut requests = Vec::with_capacity(rows.len() * n as usize);
        for (index, row) in rows.iter().enumerate() {
            let body = self.body(row, index)?;
            for generation in 0..n {
                requests.push(Request {
                    body: body.clone(),
                    generation,
                });
            }
        }
        Ok(requests)
    }

    fn endpoint(&self) -> &'static str {
        self.api.path()
    }

    fn lines_per_row(&self) -> u64 {
        u64::from(self.params.num_generations)
    }

    fn accept(&self, body: Vec<u8>) -> Result<(Vec<u8>, u64, u64)> {
        let completion = Completion::parse_for(self.api, "a batch job's output", &body)?;
        Ok((body, completion.input_tokens, completion.output_tokens))
    }
}

impl GenerationPlan {
    /// The request body of row `index`.
    fn body(&self, row: &Row, index: usize) -> Result<serde_json::Value> {
        match &self.prompt {
            Prompt::Completion(prompt) => {
                Ok(self.params.completion_body(prompt.render(row, index)?))
            }
            _ => Ok(self.params.body(self.messages(row, index)?)),
        }
    }

    fn messages(&self, row: &Row, index: usize) -> Result<Vec<serde_json::Value>> {
        match &self.prompt {
            Prompt::Completion(_) => Err(Error::Row {
                row: index,
                detail: "a completion has no messages".into(),
            }),
            Prompt::Text { user, system } => {
                let user = user.render(row, index)?;
                let mut messages = Vec::new();
                if let Some(system) = system {
                    messages.push(serde_json::json!({"role": "system", "content": system}));
                }
                messages.push(serde_json::json!({"role": "user", "content": user}));
                Ok(messages)
            }
            Prompt::Chat => match row.get("messages") {
                Some(Value::List(items)) if !items.is_empty() => {
                    Ok(items.iter().map(Value::to_json).collect())
                }
                other => Err(Error::Row {
                    row: index,
                    detail: format!(
                        "`messages` must be a non-empty list of {{role, content}}, found {}",
                        other.map_or("nothing", Value::kind)
                    ),
                }),
            },
        }
    }
}

impl Lifecycle for LlmTask {
    fn load(&mut self) -> StepResult<()> {
        self.runner.load().map_err(Error::into_step_error)
    }

    fn unload(&mut self) {
        self.runner.unload();
    }
}

impl Task for LlmTask {
    fn check_budgeted(&self) -> StepResult<()> {
        Ok(self.runner.params.check_budgeted()?)
    }

    fn inputs(&self) -> Vec<String> {
        match &self.plan.prompt {
            Prompt::Text { user, .. } => user.inputs(),
            Prompt::Chat => vec!["messages".into()],
            Prompt::Completion(prompt) => prompt.inputs(),
        }
    }

    fn outputs(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            "generation",
            "model_name",
            "input_tokens",
            "output_tokens",
            "generation_error",
        ]
        .map(str::to_owned)
        .to_vec();
        if self.runner.params.keep_raw {
            out.push("raw_response".into());
        }
        out
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
        let n = self.runner.params.num_generations;
        let requests = self.plan.requests(&rows)?;
        let mut results = self.runner.run(requests, ctx)?.into_iter();
        let mut out = Vec::with_capacity(rows.len());
        for mut row in rows {
            let mut texts = Vec::new();
            let mut raws = Vec::new();
            let (mut input, mut output) = (0u64, 0u64);
            let mut model = Value::Null;
            let mut error = Value::Null;
            for outcome in results.by_ref().take(n as usize) {
                match outcome {
                    Ok(answered) => {
                        let c = answered.completion;
                        texts.push(Value::from(c.text));
                        input += c.input_tokens;
                        output += c.output_tokens;
                        if let Some(m) = c.model {
                            model = Value::from(m);
                        }
                        raws.push(Value::from(
                            String::from_utf8_lossy(&answered.body).into_owned(),
                        ));
                    }
                    Err(e) => {
                        texts.push(Value::Null);
                        raws.push(Value::Null);
                        error = Value::from(e.to_string());
                    }
                }
            }
            let generation = if n == 1 {
                texts.pop().unwrap_or_default()
            } else {
                Value::List(texts)
            };
            row.insert("generation", generation);
            row.insert("model_name", model);
            row.insert("input_tokens", input as i64);
            row.insert("output_tokens", output as i64);
            row.insert("generation_error", error);
            if self.runner.params.keep_raw {
                let raw = if n == 1 {
                    raws.pop().unwrap_or_default()
                } else {
                    Value::List(raws)
                };
                row.insert("raw_response", raw);
            }
            out.push(row);
        }
        Ok(out)
    }
}
