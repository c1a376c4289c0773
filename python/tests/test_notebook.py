"""A real notebook (notebook.ipynb) executed by nbclient on a real Jupyter kernel: an LLM task
against the loopback mock, a step loaded by hand, its loading cell run a second time (the
typed error), the run (which uses the hand-loaded step as it is), the run cell run a second
time (finished already), and the outputs."""

import os
import pathlib
import signal
import threading

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK = pathlib.Path(__file__).with_name("notebook.ipynb")
LOAD_CELL, RUN_CELL = 3, 4
LONG_CELL = 8


def source_of(nb, i, text):
    assert text in nb.cells[i].source, f"cell {i} changed: {nb.cells[i].source!r}"


def test_the_notebook(tmp_path, env, mock_llm, monkeypatch):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    source_of(nb, LOAD_CELL, "shout.load()")
    source_of(nb, RUN_CELL, "p.run(DB)")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("DISTILL_LLM_URL", mock_llm)
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    with client.setup_kernel():
        for i in range(RUN_CELL):
            client.execute_cell(nb.cells[i], i)
        assert "'loaded'" in output_text(nb.cells[LOAD_CELL])
        # The user runs the loading cell again.
        with pytest.raises(CellExecutionError) as again:
            client.execute_cell(nb.cells[LOAD_CELL], LOAD_CELL)
        assert "AlreadyLoadedError" in str(again.value)
        assert "step 'Shout' is already loaded" in str(again.value)
        # The run, then the run cell again: finished already, nothing redone.
        client.execute_cell(nb.cells[RUN_CELL], RUN_CELL)
        assert "RunSummary" in output_text(nb.cells[RUN_CELL])
        assert "already_finished=False" in output_text(nb.cells[RUN_CELL])
        client.execute_cell(nb.cells[RUN_CELL], RUN_CELL)
        assert "already_finished=True" in output_text(nb.cells[RUN_CELL])
        for i in range(RUN_CELL + 1, LONG_CELL):
            client.execute_cell(nb.cells[i], i)
        # A long run, interrupted from the outside as Jupyter's interrupt button does.
        interrupter = threading.Thread(
            target=interrupt_when_running, args=(client, tmp_path / "long.redb")
        )
        interrupter.start()
        with pytest.raises(CellExecutionError) as stopped:
            client.execute_cell(nb.cells[LONG_CELL], LONG_CELL)
        interrupter.join()
        assert "KeyboardInterrupt" in str(stopped.value)
        assert "the run stopped cleanly" in str(stopped.value)
        for i in range(LONG_CELL + 1, len(nb.cells)):
            client.execute_cell(nb.cells[i], i)
    assert "ECHO: QUESTION 0" in output_text(nb.cells[RUN_CELL + 1])
    assert "'unloaded'" in output_text(nb.cells[RUN_CELL + 2])
    assert "'unloaded'" in output_text(nb.cells[-1])
    assert (tmp_path / "notebook.redb").exists()


def interrupt_when_running(client, db):
    """Sends the kernel SIGINT once the run in `db` committed a few batches."""
    import distill
    from conftest import wait_for

    def running():
        try:
            steps = {s["step"]: s for s in distill.status(db)["steps"]}
        except distill.DistillError:
            return False
        return steps.get("slow", {}).get("batches", 0) >= 3

    wait_for(running, timeout=60, what="the long run")
    os.kill(client.km.provisioner.pid, signal.SIGINT)


def output_text(cell):
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append(out["text"])
        data = out.get("data", {})
        if "text/plain" in data:
            parts.append(data["text/plain"])
        if out.get("output_type") == "error":
            parts.append(out["ename"] + ": " + out["evalue"])
    return "\n".join(parts)
