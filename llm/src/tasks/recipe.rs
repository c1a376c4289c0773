//! The shape every built-in recipe shares: each row goes through rounds of requests (one per
//! round at most), each answer is parsed into the row's state, and at the end the state
//! becomes the row's columns, plus `model_name` and the recipe's error column (null, or why an
//! output is null: a failed request, an answer that does not parse).
//!
//! Rounds let a recipe depend on its earlier answers (Evol-Instruct evolves its own output,
//! Magpie alternates user and assistant turns): all rows of a batch take round k together, so
//! each round's requests run concurrently. Every request goes through the [`Runner`]: the
//! request cache first, every paid answer committed before it is used.

use crate::api::Api;
use crate::error::{Error, Result};
use crate::response::Completion;
use crate::runner::{Request, Runner};
use crate::settings::LlmParams;
use distill_engine::step::{Lifecycle, StepResult};
use distill_engine::task::{Task, TaskContext};
use distill_storage::{Row, Value};
use std::sync::Arc;

/// Most rounds of one batch: far above any recipe's need, a guard against a recipe that never
/// says it is done.
const MAX_ROUNDS: usize = 1024;

/// One request a recipe wants made.
pub(crate) struct Call {
    /// The API it goes to.
    pub api: Api,
    /// The request body.
    pub body: serde_json::Value,
    /// Generation index (part of the cache key): distinguishes equal bodies that must get
    /// their own answers.
    pub generation: u32,
}

/// An answer as a recipe sees it: the text, or why there is none.
pub(crate) type Reply = std::result::Result<String, String>;

/// A recipe: how a row becomes requests, and answers become columns.
pub(crate) trait Recipe: Send + Sync + 'static {
    /// What a row carries between rounds.
    type State: Send;

    /// Columns each input row must have.
    fn inputs(&self) -> Vec<String>;

    /// The recipe's own output columns (`model_name` and the error column come after them).
    fn outputs(&self) -> Vec<String>;

    /// The error column.
    fn error_column(&self) -> &'static str;

    /// The state of row `row` (its index in the batch is `index`) before any request.
    fn start(&self, row: &Row, index: usize, llm: &LlmParams) -> Result<Self::State>;

    /// [`Recipe::start`] for row number `number` of a generator's output (a number that is
    /// the same in every run): recipes whose rows all look alike use it to tell them apart.
    fn start_numbered(
        &self,
        row: &Row,
        index: usize,
        _number: u64,
        llm: &LlmParams,
    ) -> Result<Self::State> {
        self.start(row, index, llm)
    }

    /// The row's next request, or `None` when it is done.
    fn next(&self, state: &Self::State, llm: &LlmParams) -> Option<Call>;

    /// Takes the answer to the request `next` gave (and prepares the next request, if any).
    fn answered(&self, state: &mut Self::State, reply: Reply, llm: &LlmParams);

    /// Writes the row's output columns; returns the error to keep, if any.
    fn finish(&self, state: Self::State, row: &mut Row) -> Option<String>;

    /// The APIs the recipe calls.
    fn apis(&self) -> &'static [Api] {
        &[Api::Chat]
    }
}

/// A recipe with its connections: a task (or the engine of a generator, see Magpie).
pub(crate) struct RecipeTask<R: Recipe> {
    pub recipe: R,
    runners: Vec<(Api, Runner)>,
}

impl<R: Recipe> RecipeTask<R> {
    /// The task of `recipe`, connected by `llm` to every API it calls.
    pub fn new(recipe: R, llm: LlmParams) -> Self {
        let runners = recipe
            .apis()
            .iter()
            .map(|&api| (api, Runner::for_api(llm.clone(), api)))
            .collect();
        Self { recipe, runners }
    }

    /// The connection parameters.
    pub fn llm(&self) -> &LlmParams {
        &self.runners[0].1.params
    }

    /// Runs the recipe over `rows`: round after round until every row is done. `first` is
    /// the number of the first row when they are a generator's (see
    /// [`Recipe::start_numbered`]).
    pub fn run_rows(
        &self,
        rows: Vec<Row>,
        first: Option<u64>,
        ctx: &Arc<dyn TaskContext>,
    ) -> StepResult<Vec<Row>> {
        let llm = self.llm();
        let mut states = rows
            .iter()
            .enumerate()
            .map(|(i, row)| match first {
                Some(first) => self.recipe.start_numbered(row, i, first + i as u64, llm),
                None => self.recipe.start(row, i, llm),
            })
            .collect::<Result<Vec<_>>>()?;
        let mut models: Vec<Option<String>> = vec![None; rows.len()];
        for round in 0.. {
            let calls: Vec<(usize, Call)> = states
                .iter()
                .enumerate()
                .filter_map(|(i, s)| self.recipe.next(s, llm).map(|c| (i, c)))
                .collect();
            if calls.is_empty() {
                break;
            }
            if round == MAX_ROUNDS {
                return Err(distill_engine::classified(
                    distill_engine::ErrorKind::Bug,
                    format!("a recipe asked for more than {MAX_ROUNDS} rounds"),
                ));
            }
            for (api, runner) in &self.runners {
                let (rows_of, requests): (Vec<usize>, Vec<Request>) = calls
                    .iter()
                    .filter(|(_, c)| c.api == *api)
                    .map(|(i, c)| {
                        (
                            *i,
                            Request {
                                body: c.body.clone(),
                                generation: c.generation,
                            },
                        )
                    })
                    .unzip();
                if requests.is_empty() {
                    continue;
                }
                let outcomes = runner.run(requests, ctx)?;
                for (i, outcome) in rows_of.into_iter().zip(outcomes) {
                    let reply = match outcome {
                        Ok(answered) => {
                            let Completion { text, model, .. } = answered.completion;
                            if model.is_some() {
                                models[i] = model;
                            }
                            Ok(text)
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    self.recipe.answered(&mut states[i], reply, llm);
                }
            }
        }
        Ok(rows
            .into_iter()
            .zip(states)
            .zip(models)
            .map(|((mut row, state), model)| {
                let error = self.recipe.finish(state, &mut row);
                row.insert("model_name", Value::from(model));
                row.insert(self.recipe.error_column(), Value::from(error));
                row
            })
            .collect())
    }

    /// Every output column: the recipe's, `model_name`, the error column.
    pub fn all_outputs(&self) -> Vec<String> {
        let mut out = self.recipe.outputs();
        out.push("model_name".into());
        out.push(self.recipe.error_column().into());
        out
    }
}

impl<R: Recipe> Lifecycle for RecipeTask<R> {
    fn load(&mut self) -> StepResult<()> {
        for (_, runner) in &mut self.runners {
            runner.load().map_err(Error::into_step_error)?;
        }
        Ok(())
    }

    fn unload(&mut self) {
        for (_, runner) in &mut self.runners {
            runner.unload();
        }
    }
}

impl<R: Recipe> Task for RecipeTask<R> {
    fn inputs(&self) -> Vec<String> {
        self.recipe.inputs()
    }

    fn outputs(&self) -> Vec<String> {
        self.all_outputs()
    }

    fn process(&self, rows: Vec<Row>, ctx: &Arc<dyn TaskContext>) -> StepResult<Vec<Row>> {
        self.run_rows(rows, None, ctx)
    }

    fn check_budgeted(&self) -> StepResult<()> {
        Ok(self.llm().check_budgeted()?)
    }
}

/// The connection parameters of a recipe (its `own` parameters left out); recipes make one
/// answer per row, so `num_generations` other than 1 is refused, and so is `keep_raw`.
pub(crate) fn recipe_llm(params: &serde_json::Value, own: &[&str]) -> Result<LlmParams> {
    let mut own = own.to_vec();
    own.push("template_file");
    let llm = LlmParams::from_params(params, &own)?;
    if llm.num_generations != 1 {
        return Err(Error::params(
            "`num_generations` is not a parameter of this recipe (it makes one answer per row)",
        ));
    }
    if llm.keep_raw {
        return Err(Error::params(
            "`keep_raw` is not a parameter of this recipe",
        ));
    }
    if llm.mode == crate::batch::Mode::Batch {
        return Err(Error::params(
            "`mode: batch` is not available for recipes (their later requests depend on earlier answers); the base tasks (text_generation, chat_generation, text_completion, structured_generation, judge, embeddings) take it",
        ));
    }
    Ok(llm)
}

/// The text of `column` in `row` (a row error naming it when it is missing or not text).
pub(crate) fn text_of(row: &Row, column: &str, index: usize) -> Result<String> {
    match row.get(column) {
        Some(Value::Str(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Err(Error::Row {
            row: index,
            detail: format!("`{column}` is missing or null"),
        }),
        Some(other) => Ok(other.to_string()),
    }
}

/// The texts of the list column `column` (nulls kept as `None`).
pub(crate) fn texts_of(row: &Row, column: &str, index: usize) -> Result<Vec<Option<String>>> {
    match row.get(column) {
        Some(Value::List(items)) => Ok(items
            .iter()
            .map(|v| match v {
                Value::Null => None,
                Value::Str(s) => Some(s.clone()),
                other => Some(other.to_string()),
            })
            .collect()),
        other => Err(Error::Row {
            row: index,
            detail: format!(
                "`{column}` must be a list, found {}",
                other.map_or("nothing", Value::kind)
            ),
        }),
    }
}

/// A chat body with one user message (and a system message first when given).
pub(crate) fn chat(llm: &LlmParams, system: Option<&str>, user: String) -> serde_json::Value {
    let mut messages = Vec::new();
    if let Some(system) = system {
        messages.push(serde_json::json!({"role": "system", "content": system}));
    }
    messages.push(serde_json::json!({"role": "user", "content": user}));
    llm.body(messages)
}

/// A one-round recipe's state: the prompt (or why there is none) and then the answer.
pub(crate) enum OneShot<T> {
    /// The request to make.
    Ask(serde_json::Value),
    /// The parsed answer, or why there is none.
    Done(std::result::Result<T, String>),
}

impl<T> OneShot<T> {
    /// The call to make, if the row still waits for one.
    pub fn call(&self) -> Option<Call> {
        match self {
            OneShot::Ask(body) => Some(Call {
                api: Api::Chat,
                body: body.clone(),
                generation: 0,
            }),
            OneShot::Done(_) => None,
        }
    }

    /// Takes the reply, parsed by `parse`.
    pub fn answer(
        &mut self,
        reply: Reply,
        parse: impl FnOnce(&str) -> std::result::Result<T, String>,
    ) {
        *self = OneShot::Done(reply.and_then(|text| parse(&text)));
    }
}
