//! Built-in generators: inline rows, JSONL files and CSV files.
//!
//! File generators stream: `load` opens the file, each `generate` reads the next rows, and a
//! call at another offset (a resumed run) reopens the file and skips to it.

use super::json_integers;
use crate::step::{BuildContext, Generator, Lifecycle, StepKind, StepResult, parse_params};
use distill_storage::{Row, Value};
use serde::Deserialize;
use std::fs::File;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InlineParams {
    rows: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// `inline`: rows written in the pipeline. Parameters: `rows` (a list of objects).
pub struct Inline {
    rows: Vec<Row>,
}

/// Builds an `inline` generator.
pub fn inline(params: &serde_json::Value, _ctx: &BuildContext) -> StepResult<StepKind> {
    let p: InlineParams = parse_params(params)?;
    let rows = p.rows.iter().map(Row::from_json_map).collect();
    Ok(StepKind::Generator(Box::new(Inline { rows })))
}

impl Lifecycle for Inline {}

impl Generator for Inline {
    fn outputs(&self) -> Vec<String> {
        let mut columns: Vec<String> = Vec::new();
        for row in &self.rows {
            for c in row.columns() {
                if !columns.iter().any(|x| x == c) {
                    columns.push(c.to_owned());
                }
            }
        }
        columns
    }

    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        let start = (offset as usize).min(self.rows.len());
        let end = (start + count).min(self.rows.len());
        Ok((self.rows[start..end].to_vec(), end == self.rows.len()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonlParams {
    path: String,
}

/// Rows read to learn a JSONL file's columns: the columns are the union of the keys of its
/// first this many rows (in first-seen order); a key that first appears later is still read,
/// but later steps cannot ask for it by name.
pub const COLUMN_SCAN_ROWS: usize = 1000;

/// `load_jsonl`: one JSON object per line. Parameters: `path` (relative to the pipeline file).
/// Blank lines are skipped, and a UTF-8 byte-order mark at the start is ignored; a malformed
/// line is an error naming the file and line.
pub struct LoadJsonl {
    path: PathBuf,
    columns: Vec<String>,
    reader: Option<JsonlReader>,
}

struct JsonlReader {
    lines: Lines<BufReader<File>>,
    /// 1-based number of the last line read.
    line: u64,
    /// Rows returned so far.
    position: u64,
    /// A row read ahead to know whether another follows.
    peeked: Option<Row>,
}

/// Builds a `load_jsonl` generator; reads the first row to learn the columns.
pub fn load_jsonl(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let p: JsonlParams = parse_params(params)?;
    let path = ctx.resolve(&p.path);
    let mut reader = JsonlReader::open(&path)?;
    let mut columns: Vec<String> = Vec::new();
    for _ in 0..COLUMN_SCAN_ROWS {
        let Some(row) = reader.next_row(&path)? else {
            break;
        };
        for c in row.columns() {
            if !columns.iter().any(|x| x == c) {
                columns.push(c.to_owned());
            }
        }
    }
    Ok(StepKind::Generator(Box::new(LoadJsonl {
        path,
        columns,
        reader: None,
    })))
}

impl JsonlReader {
    fn open(path: &Path) -> StepResult<Self> {
        let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Ok(Self {
            lines: BufReader::new(file).lines(),
            line: 0,
            position: 0,
            peeked: None,
        })
    }

    fn read_row(&mut self, path: &Path) -> StepResult<Option<Row>> {
        for line in self.lines.by_ref() {
            self.line += 1;
            let line = line.map_err(|e| format!("{} line {}: {e}", path.display(), self.line))?;
            let line = match self.line {
                1 => line.strip_prefix('\u{feff}').unwrap_or(&line),
                _ => &line,
            };
            if line.trim().is_empty() {
                continue;
            }
            let json: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), self.line))?;
            return match json {
                serde_json::Value::Object(map) => {
                    let row = Row::from_json_map(&map);
                    if json_integers::may_hold_one(&row)
                        && let Some((column, literal)) = json_integers::find(line)
                    {
                        return Err(format!(
                            "{} line {}: column '{column}' holds the integer {literal}, \
                                 beyond the 64-bit range; write it as a string (or a float, \
                                 rounded)",
                            path.display(),
                            self.line
                        )
                        .into());
                    }
                    Ok(Some(row))
                }
                other => Err(format!(
                    "{} line {}: expected a JSON object, found {}",
                    path.display(),
                    self.line,
                    Value::from_json(&other).kind()
                )
                .into()),
            };
        }
        Ok(None)
    }

    fn next_row(&mut self, path: &Path) -> StepResult<Option<Row>> {
        let row = match self.peeked.take() {
            Some(row) => Some(row),
            None => self.read_row(path)?,
        };
        if row.is_some() {
            self.position += 1;
        }
        Ok(row)
    }

    fn has_more(&mut self, path: &Path) -> StepResult<bool> {
        if self.peeked.is_none() {
            self.peeked = self.read_row(path)?;
        }
        Ok(self.peeked.is_some())
    }
}

impl Lifecycle for LoadJsonl {
    fn load(&mut self) -> StepResult<()> {
        self.reader = Some(JsonlReader::open(&self.path)?);
        Ok(())
    }

    fn unload(&mut self) {
        self.reader = None;
    }
}

/// A file's size and modification time, as a fingerprint.
fn file_fingerprint(path: &Path) -> StepResult<Option<String>> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(Some(format!(
        "{} bytes, modified at {modified} ns",
        meta.len()
    )))
}

impl Generator for LoadJsonl {
    fn outputs(&self) -> Vec<String> {
        self.columns.clone()
    }

    fn fingerprint(&self) -> StepResult<Option<String>> {
        file_fingerprint(&self.path)
    }

    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        let path = self.path.clone();
        let reader = match self.reader.take() {
            Some(r) if r.position == offset => r,
            _ => {
                let mut r = JsonlReader::open(&path)?;
                while r.position < offset && r.next_row(&path)?.is_some() {}
                r
            }
        };
        let reader = self.reader.insert(reader);
        let mut rows = Vec::with_capacity(count);
        while rows.len() < count {
            match reader.next_row(&path)? {
                Some(row) => rows.push(row),
                None => break,
            }
        }
        let last = !reader.has_more(&path)?;
        Ok((rows, last))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvParams {
    path: String,
    #[serde(default)]
    delimiter: Option<char>,
}

/// `load_csv`: a CSV file with a header row. Parameters: `path`, `delimiter` (default `,`).
/// Every cell is a string, except an empty cell, which is null.
pub struct LoadCsv {
    path: PathBuf,
    delimiter: u8,
    columns: Vec<String>,
    reader: Option<CsvReader>,
}

struct CsvReader {
    records: csv::StringRecordsIntoIter<File>,
    position: u64,
    peeked: Option<Row>,
}

/// Builds a `load_csv` generator; reads the header to learn the columns.
pub fn load_csv(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let p: CsvParams = parse_params(params)?;
    let delimiter = match p.delimiter {
        None => b',',
        Some(c) if c.is_ascii() => c as u8,
        Some(c) => return Err(format!("delimiter '{c}' must be an ASCII character").into()),
    };
    let path = ctx.resolve(&p.path);
    let columns: Vec<String> = csv_reader(&path, delimiter).and_then(|mut r| {
        r.headers()
            .map(|h| h.iter().map(str::to_owned).collect())
            .map_err(|e| format!("{}: {e}", path.display()).into())
    })?;
    for (i, c) in columns.iter().enumerate() {
        if let Some(first) = columns[..i].iter().position(|x| x == c) {
            return Err(format!(
                "{}: the header names column '{c}' twice (columns {} and {}); rename one",
                path.display(),
                first + 1,
                i + 1
            )
            .into());
        }
    }
    Ok(StepKind::Generator(Box::new(LoadCsv {
        path,
        delimiter,
        columns,
        reader: None,
    })))
}

fn csv_reader(path: &Path, delimiter: u8) -> StepResult<csv::Reader<File>> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(file))
}

impl LoadCsv {
    fn open(&self) -> StepResult<CsvReader> {
        Ok(CsvReader {
            records: csv_reader(&self.path, self.delimiter)?.into_records(),
            position: 0,
            peeked: None,
        })
    }

    fn read_row(&self, reader: &mut CsvReader) -> StepResult<Option<Row>> {
        let Some(record) = reader.records.next() else {
            return Ok(None);
        };
        let record = record.map_err(|e| format!("{}: {e}", self.path.display()))?;
        let row = self
            .columns
            .iter()
            .zip(record.iter())
            .map(|(c, cell)| {
                let v = if cell.is_empty() {
                    Value::Null
                } else {
                    Value::Str(cell.to_owned())
                };
                (c.clone(), v)
            })
            .collect();
        Ok(Some(row))
    }

    fn next_row(&self, reader: &mut CsvReader) -> StepResult<Option<Row>> {
        let row = match reader.peeked.take() {
            Some(row) => Some(row),
            None => self.read_row(reader)?,
        };
        if row.is_some() {
            reader.position += 1;
        }
        Ok(row)
    }
}

impl Lifecycle for LoadCsv {
    fn load(&mut self) -> StepResult<()> {
        self.reader = Some(self.open()?);
        Ok(())
    }

    fn unload(&mut self) {
        self.reader = None;
    }
}

impl Generator for LoadCsv {
    fn outputs(&self) -> Vec<String> {
        self.columns.clone()
    }

    fn fingerprint(&self) -> StepResult<Option<String>> {
        file_fingerprint(&self.path)
    }

    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)> {
        let mut reader = match self.reader.take() {
            Some(r) if r.position == offset => r,
            _ => {
                let mut r = self.open()?;
                while r.position < offset && self.next_row(&mut r)?.is_some() {}
                r
            }
        };
        let mut rows = Vec::with_capacity(count);
        while rows.len() < count {
            match self.next_row(&mut reader)? {
                Some(row) => rows.push(row),
                None => break,
            }
        }
        if reader.peeked.is_none() {
            reader.peeked = self.read_row(&mut reader)?;
        }
        let last = reader.peeked.is_none();
        self.reader = Some(reader);
        Ok((rows, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(
        kind: fn(&serde_json::Value, &BuildContext) -> StepResult<StepKind>,
        params: serde_json::Value,
        dir: &Path,
    ) -> StepResult<Box<dyn Generator>> {
        let ctx = BuildContext {
            base_dir: dir.to_path_buf(),
        };
        match kind(&params, &ctx)? {
            StepKind::Generator(g) => Ok(g),
            _ => Err("not a generator".into()),
        }
    }

    fn all(g: &mut dyn Generator, offset: u64, count: usize) -> Vec<(Vec<Row>, bool)> {
        let mut out = Vec::new();
        let mut at = offset;
        loop {
            let (rows, last) = g.generate(at, count).unwrap();
            at += rows.len() as u64;
            out.push((rows, last));
            if last {
                return out;
            }
        }
    }

    #[test]
    fn inline_slices_and_flags_the_end() {
        let mut g = build(
            inline,
            serde_json::json!({"rows": [{"a": 1}, {"a": 2, "b": "x"}, {"a": 3}]}),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(g.outputs(), vec!["a", "b"]);
        let batches = all(g.as_mut(), 0, 2);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].0, vec![Row::new().with("a", 3)]);
        let mut empty = build(inline, serde_json::json!({"rows": []}), Path::new(".")).unwrap();
        assert_eq!(empty.generate(0, 5).unwrap(), (vec![], true));
    }

    #[test]
    fn jsonl_streams_resumes_and_flags_the_end_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..10).map(|i| format!("{{\"i\": {i}}}\n\n")).collect();
        std::fs::write(dir.path().join("d.jsonl"), text).unwrap();
        let params = serde_json::json!({"path": "d.jsonl"});
        let mut g = build(load_jsonl, params.clone(), dir.path()).unwrap();
        assert_eq!(g.outputs(), vec!["i"]);
        g.load().unwrap();
        let batches = all(g.as_mut(), 0, 5);
        assert_eq!(
            batches.len(),
            2,
            "10 rows in 5s: the 2nd batch is last, no empty 3rd"
        );
        assert!(batches[1].1);
        let streamed: Vec<Row> = batches.into_iter().flat_map(|b| b.0).collect();
        let mut fresh = build(load_jsonl, params, dir.path()).unwrap();
        let (one, last) = fresh.generate(0, 100).unwrap();
        assert!(last);
        assert_eq!(streamed, one);
        // Resume at an offset, as after a crash: a fresh generator continues exactly there.
        let (tail, _) = fresh.generate(7, 100).unwrap();
        assert_eq!(tail, one[7..].to_vec());
    }

    #[test]
    fn jsonl_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        // Within the rows read for the columns, a malformed line is found when the step is built.
        std::fs::write(dir.path().join("bad.jsonl"), "{\"a\": 1}\n{\"a\": 2\n").unwrap();
        let err = build(
            load_jsonl,
            serde_json::json!({"path": "bad.jsonl"}),
            dir.path(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("bad.jsonl line 2"), "{err}");
        // Beyond them, when the run reaches it.
        let good: String = (0..COLUMN_SCAN_ROWS)
            .map(|i| format!("{{\"a\": {i}}}\n"))
            .collect();
        std::fs::write(dir.path().join("late.jsonl"), format!("{good}{{\"a\": \n")).unwrap();
        let mut g = build(
            load_jsonl,
            serde_json::json!({"path": "late.jsonl"}),
            dir.path(),
        )
        .unwrap();
        let err = g.generate(0, 2 * COLUMN_SCAN_ROWS).unwrap_err().to_string();
        assert!(
            err.contains(&format!("late.jsonl line {}", COLUMN_SCAN_ROWS + 1)),
            "{err}"
        );
        std::fs::write(dir.path().join("arr.jsonl"), "[1, 2]\n").unwrap();
        let err = build(
            load_jsonl,
            serde_json::json!({"path": "arr.jsonl"}),
            dir.path(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("line 1") && err.contains("list"), "{err}");
        let err = build(
            load_jsonl,
            serde_json::json!({"path": "none.jsonl"}),
            dir.path(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("none.jsonl"), "{err}");
        let err = build(load_jsonl, serde_json::json!({"file": "x"}), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("file"), "{err}");
    }

    #[test]
    fn csv_reads_strings_and_nulls_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.csv"), "a;b\n1;x\n2;\n3;\"y;z\"\n").unwrap();
        let params = serde_json::json!({"path": "d.csv", "delimiter": ";"});
        let mut g = build(load_csv, params, dir.path()).unwrap();
        assert_eq!(g.outputs(), vec!["a", "b"]);
        let batches = all(g.as_mut(), 0, 2);
        assert_eq!(batches.len(), 2);
        assert_eq!(
            batches[0].0[1],
            Row::new().with("a", "2").with("b", Value::Null)
        );
        assert_eq!(
            batches[1].0,
            vec![Row::new().with("a", "3").with("b", "y;z")]
        );
        let (tail, last) = g.generate(1, 10).unwrap();
        assert!(last);
        assert_eq!(tail.len(), 2);
    }

    #[test]
    fn csv_ragged_record_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("r.csv"), "a,b\n1,2\n3\n").unwrap();
        let mut g = build(load_csv, serde_json::json!({"path": "r.csv"}), dir.path()).unwrap();
        let err = g.generate(0, 10).unwrap_err().to_string();
        assert!(err.contains("r.csv") && err.contains("line: 3"), "{err}");
    }

    #[test]
    fn jsonl_with_a_byte_order_mark_reads_its_first_row() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("bom.jsonl"),
            "\u{feff}{\"a\": 1}\n{\"a\": 2}\n",
        )
        .unwrap();
        let mut g = build(
            load_jsonl,
            serde_json::json!({"path": "bom.jsonl"}),
            dir.path(),
        )
        .unwrap();
        assert_eq!(g.outputs(), vec!["a"]);
        let (rows, last) = g.generate(0, 10).unwrap();
        assert!(last);
        assert_eq!(rows, vec![Row::new().with("a", 1), Row::new().with("a", 2)]);
    }

    #[test]
    fn jsonl_columns_are_those_of_the_first_rows_not_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("d.jsonl"),
            "{\"a\": 1}\n{\"a\": 2, \"b\": \"x\"}\n",
        )
        .unwrap();
        let g = build(
            load_jsonl,
            serde_json::json!({"path": "d.jsonl"}),
            dir.path(),
        )
        .unwrap();
        assert_eq!(g.outputs(), vec!["a", "b"]);
    }

    #[test]
    fn csv_with_a_column_named_twice_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dup.csv"), "a,a,b\n1,2,3\n").unwrap();
        let err = build(load_csv, serde_json::json!({"path": "dup.csv"}), dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("dup.csv") && err.contains("'a' twice") && err.contains("columns 1 and 2"),
            "{err}"
        );
    }
}
