"""Python steps the tests' pipelines use, by YAML (`type: py:pysteps:NAME`) and from Python.
Steps that record what happens to them append lines to the file their `log` parameter names."""

import time

import distill


def _note(path, text):
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text + "\n")


@distill.generator(outputs=["n", "text"])
def numbers(count=10):
    for i in range(count):
        yield {"n": i, "text": f"row {i}"}


@distill.step(inputs=["text"], outputs=["upper"])
def upper(rows):
    for row in rows:
        row["upper"] = row["text"].upper()
    return rows


@distill.step(inputs=["text"], outputs=["upper"], format="arrow")
def upper_arrow(table):
    import pyarrow.compute as pc

    return table.append_column("upper", pc.utf8_upper(table["text"]))


@distill.step(inputs=["text"], outputs=["upper"])
def slow_upper(rows, delay=0.0):
    time.sleep(delay)
    for row in rows:
        row["upper"] = row["text"].upper()
    return rows


@distill.step(inputs=["n"], outputs=["checked"])
def fail_at(rows, n=5):
    for row in rows:
        if row["n"] == n:
            raise ValueError(f"row {n} is not welcome")
        row["checked"] = True
    return rows


@distill.global_step(inputs=["n"])
def top(rows, k=3):
    return sorted(rows, key=lambda r: -r["n"])[:k]


@distill.task(inputs=["text"], outputs=["answer"])
def echo_service(rows, ctx, log=""):
    def call(request):
        _note(log, f"paid {request['prompt']}")
        return {"text": "answer to " + request["prompt"]}

    for row in rows:
        row["answer"] = ctx.call({"model": "echo-1", "prompt": row["text"]}, call)["text"]
    return rows


class Tagger(distill.Step):
    """A class step with a lifecycle that leaves a trace."""

    inputs = ["text"]
    outputs = ["tag"]

    def __init__(self, tag="x", log="", delay=0.0):
        super().__init__(tag=tag, log=log, delay=delay)
        self.client = None

    def load(self):
        _note(self.log, "load")
        self.client = f"client-{self.tag}"

    def unload(self):
        _note(self.log, "unload")
        self.client = None

    def process(self, rows):
        if self.client is None:
            raise RuntimeError("processed while not loaded")
        time.sleep(self.delay)
        for row in rows:
            row["tag"] = f"{self.tag}:{row['text']}"
        return rows


class Countdown(distill.Generator):
    outputs = ["n"]

    def __init__(self, start=5):
        super().__init__(start=start)

    def generate(self):
        for i in range(self.start, 0, -1):
            yield [{"n": i}]
