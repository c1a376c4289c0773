//! `distill status`: where a run stands, from a snapshot (never blocks the run).

use distill_engine::RunReport;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

/// Seconds between refreshes with `--watch`.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Prints the run's status as text or JSON; with `watch`, again every two seconds until the
/// run is no longer running.
pub fn print(db: &Path, json: bool, watch: bool) -> anyhow::Result<()> {
    loop {
        let report = distill_engine::status(db)?;
        if watch && std::io::stdout().is_terminal() {
            print!("\x1b[2J\x1b[H");
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_text(db, &report);
        }
        if !watch || !matches!(report.status, "running" | "created") {
            return Ok(());
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

fn print_text(db: &Path, r: &RunReport) {
    let stage = r.stage.map_or(String::new(), |s| format!(", stage {s}"));
    println!("run {} ({}): {}{stage}", db.display(), r.pipeline, r.status);
    if let Some(message) = &r.message {
        println!("  {message}");
    }
    println!(
        "  {:<20} {:<9} {:>9} {:>8} {:>9} {:>8}",
        "step", "state", "rows", "batches", "rows/s", "eta"
    );
    for s in &r.steps {
        let rate = s.rows_per_sec.map_or("-".into(), |v| format!("{v:.0}"));
        let eta = match (s.done, s.eta_secs) {
            (true, _) => "done".into(),
            (false, Some(secs)) => format!("{secs:.0}s"),
            (false, None) => "-".into(),
        };
        println!(
            "  {:<20} {:<9} {:>9} {:>8} {:>9} {:>8}",
            s.step, s.state, s.rows, s.batches, rate, eta
        );
        if !s.counters.is_empty() {
            let counters: Vec<String> =
                s.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("  {:<20} {}", "", counters.join(" "));
        }
        if let Some(error) = &s.error {
            println!("  {:<20} error: {error}", "");
        }
    }
    for p in &r.pushes {
        let s = &p.status;
        let state = match (&s.last_error, s.fatal) {
            (Some(_), true) => "stopped",
            (Some(_), false) => "retrying",
            (None, _) if p.behind_rows == 0 => "up to date",
            (None, _) => "behind",
        };
        println!(
            "push to {} ({}): {state}, {} rows on the Hub in {} commits, {} rows to push",
            s.repo,
            s.revision,
            s.total_rows(),
            s.commits,
            p.behind_rows
        );
        if let Some(error) = &s.last_error {
            println!("  last error ({} failed rounds): {error}", s.failures);
        }
    }
}
