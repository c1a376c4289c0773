//! Provider rate limits through the real binary against the loopback mock LLM. A provider that
//! allows N requests per window and says so in `x-ratelimit-*` headers gets few 429s (only
//! the first burst, before any header was read) while every window is used nearly to its
//! limit; a provider that answers 429 without `Retry-After` beyond a number of requests in
//! progress makes the run lower its concurrency (AIMD) and find that number. Counts, not
//! wall time, are asserted.

mod common;

use common::distill::{read_jsonl, run, stderr};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::path::Path;
use std::time::Duration;

const CONCURRENCY: usize = 16;

fn pipeline(server: &MockLlm, rows: usize) -> String {
    let rows: Vec<String> = (0..rows)
        .map(|i| format!("{{instruction: question {i}}}"))
        .collect();
    format!(
        "name: limits\nsteps:\n  - name: load\n    type: inline\n    batch_size: 100\n    params: {{rows: [{}]}}\n  - name: answer\n    type: text_generation\n    after: [load]\n    input_batch_size: 100\n    params: {{base_url: {}, model: mock-model, concurrency: {CONCURRENCY}, max_attempts: 10}}\n",
        rows.join(", "),
        server.base_url()
    )
}

/// Runs the pipeline and checks that every row got its answer.
fn run_all(d: &Path, server: &MockLlm, rows: usize) {
    std::fs::write(d.join("p.yaml"), pipeline(server, rows)).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(
        d,
        &[
            "export", "--db", "r.redb", "--out", "o", "--format", "jsonl",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows_out = read_jsonl(&d.join("o/answer/train/data-00000.jsonl"));
    assert_eq!(rows_out.len(), rows);
    for (i, row) in rows_out.iter().enumerate() {
        assert_eq!(row["generation"], format!("echo: question {i}"), "{row}");
    }
}

#[test]
fn announced_windows_are_used_to_their_limit_without_429s() {
    let (limit, rows) = (12u64, 72usize);
    let server = MockLlm::start(Behaviour {
        latency: Duration::from_millis(20),
        requests_per_window: Some((limit, Duration::from_millis(600))),
        rate_headers: true,
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    run_all(dir.path(), &server, rows);
    let throttled = server.answered(429);
    // Only the first burst, sent before any answer announced the window, may overrun it.
    assert!(
        throttled <= CONCURRENCY - limit as usize,
        "{throttled} answers were 429"
    );
    // Every window between the first and the last was used nearly to its limit (never past
    // it: the server refuses that).
    let windows = server.served_per_window();
    eprintln!("requests served per window: {windows:?}; 429s: {throttled}");
    let busy: Vec<u64> = windows.iter().copied().skip_while(|n| *n == 0).collect();
    let inner = &busy[..busy.len().saturating_sub(1)];
    assert!(inner.len() >= 4, "{windows:?}");
    let full = inner.iter().filter(|n| **n * 10 >= limit * 8).count();
    assert!(
        full * 10 >= inner.len() * 8,
        "windows not used to their limit: {windows:?}"
    );
    assert_eq!(windows.iter().sum::<u64>(), rows as u64);
}

#[test]
fn a_429_without_retry_after_lowers_concurrency_to_what_the_provider_takes() {
    let (cap, rows) = (4u64, 100usize);
    let server = MockLlm::start(Behaviour {
        latency: Duration::from_millis(30),
        max_in_flight: Some(cap),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    run_all(dir.path(), &server, rows);
    let throttled = server.answered(429);
    eprintln!(
        "429s: {throttled}; most in progress: {}",
        server.peak_accepted()
    );
    // Without adapting, 12 of every 16 requests in flight would be refused, over and over.
    assert!(
        throttled * 3 <= rows,
        "{throttled} answers were 429 for {rows} requests"
    );
    // The run found the provider's limit: it kept that many requests in progress.
    assert_eq!(server.peak_accepted(), cap);
}
