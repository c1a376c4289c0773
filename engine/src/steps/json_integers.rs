//! Finds JSON integers that no 64-bit type holds. serde_json reads them as floats, silently
//! rounding them; readers of JSON text refuse them instead, naming the column.

use distill_storage::{Row, Value};

/// Whether `row` holds a float that may have been an integer too big for 64 bits (integral and
/// at least 2^63 in size): the cheap test before scanning the text.
pub fn may_hold_one(row: &Row) -> bool {
    row.iter().any(|(_, v)| suspicious(v))
}

fn suspicious(value: &Value) -> bool {
    match value {
        Value::Float(f) => f.fract() == 0.0 && f.abs() >= 9.2e18,
        Value::List(items) => items.iter().any(suspicious),
        Value::Map(row) => row.iter().any(|(_, v)| suspicious(v)),
        _ => false,
    }
}

/// An integer literal beyond the 64-bit range in the JSON object `text`: the top-level key it is
/// under and the literal.
pub fn find(text: &str) -> Option<(String, String)> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut key = String::new();
    let mut last_string: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                last_string = Some((start, i.min(bytes.len())));
            }
            b':' if depth == 1 => {
                if let Some((start, end)) = last_string.take() {
                    let raw = &text[start..end];
                    key = serde_json::from_str::<String>(&format!("\"{raw}\""))
                        .unwrap_or_else(|_| raw.to_owned());
                }
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < bytes.len()
                    && matches!(bytes[i + 1], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let literal = &text[start..=i];
                let integer = !literal.contains(['.', 'e', 'E']);
                if integer && literal.parse::<i64>().is_err() && literal.parse::<u64>().is_err() {
                    return Some((key, literal.to_owned()));
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_integers_beyond_64_bits_with_their_column() {
        assert_eq!(
            find(r#"{"a": 1, "big": 18446744073709551616}"#),
            Some(("big".into(), "18446744073709551616".into()))
        );
        assert_eq!(
            find(r#"{"n": {"x": [1, -9223372036854775809]}}"#),
            Some(("n".into(), "-9223372036854775809".into()))
        );
        assert_eq!(
            find(r#"{"a\"b": 123456789012345678901234}"#),
            Some(("a\"b".into(), "123456789012345678901234".into()))
        );
    }

    #[test]
    fn leaves_floats_strings_and_64_bit_integers_alone() {
        for ok in [
            r#"{"u": 18446744073709551615, "i": -9223372036854775808}"#,
            r#"{"f": 1e20, "g": 123456789012345678901234.0}"#,
            r#"{"s": "123456789012345678901234", "t": "x\"99999999999999999999999"}"#,
        ] {
            assert_eq!(find(ok), None, "{ok}");
        }
    }
}
