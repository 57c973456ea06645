#!/usr/bin/env bash
# Scanning benchmark: airlock's ClamAV scanner (INSTREAM through the clamav-client crate,
# `airlock scan --scanner clamav`) against `clamdscan --stream` over the same files and the
# same clamd, in the same run, as a throughput ratio; then how airlock's throughput changes
# with the number of files streamed at once. See benches/README.md.
#
# Knobs (environment):
#   FILES        number of files                              (default 48)
#   FILE_MIB     size of each file in MiB                     (default 8)
#   RUNS         repetitions of each measurement; best kept   (default 3)
#   CONCURRENCY  airlock concurrencies to try                 (default "1 2 4 8")
#   BENCH_TMP    scratch parent dir                           (default /work/bench-tmp)
#   AIRLOCK_BIN  the release binary (default ./target/release/airlock)
set -euo pipefail

FILES=${FILES:-48}
FILE_MIB=${FILE_MIB:-8}
RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-"1 2 4 8"}
BENCH_TMP=${BENCH_TMP:-/work/bench-tmp}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
A=${AIRLOCK_BIN:-$repo/target/release/airlock}
[[ -x $A ]] || { echo "no release binary at $A; build with: cargo build --release" >&2; exit 1; }
for tool in clamd clamdscan python3 awk; do
    command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] ||
        { echo "missing tool: $tool (apt-get install clamav-daemon clamdscan)" >&2; exit 1; }
done

mkdir -p "$BENCH_TMP"
WORK=$(mktemp -d "$BENCH_TMP/scan.XXXXXX")
CLAMD_PID=
cleanup() {
    [[ -n $CLAMD_PID ]] && kill "$CLAMD_PID" 2>/dev/null && wait "$CLAMD_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CLAMD_WORK_DIR=$WORK/clamd "$repo/scripts/clamd.sh" "$port" >/dev/null 2>&1 &
CLAMD_PID=$!
for _ in $(seq 300); do
    python3 - "$port" <<'PY' 2>/dev/null && break
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"zPING\0")
assert s.recv(16).startswith(b"PONG")
PY
    sleep 0.1
done
conf=$WORK/clamd/clamd.conf
export AIRLOCK__SCANNING__CLAMD=127.0.0.1:$port

mkdir -p "$WORK/files"
for i in $(seq "$FILES"); do
    head -c $((FILE_MIB << 20)) /dev/urandom > "$WORK/files/f$i.bin"
done
total_mib=$((FILES * FILE_MIB))
files=("$WORK"/files/*.bin)

# Best wall time of a command over RUNS runs, in seconds.
best() {
    local b=
    for _ in $(seq "$RUNS"); do
        cat "${files[@]}" > /dev/null
        local s e t
        s=$(date +%s.%N)
        "$@" > "$WORK/out" 2>&1 || { cat "$WORK/out" >&2; echo "failed: $*" >&2; exit 1; }
        e=$(date +%s.%N)
        t=$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')
        if [[ -z $b ]] || awk -v t="$t" -v b="$b" 'BEGIN { exit !(t < b) }'; then b=$t; fi
    done
    echo "$b"
}

echo "scanning $FILES files x $FILE_MIB MiB = $total_mib MiB of random data, clamd 127.0.0.1:$port"
echo "(best of $RUNS runs; throughput = MiB / wall seconds; ratio = airlock / baseline)"
cd_serial=$(best clamdscan --config-file="$conf" --stream --no-summary "${files[@]}")
cd_multi=$(best clamdscan --config-file="$conf" --stream --multiscan --no-summary "${files[@]}")
printf '%-44s %8.2f s %8.1f MiB/s\n' "clamdscan --stream" "$cd_serial" \
    "$(awk -v m=$total_mib -v t="$cd_serial" 'BEGIN { print m / t }')"
printf '%-44s %8.2f s %8.1f MiB/s\n' "clamdscan --stream --multiscan" "$cd_multi" \
    "$(awk -v m=$total_mib -v t="$cd_multi" 'BEGIN { print m / t }')"
for c in $CONCURRENCY; do
    t=$(best "$A" scan --scanner clamav --concurrency "$c" --quiet "${files[@]}")
    printf '%-44s %8.2f s %8.1f MiB/s  vs serial %5.2f  vs multiscan %5.2f\n' \
        "airlock scan --concurrency $c" "$t" \
        "$(awk -v m=$total_mib -v t="$t" 'BEGIN { print m / t }')" \
        "$(awk -v a="$t" -v b="$cd_serial" 'BEGIN { print b / a }')" \
        "$(awk -v a="$t" -v b="$cd_multi" 'BEGIN { print b / a }')"
done
