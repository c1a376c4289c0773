#!/usr/bin/env bash
# Creates target/pyenv with the independent readers the tests use (pyarrow, datasets), once.
# Prints the interpreter's path. HF_HUB_OFFLINE keeps `datasets` from reaching for a hub.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=target/pyenv
marker="$env_dir/.distill-ready-2"
if [ ! -f "$marker" ]; then
  python3 -m venv "$env_dir" >&2
  "$env_dir/bin/pip" install --quiet --disable-pip-version-check 'pyarrow>=15' 'datasets>=2.19' huggingface_hub >&2
  touch "$marker"
fi
echo "$PWD/$env_dir/bin/python"
