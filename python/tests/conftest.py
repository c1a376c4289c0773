"""Fixtures: the run's folder, the installed `distill` command, the loopback mock LLM (the
testkit's `mock_llm` binary), and subprocess helpers."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent.parent


@pytest.fixture
def env():
    """The environment of a subprocess that imports the tests' steps (`pysteps`)."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(TESTS), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return e


@pytest.fixture
def distill_cmd():
    """The `distill` command the package installs next to this interpreter."""
    path = pathlib.Path(sys.executable).parent / "distill"
    assert path.exists(), f"{path} missing: install the package (scripts/python-package.sh)"
    return str(path)


def _mock_llm_binary():
    path = os.environ.get("DISTILL_MOCK_LLM_BIN")
    if path:
        return path
    path = REPO / "target" / "debug" / "mock_llm"
    if not path.exists():
        subprocess.run(
            ["cargo", "build", "-q", "-p", "distill-testkit", "--bin", "mock_llm"],
            cwd=REPO,
            check=True,
        )
    return str(path)


@pytest.fixture(scope="session")
def mock_llm():
    """The loopback mock LLM (an OpenAI-compatible server): its base URL."""
    proc = subprocess.Popen(
        [_mock_llm_binary(), "0", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on "), line
        yield line.removeprefix("listening on ")
    finally:
        proc.kill()
        proc.wait()


def wait_for(predicate, timeout=60.0, what="a condition"):
    """Polls `predicate` until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
