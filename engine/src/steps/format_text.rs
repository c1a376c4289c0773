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
    /// The template as literal text and columns, when that is all it is.
    substitution: Option<Substitution>,
}

const NAME: &str = "template";

/// Builds `format_text`; a template syntax error names the line.
pub fn format_text(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: Params = parse_params(params)?;
    let substitution = Substitution::parse(&p.template);
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
        substitution,
    })))
}

impl Lifecycle for FormatText {}

/// A template that only places columns in literal text (`Question: {{ instruction }}`), the
/// common prompt. Rows whose columns are all text are rendered by concatenation, which gives
/// what minijinja gives (text is printed as it is: the template has no auto-escaping) at a
/// fraction of the cost; any other row goes through minijinja.
#[derive(Debug, PartialEq)]
struct Substitution {
    parts: Vec<Part>,
}

#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    Column(String),
}

impl Substitution {
    /// The parts of `template`, or `None` when it has anything but literal text and
    /// `{{ name }}` expressions: blocks, comments, filters, attributes, literals, whitespace
    /// control, or a final newline (which Jinja drops).
    fn parse(template: &str) -> Option<Self> {
        if template.contains("{%") || template.contains("{#") || template.ends_with(['\n', '\r']) {
            return None;
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}")?;
            let name = after[..close].trim();
            let plain = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let literal = matches!(name, "true" | "false" | "none" | "True" | "False" | "None");
            if !plain || literal {
                return None;
            }
            parts.push(Part::Column(name.to_owned()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Some(Self { parts })
    }

    /// The text for `row`, or `None` when a column is missing or not text.
    fn render(&self, row: &Row) -> Option<String> {
        let mut len = 0;
        for part in &self.parts {
            len += match part {
                Part::Text(t) => t.len(),
                Part::Column(c) => match row.get(c)? {
                    Value::Str(s) => s.len(),
                    _ => return None,
                },
            };
        }
        let mut out = String::with_capacity(len);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Column(c) => {
                    if let Some(Value::Str(s)) = row.get(c) {
                        out.push_str(s);
                    }
                }
            }
        }
        Some(out)
    }
}

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
                let text = match self.substitution.as_ref().and_then(|s| s.render(&row)) {
                    Some(text) => text,
                    None => template
                        .render(self.context(&row))
                        .map_err(|e| format!("row {index}: {e}"))?,
                };
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

    /// What minijinja renders, through the step's general path.
    fn by_minijinja(template: &str, row: &Row) -> Result<String, String> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template_owned(NAME, template.to_owned())
            .map_err(|e| e.to_string())?;
        let step = FormatText {
            env,
            inputs: row.iter().map(|(k, _)| k.to_owned()).collect(),
            output: "p".into(),
            substitution: None,
        };
        let t = step.env.get_template(NAME).map_err(|e| e.to_string())?;
        t.render(step.context(row)).map_err(|e| e.to_string())
    }

    #[test]
    fn plain_templates_render_as_minijinja_does() {
        let row = Row::new()
            .with("q", "Quel été? {{ not a tag }} \\n <b>&amp;</b>")
            .with("a_1", "")
            .with("n", 3)
            .with("b", true)
            .with("z", Value::Null)
            .with("range", "shadowed");
        let templates = [
            "Question: {{ q }}",
            "{{q}}{{a_1}}{{ q }}",
            "<user>{{ q }}</user><assistant>",
            "no tags at all",
            "",
            "a }} b {{ q }} c }}",
            "{{ n }} {{ b }} {{ z }} {{ q }}",
            "{{ range }}",
            "  {{\tq\n}}  ",
            "line one\n{{ q }}\nline three",
        ];
        for template in templates {
            let fast = Substitution::parse(template).expect(template);
            let expected = by_minijinja(template, &row).unwrap();
            match fast.render(&row) {
                Some(text) => assert_eq!(text, expected, "{template}"),
                // Non-text columns go to minijinja: the step's output is still minijinja's.
                None => assert!(template.contains("{{ n }}"), "{template}"),
            }
            let step = build(template).unwrap();
            let out = step.process(vec![row.clone()]).unwrap();
            assert_eq!(out[0].get("p"), Some(&Value::from(expected)), "{template}");
        }
    }

    #[test]
    fn anything_but_plain_columns_goes_to_minijinja() {
        for template in [
            "{% if q %}{{ q }}{% endif %}",
            "{# note #}{{ q }}",
            "{{ q | upper }}",
            "{{ q.x }}",
            "{{ q[0] }}",
            "{{ 'text' }}",
            "{{ true }}",
            "{{ None }}",
            "{{- q }}",
            "{{ q -}}",
            "{{ q }}\n",
            "{{ q",
            "{{ 1q }}",
        ] {
            assert_eq!(Substitution::parse(template), None, "{template}");
        }
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
