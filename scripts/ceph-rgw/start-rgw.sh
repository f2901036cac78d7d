#!/usr/bin/env bash
# start-rgw.sh -- throwaway single-node Ceph (1 mon, 1 OSD, no mgr) + radosgw: a real
# Object-Lock S3 server for the tests. Everything is bound to 127.0.0.1, all state lives
# under one directory. About 3 s to ready.
# Needs (Debian 12): scripts/install-ceph.sh, i.e.
#   apt-get install --no-install-recommends ceph-mon ceph-osd radosgw ceph-common curl uuid-runtime
#
# Env knobs (all optional):
#   CEPH_DIR     state dir            (default: mktemp -d /tmp/ceph-rgw-run.XXXXXX)
#   MON_PORT     mon msgr2 port       (default 13300)
#   RGW_PORT     S3 HTTP port         (default 7480)
#   OBJECTSTORE  memstore|bluestore   (default memstore; bluestore uses a sparse file)
#   S3_ACCESS_KEY / S3_SECRET_KEY     fixed credentials of the S3 user "ci"
#   READY_TIMEOUT seconds to wait for each stage (default 120)
#   WATCH_PID    if set, a watchdog stops the cluster and deletes its state once that
#                process is gone (so a killed test run does not leak daemons)
# Prints "export ..." lines on stdout at the end; also writes them to $CEPH_DIR/env.
# Stop with: stop-rgw.sh $CEPH_DIR
set -euo pipefail

MON_PORT=${MON_PORT:-13300}
RGW_PORT=${RGW_PORT:-7480}
OBJECTSTORE=${OBJECTSTORE:-memstore}
S3_ACCESS_KEY=${S3_ACCESS_KEY:-CITESTACCESSKEY00001}
S3_SECRET_KEY=${S3_SECRET_KEY:-citestsecretkey0000000000000000000000001}
READY_TIMEOUT=${READY_TIMEOUT:-120}

for b in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl uuidgen; do
  command -v "$b" >/dev/null || { echo "missing $b" >&2; exit 1; }
done
# refuse to start if the ports are taken
for p in "$MON_PORT" "$RGW_PORT"; do
  if (exec 3<>/dev/tcp/127.0.0.1/"$p") 2>/dev/null; then echo "port $p already in use" >&2; exit 1; fi
done
CEPH_DIR=${CEPH_DIR:-$(mktemp -d /tmp/ceph-rgw-run.XXXXXX)}
mkdir -p "$CEPH_DIR" && CEPH_DIR=$(cd "$CEPH_DIR" && pwd)
[ -z "$(ls -A "$CEPH_DIR")" ] || { echo "$CEPH_DIR is not empty" >&2; exit 1; }
CONF=$CEPH_DIR/ceph.conf
PIDS=$CEPH_DIR/pids
mkdir -p "$CEPH_DIR"/{mon.a,osd.0,rgw,run,log} "$PIDS"
# stop-rgw.sh only deletes a directory carrying this marker, wherever it lives
echo "state dir of scripts/ceph-rgw/start-rgw.sh; delete with stop-rgw.sh" > "$CEPH_DIR/.ceph-rgw-state"
HERE=$(cd "$(dirname "$0")" && pwd)
T0=$(date +%s%N)

log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[start-rgw %4d.%03ds] %s\n' $((ms/1000)) $((ms%1000)) "$*" >&2; }
die() {
  log "ERROR: $*"
  for f in "$CEPH_DIR"/log/*.log; do [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 25 "$f" >&2; }; done
  "$HERE/stop-rgw.sh" "$CEPH_DIR" --keep >&2 || true; log "state kept in $CEPH_DIR"
  exit 1
}
trap 'die "command failed at line $LINENO"' ERR
# running = exists and not a zombie (kill -0 succeeds on zombies)
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$s" ] && [ "$s" != Z ]; }


FSID=$(uuidgen)
cat > "$CONF" <<EOF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = $CEPH_DIR/keyring
run dir = $CEPH_DIR/run
admin socket = $CEPH_DIR/run/\$name.asok
log file = $CEPH_DIR/log/\$name.log
pid file = $CEPH_DIR/run/\$name.pid
crash dir = $CEPH_DIR/crash
mon cluster log file = default=$CEPH_DIR/log/\$cluster.\$channel.log cluster=$CEPH_DIR/log/\$cluster.log
# single OSD: size-1 pools, few PGs, no autoscaler (no mgr)
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
rgw rados pool pg num min = 8
# faster map updates (each pool creation = one osdmap epoch)
paxos propose interval = 0.1
paxos min wait = 0.01

[mon]
mon data = $CEPH_DIR/\$name

[osd]
osd data = $CEPH_DIR/\$name
osd objectstore = $OBJECTSTORE
memstore device bytes = 2147483648
bluestore block path = $CEPH_DIR/\$name/block.file
bluestore block create = true
bluestore block size = 10737418240
bluestore fsck on mount = false
osd memory target = 939524096
bluestore cache autotune = true

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw data = $CEPH_DIR/rgw
rgw enable usage log = false
# radosgw's built-in default is "secure", which cannot be negotiated with auth=none
ms mon client mode = crc
EOF
export CEPH_CONF=$CONF
C=(-c "$CONF")

# keyring (auth is 'none', but mon --mkfs wants a mon. key)
ceph-authtool --create-keyring "$CEPH_DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool "$CEPH_DIR/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null

# --- mon
monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$CEPH_DIR/monmap" >/dev/null
ceph-mon "${C[@]}" --mkfs -i a --monmap "$CEPH_DIR/monmap" --keyring "$CEPH_DIR/keyring"
ceph-mon "${C[@]}" -i a -f </dev/null >"$CEPH_DIR/log/mon.a.out" 2>&1 &
echo $! > "$PIDS/mon.a.pid"
log "mon.a pid $(cat "$PIDS/mon.a.pid")"
t=0; until timeout 10 ceph "${C[@]}" --connect-timeout 5 mon stat >/dev/null 2>&1; do
  alive "$(cat "$PIDS/mon.a.pid")" || die "ceph-mon exited"
  t=$((t+1)); [ $t -lt "$READY_TIMEOUT" ] || die "mon not answering"; sleep 1; done
log "mon up"

# --- osd
OSD_UUID=$(uuidgen)
OSD_ID=$(ceph "${C[@]}" osd new "$OSD_UUID")
[ "$OSD_ID" = 0 ] || die "unexpected osd id $OSD_ID"
ceph-osd "${C[@]}" -i 0 --mkfs --osd-uuid "$OSD_UUID" >"$CEPH_DIR/log/osd.0.mkfs.out" 2>&1 \
  || die "osd mkfs failed: $(tail -5 "$CEPH_DIR/log/osd.0.mkfs.out")"
ceph-osd "${C[@]}" -i 0 -f </dev/null >"$CEPH_DIR/log/osd.0.out" 2>&1 &
echo $! > "$PIDS/osd.0.pid"
log "osd.0 pid $(cat "$PIDS/osd.0.pid") ($OBJECTSTORE)"
t=0; until ceph "${C[@]}" osd dump 2>/dev/null | grep -q '^osd.0 up '; do
  alive "$(cat "$PIDS/osd.0.pid")" || die "ceph-osd exited"
  t=$((t+1)); [ $t -lt "$READY_TIMEOUT" ] || die "osd.0 not up"; sleep 1; done
log "osd.0 up"

# --- S3 user with fixed keys (creates the default realm/zone + .rgw.root etc.)
radosgw-admin "${C[@]}" user create --uid=ci --display-name="CI user" \
  --access-key="$S3_ACCESS_KEY" --secret-key="$S3_SECRET_KEY" >"$CEPH_DIR/log/user-create.out" 2>&1 \
  || die "radosgw-admin user create failed: $(tail -5 "$CEPH_DIR/log/user-create.out")"
log "S3 user ci created"

# --- rgw
radosgw "${C[@]}" -n client.rgw -f </dev/null >"$CEPH_DIR/log/rgw.out" 2>&1 &
echo $! > "$PIDS/client.rgw.pid"
log "rgw pid $(cat "$PIDS/client.rgw.pid")"
t=0; until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$RGW_PORT/" || true)" = 200 ]; do
  alive "$(cat "$PIDS/client.rgw.pid")" || die "radosgw exited: $(tail -3 "$CEPH_DIR/log/rgw.out")"
  t=$((t+1)); [ $t -lt $((READY_TIMEOUT*4)) ] || die "rgw not answering"; sleep 0.25; done
log "S3 endpoint ready"

trap - ERR

if [ -n "${WATCH_PID:-}" ]; then
  # Detached, with no inherited pipes (a caller capturing our stdout must see EOF).
  # CEPH_DIR is in its command line so stop-rgw.sh can tell it from a reused PID.
  # "Gone" includes a zombie whose parent never reaps it.
  # shellcheck disable=SC2016  # $1.. expand in the inner shell, on purpose
  nohup bash -c 'while [ -d "/proc/$1" ] && ! grep -q "^State:[[:space:]]*Z" "/proc/$1/status" 2>/dev/null \
                       && [ -d "$2/pids" ]; do sleep 1; done
                 [ -d "$2/pids" ] && exec "$3/stop-rgw.sh" "$2"' \
    ceph-rgw-watchdog "$WATCH_PID" "$CEPH_DIR" "$HERE" </dev/null >>"$CEPH_DIR/log/watchdog.out" 2>&1 &
  echo $! > "$PIDS/watchdog.pid"
  log "watchdog pid $(cat "$PIDS/watchdog.pid") (follows pid $WATCH_PID)"
fi

cat > "$CEPH_DIR/env" <<EOF
export CEPH_DIR=$CEPH_DIR
export CEPH_CONF=$CONF
export S3_ENDPOINT_URL=http://127.0.0.1:$RGW_PORT
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$RGW_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
EOF
cat "$CEPH_DIR/env"
