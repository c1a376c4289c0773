//! Rows of a JSON Lines file, one object per line.

use super::RowReader;
use super::files::open_decoded;
use crate::step::StepResult;
use crate::steps::json_integers;
use distill_storage::{Row, Value};
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// Reads a JSONL file (plain, `.gz` or `.zst`) row by row. Blank lines are skipped, a UTF-8
/// byte-order mark at the start is ignored; a malformed line, a line that is not an object or
/// an integer beyond 64 bits is an error naming the file and the line.
pub struct JsonlRows {
    path: PathBuf,
    reader: Box<dyn BufRead + Send + Sync>,
    buf: String,
    /// 1-based number of the last line read.
    line: u64,
}

impl JsonlRows {
    /// Opens `path`.
    pub fn open(path: &Path) -> StepResult<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            reader: open_decoded(path)?,
            buf: String::new(),
            line: 0,
        })
    }
}

impl RowReader for JsonlRows {
    fn read_row(&mut self) -> StepResult<Option<Row>> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_line(&mut self.buf)
                .map_err(|e| format!("{} line {}: {e}", self.path.display(), self.line + 1))?;
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            let mut line = self.buf.trim_end_matches(['\n', '\r']);
            if self.line == 1 {
                line = line.strip_prefix('\u{feff}').unwrap_or(line);
            }
            if line.trim().is_empty() {
                continue;
            }
            let at = || format!("{} line {}", self.path.display(), self.line);
            let json: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("{}: {e}", at()))?;
            return match json {
                serde_json::Value::Object(map) => {
                    let row = Row::from_json_map(&map);
                    if json_integers::may_hold_one(&row)
                        && let Some((column, literal)) = json_integers::find(line)
                    {
                        return Err(format!(
                            "{}: column '{column}' holds the integer {literal}, beyond the \
                             64-bit range; write it as a string (or a float, rounded)",
                            at()
                        )
                        .into());
                    }
                    Ok(Some(row))
                }
                other => Err(format!(
                    "{}: expected a JSON object, found {}",
                    at(),
                    Value::from_json(&other).kind()
                )
                .into()),
            };
        }
    }
}
