//! `text_classification`: labels for a `text` from a given set, answered as JSON that the
//! server constrains to a schema (`response_format`), so even a small model's answer parses.
//!
//! Parameters: `available_labels` (a list of names, or a map of name to description),
//! `n` (most labels per text; 1, the default, is single-label and gives a text, more give a
//! list), `default_label` (when none fits; default "Unclassified"), `context` (what the texts
//! are, shown first), `examples` (texts like the ones to classify), `system_prompt`,
//! `template_file`. Outputs `labels`, `model_name`, `text_classification_error` (a label
//! outside the set, a duplicate, too many, or an answer that is not JSON).

use crate::error::Error;
use crate::settings::LlmParams;
use crate::tasks::generation::text_param;
use crate::tasks::recipe::{Call, OneShot, Recipe, RecipeTask, Reply, recipe_llm, text_of};
use crate::template::{Template, builtin};
use distill_engine::step::{BuildContext, StepKind, StepResult};
use distill_storage::{Row, Value};

/// Most labels per text.
const MAX_N: u64 = 100;

struct Classify {
    template: Template,
    system: Option<String>,
    labels: Vec<(String, Option<String>)>,
    n: usize,
    default_label: String,
    context: Option<String>,
    examples: Vec<String>,
}

/// Builds `text_classification`.
pub fn text_classification(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let own = [
        "available_labels",
        "n",
        "default_label",
        "context",
        "examples",
        "system_prompt",
    ];
    let llm = recipe_llm(params, &own)?;
    let labels: Vec<(String, Option<String>)> = match params.get("available_labels") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(|s| (s.to_owned(), None)))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::params("`available_labels` must be a list of texts"))?,
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(k, v)| v.as_str().map(|d| (k.clone(), Some(d.to_owned()))))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::params("`available_labels`: each description must be text"))?,
        _ => {
            return Err(Error::params(
                "`available_labels` must be a list of label names or a map of name to description",
            )
            .into());
        }
    };
    if labels.is_empty() || labels.iter().any(|(l, _)| l.trim().is_empty()) {
        return Err(Error::params("`available_labels` needs at least one non-empty label").into());
    }
    let n = match params.get("n") {
        None | Some(serde_json::Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=MAX_N).contains(n))
            .ok_or_else(|| {
                Error::params(format!("`n` must be a whole number from 1 to {MAX_N}"))
            })?,
    } as usize;
    let examples = match params.get("examples") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<_>>()
            .ok_or_else(|| Error::params("`examples` must be a list of texts"))?,
        Some(_) => return Err(Error::params("`examples` must be a list of texts").into()),
    };
    let (name, text) = builtin::TEXT_CLASSIFICATION;
    let recipe = Classify {
        template: Template::load(name, text, params, ctx)?,
        system: text_param(params, "system_prompt")?,
        labels,
        n,
        default_label: text_param(params, "default_label")?
            .unwrap_or_else(|| "Unclassified".into()),
        context: text_param(params, "context")?,
        examples,
    };
    Ok(StepKind::Task(Box::new(RecipeTask::new(recipe, llm))))
}

impl Classify {
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.labels.iter().map(|(l, _)| l.clone()).collect();
        if !names.contains(&self.default_label) {
            names.push(self.default_label.clone());
        }
        names
    }

    /// The JSON schema of an answer.
    pub fn schema(&self) -> serde_json::Value {
        let label = serde_json::json!({"type": "string", "enum": self.names()});
        let labels = if self.n == 1 {
            label
        } else {
            serde_json::json!({"type": "array", "items": label, "minItems": 1, "maxItems": self.n})
        };
        serde_json::json!({
            "type": "object",
            "properties": {"labels": labels},
            "required": ["labels"]
        })
    }
}

/// The labels in a JSON answer, checked against `names` and `n`.
pub fn parse(answer: &str, names: &[String], n: usize) -> Result<Value, String> {
    let json: serde_json::Value =
        serde_json::from_str(answer.trim()).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let given: Vec<&serde_json::Value> = match &json["labels"] {
        serde_json::Value::Array(items) => items.iter().collect(),
        serde_json::Value::Null => return Err("the answer has no `labels`".into()),
        one => vec![one],
    };
    let mut out: Vec<String> = Vec::new();
    for g in given {
        let label = g
            .as_str()
            .ok_or_else(|| format!("label {g} is not text"))?
            .trim();
        if !names.iter().any(|n| n == label) {
            return Err(format!("`{label}` is not one of the labels"));
        }
        if !out.iter().any(|o| o == label) {
            out.push(label.to_owned());
        }
    }
    if out.is_empty() {
        return Err("the answer gives no label".into());
    }
    if out.len() > n {
        return Err(format!("{} labels, more than n = {n}", out.len()));
    }
    Ok(if n == 1 {
        Value::from(out.remove(0))
    } else {
        Value::List(out.into_iter().map(Value::from).collect())
    })
}

impl Recipe for Classify {
    type State = OneShot<Value>;

    fn inputs(&self) -> Vec<String> {
        vec!["text".into()]
    }

    fn outputs(&self) -> Vec<String> {
        vec!["labels".into()]
    }

    fn error_column(&self) -> &'static str {
        "text_classification_error"
    }

    fn start(&self, row: &Row, index: usize, llm: &LlmParams) -> crate::Result<Self::State> {
        let labels: Vec<serde_json::Value> = self
            .labels
            .iter()
            .map(
                |(name, description)| serde_json::json!({"name": name, "description": description}),
            )
            .collect();
        let vars = serde_json::json!({
            "text": text_of(row, "text", index)?,
            "labels": labels,
            "n": self.n,
            "default_label": self.default_label,
            "context": self.context,
            "examples": self.examples,
        });
        let prompt = self
            .template
            .render(&vars)
            .map_err(|detail| Error::Row { row: index, detail })?;
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            messages.push(serde_json::json!({"role": "system", "content": system}));
        }
        messages.push(serde_json::json!({"role": "user", "content": prompt}));
        Ok(OneShot::Ask(llm.json_body(messages, &self.schema())))
    }

    fn next(&self, state: &Self::State, _llm: &LlmParams) -> Option<Call> {
        state.call()
    }

    fn answered(&self, state: &mut Self::State, reply: Reply, _llm: &LlmParams) {
        let names = self.names();
        state.answer(reply, |text| parse(text, &names, self.n));
    }

    fn finish(&self, state: Self::State, row: &mut Row) -> Option<String> {
        match state {
            OneShot::Done(Ok(labels)) => {
                row.insert("labels", labels);
                None
            }
            OneShot::Done(Err(why)) => {
                row.insert("labels", Value::Null);
                Some(why)
            }
            OneShot::Ask(_) => {
                row.insert("labels", Value::Null);
                Some("not asked".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["positive", "negative", "Unclassified"]
            .map(str::to_owned)
            .to_vec()
    }

    #[test]
    fn single_and_multi_label_answers() {
        assert_eq!(
            parse(r#"{"labels": "positive"}"#, &names(), 1),
            Ok(Value::from("positive"))
        );
        assert_eq!(
            parse(
                r#"{"labels": ["negative", "positive", "negative"]}"#,
                &names(),
                2
            ),
            Ok(Value::List(vec!["negative".into(), "positive".into()]))
        );
    }

    #[test]
    fn bad_answers_say_why() {
        assert_eq!(
            parse(r#"{"labels": "angry"}"#, &names(), 1).unwrap_err(),
            "`angry` is not one of the labels"
        );
        assert_eq!(
            parse(r#"{"labels": ["positive", "negative"]}"#, &names(), 1).unwrap_err(),
            "2 labels, more than n = 1"
        );
        assert!(
            parse(r#"{"labels": "posi"#, &names(), 1)
                .unwrap_err()
                .starts_with("the answer is not JSON")
        );
        assert_eq!(
            parse(r#"Sure! {"labels": []}"#, &names(), 1)
                .unwrap_err()
                .split(':')
                .next(),
            Some("the answer is not JSON")
        );
        assert_eq!(
            parse(r#"{"labels": []}"#, &names(), 2).unwrap_err(),
            "the answer gives no label"
        );
    }

    #[test]
    fn the_schema_lists_the_labels_and_the_default() {
        let c = Classify {
            template: Template::new("{{ text }}".into(), "t").unwrap(),
            system: None,
            labels: vec![("a".into(), Some("first".into())), ("b".into(), None)],
            n: 2,
            default_label: "none".into(),
            context: None,
            examples: vec![],
        };
        let s = c.schema();
        assert_eq!(
            s["properties"]["labels"]["items"]["enum"],
            serde_json::json!(["a", "b", "none"])
        );
        assert_eq!(s["properties"]["labels"]["maxItems"], 2);
        let (name, text) = builtin::TEXT_CLASSIFICATION;
        let p = Template::new(text.into(), name)
            .unwrap()
            .render(&serde_json::json!({"text": "T", "labels": [{"name": "a", "description": "first"}, {"name": "b", "description": null}], "n": 2, "default_label": "none", "context": null, "examples": []}))
            .unwrap();
        assert!(
            p.contains("- a: first\n- b\n") && p.contains("up to 2 labels"),
            "{p}"
        );
    }
}
