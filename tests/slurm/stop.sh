#!/usr/bin/env bash
# Stop what tests/slurm/start.sh started, by PID file only (slurmd, slurmctld, slurmdbd, mariadbd, munged).
# Jobs still in the queue are cancelled first (scancel) so no slurmstepd/job processes linger.
#   SLURM_BASE=/tmp/twa-slurm   SLURM_PURGE=1 also deletes state, spool, logs and the database
set -uo pipefail
BASE=${SLURM_BASE:-/tmp/twa-slurm}
RUN=$BASE/run
export SLURM_CONF=$BASE/etc/slurm.conf

is_running() {   # NAME PIDFILE: alive and /proc/PID/comm is NAME (no PID-reuse accidents)
  local pid
  [ -s "$2" ] || return 1
  pid=$(cat "$2")
  [ -d "/proc/$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = "$1" ]
}
stop_pid() {     # NAME PIDFILE
  if is_running "$1" "$2"; then
    local pid; pid=$(cat "$2")
    echo "[stop.sh] stopping $1 (pid $pid)"
    kill "$pid"
    for _ in $(seq 75); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
    if [ -d "/proc/$pid" ]; then echo "[stop.sh] $1 still alive, SIGKILL"; kill -9 "$pid"; fi
  fi
  rm -f "$2"
}

if is_running slurmctld "$RUN/slurmctld.pid" && [ -n "$(squeue -h -o %A 2>/dev/null)" ]; then
  echo "[stop.sh] cancelling queued/running jobs"
  squeue -h -o %A | sort -u | xargs -r scancel
  for _ in $(seq 75); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
fi
stop_pid slurmd    "$RUN/slurmd.pid"
stop_pid slurmctld "$RUN/slurmctld.pid"
stop_pid slurmdbd  "$RUN/slurmdbd.pid"
stop_pid mariadbd  "$RUN/mysqld.pid"
stop_pid munged    "$RUN/munged.pid"
rm -f "$RUN/munge.socket.2" "$RUN/munge.socket.2.lock" "$RUN/mysqld.sock"

if [ "${SLURM_PURGE:-0}" = 1 ]; then
  echo "[stop.sh] purging state under $BASE"
  rm -rf "$BASE/state" "$BASE/spool" "$BASE/log" "$BASE/mysql" "$BASE/run"
fi
