//! `load_disk`: a dataset folder written by `datasets`' `save_to_disk`.
//!
//! A `Dataset` folder holds `state.json` (its Arrow files in order, `_data_files`),
//! `dataset_info.json` and the files (`data-00000-of-00001.arrow`, Arrow IPC stream format).
//! A `DatasetDict` folder holds `dataset_dict.json` (`{"splits": [...]}`) and one such folder
//! per split.

use super::ipc_file::{IpcRows, ipc_schema};
use super::parquet_file::select_columns;
use super::{Prefixed, check_columns};
use crate::error::{Error, Result};
use distill_engine::input::{self, FileRows, FileSet, RowStream};
use distill_engine::step::{
    BuildContext, Generator, Lifecycle, StepKind, StepResult, parse_params,
};
use distill_storage::Row;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskParams {
    path: String,
    #[serde(default)]
    split: Option<String>,
    #[serde(default)]
    columns: Option<Vec<String>>,
    #[serde(default)]
    limit: Option<u64>,
}

fn bad(path: &Path, detail: impl Into<String>) -> Error {
    Error::BadDatasetFolder {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| bad(path, format!("not valid JSON: {e}")))
}

/// The folder of the split to read: `dir` itself for a `Dataset`, `dir/SPLIT` for a
/// `DatasetDict` (`split`, else `train`, else its only split).
fn split_dir(dir: &Path, split: Option<&str>) -> Result<PathBuf> {
    let dict = dir.join("dataset_dict.json");
    if !dict.exists() {
        if !dir.join("state.json").exists() {
            return Err(bad(
                dir,
                "not a folder written by datasets' save_to_disk (no state.json nor dataset_dict.json)",
            ));
        }
        if let Some(split) = split {
            let state = read_json(&dir.join("state.json"))?;
            if let Some(own) = state["_split"].as_str()
                && own != split
            {
                return Err(bad(
                    dir,
                    format!("holds one Dataset of split '{own}', not '{split}'"),
                ));
            }
        }
        return Ok(dir.to_path_buf());
    }
    let splits: Vec<String> = read_json(&dict)?["splits"]
        .as_array()
        .ok_or_else(|| bad(&dict, "has no `splits` list"))?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    let chosen = match split {
        Some(s) => s.to_owned(),
        None if splits.iter().any(|s| s == "train") => "train".to_owned(),
        None if splits.len() == 1 => splits[0].clone(),
        None => {
            return Err(bad(
                dir,
                format!(
                    "a DatasetDict with splits [{}] and no `train`: set `split`",
                    splits.join(", ")
                ),
            ));
        }
    };
    if !splits.contains(&chosen) {
        return Err(bad(
            dir,
            format!(
                "has no split '{chosen}' (its splits: {})",
                splits.join(", ")
            ),
        ));
    }
    Ok(dir.join(chosen))
}

/// The Arrow files of a `Dataset` folder, in the order of its `state.json`.
fn data_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let state_path = dir.join("state.json");
    let state = read_json(&state_path)?;
    if !state["_indices_data_files"].is_null() && state.get("_indices_data_files").is_some() {
        return Err(bad(
            &state_path,
            "the dataset has an indices mapping (a select or shuffle not flattened); save it with `flatten_indices()` first",
        ));
    }
    let files: Vec<PathBuf> = state["_data_files"]
        .as_array()
        .ok_or_else(|| bad(&state_path, "has no `_data_files` list"))?
        .iter()
        .map(|f| {
            f["filename"]
                .as_str()
                .map(|name| dir.join(name))
                .ok_or_else(|| bad(&state_path, "a `_data_files` entry has no `filename`"))
        })
        .collect::<Result<_>>()?;
    if files.is_empty() {
        return Err(bad(&state_path, "lists no data file"));
    }
    Ok(files)
}

/// The Arrow files of one split.
struct DiskFiles {
    files: Vec<PathBuf>,
    columns: Vec<String>,
}

impl FileSet for DiskFiles {
    fn count(&self) -> usize {
        self.files.len()
    }

    fn open(
        &mut self,
        index: usize,
        start: u64,
        _wanted: Option<u64>,
    ) -> StepResult<(Box<dyn FileRows>, u64)> {
        let mut rows = IpcRows::open(&self.files[index], &self.columns)?;
        let (skipped, first) = rows.skip(start)?;
        Ok((Box::new(Prefixed { first, rest: rows }), skipped))
    }
}

/// `load_disk`: Parameters: `path` (the folder `save_to_disk` wrote), `split` (of a
/// `DatasetDict`; default `train`, or its only split), `columns`, `limit`. A resumed run
/// passes over the committed rows by decoding their record batches (Arrow IPC streams have no
/// index), without converting them.
pub struct LoadDisk {
    columns: Vec<String>,
    stream: RowStream<DiskFiles>,
}

/// Builds a `load_disk` generator: finds the split's files and reads the first one's schema.
pub fn load_disk(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let p: DiskParams = parse_params(params)?;
    check_columns(p.columns.as_deref())?;
    let dir = ctx.resolve(&p.path);
    let split = split_dir(&dir, p.split.as_deref())?;
    let files = data_files(&split)?;
    let schema = ipc_schema(&files[0])?;
    let indices = select_columns(&files[0], &schema, p.columns.as_deref())?;
    let columns: Vec<String> = indices
        .iter()
        .map(|&i| schema.field(i).name().clone())
        .collect();
    for file in &files[1..] {
        select_columns(file, &ipc_schema(file)?, Some(&columns))?;
    }
    Ok(StepKind::Generator(Box::new(LoadDisk {
        columns: columns.clone(),
        stream: RowStream::new(DiskFiles { files, columns }, p.limit),
    })))
}

impl Lifecycle for LoadDisk {
    fn unload(&mut self) {
        self.stream.close();
    }
}

impl Generator for LoadDisk {
    fn outputs(&self) -> Vec<String> {
        self.columns.clone()
    }

    fn fingerprint(&self) -> StepResult<Option<String>> {
        Ok(Some(input::fingerprint(&self.stream.set().files, |_| {
            Ok(String::new())
        })?))
    }

    fn row_count(&mut self) -> StepResult<Option<u64>> {
        Ok(Some(self.stream.total_rows()?))
    }

    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        self.stream.read(offset, count)
    }
}
