//! The `distill` command: a thin layer over the `distill` library. Each flag is defined once,
//! with its help; each command is one call into the library; errors map to documented exit
//! codes (see [`EXIT_CODES`]).
//!
//! A library so that two programs run the same command: the `distill` binary, and the Python
//! package's `distill` entry point, which runs it inside Python so that pipelines with Python
//! steps (`type: py:MODULE:NAME`) run too. Both call [`main_with`].
#![deny(missing_docs)]

mod output;
mod progress;
mod shards;
mod signals;
mod slurm;
mod status;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use distill::hub::{HubAccess, PushOptions, Round};
use distill::{CheckpointSpec, ErrorKind, ExportFormat, PlanMode, PushSpec, RunOptions};
use output::{errln, outln};
use signals::Signals;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// Exit code of any error not listed below.
const EXIT_ERROR: u8 = 1;
/// Exit code of an invalid pipeline (bad YAML, unknown step, missing column...).
const EXIT_INVALID: u8 = 3;
/// Exit code of a run whose step failed (committed work is kept; fix and re-run to resume).
const EXIT_STEP_FAILED: u8 = 4;
/// Exit code of a run that finished but could not push everything to the Hub (a later
/// `distill push` catches up).
const EXIT_PUSH_BEHIND: u8 = 5;
/// Exit code of a run stopped by its spending budget (resume with a larger one).
const EXIT_BUDGET: u8 = 6;
/// Exit code of a global run whose global step waits for shards not at its barrier yet (the
/// message names them): run them, then the global run again.
const EXIT_BEHIND: u8 = 7;
/// Exit code of `--resume-from` finding no snapshot of the run at its URL.
const EXIT_NO_SNAPSHOT: u8 = 8;
/// Exit code of `--resume-from` finding snapshots of the run, none of which verifies.
const EXIT_BAD_SNAPSHOT: u8 = 9;
/// Exit code of a bug in distill (EX_SOFTWARE): an engine invariant broken, or a panic.
const EXIT_BUG: u8 = 70;
/// Exit code of a run that ended with only provider batch jobs left (`on_batch_wait: exit`):
/// EX_TEMPFAIL, "try again later", which is what running it again later does (it collects
/// the jobs). Job schedulers and retry wrappers already read 75 that way.
const EXIT_WAITING: u8 = 75;

/// Every exit code, as the help and the README list them.
const EXIT_CODES: &str = "Exit codes: 0 ok, 1 error, 2 usage, 3 invalid pipeline, 4 a step failed, 5 run done but the Hub push is behind, 6 budget reached, 7 shards behind the global step, 8 no snapshot at --resume-from, 9 no snapshot there verifies, 70 a bug in distill, 75 waiting for provider batch jobs (run again later), 130 stopped by Ctrl-C, 143 stopped by SIGTERM";

#[derive(Parser)]
#[command(
    name = "distill",
    version,
    about = "Build datasets with LLMs; crash-proof runs on a redb log",
    after_help = EXIT_CODES
)]
struct Cli {
    /// Log level of the messages on stderr: error, warn, info, debug or trace (or a RUST_LOG
    /// filter such as `distill_llm=debug`). Default: RUST_LOG, else warn.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline, or resume it if the database holds the same pipeline.
    Run {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// The run database (created if missing). With --shard, this shard's own database
        /// (DIR/shard-I.redb); with --global, the global steps' (DIR/global.redb).
        #[arg(long, required_unless_present = "local_shards")]
        db: Option<PathBuf>,
        /// Run shard I of N (such as 0/4): the generators emit only this shard's rows, and the
        /// run stops before each global step (status at_barrier, exit 0) until the global run
        /// did it. The shard is part of the database's identity.
        #[arg(long, value_name = "I/N", conflicts_with_all = ["global", "local_shards"])]
        shard: Option<distill::ShardSpec>,
        /// With --shard: the global run's database (default: global.redb beside --db).
        #[arg(long, requires = "shard")]
        global_db: Option<PathBuf>,
        /// Run the global steps over the shards' committed rows (--shards), each once every
        /// shard reached its barrier; exit 7 naming the shards behind otherwise.
        #[arg(long, requires = "shards", conflicts_with = "local_shards")]
        global: bool,
        /// With --global: the shards' databases, a glob such as 'DIR/shard-*.redb' (quoted) or
        /// paths separated by commas.
        #[arg(long, requires = "global")]
        shards: Option<String>,
        /// Run the pipeline as N shards in N local processes, with the global steps between
        /// their rounds, in --db-dir (shard-I.redb and global.redb).
        #[arg(long, value_name = "N", requires = "db_dir",
              value_parser = clap::value_parser!(u32).range(1..=1024))]
        local_shards: Option<u32>,
        /// With --local-shards: the directory of the shards' and the global database.
        #[arg(long, requires = "local_shards")]
        db_dir: Option<PathBuf>,
        /// Worker threads for CPU steps, at most 256 (default 0: one per core).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=256))]
        workers: u16,
        /// Start a new run in the database instead of resuming (its request cache is kept, so
        /// answers already paid for are reused).
        #[arg(long)]
        new: bool,
        /// Print what the run would keep and drop of the database's progress, and change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// When a generator's input file changed since the run read it, recompute from that
        /// generator on instead of refusing.
        #[arg(long)]
        allow_changed_inputs: bool,
        /// When the run database is missing (a new machine), restore it first from the newest
        /// complete snapshot of this pipeline's run at this URL (s3://, gs://, az://, file:///,
        /// hf://datasets/...; credentials from the environment), then resume. Ignored when the
        /// database is there.
        #[arg(long, value_name = "URL")]
        resume_from: Option<String>,
    },
    /// Snapshot the run database (finished, failed or live in another process) to object
    /// storage or the Hub, as a run's `checkpoint:` section does. Credentials from the
    /// environment (AWS_*, GOOGLE_*, AZURE_*, HF_TOKEN).
    Checkpoint {
        /// The run database.
        #[arg(long)]
        db: PathBuf,
        /// Where: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX, file:///DIR or
        /// hf://datasets/NAMESPACE/NAME.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Complete snapshots kept there; older ones are deleted.
        #[arg(long, default_value_t = CheckpointSpec::DEFAULT_KEEP,
              value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
    },
    /// Write the Slurm scripts of a sharded run in --db-dir: shard.sbatch (a job array, one
    /// task per shard, --requeue), global.sbatch (the global steps) and submit.sh, which chains
    /// them per barrier with --dependency=afterok. --submit runs submit.sh.
    Slurm {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// How many shards (array tasks).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        shards: u32,
        /// The directory of the databases, scripts and logs (shared storage every node sees).
        #[arg(long)]
        db_dir: PathBuf,
        /// Slurm partition.
        #[arg(long)]
        partition: Option<String>,
        /// CPUs of each task (also its worker threads).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
        cpus_per_task: u32,
        /// Time limit of each job (Slurm's format, such as 2:00:00).
        #[arg(long)]
        time: Option<String>,
        /// Generic resources of each shard task, such as gpu:1.
        #[arg(long)]
        gres: Option<String>,
        /// The distill program the jobs run (default: this one).
        #[arg(long)]
        exe: Option<PathBuf>,
        /// Submit the jobs (runs submit.sh, which calls sbatch).
        #[arg(long)]
        submit: bool,
    },
    /// Show a pipeline's steps, edges, columns and stages.
    Info {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// A run database of the pipeline: also show its size and what it keeps of each step.
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Export the distiset: one config per leaf step, a dataset card, the pipeline and each
    /// leaf's status. Works on a finished, failed or live run.
    Export {
        /// The run database; for a sharded run, all its databases as a quoted glob
        /// ('DIR/*.redb') or a comma-separated list: one distiset, shards in order.
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
        /// The run database; for a sharded run, all its databases as a quoted glob
        /// ('DIR/*.redb') or a comma-separated list: their distiset in one commit.
        #[arg(long)]
        db: PathBuf,
        /// Dataset repository, NAMESPACE/NAME (created if missing).
        #[arg(long, value_parser = parse_repo)]
        repo: String,
        /// Create the repository public (default: private).
        #[arg(long)]
        public: bool,
        /// Branch to commit to.
        #[arg(long, default_value = PushSpec::DEFAULT_REVISION)]
        revision: String,
        /// For a live run: push once this many new rows are committed.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        every_rows: Option<u64>,
        /// For a live run: push new rows at least this often (seconds; default 60).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=PushSpec::MAX_SECS))]
        every_secs: Option<u64>,
        /// Seconds allowed for one Hub request.
        #[arg(long, default_value_t = PushSpec::DEFAULT_TIMEOUT_SECS,
              value_parser = clap::value_parser!(u64).range(1..=PushSpec::MAX_SECS))]
        timeout: u64,
        /// Seconds to keep retrying the last push before giving up.
        #[arg(long, default_value_t = PushSpec::DEFAULT_FINAL_WAIT_SECS,
              value_parser = clap::value_parser!(u64).range(0..=PushSpec::MAX_SECS))]
        wait: u64,
    },
    /// Cancel the run's open provider batch jobs (answers already collected stay in the
    /// request cache; the run's next session handles the cancelled requests as
    /// `on_batch_failure` says). API keys come from the steps' `api_key_env` variables.
    Cancel {
        /// The run database.
        #[arg(long)]
        db: PathBuf,
    },
    /// Show where a run stands (works while it runs, from another terminal).
    Status {
        /// The run database; for a sharded run, a quoted glob ('DIR/*.redb') or a
        /// comma-separated list: every shard's status, and which are behind.
        #[arg(long)]
        db: PathBuf,
        /// Print JSON instead of text (with --watch, one JSON object per line).
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

/// The signal handlers, once a command installed them.
static SIGNALS: OnceLock<Signals> = OnceLock::new();

fn parse_repo(repo: &str) -> distill::Result<String> {
    PushSpec::check_repo(repo)?;
    Ok(repo.to_owned())
}

/// Runs the command line `args` (the program's name first, as `std::env::args_os` gives it)
/// and returns the exit code. A usage error, `--help` and `--version` print and exit the
/// process, as clap does.
pub fn main_with<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    init_logging(cli.log_level.as_deref());
    let outcome = std::panic::catch_unwind(|| dispatch(cli.command));
    match outcome {
        Ok(Ok(())) => 0,
        Ok(Err(err)) if output::is_broken_pipe(&err) => 0,
        Ok(Err(err)) => {
            errln!("error: {}", message(&err));
            exit_code(&err)
        }
        Err(_) => {
            errln!(
                "error: internal error (a bug in distill; everything committed is kept, and running the same command again resumes); please report it with the message above"
            );
            EXIT_BUG
        }
    }
}

/// The error and its causes, each cause once: most messages already include their source
/// (`p.yaml: No such file or directory`), which would otherwise be printed twice.
fn message(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn init_logging(level: Option<&str>) {
    use std::io::IsTerminal;
    let filter = match level {
        Some(level) => tracing_subscriber::EnvFilter::new(level),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

fn exit_code(err: &anyhow::Error) -> u8 {
    if err.downcast_ref::<PushBehind>().is_some() {
        return EXIT_PUSH_BEHIND;
    }
    if let Some(child) = err.downcast_ref::<shards::ChildFailed>() {
        return child.code;
    }
    let kind = err
        .downcast_ref::<distill::Error>()
        .map(distill::Error::kind);
    match kind {
        Some(ErrorKind::Invalid) => EXIT_INVALID,
        Some(ErrorKind::StepFailed) => EXIT_STEP_FAILED,
        Some(ErrorKind::Budget) => EXIT_BUDGET,
        Some(ErrorKind::Waiting) => EXIT_WAITING,
        Some(ErrorKind::Behind) => EXIT_BEHIND,
        Some(ErrorKind::NoSnapshot) => EXIT_NO_SNAPSHOT,
        Some(ErrorKind::BadSnapshot) => EXIT_BAD_SNAPSHOT,
        Some(ErrorKind::Bug) => EXIT_BUG,
        Some(ErrorKind::Interrupted) => SIGNALS
            .get()
            .map_or(signals::EXIT_SIGINT, Signals::exit_code),
        _ => EXIT_ERROR,
    }
}

/// Installs the signal handlers and returns the stop flag they set.
fn stop_on_signals(what: &'static str) -> anyhow::Result<Arc<std::sync::atomic::AtomicBool>> {
    let signals = Signals::install(what).context("cannot install the signal handlers")?;
    let stop = signals.stop.clone();
    let _ = SIGNALS.set(signals);
    Ok(stop)
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run {
            pipeline,
            db,
            shard,
            global_db,
            global,
            shards,
            local_shards,
            db_dir,
            workers,
            new,
            dry_run,
            allow_changed_inputs,
            resume_from,
        } => {
            if let (Some(n), Some(dir)) = (local_shards, db_dir) {
                return shards::run_local(&pipeline, n, &dir, workers, new);
            }
            let db = db.context("--db is required")?;
            let mut options = RunOptions::new(&db);
            options.workers = usize::from(workers);
            options.new_run = new;
            options.allow_changed_inputs = allow_changed_inputs;
            if let Some(spec) = shard {
                let global_db = global_db.unwrap_or_else(|| shards::beside(&db, "global.redb"));
                options.role = distill::Role::Shard { spec, global_db };
            } else if global {
                let list = shards::expand(shards.as_deref().unwrap_or_default())?;
                options.role = distill::Role::Global { shards: list };
            }
            if dry_run {
                plan(&pipeline, &options)
            } else {
                run(&pipeline, options, resume_from.as_deref())
            }
        }
        Command::Checkpoint { db, to, keep } => checkpoint(&db, &to, keep),
        Command::Info { pipeline, db } => info(&pipeline, db.as_deref()),
        Command::Slurm {
            pipeline,
            shards,
            db_dir,
            partition,
            cpus_per_task,
            time,
            gres,
            exe,
            submit,
        } => slurm::write(&slurm::SlurmOptions {
            pipeline,
            shards,
            db_dir,
            partition,
            cpus_per_task,
            time,
            gres,
            exe,
            submit,
        }),
        Command::Export { db, out, format } => export(&db, &out, format),
        Command::Status { db, json, watch } => {
            let text = db.to_string_lossy();
            if shards::is_pattern(&text) {
                status::print_many(&shards::expand(&text)?, json)
            } else {
                status::print(&db, json, watch)
            }
        }
        Command::Cancel { db } => cancel(&db),
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
            spec.every_secs = every_secs.or(every_rows
                .is_none()
                .then_some(PushSpec::DEFAULT_LIVE_EVERY_SECS));
            spec.timeout_secs = timeout;
            spec.final_wait_secs = wait;
            push(db, spec)
        }
    }
}

fn export(db: &Path, out: &Path, format: Format) -> anyhow::Result<()> {
    let format = match format {
        Format::Parquet => ExportFormat::Parquet,
        Format::Jsonl => ExportFormat::Jsonl,
    };
    let text = db.to_string_lossy();
    let distiset = if shards::is_pattern(&text) {
        let dbs = shards::expand(&text)?;
        distill::export_shards(&dbs, out, format).map_err(distill::Error::from)?
    } else {
        distill::export(db, out, format).map_err(distill::Error::from)?
    };
    outln!(
        "exported run ({}) at log position {} to {}",
        distiset.run_status,
        distiset.snapshot_log,
        out.display()
    )?;
    for leaf in distiset.leaves {
        outln!(
            "  {}: {} rows, {} -> {}",
            leaf.name,
            leaf.rows,
            leaf.status,
            leaf.files.join(", ")
        )?;
        for (column, n) in &leaf.non_finite_as_null {
            errln!(
                "warning: {}: {n} NaN or infinite value{} in column '{column}' written as null (JSON has no such numbers; Parquet float columns keep them)",
                leaf.name,
                if *n == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

fn cancel(db: &Path) -> anyhow::Result<()> {
    let cancelled = distill::cancel(db)?;
    if cancelled.is_empty() {
        outln!("{}: no open batch jobs", db.display())?;
    }
    for job in &cancelled {
        outln!("{}: batch job {} is {}", job.step, job.batch_id, job.status)?;
    }
    Ok(())
}

fn push(db: PathBuf, spec: PushSpec) -> anyhow::Result<()> {
    let text = db.to_string_lossy();
    if shards::is_pattern(&text) {
        return shards::push_all(&shards::expand(&text)?, &spec);
    }
    if let Some(shard) = distill::status(&db)?.run.shard {
        return Err(distill::Error::from(distill::EngineError::BadShard {
            detail: format!(
                "{} holds {shard} of a sharded run: push all its databases at once (distill push --db 'DIR/*.redb'), not one shard (its card would stand for the whole dataset)",
                db.display()
            ),
        })
        .into());
    }
    let stop = stop_on_signals("ending the push")?;
    let options = PushOptions {
        db,
        spec,
        access: HubAccess::from_env(),
        stop,
        poll: std::time::Duration::from_millis(500),
    };
    let outcome = distill::hub::push(&options, |status, round| {
        if let Round::Pushed { rows, .. } = round {
            errln!(
                "pushed {rows} rows to {} ({} on the Hub, commit {})",
                status.repo,
                status.total_rows(),
                status.last_commit.as_deref().unwrap_or("?")
            );
        }
    })
    .map_err(distill::Error::from)?;
    let status = outcome.status;
    outln!(
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
    )?;
    Ok(())
}

fn plan(path: &Path, options: &RunOptions) -> anyhow::Result<()> {
    let pipeline = distill::load_pipeline_for(path, options.role.shard_count())?;
    let plan = distill::plan(&pipeline, options).map_err(distill::Error::from)?;
    let what = match plan.mode {
        PlanMode::Fresh => "a new run database: every step starts from nothing",
        PlanMode::Restart => {
            "a new run (--new): every step starts from nothing, paid LLM answers are kept"
        }
        PlanMode::Resume => "the same pipeline: the run resumes with everything committed",
        PlanMode::Changed if !plan.drops() => {
            "the pipeline changed only in settings that change no row: the run resumes with everything committed"
        }
        PlanMode::Changed => "a changed pipeline: the run keeps what is still valid",
    };
    outln!(
        "{}: {what} (dry run: nothing changed)",
        options.db.display()
    )?;
    for step in &plan.steps {
        outln!("  {step}")?;
    }
    Ok(())
}

fn checkpoint(db: &Path, to: &str, keep: u32) -> anyhow::Result<()> {
    let done = distill::checkpoint::checkpoint(db, to, keep, &HubAccess::from_env())
        .map_err(distill::Error::from)?;
    let r = &done.report;
    outln!(
        "snapshot {} of {} at log position {} ({} cached answers, {} bytes, sha256 {}) is complete at {} under {}{}",
        r.name,
        db.display(),
        r.log_position,
        r.cache_entries,
        r.size,
        r.sha256,
        r.url,
        r.folder,
        if done.recorded {
            ""
        } else {
            " (a run holds the database, so the snapshot is not recorded in it)"
        }
    )?;
    Ok(())
}

fn run(path: &Path, mut options: RunOptions, resume_from: Option<&str>) -> anyhow::Result<()> {
    let pipeline = distill::load_pipeline_for(path, options.role.shard_count())?;
    if let Some(url) = resume_from {
        match distill::resume_from(
            &pipeline,
            &options.role,
            &options.db,
            url,
            &HubAccess::from_env(),
        )? {
            Some(restored) => {
                let r = &restored.report;
                errln!(
                    "restored {} from snapshot {} at {} (log position {}, {} cached answers); batches committed after it are computed again",
                    options.db.display(),
                    r.name,
                    r.url,
                    r.log_position,
                    r.cache_entries
                );
            }
            None => errln!(
                "{} is there: resuming it (--resume-from is used only when the run database is missing)",
                options.db.display()
            ),
        }
    }
    options.stop = stop_on_signals("finishing in-flight batches")?;
    let bars = Arc::new(progress::Bars::new(&pipeline));
    options.observer = Some(bars.clone());
    let result = distill::run(&pipeline, &options);
    bars.finish();
    let summary = result?;
    for (leaf, rows) in &summary.leaves {
        outln!("{leaf}: {rows} rows")?;
    }
    if let Some(step) = &summary.barrier {
        outln!(
            "at_barrier: {} stopped before global step '{step}'; run the global steps (distill run PIPELINE --global --db DIR/global.redb --shards 'DIR/shard-*.redb'), then this again",
            options.db.display()
        )?;
        return Ok(());
    }
    outln!(
        "run finished: {} (export with: distill export --db {} --out DIR)",
        options.db.display(),
        options.db.display()
    )?;
    if let Some(push) = summary.push {
        let committed: u64 = summary.leaves.iter().map(|(_, rows)| rows).sum();
        let pushed = push.total_rows();
        outln!(
            "pushed to {}: {pushed} of {committed} rows in {} commits",
            push.repo,
            push.commits
        )?;
        if pushed < committed || push.last_error.is_some() {
            errln!(
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
    if let Some(c) = summary.checkpoint {
        match &c.last {
            Some(last) => outln!(
                "checkpoint to {}: {} snapshots taken, last {} at log position {}",
                c.url,
                c.taken,
                last.name,
                last.log_position
            )?,
            None => outln!("checkpoint to {}: no snapshot taken", c.url)?,
        }
        if let Some(error) = &c.last_error {
            errln!("checkpoint to {}: the last attempt failed: {error}", c.url);
        }
    }
    Ok(())
}

/// The run finished, the push did not.
#[derive(Debug, thiserror::Error)]
#[error("the run finished but its push to the Hub is behind")]
struct PushBehind;

fn info(path: &Path, db: Option<&Path>) -> anyhow::Result<()> {
    let pipeline = distill::load_pipeline(path)?;
    let stored = db.map(distill::status).transpose()?;
    outln!(
        "pipeline '{}' (signature {})",
        pipeline.spec().name,
        pipeline.signature()
    )?;
    let nodes = pipeline.nodes();
    for (stage, members) in pipeline.stages().iter().enumerate() {
        outln!("stage {stage}:")?;
        for &i in members {
            let node = &nodes[i];
            let after: Vec<&str> = node.preds.iter().map(|&p| nodes[p].name()).collect();
            outln!(
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
            )?;
            if !node.is_generator() {
                outln!("    in:  {}", node.received.join(", "))?;
            }
            outln!("    out: {}", node.columns.join(", "))?;
            let kept = if pipeline.reclaims(i) {
                "deleted once its consumers are past them"
            } else {
                "kept"
            };
            match stored
                .as_ref()
                .and_then(|s| s.run.steps.iter().find(|s| s.step == node.name()))
            {
                Some(s) => outln!(
                    "    batches: {kept}; in the database: {} committed, {} reclaimed",
                    s.batches,
                    s.reclaimed_batches
                )?,
                None => outln!("    batches: {kept}")?,
            }
        }
    }
    let leaves: Vec<&str> = pipeline.leaves().iter().map(|&i| nodes[i].name()).collect();
    outln!("leaves: {}", leaves.join(", "))?;
    if let (Some(db), Some(s)) = (db, &stored) {
        outln!(
            "database {}: {:.1} MB, format {}, {} cached answers",
            db.display(),
            s.run.db_bytes as f64 / 1e6,
            s.run.format_version,
            s.run.cached_answers
        )?;
    }
    if let Some(push) = &pipeline.spec().push {
        let mut when: Vec<String> = Vec::new();
        when.extend(push.every_rows.map(|n| format!("every {n} rows")));
        when.extend(push.every_secs.map(|t| format!("every {t} s")));
        when.push("at the end".into());
        outln!(
            "push: {} ({}, {}), {}",
            push.repo,
            push.revision,
            if push.private { "private" } else { "public" },
            when.join(", ")
        )?;
    }
    if let Some(checkpoint) = &pipeline.spec().checkpoint {
        let mut when: Vec<String> = Vec::new();
        when.extend(checkpoint.period_secs().map(|t| format!("every {t} s")));
        when.extend(
            checkpoint
                .every_batches
                .map(|n| format!("every {n} batches")),
        );
        when.push("at the end".into());
        outln!(
            "checkpoint: {} under {}, {}, keeping {}",
            checkpoint.to,
            distill::identity(&pipeline, &distill::Role::Single).folder(),
            when.join(", "),
            checkpoint.keep
        )?;
    }
    Ok(())
}
