#!/usr/bin/env bash
# Runs the quickstart pipeline end to end on embedded defaults (a redb run database and local
# files): load standard-library docstrings, filter, format instructions, dedup (global step),
# sample, then export the dataset as JSONL.
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/quickstart
rm -rf "$out" && mkdir -p "$out"
cargo build -q -p distill-cli
distill=target/debug/distill
"$distill" info fixtures/pipelines/quickstart.yaml
"$distill" run fixtures/pipelines/quickstart.yaml --db "$out/run.redb"
"$distill" status --db "$out/run.redb"
"$distill" export --db "$out/run.redb" --out "$out/dataset"
"$distill" export --db "$out/run.redb" --out "$out/dataset-jsonl" --format jsonl
echo
echo "dataset written to $out/dataset (Parquet, dataset card in README.md; one config per leaf: pairs, review_sample)"
head -n 2 "$out/dataset-jsonl/pairs/train/data-00000.jsonl"
