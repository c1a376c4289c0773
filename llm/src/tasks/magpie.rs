//! Magpie (Xu et al. 2024): instructions and responses from an aligned model given nothing
//! but the start of its own chat template. Sent the header of a user turn (the "pre-query
//! template") through the raw completions API, the model writes what a user would ask;
//! answered through the chat API, it writes the response. With `n_turns` > 1 the
//! conversation goes on: the next user turn is completed after the conversation so far,
//! rendered in the model's template.
//!
//! Parameters: `pre_query_template`: `llama3`, `qwen2` or `chatml` (the same format), `gemma`,
//! each rendered by its own template file (`magpie_*.jinja`), or a pre-query text of your own
//! (then `n_turns` is 1 and there is no system prompt); `n_turns` (1 to 10, default 1);
//! `system_prompt` (steers the topic); `only_instruction` (no response; `n_turns` 1); and the
//! connection parameters (`generation` applies to both APIs; the format's end-of-turn token
//! is added to `stop` for the user turns; a `generation.seed` is offset by the row number so
//! rows differ yet runs repeat). A temperature near 1 gives varied instructions: at 0 every
//! row of a generator asks the same.
//!
//! Forms: `magpie_generator` (a generator of `num_rows` rows, each numbered, so each row's
//! requests are its own in the request cache) and `magpie` (a task: one conversation per input
//! row, whose `system_prompt` column, text or null, steers it; rows with equal system prompts
//! get equal cached answers). Outputs `instruction` and `response` (`n_turns` 1), or
//! `conversation` (a list of `{role, content}`, the system prompt first when there is one);
//! `model_name`; `magpie_error`.

use crate::api::Api;
use crate::error::Error;
use crate::settings::LlmParams;
use crate::tasks::generation::text_param;
use crate::tasks::recipe::{Call, Recipe, RecipeTask, Reply, recipe_llm};
use crate::template::{Template, builtin};
use distill_engine::step::{BuildContext, Generator, Lifecycle, StepKind, StepResult};
use distill_engine::task::TaskContext;
use distill_storage::{Row, Value};
use std::sync::Arc;

/// Most turns.
const MAX_TURNS: u64 = 10;
/// Most rows of a generator.
const MAX_ROWS: u64 = 100_000_000;

/// The named pre-query formats: `(name, template, end-of-turn token)`.
const FORMATS: &[(&str, (&str, &str), &str)] = &[
    ("llama3", builtin::MAGPIE_LLAMA3, "<|eot_id|>"),
    ("qwen2", builtin::MAGPIE_CHATML, "<|im_end|>"),
    ("chatml", builtin::MAGPIE_CHATML, "<|im_end|>"),
    ("gemma", builtin::MAGPIE_GEMMA, "<end_of_turn>"),
];

/// How the user turns are prompted.
enum Format {
    /// A known chat format: its template and end-of-turn token.
    Named {
        template: Box<Template>,
        stop: String,
    },
    /// A pre-query text given as is.
    Custom(String),
}

struct Magpie {
    format: Format,
    /// A fixed system prompt (the generator's).
    system: Option<String>,
    /// Read the system prompt from the row (the step form).
    system_column: bool,
    turns: usize,
    only_instruction: bool,
}

/// A conversation on its way.
pub(crate) struct State {
    number: u64,
    system: Option<String>,
    /// User and assistant turns so far.
    turns: Vec<(String, String)>,
    error: Option<String>,
    /// The next request, prepared when the last answer came.
    call: Option<Call>,
}

fn build(
    params: &serde_json::Value,
    ctx: &BuildContext,
    generator: bool,
) -> StepResult<(Magpie, LlmParams, u64)> {
    let mut own = vec!["pre_query_template", "n_turns", "only_instruction"];
    if generator {
        own.extend(["num_rows", "system_prompt"]);
    }
    let llm = recipe_llm(params, &own)?;
    if !generator && params.get("system_prompt").is_some() {
        return Err(Error::params(
            "`system_prompt` is a parameter of magpie_generator; the magpie step reads the `system_prompt` column",
        )
        .into());
    }
    let turns = match params.get("n_turns") {
        None | Some(serde_json::Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_TURNS).contains(n))
            .ok_or_else(|| {
                Error::params(format!(
                    "`n_turns` must be a whole number from 1 to {MAX_TURNS}"
                ))
            })?,
    } as usize;
    let only_instruction = match params.get("only_instruction") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(Error::params("`only_instruction` must be true or false").into()),
    };
    if only_instruction && turns > 1 {
        return Err(
            Error::params("`only_instruction` makes one instruction: `n_turns` must be 1").into(),
        );
    }
    let system = if generator {
        text_param(params, "system_prompt")?
    } else {
        None
    };
    let pre_query = text_param(params, "pre_query_template")?.ok_or_else(|| {
        Error::params(
            "missing `pre_query_template`: llama3, qwen2, chatml, gemma, or a pre-query text",
        )
    })?;
    let format = match FORMATS.iter().find(|(name, _, _)| *name == pre_query) {
        Some((_, (file, text), stop)) => {
            let template = match params.get("template_file") {
                Some(_) => Template::load(file, text, params, ctx)?,
                None => Template::new((*text).to_owned(), file)?,
            };
            Format::Named {
                template: Box::new(template),
                stop: (*stop).to_owned(),
            }
        }
        None if pre_query.contains('<') || pre_query.contains('[') || pre_query.contains('\n') => {
            if turns > 1 || system.is_some() || !generator {
                return Err(Error::params(
                    "a pre-query text of your own allows `n_turns: 1`, no system prompt and the generator form only; use llama3, qwen2, chatml or gemma for more",
                )
                .into());
            }
            Format::Custom(pre_query)
        }
        None => {
            return Err(Error::params(format!(
                "`pre_query_template`: `{pre_query}` is none of llama3, qwen2, chatml, gemma, nor a pre-query text (which holds the template's markup)"
            ))
            .into());
        }
    };
    let rows = match params.get("num_rows") {
        None | Some(serde_json::Value::Null) if generator => {
            return Err(Error::params("missing `num_rows`").into());
        }
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_ROWS).contains(n))
            .ok_or_else(|| {
                Error::params(format!(
                    "`num_rows` must be a whole number from 1 to {MAX_ROWS}"
                ))
            })?,
    };
    Ok((
        Magpie {
            format,
            system,
            system_column: !generator,
            turns,
            only_instruction,
        },
        llm,
        rows,
    ))
}

/// Builds `magpie` (the step form).
pub fn magpie(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let (recipe, llm, _) = build(params, ctx, false)?;
    Ok(StepKind::Task(Box::new(RecipeTask::new(recipe, llm))))
}

/// Builds `magpie_generator`.
pub fn magpie_generator(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let (recipe, llm, rows) = build(params, ctx, true)?;
    Ok(StepKind::Generator(Box::new(MagpieGenerator {
        task: RecipeTask::new(recipe, llm),
        rows,
    })))
}

/// The user turn the model wrote, cleaned: whitespace and a leftover end-of-turn token or
/// role marker trimmed. Empty is an error.
pub fn clean_instruction(text: &str, stop: Option<&str>) -> Result<String, String> {
    let mut t = text.trim();
    if let Some(stop) = stop {
        t = t.split(stop).next().unwrap_or("").trim();
    }
    if t.is_empty() {
        return Err("the model wrote an empty user turn".into());
    }
    Ok(t.to_owned())
}

impl Magpie {
    /// Prepares the row's next request (none when it is done or failed); a template that
    /// fails to render is the row's error.
    fn prepare(&self, s: &mut State, llm: &LlmParams) {
        s.call = None;
        if s.error.is_some() {
            return;
        }
        let done = s.turns.len();
        let wanted = if self.only_instruction {
            1
        } else {
            2 * self.turns
        };
        if done >= wanted {
            return;
        }
        s.call = if done.is_multiple_of(2) {
            match self.pre_query(s, llm) {
                Ok(body) => Some(Call {
                    api: Api::Completions,
                    body,
                    generation: u32::try_from(s.number).unwrap_or(u32::MAX),
                }),
                Err(why) => {
                    s.error = Some(why);
                    None
                }
            }
        } else {
            Some(Call {
                api: Api::Chat,
                body: llm.body(self.messages(s)),
                generation: 0,
            })
        };
    }

    fn messages(&self, s: &State) -> Vec<serde_json::Value> {
        let mut m = Vec::new();
        if let Some(system) = &s.system {
            m.push(serde_json::json!({"role": "system", "content": system}));
        }
        for (role, content) in &s.turns {
            m.push(serde_json::json!({"role": role, "content": content}));
        }
        m
    }

    fn stop(&self) -> Option<&str> {
        match &self.format {
            Format::Named { stop, .. } => Some(stop),
            Format::Custom(_) => None,
        }
    }

    /// The body asking for the next user turn.
    fn pre_query(&self, s: &State, llm: &LlmParams) -> Result<serde_json::Value, String> {
        let prompt = match &self.format {
            Format::Custom(text) => text.clone(),
            Format::Named { template, .. } => {
                template.render_exact(&serde_json::json!({"messages": self.messages(s)}))?
            }
        };
        let mut body = llm.completion_body(prompt);
        if let Some(stop) = self.stop() {
            let mut stops: Vec<String> = llm.generation.stop.clone().unwrap_or_default();
            if !stops.iter().any(|s| s == stop) {
                stops.push(stop.to_owned());
            }
            body["stop"] = stops.into();
        }
        if let Some(seed) = llm.generation.seed {
            body["seed"] = seed.wrapping_add(s.number).into();
        }
        Ok(body)
    }
}

impl Recipe for Magpie {
    type State = State;

    fn inputs(&self) -> Vec<String> {
        if self.system_column {
            vec!["system_prompt".into()]
        } else {
            Vec::new()
        }
    }

    fn outputs(&self) -> Vec<String> {
        match (self.turns, self.only_instruction) {
            (1, true) => vec!["instruction".into()],
            (1, false) => vec!["instruction".into(), "response".into()],
            _ => vec!["conversation".into()],
        }
    }

    fn error_column(&self) -> &'static str {
        "magpie_error"
    }

    fn apis(&self) -> &'static [Api] {
        &[Api::Completions, Api::Chat]
    }

    fn start(&self, row: &Row, index: usize, llm: &LlmParams) -> crate::Result<State> {
        self.start_numbered(row, index, 0, llm)
    }

    fn start_numbered(
        &self,
        row: &Row,
        _index: usize,
        number: u64,
        llm: &LlmParams,
    ) -> crate::Result<State> {
        let system = if self.system_column {
            match row.get("system_prompt") {
                Some(Value::Str(s)) if !s.trim().is_empty() => Some(s.clone()),
                _ => None,
            }
        } else {
            self.system.clone()
        };
        let mut state = State {
            number,
            system,
            turns: Vec::new(),
            error: None,
            call: None,
        };
        self.prepare(&mut state, llm);
        Ok(state)
    }

    fn next(&self, s: &State, _llm: &LlmParams) -> Option<Call> {
        s.call.as_ref().map(|c| Call {
            api: c.api,
            body: c.body.clone(),
            generation: c.generation,
        })
    }

    fn answered(&self, s: &mut State, reply: Reply, llm: &LlmParams) {
        let user = s.turns.len().is_multiple_of(2);
        match reply {
            Err(why) => s.error = Some(why),
            Ok(text) if user => match clean_instruction(&text, self.stop()) {
                Ok(t) => s.turns.push(("user".into(), t)),
                Err(why) => s.error = Some(why),
            },
            Ok(text) => s.turns.push(("assistant".into(), text.trim().to_owned())),
        }
        self.prepare(s, llm);
    }

    fn finish(&self, s: State, row: &mut Row) -> Option<String> {
        if let Some(why) = s.error {
            for c in self.outputs() {
                row.insert(c, Value::Null);
            }
            return Some(why);
        }
        if self.turns == 1 {
            let mut turns = s.turns.into_iter().map(|(_, c)| c);
            row.insert("instruction", Value::from(turns.next()));
            if !self.only_instruction {
                row.insert("response", Value::from(turns.next()));
            }
        } else {
            let conversation = self.messages(&s).iter().map(Value::from_json).collect();
            row.insert("conversation", Value::List(conversation));
        }
        None
    }
}

/// `magpie_generator`: `num_rows` rows, each a Magpie conversation.
struct MagpieGenerator {
    task: RecipeTask<Magpie>,
    rows: u64,
}

impl Lifecycle for MagpieGenerator {
    fn load(&mut self) -> StepResult<()> {
        self.task.load()
    }

    fn unload(&mut self) {
        self.task.unload();
    }
}

impl Generator for MagpieGenerator {
    fn outputs(&self) -> Vec<String> {
        self.task.all_outputs()
    }

    fn generate(&mut self, _offset: u64, _count: usize) -> StepResult<(Vec<Row>, bool)> {
        Err(distill_engine::classified(
            distill_engine::ErrorKind::Bug,
            "magpie_generator needs the run's task context",
        ))
    }

    fn generate_in(
        &mut self,
        offset: u64,
        count: usize,
        ctx: &Arc<dyn TaskContext>,
    ) -> StepResult<(Vec<Row>, bool)> {
        let n = (count as u64).min(self.rows.saturating_sub(offset));
        let rows = vec![Row::new(); n as usize];
        let out = self.task.run_rows(rows, Some(offset), ctx)?;
        Ok((out, offset + n >= self.rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> Template {
        let (_, (file, text), _) = FORMATS.iter().find(|(n, _, _)| *n == name).unwrap();
        Template::new((*text).to_owned(), file).unwrap()
    }

    fn render(name: &str, messages: serde_json::Value) -> String {
        named(name)
            .render_exact(&serde_json::json!({ "messages": messages }))
            .unwrap()
    }

    #[test]
    fn pre_query_prompts_end_in_an_open_user_turn() {
        assert_eq!(
            render("chatml", serde_json::json!([])),
            "<|im_start|>user\n"
        );
        assert_eq!(
            render(
                "chatml",
                serde_json::json!([{"role": "system", "content": "Be a chemist."}, {"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}])
            ),
            "<|im_start|>system\nBe a chemist.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\nBecause.<|im_end|>\n<|im_start|>user\n"
        );
        assert_eq!(
            render(
                "llama3",
                serde_json::json!([{"role": "system", "content": "S"}])
            ),
            "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        );
        assert_eq!(
            render(
                "gemma",
                serde_json::json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
            ),
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\n"
        );
    }

    #[test]
    fn user_turns_are_cleaned() {
        assert_eq!(
            clean_instruction(
                "  How do tides work?<|im_end|>\n<|im_start|>assistant",
                Some("<|im_end|>")
            ),
            Ok("How do tides work?".into())
        );
        assert_eq!(
            clean_instruction(" \n", None).unwrap_err(),
            "the model wrote an empty user turn"
        );
    }

    #[test]
    fn parameters_are_checked() {
        let ctx = BuildContext::default();
        let base = |extra: serde_json::Value| {
            let mut p = serde_json::json!({"base_url": "http://127.0.0.1:1/v1", "model": "m", "num_rows": 2});
            p.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            p
        };
        assert!(
            magpie_generator(
                &base(serde_json::json!({"pre_query_template": "chatml"})),
                &ctx
            )
            .is_ok()
        );
        for (extra, want) in [
            (serde_json::json!({}), "missing `pre_query_template`"),
            (
                serde_json::json!({"pre_query_template": "mistral"}),
                "none of llama3",
            ),
            (
                serde_json::json!({"pre_query_template": "<s>[INST]", "n_turns": 2}),
                "`n_turns: 1`",
            ),
            (
                serde_json::json!({"pre_query_template": "chatml", "n_turns": 11}),
                "`n_turns`",
            ),
            (
                serde_json::json!({"pre_query_template": "chatml", "n_turns": 2, "only_instruction": true}),
                "`only_instruction`",
            ),
        ] {
            let err = magpie_generator(&base(extra.clone()), &ctx)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
    }
}
