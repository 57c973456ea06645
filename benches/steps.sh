#!/usr/bin/env bash
# Peak memory through every step after upload, at two file counts: a transfer of N small files
# (about 190 bytes each, in 20 folders, as issue 11's report) is uploaded by curl PUT, sealed,
# scanned by a real clamd, approved, released, re-verified (`airlock verify`) and exported as a
# bag (`airlock bag`). For each step it prints the time and the peak RSS of the process doing
# the work: the server's (`airlock serve`, its VmHWM reset before each step through
# /proc/PID/clear_refs) for upload, seal, scan and approve, and a fresh server's for release
# (clamd is paused over the approve so the release waits for it); the CLI's (/usr/bin/time
# %M) for verify and bag, which run in their own process on the data directory. Memory that
# does not grow with N reads as the same figures on the two lines. The released tree and the
# bag are checked against sha256sum of the source.
#
# Knobs (environment):
#   FILES        file counts to compare                        (default "2000 20000")
#   JOBS         PUTs at once                                  (default 8)
#   BENCH_TMP    scratch parent dir                            (default /work/bench-tmp)
#   AIRLOCK_BIN  the binary (default: $CARGO_TARGET_DIR/release/airlock, then .../debug/airlock,
#                then ./target/release/airlock)
set -euo pipefail

FILES=${FILES:-"2000 20000"}
JOBS=${JOBS:-8}
BENCH_TMP=${BENCH_TMP:-/work/bench-tmp}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
if [[ -z ${AIRLOCK_BIN:-} ]]; then
    for c in "${CARGO_TARGET_DIR:-/nonexistent}/release/airlock" \
        "${CARGO_TARGET_DIR:-/nonexistent}/debug/airlock" "$repo/target/release/airlock"; do
        if [[ -x $c ]]; then AIRLOCK_BIN=$c; break; fi
    done
fi
A=${AIRLOCK_BIN:?no airlock binary found; build with cargo build --release}
for tool in curl jq sqlite3 sha256sum python3 /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
cd "$repo" # scanners/ and policies/ are read from here

mkdir -p "$BENCH_TMP"
WORK=$(mktemp -d "$BENCH_TMP/steps.XXXXXX")
SERVER_PID=
CLAMD_PID=
cleanup() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [[ -n $CLAMD_PID ]] && kill "$CLAMD_PID" 2>/dev/null && wait "$CLAMD_PID" 2>/dev/null
    chmod -R u+w "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export AIRLOCK__SCANNING__CLAMD=127.0.0.1:$port

hwm() { awk '/^VmHWM:/ { printf "%d", $2 / 1024 }' "/proc/$SERVER_PID/status"; }
reset_hwm() { echo 5 >"/proc/$SERVER_PID/clear_refs"; }
state() { sqlite3 -readonly "$DATA/airlock.db" "SELECT state FROM transfers WHERE id = '$1'"; }
wait_state() {
    local i
    for i in $(seq 6000); do
        [[ $(state "$1") == "$2" ]] && return 0
        sleep 0.1
    done
    say "transfer $1 is $(state "$1"), not $2"
    exit 1
}
start_clamd() {
    CLAMD_WORK_DIR=$WORK/clamd "$repo/scripts/clamd.sh" "$port" >/dev/null 2>&1 &
    CLAMD_PID=$!
    for _ in $(seq 300); do
        python3 - "$port" <<'PY' 2>/dev/null && return 0
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"zPING\0")
assert s.recv(16).startswith(b"PONG")
PY
        sleep 0.1
    done
}
stop_clamd() {
    kill "$CLAMD_PID" 2>/dev/null || true
    wait "$CLAMD_PID" 2>/dev/null || true
    CLAMD_PID=
}
start_server() {
    local log=$WORK/serve-$1.log
    "$A" serve --listen 127.0.0.1:0 >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        grep -q 'listening on http://' "$log" && break
        sleep 0.1
    done
    AIRLOCK_SERVER=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1)
    export AIRLOCK_SERVER
}
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
report() { printf '%-8s %7s files  %-8s %8s s  peak RSS %5s MiB (%s)\n' "$RUN" "$N" "$1" "$2" "$3" "$4"; }

start_clamd
for N in $FILES; do
    RUN=steps
    DATA=$WORK/data-$N
    SRC=$WORK/src-$N
    mkdir -p "$DATA" "$SRC"
    export AIRLOCK__STORAGE__DATA_DIR=$DATA
    say "generating $N files ..."
    python3 - "$SRC" "$N" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%02d" % (i % 20))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d.txt" % i), "wb") as f:
        f.write(b"file %d of a big transfer\n" % i + random.randbytes(160))
PY
    "$A" admin user add pm --role project-manager >/dev/null
    "$A" admin user add inv --role investigator >/dev/null
    "$A" admin user add prov --role provider >/dev/null
    "$A" admin project create bench >/dev/null
    "$A" admin project add-member bench pm --role project-manager >/dev/null
    "$A" admin project add-member bench inv --role investigator >/dev/null
    "$A" admin workspace create bench ws --tier 1 >/dev/null
    start_server "$N"
    PM=$("$A" admin token pm)
    INV=$("$A" admin token inv)
    tid=$(AIRLOCK_TOKEN=$PM "$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
    ut=$(AIRLOCK_TOKEN=$PM "$A" transfer token "$tid" --ttl 1h)
    say "server $AIRLOCK_SERVER, transfer $tid, idle RSS $(awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$SERVER_PID/status") MiB"

    reset_hwm
    t0=$(now_ns)
    (cd "$SRC" && find . -type f -printf '%P\n') |
        xargs -P "$JOBS" -n 200 sh -c '
            for p in "$@"; do
                code=$(curl -sS -o /dev/null -w "%{http_code}" -X PUT -H "Authorization: Bearer '"$ut"'" \
                    --data-binary "@'"$SRC"'/$p" "'"$AIRLOCK_SERVER"'/api/v1/transfers/'"$tid"'/files/$p")
                [ "$code" = 201 ] || { echo "PUT $p: $code" >&2; exit 255; }
            done' sh
    report upload "$(secs "$t0" "$(now_ns)")" "$(hwm)" server
    reset_hwm
    t0=$(now_ns)
    curl -sS --fail-with-body -o /dev/null -X POST -H "Authorization: Bearer $ut" \
        "$AIRLOCK_SERVER/api/v1/transfers/$tid/seal"
    report seal "$(secs "$t0" "$(now_ns)")" "$(hwm)" server
    reset_hwm
    t0=$(now_ns)
    wait_state "$tid" in_review
    report scan "$(secs "$t0" "$(now_ns)")" "$(hwm)" server
    # While clamd is down the release waits (it cannot tell whether the signatures changed),
    # so the release runs in a fresh server afterwards: its figure is not the approve's answer
    # (the whole transfer view today) kept by the allocator.
    stop_clamd
    reset_hwm
    t0=$(now_ns)
    curl -sS --fail-with-body -o /dev/null -X POST -H "Authorization: Bearer $INV" \
        -H 'Content-Type: application/json' -d '{}' "$AIRLOCK_SERVER/api/v1/transfers/$tid/approve"
    report approve "$(secs "$t0" "$(now_ns)")" "$(hwm)" server
    stop_server
    [[ $(state "$tid") == approved ]] || { say "not approved: $(state "$tid")"; exit 1; }
    start_clamd
    t0=$(now_ns)
    start_server "$N-release"
    wait_state "$tid" released
    report release "$(secs "$t0" "$(now_ns)")" "$(hwm)" server
    loc=$(sqlite3 -readonly "$DATA/airlock.db" "SELECT release_location FROM transfers WHERE id = '$tid'")
    t0=$(now_ns)
    /usr/bin/time -f '%M' -o "$WORK/verify.mem" "$A" verify "$tid" >"$WORK/verify.out"
    report verify "$(secs "$t0" "$(now_ns)")" "$(($(cat "$WORK/verify.mem") / 1024))" "airlock verify"
    t0=$(now_ns)
    /usr/bin/time -f '%M' -o "$WORK/bag.mem" "$A" bag "$tid" --output "$WORK/bag-$N" >/dev/null
    report bag "$(secs "$t0" "$(now_ns)")" "$(($(cat "$WORK/bag.mem") / 1024))" "airlock bag"
    # Every digest against sha256sum of the source.
    (cd "$SRC" && find . -type f -printf '%P\0' | sort -z | xargs -0 sha256sum) >"$WORK/src.sums"
    (cd "$loc" && sha256sum --quiet -c "$WORK/src.sums") || { say "released tree differs"; exit 1; }
    sed 's|  |  data/|' "$WORK/src.sums" | sort >"$WORK/src.bag"
    sort "$WORK/bag-$N/manifest-sha256.txt" | cmp - "$WORK/src.bag" || { say "bag manifest differs"; exit 1; }
    [[ $(find "$loc" -type f | wc -l) == "$N" ]] || { say "released file count differs"; exit 1; }
    say "released tree and bag match sha256sum of the source; $(head -1 "$WORK/verify.out")"
    stop_server
done
