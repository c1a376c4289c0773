//! `load_hub`: rows of a dataset on the Hugging Face Hub.
//!
//! At build, the revision is resolved to its commit, the files of that commit are listed, the
//! card's `configs` (or the conventional layout) say which files hold the split, and the first
//! file is downloaded to learn the columns. Rows then stream file after file ([`files`]); the
//! commit is part of the step's input fingerprint, which the run log records, so a resumed run
//! reads that commit again ([`Generator::pin`]) even after the branch moved on.

mod cache;
mod files;
mod layout;

pub use cache::Cache;
pub use layout::{Layout, select};

use crate::HubAccess;
use crate::client::HubClient;
use crate::error::Error;
use distill_distiset::read::{ParquetFile, check_columns, ipc_schema, select_columns};
use distill_engine::Registry;
use distill_engine::input::{COLUMN_SCAN_ROWS, columns_of_rows};
use distill_engine::input::{CsvRows, JsonlRows, RowReader, RowStream, has_extension};
use distill_engine::step::{
    BuildContext, Generator, InputUnreachable, Lifecycle, StepError, StepKind, StepResult,
    parse_params,
};
use distill_storage::Row;
use files::HubFiles;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Registers `load_hub`.
pub fn register(registry: &mut Registry) {
    registry.register("load_hub", load_hub);
}

/// The format of a data file, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.parquet`.
    Parquet,
    /// `.arrow` (Arrow IPC).
    Arrow,
    /// `.jsonl`, `.json`, `.ndjson` (JSON Lines), also `.gz` or `.zst`.
    Jsonl,
    /// `.csv` (or `.tsv`, with its delimiter), also `.gz` or `.zst`.
    Csv(u8),
}

impl Format {
    /// The format of the file at `path`, when it is a data file.
    pub fn of(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        let p = Path::new(&lower);
        if lower.ends_with(".parquet") {
            Some(Format::Parquet)
        } else if lower.ends_with(".arrow") {
            Some(Format::Arrow)
        } else if has_extension(p, &["jsonl", "json", "ndjson"]) {
            Some(Format::Jsonl)
        } else if has_extension(p, &["csv"]) {
            Some(Format::Csv(b','))
        } else if has_extension(p, &["tsv"]) {
            Some(Format::Csv(b'\t'))
        } else {
            None
        }
    }
}

fn default_split() -> String {
    "train".to_owned()
}

fn default_revision() -> String {
    "main".to_owned()
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct HubParams {
    repo: String,
    #[serde(default)]
    config: Option<String>,
    #[serde(default = "default_split")]
    split: String,
    #[serde(default = "default_revision")]
    revision: String,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<u64>,
}

/// Attempts per Hub call of the loader, and the time one attempt (or one read of a download)
/// may take.
const ATTEMPTS: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(120);

/// `load_hub`: Parameters: `repo` (`NAMESPACE/NAME`), `config` (default: the card's default
/// config, or its only one), `split` (default `train`), `revision` (default `main`), `columns`,
/// `limit`. `HF_TOKEN` is sent for private repositories (never stored), `HF_ENDPOINT` names
/// the Hub, `DISTILL_CACHE` the download cache.
pub struct LoadHub {
    params: HubParams,
    config: String,
    columns: Vec<String>,
    stream: RowStream<HubFiles>,
}

/// A repository name the Hub accepts and a cache path can hold.
fn check_repo(repo: &str) -> StepResult<()> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((ns, name)) if part_ok(ns) && part_ok(name) => Ok(()),
        _ => Err(format!("`repo` '{repo}' is not of the form NAMESPACE/NAME").into()),
    }
}

/// A Hub failure at build: a bad config or split is a bad parameter; anything else means the
/// Hub (or the cache) could not be reached.
fn at_build(e: Error) -> StepError {
    match e {
        Error::Layout { .. } => e.into(),
        other => Box::new(InputUnreachable(other.into())),
    }
}

/// Builds a `load_hub` generator (see [`LoadHub`]).
pub fn load_hub(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: HubParams = parse_params(params)?;
    check_repo(&p.repo)?;
    check_columns(p.columns.as_deref())?;
    let access = HubAccess::from_env();
    let client = HubClient::new(
        &access.endpoint,
        access.token.clone(),
        crate::hub_retry_policy(ATTEMPTS, TIMEOUT),
    )
    .map_err(at_build)?;
    let (config, columns, files) = resolve(&p, Arc::new(client), Cache::from_env(), &p.revision)?;
    Ok(StepKind::Generator(Box::new(LoadHub {
        stream: RowStream::new(files, p.limit),
        params: p,
        config,
        columns,
    })))
}

/// `p`'s data files at `revision`, and their columns (from the first file).
fn resolve(
    p: &HubParams,
    client: Arc<HubClient>,
    cache: Cache,
    revision: &str,
) -> StepResult<(String, Vec<String>, HubFiles)> {
    let scope = format!(
        "config {}, split {}, revision {revision}",
        p.config.as_deref().unwrap_or("(default)"),
        p.split
    );
    let load = |source| Error::Load {
        repo: p.repo.clone(),
        scope: scope.clone(),
        source,
    };
    let sha = client
        .revision_sha(&p.repo, revision)
        .map_err(|e| at_build(load(e)))?;
    let tree = client.tree(&p.repo, &sha).map_err(|e| at_build(load(e)))?;
    let card = match tree.iter().find(|f| f.path == "README.md") {
        Some(_) => Some(
            client
                .read_file(&p.repo, &sha, "README.md")
                .map_err(|e| at_build(load(e)))?,
        ),
        None => None,
    };
    let card = card.map(|c| String::from_utf8_lossy(&c).into_owned());
    let layout = select(
        &p.repo,
        card.as_deref(),
        &tree,
        p.config.as_deref(),
        &p.split,
    )
    .map_err(at_build)?;
    let format = Format::of(&layout.files[0].path).unwrap_or(Format::Parquet);
    if let Some(other) = layout
        .files
        .iter()
        .find(|f| Format::of(&f.path) != Some(format))
    {
        return Err(Error::Layout {
            repo: p.repo.clone(),
            detail: format!(
                "config '{}', split '{}' mixes formats ({} and {}); load_hub reads one format per split",
                layout.config, layout.split, layout.files[0].path, other.path
            ),
        }
        .into());
    }
    let mut files = HubFiles::new(client, cache, p.repo.clone(), sha, layout.files, format);
    let first = files.local(0).map_err(at_build)?;
    let columns =
        columns_of(&first, format, p.columns.as_deref()).map_err(|source| Error::DataFile {
            repo: p.repo.clone(),
            path: files.files[0].path.clone(),
            source,
        })?;
    files.columns = columns.clone();
    Ok((layout.config, columns, files))
}

/// The columns of the local data file `path`: all, or those of `wanted` (which must exist).
fn columns_of(path: &Path, format: Format, wanted: Option<&[String]>) -> StepResult<Vec<String>> {
    let all: Vec<String> = match format {
        Format::Parquet => return Ok(ParquetFile::open(path, wanted)?.columns()),
        Format::Arrow => {
            let schema = ipc_schema(path)?;
            let indices = select_columns(path, &schema, wanted)?;
            return Ok(indices
                .iter()
                .map(|&i| schema.field(i).name().clone())
                .collect());
        }
        Format::Csv(delimiter) => CsvRows::open(path, delimiter)?.columns().to_vec(),
        Format::Jsonl => {
            let mut rows = JsonlRows::open(path)?;
            let mut first: Vec<Row> = Vec::new();
            while first.len() < COLUMN_SCAN_ROWS {
                match rows.read_row()? {
                    Some(row) => first.push(row),
                    None => break,
                }
            }
            columns_of_rows(&first)
        }
    };
    match wanted {
        None => Ok(all),
        Some(wanted) => {
            if let Some(missing) = wanted.iter().find(|c| !all.contains(c)) {
                return Err(format!(
                    "{}: has no column '{missing}' (its columns: {})",
                    path.display(),
                    all.join(", ")
                )
                .into());
            }
            Ok(wanted.to_vec())
        }
    }
}

impl LoadHub {
    fn sha(&self) -> &str {
        &self.stream.set().sha
    }
}

/// The commit named in a `load_hub` fingerprint.
fn recorded_sha<'a>(repo: &str, recorded: &'a str) -> Option<&'a str> {
    let rest = recorded.strip_prefix(&format!("hub {repo} at "))?;
    rest.split(',').next()
}

impl Lifecycle for LoadHub {
    fn unload(&mut self) {
        self.stream.close();
    }
}

impl Generator for LoadHub {
    fn outputs(&self) -> Vec<String> {
        self.columns.clone()
    }

    fn fingerprint(&self) -> StepResult<Option<String>> {
        Ok(Some(format!(
            "hub {} at {}, config {}, split {}: {} files",
            self.params.repo,
            self.sha(),
            self.config,
            self.params.split,
            self.stream.set().files.len()
        )))
    }

    fn pin(&mut self, recorded: &str) -> StepResult<()> {
        let Some(sha) = recorded_sha(&self.params.repo, recorded) else {
            return Ok(());
        };
        if sha == self.sha() {
            return Ok(());
        }
        tracing::info!(repo = %self.params.repo, commit = sha, "reading the commit the run recorded");
        let set = self.stream.set();
        let (client, cache) = (set.client.clone(), set.cache.clone());
        let (config, columns, files) = resolve(&self.params, client, cache, sha)?;
        if columns != self.columns {
            return Err(format!(
                "the run read {} at commit {sha}, whose columns [{}] differ from [{}] at {}: run with --new to read the newer revision",
                self.params.repo,
                columns.join(", "),
                self.columns.join(", "),
                self.params.revision
            )
            .into());
        }
        self.config = config;
        *self.stream.set_mut() = files;
        Ok(())
    }

    fn row_count(&mut self) -> StepResult<Option<u64>> {
        Ok(Some(self.stream.total_rows()?))
    }

    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        self.stream.read(offset, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name() {
        assert_eq!(Format::of("data/train-0.parquet"), Some(Format::Parquet));
        assert_eq!(Format::of("a/B.JSONL.GZ"), Some(Format::Jsonl));
        assert_eq!(Format::of("x.json.zst"), Some(Format::Jsonl));
        assert_eq!(Format::of("x.tsv"), Some(Format::Csv(b'\t')));
        assert_eq!(Format::of("x.arrow"), Some(Format::Arrow));
        assert_eq!(Format::of("README.md"), None);
        assert_eq!(Format::of("x.parquet.gz"), None);
    }

    #[test]
    fn the_recorded_commit_is_read_back_from_the_fingerprint() {
        let recorded = "hub ns/r at 0123abcd, config default, split train: 2 files";
        assert_eq!(recorded_sha("ns/r", recorded), Some("0123abcd"));
        assert_eq!(recorded_sha("ns/other", recorded), None);
        assert_eq!(recorded_sha("ns/r", "12 bytes, modified at 5 ns"), None);
    }

    #[test]
    fn repository_names_are_checked() {
        assert!(check_repo("ns/name.v2").is_ok());
        for bad in ["name", "ns/", "../x", "ns/..", "ns/a/b", "ns/na me"] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
    }
}
