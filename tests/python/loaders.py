"""Writes the inputs of distill's loader tests with the official writers (pyarrow, `datasets`)
and checks what distill read against what those libraries read back.

usage:
  loaders.py write DIR           types.parquet (every Arrow type `datasets` writes, nulls, small
                                 row groups), datasets.parquet (`Dataset.to_parquet`),
                                 interval/ (an Arrow folder with a type distill cannot read), saved/ (a
                                 `Dataset.save_to_disk`), saved_dict/ (a `DatasetDict` with
                                 train and test), hub/ (a folder to upload: card with configs,
                                 `default` with two Parquet shards of `train`, `extra` with a
                                 JSONL.gz `test` split)
  loaders.py rows FILE N GROUP [TAG]   FILE.parquet with N rows (id, text) in row groups of
                                 GROUP; TAG goes into the footer's metadata only
  loaders.py compare-parquet PARQUET JSONL    pyarrow's values of PARQUET equal distill's
                                               export JSONL, column by column, by type
  loaders.py compare-disk DIR SPLIT JSONL     `datasets.load_from_disk`'s values equal JSONL
  loaders.py compare-hub REPO CONFIG SPLIT JSONL   `datasets.load_dataset` from the Hub
                                                   (HF_ENDPOINT) equals JSONL
  loaders.py push-to-hub REPO    `Dataset.push_to_hub` of a small dataset (HF_ENDPOINT)
  loaders.py upload REPO DIR [private]   `HfApi.upload_folder` of DIR as a dataset
                                         (HF_ENDPOINT), creating the repository

Exits 1, printing every difference, when values differ.
"""

import base64
import datetime as dt
import decimal
import json
import math
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq

N = 23


def types_table():
    n = N
    ids = list(range(n))
    nulls = lambda xs: [None if i % 7 == 3 else x for i, x in enumerate(xs)]
    utc = pa.timestamp("us", tz="UTC")
    paris = pa.timestamp("ms", tz="Europe/Paris")
    base = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.timezone.utc)
    columns = {
        "i8": pa.array(nulls([i - 11 for i in ids]), pa.int8()),
        "i16": pa.array([i * -300 for i in ids], pa.int16()),
        "i32": pa.array([i * 70000 for i in ids], pa.int32()),
        "i64": pa.array([i * 2**40 for i in ids], pa.int64()),
        "u8": pa.array([i * 10 for i in ids], pa.uint8()),
        "u16": pa.array([i * 2000 for i in ids], pa.uint16()),
        "u32": pa.array([i * 2**27 for i in ids], pa.uint32()),
        "u64": pa.array([2**64 - 1 - i for i in ids], pa.uint64()),
        "f16": pa.array([i / 8 for i in ids], pa.float16()),
        "f32": pa.array(nulls([i / 10 for i in ids]), pa.float32()),
        "f64": pa.array([i / 3 for i in ids], pa.float64()),
        "flag": pa.array(nulls([i % 2 == 0 for i in ids]), pa.bool_()),
        "text": pa.array(nulls([f"row {i} é ✓" for i in ids]), pa.string()),
        "large_text": pa.array([f"large {i}" for i in ids], pa.large_string()),
        "view_text": pa.array([f"view {i}" for i in ids], pa.string_view()),
        "blob": pa.array(nulls([bytes([i, 0, 255]) for i in ids]), pa.binary()),
        "large_blob": pa.array([bytes([i]) * 3 for i in ids], pa.large_binary()),
        "fixed_blob": pa.array([bytes([i, i]) for i in ids], pa.binary(2)),
        "tags": pa.array(nulls([[f"t{k}" for k in range(i % 4)] for i in ids]), pa.list_(pa.string())),
        "large_list": pa.array([[i, None] for i in ids], pa.large_list(pa.int32())),
        "embedding": pa.array([[i * 0.5, -i * 0.25, 1.0] for i in ids], pa.list_(pa.float32(), 3)),
        "record": pa.array(
            nulls([{"name": f"n{i}", "score": i * 1.5, "inner": {"ok": i % 3 == 0}} for i in ids]),
            pa.struct([("name", pa.string()), ("score", pa.float64()), ("inner", pa.struct([("ok", pa.bool_())]))]),
        ),
        "nothing": pa.nulls(n),
        "ts_utc": pa.array(nulls([base + dt.timedelta(seconds=i * 3601, microseconds=i * 250) for i in ids]), utc),
        "ts_paris": pa.array([base + dt.timedelta(days=i) for i in ids], paris),
        "ts_naive_s": pa.array([dt.datetime(2001, 2, 3, 4, 5, 6) + dt.timedelta(minutes=i) for i in ids], pa.timestamp("s")),
        "ts_ns": pa.array([1_700_000_000_000_000_000 + i * 1_000_000_007 for i in ids], pa.timestamp("ns")),
        "day": pa.array(nulls([dt.date(1999, 12, 31) + dt.timedelta(days=i) for i in ids]), pa.date32()),
        "day64": pa.array([dt.date(2020, 2, 28) + dt.timedelta(days=i) for i in ids], pa.date64()),
        "clock_ms": pa.array([dt.time(1, 2, 3, i * 1000) for i in ids], pa.time32("ms")),
        "clock_us": pa.array([dt.time(23, 59, 59, i) for i in ids], pa.time64("us")),
        "wait_s": pa.array([dt.timedelta(seconds=i * 5) for i in ids], pa.duration("s")),
        "wait_us": pa.array([dt.timedelta(microseconds=i * 7) for i in ids], pa.duration("us")),
        "price": pa.array([decimal.Decimal(i * 101 - 300) / 100 for i in ids], pa.decimal128(10, 2)),
        "label": pa.array([["cat", "dog", None][i % 3] for i in ids]).dictionary_encode(),
    }
    return pa.table(columns)


def write(out: pathlib.Path):
    import datasets

    datasets.disable_progress_bars()
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(types_table(), out / "types.parquet", row_group_size=5)
    features = datasets.Features(
        {
            "id": datasets.Value("int32"),
            "text": datasets.Value("string"),
            "score": datasets.Value("float32"),
            "label": datasets.ClassLabel(names=["neg", "pos"]),
            "tokens": datasets.Sequence(datasets.Value("string")),
            "vec": datasets.Sequence(datasets.Value("float64"), length=2),
            "meta": {"source": datasets.Value("string"), "n": datasets.Value("int64")},
            "when": datasets.Value("timestamp[s]"),
        }
    )
    data = {
        "id": list(range(N)),
        "text": [f"text {i}" for i in range(N)],
        "score": [i / 7 for i in range(N)],
        "label": [i % 2 for i in range(N)],
        "tokens": [[f"w{k}" for k in range(i % 3)] for i in range(N)],
        "vec": [[i, -i] for i in range(N)],
        "meta": [{"source": "s", "n": i} for i in range(N)],
        "when": [dt.datetime(2020, 1, 1) + dt.timedelta(hours=i) for i in range(N)],
    }
    ds = datasets.Dataset.from_dict(data, features=features)
    ds.to_parquet(str(out / "datasets.parquet"))
    ds.save_to_disk(str(out / "saved"), max_shard_size="1KB")
    datasets.DatasetDict({"train": ds, "test": ds.select(range(5)).flatten_indices()}).save_to_disk(str(out / "saved_dict"))
    # Parquet cannot hold an interval; an Arrow folder as save_to_disk lays it out can.
    interval = pa.table({"ok": pa.array([1, 2]), "span": pa.array([(1, 2, 3), (4, 5, 6)], pa.month_day_nano_interval())})
    (out / "interval").mkdir(exist_ok=True)
    with pa.ipc.new_stream(out / "interval" / "data-00000-of-00001.arrow", interval.schema) as w:
        w.write_table(interval)
    (out / "interval" / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}], "_split": None}))
    hub = out / "hub"
    (hub / "data").mkdir(parents=True, exist_ok=True)
    rows = pa.table({"id": pa.array(range(40), pa.int64()), "text": [f"hub row {i}" for i in range(40)]})
    pq.write_table(rows.slice(0, 25), hub / "data" / "train-00000-of-00002.parquet", row_group_size=10)
    pq.write_table(rows.slice(25), hub / "data" / "train-00001-of-00002.parquet", row_group_size=10)
    import gzip

    (hub / "extra").mkdir(exist_ok=True)
    with gzip.open(hub / "extra" / "test.jsonl.gz", "wt") as f:
        for i in range(7):
            f.write(json.dumps({"id": 100 + i, "text": f"test row {i}"}) + "\n")
    (hub / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*.parquet\n"
        "- config_name: extra\n  data_files:\n  - split: test\n    path: extra/test.jsonl.gz\n---\n# Uploaded with huggingface_hub\n"
    )


def write_rows(path: str, n: int, group: int, tag: str):
    table = pa.table({"id": pa.array(range(n), pa.int64()), "text": [f"text of row {i} " * 3 for i in range(n)]})
    table = table.replace_schema_metadata({"tag": tag})
    pq.write_table(table, path, row_group_size=group)


def epoch_ns(value, unit):
    """Nanoseconds since the epoch of a timestamp value as pyarrow gives it."""
    if type(value).__name__ == "Timestamp":  # pandas, for nanosecond columns
        return int(value.value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def parse_ours(text):
    """Nanoseconds since the epoch of distill's RFC 3339 text, and whether it ends in Z."""
    zoned = text.endswith("Z")
    body = text[:-1] if zoned else text
    seconds, _, fraction = body.partition(".")
    whole = dt.datetime.fromisoformat(seconds).replace(tzinfo=dt.timezone.utc)
    delta = whole - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    nanos = int((fraction + "000000000")[:9]) if fraction else 0
    return (delta.days * 86400 + delta.seconds) * 10**9 + nanos, zoned


def same(t: pa.DataType, theirs, ours, where, problems):
    def bad(why):
        problems.append(f"{where}: {why}: pyarrow {theirs!r}, distill {ours!r}")

    if theirs is None:
        if ours is not None:
            bad("null expected")
        return
    if pa.types.is_dictionary(t):
        return same(t.value_type, theirs, ours, where, problems)
    if pa.types.is_floating(t):
        if isinstance(theirs, float) and math.isnan(theirs):
            if ours is not None:
                bad("NaN is exported as null")
        elif not isinstance(ours, (int, float)) or float(ours) != float(theirs):
            bad("floats differ")
    elif pa.types.is_integer(t) or pa.types.is_boolean(t):
        if ours != theirs or type(ours) is not type(theirs):
            bad("differ")
    elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        if ours != theirs:
            bad("differ")
    elif pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_binary_view(t):
        if ours != list(theirs):
            bad("bytes differ")
    elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        if not isinstance(ours, list) or len(ours) != len(theirs):
            bad("lists differ")
            return
        for k, (a, b) in enumerate(zip(theirs, ours)):
            same(t.value_type, a, b, f"{where}[{k}]", problems)
    elif pa.types.is_struct(t):
        if not isinstance(ours, dict) or list(ours) != [f.name for f in t]:
            bad("struct fields differ")
            return
        for f in t:
            same(f.type, theirs[f.name], ours[f.name], f"{where}.{f.name}", problems)
    elif pa.types.is_timestamp(t):
        nanos, zoned = parse_ours(ours)
        if nanos != epoch_ns(theirs, t.unit) or zoned != (t.tz is not None):
            bad("timestamps differ")
    elif pa.types.is_date(t):
        if ours != theirs.isoformat():
            bad("dates differ")
    elif pa.types.is_time(t):
        if dt.time.fromisoformat(ours) != theirs:
            bad("times differ")
    elif pa.types.is_duration(t):
        unit = {"s": dt.timedelta(seconds=1), "ms": dt.timedelta(milliseconds=1), "us": dt.timedelta(microseconds=1)}[t.unit]
        if ours != theirs // unit:
            bad("durations differ")
    elif pa.types.is_decimal(t):
        if decimal.Decimal(ours) != theirs:
            bad("decimals differ")
    elif pa.types.is_null(t):
        if ours is not None:
            bad("null column")
    else:
        bad(f"no rule for type {t}")


def compare(table: pa.Table, jsonl: str) -> int:
    ours = [json.loads(line) for line in pathlib.Path(jsonl).read_text().splitlines() if line.strip()]
    problems = []
    if len(ours) != table.num_rows:
        problems.append(f"{table.num_rows} rows in the source, {len(ours)} read by distill")
    for k, row in enumerate(ours[: table.num_rows]):
        if list(row) != table.column_names:
            problems.append(f"row {k}: columns {list(row)} != {table.column_names}")
            continue
        for name in table.column_names:
            column = table.column(name)
            same(column.type, column[k].as_py(), row[name], f"row {k} column {name} ({column.type})", problems)
    for p in problems[:40]:
        print(p, file=sys.stderr)
    print(json.dumps({"rows": len(ours), "columns": table.column_names, "problems": len(problems)}))
    return 1 if problems else 0


def main() -> int:
    cmd = sys.argv[1]
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass
    if cmd == "write":
        write(pathlib.Path(sys.argv[2]))
        return 0
    if cmd == "rows":
        write_rows(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "")
        return 0
    if cmd == "compare-parquet":
        return compare(pq.read_table(sys.argv[2]), sys.argv[3])
    if cmd == "compare-disk":
        import datasets

        ds = datasets.load_from_disk(sys.argv[2])
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[sys.argv[3]]
        return compare(ds.data.table, sys.argv[4])
    if cmd == "compare-hub":
        import datasets

        ds = datasets.load_dataset(sys.argv[2], sys.argv[3], split=sys.argv[4])
        return compare(ds.data.table, sys.argv[5])
    if cmd == "push-to-hub":
        import datasets

        ds = datasets.Dataset.from_dict(
            {"id": list(range(30)), "text": [f"pushed {i}" for i in range(30)], "score": [i / 4 for i in range(30)]},
            features=datasets.Features({"id": datasets.Value("int64"), "text": datasets.Value("string"), "score": datasets.Value("float32")}),
        )
        ds.push_to_hub(sys.argv[2], private=False, max_shard_size="1KB")
        return 0
    if cmd == "upload":
        from huggingface_hub import HfApi

        api = HfApi()
        private = len(sys.argv) > 4 and sys.argv[4] == "private"
        api.create_repo(sys.argv[2], repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(repo_id=sys.argv[2], repo_type="dataset", folder_path=sys.argv[3])
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
