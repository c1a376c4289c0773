//! Deita's scorers (Liu et al. 2023): `quality_scorer` (a quality score for each of a list of
//! `responses` to an `instruction`) and `complexity_scorer` (a complexity score for each of a
//! list of `instructions`). Scores are whole numbers from 1 to 6, asked for all items of a row
//! in one request so the judge compares them. Outputs `scores` (a list, null where the answer
//! gives no score in the scale), `model_name`, and `quality_scorer_error` or
//! `complexity_scorer_error` naming the items without a score.

use crate::error::Error;
use crate::settings::LlmParams;
use crate::tasks::generation::text_param;
use crate::tasks::parse::leading_int;
use crate::tasks::recipe::{
    Call, OneShot, Recipe, RecipeTask, Reply, chat, recipe_llm, text_of, texts_of,
};
use crate::template::{Template, builtin};
use distill_engine::step::{BuildContext, StepKind, StepResult};
use distill_storage::{Row, Value};

/// The highest score.
const TOP: i64 = 6;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scorer {
    Quality,
    Complexity,
}

struct Deita {
    scorer: Scorer,
    template: Template,
    system: Option<String>,
}

/// Builds `quality_scorer`.
pub fn quality_scorer(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    build(params, ctx, Scorer::Quality)
}

/// Builds `complexity_scorer`.
pub fn complexity_scorer(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    build(params, ctx, Scorer::Complexity)
}

fn build(params: &serde_json::Value, ctx: &BuildContext, scorer: Scorer) -> StepResult<StepKind> {
    let llm = recipe_llm(params, &["system_prompt"])?;
    let (name, text) = match scorer {
        Scorer::Quality => builtin::QUALITY_SCORER,
        Scorer::Complexity => builtin::COMPLEXITY_SCORER,
    };
    let recipe = Deita {
        scorer,
        template: Template::load(name, text, params, ctx)?,
        system: text_param(params, "system_prompt")?,
    };
    Ok(StepKind::Task(Box::new(RecipeTask::new(recipe, llm))))
}

/// The scores in an answer for `count` items: lines `[Response N] Score: S` (quality) or
/// `[N] Score: S` (complexity); items without a score in 1..=6 are null and named.
pub fn parse(answer: &str, count: usize) -> (Vec<Option<i64>>, Option<String>) {
    let mut scores: Vec<Option<i64>> = vec![None; count];
    let mut bad: Vec<String> = Vec::new();
    for line in answer.lines() {
        let l = line.trim().trim_start_matches(['*', '-', ' ']);
        let Some(rest) = l.strip_prefix('[') else {
            continue;
        };
        let Some((tag, after)) = rest.split_once(']') else {
            continue;
        };
        let tag = tag.trim();
        let tag = tag.strip_prefix("Response").unwrap_or(tag).trim();
        let Some(n) = tag
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=count).contains(n))
        else {
            continue;
        };
        let after = after.trim().trim_start_matches(['*', ' ']);
        let Some(value) = after
            .strip_prefix("Score:")
            .or_else(|| after.strip_prefix("score:"))
        else {
            continue;
        };
        match leading_int(value).filter(|s| (1..=TOP).contains(s)) {
            Some(s) => scores[n - 1] = Some(s),
            None => bad.push(format!(
                "item {n}: `{}` is not a score from 1 to {TOP}",
                value.trim()
            )),
        }
    }
    let mut problems = bad;
    for (i, s) in scores.iter().enumerate() {
        if s.is_none()
            && !problems
                .iter()
                .any(|p| p.starts_with(&format!("item {}:", i + 1)))
        {
            problems.push(format!("item {}: no score", i + 1));
        }
    }
    problems.sort_by_key(|p| {
        p.trim_start_matches("item ")
            .split(':')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    });
    (scores, (!problems.is_empty()).then(|| problems.join("; ")))
}

impl Recipe for Deita {
    type State = (usize, OneShot<(Vec<Option<i64>>, Option<String>)>);

    fn inputs(&self) -> Vec<String> {
        match self.scorer {
            Scorer::Quality => vec!["instruction".into(), "responses".into()],
            Scorer::Complexity => vec!["instructions".into()],
        }
    }

    fn outputs(&self) -> Vec<String> {
        vec!["scores".into()]
    }

    fn error_column(&self) -> &'static str {
        match self.scorer {
            Scorer::Quality => "quality_scorer_error",
            Scorer::Complexity => "complexity_scorer_error",
        }
    }

    fn start(&self, row: &Row, index: usize, llm: &LlmParams) -> crate::Result<Self::State> {
        let (vars, count) = match self.scorer {
            Scorer::Quality => {
                let responses: Vec<String> = texts_of(row, "responses", index)?
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect();
                let n = responses.len();
                (
                    serde_json::json!({"instruction": text_of(row, "instruction", index)?, "responses": responses}),
                    n,
                )
            }
            Scorer::Complexity => {
                let instructions: Vec<String> = texts_of(row, "instructions", index)?
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect();
                let n = instructions.len();
                (serde_json::json!({"instructions": instructions}), n)
            }
        };
        let prompt = self
            .template
            .render(&vars)
            .map_err(|detail| Error::Row { row: index, detail })?;
        Ok((
            count,
            OneShot::Ask(chat(llm, self.system.as_deref(), prompt)),
        ))
    }

    fn next(&self, state: &Self::State, _llm: &LlmParams) -> Option<Call> {
        state.1.call()
    }

    fn answered(&self, state: &mut Self::State, reply: Reply, _llm: &LlmParams) {
        let count = state.0;
        state.1.answer(reply, |text| Ok(parse(text, count)));
    }

    fn finish(&self, state: Self::State, row: &mut Row) -> Option<String> {
        let (count, outcome) = state;
        let (scores, error) = match outcome {
            OneShot::Done(Ok(parsed)) => parsed,
            OneShot::Done(Err(why)) => (vec![None; count], Some(why)),
            OneShot::Ask(_) => (vec![None; count], Some("not asked".into())),
        };
        row.insert(
            "scores",
            Value::List(scores.into_iter().map(Value::from).collect()),
        );
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_answers_both_forms() {
        let (s, e) = parse("[Response 1] Score: 5\n[Response 2] Score: 2", 2);
        assert_eq!((s, e), (vec![Some(5), Some(2)], None));
        let (s, e) = parse("Here you go:\n[1] Score: 3\n[2] Score: 6 (hard)\n", 2);
        assert_eq!((s, e), (vec![Some(3), Some(6)], None));
    }

    #[test]
    fn wrong_scale_truncation_and_prose() {
        let (s, e) = parse("[1] Score: 9\n[2] Score: 4\n[3] Sco", 3);
        assert_eq!(s, vec![None, Some(4), None]);
        assert_eq!(
            e.as_deref(),
            Some("item 1: `9` is not a score from 1 to 6; item 3: no score")
        );
        let (s, e) = parse("The first is better than the second.", 2);
        assert_eq!(s, vec![None, None]);
        assert_eq!(e.as_deref(), Some("item 1: no score; item 2: no score"));
    }

    #[test]
    fn templates_number_every_item() {
        let (name, text) = builtin::QUALITY_SCORER;
        let p = Template::new(text.into(), name)
            .unwrap()
            .render(&serde_json::json!({"instruction": "Q", "responses": ["a", "b"]}))
            .unwrap();
        assert!(
            p.contains("[Response 2] b") && p.contains("[Response 2] Score:"),
            "{p}"
        );
        let (name, text) = builtin::COMPLEXITY_SCORER;
        let p = Template::new(text.into(), name)
            .unwrap()
            .render(&serde_json::json!({"instructions": ["x", "y"]}))
            .unwrap();
        assert!(p.contains("[2] y") && p.contains("[2] Score:"), "{p}");
    }
}
