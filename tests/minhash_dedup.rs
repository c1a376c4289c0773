//! `minhash_dedup` against a reference: a generated corpus with planted near-duplicates
//! (copies with one word of thirty changed: Jaccard 29/31 ≈ 0.94) and planted look-alikes
//! that must be kept (twelve words of thirty changed: Jaccard 18/42 ≈ 0.43), deduplicated by
//! the real binary at threshold 0.8. Precision and recall of the dropped rows are printed
//! and must each be at least 0.95; the output is the same on every run and after SIGKILLs
//! at random moments (many of them in the middle of the streaming step) and resumes.

mod common;

use common::distill::{distill, read_jsonl, run, stderr, stdout};
use common::seed;
use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const BASE: usize = 3000;
const NEAR: usize = 600;
const LOOKALIKE: usize = 600;
const WORDS: usize = 30;
const VOCABULARY: usize = 20_000;

/// Writes the corpus; returns the ids of the planted near-duplicates.
fn write_corpus(dir: &Path) -> HashSet<u64> {
    let mut rng = fastrand::Rng::with_seed(42);
    let word = |i: usize| format!("w{i}");
    let doc = |rng: &mut fastrand::Rng| -> Vec<usize> {
        let mut picked = HashSet::new();
        while picked.len() < WORDS {
            picked.insert(rng.usize(0..VOCABULARY));
        }
        let mut v: Vec<usize> = picked.into_iter().collect();
        rng.shuffle(&mut v);
        v
    };
    // Replaces `k` words of `d` by words it does not have.
    let mutate = |rng: &mut fastrand::Rng, d: &[usize], k: usize| -> Vec<usize> {
        let mut out = d.to_vec();
        let mut positions: Vec<usize> = (0..d.len()).collect();
        rng.shuffle(&mut positions);
        for &p in &positions[..k] {
            loop {
                let w = rng.usize(0..VOCABULARY);
                if !out.contains(&w) {
                    out[p] = w;
                    break;
                }
            }
        }
        out
    };
    let mut docs: Vec<(Vec<usize>, bool)> = (0..BASE).map(|_| (doc(&mut rng), false)).collect();
    for _ in 0..NEAR {
        let of = rng.usize(0..BASE);
        let copy = mutate(&mut rng, &docs[of].0, 1);
        docs.push((copy, true));
    }
    for _ in 0..LOOKALIKE {
        let of = rng.usize(0..BASE);
        let copy = mutate(&mut rng, &docs[of].0, 12);
        docs.push((copy, false));
    }
    // Planted rows come after their originals: shuffle only the planted part.
    let mut planted = docs.split_off(BASE);
    rng.shuffle(&mut planted);
    docs.extend(planted);
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("corpus.jsonl")).unwrap());
    let mut dups = HashSet::new();
    for (id, (d, dup)) in docs.iter().enumerate() {
        let text: Vec<String> = d.iter().map(|&w| word(w)).collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({"id": id, "text": text.join(" ")})
        )
        .unwrap();
        if *dup {
            dups.insert(id as u64);
        }
    }
    out.flush().unwrap();
    std::fs::write(
        dir.join("pipeline.yaml"),
        "name: minhash\nsteps:\n  - name: load\n    type: load_jsonl\n    batch_size: 500\n    params: {path: corpus.jsonl}\n  - name: dedup\n    type: minhash_dedup\n    after: [load]\n    input_batch_size: 40\n    params: {column: text, threshold: 0.8, num_perm: 128, seed: 7}\n",
    )
    .unwrap();
    dups
}

fn kept_ids(dir: &Path, db: &str, out: &str) -> Vec<u64> {
    let o = run(
        dir,
        &["export", "--db", db, "--out", out, "--format", "jsonl"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    read_jsonl(&dir.join(out).join("dedup/train/data-00000.jsonl"))
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect()
}

fn dedup_status(dir: &Path, db: &str) -> Option<serde_json::Value> {
    let o = run(dir, &["status", "--db", db, "--json"]);
    if !o.status.success() {
        return None;
    }
    let status: serde_json::Value = serde_json::from_str(&stdout(&o)).ok()?;
    status["steps"]
        .as_array()?
        .iter()
        .find(|s| s["step"] == "dedup")
        .cloned()
}

#[test]
fn planted_near_duplicates_are_found_and_the_output_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let dups = write_corpus(d);
    let total = (BASE + NEAR + LOOKALIKE) as u64;

    let started = Instant::now();
    let o = run(d, &["run", "pipeline.yaml", "--db", "a.redb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let clean_time = started.elapsed();
    let kept = kept_ids(d, "a.redb", "a");
    assert!(kept.windows(2).all(|w| w[0] < w[1]), "row order is kept");
    let kept_set: HashSet<u64> = kept.iter().copied().collect();
    let dropped: HashSet<u64> = (0..total).filter(|i| !kept_set.contains(i)).collect();
    let true_drops = dropped.intersection(&dups).count() as f64;
    let precision = true_drops / dropped.len().max(1) as f64;
    let recall = true_drops / dups.len() as f64;
    println!(
        "minhash_dedup at threshold 0.8: {} planted near-duplicates, {} dropped; precision {precision:.4}, recall {recall:.4}",
        dups.len(),
        dropped.len()
    );
    assert!(precision >= 0.95, "precision {precision}");
    assert!(recall >= 0.95, "recall {recall}");

    // Same input, same seed: the same rows on another run.
    let o = run(d, &["run", "pipeline.yaml", "--db", "b.redb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(kept_ids(d, "b.redb", "b"), kept, "a second run differs");

    // SIGKILL at random moments, resume until done: the same rows.
    let mut rng = fastrand::Rng::with_seed(seed("minhash_dedup"));
    let full = (clean_time.as_millis() as u64).clamp(100, 10_000);
    let (mut kills, mut mid_stream, mut round) = (0, 0, 0);
    while mid_stream < 3 && round < 20 {
        round += 1;
        let db = format!("k{round}.redb");
        for attempt in 0.. {
            assert!(attempt < 300, "no progress");
            let mut child = distill(d)
                .args(["run", "pipeline.yaml", "--db", &db])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(rng.u64(5..full.max(10))));
            if child.try_wait().unwrap().is_some() {
                assert!(child.wait().unwrap().success());
                break;
            }
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            if let Some(s) = dedup_status(d, &db)
                && s["rows"].as_u64().unwrap_or(0) > 0
                && s["done"] == false
            {
                mid_stream += 1;
            }
        }
        assert_eq!(
            kept_ids(d, &db, &format!("k{round}")),
            kept,
            "round {round}: the resumed output differs"
        );
    }
    println!(
        "{kills} kills, {mid_stream} in the middle of minhash_dedup, {round} rounds: output identical"
    );
    assert!(mid_stream > 0, "no kill struck the streaming step mid-way");
}
