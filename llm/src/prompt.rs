//! The user prompt of a row: a Jinja template over its columns, or its `instruction` column.

use crate::error::{Error, Result};
use distill_storage::{Row, Value};

/// How a task turns a row into its user message.
pub struct UserPrompt {
    template: Option<Box<minijinja::Environment<'static>>>,
    inputs: Vec<String>,
    column: String,
}

impl UserPrompt {
    /// From an optional template (a syntax error names the `template` parameter); without
    /// one, the `instruction` column.
    pub fn new(template: Option<&str>) -> Result<Self> {
        Self::or_column(template, "instruction")
    }

    /// From an optional template, or else the text of `column`.
    pub fn or_column(template: Option<&str>, column: &str) -> Result<Self> {
        let Some(text) = template else {
            return Ok(Self {
                template: None,
                inputs: vec![column.to_owned()],
                column: column.to_owned(),
            });
        };
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.add_template_owned("prompt", text.to_owned())
            .map_err(|e| Error::params(format!("`template`: {e}")))?;
        let mut inputs: Vec<String> = env
            .get_template("prompt")
            .map_err(|e| Error::params(format!("`template`: {e}")))?
            .undeclared_variables(false)
            .into_iter()
            .collect();
        inputs.sort();
        Ok(Self {
            template: Some(Box::new(env)),
            inputs,
            column: column.to_owned(),
        })
    }

    /// The columns it reads.
    pub fn inputs(&self) -> Vec<String> {
        self.inputs.clone()
    }

    /// The message for row `index`.
    pub fn render(&self, row: &Row, index: usize) -> Result<String> {
        match &self.template {
            Some(env) => env
                .get_template("prompt")
                .and_then(|t| {
                    t.render(minijinja::Value::from(minijinja::value::Serde(
                        row.to_json(),
                    )))
                })
                .map_err(|e| Error::Row {
                    row: index,
                    detail: e.to_string(),
                }),
            None => Ok(row
                .get(&self.column)
                .map(Value::to_string)
                .unwrap_or_default()),
        }
    }
}
