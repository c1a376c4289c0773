#!/usr/bin/env bash
# Creates target/motoenv with moto's S3 server (moto[server] from PyPI, pinned), once: the
# S3-protocol double of the checkpoint tests (tests/checkpoint.rs starts it on loopback).
# Prints the path of its `moto_server` command.
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir=target/motoenv
marker="$env_dir/.distill-ready-1"
if [ ! -f "$marker" ]; then
  python3 -m venv "$env_dir" >&2
  "$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]==5.2.5' >&2
  touch "$marker"
fi
echo "$PWD/$env_dir/bin/moto_server"
