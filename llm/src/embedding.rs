//! The answer of an embeddings endpoint, parsed once and checked before it is cached; and the
//! record each input's vector is cached as.

use crate::error::{Error, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    data: Option<Vec<Item>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    embedding: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
}

/// A usable embeddings answer: one vector per input, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// The vectors, in the order of the inputs.
    pub vectors: Vec<Vec<f64>>,
    /// The model named in the answer.
    pub model: Option<String>,
    /// Prompt tokens of the whole request.
    pub input_tokens: u64,
}

/// One input's vector as the request cache keeps it (one record per input, so that a changed
/// batching still finds it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CachedVector {
    /// The vector.
    pub embedding: Vec<f64>,
    /// The model named in the answer.
    pub model: Option<String>,
    /// This input's share of the request's prompt tokens.
    pub input_tokens: u64,
}

/// A vector sent as base64: little-endian float32s.
fn decode_base64(text: &str) -> std::result::Result<Vec<f64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| format!("base64 that does not decode ({e})"))?;
    if bytes.len() % 4 != 0 {
        return Err(format!(
            "base64 of {} bytes, not a whole number of float32s",
            bytes.len()
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect())
}

fn vector(value: Option<serde_json::Value>) -> std::result::Result<Vec<f64>, String> {
    let numbers = match value {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_f64().ok_or_else(|| format!("{v}, not a number")))
            .collect::<std::result::Result<Vec<f64>, String>>()?,
        Some(serde_json::Value::String(text)) => decode_base64(&text)?,
        Some(other) => return Err(format!("{other}, not a list of numbers nor base64")),
        None => return Err("missing".into()),
    };
    if numbers.is_empty() {
        return Err("empty".into());
    }
    if numbers.iter().any(|x| !x.is_finite()) {
        return Err("a value that is not a finite number".into());
    }
    Ok(numbers)
}

impl Embeddings {
    /// Parses and checks an answer of `call` to a request of `count` inputs: JSON, no `error`
    /// object, exactly one non-empty vector of finite numbers per input (by `index`, else in
    /// order), all of `dimensions` numbers when asked. Anything else is [`Error::Answer`].
    pub fn parse(call: &str, body: &[u8], count: usize, dimensions: Option<u64>) -> Result<Self> {
        let bad = |detail: String| Error::Answer {
            call: call.to_owned(),
            detail,
        };
        let parsed: Body = serde_json::from_slice(body).map_err(|e| {
            bad(format!(
                "not an embeddings answer ({e}): {}",
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
        let data = parsed
            .data
            .ok_or_else(|| bad("the answer has no `data`".into()))?;
        if data.len() != count {
            return Err(bad(format!(
                "the answer has {} vectors for {count} inputs",
                data.len()
            )));
        }
        let mut vectors: Vec<Option<Vec<f64>>> = vec![None; count];
        for (position, item) in data.into_iter().enumerate() {
            let index = item.index.unwrap_or(position);
            let slot = vectors
                .get_mut(index)
                .ok_or_else(|| bad(format!("vector index {index} is out of range")))?;
            if slot.is_some() {
                return Err(bad(format!("vector index {index} comes twice")));
            }
            let v = vector(item.embedding).map_err(|why| bad(format!("vector {index}: {why}")))?;
            if let Some(d) = dimensions
                && v.len() as u64 != d
            {
                return Err(bad(format!(
                    "vector {index} has {} dimensions, not the {d} asked",
                    v.len()
                )));
            }
            *slot = Some(v);
        }
        Ok(Self {
            vectors: vectors.into_iter().flatten().collect(),
            model: parsed.model,
            input_tokens: parsed.usage.unwrap_or_default().prompt_tokens,
        })
    }
}

/// `total` split over parts weighing `weights` (largest remainders get the rest), so the parts
/// add up to `total` exactly.
pub(crate) fn share(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u64 = weights.iter().sum();
    if sum == 0 {
        let n = weights.len().max(1) as u64;
        return (0..weights.len() as u64)
            .map(|i| total / n + u64::from(i < total % n))
            .collect();
    }
    let exact: Vec<(u64, u128)> = weights
        .iter()
        .map(|&w| {
            let num = u128::from(total) * u128::from(w);
            ((num / u128::from(sum)) as u64, num % u128::from(sum))
        })
        .collect();
    let mut parts: Vec<u64> = exact.iter().map(|(q, _)| *q).collect();
    let mut rest = total - parts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|&a, &b| exact[b].1.cmp(&exact[a].1).then(a.cmp(&b)));
    for i in order {
        if rest == 0 {
            break;
        }
        parts[i] += 1;
        rest -= 1;
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, count: usize, dims: Option<u64>) -> Result<Embeddings> {
        Embeddings::parse("POST x", body.as_bytes(), count, dims)
    }

    #[test]
    fn vectors_in_input_order_from_floats_or_base64() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(
            [0.5f32, -2.0]
                .iter()
                .flat_map(|f| f.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        let body = format!(
            r#"{{"model": "e", "data": [{{"index": 1, "embedding": "{b64}"}}, {{"index": 0, "embedding": [1, 0.25]}}], "usage": {{"prompt_tokens": 5}}}}"#
        );
        let e = parse(&body, 2, Some(2)).unwrap();
        assert_eq!(e.vectors, vec![vec![1.0, 0.25], vec![0.5, -2.0]]);
        assert_eq!((e.model.as_deref(), e.input_tokens), (Some("e"), 5));
    }

    #[test]
    fn unusable_answers_say_why() {
        for (body, count, dims, reason) in [
            (
                r#"{"data": [{"embedding": [1]}]}"#,
                2,
                None,
                "1 vectors for 2 inputs",
            ),
            (r#"{"object": "list"}"#, 1, None, "no `data`"),
            (r#"{"error": {"message": "too long"}}"#, 1, None, "too long"),
            (
                r#"{"data": [{"embedding": []}]}"#,
                1,
                None,
                "vector 0: empty",
            ),
            (
                r#"{"data": [{"embedding": ["a"]}]}"#,
                1,
                None,
                "not a number",
            ),
            (r#"{"data": [{"embedding": "@@"}]}"#, 1, None, "base64"),
            (
                r#"{"data": [{"embedding": "AAAAAA=="}, {"index": 0, "embedding": [1]}]}"#,
                2,
                None,
                "comes twice",
            ),
            (
                r#"{"data": [{"index": 5, "embedding": [1]}]}"#,
                1,
                None,
                "out of range",
            ),
            (
                r#"{"data": [{"embedding": [1, 2, 3]}]}"#,
                1,
                Some(2),
                "3 dimensions, not the 2",
            ),
            ("[1]", 1, None, "not an embeddings answer"),
        ] {
            let err = parse(body, count, dims).unwrap_err().to_string();
            assert!(err.contains(reason), "{body}: {err}");
        }
    }

    #[test]
    fn shares_add_up() {
        assert_eq!(share(10, &[1, 1, 2]), vec![3, 2, 5]);
        assert_eq!(share(7, &[0, 0]), vec![4, 3]);
        assert_eq!(share(0, &[3, 4]), vec![0, 0]);
        let parts = share(1001, &[3, 5, 7, 11]);
        assert_eq!(parts.iter().sum::<u64>(), 1001);
    }
}
