//! Which files a path parameter names (a file, a directory, a glob, or a list of them), how to
//! open one (decompressing `.gz` and `.zst` by extension), and a fingerprint of a set of files
//! that reads none of their data.

use crate::step::{BuildContext, StepResult};
use serde::Deserialize;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// A `path` parameter: one path or a list of them. Each is a file, a directory (its files with
/// one of the generator's extensions, sorted) or a glob (`data/*.jsonl`, matches sorted).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Paths {
    /// One path or glob.
    One(String),
    /// Several, read in the order given.
    Many(Vec<String>),
}

impl Paths {
    fn items(&self) -> Vec<&str> {
        match self {
            Paths::One(p) => vec![p.as_str()],
            Paths::Many(ps) => ps.iter().map(String::as_str).collect(),
        }
    }
}

/// Whether `text` holds a glob metacharacter.
fn is_glob(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Whether the file name ends with one of `extensions` (`jsonl` matches `x.jsonl`,
/// `x.jsonl.gz` and `x.jsonl.zst`).
pub fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let name = strip_compression(&name);
    extensions
        .iter()
        .any(|ext| name.ends_with(&format!(".{ext}")))
}

fn strip_compression(name: &str) -> &str {
    name.strip_suffix(".gz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(name)
}

/// The files `paths` names, resolved against the pipeline's directory: each path as given, a
/// directory's files whose names end with one of `extensions` (compressed or not) in sorted
/// order, a glob's matches in sorted order. A directory or glob that matches nothing, or a
/// missing file, is an error naming it.
pub fn expand(paths: &Paths, ctx: &BuildContext, extensions: &[&str]) -> StepResult<Vec<PathBuf>> {
    let items = paths.items();
    if items.is_empty() {
        return Err("`path` is an empty list; name at least one file".into());
    }
    let mut files = Vec::new();
    for item in items {
        let found = expand_one(item, ctx, extensions)?;
        files.extend(found);
    }
    Ok(files)
}

fn expand_one(item: &str, ctx: &BuildContext, extensions: &[&str]) -> StepResult<Vec<PathBuf>> {
    if is_glob(item) {
        let base = if Path::new(item).is_absolute() {
            String::new()
        } else {
            let dir = ctx.base_dir.to_string_lossy();
            match dir.as_ref() {
                "" => String::new(),
                d => format!("{}/", glob::Pattern::escape(d.trim_end_matches('/'))),
            }
        };
        let pattern = format!("{base}{item}");
        let mut found: Vec<PathBuf> = glob::glob(&pattern)
            .map_err(|e| format!("`path` '{item}' is not a valid glob: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        found.sort();
        if found.is_empty() {
            return Err(format!("no file matches '{item}' (looked for {pattern})").into());
        }
        return Ok(found);
    }
    let path = ctx.resolve(item);
    if path.is_dir() {
        let entries = std::fs::read_dir(&path)
            .map_err(|e| format!("cannot read directory {}: {e}", path.display()))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| format!("cannot read directory {}: {e}", path.display()))?;
            let p = entry.path();
            if p.is_file() && has_extension(&p, extensions) {
                found.push(p);
            }
        }
        found.sort();
        if found.is_empty() {
            return Err(format!(
                "directory {} holds no .{} file",
                path.display(),
                extensions.join(" or .")
            )
            .into());
        }
        return Ok(found);
    }
    std::fs::metadata(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(vec![path])
}

/// How a file is compressed, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain.
    None,
    /// `.gz` (gzip; concatenated members are read in turn).
    Gzip,
    /// `.zst` (Zstandard; concatenated frames are read in turn).
    Zstd,
}

impl Compression {
    /// The compression of `path`, by extension.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("gz") => Compression::Gzip,
            Some(e) if e.eq_ignore_ascii_case("zst") => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// Opens `path` for reading, decompressed when its extension says so. The error names the file.
pub fn open_decoded(path: &Path) -> StepResult<Box<dyn BufRead + Send + Sync>> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let reader: Box<dyn Read + Send + Sync> = match Compression::of(path) {
        Compression::None => return Ok(Box::new(BufReader::with_capacity(1 << 16, file))),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(file))),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::new(file)
                .map_err(|e| format!("cannot read {} as zstd: {e}", path.display()))?,
        ),
    };
    Ok(Box::new(BufReader::with_capacity(1 << 16, reader)))
}

/// A file's size and modification time in nanoseconds.
pub fn size_and_mtime(path: &Path) -> StepResult<(u64, u128)> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((meta.len(), modified))
}

/// A fingerprint of `files` from their names, sizes and modification times (nothing is read);
/// `extra` adds what each file's reader knows cheaply (a Parquet footer's hash, say). One file
/// without extra keeps the form single-file generators always recorded, so older runs resume.
pub fn fingerprint(
    files: &[PathBuf],
    extra: impl Fn(&Path) -> StepResult<String>,
) -> StepResult<String> {
    if let [one] = files {
        let (len, modified) = size_and_mtime(one)?;
        let more = extra(one)?;
        let base = format!("{len} bytes, modified at {modified} ns");
        return Ok(if more.is_empty() {
            base
        } else {
            format!("{base}, {more}")
        });
    }
    let mut hasher = blake3::Hasher::new();
    let mut total = 0u64;
    for file in files {
        let (len, modified) = size_and_mtime(file)?;
        total += len;
        let name = file.to_string_lossy();
        for part in [
            name.as_bytes(),
            &len.to_le_bytes(),
            &modified.to_le_bytes(),
            extra(file)?.as_bytes(),
        ] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    Ok(format!(
        "{} files, {total} bytes, names, sizes and times hashed to {}",
        files.len(),
        &hasher.finalize().to_hex()[..16]
    ))
}
