#!/usr/bin/env bash
# Builds the Python package (python/, PyO3 + maturin) and installs it into target/pyenv with
# the tools its tests use (pytest, pytest-timeout, nbclient and a Jupyter kernel), pinned.
# Prints the interpreter's path. The wheel is built in the dev profile by default, so it shares
# the compiled dependencies of `cargo test` in target/; DISTILL_PY_PROFILE=release for figures.
set -euo pipefail
cd "$(dirname "$0")/.."
python="$(bash scripts/python-env.sh)"
env_dir="$(dirname "$(dirname "$python")")"
marker="$env_dir/.distill-python-tools-1"
if [ ! -f "$marker" ]; then
  "$python" -m pip install --quiet --disable-pip-version-check \
    'maturin==1.16.0' 'pytest==9.2.0' 'pytest-timeout==2.4.0' 'nbclient==0.11.0' \
    'nbformat==5.11.1' 'ipykernel==7.4.0' 'tqdm>=4.60' >&2
  touch "$marker"
fi
profile="${DISTILL_PY_PROFILE:-dev}"
wheels=target/wheels/$profile
rm -rf "$wheels"
# maturin sets PYO3_BUILD_EXTENSION_MODULE itself: the module does not link libpython.
"$env_dir/bin/maturin" build --quiet --profile "$profile" -m python/Cargo.toml \
  --interpreter "$python" -o "$wheels" >&2
"$python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall \
  "$wheels"/distill-*.whl >&2
# The kernel the notebook test runs on is this environment's Python.
"$python" -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
echo "$python"
