//! Reclamation under SIGKILL: the real `distill` binary runs a one-stage pipeline whose
//! intermediate steps have their consumed batches deleted in the commits that advance their
//! consumers' cursors (one of them feeds two consumers), and is killed at random moments,
//! mostly while those deletions are committed. After every kill the log holds every batch a
//! consumer still needs (from the first not reclaimed to the last committed, no consumer
//! behind what was deleted), and the resumed run's leaves equal those of an uninterrupted run
//! that keeps every batch. Then a leaf is edited on a finished run: the steps before it run
//! again from the loader (their consumed batches were reclaimed), killed at random while they
//! do, and the resumed run's leaves equal a fresh run of the edited pipeline while the other
//! leaf keeps its batches (issue 18 follow-up).

mod common;

use common::distill::{distill, read_jsonl, run, stderr, stdout};
use common::seed;
use distill_storage::RunReader;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const ROWS: usize = 6000;
const KILLS: usize = 20;
/// Each step and its consumers.
const EDGES: [(&str, &[&str]); 3] = [
    ("load", &["prompt"]),
    ("prompt", &["chat", "short"]),
    ("chat", &["keep"]),
];

fn pipeline(keep: bool) -> String {
    pipeline_with(keep, "[id, prompt]")
}

/// The pipeline with `short` keeping `short_columns`.
fn pipeline_with(keep: bool, short_columns: &str) -> String {
    format!(
        "name: reclaim-crash\n{}steps:\n\
         \x20 - {{name: load, type: load_jsonl, batch_size: 17, params: {{path: data.jsonl}}}}\n\
         \x20 - {{name: prompt, type: format_text, after: [load], input_batch_size: 13, params: {{template: 'Q: {{{{ text }}}}', output: prompt}}}}\n\
         \x20 - {{name: chat, type: format_text, after: [prompt], input_batch_size: 7, params: {{template: '<u>{{{{ prompt }}}}</u>', output: chat}}}}\n\
         \x20 - {{name: short, type: keep_columns, after: [prompt], input_batch_size: 29, params: {{columns: {short_columns}}}}}\n\
         \x20 - {{name: keep, type: keep_columns, after: [chat], input_batch_size: 11, params: {{columns: [id, chat]}}}}\n",
        if keep {
            "keep_intermediate: true\n"
        } else {
            ""
        }
    )
}

fn leaves(d: &Path, db: &str, out: &str) -> Vec<Vec<serde_json::Value>> {
    let o = run(
        d,
        &["export", "--db", db, "--out", out, "--format", "jsonl"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    ["keep", "short"]
        .iter()
        .map(|leaf| read_jsonl(&d.join(out).join(leaf).join("train/data-00000.jsonl")))
        .collect()
}

fn write_data(d: &Path) {
    let data: String = (0..ROWS)
        .map(|i| {
            format!(
                "{{\"id\": {i}, \"text\": \"row {i} {}\"}}\n",
                i * 7919 % 1000
            )
        })
        .collect();
    std::fs::write(d.join("data.jsonl"), data).unwrap();
}

/// Batch entries in the log of `db` for `step`: a batch committed again counts twice.
fn batch_events(db: &Path, step: &str) -> usize {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.log_from(0)
        .unwrap()
        .filter(|e| {
            matches!(&e.as_ref().unwrap().event,
                distill_storage::Event::Batch { step: s, .. } if s == step)
        })
        .count()
}

/// The log of `db` holds every batch a consumer still needs; returns the batches reclaimed.
fn check_log(db: &Path) -> u64 {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    // Rows of each batch, from the log's announcements.
    let mut batch_rows: std::collections::HashMap<(String, u64), u64> = Default::default();
    for entry in snap.log_from(0).unwrap() {
        if let distill_storage::Event::Batch {
            step, seq, rows, ..
        } = entry.unwrap().event
        {
            batch_rows.insert((step, seq), rows);
        }
    }
    let mut reclaimed = 0;
    for (step, consumers) in EDGES {
        let (gone, gone_rows) = snap.reclaimed(step).unwrap();
        reclaimed += gone;
        let announced: u64 = (0..gone).map(|s| batch_rows[&(step.to_string(), s)]).sum();
        assert_eq!(
            announced, gone_rows,
            "{step}: rows of the {gone} reclaimed batches"
        );
        let committed = snap.step(step).unwrap().map_or(0, |r| r.batches);
        let seqs: Vec<u64> = snap
            .batches(step, 0)
            .unwrap()
            .map(|b| b.unwrap().seq)
            .collect();
        assert_eq!(seqs, (gone..committed).collect::<Vec<_>>(), "{step}");
        for consumer in consumers {
            let at = snap
                .cursor(&format!("{consumer}<-{step}"))
                .unwrap()
                .unwrap_or(0);
            assert!(
                at >= gone_rows,
                "{consumer} at row {at} of {step}, {gone_rows} reclaimed"
            );
        }
    }
    reclaimed
}

#[test]
fn sigkill_while_batches_are_reclaimed_loses_nothing_a_consumer_needs() {
    let mut rng = fastrand::Rng::with_seed(seed("reclaim_crash"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    std::fs::write(d.join("kept.yaml"), pipeline(true)).unwrap();
    std::fs::write(d.join("p.yaml"), pipeline(false)).unwrap();

    let started = Instant::now();
    let o = run(d, &["run", "kept.yaml", "--db", "kept.redb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let full = started.elapsed().as_millis() as u64;
    let expected = leaves(d, "kept.redb", "kept");
    assert_eq!(expected[0].len(), ROWS);
    assert_eq!(check_log(&d.join("kept.redb")), 0, "keep_intermediate");

    let mut kills = 0;
    let mut reclaimed_at_a_kill = 0;
    let mut round = 0;
    while kills < KILLS {
        round += 1;
        let db = format!("r{round}.redb");
        for attempt in 0.. {
            assert!(attempt < 300, "round {round}: no progress");
            let wait = rng.u64(20..full.clamp(60, 3000) / 3);
            if !run_or_kill(d, &db, wait, round) {
                break;
            }
            kills += 1;
            if d.join(&db).exists() {
                reclaimed_at_a_kill = reclaimed_at_a_kill.max(check_log(&d.join(&db)));
            }
        }
        check_log(&d.join(&db));
        assert_same_leaves(&leaves(d, &db, &format!("out{round}")), &expected, round);
    }
    assert!(
        reclaimed_at_a_kill > 0,
        "no kill happened after a batch was reclaimed"
    );

    // `info --db` and `status` say what the database keeps, and how big it is.
    let info = run(d, &["info", "p.yaml", "--db", "r1.redb"]);
    assert!(info.status.success(), "{}", stderr(&info));
    let text = stdout(&info);
    let load_batches = ROWS.div_ceil(17);
    for needle in [
        format!(
            "batches: deleted once its consumers are past them; in the database: \
             {load_batches} committed, {load_batches} reclaimed"
        ),
        "batches: kept; in the database:".to_string(),
        "format 3, 0 cached answers".to_string(),
    ] {
        assert!(text.contains(&needle), "missing '{needle}' in:\n{text}");
    }
    let status = run(d, &["status", "--db", "r1.redb"]);
    let text = stdout(&status);
    assert!(
        text.contains(&format!("{load_batches} consumed batches reclaimed"))
            && text.contains("(format 3, zstd level 1)"),
        "{text}"
    );
}

/// Kills of the edited runs.
const EDIT_KILLS: usize = 8;
/// Most rounds (a run, edited, resumed through kills) the edit test makes.
const EDIT_ROUNDS: usize = 12;

/// The committed rows of `step` in `db`.
fn step_rows(db: &Path, step: &str) -> Vec<distill_storage::Row> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.batches(step, 0)
        .unwrap()
        .flat_map(|b| b.unwrap().rows)
        .collect()
}

#[test]
fn sigkill_while_the_steps_before_an_edited_leaf_run_again_keeps_the_other_leaf() {
    let mut rng = fastrand::Rng::with_seed(seed("reclaim_crash_edit"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_data(d);
    // `short` edited: it keeps the source text instead of the prompt.
    let edited = "[id, text]";
    std::fs::write(d.join("fresh.yaml"), pipeline_with(true, edited)).unwrap();
    let o = run(d, &["run", "fresh.yaml", "--db", "fresh.redb"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let expected = leaves(d, "fresh.redb", "fresh");
    assert_eq!(expected[1].len(), ROWS);
    assert!(expected[1][0].get("text").is_some(), "{:?}", expected[1][0]);

    let load_batches = ROWS.div_ceil(17) as u64;
    let mut full = 0;
    let (mut kills, mut while_loading, mut half_way) = (0, 0, 0);
    let mut round = 0;
    while kills < EDIT_KILLS || half_way == 0 {
        round += 1;
        assert!(round <= EDIT_ROUNDS, "no kill left `chat` half way");
        let db = format!("r{round}.redb");
        let dbp = d.join(&db);
        // The original pipeline: finished on odd rounds, killed part way on even ones.
        std::fs::write(d.join("p.yaml"), pipeline(false)).unwrap();
        let started = Instant::now();
        let mut child = distill(d)
            .args(["run", "p.yaml", "--db", &db])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if round % 2 == 0 {
            std::thread::sleep(Duration::from_millis(rng.u64(full / 4..full * 3 / 4)));
            child.kill().unwrap();
        }
        let out = child.wait_with_output().unwrap();
        if round % 2 == 1 {
            assert!(out.status.success(), "{}", stderr(&out));
            full = started.elapsed().as_millis() as u64;
            assert_eq!(
                check_log(&dbp),
                load_batches + ROWS.div_ceil(13) as u64 + ROWS.div_ceil(7) as u64,
                "a finished run reclaimed every consumed batch"
            );
        }
        if !dbp.exists() {
            continue;
        }
        check_log(&dbp);
        let keep_before = step_rows(&dbp, "keep");
        {
            let reader = RunReader::open(&dbp).unwrap();
            let snap = reader.snapshot().unwrap();
            let chat = snap.step("chat").unwrap().unwrap_or_default();
            let chat_read = snap.cursor("chat<-prompt").unwrap().unwrap_or(0);
            if !chat.done && chat_read > 0 && snap.reclaimed("prompt").unwrap().0 > 0 {
                half_way += 1;
            }
        }

        std::fs::write(d.join("p.yaml"), pipeline_with(false, edited)).unwrap();
        let plan = run(d, &["run", "p.yaml", "--db", &db, "--dry-run"]);
        let text = stdout(&plan);
        let mut lines = vec!["chat: kept", "keep: kept", "short: changed"];
        if round % 2 == 1 {
            lines.extend([
                "load: 'prompt' reads it again and its consumed batches were reclaimed",
                "prompt: 'short' reads it again",
            ]);
        }
        for line in lines {
            assert!(text.contains(line), "missing '{line}' in:\n{text}");
        }
        for attempt in 0.. {
            assert!(attempt < 300, "round {round}: no progress");
            let wait = rng.u64(20..full.clamp(60, 3000) / 2);
            if !run_or_kill(d, &db, wait, round) {
                break;
            }
            kills += 1;
            check_log(&dbp);
            let reader = RunReader::open(&dbp).unwrap();
            let load = reader
                .snapshot()
                .unwrap()
                .step("load")
                .unwrap()
                .unwrap_or_default();
            if load.batches > 0 && !load.done {
                while_loading += 1;
            }
        }
        check_log(&dbp);
        assert_same_leaves(&leaves(d, &db, &format!("out{round}")), &expected, round);
        // The kept steps went on from their batches and never committed one again (`chat`'s
        // are reclaimed once `keep` is past them).
        assert!(
            step_rows(&dbp, "keep").starts_with(&keep_before),
            "round {round}: keep lost rows"
        );
        for step in ["keep", "chat"] {
            let batches = RunReader::open(&dbp)
                .unwrap()
                .snapshot()
                .unwrap()
                .step(step)
                .unwrap()
                .unwrap()
                .batches;
            assert_eq!(
                batch_events(&dbp, step) as u64,
                batches,
                "round {round}: {step} committed a batch twice"
            );
        }
        // The steps made again are reclaimed to the end, as in a fresh run.
        let reader = RunReader::open(&dbp).unwrap();
        let snap = reader.snapshot().unwrap();
        assert_eq!(snap.reclaimed("load").unwrap(), (load_batches, ROWS as u64));
        assert_eq!(snap.reclaimed("prompt").unwrap().1, ROWS as u64);
    }
    eprintln!(
        "{round} rounds, {kills} kills ({while_loading} while the loader ran again), \
         {half_way} edits with `chat` half way"
    );
    assert!(
        while_loading > 0,
        "no kill happened while the loader ran again"
    );
}

/// Runs `p.yaml` on `db` and SIGKILLs it after `wait_ms` unless it finished first (then it
/// must have succeeded); whether it was killed.
fn run_or_kill(d: &Path, db: &str, wait_ms: u64, round: usize) -> bool {
    let mut child = distill(d)
        .args(["run", "p.yaml", "--db", db])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(wait_ms));
    if child.try_wait().unwrap().is_some() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        return false;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    true
}

/// Each leaf's rows equal the expected ones, naming the first difference.
fn assert_same_leaves(
    got: &[Vec<serde_json::Value>],
    expected: &[Vec<serde_json::Value>],
    round: usize,
) {
    for (leaf, (got, expected)) in got.iter().zip(expected).enumerate() {
        let first = got.iter().zip(expected).position(|(g, e)| g != e);
        assert!(
            got.len() == expected.len() && first.is_none(),
            "round {round}, leaf {leaf}: {} rows, {} expected; first difference at {first:?}: {:?}",
            got.len(),
            expected.len(),
            first.map(|i| (&got[i], &expected[i]))
        );
    }
}
