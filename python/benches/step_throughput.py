"""Rows/s through a Python step that upper-cases a column: 1M rows, batches of 1,000, as dict
rows and as `format="arrow"`, with the durable run log; beside the same pipeline with the
built-in Rust step `format_text` doing the same work (what the engine alone costs).

    pip install ./python && python python/benches/step_throughput.py [ROWS]

Prints one line per variant: rows, seconds, rows/s (best of REPEATS runs).
"""

import json
import os
import sys
import tempfile
import time

import distill

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
BATCH = 1000
REPEATS = 2


@distill.step(inputs=["text"], outputs=["upper"])
def upper(rows):
    for row in rows:
        row["upper"] = row["text"].upper()
    return rows


@distill.step(inputs=["text"], outputs=["upper"], format="arrow")
def upper_arrow(table):
    import pyarrow.compute as pc

    return table.append_column("upper", pc.utf8_upper(table["text"]))


def pipeline(kind, data):
    p = distill.Pipeline(f"bench-{kind}")
    load = p.step("load", "load_jsonl", batch_size=BATCH, params={"path": data})
    if kind == "rust":
        step = p.step(
            "upper", "format_text", params={"template": "{{ text | upper }}", "output": "upper"}
        )
    else:
        step = p.step("upper", upper if kind == "dicts" else upper_arrow)
    load >> step
    return p


def main():
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        data = os.path.join(tmp, "rows.jsonl")
        with open(data, "w") as f:
            for i in range(ROWS):
                f.write(json.dumps({"id": i, "text": f"row number {i} of the benchmark"}) + "\n")
        print(f"{ROWS} rows, batches of {BATCH}, durable run log, {os.cpu_count()} cores")
        for kind in ("dicts", "arrow", "rust"):
            best = None
            for r in range(REPEATS):
                db = os.path.join(tmp, f"{kind}-{r}.redb")
                start = time.perf_counter()
                summary = pipeline(kind, data).run(db, progress=False)
                secs = time.perf_counter() - start
                assert summary.leaves == {"upper": ROWS}, summary
                best = secs if best is None else min(best, secs)
                os.remove(db)
            print(f"{kind:>6}: {ROWS} rows in {best:.2f} s = {ROWS / best:,.0f} rows/s")


if __name__ == "__main__":
    main()
