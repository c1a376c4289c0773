//! Small text helpers the recipes' answer parsers share.

/// `line` without a leading list marker: `1.`, `2)`, `(3)`, `-`, `*`, `•`, `Q4:`.
pub(crate) fn strip_marker(line: &str) -> &str {
    let t = line.trim();
    for bullet in ["- ", "* ", "• "] {
        if let Some(rest) = t.strip_prefix(bullet) {
            return rest.trim();
        }
    }
    let rest = t.strip_prefix('(').unwrap_or(t);
    let rest = rest
        .strip_prefix('Q')
        .or_else(|| rest.strip_prefix('q'))
        .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or(rest);
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    if digits > 0 && digits <= 3 {
        let after = &rest[digits..];
        for sep in [". ", ") ", ": ", "- "] {
            if let Some(body) = after.strip_prefix(sep) {
                return body.trim();
            }
        }
    }
    t
}

/// The whole number at the start of `text` (after spaces, `*`, `[` or `(`), if any.
pub(crate) fn leading_int(text: &str) -> Option<i64> {
    let t = text.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '*' | '[' | '('));
    let digits: String = t.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    // "4.5" is not a whole score.
    let rest = &t[digits.len()..];
    if rest.starts_with('.') && rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Text with surrounding quotes and a label such as `Instruction:` or `#Rewritten Prompt#:`
/// removed from its first line.
pub(crate) fn strip_label(text: &str, labels: &[&str]) -> String {
    let mut t = text.trim();
    loop {
        let before = t;
        for label in labels {
            if t.len() >= label.len() && t[..label.len()].eq_ignore_ascii_case(label) {
                t = t[label.len()..]
                    .trim_start_matches([':', ' ', '\n', '*'])
                    .trim();
            }
        }
        if t == before {
            break;
        }
    }
    let unquoted = t
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(t);
    unquoted.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_markers_go() {
        for (line, want) in [
            ("1. What is X?", "What is X?"),
            ("  12) Why?", "Why?"),
            ("(3) How?", "How?"),
            ("- a", "a"),
            ("* b", "b"),
            ("Q4: c", "c"),
            ("2024 was a year", "2024 was a year"),
            ("3.5 is a number", "3.5 is a number"),
        ] {
            assert_eq!(strip_marker(line), want, "{line}");
        }
    }

    #[test]
    fn leading_ints() {
        assert_eq!(leading_int(" 4"), Some(4));
        assert_eq!(leading_int("**5** (great)"), Some(5));
        assert_eq!(leading_int("[3]"), Some(3));
        assert_eq!(leading_int("4.5"), None);
        assert_eq!(leading_int("four"), None);
    }

    #[test]
    fn labels_and_quotes_go() {
        assert_eq!(
            strip_label("#Rewritten Prompt#: \"Do X.\"", &["#Rewritten Prompt#"]),
            "Do X."
        );
        assert_eq!(strip_label("Do Y.", &["New instruction"]), "Do Y.");
    }
}
