//! `distill export --out DIR` touches only what an export wrote: foreign entries and the run
//! database are refused and kept, a failed export leaves no staging directory, a replaced
//! export loses exactly the files the new one no longer has (also after an export killed
//! midway), and non-finite floats are kept by Parquet and counted where JSON nulls them.

mod common;

use common::distill::{distill, read_jsonl, run, run_with_file_limit, stderr, stdout};
use distill_storage::{Batch, NewRun, Progress, Row, RunLog};
use std::path::{Path, PathBuf};
use std::process::Output;

const STAGING: &str = ".distill-export-tmp";

/// A finished run of a pipeline whose leaves are inline generators named `leaves`, each with
/// `rows` rows; its database is `dir/NAME.redb`.
fn finished_run(dir: &Path, name: &str, leaves: &[&str], rows: usize) -> PathBuf {
    let mut yaml = format!("name: {name}\nsteps:\n");
    for leaf in leaves {
        let rows: Vec<String> = (0..rows)
            .map(|i| format!("{{id: {i}, text: \"{leaf} row {i} {}\"}}", "x".repeat(40)))
            .collect();
        yaml.push_str(&format!(
            "  - name: {leaf}\n    type: inline\n    params: {{rows: [{}]}}\n",
            rows.join(", ")
        ));
    }
    let pipeline = dir.join(format!("{name}.yaml"));
    std::fs::write(&pipeline, yaml).unwrap();
    let db = dir.join(format!("{name}.redb"));
    let out = run(
        dir,
        &[
            "run",
            pipeline.to_str().unwrap(),
            "--db",
            db.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    db
}

fn export(dir: &Path, db: &Path, out: &str, extra: &[&str]) -> Output {
    let mut args = vec!["export", "--db", db.to_str().unwrap(), "--out", out];
    args.extend_from_slice(extra);
    run(dir, &args)
}

/// Every file under `dir`, relative, sorted, with its contents.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, dir: &Path, found: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                found.push((format!("{rel}/"), Vec::new()));
                walk(base, &path, found);
            } else {
                found.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}

fn names(dir: &Path) -> Vec<String> {
    tree(dir).into_iter().map(|(n, _)| n).collect()
}

fn manifest_files(dir: &Path) -> Vec<String> {
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("distiset.json")).unwrap()).unwrap();
    let mut files: Vec<String> = json["files"]
        .as_array()
        .expect("distiset.json lists its files")
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect();
    files.sort();
    files
}

#[test]
fn an_earlier_export_beside_user_files_is_refused_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = finished_run(d, "p", &["gen"], 5);
    let out = export(d, &db, "ds", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ds = d.join("ds");
    std::fs::write(ds.join("precious.txt"), b"mine").unwrap();
    std::fs::write(ds.join("NOTES.md"), b"notes").unwrap();
    std::fs::create_dir_all(ds.join(".git/objects")).unwrap();
    std::fs::write(ds.join(".git/HEAD"), b"ref: refs/heads/main\n").unwrap();
    std::fs::create_dir_all(ds.join("gen/train/mine")).unwrap();
    let before = tree(&ds);
    for format in ["parquet", "jsonl"] {
        let out = export(d, &db, "ds", &["--format", format]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        for foreign in ["precious.txt", "NOTES.md", ".git/", "gen/train/mine/"] {
            assert!(err.contains(foreign), "{foreign} not named: {err}");
        }
        assert!(!err.contains("pipeline.yaml"), "own file named: {err}");
        assert_eq!(tree(&ds), before, "a refused export changed the directory");
    }
    // A file by the staging directory's name is not taken for one.
    let only_staging_name = d.join("odd");
    std::fs::create_dir(&only_staging_name).unwrap();
    std::fs::write(only_staging_name.join(STAGING), b"a file, not staging").unwrap();
    let out = export(d, &db, "odd", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(only_staging_name.join(STAGING)).unwrap(),
        b"a file, not staging"
    );
    // A directory without distiset.json that is not empty is refused too.
    std::fs::create_dir(d.join("other")).unwrap();
    std::fs::write(d.join("other/keep.csv"), b"a,b\n").unwrap();
    let out = export(d, &db, "other", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("keep.csv"), "{}", stderr(&out));
    assert_eq!(names(&d.join("other")), ["keep.csv"]);
}

#[test]
fn the_run_database_inside_out_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = finished_run(d, "p", &["gen"], 5);
    let size = std::fs::metadata(&db).unwrap().len();
    // --db DIR/run.redb --out DIR, spelled three ways.
    for out_dir in [".", "./", "sub/.."] {
        let out = export(d, &db, out_dir, &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "--out {out_dir}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("run database"),
            "--out {out_dir}: {}",
            stderr(&out)
        );
        assert_eq!(std::fs::metadata(&db).unwrap().len(), size);
        assert!(!d.join(STAGING).exists() && !d.join("sub").exists());
    }
    // Also when DIR holds an earlier export beside the database.
    let out = export(d, &db, "ds", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::rename(&db, d.join("ds/p.redb")).unwrap();
    let db = d.join("ds/p.redb");
    let out = export(d, &db, "ds", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("p.redb"), "{}", stderr(&out));
    let status = run(d, &["status", "--db", db.to_str().unwrap()]);
    assert!(
        status.status.success(),
        "database damaged: {}",
        stderr(&status)
    );
}

#[test]
fn out_dot_and_a_path_through_dotdot_export_into_that_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = finished_run(d, "p", &["gen"], 5);
    std::fs::create_dir(d.join("here")).unwrap();
    let out = distill(&d.join("here"))
        .args(["export", "--db", db.to_str().unwrap(), "--out", "."])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        manifest_files(&d.join("here")),
        [
            "README.md",
            "distiset.json",
            "gen/train/data-00000.parquet",
            "pipeline.yaml"
        ]
    );
    let out = distill(&d.join("here"))
        .args([
            "export",
            "--db",
            db.to_str().unwrap(),
            "--out",
            "missing/..",
        ])
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        names(&d.join("here")),
        [
            "README.md",
            "distiset.json",
            "gen/",
            "gen/train/",
            "gen/train/data-00000.jsonl",
            "pipeline.yaml"
        ],
        "the parquet file of the first export is replaced, nothing else is left"
    );
    assert_eq!(
        read_jsonl(&d.join("here/gen/train/data-00000.jsonl")).len(),
        5
    );
}

/// Runs `distill export` with file writes limited to `kib` KiB.
fn export_with_file_limit(dir: &Path, db: &Path, out: &str, kib: u64) -> Output {
    let db = db.to_string_lossy();
    run_with_file_limit(dir, kib, &["export", "--db", &db, "--out", out])
}

#[test]
fn a_failed_export_leaves_no_staging_directory_and_the_earlier_export_intact() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let small = finished_run(d, "small", &["gen"], 3);
    let big = finished_run(d, "big", &["gen", "more"], 20_000);
    let out = export(d, &small, "ds", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = tree(&d.join("ds"));
    let out = export_with_file_limit(d, &big, "ds", 64);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(!d.join("ds").join(STAGING).exists(), "staging left behind");
    assert_eq!(tree(&d.join("ds")), before, "the earlier export changed");
    // Into a new directory: it is removed again, with the parents the export created.
    let out = export_with_file_limit(d, &big, "new/deep", 64);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        !d.join("new").exists(),
        "a failed export left its directory"
    );
    // Without the limit both work, and nothing of the failed attempts gets in the way.
    let out = export(d, &big, "ds", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!d.join("ds").join(STAGING).exists());
}

#[test]
fn replacing_an_export_removes_the_files_it_no_longer_has_and_keeps_the_users() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ab = finished_run(d, "ab", &["alpha", "beta"], 4);
    let ac = finished_run(d, "ac", &["alpha", "gamma"], 6);
    std::fs::write(d.join("beside.txt"), b"user file beside the export").unwrap();
    let out = export(d, &ab, "ds", &["--format", "jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = export(d, &ac, "ds", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ds = d.join("ds");
    assert_eq!(
        names(&ds),
        [
            "README.md",
            "alpha/",
            "alpha/train/",
            "alpha/train/data-00000.parquet",
            "distiset.json",
            "gamma/",
            "gamma/train/",
            "gamma/train/data-00000.parquet",
            "pipeline.yaml"
        ]
    );
    assert_eq!(
        manifest_files(&ds),
        [
            "README.md",
            "alpha/train/data-00000.parquet",
            "distiset.json",
            "gamma/train/data-00000.parquet",
            "pipeline.yaml"
        ]
    );
    assert!(
        std::fs::read_to_string(ds.join("pipeline.yaml"))
            .unwrap()
            .contains("gamma")
    );
    assert_eq!(
        std::fs::read(d.join("beside.txt")).unwrap(),
        b"user file beside the export"
    );
    // An export made before distiset.json listed its files is still recognised as one.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ds.join("distiset.json")).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("files");
    std::fs::write(ds.join("distiset.json"), json.to_string()).unwrap();
    let out = export(d, &ab, "ds", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(names(&ds).contains(&"beta/train/data-00000.parquet".to_owned()));
    assert!(!ds.join("gamma").exists(), "gamma of the older export kept");
    // A distiset.json pointing outside the directory is not trusted.
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ds.join("distiset.json")).unwrap()).unwrap();
    json["files"] = serde_json::json!(["../beside.txt", "distiset.json"]);
    std::fs::write(ds.join("distiset.json"), json.to_string()).unwrap();
    let out = export(d, &ac, "ds", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("../beside.txt"), "{}", stderr(&out));
    assert!(d.join("beside.txt").exists());
}

#[test]
fn an_export_killed_while_moving_files_in_is_cleaned_up_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ab = finished_run(d, "ab", &["alpha", "beta"], 4);
    let ac = finished_run(d, "ac", &["alpha", "gamma"], 6);
    let out = export(d, &ab, "ds", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = export(d, &ac, "scratch", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    // What an export of `ac` into ds leaves when killed after moving gamma's file in: the
    // earlier distiset.json in place, the new one still in the staging directory.
    let ds = d.join("ds");
    std::fs::create_dir_all(ds.join(STAGING).join("alpha/train")).unwrap();
    std::fs::copy(
        d.join("scratch/distiset.json"),
        ds.join(STAGING).join("distiset.json"),
    )
    .unwrap();
    std::fs::copy(
        d.join("scratch/alpha/train/data-00000.parquet"),
        ds.join(STAGING).join("alpha/train/data-00000.parquet"),
    )
    .unwrap();
    std::fs::create_dir_all(ds.join("gamma/train")).unwrap();
    std::fs::copy(
        d.join("scratch/gamma/train/data-00000.parquet"),
        ds.join("gamma/train/data-00000.parquet"),
    )
    .unwrap();
    let out = export(d, &ab, "ds", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        names(&ds),
        [
            "README.md",
            "alpha/",
            "alpha/train/",
            "alpha/train/data-00000.parquet",
            "beta/",
            "beta/train/",
            "beta/train/data-00000.parquet",
            "distiset.json",
            "pipeline.yaml"
        ]
    );
}

/// A run database written directly: one leaf `gen` whose rows hold NaN and infinities.
fn non_finite_run(dir: &Path) -> PathBuf {
    one_leaf_run(
        dir,
        "gen",
        &[1.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -2.0],
    )
}

/// A run database written through the storage API, whose one leaf `leaf` holds a row per
/// value `x`.
fn one_leaf_run(dir: &Path, leaf: &str, values: &[f64]) -> PathBuf {
    let db = dir.join("nan.redb");
    let pipeline = format!(
        "name: nan\nsteps:\n  - name: '{leaf}'\n    type: inline\n    params: {{rows: []}}\n"
    );
    let log = RunLog::create(
        &db,
        NewRun {
            signature: "nan".into(),
            pipeline,
            created_by: "tests".into(),
        },
    )
    .unwrap();
    let rows: Vec<Row> = values
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            Row::new()
                .with("id", i as i64)
                .with("x", x)
                .with("xs", vec![x, 0.0])
        })
        .collect();
    log.commit(Progress::new().batch(Batch {
        step: leaf.into(),
        seq: 0,
        rows,
        last: true,
    }))
    .unwrap();
    drop(log);
    db
}

#[test]
fn a_leaf_name_stored_by_an_older_version_that_escapes_out_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("work")).unwrap();
    let db = one_leaf_run(d, "../escaped_leaf", &[1.0]);
    let out = export(d, &db, "work/out", &["--format", "jsonl"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("../escaped_leaf") && stderr(&out).contains("not a safe file name"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("work/escaped_leaf").exists() && !d.join("escaped_leaf").exists());
}

#[test]
fn non_finite_floats_are_floats_in_parquet_and_counted_nulls_in_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = non_finite_run(d);
    let out = export(d, &db, "js", &["--format", "jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("warning: gen: 3 NaN or infinite values in column 'x' written as null")
            && err.contains("column 'xs'"),
        "{err}"
    );
    let rows = read_jsonl(&d.join("js/gen/train/data-00000.jsonl"));
    let x: Vec<&serde_json::Value> = rows.iter().map(|r| &r["x"]).collect();
    assert_eq!(
        x,
        [
            &serde_json::json!(1.5),
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &serde_json::json!(-2.0)
        ]
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("js/distiset.json")).unwrap()).unwrap();
    assert_eq!(
        json["leaves"][0]["non_finite_as_null"],
        serde_json::json!({"x": 3, "xs": 3})
    );
    let card = std::fs::read_to_string(d.join("js/README.md")).unwrap();
    assert!(card.contains("gen.x: 3"), "{card}");

    let out = export(d, &db, "pq", &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
    assert!(stdout(&out).contains("gen: 5 rows"), "{}", stdout(&out));
    let python = common::python::python();
    let script = "import sys, math, pyarrow.parquet as pq\n\
        t = pq.read_table(sys.argv[1])\n\
        assert str(t.schema.field('x').type) == 'double', t.schema\n\
        x = t.column('x').to_pylist()\n\
        assert x[0] == 1.5 and math.isnan(x[1]) and x[2] == math.inf and x[3] == -math.inf and x[4] == -2.0, x\n\
        xs = t.column('xs').to_pylist()\n\
        assert math.isnan(xs[1][0]) and xs[2][0] == math.inf, xs\n\
        print('ok')\n";
    let check = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(d.join("pq/gen/train/data-00000.parquet"))
        .output()
        .unwrap();
    assert!(
        check.status.success() && stdout(&check).contains("ok"),
        "{}",
        stderr(&check)
    );
    // `datasets` reads the JSONL export's nulls as missing values of a float column.
    let script = "import sys, datasets\n\
        ds = datasets.load_dataset(sys.argv[1], 'gen', split='train')\n\
        assert ds.features['x'].dtype == 'float64', ds.features\n\
        assert ds['x'] == [1.5, None, None, None, -2.0], ds['x']\n\
        print('ok')\n";
    let check = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(d.join("js"))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_DATASETS_CACHE", d.join("hf-cache"))
        .output()
        .unwrap();
    assert!(
        check.status.success() && stdout(&check).contains("ok"),
        "{}",
        stderr(&check)
    );
}
