//! `ultrafeedback`: UltraFeedback's fine-grained ratings (Cui et al. 2023) of a `generations`
//! list for an `instruction`, on one `aspect`: `helpfulness`, `honesty`,
//! `instruction-following`, `truthfulness` (each rated 1 to 5) or `overall-rating` (1 to 10,
//! the default).
//!
//! Outputs: `ratings` (one per generation, null where the answer gives none in the scale) and
//! `rationales`; for `helpfulness` and `truthfulness`, as in the method, also `types` (the
//! numbers of the kinds of helpful information, or of hallucination, the judge saw in each
//! text: a list, empty for "None") with `rationales` explaining them and
//! `rationales_for_ratings` explaining the ratings. Then `model_name` and `ultrafeedback_error`
//! (which texts got no rating, and why). `judge` stays the free-aspect form.

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

/// The aspects.
pub const ASPECTS: &[&str] = &[
    "helpfulness",
    "honesty",
    "instruction-following",
    "truthfulness",
    "overall-rating",
];

struct UltraFeedback {
    template: Template,
    system: Option<String>,
    aspect: String,
}

/// Builds `ultrafeedback`.
pub fn ultrafeedback(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let llm = recipe_llm(params, &["aspect", "system_prompt"])?;
    let aspect = text_param(params, "aspect")?.unwrap_or_else(|| "overall-rating".into());
    if !ASPECTS.contains(&aspect.as_str()) {
        return Err(Error::params(format!(
            "`aspect` must be one of {}, not `{aspect}`",
            ASPECTS.join(", ")
        ))
        .into());
    }
    let (name, text) = builtin::ULTRAFEEDBACK;
    let recipe = UltraFeedback {
        template: Template::load(name, text, params, ctx)?,
        system: text_param(params, "system_prompt")?,
        aspect,
    };
    Ok(StepKind::Task(Box::new(RecipeTask::new(recipe, llm))))
}

/// What the judge said of one text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// The kinds it saw (typed aspects): `Some(vec![])` for "None".
    pub types: Option<Vec<i64>>,
    /// Why those kinds.
    pub types_rationale: Option<String>,
    /// The rating, within the scale.
    pub rating: Option<i64>,
    /// Why that rating.
    pub rationale: Option<String>,
}

/// Whether `aspect` has types.
pub fn typed(aspect: &str) -> bool {
    matches!(aspect, "helpfulness" | "truthfulness")
}

/// The highest rating of `aspect`.
pub fn scale(aspect: &str) -> i64 {
    if aspect == "overall-rating" { 10 } else { 5 }
}

/// Parses an answer about `count` texts: one verdict per text, and the problems found (texts
/// without a rating in the scale, or with none at all).
pub fn parse(answer: &str, count: usize, aspect: &str) -> (Vec<Verdict>, Option<String>) {
    let top = scale(aspect);
    let mut verdicts = vec![Verdict::default(); count];
    let mut problems: Vec<String> = Vec::new();
    let mut seen = vec![false; count];
    for block in answer.split("#### Output for Text").skip(1) {
        let mut lines = block.lines();
        let Some(n) = lines
            .next()
            .and_then(|l| l.trim().trim_end_matches(':').trim().parse::<usize>().ok())
            .filter(|n| (1..=count).contains(n))
        else {
            continue;
        };
        seen[n - 1] = true;
        let v = &mut verdicts[n - 1];
        // Which field a continuation line belongs to.
        let mut field: Option<&'static str> = None;
        let mut rated = false;
        for line in lines {
            let l = line.trim();
            let (key, rest) = match l.split_once(':') {
                Some((k, r))
                    if ["type", "rationale", "rating"]
                        .contains(&k.trim().to_ascii_lowercase().as_str()) =>
                {
                    (k.trim().to_ascii_lowercase(), r.trim())
                }
                _ => {
                    // A rationale that goes on over several lines.
                    if !l.is_empty() {
                        let target = match field {
                            Some("types_rationale") => &mut v.types_rationale,
                            Some("rationale") => &mut v.rationale,
                            _ => continue,
                        };
                        if let Some(t) = target {
                            t.push(' ');
                            t.push_str(l);
                        }
                    }
                    continue;
                }
            };
            match key.as_str() {
                "type" => {
                    v.types = Some(parse_types(rest));
                    field = None;
                }
                "rating" => {
                    rated = true;
                    v.rating = leading_int(rest).filter(|r| (1..=top).contains(r));
                    if v.rating.is_none() {
                        problems.push(if rest.to_ascii_uppercase().starts_with("N/A") {
                            format!("text {n}: not applicable")
                        } else {
                            format!("text {n}: `{rest}` is not a rating from 1 to {top}")
                        });
                    }
                    field = None;
                }
                _ => {
                    // A rationale before the rating explains the types (typed aspects).
                    let text = Some(rest.to_owned()).filter(|r| !r.is_empty());
                    if typed(aspect) && !rated && v.types_rationale.is_none() {
                        v.types_rationale = text;
                        field = Some("types_rationale");
                    } else {
                        v.rationale = text;
                        field = Some("rationale");
                    }
                }
            }
        }
        if !rated {
            problems.push(format!("text {n}: no rating"));
        }
    }
    for (i, s) in seen.iter().enumerate() {
        if !s {
            problems.push(format!("text {}: not in the answer", i + 1));
        }
    }
    problems.sort_by_key(|p| {
        p.trim_start_matches("text ")
            .split(':')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0)
    });
    let error = (!problems.is_empty()).then(|| problems.join("; "));
    (verdicts, error)
}

/// The kinds named on a `Type:` line: numbers, or none for "None".
fn parse_types(text: &str) -> Vec<i64> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|t| t.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .filter(|n| (1..=3).contains(n))
        .collect()
}

impl Recipe for UltraFeedback {
    type State = (usize, OneShot<(Vec<Verdict>, Option<String>)>);

    fn inputs(&self) -> Vec<String> {
        vec!["instruction".into(), "generations".into()]
    }

    fn outputs(&self) -> Vec<String> {
        if typed(&self.aspect) {
            ["ratings", "rationales", "types", "rationales_for_ratings"]
                .map(str::to_owned)
                .to_vec()
        } else {
            vec!["ratings".into(), "rationales".into()]
        }
    }

    fn error_column(&self) -> &'static str {
        "ultrafeedback_error"
    }

    fn start(&self, row: &Row, index: usize, llm: &LlmParams) -> crate::Result<Self::State> {
        let texts: Vec<String> = texts_of(row, "generations", index)?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        let vars = serde_json::json!({
            "aspect": self.aspect,
            "instruction": text_of(row, "instruction", index)?,
            "generations": texts,
        });
        let prompt = self
            .template
            .render(&vars)
            .map_err(|detail| Error::Row { row: index, detail })?;
        Ok((
            texts.len(),
            OneShot::Ask(chat(llm, self.system.as_deref(), prompt)),
        ))
    }

    fn next(&self, state: &Self::State, _llm: &LlmParams) -> Option<Call> {
        state.1.call()
    }

    fn answered(&self, state: &mut Self::State, reply: Reply, _llm: &LlmParams) {
        let count = state.0;
        state
            .1
            .answer(reply, |text| Ok(parse(text, count, &self.aspect)));
    }

    fn finish(&self, state: Self::State, row: &mut Row) -> Option<String> {
        let (count, outcome) = state;
        let (verdicts, error) = match outcome {
            OneShot::Done(Ok(parsed)) => parsed,
            OneShot::Done(Err(why)) => (vec![Verdict::default(); count], Some(why)),
            OneShot::Ask(_) => (vec![Verdict::default(); count], Some("not asked".into())),
        };
        let column = |f: &dyn Fn(&Verdict) -> Value| Value::List(verdicts.iter().map(f).collect());
        row.insert("ratings", column(&|v| Value::from(v.rating)));
        if typed(&self.aspect) {
            row.insert(
                "rationales",
                column(&|v| Value::from(v.types_rationale.clone())),
            );
            row.insert(
                "types",
                column(&|v| match &v.types {
                    Some(t) => Value::List(t.iter().map(|n| Value::from(*n)).collect()),
                    None => Value::Null,
                }),
            );
            row.insert(
                "rationales_for_ratings",
                column(&|v| Value::from(v.rationale.clone())),
            );
        } else {
            row.insert("rationales", column(&|v| Value::from(v.rationale.clone())));
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_answers_give_types_and_both_rationales() {
        let answer = "Sure.\n\n#### Output for Text 1\nType: 1, 3\nRationale: Clear and short.\nRating: 4\nRationale: Accurate, though it\nskips an example.\n\n#### Output for Text 2\nType: None\nRationale: Off topic.\nRating: 1\nRationale: Wrong.\n";
        let (v, error) = parse(answer, 2, "helpfulness");
        assert_eq!(error, None);
        assert_eq!(
            v[0],
            Verdict {
                types: Some(vec![1, 3]),
                types_rationale: Some("Clear and short.".into()),
                rating: Some(4),
                rationale: Some("Accurate, though it skips an example.".into()),
            }
        );
        assert_eq!(v[1].types, Some(vec![]));
        assert_eq!(v[1].rating, Some(1));
    }

    #[test]
    fn wrong_scale_missing_texts_and_truncation_are_named() {
        let answer = "#### Output for Text 1\nRating: 7\nRationale: Too generous.\n#### Output for Text 2\nRating: N/A\nRationale: Creative.\n#### Output for Text 3\nRationale: cut before the ra";
        let (v, error) = parse(answer, 4, "honesty");
        assert!(v.iter().all(|v| v.rating.is_none()));
        assert_eq!(v[0].rationale.as_deref(), Some("Too generous."));
        assert_eq!(
            error.as_deref(),
            Some(
                "text 1: `7` is not a rating from 1 to 5; text 2: not applicable; text 3: no rating; text 4: not in the answer"
            )
        );
        // overall-rating is 1 to 10: 7 is fine there.
        let (v, error) = parse(
            "#### Output for Text 1\nRating: 7/10\nRationale: ok",
            1,
            "overall-rating",
        );
        assert_eq!((v[0].rating, error), (Some(7), None));
    }

    #[test]
    fn prose_without_blocks_rates_nothing() {
        let (v, error) = parse("Both responses are fine, I'd give them 4.", 2, "honesty");
        assert!(v.iter().all(|v| v.rating.is_none()));
        assert_eq!(
            error.as_deref(),
            Some("text 1: not in the answer; text 2: not in the answer")
        );
    }

    #[test]
    fn every_aspect_renders_its_own_rubric_and_format() {
        let (name, text) = builtin::ULTRAFEEDBACK;
        let t = Template::new(text.into(), name).unwrap();
        for aspect in ASPECTS {
            let p = t
                .render(&serde_json::json!({"aspect": aspect, "instruction": "Say hi", "generations": ["hi", "hello"]}))
                .unwrap();
            assert!(p.contains("<text 2>\nhello\n</text 2>"), "{p}");
            assert!(p.contains("#### Output for Text 2"));
            assert_eq!(p.contains("Type:"), typed(aspect), "{aspect}");
            assert!(p.contains(if *aspect == "overall-rating" {
                "1 to 10"
            } else {
                "1 to 5"
            }));
        }
    }
}
