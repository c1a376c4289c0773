//! `distill slurm`: the sbatch scripts of a sharded run, and the chain that submits them.
//!
//! Three files in the database directory: `shard.sbatch` (a job array, one task per shard,
//! `--requeue`; the shard is `$SLURM_ARRAY_TASK_ID`), `global.sbatch` (the global steps), and
//! `submit.sh`, which submits the array, then per barrier (stage with a global step) the
//! global job after it (`--dependency=afterok`) and the next array round after that. A shard
//! stops at a barrier with exit 0, so `afterok` holds; a requeued or re-run task resumes its
//! shard's database.

use crate::output::outln;
use anyhow::Context;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the scripts run and where.
pub struct SlurmOptions {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// How many shards.
    pub shards: u32,
    /// The databases' directory (shared storage every node sees).
    pub db_dir: PathBuf,
    /// `--partition`, if any.
    pub partition: Option<String>,
    /// `--cpus-per-task` of each shard and of the global job.
    pub cpus_per_task: u32,
    /// `--time`, if any.
    pub time: Option<String>,
    /// `--gres` of each shard (`gpu:1`), if any.
    pub gres: Option<String>,
    /// The `distill` program the jobs run (default: this one).
    pub exe: Option<PathBuf>,
    /// Submit with sbatch once written.
    pub submit: bool,
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

/// Single-quoted for the shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn header(o: &SlurmOptions, name: &str, log: &str) -> String {
    let mut h = String::from("#!/bin/bash\n");
    let _ = writeln!(h, "#SBATCH --job-name={name}");
    let _ = writeln!(h, "#SBATCH --output={log}");
    let _ = writeln!(h, "#SBATCH --requeue");
    // A requeued task appends to its log: both sessions' messages stay.
    let _ = writeln!(h, "#SBATCH --open-mode=append");
    let _ = writeln!(h, "#SBATCH --cpus-per-task={}", o.cpus_per_task);
    if let Some(p) = &o.partition {
        let _ = writeln!(h, "#SBATCH --partition={p}");
    }
    if let Some(t) = &o.time {
        let _ = writeln!(h, "#SBATCH --time={t}");
    }
    h
}

/// Writes the scripts (and submits them with `submit`).
pub fn write(o: &SlurmOptions) -> anyhow::Result<()> {
    let pipeline = distill::load_pipeline(&o.pipeline)?;
    // A round of shards ends before each stage whose global steps take rows the shards
    // computed; a global step right after another one runs in the same global job.
    let nodes = pipeline.nodes();
    let barriers = pipeline
        .stages()
        .iter()
        .filter(|members| {
            members.iter().any(|&i| {
                nodes[i].is_global() && nodes[i].preds.iter().any(|&p| !nodes[p].is_global())
            })
        })
        .count();
    std::fs::create_dir_all(o.db_dir.join("logs"))
        .with_context(|| format!("cannot create {}", o.db_dir.display()))?;
    let dir = absolute(&o.db_dir)?;
    let file = absolute(&o.pipeline)?;
    let exe = match &o.exe {
        Some(exe) => quote(&exe.display().to_string()),
        None => {
            let (exe, prefix) = crate::shards::this_program()?;
            let mut words = vec![quote(&exe.display().to_string())];
            words.extend(prefix.iter().map(|w| quote(w)));
            words.join(" ")
        }
    };
    let (exe, file, dir_text) = (
        exe,
        quote(&file.display().to_string()),
        dir.display().to_string(),
    );
    let name = &pipeline.spec().name;
    let n = o.shards;
    let shard_db = format!("{dir_text}/shard-${{SLURM_ARRAY_TASK_ID}}.redb");

    let mut shard = header(
        o,
        &format!("{name}-shard"),
        &format!("{dir_text}/logs/shard-%A_%a.out"),
    );
    let _ = writeln!(shard, "#SBATCH --array=0-{}", n - 1);
    if let Some(g) = &o.gres {
        let _ = writeln!(shard, "#SBATCH --gres={g}");
    }
    let _ = writeln!(
        shard,
        "# One shard of {n}: its rows, up to the next global step (exit 0, status at_barrier)\n\
         # or its end. Requeued or re-run, it resumes from its database.\n\
         set -euo pipefail\n\
         exec {exe} run {file} --db \"{shard_db}\" --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\" \\\n  \
         --global-db {} --workers \"${{SLURM_CPUS_PER_TASK:-0}}\"",
        quote(&format!("{dir_text}/global.redb")),
    );
    let list: Vec<String> = (0..n)
        .map(|i| format!("{dir_text}/shard-{i}.redb"))
        .collect();
    let mut global = header(
        o,
        &format!("{name}-global"),
        &format!("{dir_text}/logs/global-%j.out"),
    );
    let _ = writeln!(
        global,
        "# The global steps over every shard's committed rows (exit 7 if a shard is behind).\n\
         set -euo pipefail\n\
         exec {exe} run {file} --global --db {} --shards {} \\\n  \
         --workers \"${{SLURM_CPUS_PER_TASK:-0}}\"",
        quote(&format!("{dir_text}/global.redb")),
        quote(&list.join(",")),
    );
    let mut submit = String::from(
        "#!/bin/bash\n# Submits the shards' job array, then per barrier the global job and the next\n\
         # array round, each after the previous one succeeded (afterok).\nset -euo pipefail\n",
    );
    let _ = writeln!(submit, "cd {}", quote(&dir_text));
    let _ = writeln!(submit, "job=$(sbatch --parsable shard.sbatch)");
    let _ = writeln!(submit, "echo \"shards round 0: job $job\"");
    for round in 1..=barriers {
        let _ = writeln!(
            submit,
            "job=$(sbatch --parsable --dependency=afterok:${{job%%;*}} global.sbatch)\n\
             echo \"global {round}: job $job\"\n\
             job=$(sbatch --parsable --dependency=afterok:${{job%%;*}} shard.sbatch)\n\
             echo \"shards round {round}: job $job\""
        );
    }
    let write = |file: &str, text: &str| -> anyhow::Result<()> {
        let path = dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
        Ok(())
    };
    write("shard.sbatch", &shard)?;
    write("global.sbatch", &global)?;
    write("submit.sh", &submit)?;
    outln!(
        "wrote {dir_text}/shard.sbatch (array of {n}), global.sbatch and submit.sh ({barriers} barrier{})",
        if barriers == 1 { "" } else { "s" }
    )?;
    if o.submit {
        let status = std::process::Command::new("bash")
            .arg(dir.join("submit.sh"))
            .status()
            .context("cannot run submit.sh (is sbatch installed?)")?;
        anyhow::ensure!(status.success(), "submit.sh failed ({status})");
    } else {
        outln!("submit with: bash {dir_text}/submit.sh (or distill slurm ... --submit)")?;
    }
    Ok(())
}
