#!/usr/bin/env bash
# A real single-node Slurm cluster (Debian's slurmctld, slurmd and munge) in a directory of its
# own, for tests/slurm.rs and for trying `distill slurm` by hand. Needs root (munged and
# slurmd run as root here) and the packages: apt-get install slurmctld slurmd slurm-client munge.
#
#   bash scripts/local-slurm.sh start DIR   # writes DIR/slurm.conf, starts munged (unless one
#                                           # runs), slurmctld and slurmd in the foreground mode
#                                           # as background processes, waits for the node to be
#                                           # idle; prints the SLURM_CONF path to export
#   bash scripts/local-slurm.sh stop DIR    # stops what start started, by the PIDs it wrote
#
# Ports 16817/16818 (not the defaults, so that a system Slurm is left alone). Processes and
# proctrack/linuxproc, task/none: no systemd, no cgroups.
set -euo pipefail
cmd="${1:?usage: local-slurm.sh start|stop DIR}"
dir="$(mkdir -p "${2:?usage: local-slurm.sh start|stop DIR}" && cd "$2" && pwd)"
conf="$dir/slurm.conf"
pids="$dir/pids"

start() {
  for p in slurmctld slurmd munged sbatch; do
    command -v "$p" >/dev/null || { echo "local slurm: $p is not installed (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 1; }
  done
  mkdir -p "$dir/ctld" "$dir/d" "$dir/log" /run/munge /etc/munge
  : >"$pids"
  if [ ! -S /run/munge/munge.socket.2 ] || ! munge -n >/dev/null 2>&1; then
    [ -f /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key /run/munge 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    munged --force --foreground >"$dir/log/munged.log" 2>&1 &
    echo "$!" >>"$pids"
    for _ in $(seq 1 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  local host mem
  host="$(hostname -s)"
  mem=$(( $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) / 2 ))
  cat >"$conf" <<CONF
ClusterName=distilltest
SlurmctldHost=$host
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
StateSaveLocation=$dir/ctld
SlurmdSpoolDir=$dir/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ReturnToService=2
MinJobAge=600
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$conf"
  slurmctld -D -i -f "$conf" >"$dir/log/slurmctld.out" 2>&1 &
  echo "$!" >>"$pids"
  slurmd -D -f "$conf" >"$dir/log/slurmd.out" 2>&1 &
  echo "$!" >>"$pids"
  for _ in $(seq 1 100); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qx idle; then
      echo "local slurm: up ($(sinfo -h -o '%P %D %T'))" >&2
      echo "$conf"
      return 0
    fi
    sleep 0.2
  done
  echo "local slurm: the node did not become idle; logs in $dir/log" >&2
  tail -5 "$dir/log/"*.log "$dir/log/"*.out >&2 || true
  stop
  return 1
}

stop() {
  [ -f "$pids" ] || return 0
  # Reverse order: slurmd, slurmctld, then munged if this script started it.
  for pid in $(tac "$pids"); do kill "$pid" 2>/dev/null || true; done
  for pid in $(tac "$pids"); do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -f "$pids"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: local-slurm.sh start|stop DIR" >&2; exit 2 ;;
esac
