//! Prompt templates of the built-in recipes: each is a Jinja file of its own under
//! `src/tasks/templates/`, embedded at build time, and replaceable by the task's
//! `template_file` parameter (a path relative to the pipeline file).
//!
//! Templates are rendered with minijinja in strict mode (a variable the task does not pass is
//! an error, so a typo in an override is caught at its first row), with `trim_blocks` and
//! `lstrip_blocks` so that block tags leave no blank lines behind.

use crate::error::{Error, Result};
use distill_engine::step::BuildContext;

/// A recipe's prompt template: built in, or read from `template_file`.
pub struct Template {
    env: minijinja::Environment<'static>,
    origin: String,
}

impl Template {
    /// The built-in template `name` (its text `builtin`), or the file named by the task's
    /// `template_file` parameter when it is set. A file that cannot be read or a template
    /// that does not parse is a parameter error naming it.
    pub fn load(
        name: &str,
        builtin: &'static str,
        params: &serde_json::Value,
        ctx: &BuildContext,
    ) -> Result<Self> {
        match params.get("template_file") {
            None | Some(serde_json::Value::Null) => Self::new(builtin.to_owned(), name),
            Some(serde_json::Value::String(path)) => {
                let full = ctx.resolve(path);
                let text = std::fs::read_to_string(&full).map_err(|e| {
                    Error::params(format!(
                        "`template_file`: cannot read {}: {e}",
                        full.display()
                    ))
                })?;
                Self::new(text, &full.display().to_string())
            }
            Some(_) => Err(Error::params("`template_file` must be a path (text)")),
        }
    }

    /// A template from its text; `origin` names it in messages.
    pub fn new(text: String, origin: &str) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
        {
            env.set_syntax(syntax);
        }
        env.add_template_owned("t", text)
            .map_err(|e| Error::params(format!("template {origin}: {e}")))?;
        Ok(Self {
            env,
            origin: origin.to_owned(),
        })
    }

    /// Renders the template with `vars` (a JSON object), trimmed; the error names the
    /// template.
    pub fn render(&self, vars: &serde_json::Value) -> std::result::Result<String, String> {
        self.render_exact(vars).map(|s| s.trim().to_owned())
    }

    /// Renders the template with `vars`, whitespace kept exactly (raw prompts whose last
    /// newline matters).
    pub fn render_exact(&self, vars: &serde_json::Value) -> std::result::Result<String, String> {
        self.env
            .get_template("t")
            .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(vars))))
            .map_err(|e| format!("template {}: {e}", self.origin))
    }
}

/// The built-in templates, by name: `(name, text)`.
pub mod builtin {
    macro_rules! templates {
        ($($name:ident => $file:literal),* $(,)?) => {
            $(
                #[doc = concat!("`src/tasks/templates/", $file, "`.")]
                pub const $name: (&str, &str) = ($file, include_str!(concat!("tasks/templates/", $file)));
            )*
            /// Every built-in template.
            #[cfg(test)]
            pub const ALL: &[(&str, &str)] = &[$($name),*];
        };
    }
    templates! {
        SELF_INSTRUCT => "self_instruct.jinja",
        EVOL_INSTRUCT => "evol_instruct.jinja",
        EVOL_QUALITY => "evol_quality.jinja",
        ULTRAFEEDBACK => "ultrafeedback.jinja",
        PROMETHEUS_ABSOLUTE => "prometheus_absolute.jinja",
        PROMETHEUS_RELATIVE => "prometheus_relative.jinja",
        QUALITY_SCORER => "quality_scorer.jinja",
        COMPLEXITY_SCORER => "complexity_scorer.jinja",
        TEXT_CLASSIFICATION => "text_classification.jinja",
        SENTENCE_PAIR => "generate_sentence_pair.jinja",
        MAGPIE_LLAMA3 => "magpie_llama3.jinja",
        MAGPIE_CHATML => "magpie_chatml.jinja",
        MAGPIE_GEMMA => "magpie_gemma.jinja",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_template_parses() {
        for (name, text) in builtin::ALL {
            Template::new((*text).to_owned(), name).unwrap();
        }
    }

    #[test]
    fn a_variable_the_task_does_not_pass_is_an_error_naming_the_template() {
        let t = Template::new("Hello {{ nme }}".into(), "x.jinja").unwrap();
        let err = t.render(&serde_json::json!({"name": "a"})).unwrap_err();
        assert!(err.contains("x.jinja"), "{err}");
        let err = Template::new("{% if %}".into(), "bad.jinja").err().unwrap();
        assert!(err.to_string().contains("bad.jinja"), "{err}");
    }

    #[test]
    fn template_file_replaces_the_builtin_relative_to_the_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.jinja"), "Mine: {{ x }}").unwrap();
        let ctx = BuildContext {
            base_dir: dir.path().to_path_buf(),
        };
        let t = Template::load(
            "b",
            "Built-in: {{ x }}",
            &serde_json::json!({"template_file": "mine.jinja"}),
            &ctx,
        )
        .unwrap();
        assert_eq!(t.render(&serde_json::json!({"x": 1})).unwrap(), "Mine: 1");
        let t = Template::load("b", "Built-in: {{ x }}", &serde_json::json!({}), &ctx).unwrap();
        assert_eq!(
            t.render(&serde_json::json!({"x": 1})).unwrap(),
            "Built-in: 1"
        );
        let err = Template::load(
            "b",
            "",
            &serde_json::json!({"template_file": "missing.jinja"}),
            &ctx,
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("missing.jinja"), "{err}");
    }
}
