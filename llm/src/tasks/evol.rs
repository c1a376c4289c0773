//! `evol_instruct` (Evol-Instruct, Xu et al. 2023) and `evol_quality` (Deita's Evol-Quality,
//! Liu et al. 2023): an instruction, or a response, rewritten `num_evolutions` times, each
//! time by one mutation, each evolution starting from the previous one's output.
//!
//! `evol_instruct` mutations: in depth `add_constraints`, `deepen`, `concretize`,
//! `increase_reasoning`; in breadth `breadth` (a new instruction inspired by the old one).
//! `evol_quality` mutations: `helpfulness`, `relevance`, `deepen`, `creativity`, `details`.
//! `mutations` restricts the set. Each evolution's mutation is chosen from the set by a hash
//! of `seed` (default 0), the row's input text and the evolution's number: the same row gets
//! the same mutations in every run and after a resume, whatever the batch or the process.
//!
//! An evolution whose answer is empty, or repeats its input, fails: the row's outputs are
//! null and the error column says which evolution (the paper's elimination of failed
//! evolutions). With `generate_answers` (evol_instruct), each kept instruction is then
//! answered (`answer`, or `answers` with `store_evolutions`).

use crate::api::Api;
use crate::error::Error;
use crate::settings::LlmParams;
use crate::tasks::generation::text_param;
use crate::tasks::parse::strip_label;
use crate::tasks::recipe::{Call, Recipe, RecipeTask, Reply, chat, recipe_llm, text_of};
use crate::template::{Template, builtin};
use distill_engine::step::{BuildContext, StepKind, StepResult};
use distill_storage::{Row, Value};

/// Evol-Instruct's mutations.
pub const INSTRUCT_MUTATIONS: &[&str] = &[
    "add_constraints",
    "deepen",
    "concretize",
    "increase_reasoning",
    "breadth",
];
/// Evol-Quality's mutations.
pub const QUALITY_MUTATIONS: &[&str] = &[
    "helpfulness",
    "relevance",
    "deepen",
    "creativity",
    "details",
];

/// Most evolutions per row.
const MAX_EVOLUTIONS: u64 = 10;

/// Labels a model may put before its rewrite.
const LABELS: &[&str] = &[
    "#Rewritten Prompt#",
    "#Rewritten Response#",
    "Rewritten prompt",
    "Rewritten instruction",
    "New instruction",
    "Improved response",
    "Rewritten response",
    "Instruction",
    "Response",
];

/// What evolves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Instruction,
    Response,
}

struct Evol {
    target: Target,
    template: Template,
    system: Option<String>,
    evolutions: usize,
    mutations: Vec<String>,
    seed: u64,
    store: bool,
    answers: bool,
}

/// Builds `evol_instruct`.
pub fn evol_instruct(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    build(params, ctx, Target::Instruction)
}

/// Builds `evol_quality`.
pub fn evol_quality(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    build(params, ctx, Target::Response)
}

fn build(params: &serde_json::Value, ctx: &BuildContext, target: Target) -> StepResult<StepKind> {
    let mut own = vec![
        "num_evolutions",
        "mutations",
        "seed",
        "store_evolutions",
        "system_prompt",
    ];
    if target == Target::Instruction {
        own.push("generate_answers");
    }
    let llm = recipe_llm(params, &own)?;
    let evolutions = match params.get("num_evolutions") {
        None | Some(serde_json::Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_EVOLUTIONS).contains(n))
            .ok_or_else(|| {
                Error::params(format!(
                    "`num_evolutions` must be a whole number from 1 to {MAX_EVOLUTIONS}"
                ))
            })?,
    } as usize;
    let known = match target {
        Target::Instruction => INSTRUCT_MUTATIONS,
        Target::Response => QUALITY_MUTATIONS,
    };
    let mutations: Vec<String> = match params.get("mutations") {
        None | Some(serde_json::Value::Null) => known.iter().map(|m| (*m).to_owned()).collect(),
        Some(serde_json::Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::new();
            for item in items {
                match item.as_str() {
                    Some(m) if known.contains(&m) => out.push(m.to_owned()),
                    _ => {
                        return Err(Error::params(format!(
                            "`mutations`: {item} is not one of {}",
                            known.join(", ")
                        ))
                        .into());
                    }
                }
            }
            out
        }
        Some(_) => {
            return Err(Error::params(format!(
                "`mutations` must be a non-empty list of: {}",
                known.join(", ")
            ))
            .into());
        }
    };
    let flag = |key: &str| -> Result<bool, Error> {
        match params.get(key) {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(_) => Err(Error::params(format!("`{key}` must be true or false"))),
        }
    };
    let seed = match params.get("seed") {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| Error::params("`seed` must be a whole number from 0"))?,
    };
    let (name, text) = match target {
        Target::Instruction => builtin::EVOL_INSTRUCT,
        Target::Response => builtin::EVOL_QUALITY,
    };
    let recipe = Evol {
        target,
        template: Template::load(name, text, params, ctx)?,
        system: text_param(params, "system_prompt")?,
        evolutions,
        mutations,
        seed,
        store: flag("store_evolutions")?,
        answers: target == Target::Instruction && flag("generate_answers")?,
    };
    Ok(StepKind::Task(Box::new(RecipeTask::new(recipe, llm))))
}

/// The mutation of evolution `k` (0-based) of a row whose input is `text`: a hash of the seed,
/// the text and `k`, modulo the number of mutations.
pub fn choose(seed: u64, text: &str, k: usize, count: usize) -> usize {
    let mut h = blake3::Hasher::new();
    h.update(b"distill evol mutation v1");
    h.update(&seed.to_le_bytes());
    h.update(&(k as u64).to_le_bytes());
    h.update(text.as_bytes());
    let bytes = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes.as_bytes()[..8]);
    (u64::from_le_bytes(first) % count as u64) as usize
}

/// The evolved text in an answer, or why the evolution failed.
pub fn parse(answer: &str, previous: &str) -> Result<String, String> {
    let text = strip_label(answer, LABELS);
    if text.is_empty() {
        return Err("the answer is empty".into());
    }
    if text.trim() == previous.trim() {
        return Err("the answer repeats its input".into());
    }
    Ok(text)
}

/// A row on its way.
struct State {
    instruction: String,
    /// The text being evolved: each evolution's output, the input first.
    chain: Vec<String>,
    chosen: Vec<String>,
    answers: Vec<String>,
    /// Which text is asked next: an evolution (`< evolutions`), or an answer.
    error: Option<String>,
    body: Option<serde_json::Value>,
}

impl Evol {
    fn input_column(&self) -> &'static str {
        match self.target {
            Target::Instruction => "instruction",
            Target::Response => "response",
        }
    }

    /// The texts to answer (with `generate_answers`): every evolution, or the last.
    fn to_answer<'a>(&self, s: &'a State) -> &'a [String] {
        let evolved = &s.chain[1..];
        if self.store {
            evolved
        } else {
            &evolved[evolved.len().saturating_sub(1)..]
        }
    }

    /// The next request of a row, given what it has.
    fn request(&self, s: &State, llm: &LlmParams) -> Result<Option<serde_json::Value>, String> {
        if s.error.is_some() {
            return Ok(None);
        }
        let k = s.chain.len() - 1;
        if k < self.evolutions {
            let seed_text = &s.chain[0];
            let mutation = &self.mutations[choose(self.seed, seed_text, k, self.mutations.len())];
            let current = &s.chain[k];
            let vars = match self.target {
                Target::Instruction => {
                    serde_json::json!({"instruction": current, "mutation": mutation})
                }
                Target::Response => serde_json::json!({
                    "instruction": s.instruction,
                    "response": current,
                    "mutation": mutation,
                }),
            };
            let prompt = self.template.render(&vars)?;
            return Ok(Some(chat(llm, self.system.as_deref(), prompt)));
        }
        if self.answers {
            let todo = self.to_answer(s);
            if s.answers.len() < todo.len() {
                return Ok(Some(chat(llm, None, todo[s.answers.len()].clone())));
            }
        }
        Ok(None)
    }
}

impl Recipe for Evol {
    type State = State;

    fn inputs(&self) -> Vec<String> {
        match self.target {
            Target::Instruction => vec!["instruction".into()],
            Target::Response => vec!["instruction".into(), "response".into()],
        }
    }

    fn outputs(&self) -> Vec<String> {
        let mut out = vec![
            match (self.target, self.store) {
                (Target::Instruction, false) => "evolved_instruction",
                (Target::Instruction, true) => "evolved_instructions",
                (Target::Response, false) => "evolved_response",
                (Target::Response, true) => "evolved_responses",
            }
            .to_owned(),
            "mutations".to_owned(),
        ];
        if self.answers {
            out.push(if self.store { "answers" } else { "answer" }.into());
        }
        out
    }

    fn error_column(&self) -> &'static str {
        match self.target {
            Target::Instruction => "evol_instruct_error",
            Target::Response => "evol_quality_error",
        }
    }

    fn start(&self, row: &Row, index: usize, llm: &LlmParams) -> crate::Result<State> {
        let input = text_of(row, self.input_column(), index)?;
        let instruction = match self.target {
            Target::Instruction => input.clone(),
            Target::Response => text_of(row, "instruction", index)?,
        };
        let mut state = State {
            instruction,
            chain: vec![input],
            chosen: Vec::new(),
            answers: Vec::new(),
            error: None,
            body: None,
        };
        state.body = self
            .request(&state, llm)
            .map_err(|detail| Error::Row { row: index, detail })?;
        Ok(state)
    }

    fn next(&self, s: &State, _llm: &LlmParams) -> Option<Call> {
        s.body.as_ref().map(|body| Call {
            api: Api::Chat,
            body: body.clone(),
            generation: 0,
        })
    }

    fn answered(&self, s: &mut State, reply: Reply, llm: &LlmParams) {
        let k = s.chain.len() - 1;
        let evolving = k < self.evolutions;
        match reply {
            Err(why) => s.error = Some(why),
            Ok(text) if evolving => match parse(&text, &s.chain[k]) {
                Ok(evolved) => {
                    let mutation =
                        &self.mutations[choose(self.seed, &s.chain[0], k, self.mutations.len())];
                    s.chosen.push(mutation.clone());
                    s.chain.push(evolved);
                }
                Err(why) => s.error = Some(format!("evolution {}: {why}", k + 1)),
            },
            Ok(text) => s.answers.push(text.trim().to_owned()),
        }
        // The next request is rendered now, from the model's text: a template error is this
        // row's error, not the batch's.
        s.body = match self.request(s, llm) {
            Ok(body) => body,
            Err(why) => {
                s.error = Some(why);
                None
            }
        };
    }

    fn finish(&self, s: State, row: &mut Row) -> Option<String> {
        let outs = self.outputs();
        if let Some(why) = s.error {
            for c in outs {
                row.insert(c, Value::Null);
            }
            return Some(why);
        }
        let list = |items: Vec<String>| Value::List(items.into_iter().map(Value::from).collect());
        let evolved = if self.store {
            list(s.chain[1..].to_vec())
        } else {
            Value::from(s.chain.last().cloned())
        };
        row.insert(outs[0].clone(), evolved);
        row.insert("mutations", list(s.chosen));
        if self.answers {
            let answers = if self.store {
                list(s.answers)
            } else {
                Value::from(s.answers.into_iter().last())
            };
            row.insert(outs[2].clone(), answers);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutation_choice_is_seeded_by_content_and_spreads() {
        let a: Vec<usize> = (0..4).map(|k| choose(7, "Sort a list.", k, 5)).collect();
        assert_eq!(
            a,
            (0..4)
                .map(|k| choose(7, "Sort a list.", k, 5))
                .collect::<Vec<_>>()
        );
        let mut seen = [0usize; 5];
        for i in 0..500 {
            seen[choose(1, &format!("instruction {i}"), 0, 5)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        let other: Vec<usize> = (0..20).map(|k| choose(8, "Sort a list.", k, 5)).collect();
        let same: Vec<usize> = (0..20).map(|k| choose(7, "Sort a list.", k, 5)).collect();
        assert_ne!(other, same, "the seed matters");
    }

    #[test]
    fn evolutions_are_parsed_and_failures_named() {
        assert_eq!(
            parse(
                "#Rewritten Prompt#:\nSort a list of 10 numbers in place.",
                "Sort a list."
            )
            .unwrap(),
            "Sort a list of 10 numbers in place."
        );
        assert_eq!(
            parse("Rewritten instruction: \"Sort it twice.\"", "x").unwrap(),
            "Sort it twice."
        );
        assert_eq!(parse("  \n", "x").unwrap_err(), "the answer is empty");
        assert_eq!(
            parse("Sort a list.", "Sort a list.").unwrap_err(),
            "the answer repeats its input"
        );
    }

    #[test]
    fn each_mutation_renders_its_own_guidance() {
        let (name, text) = builtin::EVOL_INSTRUCT;
        let t = Template::new(text.into(), name).unwrap();
        let mut seen = std::collections::HashSet::new();
        for m in INSTRUCT_MUTATIONS {
            let p = t
                .render(&serde_json::json!({"instruction": "Sort a list.", "mutation": m}))
                .unwrap();
            assert!(p.contains("Sort a list."));
            assert!(seen.insert(p), "{m} renders like another mutation");
        }
        let (name, text) = builtin::EVOL_QUALITY;
        let t = Template::new(text.into(), name).unwrap();
        for m in QUALITY_MUTATIONS {
            let p = t
                .render(&serde_json::json!({"instruction": "I", "response": "R", "mutation": m}))
                .unwrap();
            assert!(seen.insert(p), "{m} renders like another mutation");
        }
    }
}
