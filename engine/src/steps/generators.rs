//! Built-in generators: inline rows, JSONL files and CSV files.
//!
//! File generators stream (see [`crate::input`]): each `generate` reads the next rows, and a
//! call at another offset (a resumed run) reopens the files and skips to it.

use crate::input::{self, CsvRows, JsonlRows, Opener, Paths, RowStream, TextFiles};
use crate::step::{BuildContext, Generator, Lifecycle, StepKind, StepResult, parse_params};
use distill_storage::Row;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

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

    fn row_count(&mut self) -> StepResult<Option<u64>> {
        Ok(Some(self.rows.len() as u64))
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
    path: Paths,
}

/// Rows read to learn a JSONL file's columns (see [`input::COLUMN_SCAN_ROWS`]); a key that
/// first appears later is still read, but later steps cannot ask for it by name.
pub use input::COLUMN_SCAN_ROWS;

/// Extensions of the files a directory given to `load_jsonl` contributes.
const JSONL_EXTENSIONS: &[&str] = &["jsonl", "json", "ndjson"];
/// Extensions of the files a directory given to `load_csv` contributes.
const CSV_EXTENSIONS: &[&str] = &["csv", "tsv"];

/// `load_jsonl`: one JSON object per line. Parameters: `path` (relative to the pipeline file;
/// a file, a directory, a glob or a list of them, read in sorted order; `.gz` and `.zst` files
/// are decompressed). Blank lines are skipped, and a UTF-8 byte-order mark at the start is
/// ignored; a malformed line is an error naming the file and line.
pub struct LoadJsonl {
    columns: Vec<String>,
    stream: RowStream<TextFiles<JsonlRows>>,
}

/// Builds a `load_jsonl` generator; reads the first rows to learn the columns.
pub fn load_jsonl(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let p: JsonlParams = parse_params(params)?;
    let files = input::expand(&p.path, ctx, JSONL_EXTENSIONS)?;
    let open: Opener<JsonlRows> = Arc::new(|path: &Path| JsonlRows::open(path));
    let mut stream = RowStream::new(TextFiles::new(files, open), None);
    let columns = input::columns_of_rows(&stream.take(0, COLUMN_SCAN_ROWS)?);
    stream.close();
    Ok(StepKind::Generator(Box::new(LoadJsonl { columns, stream })))
}

impl Lifecycle for LoadJsonl {
    fn unload(&mut self) {
        self.stream.close();
    }
}

impl Generator for LoadJsonl {
    fn outputs(&self) -> Vec<String> {
        self.columns.clone()
    }

    fn fingerprint(&self) -> StepResult<Option<String>> {
        Ok(Some(input::fingerprint(self.stream.set().files(), |_| {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvParams {
    path: Paths,
    #[serde(default)]
    delimiter: Option<char>,
}

/// `load_csv`: CSV files with a header row. Parameters: `path` (as for `load_jsonl`; every
/// file must have the first file's header), `delimiter` (default `,`). Every cell is a string,
/// except an empty cell, which is null.
pub struct LoadCsv {
    columns: Vec<String>,
    stream: RowStream<TextFiles<CsvRows>>,
}

/// Builds a `load_csv` generator; reads the first file's header to learn the columns.
pub fn load_csv(params: &serde_json::Value, ctx: &BuildContext) -> StepResult<StepKind> {
    let p: CsvParams = parse_params(params)?;
    let delimiter = match p.delimiter {
        None => b',',
        Some(c) if c.is_ascii() => c as u8,
        Some(c) => return Err(format!("delimiter '{c}' must be an ASCII character").into()),
    };
    let files = input::expand(&p.path, ctx, CSV_EXTENSIONS)?;
    let columns = CsvRows::open(&files[0], delimiter)?.columns().to_vec();
    let expected = columns.clone();
    let open: Opener<CsvRows> = Arc::new(move |path: &Path| {
        let rows = CsvRows::open(path, delimiter)?;
        if rows.columns() != expected.as_slice() {
            return Err(format!(
                "{}: its header [{}] differs from the first file's [{}]",
                path.display(),
                rows.columns().join(", "),
                expected.join(", ")
            )
            .into());
        }
        Ok(rows)
    });
    Ok(StepKind::Generator(Box::new(LoadCsv {
        columns,
        stream: RowStream::new(TextFiles::new(files, open), None),
    })))
}

impl Lifecycle for LoadCsv {
    fn unload(&mut self) {
        self.stream.close();
    }
}

impl Generator for LoadCsv {
    fn outputs(&self) -> Vec<String> {
        self.columns.clone()
    }

    fn fingerprint(&self) -> StepResult<Option<String>> {
        Ok(Some(input::fingerprint(self.stream.set().files(), |_| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use distill_storage::Value;

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

    fn gz(text: &str) -> Vec<u8> {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    }

    fn rows_of(lines: std::ops::Range<i64>) -> String {
        lines.map(|i| format!("{{\"i\": {i}}}\n")).collect()
    }

    #[test]
    fn jsonl_reads_globs_lists_directories_and_compressed_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data [1]");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("a.jsonl"), rows_of(0..3)).unwrap();
        std::fs::write(d.join("b.jsonl.gz"), gz(&rows_of(3..7))).unwrap();
        std::fs::write(
            d.join("c.jsonl.zst"),
            zstd::encode_all(rows_of(7..10).as_bytes(), 3).unwrap(),
        )
        .unwrap();
        std::fs::write(d.join("notes.txt"), "not rows").unwrap();
        let ints = |rows: &[Row]| -> Vec<i64> {
            rows.iter()
                .map(|r| match r.get("i") {
                    Some(Value::Int(i)) => *i,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        // A glob (under a directory whose name has glob characters), a directory, a list.
        for (params, expected) in [
            (
                serde_json::json!({"path": "*.jsonl*"}),
                (0..10).collect::<Vec<_>>(),
            ),
            (serde_json::json!({"path": "."}), (0..10).collect()),
            (
                serde_json::json!({"path": ["c.jsonl.zst", "a.jsonl"]}),
                vec![7, 8, 9, 0, 1, 2],
            ),
        ] {
            let mut g = build(load_jsonl, params.clone(), &d).unwrap();
            assert_eq!(g.outputs(), vec!["i"]);
            let batches = all(g.as_mut(), 0, 4);
            let got: Vec<Row> = batches.into_iter().flat_map(|b| b.0).collect();
            assert_eq!(ints(&got), expected, "{params}");
            // A fresh generator resumed in the middle of a file continues there.
            let mut fresh = build(load_jsonl, params, &d).unwrap();
            let (tail, last) = fresh.generate(4, 100).unwrap();
            assert!(last);
            assert_eq!(ints(&tail), expected[4..].to_vec());
        }
        let err = build(load_jsonl, serde_json::json!({"path": "*.parquet"}), &d)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no file matches '*.parquet'"), "{err}");
        let err = build(load_jsonl, serde_json::json!({"path": []}), &d)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("empty list"), "{err}");
    }

    #[test]
    fn a_bad_line_in_a_compressed_file_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jsonl"), rows_of(0..2)).unwrap();
        std::fs::write(dir.path().join("b.jsonl.gz"), gz("{\"i\": 2}\n{\"i\": \n")).unwrap();
        let err = build(
            load_jsonl,
            serde_json::json!({"path": "*.jsonl*"}),
            dir.path(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("b.jsonl.gz line 2"), "{err}");
        // A file that is not what its extension says.
        std::fs::write(dir.path().join("c.jsonl.gz"), "{\"i\": 1}\n").unwrap();
        let err = build(
            load_jsonl,
            serde_json::json!({"path": "c.jsonl.gz"}),
            dir.path(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("c.jsonl.gz line 1"), "{err}");
    }

    #[test]
    fn csv_reads_several_files_with_one_header_compressed_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("1.csv"), "a,b\n1,x\n").unwrap();
        std::fs::write(
            d.join("2.csv.zst"),
            zstd::encode_all(&b"a,b\n2,\n"[..], 1).unwrap(),
        )
        .unwrap();
        let mut g = build(load_csv, serde_json::json!({"path": "*.csv*"}), d).unwrap();
        let (rows, last) = g.generate(0, 10).unwrap();
        assert!(last);
        assert_eq!(
            rows,
            vec![
                Row::new().with("a", "1").with("b", "x"),
                Row::new().with("a", "2").with("b", Value::Null)
            ]
        );
        std::fs::write(d.join("3.csv.gz"), gz("a,c\n3,y\n")).unwrap();
        let mut g = build(load_csv, serde_json::json!({"path": "*.csv*"}), d).unwrap();
        let err = g.generate(0, 10).unwrap_err().to_string();
        assert!(
            err.contains("3.csv.gz") && err.contains("[a, c] differs from the first file's [a, b]"),
            "{err}"
        );
    }

    #[test]
    fn fingerprints_change_with_the_set_of_files_and_keep_the_single_file_form() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a.jsonl"), rows_of(0..2)).unwrap();
        let one = build(load_jsonl, serde_json::json!({"path": "a.jsonl"}), d)
            .unwrap()
            .fingerprint()
            .unwrap()
            .unwrap();
        assert!(one.starts_with("18 bytes, modified at "), "{one}");
        std::fs::write(d.join("b.jsonl"), rows_of(2..4)).unwrap();
        let glob = build(load_jsonl, serde_json::json!({"path": "*.jsonl"}), d).unwrap();
        let two = glob.fingerprint().unwrap().unwrap();
        assert!(two.starts_with("2 files, 36 bytes"), "{two}");
        std::fs::write(d.join("c.jsonl"), rows_of(4..5)).unwrap();
        let three = build(load_jsonl, serde_json::json!({"path": "*.jsonl"}), d)
            .unwrap()
            .fingerprint()
            .unwrap()
            .unwrap();
        assert_ne!(two, three);
        assert_eq!(
            glob.fingerprint().unwrap().unwrap(),
            two,
            "same files, same fingerprint"
        );
    }
}
