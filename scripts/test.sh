#!/usr/bin/env bash
# The project's test command: every unit, integration, end-to-end and crash test.
# One target dir is shared by all test binaries, so the workspace is built once.
set -euo pipefail
cd "$(dirname "$0")/.."
# The independent Parquet readers (pyarrow, datasets) in target/pyenv, installed once.
bash scripts/python-env.sh >/dev/null
cargo test --workspace --all-targets
cargo test --workspace --doc
