"""The same step in distilabel (1.5.3): a `@step` that upper-cases a column, 1M rows from
`LoadDataFromDicts`, batches of 1,000. Run in an environment with `distilabel==1.5.3` and
`requests` installed:

    python python/benches/distilabel_step_throughput.py [ROWS]
"""

import sys
import time

from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts, StepInput, step

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
BATCH = 1000


@step(inputs=["text"], outputs=["upper"])
def Upper(inputs: StepInput):
    for row in inputs:
        row["upper"] = row["text"].upper()
    yield inputs


def main():
    rows = [{"id": i, "text": f"row number {i} of the benchmark"} for i in range(ROWS)]
    with Pipeline(name="bench-upper") as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=BATCH)
        upper = Upper(input_batch_size=BATCH)
        load >> upper
    start = time.perf_counter()
    distiset = pipeline.run(use_cache=False)
    secs = time.perf_counter() - start
    n = len(distiset["default"]["train"])
    assert n == ROWS, n
    print(f"distilabel: {ROWS} rows in {secs:.2f} s = {ROWS / secs:,.0f} rows/s")


if __name__ == "__main__":
    main()
