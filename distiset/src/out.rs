//! The export directory: what in it belongs to earlier exports, and how a new export replaces
//! them without touching anything else.
//!
//! Rules:
//! - `--out` is resolved to a canonical path first (so `.` and `sub/..` work); a missing
//!   directory is created, and removed again (only while empty) if the export fails.
//! - The files of earlier exports are those listed in `DIR/distiset.json` (its `files`; an
//!   export older than that list owns `distiset.json`, `README.md`, `pipeline.yaml` and its
//!   leaves' data files) and in the manifest of a staging directory an interrupted export left.
//!   Anything else in `DIR` (a file, a directory holding no export file, a symlink where an
//!   export directory would be) is foreign: the export is refused, naming it, and nothing is
//!   touched. `DIR/.distill-export-tmp/` (a directory, not a symlink) is the staging directory,
//!   reserved.
//! - The run database may not lie inside `DIR` at all (it would be foreign anyway; the message
//!   says so plainly).
//! - The new export is written to `DIR/.distill-export-tmp/` (removed on every failure), then
//!   moved in file by file; the earlier export's files the new one no longer has are deleted,
//!   with the directories this empties; `distiset.json` is moved in last. At every point each
//!   file in `DIR` is listed in `DIR/distiset.json` or in the staging manifest, so an export
//!   killed midway is cleaned up by the next one.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// The staging directory's name, inside the export directory.
pub(crate) const STAGING: &str = ".distill-export-tmp";

/// The metadata file, also the manifest of the files an export wrote.
pub(crate) const MANIFEST: &str = "distiset.json";

/// How many foreign entries an error names before it says how many more there are.
const NAMED: usize = 8;

/// The export directory, ready to receive an export.
pub(crate) struct OutDir {
    /// The canonical path.
    pub dir: PathBuf,
    /// Directories this export created (outermost first), removed if it fails while empty.
    created: Vec<PathBuf>,
    /// Files of earlier exports, relative to `dir`, `/`-separated.
    owned: BTreeSet<String>,
    /// Set once the export is in place.
    done: bool,
}

#[derive(Deserialize)]
struct Manifest {
    files: Option<Vec<String>>,
    #[serde(default)]
    leaves: Vec<ManifestLeaf>,
}

#[derive(Deserialize)]
struct ManifestLeaf {
    #[serde(default)]
    files: Vec<String>,
}

impl OutDir {
    /// Resolves `out`, checks that it holds nothing but earlier exports and that `db` is not
    /// inside it, and removes a staging directory an interrupted export left.
    pub fn prepare(out: &Path, db: &Path) -> Result<Self> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { path, source }
        };
        let mut this = OutDir {
            dir: resolve(out).map_err(io(out))?,
            created: Vec::new(),
            owned: BTreeSet::new(),
            done: false,
        };
        match std::fs::metadata(&this.dir) {
            Ok(m) if !m.is_dir() => {
                return Err(Error::OutNotADirectory {
                    path: out.to_path_buf(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Recorded before creating, so that a failure halfway removes what was made.
                let mut p = this.dir.as_path();
                while !p.exists() {
                    this.created.push(p.to_path_buf());
                    p = p.parent().unwrap_or(Path::new("/"));
                }
                this.created.reverse();
                std::fs::create_dir_all(&this.dir).map_err(io(out))?;
            }
            Err(e) => return Err(io(out)(e)),
        }
        let db = std::fs::canonicalize(db).map_err(io(db))?;
        if db.starts_with(&this.dir) {
            return Err(Error::DatabaseInsideOut {
                db,
                out: this.dir.clone(),
            });
        }
        let manifest = this.dir.join(MANIFEST);
        if manifest.exists() {
            let files = read_manifest(&manifest).map_err(|detail| Error::NotAnExport {
                path: this.dir.clone(),
                detail: format!("{MANIFEST} is not one distill wrote ({detail})"),
            })?;
            this.owned.extend(files);
        }
        let staging = this.dir.join(STAGING);
        if let Ok(files) = read_manifest(&staging.join(MANIFEST)) {
            this.owned.extend(files);
        }
        let mut foreign = Vec::new();
        this.foreign(&this.dir, "", &mut foreign)?;
        if !foreign.is_empty() {
            let count = foreign.len();
            let mut named = foreign[..count.min(NAMED)].join(", ");
            if count > NAMED {
                named.push_str(&format!(" and {} more", count - NAMED));
            }
            return Err(Error::NotAnExport {
                path: this.dir.clone(),
                detail: format!(
                    "it holds {count} entr{} no distill export wrote: {named}",
                    if count == 1 { "y" } else { "ies" }
                ),
            });
        }
        // Only a real directory gets here (anything else by that name is foreign).
        match std::fs::symlink_metadata(&staging) {
            Ok(_) => std::fs::remove_dir_all(&staging).map_err(io(&staging))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&staging)(e)),
        }
        Ok(this)
    }

    /// Collects the entries under `dir` (relative path `rel`) that no earlier export wrote.
    fn foreign(&self, dir: &Path, rel: &str, found: &mut Vec<String>) -> Result<()> {
        let io = |source| Error::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            entries.push((entry.file_name(), entry.file_type().map_err(io)?));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in entries {
            let Some(name) = name.to_str() else {
                found.push(format!("{rel}{}", name.to_string_lossy()));
                continue;
            };
            let path = format!("{rel}{name}");
            if rel.is_empty() && name == STAGING && kind.is_dir() {
                continue;
            }
            if kind.is_dir() {
                let prefix = format!("{path}/");
                if self.owned.iter().any(|f| f.starts_with(&prefix)) {
                    self.foreign(&dir.join(name), &prefix, found)?;
                } else {
                    found.push(prefix);
                }
            } else if !(kind.is_file() && self.owned.contains(&path)) {
                found.push(path);
            }
        }
        Ok(())
    }

    /// Moves the export written in `staging` (its files listed in `files`, `distiset.json`
    /// among them) into place, then deletes what of the earlier export it no longer has.
    pub fn commit(&mut self, staging: &Path, files: &[String]) -> Result<()> {
        let mut moved: Vec<&String> = Vec::new();
        let result = self.move_in(staging, files, &mut moved);
        if result.is_err() {
            // Take back what this export moved in where no earlier export had a file, so that
            // every file left in the directory is still listed in its distiset.json.
            for file in moved.iter().filter(|f| !self.owned.contains(**f)) {
                let _ = std::fs::remove_file(self.dir.join(file));
                self.remove_empty_parents(file);
            }
        }
        result
    }

    fn move_in<'a>(
        &self,
        staging: &Path,
        files: &'a [String],
        moved: &mut Vec<&'a String>,
    ) -> Result<()> {
        for file in files.iter().filter(|f| *f != MANIFEST) {
            self.move_file(staging, file)?;
            moved.push(file);
        }
        let new: BTreeSet<&String> = files.iter().collect();
        for old in self.owned.iter().filter(|f| !new.contains(f)) {
            let path = self.dir.join(old);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(Error::Io { path, source }),
            }
            self.remove_empty_parents(old);
        }
        self.move_file(staging, MANIFEST)?;
        // Make the renames durable too (best effort: not every file system syncs directories).
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn move_file(&self, staging: &Path, file: &str) -> Result<()> {
        let to = self.dir.join(file);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::rename(staging.join(file), &to).map_err(|source| Error::Io { path: to, source })
    }

    /// Removes the directories between `file` and the export directory that are now empty.
    fn remove_empty_parents(&self, file: &str) {
        let mut dir = Path::new(file).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            if std::fs::remove_dir(self.dir.join(d)).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// The export is in place: nothing to undo.
    pub fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !self.done {
            for dir in self.created.iter().rev() {
                if std::fs::remove_dir(dir).is_err() {
                    break;
                }
            }
        }
    }
}

/// The staging directory of an export, removed when dropped (the export failed, or its files
/// were moved out).
pub(crate) struct Staging {
    /// Its path.
    pub path: PathBuf,
}

impl Staging {
    /// Creates the staging directory in the export directory.
    pub fn create(out: &OutDir) -> Result<Self> {
        let path = out.dir.join(STAGING);
        std::fs::create_dir(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Staging { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `out` as an absolute path whose existing part is canonical (symlinks resolved): `..` after
/// an existing directory is its real parent, after a missing one it drops that name.
fn resolve(out: &Path) -> std::io::Result<PathBuf> {
    let mut path = std::env::current_dir()?;
    for component in out.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                path = PathBuf::from(component.as_os_str())
            }
            Component::CurDir => {}
            Component::ParentDir => {
                path.pop();
            }
            Component::Normal(name) => {
                path.push(name);
                if path.exists() {
                    path = std::fs::canonicalize(&path)?;
                }
            }
        }
    }
    Ok(path)
}

/// The files a `distiset.json` says its export wrote, each a plain relative path.
fn read_manifest(path: &Path) -> std::result::Result<Vec<String>, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    let files = match manifest.files {
        Some(files) => files,
        None => ["distiset.json", "README.md", "pipeline.yaml"]
            .into_iter()
            .map(str::to_owned)
            .chain(manifest.leaves.into_iter().flat_map(|l| l.files))
            .collect(),
    };
    match files.iter().find(|f| !is_plain_relative(f)) {
        Some(bad) => Err(format!("it lists {bad:?}, not a path inside the directory")),
        None => Ok(files),
    }
}

/// A relative path of normal components only (no `..`, no root, no `.`), `/`-separated.
fn is_plain_relative(file: &str) -> bool {
    !file.is_empty()
        && !file.contains('\\')
        && file.split('/').all(|c| !c.is_empty())
        && Path::new(file)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::is_plain_relative;

    #[test]
    fn only_plain_relative_paths_are_trusted_from_a_manifest() {
        assert!(is_plain_relative("a/train/data-00000.parquet"));
        assert!(is_plain_relative("README.md"));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\..\\b",
        ] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }
}
