//! `format_sft` and `format_dpo`: rows in the chat format that fine-tuning libraries read.
//!
//! `format_sft`: from `instruction` and `generation` (or, with `conversation: true`, from a
//! `conversation` list of `{role, content}`), adds `prompt` (the first user message),
//! `prompt_id` (blake3 of the prompt, hex) and `messages` (the conversation, a `system_prompt`
//! column's text first when the row has one). A null instruction or generation gives null
//! `messages`.
//!
//! `format_dpo`: from `instruction`, `generations` and `ratings` (one per generation; a
//! `generation_models` list is read when present), adds `prompt`, `prompt_id`, `chosen` and
//! `rejected` (each a conversation ending in the chosen or rejected generation),
//! `chosen_rating`, `rejected_rating`, `chosen_model`, `rejected_model`. Generations whose
//! rating or text is null (or whose rating is not a number) are left out; `chosen` is the
//! highest rated of the rest (the first of equals), `rejected` the lowest rated (the last of
//! equals). With fewer than two rated generations, or all rated the same, there is no
//! preference: the six outputs are null (`filter` on `chosen` with `not_null` drops them).

use crate::step::{BuildContext, Lifecycle, Step, StepKind, StepResult, parse_params};
use distill_storage::{Row, Value};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SftParams {
    #[serde(default)]
    conversation: bool,
}

/// `format_sft`.
pub struct FormatSft {
    conversation: bool,
}

/// Builds `format_sft`.
pub fn format_sft(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: SftParams = parse_params(params)?;
    Ok(StepKind::Step(Box::new(FormatSft {
        conversation: p.conversation,
    })))
}

/// `{role, content}`.
fn message(role: &str, content: Value) -> Value {
    Value::Map(Row::new().with("role", role).with("content", content))
}

/// The row's system prompt, if it has a non-empty one.
fn system(row: &Row) -> Option<Value> {
    match row.get("system_prompt") {
        Some(Value::Str(s)) if !s.trim().is_empty() => Some(Value::from(s.clone())),
        _ => None,
    }
}

/// `prompt` and `prompt_id` for a prompt text.
fn prompt_columns(row: &mut Row, prompt: Option<&str>) {
    row.insert("prompt", Value::from(prompt.map(str::to_owned)));
    row.insert(
        "prompt_id",
        Value::from(prompt.map(|p| blake3::hash(p.as_bytes()).to_hex().to_string())),
    );
}

/// A conversation: the system prompt, the instruction, the answer.
fn exchange(row: &Row, instruction: &Value, answer: &Value) -> Value {
    let mut m: Vec<Value> = system(row)
        .map(|s| vec![message("system", s)])
        .unwrap_or_default();
    m.push(message("user", instruction.clone()));
    m.push(message("assistant", answer.clone()));
    Value::List(m)
}

impl Lifecycle for FormatSft {}

impl Step for FormatSft {
    fn inputs(&self) -> Vec<String> {
        if self.conversation {
            vec!["conversation".into()]
        } else {
            vec!["instruction".into(), "generation".into()]
        }
    }

    fn outputs(&self) -> Vec<String> {
        ["prompt", "prompt_id", "messages"]
            .map(str::to_owned)
            .to_vec()
    }

    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        let mut out = Vec::with_capacity(rows.len());
        for (index, mut row) in rows.into_iter().enumerate() {
            if self.conversation {
                let messages = match row.get("conversation") {
                    Some(Value::List(items)) => items.clone(),
                    Some(Value::Null) | None => Vec::new(),
                    Some(other) => {
                        return Err(format!(
                            "row {index}: `conversation` holds a {}, not a list of {{role, content}}",
                            other.kind()
                        )
                        .into());
                    }
                };
                let prompt = messages.iter().find_map(|m| match m {
                    Value::Map(m) if m.get("role").and_then(Value::as_str) == Some("user") => {
                        m.get("content").and_then(Value::as_str).map(str::to_owned)
                    }
                    _ => None,
                });
                prompt_columns(&mut row, prompt.as_deref());
                let messages = if messages.is_empty() {
                    Value::Null
                } else {
                    Value::List(messages)
                };
                row.insert("messages", messages);
            } else {
                let instruction = row.get("instruction").cloned().unwrap_or_default();
                let generation = row.get("generation").cloned().unwrap_or_default();
                let prompt = instruction.as_str().map(str::to_owned);
                prompt_columns(&mut row, prompt.as_deref());
                let messages = if instruction.is_null() || generation.is_null() {
                    Value::Null
                } else {
                    exchange(&row, &instruction, &generation)
                };
                row.insert("messages", messages);
            }
            out.push(row);
        }
        Ok(out)
    }
}

/// `format_dpo`.
pub struct FormatDpo;

/// Builds `format_dpo`.
pub fn format_dpo(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let _: DpoParams = parse_params(params)?;
    Ok(StepKind::Step(Box::new(FormatDpo)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DpoParams {}

/// Which generations are chosen and rejected: `(chosen, rejected)` indices, or `None` when
/// there is no preference (fewer than two rated, or all rated the same).
pub fn pick(generations: &[Value], ratings: &[Value]) -> Option<(usize, usize)> {
    let rated: Vec<(usize, f64)> = ratings
        .iter()
        .enumerate()
        .filter(|(i, _)| generations.get(*i).is_some_and(|g| !g.is_null()))
        .filter_map(|(i, r)| r.as_f64().filter(|r| r.is_finite()).map(|r| (i, r)))
        .collect();
    if rated.len() < 2 {
        return None;
    }
    let mut chosen = rated[0];
    let mut rejected = rated[0];
    for &(i, r) in &rated[1..] {
        if r > chosen.1 {
            chosen = (i, r);
        }
        if r <= rejected.1 {
            rejected = (i, r);
        }
    }
    (chosen.1 > rejected.1).then_some((chosen.0, rejected.0))
}

impl Lifecycle for FormatDpo {}

impl Step for FormatDpo {
    fn inputs(&self) -> Vec<String> {
        ["instruction", "generations", "ratings"]
            .map(str::to_owned)
            .to_vec()
    }

    fn outputs(&self) -> Vec<String> {
        [
            "prompt",
            "prompt_id",
            "chosen",
            "chosen_rating",
            "chosen_model",
            "rejected",
            "rejected_rating",
            "rejected_model",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        let mut out = Vec::with_capacity(rows.len());
        for (index, mut row) in rows.into_iter().enumerate() {
            let list = |column: &str| -> StepResult<Vec<Value>> {
                match row.get(column) {
                    Some(Value::List(items)) => Ok(items.clone()),
                    Some(Value::Null) | None => Ok(Vec::new()),
                    Some(other) => Err(format!(
                        "row {index}: `{column}` holds a {}, not a list",
                        other.kind()
                    )
                    .into()),
                }
            };
            let generations = list("generations")?;
            let ratings = list("ratings")?;
            let models = list("generation_models")?;
            let instruction = row.get("instruction").cloned().unwrap_or_default();
            let prompt = instruction.as_str().map(str::to_owned);
            prompt_columns(&mut row, prompt.as_deref());
            let picked = if instruction.is_null() {
                None
            } else {
                pick(&generations, &ratings)
            };
            let side = |i: Option<usize>| -> (Value, Value, Value) {
                match i {
                    Some(i) => (
                        exchange(&row, &instruction, &generations[i]),
                        ratings[i].clone(),
                        models.get(i).cloned().unwrap_or_default(),
                    ),
                    None => (Value::Null, Value::Null, Value::Null),
                }
            };
            let (c, cr, cm) = side(picked.map(|p| p.0));
            let (r, rr, rm) = side(picked.map(|p| p.1));
            for (column, value) in [
                ("chosen", c),
                ("chosen_rating", cr),
                ("chosen_model", cm),
                ("rejected", r),
                ("rejected_rating", rr),
                ("rejected_model", rm),
            ] {
                row.insert(column, value);
            }
            out.push(row);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(
        params: serde_json::Value,
        f: fn(&serde_json::Value, &BuildContext) -> StepResult<StepKind>,
    ) -> Box<dyn Step> {
        match f(&params, &BuildContext::default()).unwrap() {
            StepKind::Step(s) => s,
            _ => panic!("not a step"),
        }
    }

    fn msgs(pairs: &[(&str, &str)]) -> Value {
        Value::List(
            pairs
                .iter()
                .map(|(r, c)| message(r, Value::from(*c)))
                .collect(),
        )
    }

    #[test]
    fn sft_rows_with_and_without_a_system_prompt() {
        let s = step(serde_json::json!({}), format_sft);
        let out = s
            .process(vec![
                Row::new()
                    .with("instruction", "Hi?")
                    .with("generation", "Hello."),
                Row::new()
                    .with("instruction", "Hi?")
                    .with("generation", "Hello.")
                    .with("system_prompt", "Be kind."),
                Row::new()
                    .with("instruction", "Q")
                    .with("generation", Value::Null),
            ])
            .unwrap();
        assert_eq!(out[0].get("prompt"), Some(&Value::from("Hi?")));
        assert_eq!(
            out[0].get("prompt_id"),
            Some(&Value::from(blake3::hash(b"Hi?").to_hex().to_string()))
        );
        assert_eq!(
            out[0].get("messages"),
            Some(&msgs(&[("user", "Hi?"), ("assistant", "Hello.")]))
        );
        assert_eq!(
            out[1].get("messages"),
            Some(&msgs(&[
                ("system", "Be kind."),
                ("user", "Hi?"),
                ("assistant", "Hello.")
            ]))
        );
        assert_eq!(out[2].get("messages"), Some(&Value::Null));
        let s = step(serde_json::json!({"conversation": true}), format_sft);
        let conv = msgs(&[
            ("system", "S"),
            ("user", "A"),
            ("assistant", "B"),
            ("user", "C"),
            ("assistant", "D"),
        ]);
        let out = s
            .process(vec![Row::new().with("conversation", conv.clone())])
            .unwrap();
        assert_eq!(out[0].get("prompt"), Some(&Value::from("A")));
        assert_eq!(out[0].get("messages"), Some(&conv));
    }

    #[test]
    fn dpo_picks_highest_and_lowest_skipping_nulls() {
        let g = |xs: &[Option<&str>]| -> Vec<Value> {
            xs.iter()
                .map(|x| Value::from(x.map(str::to_owned)))
                .collect()
        };
        let r = |xs: &[Option<f64>]| -> Vec<Value> { xs.iter().map(|x| Value::from(*x)).collect() };
        let all = g(&[Some("a"), Some("b"), Some("c"), Some("d")]);
        assert_eq!(
            pick(&all, &r(&[Some(3.0), Some(5.0), Some(1.0), Some(5.0)])),
            Some((1, 2))
        );
        // Ties at the bottom: the last of equals is rejected.
        assert_eq!(
            pick(&all, &r(&[Some(1.0), Some(5.0), Some(1.0), None])),
            Some((1, 2))
        );
        // Nulls are left out: a null rating, or a null text.
        assert_eq!(
            pick(
                &g(&[Some("a"), None, Some("c")]),
                &r(&[Some(2.0), Some(9.0), Some(4.0)])
            ),
            Some((2, 0))
        );
        // No preference.
        assert_eq!(pick(&all, &r(&[Some(4.0), Some(4.0), None, None])), None);
        assert_eq!(pick(&all, &r(&[Some(4.0), None, None, None])), None);
        assert_eq!(pick(&all, &[]), None);
    }

    #[test]
    fn dpo_rows_carry_both_sides_and_models() {
        let s = step(serde_json::json!({}), format_dpo);
        let row = Row::new()
            .with("instruction", "Q")
            .with("generations", vec!["good", "bad"])
            .with("ratings", vec![Value::from(5), Value::from(2)])
            .with("generation_models", vec!["m1", "m2"]);
        let out = s
            .process(vec![
                row,
                Row::new()
                    .with("instruction", "Q")
                    .with("generations", vec!["x"])
                    .with("ratings", vec![1]),
            ])
            .unwrap();
        let o = &out[0];
        assert_eq!(
            o.get("chosen"),
            Some(&msgs(&[("user", "Q"), ("assistant", "good")]))
        );
        assert_eq!(
            o.get("rejected"),
            Some(&msgs(&[("user", "Q"), ("assistant", "bad")]))
        );
        assert_eq!(o.get("chosen_rating"), Some(&Value::from(5)));
        assert_eq!(o.get("rejected_model"), Some(&Value::from("m2")));
        for c in ["chosen", "rejected", "chosen_rating", "rejected_model"] {
            assert_eq!(out[1].get(c), Some(&Value::Null), "{c}");
        }
        assert_eq!(out[1].get("prompt"), Some(&Value::from("Q")));
    }
}
