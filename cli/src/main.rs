//! The `distill` command: a thin layer over the engine. Each flag is defined once, with its help;
//! each command is one call into the engine; errors map to documented exit codes.

mod progress;
mod status;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use distill_engine::hub::{HubAccess, PushOptions, Round};
use distill_engine::{
    BuildContext, Error, ExportFormat, Pipeline, PipelineSpec, PushSpec, Registry, RunOptions,
};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code of a run stopped by Ctrl-C (it can be resumed).
const EXIT_INTERRUPTED: u8 = 130;
/// Exit code of an invalid pipeline (bad YAML, unknown step, missing column...).
const EXIT_INVALID: u8 = 3;
/// Exit code of a run whose step failed (committed work is kept; fix and re-run to resume).
const EXIT_STEP_FAILED: u8 = 4;
/// Exit code of a run that finished but could not push everything to the Hub (a later
/// `distill push` catches up).
const EXIT_PUSH_BEHIND: u8 = 5;
/// Exit code of any other error.
const EXIT_ERROR: u8 = 1;

#[derive(Parser)]
#[command(
    name = "distill",
    version,
    about = "Build datasets with LLMs; crash-proof runs on a redb log"
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 invalid pipeline, 4 a step failed, 5 run done but the Hub push is behind, 130 stopped by Ctrl-C"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline, or resume it if the database holds the same pipeline.
    Run {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// The run database (created if missing).
        #[arg(long)]
        db: PathBuf,
        /// Worker threads for CPU steps (default: one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// Start a new run in the database instead of resuming (its request cache is kept, so
        /// answers already paid for are reused).
        #[arg(long)]
        new: bool,
    },
    /// Show a pipeline's steps, edges, columns and stages.
    Info {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
    },
    /// Export the distiset: one config per leaf step, a dataset card, the pipeline and each
    /// leaf's status. Works on a finished, failed or live run.
    Export {
        /// The run database.
        #[arg(long)]
        db: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// File format of the data files.
        #[arg(long, value_enum, default_value_t = Format::Parquet)]
        format: Format,
    },
    /// Push the distiset to a Hugging Face Hub dataset repository: everything committed, for a
    /// finished run; as it goes, for a run going on in another process. Rows already on the
    /// Hub are never pushed again. Token from HF_TOKEN, Hub address from HF_ENDPOINT.
    Push {
        /// The run database.
        #[arg(long)]
        db: PathBuf,
        /// Dataset repository, NAMESPACE/NAME (created if missing).
        #[arg(long)]
        repo: String,
        /// Create the repository public (default: private).
        #[arg(long)]
        public: bool,
        /// Branch to commit to.
        #[arg(long, default_value = "main")]
        revision: String,
        /// For a live run: push once this many new rows are committed.
        #[arg(long)]
        every_rows: Option<u64>,
        /// For a live run: push new rows at least this often (seconds; default 60).
        #[arg(long)]
        every_secs: Option<u64>,
        /// Seconds allowed for one Hub request.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Seconds to keep retrying the last push before giving up.
        #[arg(long, default_value_t = 300)]
        wait: u64,
    },
    /// Show where a run stands (works while it runs, from another terminal).
    Status {
        /// The run database.
        #[arg(long)]
        db: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Refresh every two seconds until the run stops.
        #[arg(long)]
        watch: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Apache Parquet (readable by pyarrow, pandas and `datasets`).
    Parquet,
    /// One JSON object per line.
    Jsonl,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(exit_code(&err))
        }
    }
}

fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<PushBehind>().is_some() {
        return EXIT_PUSH_BEHIND;
    }
    match err.downcast_ref::<Error>() {
        Some(Error::Interrupted) => EXIT_INTERRUPTED,
        Some(Error::StepFailed { .. } | Error::LoadFailed { .. }) => EXIT_STEP_FAILED,
        Some(
            Error::BadPipelineFile { .. }
            | Error::DuplicateStep { .. }
            | Error::UnknownStepType { .. }
            | Error::UnknownPredecessor { .. }
            | Error::Cycle { .. }
            | Error::BadParams { .. }
            | Error::BadStep { .. }
            | Error::MissingColumn { .. },
        ) => EXIT_INVALID,
        _ => EXIT_ERROR,
    }
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            pipeline,
            db,
            workers,
            new,
        } => run(&pipeline, db, workers, new),
        Command::Info { pipeline } => info(&pipeline),
        Command::Export { db, out, format } => {
            let format = match format {
                Format::Parquet => ExportFormat::Parquet,
                Format::Jsonl => ExportFormat::Jsonl,
            };
            let distiset = distill_engine::export(&db, &out, format)?;
            println!(
                "exported run ({}) at log position {} to {}",
                distiset.run_status,
                distiset.snapshot_log,
                out.display()
            );
            for leaf in distiset.leaves {
                println!(
                    "  {}: {} rows, {} -> {}",
                    leaf.name,
                    leaf.rows,
                    leaf.status,
                    leaf.files.join(", ")
                );
            }
            Ok(())
        }
        Command::Status { db, json, watch } => status::print(&db, json, watch),
        Command::Push {
            db,
            repo,
            public,
            revision,
            every_rows,
            every_secs,
            timeout,
            wait,
        } => {
            let mut spec = PushSpec::new(repo);
            spec.private = !public;
            spec.revision = revision;
            spec.every_rows = every_rows;
            spec.every_secs = every_secs.or(every_rows.is_none().then_some(60));
            spec.timeout_secs = timeout;
            spec.final_wait_secs = wait;
            push(db, spec)
        }
    }
}

fn push(db: PathBuf, spec: PushSpec) -> anyhow::Result<()> {
    let access = HubAccess::from_env();
    let options = PushOptions {
        db,
        spec,
        access,
        stop: Arc::new(AtomicBool::new(false)),
        poll: std::time::Duration::from_millis(500),
    };
    let stop = options.stop.clone();
    ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    let outcome = distill_engine::hub::push(&options, |status, round| {
        if let Round::Pushed { rows, .. } = round {
            eprintln!(
                "pushed {rows} rows to {} ({} on the Hub, commit {})",
                status.repo,
                status.total_rows(),
                status.last_commit.as_deref().unwrap_or("?")
            );
        }
    })?;
    let status = outcome.status;
    println!(
        "{} is up to date: {} rows in {} ({})",
        status.repo,
        status.total_rows(),
        status
            .rows
            .iter()
            .map(|(leaf, rows)| format!("{leaf}: {rows}"))
            .collect::<Vec<_>>()
            .join(", "),
        match (outcome.live, outcome.recorded) {
            (true, true) =>
                "followed the live run to its end; offsets recorded in the run database",
            (true, false) =>
                "followed the live run to its end; its process still holds the database, so the offsets are only on the Hub",
            (false, _) => "offsets recorded in the run database",
        }
    );
    Ok(())
}

fn load_pipeline(path: &Path) -> anyhow::Result<Pipeline> {
    let spec = PipelineSpec::load(path)?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Pipeline::build(
        spec,
        &Registry::default(),
        &BuildContext { base_dir },
    )?)
}

fn run(path: &Path, db: PathBuf, workers: usize, new_run: bool) -> anyhow::Result<()> {
    let pipeline = load_pipeline(path)?;
    let mut options = RunOptions::new(db);
    options.workers = workers;
    options.new_run = new_run;
    let stop = options.stop.clone();
    ctrlc::set_handler(move || {
        if stop.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: the user insists. Everything committed is safe.
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        eprintln!("stopping: finishing in-flight batches (Ctrl-C again to quit now)");
    })
    .context("cannot install the Ctrl-C handler")?;
    let bars = Arc::new(progress::Bars::new(&pipeline));
    options.observer = Some(bars.clone());
    let result = distill_engine::run(&pipeline, &options);
    bars.finish();
    let summary = result?;
    for (leaf, rows) in &summary.leaves {
        println!("{leaf}: {rows} rows");
    }
    println!(
        "run finished: {} (export with: distill export --db {} --out DIR)",
        options.db.display(),
        options.db.display()
    );
    if let Some(push) = summary.push {
        let committed: u64 = summary.leaves.iter().map(|(_, rows)| rows).sum();
        let pushed = push.total_rows();
        println!(
            "pushed to {}: {pushed} of {committed} rows in {} commits",
            push.repo, push.commits
        );
        if pushed < committed || push.last_error.is_some() {
            eprintln!(
                "push to {} is behind: {}; catch up with: distill push --db {} --repo {}",
                push.repo,
                push.last_error
                    .as_deref()
                    .unwrap_or("not everything was pushed"),
                options.db.display(),
                push.repo
            );
            return Err(PushBehind.into());
        }
    }
    Ok(())
}

/// The run finished, the push did not.
#[derive(Debug, thiserror::Error)]
#[error("the run finished but its push to the Hub is behind")]
struct PushBehind;

fn info(path: &Path) -> anyhow::Result<()> {
    let pipeline = load_pipeline(path)?;
    println!(
        "pipeline '{}' (signature {})",
        pipeline.spec().name,
        pipeline.signature()
    );
    let nodes = pipeline.nodes();
    for (stage, members) in pipeline.stages().iter().enumerate() {
        println!("stage {stage}:");
        for &i in members {
            let node = &nodes[i];
            let after: Vec<&str> = node.preds.iter().map(|&p| nodes[p].name()).collect();
            println!(
                "  {} ({} '{}', batch {}){}",
                node.name(),
                node.kind,
                node.spec.kind,
                node.batch_size,
                if after.is_empty() {
                    String::new()
                } else {
                    format!(" after {}", after.join(", "))
                }
            );
            if !node.is_generator() {
                println!("    in:  {}", node.received.join(", "));
            }
            println!("    out: {}", node.columns.join(", "));
        }
    }
    let leaves: Vec<&str> = pipeline.leaves().iter().map(|&i| nodes[i].name()).collect();
    println!("leaves: {}", leaves.join(", "));
    if let Some(push) = &pipeline.spec().push {
        let mut when: Vec<String> = Vec::new();
        when.extend(push.every_rows.map(|n| format!("every {n} rows")));
        when.extend(push.every_secs.map(|t| format!("every {t} s")));
        when.push("at the end".into());
        println!(
            "push: {} ({}, {}), {}",
            push.repo,
            push.revision,
            if push.private { "private" } else { "public" },
            when.join(", ")
        );
    }
    Ok(())
}
