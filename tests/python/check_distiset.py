"""Reads a distill Parquet export with pyarrow and `datasets`, independently of distill, and
compares every config with the JSONL export of the same run.

usage: check_distiset.py PARQUET_DIR JSONL_DIR
Prints one JSON line per config: {"config", "rows", "columns"}; exits 1 on any mismatch.
Documented conversions applied to the JSONL side: ints in a float column become floats, values
in a mixed column become JSON text (strings stay as they are).
"""

import json
import math
import pathlib
import sys

import datasets
import pyarrow.parquet as pq


def normalise(value, arrow_type):
    import pyarrow as pa

    if value is None:
        return None
    if pa.types.is_string(arrow_type) and not isinstance(value, str):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if pa.types.is_floating(arrow_type):
        return float(value)
    if pa.types.is_list(arrow_type):
        return [normalise(v, arrow_type.value_type) for v in value]
    if pa.types.is_struct(arrow_type):
        return {f.name: normalise(value.get(f.name), f.type) for f in arrow_type}
    return value


def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def main():
    pdir, jdir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    meta = json.loads((pdir / "distiset.json").read_text())
    ok = True
    for leaf in meta["leaves"]:
        name = leaf["name"]
        table = pq.read_table(sorted((pdir / name / "train").glob("*.parquet")))
        rows = table.to_pylist()
        expected = [json.loads(l) for l in (jdir / name / "train" / "data-00000.jsonl").read_text().splitlines()]
        schema = {f.name: f.type for f in table.schema}
        expected = [{k: normalise(r.get(k), t) for k, t in schema.items()} for r in expected]
        if len(rows) != len(expected) or len(rows) != leaf["rows"]:
            print(f"{name}: {len(rows)} parquet rows, {len(expected)} jsonl rows, {leaf['rows']} in metadata")
            ok = False
        for i, (a, b) in enumerate(zip(rows, expected)):
            if not same(a, b):
                print(f"{name} row {i}: parquet {a!r} != jsonl {b!r}")
                ok = False
                break
        ds = datasets.load_dataset(str(pdir), name, split="train")
        if ds.num_rows != len(rows) or (rows and not same(ds[0], rows[0])):
            print(f"{name}: datasets read {ds.num_rows} rows, first {ds[0] if ds.num_rows else None!r}")
            ok = False
        print(json.dumps({"config": name, "rows": len(rows), "columns": {k: str(t) for k, t in schema.items()}}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
