//! `distill status`: where a run stands, from a snapshot (never blocks the run).

use crate::output::outln;
use distill::{RunStatus, Status};
use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

/// Seconds between refreshes with `--watch`.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Prints the run's status as text or JSON; with `watch`, again every two seconds until the
/// run is no longer running (as JSON Lines with `json`: one object per refresh).
pub fn print(db: &Path, json: bool, watch: bool) -> anyhow::Result<()> {
    loop {
        let status = distill::status(db)?;
        if json && watch {
            outln!("{}", serde_json::to_string(&status)?)?;
        } else if json {
            outln!("{}", serde_json::to_string_pretty(&status)?)?;
        } else {
            if watch && std::io::stdout().is_terminal() {
                outln!("\x1b[2J\x1b[H")?;
            }
            print_text(db, &status)?;
        }
        if !watch || !matches!(status.run.status, RunStatus::Running | RunStatus::Created) {
            return Ok(());
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

/// Prints the status of several databases (a sharded run's), then which are not finished.
pub fn print_many(dbs: &[std::path::PathBuf], json: bool) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for db in dbs {
        all.push((db, distill::status(db)?));
    }
    if json {
        let list: Vec<serde_json::Value> = all
            .iter()
            .map(|(db, s)| serde_json::json!({"db": db.display().to_string(), "status": s}))
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?)?;
        return Ok(());
    }
    for (db, status) in &all {
        print_text(db, status)?;
    }
    let count = |wanted: RunStatus| all.iter().filter(|(_, s)| s.run.status == wanted).count();
    let behind: Vec<String> = all
        .iter()
        .filter(|(_, s)| !matches!(s.run.status, RunStatus::Finished | RunStatus::AtBarrier))
        .map(|(db, s)| format!("{} ({})", db.display(), s.run.status))
        .collect();
    outln!(
        "{} databases: {} finished, {} at_barrier{}",
        all.len(),
        count(RunStatus::Finished),
        count(RunStatus::AtBarrier),
        if behind.is_empty() {
            String::new()
        } else {
            format!("; behind or failed: {}", behind.join(", "))
        }
    )?;
    Ok(())
}

/// Dollars with enough digits for small amounts: `$0.000123`, `$12.35`.
fn dollars(usd: f64) -> String {
    if usd != 0.0 && usd.abs() < 1.0 {
        format!("${usd:.6}")
    } else {
        format!("${usd:.2}")
    }
}

fn print_text(db: &Path, s: &Status) -> std::io::Result<()> {
    let r = &s.run;
    let stage = r.stage.map_or(String::new(), |s| format!(", stage {s}"));
    let stage = match &r.shard {
        Some(shard) => format!("{stage}, shard {shard}"),
        None => stage,
    };
    outln!("run {} ({}): {}{stage}", db.display(), r.pipeline, r.status)?;
    if let Some(message) = &r.message {
        outln!("  {message}")?;
    }
    if r.status == RunStatus::Interrupted {
        outln!("  its process died; run the same command again to resume")?;
    }
    if r.status == RunStatus::Waiting && r.message.is_none() {
        outln!("  only provider batch jobs are left; run the same command again to collect them")?;
    }
    outln!(
        "  {:<20} {:<9} {:>9} {:>8} {:>9} {:>8}",
        "step",
        "state",
        "rows",
        "batches",
        "rows/s",
        "eta"
    )?;
    for s in &r.steps {
        let rate = s.rows_per_sec.map_or("-".into(), |v| format!("{v:.0}"));
        let eta = match (s.done, s.eta_secs) {
            (true, _) => "done".into(),
            (false, Some(secs)) => format!("{secs:.0}s"),
            (false, None) => "-".into(),
        };
        outln!(
            "  {:<20} {:<9} {:>9} {:>8} {:>9} {:>8}",
            s.step,
            s.state.as_str(),
            s.rows,
            s.batches,
            rate,
            eta
        )?;
        if !s.counters.is_empty() {
            let counters: Vec<String> =
                s.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            outln!("  {:<20} {}", "", counters.join(" "))?;
        }
        if let (Some(spent), Some(saved)) = (s.spent_usd, s.saved_usd) {
            outln!(
                "  {:<20} spent {} (the cache saved {})",
                "",
                dollars(spent),
                dollars(saved)
            )?;
        }
        if let Some(error) = &s.error {
            outln!("  {:<20} error: {error}", "")?;
        }
        if s.reclaimed_batches > 0 {
            outln!(
                "  {:<20} {} consumed batches reclaimed",
                "",
                s.reclaimed_batches
            )?;
        }
    }
    let codec = if r.format_version >= 3 {
        format!("zstd level {}", distill::ZSTD_LEVEL)
    } else {
        "uncompressed".into()
    };
    outln!(
        "database: {:.1} MB (format {}, {codec}), {} cached answers",
        r.db_bytes as f64 / 1e6,
        r.format_version,
        r.cached_answers
    )?;
    if r.steps.iter().any(|s| s.spent_usd.is_some()) || r.budget_usd.is_some() {
        let budget = r.budget_usd.map_or(String::new(), |b| {
            let share = if b > 0.0 {
                format!(" ({:.1}%)", 100.0 * r.spent_usd / b)
            } else {
                String::new()
            };
            format!(" of a {} budget{share}", dollars(b))
        });
        outln!(
            "spend: {}{budget}; the cache saved {}",
            dollars(r.spent_usd),
            dollars(r.saved_usd)
        )?;
    }
    if !s.batch_jobs.is_empty() {
        outln!(
            "  {:<20} {:<24} {:<12} {:>9} {:>9} {:>7} {:>8}",
            "batch job of",
            "id",
            "state",
            "requests",
            "completed",
            "failed",
            "age"
        )?;
    }
    for j in &s.batch_jobs {
        outln!(
            "  {:<20} {:<24} {:<12} {:>9} {:>9} {:>7} {:>8}",
            j.step,
            j.batch_id.as_deref().unwrap_or("-"),
            j.state(),
            j.requests,
            j.completed.max(j.answered),
            j.failed.max(j.failures),
            age(j.age_secs)
        )?;
    }
    for p in &s.pushes {
        let st = &p.status;
        outln!(
            "push to {} ({}): {}, {} rows on the Hub in {} commits, {} rows to push",
            st.repo,
            st.revision,
            p.state,
            st.total_rows(),
            st.commits,
            p.behind_rows
        )?;
        if let Some(error) = &st.last_error {
            outln!("  last error ({} failed rounds): {error}", st.failures)?;
        }
    }
    let now = distill::checkpoint::now_ms();
    for c in &s.checkpoints {
        let how = match c.origin {
            distill::checkpoint::Origin::Uploaded => "taken",
            distill::checkpoint::Origin::Restored => "restored from",
        };
        outln!(
            "checkpoint to {}: last snapshot {} {} ago ({how}), log position {}, {} cached answers, {} bytes, under {}",
            c.url,
            c.name,
            age(now.saturating_sub(c.taken_ms) / 1000),
            c.log_position,
            c.cache_entries,
            c.size,
            c.folder
        )?;
    }
    Ok(())
}

/// A duration in seconds, as `42s`, `7m`, `3h` or `2d`.
fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
