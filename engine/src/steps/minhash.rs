//! `minhash_dedup`: near-duplicate removal with MinHash and locality-sensitive hashing, a
//! streaming global step (its memory is the band keys of the rows it kept, not the texts).
//!
//! Each row's `column` text is lower-cased and cut into shingles: `n_gram` consecutive words
//! (`tokenizer: words`, the default; words are runs of letters and digits) or characters
//! (`tokenizer: chars`). Each shingle is hashed (blake3, 32 bits), and `num_perm` (default
//! 128) seeded permutations `(a * x + b) mod (2^61 - 1)` give the signature, as datasketch
//! does. The signature is cut into `bands` of `rows` values, chosen from `threshold` (default
//! 0.9) as datasketch chooses them: the pair that minimises the (equally weighted) integrated
//! probabilities of a false positive below the threshold and a false negative above it. A row
//! is dropped when one of its bands equals the same band of a row kept before it (in row
//! order); otherwise it is kept and its bands remembered. Rows whose `column` is null or not
//! text pass through. Same rows, same `seed` (default 1): same output, in every run and
//! after a resume.

use crate::step::{
    BuildContext, GlobalStep, GlobalStream, Lifecycle, StepKind, StepResult, parse_params,
};
use distill_storage::{Row, Value};
use serde::Deserialize;
use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// The Mersenne prime 2^61 - 1 of the permutations.
const PRIME: u64 = (1 << 61) - 1;
/// Signature values are kept to 32 bits, as datasketch keeps them.
const MAX_HASH: u64 = u32::MAX as u64;
/// Most permutations.
const MAX_PERM: usize = 1024;

/// How texts are cut into shingles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// Runs of letters and digits.
    Words,
    /// Characters.
    Chars,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    column: String,
    #[serde(default = "words")]
    tokenizer: Tokenizer,
    #[serde(default = "one")]
    n_gram: usize,
    #[serde(default = "perm")]
    num_perm: usize,
    #[serde(default = "threshold")]
    threshold: f64,
    #[serde(default = "one_u64")]
    seed: u64,
}

fn words() -> Tokenizer {
    Tokenizer::Words
}
fn one() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn perm() -> usize {
    128
}
fn threshold() -> f64 {
    0.9
}

/// The MinHash settings of a step.
#[derive(Debug, Clone)]
pub struct MinHash {
    tokenizer: Tokenizer,
    n_gram: usize,
    /// `(a, b)` of each permutation.
    perms: Vec<(u64, u64)>,
    /// Bands and rows per band.
    pub bands: usize,
    /// Signature values per band.
    pub rows: usize,
}

/// `minhash_dedup`.
pub struct MinHashDedup {
    column: String,
    minhash: MinHash,
}

/// Builds `minhash_dedup`.
pub fn minhash_dedup(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: Params = parse_params(params)?;
    if !(p.threshold > 0.0 && p.threshold < 1.0) {
        return Err(format!(
            "`threshold` must be above 0 and below 1, not {}",
            p.threshold
        )
        .into());
    }
    if !(2..=MAX_PERM).contains(&p.num_perm) {
        return Err(format!(
            "`num_perm` must be from 2 to {MAX_PERM}, not {}",
            p.num_perm
        )
        .into());
    }
    if !(1..=64).contains(&p.n_gram) {
        return Err(format!("`n_gram` must be from 1 to 64, not {}", p.n_gram).into());
    }
    Ok(StepKind::Global(Box::new(MinHashDedup {
        column: p.column,
        minhash: MinHash::new(p.tokenizer, p.n_gram, p.num_perm, p.threshold, p.seed),
    })))
}

/// `∫ f` over `[a, b]` by the midpoint rule (datasketch integrates with a fixed step too).
fn integrate(f: impl Fn(f64) -> f64, a: f64, b: f64) -> f64 {
    const STEPS: usize = 1000;
    let h = (b - a) / STEPS as f64;
    (0..STEPS).map(|i| f(a + (i as f64 + 0.5) * h)).sum::<f64>() * h
}

/// The `(bands, rows)` with `bands * rows <= num_perm` that minimise the probability of a
/// false positive (a pair below `threshold` sharing a band) plus that of a false negative (a
/// pair above it sharing none), integrated over similarity, each weighted one half.
pub fn optimal_bands(threshold: f64, num_perm: usize) -> (usize, usize) {
    let mut best = (f64::INFINITY, (1, 1));
    for b in 1..=num_perm {
        for r in 1..=num_perm / b {
            let (bf, ri) = (b as f64, r as i32);
            let fp = integrate(|s| 1.0 - (1.0 - s.powi(ri)).powf(bf), 0.0, threshold);
            let fneg = integrate(|s| (1.0 - s.powi(ri)).powf(bf), threshold, 1.0);
            let error = 0.5 * fp + 0.5 * fneg;
            if error < best.0 {
                best = (error, (b, r));
            }
        }
    }
    best.1
}

/// `x mod (2^61 - 1)` for `x < 2^122`.
fn mod_prime(x: u128) -> u64 {
    let folded = (x & PRIME as u128) + (x >> 61);
    let folded = (folded & PRIME as u128) + (folded >> 61);
    let v = folded as u64;
    if v >= PRIME { v - PRIME } else { v }
}

impl MinHash {
    /// Settings for `num_perm` permutations seeded by `seed`, banded for `threshold`.
    pub fn new(
        tokenizer: Tokenizer,
        n_gram: usize,
        num_perm: usize,
        threshold: f64,
        seed: u64,
    ) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let perms = (0..num_perm)
            .map(|_| (rng.u64(1..PRIME), rng.u64(0..PRIME)))
            .collect();
        let (bands, rows) = optimal_bands(threshold, num_perm);
        Self {
            tokenizer,
            n_gram,
            perms,
            bands,
            rows,
        }
    }

    /// The 32-bit hashes of a text's shingles.
    pub fn shingles(&self, text: &str) -> Vec<u32> {
        let lower = text.to_lowercase();
        let mut out = Vec::new();
        let mut add = |s: &str| {
            let h = blake3::hash(s.as_bytes());
            let mut four = [0u8; 4];
            four.copy_from_slice(&h.as_bytes()[..4]);
            out.push(u32::from_le_bytes(four));
        };
        match self.tokenizer {
            Tokenizer::Words => {
                let words: Vec<&str> = lower
                    .split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .collect();
                if words.len() <= self.n_gram {
                    add(&words.join(" "));
                } else {
                    for w in words.windows(self.n_gram) {
                        add(&w.join(" "));
                    }
                }
            }
            Tokenizer::Chars => {
                let chars: Vec<char> = lower
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .collect();
                if chars.len() <= self.n_gram {
                    add(&chars.iter().collect::<String>());
                } else {
                    let mut s = String::new();
                    for w in chars.windows(self.n_gram) {
                        s.clear();
                        s.extend(w);
                        add(&s);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The signature of a set of shingle hashes.
    pub fn signature(&self, shingles: &[u32]) -> Vec<u32> {
        let mut sig = vec![MAX_HASH as u32; self.perms.len()];
        for &x in shingles {
            for (v, &(a, b)) in sig.iter_mut().zip(&self.perms) {
                let h =
                    (mod_prime(u128::from(a) * u128::from(x) + u128::from(b)) & MAX_HASH) as u32;
                if h < *v {
                    *v = h;
                }
            }
        }
        sig
    }

    /// One key per band of a signature (FNV-1a over the band's index and values).
    pub fn band_keys(&self, sig: &[u32]) -> Vec<u64> {
        (0..self.bands)
            .map(|band| {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                let mut eat = |bytes: &[u8]| {
                    for &byte in bytes {
                        h ^= u64::from(byte);
                        h = h.wrapping_mul(0x0100_0000_01b3);
                    }
                };
                eat(&(band as u32).to_le_bytes());
                for v in &sig[band * self.rows..(band + 1) * self.rows] {
                    eat(&v.to_le_bytes());
                }
                h
            })
            .collect()
    }

    /// The band keys of a text.
    pub fn keys(&self, text: &str) -> Vec<u64> {
        self.band_keys(&self.signature(&self.shingles(text)))
    }
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeySet = HashSet<u64, BuildHasherDefault<Identity>>;

/// The kept rows' band keys: one set per band.
pub struct Seen {
    minhash: MinHash,
    bands: Vec<KeySet>,
}

impl Seen {
    /// Nothing seen yet.
    pub fn new(minhash: MinHash) -> Self {
        let bands = (0..minhash.bands).map(|_| KeySet::default()).collect();
        Self { minhash, bands }
    }

    /// Whether `text` is a candidate duplicate of a text kept before; if not, it is kept.
    pub fn is_duplicate(&mut self, text: &str) -> bool {
        let keys = self.minhash.keys(text);
        if keys.iter().zip(&self.bands).any(|(k, set)| set.contains(k)) {
            return true;
        }
        for (k, set) in keys.into_iter().zip(&mut self.bands) {
            set.insert(k);
        }
        false
    }
}

struct Stream {
    column: String,
    seen: Seen,
}

impl GlobalStream for Stream {
    fn push(&mut self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        Ok(rows
            .into_iter()
            .filter(|row| match row.get(&self.column) {
                Some(Value::Str(text)) => !self.seen.is_duplicate(text),
                _ => true,
            })
            .collect())
    }
}

impl Lifecycle for MinHashDedup {}

impl GlobalStep for MinHashDedup {
    fn inputs(&self) -> Vec<String> {
        vec![self.column.clone()]
    }

    fn process_all(&self, rows: Vec<Row>) -> StepResult<Vec<Row>> {
        let mut stream = self.stream().ok_or("minhash_dedup streams")?;
        stream.push(rows)
    }

    fn stream(&self) -> Option<Box<dyn GlobalStream>> {
        Some(Box::new(Stream {
            column: self.column.clone(),
            seen: Seen::new(self.minhash.clone()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_follow_the_threshold() {
        // The values of datasketch 2.0.0, datasketch.lsh._optimal_param(t, p, 0.5, 0.5).
        for (threshold, perm, want) in [
            (0.9, 128, (5, 25)),
            (0.8, 128, (9, 13)),
            (0.5, 128, (25, 5)),
            (0.7, 256, (25, 10)),
        ] {
            assert_eq!(optimal_bands(threshold, perm), want, "{threshold} {perm}");
        }
    }

    #[test]
    fn mod_prime_agrees_with_plain_arithmetic() {
        for x in [
            0u128,
            1,
            PRIME as u128,
            PRIME as u128 + 5,
            (PRIME as u128) * (1 << 40) + 17,
            u128::from(u64::MAX) * u128::from(u32::MAX),
        ] {
            assert_eq!(u128::from(mod_prime(x)), x % PRIME as u128, "{x}");
        }
    }

    #[test]
    fn near_duplicates_are_dropped_others_kept_in_order() {
        let m = MinHash::new(Tokenizer::Words, 1, 128, 0.8, 1);
        let mut seen = Seen::new(m);
        let base = "the quick brown fox jumps over the lazy dog near the river bank at dawn today";
        assert!(!seen.is_duplicate(base));
        assert!(seen.is_duplicate(&base.to_uppercase()), "case is ignored");
        assert!(seen.is_duplicate(
            "the quick brown fox jumps over the lazy dog near the river bank at dawn"
        ));
        assert!(!seen.is_duplicate("a completely different sentence about tides and the moon"));
    }

    #[test]
    fn shingles_by_words_and_chars() {
        let w = MinHash::new(Tokenizer::Words, 2, 8, 0.5, 1);
        assert_eq!(w.shingles("A b, c!").len(), 2);
        assert_eq!(w.shingles("one").len(), 1);
        let c = MinHash::new(Tokenizer::Chars, 3, 8, 0.5, 1);
        assert_eq!(c.shingles("abcd").len(), 2);
        assert_eq!(c.shingles("ab  cd"), c.shingles("ab cd"));
    }
}
