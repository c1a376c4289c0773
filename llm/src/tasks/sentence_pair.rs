//! `generate_sentence_pair`: for each `anchor`, a positive sentence and, with `triplet: true`,
//! a negative one: training data for retrieval and embedding models.
//!
//! Parameters: `action` (`paraphrase`, the default, `semantically-similar`, `query`: a
//! search query the anchor answers, or `answer`: an answer to the anchor as a query),
//! `triplet`, `hard_negative` (a negative that is easy to mistake for a match), `context`,
//! `system_prompt`, `template_file`. Outputs `positive` (and `negative` with `triplet`),
//! `model_name`, `generate_sentence_pair_error`.

use crate::error::Error;
use crate::settings::LlmParams;
use crate::tasks::generation::text_param;
use crate::tasks::parse::strip_label;
use crate::tasks::recipe::{Call, OneShot, Recipe, RecipeTask, Reply, chat, recipe_llm, text_of};
use crate::template::{Template, builtin};
use distill_engine::step::{BuildContext, StepKind, StepResult};
use distill_storage::{Row, Value};

/// The actions.
pub const ACTIONS: &[&str] = &["paraphrase", "semantically-similar", "query", "answer"];

struct SentencePair {
    template: Template,
    system: Option<String>,
    action: String,
    triplet: bool,
    hard_negative: bool,
    context: Option<String>,
}

/// Builds `generate_sentence_pair`.
pub fn generate_sentence_pair(
    params: &serde_json::Value,
    ctx: &BuildContext,
) -> StepResult<StepKind> {
    let own = [
        "action",
        "triplet",
        "hard_negative",
        "context",
        "system_prompt",
    ];
    let llm = recipe_llm(params, &own)?;
    let action = text_param(params, "action")?.unwrap_or_else(|| "paraphrase".into());
    if !ACTIONS.contains(&action.as_str()) {
        return Err(Error::params(format!(
            "`action` must be one of {}, not `{action}`",
            ACTIONS.join(", ")
        ))
        .into());
    }
    let flag = |key: &str| -> Result<bool, Error> {
        match params.get(key) {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(_) => Err(Error::params(format!("`{key}` must be true or false"))),
        }
    };
    let (name, text) = builtin::SENTENCE_PAIR;
    let recipe = SentencePair {
        template: Template::load(name, text, params, ctx)?,
        system: text_param(params, "system_prompt")?,
        action,
        triplet: flag("triplet")?,
        hard_negative: flag("hard_negative")?,
        context: text_param(params, "context")?,
    };
    Ok(StepKind::Task(Box::new(RecipeTask::new(recipe, llm))))
}

/// The sections of an answer: `## Positive` (and `## Negative` for a triplet).
pub fn parse(answer: &str, triplet: bool) -> Result<(String, Option<String>), String> {
    let section = |name: &str| -> Option<String> {
        let lower = answer.to_ascii_lowercase();
        let at = lower.find(&format!("## {name}"))?;
        let body = &answer[at + 3 + name.len()..];
        let end = body.find("\n##").unwrap_or(body.len());
        let text = strip_label(&body[..end], &[":"]);
        Some(text).filter(|t| !t.is_empty())
    };
    let positive = section("positive").ok_or("the answer has no `## Positive` sentence")?;
    let negative = if triplet {
        Some(section("negative").ok_or("the answer has no `## Negative` sentence")?)
    } else {
        None
    };
    Ok((positive, negative))
}

impl Recipe for SentencePair {
    type State = OneShot<(String, Option<String>)>;

    fn inputs(&self) -> Vec<String> {
        vec!["anchor".into()]
    }

    fn outputs(&self) -> Vec<String> {
        if self.triplet {
            vec!["positive".into(), "negative".into()]
        } else {
            vec!["positive".into()]
        }
    }

    fn error_column(&self) -> &'static str {
        "generate_sentence_pair_error"
    }

    fn start(&self, row: &Row, index: usize, llm: &LlmParams) -> crate::Result<Self::State> {
        let vars = serde_json::json!({
            "anchor": text_of(row, "anchor", index)?,
            "action": self.action,
            "triplet": self.triplet,
            "hard_negative": self.hard_negative,
            "context": self.context,
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
        state.answer(reply, |text| parse(text, self.triplet));
    }

    fn finish(&self, state: Self::State, row: &mut Row) -> Option<String> {
        let (positive, negative, error) = match state {
            OneShot::Done(Ok((p, n))) => (Some(p), n, None),
            OneShot::Done(Err(why)) => (None, None, Some(why)),
            OneShot::Ask(_) => (None, None, Some("not asked".into())),
        };
        row.insert("positive", Value::from(positive));
        if self.triplet {
            row.insert("negative", Value::from(negative));
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_and_triplets() {
        assert_eq!(
            parse("## Positive\nThe cat sat on the mat.\n", false),
            Ok(("The cat sat on the mat.".into(), None))
        );
        assert_eq!(
            parse(
                "Here:\n## Positive: A cat rested on a rug.\n## Negative\nA dog ran.\n",
                true
            ),
            Ok(("A cat rested on a rug.".into(), Some("A dog ran.".into())))
        );
    }

    #[test]
    fn missing_sections_say_which() {
        assert_eq!(
            parse("## Positive\nA cat.", true).unwrap_err(),
            "the answer has no `## Negative` sentence"
        );
        assert_eq!(
            parse("A cat sat somewhere.", false).unwrap_err(),
            "the answer has no `## Positive` sentence"
        );
        assert_eq!(
            parse("## Positive\n\n## Negative\nx", true).unwrap_err(),
            "the answer has no `## Positive` sentence"
        );
    }

    #[test]
    fn every_action_renders() {
        let (name, text) = builtin::SENTENCE_PAIR;
        let t = Template::new(text.into(), name).unwrap();
        for action in ACTIONS {
            let p = t
                .render(&serde_json::json!({"anchor": "A", "action": action, "triplet": true, "hard_negative": true, "context": null}))
                .unwrap();
            assert!(
                p.contains("## Negative") && p.contains("easy to mistake"),
                "{p}"
            );
        }
    }
}
