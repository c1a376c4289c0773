//! `load_parquet` and `load_disk` on files written by arrow-rs: every type's value, seeks into
//! the middle of row groups, projections, limits, and the errors that name the column.

use arrow_array::builder::{
    Decimal128Builder, FixedSizeListBuilder, Float32Builder, Int32Builder, ListBuilder,
    StringBuilder, StringDictionaryBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, BinaryArray, Date32Array, Float16Array, Int8Array, IntervalDayTimeArray,
    LargeStringArray, RecordBatch, StructArray, TimestampMicrosecondArray,
    TimestampNanosecondArray, UInt64Array,
};
use arrow_schema::{DataType, Field};
use distill_distiset::read::{load_disk, load_parquet};
use distill_engine::step::{BuildContext, Generator, StepKind};
use distill_storage::{Row, Value};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use std::path::Path;
use std::sync::Arc;

const ROWS: usize = 10;

fn batch() -> RecordBatch {
    let n = ROWS;
    let int8: ArrayRef = Arc::new(Int8Array::from_iter(
        (0..n).map(|i| (i != 3).then_some(i as i8 - 5)),
    ));
    let uint64: ArrayRef = Arc::new(UInt64Array::from_iter_values(
        (0..n).map(|i| u64::MAX - i as u64),
    ));
    let half: ArrayRef = Arc::new(Float16Array::from_iter_values(
        (0..n).map(|i| half::f16::from_f32(i as f32 / 4.0)),
    ));
    let mut f32s = Float32Builder::new();
    for i in 0..n {
        f32s.append_value(i as f32 / 10.0);
    }
    let large: ArrayRef = Arc::new(LargeStringArray::from_iter_values(
        (0..n).map(|i| format!("é{i}")),
    ));
    let binary: ArrayRef = Arc::new(BinaryArray::from_iter_values(
        (0..n).map(|i| vec![i as u8, 0, 255]),
    ));
    let mut lists = ListBuilder::new(Int32Builder::new());
    for i in 0..n {
        if i == 2 {
            lists.append_null();
        } else {
            for k in 0..i % 3 {
                lists.values().append_value((i * 10 + k) as i32);
            }
            lists.append(true);
        }
    }
    let mut embeddings = FixedSizeListBuilder::new(Float32Builder::new(), 2);
    for i in 0..n {
        embeddings.values().append_value(i as f32);
        embeddings.values().append_value(-(i as f32));
        embeddings.append(true);
    }
    let mut names = StringBuilder::new();
    let mut ids = Int32Builder::new();
    for i in 0..n {
        names.append_value(format!("n{i}"));
        ids.append_value(i as i32);
    }
    let record: ArrayRef = Arc::new(StructArray::from(vec![
        (
            Arc::new(Field::new("id", DataType::Int32, true)),
            Arc::new(ids.finish()) as ArrayRef,
        ),
        (
            Arc::new(Field::new("name", DataType::Utf8, true)),
            Arc::new(names.finish()) as ArrayRef,
        ),
    ]));
    let utc: ArrayRef = Arc::new(
        TimestampMicrosecondArray::from_iter_values(
            (0..n).map(|i| 1_700_000_000_000_000 + i as i64 * 500_000),
        )
        .with_timezone("UTC"),
    );
    let naive: ArrayRef = Arc::new(TimestampNanosecondArray::from_iter_values(
        (0..n).map(|i| i as i64 * 1_000_000_001),
    ));
    let dates: ArrayRef = Arc::new(Date32Array::from_iter_values(
        (0..n).map(|i| 19_000 + i as i32),
    ));
    let mut dict = StringDictionaryBuilder::<Int32Type>::new();
    for i in 0..n {
        dict.append_value(["red", "green"][i % 2]);
    }
    let mut decimals = Decimal128Builder::new()
        .with_precision_and_scale(10, 2)
        .unwrap();
    for i in 0..n {
        decimals.append_value(i as i128 * 101 - 300);
    }
    RecordBatch::try_from_iter(vec![
        ("int8", int8),
        ("uint64", uint64),
        ("half", half),
        ("float32", Arc::new(f32s.finish()) as ArrayRef),
        ("large", large),
        ("binary", binary),
        ("list", Arc::new(lists.finish()) as ArrayRef),
        ("embedding", Arc::new(embeddings.finish()) as ArrayRef),
        ("record", record),
        ("utc", utc),
        ("naive", naive),
        ("date", dates),
        ("color", Arc::new(dict.finish()) as ArrayRef),
        ("price", Arc::new(decimals.finish()) as ArrayRef),
    ])
    .unwrap()
}

fn expected(i: usize) -> Row {
    let list = match i {
        2 => Value::Null,
        _ => Value::List(
            (0..i % 3)
                .map(|k| Value::Int((i * 10 + k) as i64))
                .collect(),
        ),
    };
    let secs = 1_700_000_000 + (i as i64 * 500_000) / 1_000_000;
    let utc = format!(
        "{}{}Z",
        chrono::DateTime::from_timestamp(secs, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S"),
        if i % 2 == 1 { ".500" } else { "" }
    );
    let naive = chrono::DateTime::from_timestamp(i as i64, i as u32)
        .unwrap()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.f")
        .to_string();
    let cents = i as i64 * 101 - 300;
    Row::new()
        .with(
            "int8",
            if i == 3 {
                Value::Null
            } else {
                Value::Int(i as i64 - 5)
            },
        )
        .with("uint64", Value::UInt(u64::MAX - i as u64))
        .with("half", i as f64 / 4.0)
        .with("float32", f64::from(i as f32 / 10.0))
        .with("large", format!("é{i}"))
        .with("binary", Value::Bytes(vec![i as u8, 0, 255]))
        .with("list", list)
        .with(
            "embedding",
            Value::List(vec![Value::Float(i as f64), Value::Float(-(i as f64))]),
        )
        .with(
            "record",
            Row::new()
                .with("id", i as i64)
                .with("name", format!("n{i}")),
        )
        .with("utc", utc)
        .with("naive", naive)
        .with(
            "date",
            (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
                + chrono::Days::new(19_000 + i as u64))
            .format("%Y-%m-%d")
            .to_string(),
        )
        .with("color", ["red", "green"][i % 2])
        .with(
            "price",
            format!(
                "{}{}.{:02}",
                if cents < 0 { "-" } else { "" },
                cents.abs() / 100,
                cents.abs() % 100
            ),
        )
}

fn write(path: &Path, batch: &RecordBatch, rows_per_group: usize) {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rows_per_group))
        .build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn generator(
    build: fn(&serde_json::Value, &BuildContext) -> distill_engine::step::StepResult<StepKind>,
    params: serde_json::Value,
    dir: &Path,
) -> Result<Box<dyn Generator>, String> {
    let ctx = BuildContext {
        base_dir: dir.to_path_buf(),
    };
    match build(&params, &ctx).map_err(|e| e.to_string())? {
        StepKind::Generator(g) => Ok(g),
        _ => Err("not a generator".into()),
    }
}

fn read_all(g: &mut dyn Generator, from: u64, batch: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    loop {
        let (got, last) = g.generate(from + rows.len() as u64, batch).unwrap();
        rows.extend(got);
        if last {
            return rows;
        }
    }
}

#[test]
fn every_type_reads_as_its_value_across_row_groups_and_seeks() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("all.parquet"), &batch(), 3);
    let params = serde_json::json!({"path": "all.parquet"});
    let mut g = generator(load_parquet, params.clone(), dir.path()).unwrap();
    assert_eq!(
        g.outputs(),
        batch()
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    );
    let rows = read_all(g.as_mut(), 0, 4);
    let want: Vec<Row> = (0..ROWS).map(expected).collect();
    for (got, want) in rows.iter().zip(&want) {
        assert_eq!(got, want);
    }
    assert_eq!(rows.len(), ROWS);
    // A fresh generator (a resumed run) at every offset, in and between row groups.
    for offset in 0..=ROWS as u64 {
        let mut fresh = generator(load_parquet, params.clone(), dir.path()).unwrap();
        let got = read_all(fresh.as_mut(), offset, 4);
        assert_eq!(got, want[offset as usize..].to_vec(), "from row {offset}");
    }
}

#[test]
fn columns_limit_and_globs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(&d.join("b.parquet"), &batch().slice(5, 5), 2);
    write(&d.join("a.parquet"), &batch().slice(0, 5), 2);
    let mut g = generator(
        load_parquet,
        serde_json::json!({"path": "*.parquet", "columns": ["color", "int8"], "limit": 7}),
        d,
    )
    .unwrap();
    assert_eq!(g.outputs(), vec!["color", "int8"]);
    let rows = read_all(g.as_mut(), 0, 3);
    let want: Vec<Row> = (0..7)
        .map(|i| {
            let e = expected(i);
            Row::new()
                .with("color", e.get("color").unwrap().clone())
                .with("int8", e.get("int8").unwrap().clone())
        })
        .collect();
    assert_eq!(rows, want);
    // The directory form reads the same files in the same order.
    let mut g = generator(load_parquet, serde_json::json!({"path": "."}), d).unwrap();
    assert_eq!(
        read_all(g.as_mut(), 0, 100),
        (0..ROWS).map(expected).collect::<Vec<_>>()
    );
    let err = generator(
        load_parquet,
        serde_json::json!({"path": "a.parquet", "columns": ["nope"]}),
        d,
    )
    .err()
    .unwrap();
    assert!(
        err.contains("a.parquet: has no column 'nope'") && err.contains("int8"),
        "{err}"
    );
}

#[test]
fn an_unsupported_type_names_the_column_and_type_and_can_be_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let interval: ArrayRef = Arc::new(IntervalDayTimeArray::from(vec![
        arrow_buffer::IntervalDayTime::new(1, 2),
    ]));
    let ok: ArrayRef = Arc::new(Int8Array::from(vec![1]));
    let batch = RecordBatch::try_from_iter(vec![("ok", ok), ("span", interval)]).unwrap();
    let file = dir.path().join("span.arrow");
    let mut w = arrow_ipc::writer::StreamWriter::try_new(
        std::fs::File::create(&file).unwrap(),
        &batch.schema(),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    std::fs::write(
        dir.path().join("state.json"),
        r#"{"_data_files": [{"filename": "span.arrow"}], "_split": "train"}"#,
    )
    .unwrap();
    let err = generator(load_disk, serde_json::json!({"path": "."}), dir.path())
        .err()
        .unwrap();
    assert!(
        err.contains("column 'span'") && err.contains("Interval(DayTime)"),
        "{err}"
    );
    let mut g = generator(
        load_disk,
        serde_json::json!({"path": ".", "columns": ["ok"]}),
        dir.path(),
    )
    .unwrap();
    assert_eq!(
        g.generate(0, 5).unwrap(),
        (vec![Row::new().with("ok", 1)], true)
    );
}

#[test]
fn a_saved_dataset_reads_in_order_and_resumes_within_a_record_batch() {
    let dir = tempfile::tempdir().unwrap();
    let split = dir.path().join("ds/test");
    std::fs::create_dir_all(&split).unwrap();
    let all = batch();
    for (k, (from, len)) in [(0, 4), (4, 6)].into_iter().enumerate() {
        let file = split.join(format!("data-0000{k}-of-00002.arrow"));
        let mut w = arrow_ipc::writer::StreamWriter::try_new(
            std::fs::File::create(&file).unwrap(),
            &all.schema(),
        )
        .unwrap();
        // Record batches of 3 rows, as datasets writes them in batches.
        let part = all.slice(from, len);
        let mut at = 0;
        while at < len {
            let n = 3.min(len - at);
            w.write(&part.slice(at, n)).unwrap();
            at += n;
        }
        w.finish().unwrap();
    }
    std::fs::write(
        split.join("state.json"),
        r#"{"_data_files": [{"filename": "data-00000-of-00002.arrow"}, {"filename": "data-00001-of-00002.arrow"}], "_split": "test"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ds/dataset_dict.json"),
        r#"{"splits": ["test"]}"#,
    )
    .unwrap();
    let params = serde_json::json!({"path": "ds"});
    let want: Vec<Row> = (0..ROWS).map(expected).collect();
    for offset in [0, 2, 4, 5, 9, 10] {
        let mut g = generator(load_disk, params.clone(), dir.path()).unwrap();
        assert_eq!(
            read_all(g.as_mut(), offset, 4),
            want[offset as usize..].to_vec()
        );
    }
    let err = generator(
        load_disk,
        serde_json::json!({"path": "ds", "split": "train"}),
        dir.path(),
    )
    .err()
    .unwrap();
    assert!(
        err.contains("has no split 'train' (its splits: test)"),
        "{err}"
    );
    let err = generator(load_disk, serde_json::json!({"path": "."}), dir.path())
        .err()
        .unwrap();
    assert!(
        err.contains("not a folder written by datasets' save_to_disk"),
        "{err}"
    );
}
