//! `self_instruct`: new user requests seeded by a text (Self-Instruct, Wang et al. 2022).
//!
//! Input `input` (the seed text). Parameters: `num_instructions` (default 5, at most 100),
//! `criteria` (what makes a good set of requests; a default is built in),
//! `application_description` (who the requests are for; default "an AI assistant"),
//! `system_prompt`, `template_file`, and the connection parameters. Outputs `instructions`
//! (a list of texts: one per non-empty line of the answer, list markers and preambles
//! removed, at most `num_instructions`), `model_name`, `self_instruct_error`. Rows become one
//! per request with `expand_list` on `instructions`.

use crate::error::Error;
use crate::settings::LlmParams;
use crate::tasks::generation::text_param;
use crate::tasks::parse::strip_marker;
use crate::tasks::recipe::{Call, OneShot, Recipe, RecipeTask, Reply, chat, recipe_llm, text_of};
use crate::template::{Template, builtin};
use distill_engine::step::{BuildContext, StepKind, StepResult};
use distill_storage::{Row, Value};

/// The criteria used when none is given.
const DEFAULT_CRITERIA: &str = "Vary the verbs and the kinds of request (questions, tasks, requests for advice or for writing); keep each one self-contained, specific and answerable in text; each should need a different answer.";

/// Most requests asked for per row.
const MAX_INSTRUCTIONS: u64 = 100;

struct SelfInstruct {
    template: Template,
    system: Option<String>,
    count: usize,
    criteria: String,
    application: String,
}

/// Builds `self_instruct`.
pub fn self_instruct(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let own = [
        "num_instructions",
        "criteria",
        "application_description",
        "system_prompt",
    ];
    let llm = recipe_llm(params, &own)?;
    let count = match params.get("num_instructions") {
        None | Some(serde_json::Value::Null) => 5,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_INSTRUCTIONS).contains(n))
            .ok_or_else(|| {
                Error::params(format!(
                    "`num_instructions` must be a whole number from 1 to {MAX_INSTRUCTIONS}"
                ))
            })?,
    } as usize;
    let (name, text) = builtin::SELF_INSTRUCT;
    let recipe = SelfInstruct {
        template: Template::load(name, text, params, ctx)?,
        system: text_param(params, "system_prompt")?,
        count,
        criteria: text_param(params, "criteria")?.unwrap_or_else(|| DEFAULT_CRITERIA.into()),
        application: text_param(params, "application_description")?
            .unwrap_or_else(|| "an AI assistant".into()),
    };
    Ok(StepKind::Task(Box::new(RecipeTask::new(recipe, llm))))
}

/// The requests in an answer: one per line, without list markers, headings, preambles
/// ("Here are five requests:") or blank lines; at most `count`.
pub fn parse(answer: &str, count: usize) -> Result<Vec<String>, String> {
    let found: Vec<String> = answer
        .lines()
        .map(strip_marker)
        .map(|l| l.trim_matches(|c| c == '"' || c == '*').trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.ends_with(':'))
        .map(str::to_owned)
        .take(count)
        .collect();
    if found.is_empty() {
        return Err("the answer holds no request".into());
    }
    Ok(found)
}

impl Recipe for SelfInstruct {
    type State = OneShot<Vec<String>>;

    fn inputs(&self) -> Vec<String> {
        vec!["input".into()]
    }

    fn outputs(&self) -> Vec<String> {
        vec!["instructions".into()]
    }

    fn error_column(&self) -> &'static str {
        "self_instruct_error"
    }

    fn start(&self, row: &Row, index: usize, llm: &LlmParams) -> crate::Result<Self::State> {
        let vars = serde_json::json!({
            "input": text_of(row, "input", index)?,
            "num_instructions": self.count,
            "criteria": self.criteria,
            "application_description": self.application,
        });
        let prompt = self
            .template
            .render(&vars)
            .map_err(|detail| Error::Row { row: index, detail })?;
        Ok(OneShot::Ask(chat(llm, self.system.as_deref(), prompt)))
    }

    fn next(&self, state: &Self::State, _llm: &LlmParams) -> Option<Call> {
        state.call()
    }

    fn answered(&self, state: &mut Self::State, reply: Reply, _llm: &LlmParams) {
        state.answer(reply, |text| parse(text, self.count));
    }

    fn finish(&self, state: Self::State, row: &mut Row) -> Option<String> {
        match state {
            OneShot::Done(Ok(list)) => {
                row.insert(
                    "instructions",
                    Value::List(list.into_iter().map(Value::from).collect()),
                );
                None
            }
            OneShot::Done(Err(why)) => {
                row.insert("instructions", Value::Null);
                Some(why)
            }
            OneShot::Ask(_) => {
                row.insert("instructions", Value::Null);
                Some("not asked".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numbered_list_with_a_preamble() {
        let answer = "Here are three requests:\n\n1. Explain how tides work.\n2) What causes a neap tide?\n- Write a haiku about the moon.\n4. One too many.";
        assert_eq!(
            parse(answer, 3).unwrap(),
            vec![
                "Explain how tides work.",
                "What causes a neap tide?",
                "Write a haiku about the moon."
            ]
        );
    }

    #[test]
    fn plain_lines_truncated_and_empty_answers() {
        // A truncated answer (max_tokens reached) keeps its complete lines and the cut one.
        assert_eq!(
            parse("What is X?\nHow does Y", 5).unwrap(),
            vec!["What is X?", "How does Y"]
        );
        assert_eq!(
            parse("## Requests:\n\n", 5).unwrap_err(),
            "the answer holds no request"
        );
    }

    #[test]
    fn the_prompt_carries_the_seed_and_the_count() {
        let (name, text) = builtin::SELF_INSTRUCT;
        let t = Template::new(text.into(), name).unwrap();
        let p = t
            .render(&serde_json::json!({"input": "Tides.", "num_instructions": 3, "criteria": "C", "application_description": "A"}))
            .unwrap();
        assert!(
            p.contains("Tides.") && p.contains("write 3 different") && p.contains("\nC\n"),
            "{p}"
        );
    }
}
