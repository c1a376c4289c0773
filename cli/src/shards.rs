//! Sharded runs from the command line: database lists (`'DIR/shard-*.redb'`) and
//! `--local-shards N`, which runs the shards and the global steps as local processes.

use crate::output::{errln, outln};
use anyhow::Context;
use distill::RunStatus;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A child process of `--local-shards` that failed; the command exits with its code.
#[derive(Debug, thiserror::Error)]
#[error("{what} exited with code {code}")]
pub struct ChildFailed {
    /// Which process, and its database.
    pub what: String,
    /// Its exit code (1 when it died of a signal).
    pub code: u8,
}

/// `file` in the directory of `db`.
pub fn beside(db: &Path, file: &str) -> PathBuf {
    db.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from(file), |dir| dir.join(file))
}

/// Whether `text` is a glob pattern rather than a path.
pub fn is_pattern(text: &str) -> bool {
    text.contains(['*', '?', '[']) || text.contains(',')
}

/// The databases `list` names: paths and glob patterns separated by commas, each pattern's
/// matches sorted; an error when one matches nothing.
pub fn expand(list: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.contains(['*', '?', '[']) {
            let mut found: Vec<PathBuf> = glob::glob(part)
                .with_context(|| format!("bad database pattern '{part}'"))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("cannot list '{part}'"))?;
            if found.is_empty() {
                anyhow::bail!("no database matches '{part}'");
            }
            found.sort();
            out.extend(found);
        } else {
            out.push(PathBuf::from(part));
        }
    }
    if out.is_empty() {
        anyhow::bail!("no database given");
    }
    Ok(out)
}

/// How to run this program again: the `distill` binary, or, inside the Python package (the
/// process is the Python interpreter), `python -m distill._cli`.
pub fn this_program() -> anyhow::Result<(PathBuf, Vec<String>)> {
    let exe = std::env::current_exe().context("cannot find the distill program")?;
    let python = exe
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("python"));
    let prefix = if python {
        vec!["-m".to_owned(), "distill._cli".to_owned()]
    } else {
        Vec::new()
    };
    Ok((exe, prefix))
}

fn shard_db(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("shard-{index}.redb"))
}

/// Runs `pipeline` as `n` shards in local processes (this program), in rounds: every shard
/// to its end or its next barrier, then the global run, until every shard finished.
pub fn run_local(
    pipeline: &Path,
    n: u32,
    dir: &Path,
    workers: u16,
    new: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stop = crate::stop_on_signals("stopping the shards")?;
    let (exe, prefix) = this_program()?;
    let global = dir.join("global.redb");
    let dbs: Vec<PathBuf> = (0..n).map(|i| shard_db(dir, i)).collect();
    let list = dbs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut round = 0;
    loop {
        let mut children = Vec::new();
        for (i, db) in dbs.iter().enumerate() {
            let mut cmd = Command::new(&exe);
            cmd.args(&prefix)
                .arg("run")
                .arg(pipeline)
                .arg("--db")
                .arg(db)
                .arg("--shard")
                .arg(format!("{i}/{n}"))
                .arg("--global-db")
                .arg(&global)
                .arg("--workers")
                .arg(workers.to_string());
            if new && round == 0 {
                cmd.arg("--new");
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start shard {i}/{n}"))?;
            children.push((format!("shard {i}/{n} ({})", db.display()), child));
        }
        wait_all(children, &stop)?;
        let mut at_barrier = 0;
        for db in &dbs {
            let status = distill::status(db)?;
            if status.run.status == RunStatus::AtBarrier {
                at_barrier += 1;
            }
        }
        if at_barrier == 0 {
            break;
        }
        let mut cmd = Command::new(&exe);
        cmd.args(&prefix)
            .arg("run")
            .arg(pipeline)
            .arg("--global")
            .arg("--db")
            .arg(&global)
            .arg("--shards")
            .arg(&list)
            .arg("--workers")
            .arg(workers.to_string());
        if new && round == 0 {
            cmd.arg("--new");
        }
        let child = cmd.spawn().context("cannot start the global run")?;
        wait_all(
            vec![(format!("global run ({})", global.display()), child)],
            &stop,
        )?;
        round += 1;
    }
    outln!(
        "{n} shards finished in {}; export with: distill export --db '{}' --out DIR",
        dir.display(),
        dir.join("*.redb").display()
    )?;
    Ok(())
}

/// Waits for every child; on a stop (Ctrl-C) kills them (they resume exactly), and fails
/// with the first failing child's exit code.
fn wait_all(
    mut children: Vec<(String, Child)>,
    stop: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    let mut failed: Option<ChildFailed> = None;
    while !children.is_empty() {
        if stop.load(Ordering::SeqCst) {
            for (_, child) in &mut children {
                let _ = child.kill();
                let _ = child.wait();
            }
            return Err(distill::Error::from(distill::EngineError::Interrupted).into());
        }
        let mut i = 0;
        while i < children.len() {
            if let Some(status) = children[i].1.try_wait()? {
                let (what, _) = children.remove(i);
                if !status.success() {
                    let code = status.code().map_or(1, |c| u8::try_from(c).unwrap_or(1));
                    errln!("{what} exited with code {code}");
                    failed.get_or_insert(ChildFailed { what, code });
                }
            } else {
                i += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match failed {
        Some(f) => Err(f.into()),
        None => Ok(()),
    }
}

/// `distill push` of a sharded run (`--db 'DIR/*.redb'`): the distiset of all its databases
/// (as `distill export` writes it), in one Hub commit. Its files replace those of an earlier
/// push of the run; content already on the Hub is not uploaded again (LFS by sha256).
pub fn push_all(dbs: &[PathBuf], spec: &distill::PushSpec) -> anyhow::Result<()> {
    let dir = dbs[0]
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = dir.join(".distill-push");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    let distiset = distill::export_shards(dbs, &staging, distill::ExportFormat::Parquet)
        .map_err(distill::Error::from)?;
    let mut files = Vec::new();
    for path in &distiset.files {
        let bytes = std::fs::read(staging.join(path))
            .with_context(|| format!("cannot read {}", staging.join(path).display()))?;
        files.push(distill::hub::UploadFile {
            path: path.clone(),
            bytes,
        });
    }
    let _ = std::fs::remove_dir_all(&staging);
    let client = distill::hub::HubAccess::from_env()
        .client(spec)
        .map_err(distill::Error::from)?;
    client
        .create_repo(&spec.repo, spec.private)
        .map_err(distill::Error::from)?;
    let summary = format!(
        "distill: {} ({} databases of a sharded run)",
        distiset.pipeline_name,
        dbs.len()
    );
    let commit = client
        .commit(&spec.repo, &spec.revision, &summary, &files, &[])
        .map_err(distill::Error::from)?;
    let rows: Vec<String> = distiset
        .leaves
        .iter()
        .map(|l| format!("{}: {}", l.name, l.rows))
        .collect();
    outln!(
        "pushed the distiset of {} databases ({}) to {} in one commit {commit} ({})",
        dbs.len(),
        distiset.run_status,
        spec.repo,
        rows.join(", ")
    )?;
    Ok(())
}
