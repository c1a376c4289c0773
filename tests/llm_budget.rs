//! Spending budgets through the real binary against the loopback mock LLM: a run stops cleanly
//! when no request fits in what is left of `budget_usd` (exit 6), never spends past it, says
//! why in `status`, and resumes with a higher budget to the output an unlimited run gives,
//! paying for no answer twice.

mod common;

use common::distill::{read_jsonl, run, stderr, stdout};
use distill_testkit::mock_llm::{Behaviour, MockLlm};
use std::path::Path;
use std::time::Duration;

const ROWS: usize = 40;
/// Dollars per million tokens, in and out: a token costs a tenth of a cent.
const PRICE: f64 = 1000.0;
/// The worst case of one request: 13 bytes of instruction + 16 per message + 16, and
/// `max_tokens` 8, at a tenth of a cent each.
const WORST: f64 = (13.0 + 16.0 + 16.0 + 8.0) * PRICE / 1e6;

fn pipeline(server: &MockLlm, budget: Option<f64>, max_tokens: bool) -> String {
    let rows: Vec<String> = (0..ROWS)
        .map(|i| format!("{{instruction: write line {i}}}"))
        .collect();
    let generation = if max_tokens {
        "{temperature: 0.0, max_tokens: 8}"
    } else {
        "{temperature: 0.0}"
    };
    let mut text = format!(
        "name: budget\nsteps:\n  - name: load\n    type: inline\n    batch_size: 10\n    params: {{rows: [{}]}}\n  - name: answer\n    type: text_generation\n    after: [load]\n    input_batch_size: 5\n    params:\n      base_url: {}\n      model: mock-model\n      concurrency: 4\n      generation: {generation}\n      price: {{input_per_mtok: {PRICE}, output_per_mtok: {PRICE}}}\n",
        rows.join(", "),
        server.base_url()
    );
    if let Some(budget) = budget {
        text.push_str(&format!("budget_usd: {budget}\n"));
    }
    text
}

fn status_json(d: &Path, db: &str) -> serde_json::Value {
    let out = run(d, &["status", "--db", db, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn export(d: &Path, db: &str, out: &str) -> Vec<serde_json::Value> {
    let o = run(
        d,
        &["export", "--db", db, "--out", out, "--format", "jsonl"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    read_jsonl(&d.join(out).join("answer/train/data-00000.jsonl"))
}

fn chats(server: &MockLlm) -> usize {
    server
        .received()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .count()
}

#[test]
fn a_run_stops_at_its_budget_and_resumes_with_a_higher_one() {
    let server = MockLlm::start(Behaviour {
        latency: Duration::from_millis(10),
        ..Behaviour::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let budget = 0.15;
    std::fs::write(d.join("p.yaml"), pipeline(&server, Some(budget), true)).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the budget of $0.150000 is reached"),
        "{}",
        stderr(&out)
    );
    let paid = chats(&server);
    assert!(paid > 0 && paid < ROWS, "{paid} requests");

    // Never past the budget; stopped only when not even one more request could fit.
    let status = status_json(d, "r.redb");
    let spent = status["spent_usd"].as_f64().unwrap();
    assert!(spent <= budget, "spent {spent} of {budget}");
    assert!(
        budget - spent < WORST,
        "stopped early: spent {spent} of {budget}"
    );
    // Each answer cost 7 tokens (3 in, 4 out): the committed counters account for all paid.
    let answer = &status["steps"][1];
    assert_eq!(answer["counters"]["requests"], paid);
    let tokens = answer["counters"]["input_tokens"].as_u64().unwrap()
        + answer["counters"]["output_tokens"].as_u64().unwrap();
    assert_eq!(tokens, 7 * paid as u64);
    assert_eq!(status["status"], "failed");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("raise `budget_usd`"),
        "{status}"
    );
    let text = stdout(&run(d, &["status", "--db", "r.redb"]));
    assert!(
        text.contains("the budget of $0.150000 is reached"),
        "{text}"
    );
    assert!(text.contains("of a $0.150000 budget"), "{text}");

    // A changed step keeps what its answers cost: the budget is still spent, nothing is sent.
    std::fs::write(
        d.join("p.yaml"),
        pipeline(&server, Some(budget), true).replace(
            "      model: mock-model\n",
            "      model: mock-model\n      system_prompt: Be brief.\n",
        ),
    )
    .unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(chats(&server), paid);
    let again = status_json(d, "r.redb")["spent_usd"].as_f64().unwrap();
    assert!((again - spent).abs() < 1e-12, "{again} vs {spent}");

    // A higher budget (not part of the signature): the run resumes and finishes, paying only
    // for the answers it did not have.
    std::fs::write(d.join("p.yaml"), pipeline(&server, Some(10.0), true)).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(chats(&server), ROWS, "an answer was paid for twice");
    let budgeted = export(d, "r.redb", "o");
    let status = status_json(d, "r.redb");
    assert_eq!(status["status"], "finished");
    assert_eq!(status["budget_usd"], 10.0);

    // An unlimited run of the same pipeline gives the same rows.
    std::fs::write(d.join("u.yaml"), pipeline(&server, None, true)).unwrap();
    let out = run(d, &["run", "u.yaml", "--db", "u.redb"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(budgeted.len(), ROWS);
    assert_eq!(budgeted, export(d, "u.redb", "u"));
}

#[test]
fn a_zero_budget_uses_only_cached_answers_and_priced_tasks_need_max_tokens() {
    let server = MockLlm::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.yaml"), pipeline(&server, Some(0.0), true)).unwrap();
    let out = run(d, &["run", "p.yaml", "--db", "r.redb"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(chats(&server), 0);

    // Without `max_tokens`, an answer's cost has no bound: refused before anything runs.
    std::fs::write(d.join("m.yaml"), pipeline(&server, Some(1.0), false)).unwrap();
    let out = run(d, &["run", "m.yaml", "--db", "m.redb"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("step 'answer'")
            && stderr(&out).contains("`generation.max_tokens` is needed"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        d.join("n.yaml"),
        pipeline(&server, None, true).replace("name: budget\n", "name: budget\nbudget_usd: -1\n"),
    )
    .unwrap();
    let out = run(d, &["run", "n.yaml", "--db", "n.redb"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("budget_usd"), "{}", stderr(&out));
}
