"""Python steps of each kind, their lifecycle, their errors, and their code in the signature."""

import pytest

import distill
import pysteps

ROWS = [{"text": f"line {i}", "n": i} for i in range(10)]


def source(p, rows=ROWS, batch_size=4):
    return p.step("load", "inline", batch_size=batch_size, params={"rows": rows})


def leaf(db, name):
    return distill.load(db)[name].to_list()


def test_a_step_in_dicts_and_in_arrow_give_the_same_rows(tmp_path):
    for fn in (pysteps.upper, pysteps.upper_arrow):
        p = distill.Pipeline("kinds")
        source(p) >> p.step("shout", fn, input_batch_size=3)
        db = tmp_path / f"{fn.__name__}.redb"
        assert p.run(db, progress=False).leaves == {"shout": 10}
        assert leaf(db, "shout") == [dict(r, upper=r["text"].upper()) for r in ROWS]


def test_global_step_generators_and_params(tmp_path):
    p = distill.Pipeline("gens")
    gen = p.step("gen", pysteps.numbers, batch_size=3, params={"count": 8})
    gen >> p.step("best", pysteps.top, params={"k": 3})
    p.step("down", pysteps.Countdown, batch_size=2, params={"start": 5})
    db = tmp_path / "run.redb"
    summary = p.run(db, progress=False)
    assert summary.leaves == {"best": 3, "down": 5}
    assert [r["n"] for r in leaf(db, "best")] == [7, 6, 5]
    assert [r["n"] for r in leaf(db, "down")] == [5, 4, 3, 2, 1]
    info = {s["name"]: s for st in p.info()["stages"] for s in st}
    assert info["best"]["kind"] == "global" and info["best"]["type"] == "py:pysteps:top"


def test_a_task_keeps_never_pay_twice_with_the_request_cache(tmp_path):
    log = tmp_path / "paid.log"

    def build(rows):
        p = distill.Pipeline("task")
        source(p, rows) >> p.step("ask", pysteps.echo_service, params={"log": str(log)})
        return p

    db = tmp_path / "run.redb"
    build(ROWS[:6]).run(db, progress=False)
    assert log.read_text().count("paid") == 6
    assert leaf(db, "ask")[0]["answer"] == "answer to line 0"
    # A new run with more rows (the same requests and four new ones) pays for the new ones only.
    build(ROWS).run(db, new=True, progress=False)
    assert log.read_text().count("paid") == 10
    counters = {s["step"]: s["counters"] for s in distill.status(db)["steps"]}["ask"]
    assert counters == {"cache_hits": 6, "requests": 4}


def test_an_exception_fails_the_step_with_its_traceback(tmp_path):
    p = distill.Pipeline("fails")
    source(p) >> p.step("check", pysteps.fail_at, input_batch_size=2, params={"n": 5})
    db = tmp_path / "run.redb"
    with pytest.raises(distill.StepFailedError) as err:
        p.run(db, progress=False)
    message = str(err.value)
    assert "ValueError: row 5 is not welcome" in message
    assert "Traceback (most recent call last)" in message and "pysteps.py" in message
    status = distill.status(db)
    assert status["status"] == "failed"
    check = {s["step"]: s for s in status["steps"]}["check"]
    assert check["state"] == "failed"
    assert "ValueError: row 5 is not welcome" in check["error"]
    assert 'raise ValueError(f"row {n} is not welcome")' in check["error"]
    assert check["rows"] == 4, "the batches before the failing one are committed"


def test_a_class_step_is_loaded_by_the_run_and_unloaded_after(tmp_path):
    log = tmp_path / "life.log"
    tagger = pysteps.Tagger(tag="t", log=str(log))
    p = distill.Pipeline("life")
    source(p) >> p.step("tag", tagger)
    p.run(tmp_path / "run.redb", progress=False)
    assert log.read_text().split() == ["load", "unload"]
    assert tagger.state == "unloaded" and tagger.client is None
    assert leaf(tmp_path / "run.redb", "tag")[0]["tag"] == "t:line 0"


def test_a_step_loaded_by_hand_is_used_as_it_is_and_stays_loaded(tmp_path):
    log = tmp_path / "life.log"
    tagger = pysteps.Tagger(tag="h", log=str(log))
    tagger.load()
    assert tagger.is_loaded
    with pytest.raises(distill.AlreadyLoadedError, match="already loaded"):
        tagger.load()
    assert isinstance(distill.AlreadyLoadedError("x"), distill.StepStateError)
    p = distill.Pipeline("hand")
    source(p) >> p.step("tag", tagger)
    p.run(tmp_path / "run.redb", progress=False)
    assert log.read_text().split() == ["load"], "the run neither loads nor unloads it"
    assert tagger.is_loaded
    tagger.unload()
    tagger.unload()  # unloading an unloaded step does nothing
    assert log.read_text().split() == ["load", "unload"]


def test_loaded_unloads_on_exit_even_after_an_exception(tmp_path):
    log = tmp_path / "life.log"
    tagger = pysteps.Tagger(log=str(log))
    with pytest.raises(KeyError):
        with tagger.loaded():
            assert tagger.client == "client-x"
            raise KeyError("boom")
    assert tagger.state == "unloaded" and tagger.client is None
    assert log.read_text().split() == ["load", "unload"]


def test_a_failing_load_raises_its_own_exception_and_leaves_the_step_unloaded():
    class Broken(distill.Step):
        inputs = ["text"]
        outputs = ["x"]

        def load(self):
            raise ConnectionError("no endpoint")

        def process(self, rows):
            return rows

    step = Broken()
    with pytest.raises(ConnectionError, match="no endpoint"):
        step.load()
    assert step.state == "unloaded"


def test_idempotent_load_and_super_calls():
    events = []

    class Base(distill.Step):
        inputs = ["text"]
        outputs = ["x"]
        idempotent_load = True

        def load(self):
            events.append("base load")

        def process(self, rows):
            return rows

    class Child(Base):
        def load(self):
            super().load()
            events.append("child load")

        def unload(self):
            events.append("child unload")

    step = Child()
    step.load()
    step.load()  # idempotent: a no-op
    assert events == ["base load", "child load"]
    step.unload()
    assert events == ["base load", "child load", "child unload"]
    assert step.state == "unloaded"


def test_builtin_steps_load_by_hand_through_the_pipeline(tmp_path, mock_llm):
    p = distill.Pipeline("llm")
    source(p) >> p.step(
        "answer",
        "text_generation",
        params={"base_url": mock_llm, "model": "m", "template": "{{ text }}"},
    )
    answer = p["answer"]
    answer.load()
    with pytest.raises(distill.AlreadyLoadedError):
        answer.load()
    assert p.run(tmp_path / "run.redb", progress=False).leaves == {"answer": 10}
    assert answer.state == "loaded"
    answer.unload()
    assert answer.state == "unloaded"
    assert leaf(tmp_path / "run.redb", "answer")[3]["generation"] == "echo: line 3"


def test_code_is_part_of_the_signature(tmp_path):
    def pipeline(fn):
        p = distill.Pipeline("code")
        source(p) >> p.step("shout", fn)
        return p

    @distill.step(inputs=["text"], outputs=["upper"])
    def shout(rows):
        return [dict(r, upper=r["text"].upper()) for r in rows]

    first = pipeline(shout)
    db = tmp_path / "run.redb"
    first.run(db, progress=False)

    @distill.step(inputs=["text"], outputs=["upper"])
    def shout(rows):  # noqa: F811 - the same step, changed
        return [dict(r, upper=r["text"].upper() + "!") for r in rows]

    changed = pipeline(shout)
    sig = lambda p: {s["name"]: s["signature"] for st in p.info()["stages"] for s in st}
    assert sig(first)["load"] == sig(changed)["load"]
    assert sig(first)["shout"] != sig(changed)["shout"]
    summary = changed.run(db, progress=False)
    assert not summary.already_finished
    assert leaf(db, "shout")[0]["upper"] == "LINE 0!", "the changed step was recomputed"


def test_lambdas_need_a_version(tmp_path):
    with pytest.raises(ValueError, match="version="):
        distill.step(inputs=["text"], outputs=["x"])(lambda rows: rows)
    v1 = distill.step(inputs=["text"], outputs=["x"], version="1")(
        lambda rows: [dict(r, x=1) for r in rows]
    )
    v2 = distill.step(inputs=["text"], outputs=["x"], version="2")(
        lambda rows: [dict(r, x=2) for r in rows]
    )
    sigs = []
    for fn in (v1, v2):
        p = distill.Pipeline("lambdas")
        source(p) >> p.step("x", fn)
        sigs.append(p.info()["stages"][0][1]["signature"])
    assert sigs[0] != sigs[1]


def test_wrong_returns_are_step_errors_naming_the_problem(tmp_path):
    @distill.step(inputs=["text"], outputs=["x"])
    def returns_none(rows):
        for r in rows:
            r["x"] = 1

    p = distill.Pipeline("none")
    source(p) >> p.step("x", returns_none)
    with pytest.raises(distill.StepFailedError, match="returned None"):
        p.run(tmp_path / "run.redb", progress=False)

    @distill.step(inputs=["text"], outputs=["x"])
    def returns_strings(rows):
        return ["not a row"]

    p = distill.Pipeline("strings")
    source(p) >> p.step("x", returns_strings)
    with pytest.raises(distill.StepFailedError, match="row 0: a row is a dict"):
        p.run(tmp_path / "run2.redb", progress=False)
