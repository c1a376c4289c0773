//! Text rows of the storage benches (`text_pipeline`, `codec_choice`): short instructions and
//! LLM-answer-sized text, seeded.

/// Words of the short instructions.
const WORDS: [&str; 16] = [
    "write",
    "explain",
    "list",
    "summarize",
    "the",
    "a",
    "poem",
    "story",
    "about",
    "rivers",
    "cats",
    "history",
    "briefly",
    "three",
    "facts",
    "why",
];

/// A 40-character instruction from a small vocabulary.
pub fn instruction(rng: &mut fastrand::Rng) -> String {
    let mut s = String::with_capacity(48);
    while s.len() < 40 {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rng.usize(..WORDS.len())]);
    }
    s.truncate(40);
    s
}

/// About 2 KB of word-like text: words of a 4,000-word vocabulary drawn with a skew, as in
/// natural text (it compresses about as well: 3 to 4x).
pub fn long_text(rng: &mut fastrand::Rng, vocabulary: &[String]) -> String {
    let mut s = String::with_capacity(2100);
    while s.len() < 2000 {
        if !s.is_empty() {
            s.push(if rng.u8(..16) == 0 { '\n' } else { ' ' });
        }
        // Skewed: the square of a uniform draw favours the first words.
        let x = rng.f64();
        s.push_str(&vocabulary[(x * x * vocabulary.len() as f64) as usize]);
    }
    s
}

/// A vocabulary of 4,000 lowercase words of 2 to 10 letters, for [`long_text`].
pub fn vocabulary(rng: &mut fastrand::Rng) -> Vec<String> {
    (0..4000)
        .map(|_| {
            let len = 2 + rng.usize(..9);
            (0..len).map(|_| rng.lowercase()).collect()
        })
        .collect()
}
