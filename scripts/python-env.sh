#!/usr/bin/env bash
# Creates target/pyenv with the independent clients the tests use (pyarrow, datasets,
# huggingface_hub, and the official openai client for the batch double), once.
# Prints the interpreter's path. pip runs as `python -m pip`: a copied venv's pip script still
# points at the original one. HF_HUB_OFFLINE keeps `datasets` from reaching for a hub.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=target/pyenv
marker="$env_dir/.distill-ready-3"
if [ ! -f "$marker" ]; then
  python3 -m venv "$env_dir" >&2
  "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check 'pyarrow>=15' 'datasets>=2.19' huggingface_hub 'openai==1.109.1' >&2
  touch "$marker"
fi
echo "$PWD/$env_dir/bin/python"
