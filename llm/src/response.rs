//! The answer of a chat-completions or completions endpoint, parsed once and checked before it
//! is cached.

use crate::api::Api;
use crate::error::{Error, Result};
use serde::Deserialize;

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    message: Option<Message>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// A usable chat completion: its text, the model that wrote it and the tokens it used.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The first choice's text (never empty).
    pub text: String,
    /// The model named in the answer.
    pub model: Option<String>,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

/// The token counts an answer reports, read leniently (an unusable answer may still say what
/// it cost): (prompt, completion), zeros when absent.
pub fn reported_usage(body: &[u8]) -> (u64, u64) {
    #[derive(Deserialize)]
    struct Only {
        #[serde(default)]
        usage: Option<Usage>,
    }
    serde_json::from_slice::<Only>(body)
        .ok()
        .and_then(|o| o.usage)
        .map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens))
}

impl Completion {
    /// Parses and checks a chat completion (see [`Completion::parse_for`]).
    pub fn parse(call: &str, body: &[u8]) -> Result<Self> {
        Self::parse_for(Api::Chat, call, body)
    }

    /// Parses and checks an answer of `call` to `api` (chat: `choices[0].message.content`;
    /// completions: `choices[0].text`): JSON, no `error` object, a first choice with a
    /// non-empty text. Anything else is [`Error::Answer`] with the reason.
    pub fn parse_for(api: Api, call: &str, body: &[u8]) -> Result<Self> {
        let bad = |detail: String| Error::Answer {
            call: call.to_owned(),
            detail,
        };
        let parsed: Body = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "not a {} ({e}): {}",
                match api {
                    Api::Completions => "completion",
                    _ => "chat completion",
                },
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })?;
        if let Some(error) = parsed.error {
            let message = error
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(bad(format!(
                "the endpoint answered with an error: {message}"
            )));
        }
        let choice = parsed
            .choices
            .and_then(|c| c.into_iter().next())
            .ok_or_else(|| bad("the answer has no choices".into()))?;
        let text = match api {
            Api::Completions => choice.text,
            _ => choice.message.and_then(|m| m.content),
        }
        .unwrap_or_default();
        if text.is_empty() {
            let why = choice
                .finish_reason
                .map_or(String::new(), |r| format!(" (finish_reason: {r})"));
            return Err(bad(format!("the answer has no text{why}")));
        }
        let usage = parsed.usage.unwrap_or_default();
        Ok(Self {
            text,
            model: parsed.model,
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Completion> {
        Completion::parse("POST x", body.as_bytes())
    }

    #[test]
    fn a_good_answer_gives_text_model_and_tokens() {
        let c = parse(r#"{"model": "m", "choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}"#).unwrap();
        assert_eq!(
            c,
            Completion {
                text: "hi".into(),
                model: Some("m".into()),
                input_tokens: 3,
                output_tokens: 1
            }
        );
    }

    #[test]
    fn answers_without_text_are_errors_with_the_reason() {
        for (body, reason) in [
            (r#"{"model": "m"}"#, "no choices"),
            (r#"{"choices": []}"#, "no choices"),
            (
                r#"{"error": {"message": "model overloaded"}}"#,
                "model overloaded",
            ),
            (
                r#"{"choices": [{"message": {"content": null}, "finish_reason": "length"}]}"#,
                "no text (finish_reason: length)",
            ),
            (r#"{"choices": [{"message": {"content": ""}}]}"#, "no text"),
            ("not json", "not a chat completion"),
        ] {
            let err = parse(body).unwrap_err().to_string();
            assert!(err.contains(reason), "{body}: {err}");
        }
    }

    #[test]
    fn completions_answer_in_the_choices_text() {
        let body = br#"{"model": "m", "choices": [{"text": "once upon"}], "usage": {"prompt_tokens": 2, "completion_tokens": 2}}"#;
        let c = Completion::parse_for(Api::Completions, "POST x", body).unwrap();
        assert_eq!((c.text.as_str(), c.input_tokens), ("once upon", 2));
        // A chat answer is not a completion, nor the other way round.
        let chat = br#"{"choices": [{"message": {"content": "hi"}}]}"#;
        let err = Completion::parse_for(Api::Completions, "POST x", chat).unwrap_err();
        assert!(err.to_string().contains("no text"), "{err}");
        assert!(Completion::parse_for(Api::Chat, "POST x", body).is_err());
        let err = Completion::parse_for(Api::Completions, "POST x", b"not json").unwrap_err();
        assert!(err.to_string().contains("not a completion"), "{err}");
        assert_eq!(
            reported_usage(br#"{"error": {}, "usage": {"prompt_tokens": 7}}"#),
            (7, 0)
        );
    }
}
