//! Shards of a run on real run databases: which rows each shard's generators emit.

mod support;

use distill_engine::{BuildContext, Pipeline, PipelineSpec, Role, RunOptions, StepSpec, run};
use distill_storage::{RunReader, RunStatus, Value};
use support::{Probe, registry};

fn numbers(db: &std::path::Path, step: &str, column: &str) -> Vec<i64> {
    let reader = RunReader::open(db).unwrap();
    let snap = reader.snapshot().unwrap();
    snap.batches(step, 0)
        .unwrap()
        .flat_map(|b| b.unwrap().rows)
        .map(|r| match r.get(column) {
            Some(Value::Int(i)) => *i,
            other => panic!("{column}: {other:?}"),
        })
        .collect()
}

fn run_shard(
    spec: &PipelineSpec,
    dir: &std::path::Path,
    index: u32,
    count: u32,
) -> std::path::PathBuf {
    let probe = Probe::default();
    let pipeline =
        Pipeline::build(spec.clone(), &registry(&probe), &BuildContext::default()).unwrap();
    let db = dir.join(format!("shard-{index}.redb"));
    let mut options = RunOptions::new(&db);
    options.role = Role::Shard {
        spec: distill_engine::ShardSpec::new(index, count).unwrap(),
        global_db: dir.join("global.redb"),
    };
    let summary = run(&pipeline, &options).unwrap();
    assert_eq!(summary.barrier, None);
    let status = RunReader::open(&db)
        .unwrap()
        .snapshot()
        .unwrap()
        .run_state()
        .unwrap()
        .status;
    assert_eq!(status, RunStatus::Finished);
    db
}

#[test]
fn a_generator_that_cannot_count_is_split_round_robin_in_blocks_of_its_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let spec = PipelineSpec::new("blocks").step(
        StepSpec::new("gen", "numbers")
            .param("count", 23)
            .batch_size(5),
    );
    let got: Vec<Vec<i64>> = (0..3)
        .map(|i| numbers(&run_shard(&spec, dir.path(), i, 3), "gen", "n"))
        .collect();
    assert_eq!(got[0], [0, 1, 2, 3, 4, 15, 16, 17, 18, 19]);
    assert_eq!(got[1], [5, 6, 7, 8, 9, 20, 21, 22]);
    assert_eq!(got[2], [10, 11, 12, 13, 14]);
}

#[test]
fn a_generator_that_counts_its_rows_gives_each_shard_a_contiguous_range() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<serde_json::Value> = (0..10).map(|i| serde_json::json!({"n": i})).collect();
    let spec = PipelineSpec::new("ranges").step(
        StepSpec::new("gen", "inline")
            .param("rows", rows)
            .batch_size(2),
    );
    let got: Vec<Vec<i64>> = (0..3)
        .map(|i| numbers(&run_shard(&spec, dir.path(), i, 3), "gen", "n"))
        .collect();
    assert_eq!(got, [vec![0, 1, 2], vec![3, 4, 5], vec![6, 7, 8, 9]]);
}
