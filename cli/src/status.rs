//! `distill status`: where a run stands, read from a snapshot (never blocks the run).

use distill_storage::RunReader;
use std::path::Path;

/// Prints the run's state and each step's, as text or JSON.
pub fn print(db: &Path, json: bool) -> anyhow::Result<()> {
    let reader = RunReader::open(db)?;
    let snapshot = reader.snapshot()?;
    let meta = snapshot.meta()?;
    let run = snapshot.run_state()?;
    let steps = snapshot.steps()?;
    if json {
        let steps: Vec<serde_json::Value> = steps
            .iter()
            .map(|(name, r)| {
                serde_json::json!({
                    "step": name,
                    "state": r.state.as_str(),
                    "batches": r.batches,
                    "rows": r.rows,
                    "done": r.done,
                    "error": r.error,
                    "counters": r.counters,
                })
            })
            .collect();
        let out = serde_json::json!({
            "db": db.display().to_string(),
            "signature": meta.signature,
            "status": run.status.as_str(),
            "stage": run.stage,
            "message": run.message,
            "updated_ms": run.updated_ms,
            "steps": steps,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let stage = run.stage.map_or(String::new(), |s| format!(", stage {s}"));
    println!("run {}: {}{stage}", db.display(), run.status);
    if let Some(message) = &run.message {
        println!("  {message}");
    }
    for (name, r) in &steps {
        let done = if r.done { " (all batches)" } else { "" };
        println!(
            "  {name:<20} {:<9} {:>8} rows {:>6} batches{done}",
            r.state.as_str(),
            r.rows,
            r.batches
        );
        if let Some(error) = &r.error {
            println!("  {:<20} error: {error}", "");
        }
    }
    Ok(())
}
