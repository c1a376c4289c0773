//! `judge`: rates several responses to an instruction, in the style of UltraFeedback.
//!
//! Inputs: `instruction` and `generations` (a list of texts). Outputs: `ratings` (a list with an
//! integer from 1 to 5, or null, per text), `rationales` (likewise), `judge_error` (null, or why
//! the answer could not be used: the request failed, or which text had no rating), `model_name`.
//! Takes the connection parameters of the LLM tasks, plus an optional `aspect` (default
//! "overall quality") and `structured` (default false): with it, the answer is asked for as JSON
//! matching a schema (`response_format`, which servers such as llama.cpp's enforce while
//! generating), `{"ratings": [{"rating": 1..5, "rationale": "..."}, ...]}`, one per text, so
//! that even a small model gives an answer that parses.

use crate::batch::Planner;
use crate::error::{Error, Result};
use crate::runner::{Request, Runner};
use crate::settings::LlmParams;
use crate::tasks::generation::text_param;
use distill_engine::step::{BuildContext, Lifecycle, StepKind, StepResult};
use distill_engine::task::{Prefetch, Ready, Task, TaskContext};
use distill_storage::{Row, Value};
use std::sync::Arc;

/// The judge task.
pub struct Judge {
    runner: Runner,
    plan: Arc<JudgePlan>,
}

/// How rows become requests (shared with batch mode's manager).
struct JudgePlan {
    params: LlmParams,
    aspect: String,
    structured: bool,
}

impl JudgePlan {
    /// One request per row, and how many texts each row rates.
    fn build(&self, rows: &[Row]) -> Result<(Vec<Request>, Vec<usize>)> {
        let p = &self.params;
        let mut requests = Vec::with_capacity(rows.len());
        let mut counts = Vec::with_capacity(rows.len());
        for (index, row) in rows.iter().enumerate() {
            let instruction = row
                .get("instruction")
                .map(Value::to_string)
                .unwrap_or_default();
            let texts: Vec<String> = match row.get("generations") {
                Some(Value::List(items)) => items.iter().map(Value::to_string).collect(),
                other => {
                    return Err(Error::Row {
                        row: index,
                        detail: format!(
                            "`generations` must be a list, found {}",
                            other.map_or("nothing", Value::kind)
                        ),
                    });
                }
            };
            counts.push(texts.len());
            let content = if self.structured {
                json_prompt(&self.aspect, &instruction, &texts)
            } else {
                prompt(&self.aspect, &instruction, &texts)
            };
            let messages = vec![serde_json::json!({"role": "user", "content": content})];
            let body = if self.structured {
                p.json_body(messages, &answer_schema(texts.len()))
            } else {
                p.body(messages)
            };
            requests.push(Request {
                body,
                generation: 0,
            });
        }
        Ok((requests, counts))
    }
}

impl Planner for JudgePlan {
    fn requests(&self, rows: &[Row]) -> Result<Vec<Request>> {
        Ok(self.build(rows)?.0)
    }
}

/// Builds `judge`.
pub fn judge(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let llm = LlmParams::from_params(params, &["aspect", "structured"])?;
    let aspect = text_param(params, "aspect")?.unwrap_or_else(|| "overall quality".into());
    let structured = match params.get("structured") {
        Some(serde_json::Value::Bool(b)) => *b,
        None | Some(serde_json::Value::Null) => false,
        Some(_) => return Err(Error::params("`structured` must be true or false").into()),
    };
    Ok(StepKind::Task(Box::new(Judge {
        runner: Runner::new(llm.clone()),
        plan: Arc::new(JudgePlan {
            params: llm,
            aspect,
            structured,
        }),
    })))
}

/// The prompt for one row.
pub fn prompt(aspect: &str, instruction: &str, texts: &[String]) -> String {
    let mut p = format!(
        "Rate each response to the instruction for {aspect}, from 1 (poor) to 5 (excellent), and explain why.\n\n# Instruction\n{instruction}\n\n# Responses\n"
    );
    for (i, t) in texts.iter().enumerate() {
        p.push_str(&format!("<text {}>\n{t}\n</text {}>\n", i + 1, i + 1));
    }
    p.push_str("\nAnswer with one block per response, exactly in this form:\n");
    for i in 1..=texts.len() {
        p.push_str(&format!(
            "#### Output for Text {i}\nRating: <1 to 5>\nRationale: <one sentence>\n"
        ));
    }
    p
}

/// The prompt for one row when the answer is JSON.
pub fn json_prompt(aspect: &str, instruction: &str, texts: &[String]) -> String {
    let mut p = format!(
        "Rate each response to the instruction for {aspect}, from 1 (poor) to 5 (excellent), and explain why in one sentence.\n\n# Instruction\n{instruction}\n\n# Responses\n"
    );
    for (i, t) in texts.iter().enumerate() {
        p.push_str(&format!("<text {}>\n{t}\n</text {}>\n", i + 1, i + 1));
    }
    p.push_str(&format!(
        "\nAnswer in JSON with a list `ratings` of {} entries, one per response in order, each with `rating` (1 to 5) and `rationale` (one sentence about that response).\n",
        texts.len()
    ));
    p
}

/// The JSON schema of an answer rating `count` texts.
pub fn answer_schema(count: usize) -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "ratings": {
                "type": "array",
                "minItems": count,
                "maxItems": count,
                "items": {
                    "type": "object",
                    "properties": {
                        "rating": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
                        "rationale": {"type": "string"}
                    },
                    "required": ["rating", "rationale"]
                }
            }
        },
        "required": ["ratings"]
    })
}

/// Ratings and rationales from a JSON answer for `count` texts, or why it cannot be used.
pub fn parse_json(
    answer: &str,
    count: usize,
) -> (Vec<Option<i64>>, Vec<Option<String>>, Option<String>) {
    let mut ratings = vec![None; count];
    let mut rationales = vec![None; count];
    let json: serde_json::Value = match serde_json::from_str(answer.trim()) {
        Ok(json) => json,
        Err(e) => {
            return (
                ratings,
                rationales,
                Some(format!("the answer is not JSON: {e}")),
            );
        }
    };
    let items = json["ratings"].as_array().cloned().unwrap_or_default();
    for (i, item) in items.iter().take(count).enumerate() {
        ratings[i] = item["rating"].as_i64().filter(|r| (1..=5).contains(r));
        rationales[i] = item["rationale"]
            .as_str()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
    }
    (ratings.clone(), rationales, missing(&ratings))
}

fn missing(ratings: &[Option<i64>]) -> Option<String> {
    let missing: Vec<String> = ratings
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_none())
        .map(|(i, _)| (i + 1).to_string())
        .collect();
    (!missing.is_empty()).then(|| format!("no rating from 1 to 5 for text {}", missing.join(", ")))
}

/// Ratings and rationales parsed from an answer for `count` texts, or why it cannot be used.
pub fn parse(
    answer: &str,
    count: usize,
) -> (Vec<Option<i64>>, Vec<Option<String>>, Option<String>) {
    let mut ratings = vec![None; count];
    let mut rationales = vec![None; count];
    for block in answer.split("#### Output for Text").skip(1) {
        let mut lines = block.lines();
        let Some(index) = lines
            .next()
            .and_then(|l| l.trim().trim_end_matches(':').parse::<usize>().ok())
        else {
            continue;
        };
        if index == 0 || index > count {
            continue;
        }
        for line in lines {
            let line = line.trim();
            if let Some(r) = line.strip_prefix("Rating:") {
                ratings[index - 1] = r
                    .trim()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse::<i64>()
                    .ok()
                    .filter(|r| (1..=5).contains(r));
            } else if let Some(r) = line.strip_prefix("Rationale:") {
                rationales[index - 1] = Some(r.trim().to_owned()).filter(|r| !r.is_empty());
            }
        }
    }
    let error = missing(&ratings);
    (ratings, rationales, error)
}

impl Lifecycle for Judge {
    fn load(&mut self) -> StepResult<()> {
        self.runner.load().map_err(Error::into_step_error)
    }

    fn unload(&mut self) {
        self.runner.unload();
    }
}

impl Task for Judge {
    fn check_budgeted(&self) -> StepResult<()> {
        Ok(self.runner.params.check_budgeted()?)
    }

    fn inputs(&self) -> Vec<String> {
        vec!["instruction".into(), "generations".into()]
    }

    fn outputs(&self) -> Vec<String> {
        ["ratings", "rationales", "judge_error", "model_name"]
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
        let (requests, counts) = self.plan.build(&rows)?;
        let results = self.runner.run(requests, ctx)?;
        Ok(rows
            .into_iter()
            .zip(results)
            .zip(counts)
            .map(|((mut row, result), count)| {
                let (ratings, rationales, error, model) = match result {
                    Ok(answered) => {
                        let c = answered.completion;
                        let (r, why, e) = if self.plan.structured {
                            parse_json(&c.text, count)
                        } else {
                            parse(&c.text, count)
                        };
                        (r, why, e, c.model)
                    }
                    Err(e) => (
                        vec![None; count],
                        vec![None; count],
                        Some(e.to_string()),
                        None,
                    ),
                };
                row.insert(
                    "ratings",
                    Value::List(ratings.into_iter().map(Value::from).collect()),
                );
                row.insert(
                    "rationales",
                    Value::List(rationales.into_iter().map(Value::from).collect()),
                );
                row.insert("judge_error", Value::from(error));
                row.insert("model_name", Value::from(model));
                row
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_well_formed_answers() {
        let answer = "#### Output for Text 1\nRating: 4\nRationale: Clear.\n\n#### Output for Text 2\nRating: 2 (weak)\nRationale: Misses the point.\n";
        let (ratings, why, error) = parse(answer, 2);
        assert_eq!(ratings, vec![Some(4), Some(2)]);
        assert_eq!(
            why,
            vec![Some("Clear.".into()), Some("Misses the point.".into())]
        );
        assert_eq!(error, None);
    }

    #[test]
    fn unparsable_parts_become_null_with_the_reason() {
        let answer = "#### Output for Text 2\nRating: 9\nRationale: out of range\n#### Output for Text 1\nRationale: forgot the rating\n";
        let (ratings, why, error) = parse(answer, 3);
        assert_eq!(ratings, vec![None, None, None]);
        assert_eq!(why[0].as_deref(), Some("forgot the rating"));
        assert_eq!(
            error.as_deref(),
            Some("no rating from 1 to 5 for text 1, 2, 3")
        );
        let (_, _, error) = parse("I refuse.", 1);
        assert!(error.unwrap().contains("text 1"));
    }

    #[test]
    fn json_answers_are_parsed_and_checked() {
        let answer = r#"{"ratings": [{"rating": 5, "rationale": " Exact. "}, {"rating": 7, "rationale": ""}]}"#;
        let (ratings, why, error) = parse_json(answer, 2);
        assert_eq!(ratings, vec![Some(5), None]);
        assert_eq!(why, vec![Some("Exact.".into()), None]);
        assert_eq!(error.as_deref(), Some("no rating from 1 to 5 for text 2"));
        let (ratings, _, error) = parse_json("Rating: 4", 1);
        assert_eq!(ratings, vec![None]);
        assert!(error.unwrap().contains("not JSON"));
        let schema = answer_schema(3);
        assert_eq!(schema["properties"]["ratings"]["minItems"], 3);
        assert!(json_prompt("honesty", "Say hi", &["a".into()]).contains("JSON"));
    }

    #[test]
    fn prompt_numbers_every_text() {
        let p = prompt("honesty", "Say hi", &["hi".into(), "hello".into()]);
        assert!(
            p.contains("honesty")
                && p.contains("<text 2>\nhello")
                && p.contains("#### Output for Text 2")
        );
    }
}
