//! The export of a finished run, read back: each leaf's rows in order, the pipeline, the status.

use distill_distiset::{ExportFormat, LeafStatus, export};
use distill_engine::{BuildContext, Pipeline, PipelineSpec, Registry, RunOptions, StepSpec, run};

#[test]
fn jsonl_export_writes_each_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("run.redb");
    let rows: Vec<serde_json::Value> = (0..12)
        .map(|n| serde_json::json!({"n": n, "out": 2 * n}))
        .collect();
    let spec = PipelineSpec::new("export").step(
        StepSpec::new("double", "inline")
            .param("rows", rows)
            .batch_size(5),
    );
    let pipeline = Pipeline::build(spec, &Registry::default(), &BuildContext::default()).unwrap();
    run(&pipeline, &RunOptions::new(&db)).unwrap();
    let out = dir.path().join("out");
    let distiset = export(&db, &out, ExportFormat::Jsonl).unwrap();
    assert_eq!(distiset.leaves.len(), 1);
    assert_eq!(distiset.leaves[0].status, LeafStatus::Finished);
    assert_eq!(
        (distiset.leaves[0].rows, distiset.leaves[0].batches),
        (12, 3)
    );
    let text = std::fs::read_to_string(out.join("double/train/data-00000.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    assert_eq!(lines[11], serde_json::json!({"n": 11, "out": 22}));
    assert!(out.join("pipeline.yaml").exists());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("distiset.json")).unwrap()).unwrap();
    assert_eq!(meta["run_status"], "finished");
    assert_eq!(meta["leaves"][0]["status"], "finished");
}

/// Every row of a Parquet file, as (n, text).
fn parquet_rows(path: &std::path::Path) -> Vec<(i64, String)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            (row.get_long(0).unwrap(), row.get_string(1).unwrap().clone())
        })
        .collect()
}

#[test]
fn parquet_export_of_a_leaf_kept_in_memory_or_read_twice_is_the_same() {
    // A leaf small enough to be read from the log once, and one too large for it.
    for count in [1_000, 20_000] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("run.redb");
        let rows: Vec<serde_json::Value> = (0..count)
            .map(|n| serde_json::json!({"n": n, "text": format!("row {n}")}))
            .collect();
        let spec = PipelineSpec::new("export").step(
            StepSpec::new("rows", "inline")
                .param("rows", rows)
                .batch_size(700),
        );
        let pipeline =
            Pipeline::build(spec, &Registry::default(), &BuildContext::default()).unwrap();
        run(&pipeline, &RunOptions::new(&db)).unwrap();
        let out = dir.path().join("out");
        export(&db, &out, ExportFormat::Parquet).unwrap();
        let read = parquet_rows(&out.join("rows/train/data-00000.parquet"));
        let expected: Vec<(i64, String)> = (0..count).map(|n| (n, format!("row {n}"))).collect();
        assert_eq!(read, expected, "{count} rows");
    }
}
