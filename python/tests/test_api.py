"""The pipeline API: builder and YAML, `>>`, info, run and resume, status, export, load."""

import pathlib

import pyarrow.parquet as pq
import pytest

import distill
import pysteps

ROWS = [{"text": f"line {i}", "n": i} for i in range(7)]


def build(name="api"):
    p = distill.Pipeline(name)
    load = p.step("load", "inline", batch_size=3, params={"rows": ROWS})
    shout = p.step("shout", pysteps.upper, input_batch_size=2)
    load >> shout
    return p


def test_builder_info_and_yaml_round_trip(tmp_path):
    p = build()
    info = p.info()
    assert info["leaves"] == ["shout"]
    (load, shout), = info["stages"]
    assert load["kind"] == "generator" and load["batch_size"] == 3
    assert shout["type"] == "py:pysteps:upper" and shout["after"] == ["load"]
    assert shout["columns"] == ["text", "n", "upper"]
    assert "stage 0:" in str(info) and "py:pysteps:upper" in str(info)
    path = tmp_path / "p.yaml"
    p.save(path)
    again = distill.Pipeline.from_yaml(path)
    assert again.info()["signature"] == info["signature"]
    sigs = lambda i: [(s["name"], s["type"], s["signature"]) for st in i["stages"] for s in st]
    assert sigs(again.info()) == sigs(info)


def test_chaining_and_fan_in():
    p = distill.Pipeline("chain")
    a = p.step("a", "inline", params={"rows": ROWS})
    b = a.step("b", pysteps.upper)
    c = p.step("c", "keep_columns", params={"columns": ["n", "text"]})
    a >> c
    d = [b, c] >> p.step("d", "combine_columns", params={"columns": ["text"], "on": ["n"]})
    assert isinstance(d, distill.StepRef)
    info = p.info()
    steps = {s["name"]: s for stage in info["stages"] for s in stage}
    assert steps["b"]["after"] == ["a"]
    assert steps["d"]["after"] == ["b", "c"]


def test_invalid_pipelines_raise_pipeline_error_naming_the_step():
    p = distill.Pipeline("bad")
    p.step("load", "inline", params={"rows": ROWS})
    p.step("shout", pysteps.upper, after="load", input_mappings={"text": "nope"})
    with pytest.raises(distill.PipelineError, match="shout.*nope"):
        p.info()
    p = distill.Pipeline("bad")
    p.step("load", "no_such_type")
    with pytest.raises(distill.PipelineError, match="no_such_type"):
        p.info()
    with pytest.raises(distill.PipelineError, match="twice"):
        p.step("load", "inline")
    with pytest.raises(TypeError, match="Python step"):
        distill.Pipeline("x").step("s", print)


def test_yaml_py_types_are_imported(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: y\nsteps:\n"
        "  - {name: gen, type: 'py:pysteps:numbers', batch_size: 4, params: {count: 9}}\n"
        "  - {name: shout, type: 'py:pysteps:upper', after: [gen]}\n"
        "  - {name: best, type: 'py:pysteps:top', after: [shout], params: {k: 2}}\n"
    )
    summary = distill.Pipeline.from_yaml(path).run(tmp_path / "run.redb", progress=False)
    assert summary.leaves == {"best": 2}
    rows = distill.load(tmp_path / "run.redb")["best"].to_list()
    assert rows == [
        {"n": 8, "text": "row 8", "upper": "ROW 8"},
        {"n": 7, "text": "row 7", "upper": "ROW 7"},
    ]
    path.write_text("name: y\nsteps:\n  - {name: gen, type: 'py:pysteps:nothing_here'}\n")
    with pytest.raises(distill.PipelineError, match="nothing_here"):
        distill.Pipeline.from_yaml(path).info()
    path.write_text("name: y\nsteps:\n  - {name: gen, type: 'py:pathlib:Path'}\n")
    with pytest.raises(distill.PipelineError, match="not a distill step"):
        distill.Pipeline.from_yaml(path).info()


def test_run_again_resumes_or_says_it_is_finished(tmp_path):
    db = tmp_path / "run.redb"
    first = build().run(db, progress=False)
    assert first.leaves == {"shout": 7}
    assert not first.resumed and not first.already_finished
    again = build().run(db, progress=False)
    assert again.already_finished and again.leaves == {"shout": 7}
    assert "already finished" in str(again)
    status = distill.status(db)
    assert status["status"] == "finished"
    assert {s["step"]: s["rows"] for s in status["steps"]} == {"load": 7, "shout": 7}
    new = build().run(db, new=True, progress=False)
    assert not new.already_finished and not new.resumed


def test_another_pipeline_in_the_same_db_is_refused_with_advice(tmp_path):
    db = tmp_path / "run.redb"
    build("one").run(db, progress=False)
    with pytest.raises(distill.DistillError, match="--new|another"):
        build("two").run(db, progress=False)


def test_load_equals_the_parquet_export(tmp_path):
    db = tmp_path / "run.redb"
    rows = [
        {"i": 1, "f": 0.5, "s": "a", "b": True, "l": [1, 2], "m": {"x": 1}, "raw": b"\x00\x01", "none": None},
        {"i": -2, "f": float("nan"), "s": None, "b": False, "l": [], "m": {"x": None, "y": "z"}, "raw": b"", "none": None},
        {"i": 2, "f": 3, "s": "\u00e9", "b": None, "l": None, "m": None, "raw": None, "none": None},
        {"i": 7, "f": float("inf"), "s": "mixed", "b": True, "l": [0.5, None], "m": {"x": 2}, "raw": b"z", "none": None},
    ]

    @distill.generator(outputs=list(rows[0]))
    def typed_rows():
        return [dict(r) for r in rows]

    p = distill.Pipeline("types")
    p.step("load", typed_rows, batch_size=3)
    p.run(db, progress=False)
    out = tmp_path / "out"
    report = distill.export(db, out)
    assert report["leaves"][0]["rows"] == 4
    exported = pq.read_table(out / "load" / "train" / "data-00000.parquet")
    loaded = distill.load(db)["load"]
    table = loaded.data.table
    assert table.schema.types == exported.schema.types
    assert table.column_names == exported.column_names
    as_lists = lambda t: [[repr(v) for v in col.to_pylist()] for col in t.columns]
    assert as_lists(table) == as_lists(exported)
    assert loaded[1]["raw"] == b"" and loaded[0]["m"] == {"x": 1, "y": None}


def test_values_cross_the_boundary_unchanged(tmp_path):
    seen = []

    @distill.step(inputs=["v"], outputs=["kind"])
    def inspect_values(rows):
        for row in rows:
            seen.append(row["v"])
            row["kind"] = type(row["v"]).__name__
        return rows

    values = [None, True, -3, 2**64 - 1, 1.25, "text", [1, "a", None], {"k": [1.5]}]
    p = distill.Pipeline("values")
    p.step("load", "inline", params={"rows": [{"v": v} for v in values]})
    p.step("look", inspect_values, after="load")
    p.run(tmp_path / "run.redb", progress=False)
    assert seen == values
    assert [type(v) for v in seen] == [type(v) for v in values]

    @distill.step(inputs=["v"], outputs=["bad"])
    def returns_a_set(rows):
        return [dict(row, bad={1, 2}) for row in rows]

    p = distill.Pipeline("bad-values")
    p.step("load", "inline", params={"rows": [{"v": 1}]})
    p.step("oops", returns_a_set, after="load")
    with pytest.raises(distill.StepFailedError, match="column 'bad'.*set"):
        p.run(tmp_path / "bad.redb", progress=False)


def test_status_and_export_of_a_missing_db_raise(tmp_path):
    with pytest.raises(distill.DistillError):
        distill.status(tmp_path / "missing.redb")
    with pytest.raises(distill.DistillError, match="parquet"):
        distill.export(tmp_path / "missing.redb", tmp_path / "o", format="csv")
