//! The OpenAI-compatible APIs the tasks call, and what a request's size says about its tokens.

/// One of the APIs under an endpoint's base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST /chat/completions`: messages in, `choices[0].message.content` out.
    Chat,
    /// `POST /completions`: a prompt in, `choices[0].text` out.
    Completions,
    /// `POST /embeddings`: texts in, one vector per text out.
    Embeddings,
}

impl Api {
    /// The path under the base URL.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "chat/completions",
            Api::Completions => "completions",
            Api::Embeddings => "embeddings",
        }
    }
}

/// Tokens a chat template may add around each message (role markers, separators).
const PER_MESSAGE: u64 = 16;
/// Tokens a request may add around everything (start and end markers, the reply's header).
const PER_REQUEST: u64 = 16;

/// The texts a request's model reads: messages' contents, a prompt, or the inputs to embed.
fn texts(body: &serde_json::Value) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut pieces = 0u64;
    let mut add = |v: &serde_json::Value| {
        let text = match v {
            serde_json::Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        bytes += text as u64;
        pieces += 1;
    };
    if let Some(messages) = body.get("messages").and_then(|m| m.as_array()) {
        for m in messages {
            add(m.get("content").unwrap_or(&serde_json::Value::Null));
        }
    }
    for key in ["prompt", "input"] {
        match body.get(key) {
            Some(serde_json::Value::Array(items)) => items.iter().for_each(&mut add),
            Some(v) => add(v),
            None => {}
        }
    }
    (bytes, pieces)
}

/// A bound on the prompt tokens of a request that no real tokenizer passes: one token per byte
/// of its texts (byte-level BPE and SentencePiece with byte fallback never make a token of less
/// than a byte), plus the markers a template may add. What a budget reserves.
pub fn worst_prompt_tokens(body: &serde_json::Value) -> u64 {
    let (bytes, pieces) = texts(body);
    bytes + pieces * PER_MESSAGE + PER_REQUEST
}

/// A typical count of a request's tokens, for the provider's tokens-per-minute windows: about
/// four bytes a token, plus `max_tokens` (what providers count against the window).
pub fn rate_tokens(body: &serde_json::Value) -> u64 {
    let (bytes, pieces) = texts(body);
    let max = body
        .get("max_tokens")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    bytes.div_ceil(4) + pieces * 4 + max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_cover_every_text_the_model_reads() {
        let chat = serde_json::json!({"model": "m", "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "héllo"}]});
        assert_eq!(worst_prompt_tokens(&chat), 8 + 6 + 2 * 16 + 16);
        let completion = serde_json::json!({"model": "m", "prompt": "abcd", "max_tokens": 10});
        assert_eq!(worst_prompt_tokens(&completion), 4 + 16 + 16);
        assert_eq!(rate_tokens(&completion), 1 + 4 + 10);
        let embeddings = serde_json::json!({"model": "m", "input": ["ab", "cde"]});
        assert_eq!(worst_prompt_tokens(&embeddings), 5 + 2 * 16 + 16);
    }
}
