#!/usr/bin/env bash
# stop-rgw.sh CEPH_DIR [--keep] -- stop the cluster started by start-rgw.sh by its recorded
# PIDs, in order watchdog -> rgw -> osd -> mon (SIGTERM, SIGKILL after STOP_GRACE s), then
# delete CEPH_DIR unless --keep. STOP_SIGNAL=KILL skips the graceful part (the cluster is
# throwaway). Only a directory carrying start-rgw.sh's marker file is ever deleted.
set -uo pipefail
CEPH_DIR=${1:?usage: stop-rgw.sh CEPH_DIR [--keep]}
KEEP=${2:-}
GRACE=${STOP_GRACE:-10}
SIG=${STOP_SIGNAL:-TERM}
[ -d "$CEPH_DIR/pids" ] || { echo "no $CEPH_DIR/pids: nothing to stop" >&2; exit 1; }
# alive = exists and is not a zombie (an exited daemon reparented to init stays a zombie
# until init reaps it, and kill -0 still succeeds on zombies)
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$s" ] && [ "$s" != Z ]; }
# ours = its command line names this cluster (guards against PID reuse)
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$CEPH_DIR"; }

# The watchdog first, so it does not race us; it may be the process running this script.
wf=$CEPH_DIR/pids/watchdog.pid
if [ -f "$wf" ]; then
  wpid=$(cat "$wf")
  if [ "$wpid" != "$$" ] && ours "$wpid"; then kill -TERM "$wpid" 2>/dev/null; fi
  rm -f "$wf"
fi

for name in client.rgw osd.0 mon.a; do
  f=$CEPH_DIR/pids/$name.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if ours "$pid" && alive "$pid"; then
    t0=$(date +%s%N)
    kill -"$SIG" "$pid" 2>/dev/null
    for _ in $(seq 1 $((GRACE * 10))); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then
      echo "$name ($pid) still running after ${GRACE}s: SIGKILL" >&2; kill -KILL "$pid" 2>/dev/null; sleep 0.2
    fi
    echo "stopped $name ($pid) in $(( ($(date +%s%N) - t0) / 1000000 )) ms" >&2
  fi
  rm -f "$f"
done
if [ "$KEEP" != --keep ]; then
  if [ -f "$CEPH_DIR/.ceph-rgw-state" ]; then
    rm -rf "$CEPH_DIR"
  else
    echo "not deleting $CEPH_DIR (no .ceph-rgw-state marker)" >&2
  fi
fi
exit 0
