//! Built-in LLM tasks: `text_generation` and `chat_generation`.
//!
//! Both take the connection parameters of [`LlmParams`] beside their own, and add the columns
//! `generation` (text, or a list with `num_generations` > 1), `model_name`, `input_tokens`,
//! `output_tokens`, `generation_error` (null, or why the row's request failed for good) and,
//! with `keep_raw`, `raw_response`.

use crate::llm::{LlmParams, Request, Runner, UserPrompt};
use crate::step::{BuildContext, Lifecycle, StepKind, StepResult};
use crate::task::{Task, TaskContext};
use distill_storage::{Row, Value};

/// Where a row's messages come from.
enum Prompt {
    /// The `instruction` column, or a template over the row's columns.
    Text {
        user: UserPrompt,
        system: Option<String>,
    },
    /// A `messages` column: a list of `{role, content}` maps.
    Chat,
}

/// An LLM task: one request per row and generation.
pub struct LlmTask {
    runner: Runner,
    prompt: Prompt,
}

/// Splits a task's parameters into its own keys and the connection parameters.
fn split(
    params: &serde_json::Value,
    own: &[&str],
) -> Result<(serde_json::Map<String, serde_json::Value>, LlmParams), String> {
    let mut rest = params.as_object().cloned().unwrap_or_default();
    let mut mine = serde_json::Map::new();
    for key in own {
        if let Some(v) = rest.remove(*key) {
            mine.insert((*key).to_owned(), v);
        }
    }
    let llm: LlmParams =
        serde_json::from_value(serde_json::Value::Object(rest)).map_err(|e| e.to_string())?;
    llm.validate()?;
    Ok((mine, llm))
}

/// Builds `text_generation`: parameters `template` (optional Jinja over the row; default: the
/// `instruction` column) and `system_prompt` (optional), plus the connection parameters.
pub fn text_generation(
    params: &serde_json::Value,
    _ctx: &BuildContext,
) -> Result<StepKind, String> {
    let (own, llm) = split(params, &["template", "system_prompt"])?;
    let system = own
        .get("system_prompt")
        .and_then(|v| v.as_str())
        .map(str::to_owned);
    let user = UserPrompt::new(own.get("template").and_then(|v| v.as_str()))?;
    Ok(StepKind::Task(Box::new(LlmTask {
        runner: Runner::new(llm),
        prompt: Prompt::Text { user, system },
    })))
}

/// Builds `chat_generation`: the `messages` column holds the conversation.
pub fn chat_generation(
    params: &serde_json::Value,
    _ctx: &BuildContext,
) -> Result<StepKind, String> {
    let (_, llm) = split(params, &[])?;
    Ok(StepKind::Task(Box::new(LlmTask {
        runner: Runner::new(llm),
        prompt: Prompt::Chat,
    })))
}

impl LlmTask {
    fn messages(&self, row: &Row, index: usize) -> Result<Vec<serde_json::Value>, String> {
        match &self.prompt {
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
                other => Err(format!(
                    "row {index}: `messages` must be a non-empty list of {{role, content}}, found {}",
                    other.map_or("nothing", Value::kind)
                )),
            },
        }
    }
}

impl Lifecycle for LlmTask {
    fn load(&mut self) -> StepResult<()> {
        Ok(self.runner.load()?)
    }

    fn unload(&mut self) {
        self.runner.unload();
    }
}

impl Task for LlmTask {
    fn inputs(&self) -> Vec<String> {
        match &self.prompt {
            Prompt::Text { user, .. } => user.inputs(),
            Prompt::Chat => vec!["messages".into()],
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

    fn process(&self, rows: Vec<Row>, ctx: &dyn TaskContext) -> StepResult<Vec<Row>> {
        let n = self.runner.params.num_generations;
        let mut requests = Vec::with_capacity(rows.len() * n as usize);
        for (index, row) in rows.iter().enumerate() {
            let body = self.runner.params.body(self.messages(row, index)?);
            for generation in 0..n {
                requests.push(Request {
                    body: body.clone(),
                    generation,
                });
            }
        }
        let mut results = self.runner.run(&requests, ctx)?.into_iter();
        let mut out = Vec::with_capacity(rows.len());
        for mut row in rows {
            let mut texts = Vec::new();
            let mut raws = Vec::new();
            let (mut input, mut output) = (0u64, 0u64);
            let mut model = Value::Null;
            let mut error = Value::Null;
            for _ in 0..n {
                match results
                    .next()
                    .unwrap_or_else(|| Err("missing result".into()))
                {
                    Ok(json) => {
                        let text = json["choices"][0]["message"]["content"]
                            .as_str()
                            .map(str::to_owned);
                        texts.push(Value::from(text));
                        input += json["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
                        output += json["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                        if let Some(m) = json["model"].as_str() {
                            model = Value::from(m);
                        }
                        raws.push(Value::from(json.to_string()));
                    }
                    Err(e) => {
                        texts.push(Value::Null);
                        raws.push(Value::Null);
                        error = Value::from(e);
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
