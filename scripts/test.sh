#!/usr/bin/env bash
# The project's test command: every unit, integration, end-to-end and crash test, then the
# Python package's pytest suite (and its notebook) against the package built from this tree.
# One target dir is shared by all test binaries, so the workspace is built once.
set -euo pipefail
cd "$(dirname "$0")/.."
# The independent Parquet readers (pyarrow, datasets) in target/pyenv, installed once.
bash scripts/python-env.sh >/dev/null
# The binary is built with fault injection (DISTILL_FAULT), which the exit-code tests use to
# stage an engine bug and a failing storage read; it does nothing unless that variable is set.
features=(--features distill-cli/fault-injection)
cargo test --workspace --all-targets "${features[@]}"
cargo test --workspace --doc "${features[@]}"
# The Python package: built with maturin (dev profile, sharing target/) and installed into
# target/pyenv with pytest and a Jupyter kernel; its tests start the testkit's mock LLM.
python="$(bash scripts/python-package.sh)"
"$python" -m pytest python/tests -p no:cacheprovider -q
