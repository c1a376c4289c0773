//! `format_text`: renders a Jinja template (minijinja) per row into a column.

use crate::step::{BuildContext, Lifecycle, Step, StepKind, StepResult, parse_params};
use distill_storage::{Row, Value};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    template: String,
    #[serde(default = "default_output")]
    output: String,
}

fn default_output() -> String {
    "text".into()
}

/// Renders `template` with the row's columns as variables into `output` (default `text`).
/// Its inputs are the template's variables; values are passed in their JSON form, so loops,
/// filters and indexing over lists and maps work.
pub struct FormatText {
    env: minijinja::Environment<'static>,
    inputs: Vec<String>,
    output: String,
}

const NAME: &str = "template";

/// Builds `format_text`; a template syntax error names the line.
pub fn format_text(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: Params = parse_params(params)?;
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.add_template_owned(NAME, p.template)
        .map_err(|e| format!("`template`: {e}"))?;
    let template = env.get_template(NAME)?;
    let mut inputs: Vec<String> = template.undeclared_variables(false).into_iter().collect();
    inputs.sort();
    Ok(StepKind::Step(Box::new(FormatText {
        env,
        inputs,
        output: p.output,
    })))
}

impl Lifecycle for FormatText {}

impl FormatText {
    /// The template's variables from `row`: only the columns it names, converted directly
    /// (text, integers, booleans and nulls; other values through their JSON form).
    fn context(&self, row: &Row) -> minijinja::Value {
        self.inputs
            .iter()
            .filter_map(|name| row.get(name).map(|v| (name.as_str(), jinja_value(v))))
            .collect::<std::collections::BTreeMap<&str, minijinja::Value>>()
            .into()
    }
}

/// A value as the template sees it: the same as its JSON form, without building that form
/// for the common scalars.
fn jinja_value(value: &Value) -> minijinja::Value {
    match value {
        Value::Str(s) => minijinja::Value::from(s.as_str()),
        Value::Int(i) => minijinja::Value::from(*i),
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Null => minijinja::Value::from(()),
        other => minijinja::Value::from(minijinja::value::Serde(other.to_json())),
    }
}

impl Step for FormatText {
    fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    fn outputs(&self) -> Vec<String> {
        vec![self.output.clone()]
    }

    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        let template = self.env.get_template(NAME)?;
        rows.into_iter()
            .enumerate()
            .map(|(index, mut row)| {
                let context = self.context(&row);
                let text = template
                    .render(context)
                    .map_err(|e| format!("row {index}: {e}"))?;
                row.insert(self.output.as_str(), text);
                Ok(row)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(template: &str) -> StepResult<Box<dyn Step>> {
        match format_text(
            &serde_json::json!({"template": template, "output": "p"}),
            &BuildContext::default(),
        )? {
            StepKind::Step(s) => Ok(s),
            _ => Err("not a step".into()),
        }
    }

    #[test]
    fn renders_columns_lists_and_maps() {
        let s = build("{{ q }}: {% for x in xs %}{{ x }};{% endfor %} {{ m.k }}").unwrap();
        assert_eq!(s.inputs(), vec!["m", "q", "xs"]);
        let row = Row::new()
            .with("q", "Q")
            .with("xs", vec![1, 2])
            .with("m", Row::new().with("k", "v"));
        let out = s.process(vec![row]).unwrap();
        assert_eq!(out[0].get("p"), Some(&Value::from("Q: 1;2; v")));
    }

    #[test]
    fn syntax_and_render_errors_are_clear() {
        let err = build("{{ q ").err().unwrap().to_string();
        assert!(err.contains("template"), "{err}");
        let s = build("{{ q.deep.deeper }}").unwrap();
        let err = s
            .process(vec![Row::new().with("q", 1), Row::new().with("q", 2)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 0"), "{err}");
    }
}
