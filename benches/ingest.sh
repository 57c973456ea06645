#!/usr/bin/env bash
# Ingest benchmark for airlock: a streaming PUT of one large file over loopback, compared with
# a plain durable disk write (dd conv=fsync) and a plain SHA-256 (openssl dgst) of the same
# bytes, plus the server's peak memory during the upload. See benches/README.md.
#
# Knobs (environment):
#   SIZE_MIB     size of the test file in MiB                  (default 4096 = 4 GiB)
#   RUNS         repetitions of each measurement; best is kept  (default 3)
#   MEM_SIZES    extra, smaller sizes (MiB, space separated) uploaded once each on a fresh
#                server to show that peak RSS does not grow with file size (default "1024";
#                set to "" to skip)
#   BENCH_TMP    scratch parent dir; must be on the filesystem you want to measure
#                (default /work/bench-tmp)
#   AIRLOCK_BIN  the release binary (default: $CARGO_TARGET_DIR/release/airlock, then
#                /work/bench-target/release/airlock, then ./target/release/airlock)
#   SAMPLE_SECS  RSS/CPU sampling interval (default 0.2)
#   KEEP_DATA=1  keep the scratch dir (the random file) for a later run
#   MODE         `put` (default): one curl PUT per upload; `client`: `airlock upload` (tus,
#                resumable), SIGKILLed once when the server has written INTERRUPT_PCT of the
#                file, then run again to finish; the time counts both runs
#   INTERRUPT_PCT  where the client is killed, % of the file (default 50; 0: never)
#   CLIENT_BIN   the binary whose `upload` is measured in client mode (default AIRLOCK_BIN)
set -euo pipefail

SIZE_MIB=${SIZE_MIB:-4096}
RUNS=${RUNS:-3}
MEM_SIZES=${MEM_SIZES-1024}
BENCH_TMP=${BENCH_TMP:-/work/bench-tmp}
SAMPLE_SECS=${SAMPLE_SECS:-0.2}
KEEP_DATA=${KEEP_DATA:-0}
MODE=${MODE:-put}
INTERRUPT_PCT=${INTERRUPT_PCT:-50}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
if [[ -z ${AIRLOCK_BIN:-} ]]; then
    for c in "${CARGO_TARGET_DIR:-/nonexistent}/release/airlock" /work/bench-target/release/airlock \
        "$repo/target/release/airlock"; do
        if [[ -x $c ]]; then AIRLOCK_BIN=$c; break; fi
    done
fi
A=${AIRLOCK_BIN:?no release binary found; build with: CARGO_TARGET_DIR=/work/bench-target cargo build --release}
[[ -x $A ]] || { echo "not executable: $A" >&2; exit 1; }
for tool in curl jq openssl dd sha256sum awk; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
done
case $MODE in
put) ING_LABEL="ingest: curl PUT (sha256+b3+fsync)" ;;
client)
    C=${CLIENT_BIN:-$A}
    [[ -x $C ]] || { echo "not executable: $C" >&2; exit 1; }
    grep -q -- --json <<<"$("$C" upload --help 2>&1 || true)" || {
        echo "$C: \`airlock upload\` has no --json (the resumable client of issue 11 is not in this build); set CLIENT_BIN" >&2
        exit 1
    }
    ING_LABEL="ingest: airlock upload (kill@${INTERRUPT_PCT}%)"
    ;;
*) echo "MODE must be put or client, not $MODE" >&2; exit 1 ;;
esac

bytes=$((SIZE_MIB * 1024 * 1024))
mkdir -p "$BENCH_TMP"
WORK=$(mktemp -d "$BENCH_TMP/run.XXXXXX")
FILE=$WORK/input.bin
DATA=$WORK/data
LOG=$WORK/log
mkdir -p "$DATA" "$LOG"
export AIRLOCK__STORAGE__DATA_DIR=$DATA
# The upload client's resume state (client mode) stays in the scratch dir.
export AIRLOCK_CACHE_DIR=$WORK/cache XDG_CACHE_HOME=$WORK/cache

SERVER_PID=
SAMPLER_PID=
cleanup() {
    local rc=$?
    [[ -n $SAMPLER_PID ]] && kill "$SAMPLER_PID" 2>/dev/null || true
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $KEEP_DATA == 1 ]]; then
        echo "kept $WORK" >&2
    else
        # Released files are sealed read-only; make everything removable first.
        chmod -R u+w "$WORK" 2>/dev/null || true
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '%s\n' "$*" >&2; }
now_ns() { date +%s%N; }
# seconds (float) between two now_ns readings
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
mibps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / 1048576 / s }'; }
mbps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / 1e6 / s }'; }
min_of() { printf '%s\n' "$@" | sort -g | head -1; }
# Start each timed step from the same place: nothing dirty in the page cache, the input cached.
settle() {
    sync
    sleep 1
    cat "$FILE" >/dev/null
}

# ---- disk check ---------------------------------------------------------------------------
avail_kib=$(df -Pk "$BENCH_TMP" | awk 'NR == 2 { print $4 }')
# The input, plus one copy at a time: dd's output is removed before the uploads, and each upload
# is deleted through the API before the next.
need_kib=$((bytes / 1024 * 2 + 2097152))
df -h "$BENCH_TMP" >&2
if ((avail_kib < need_kib)); then
    say "not enough free space in $BENCH_TMP: need ~$((need_kib / 1048576)) GiB, have $((avail_kib / 1048576)) GiB"
    exit 1
fi

# ---- test data ----------------------------------------------------------------------------
say "generating $SIZE_MIB MiB of random bytes in $FILE ..."
head -c "$bytes" /dev/urandom >"$FILE"
sync
say "hashing the input with sha256sum/b3sum for the reference digests ..."
cat "$FILE" >/dev/null
REF_SHA=$(sha256sum "$FILE" | awk '{ print $1 }')
REF_B3=
command -v b3sum >/dev/null && REF_B3=$(b3sum --no-names "$FILE")

# ---- server -------------------------------------------------------------------------------
setup_airlock() {
    "$A" admin user add pm --role project-manager >/dev/null
    "$A" admin user add inv --role investigator >/dev/null
    "$A" admin user add prov --role provider >/dev/null
    "$A" admin project create bench >/dev/null
    "$A" admin project add-member bench pm --role project-manager >/dev/null
    "$A" admin project add-member bench inv --role investigator >/dev/null
    "$A" admin workspace create bench ws --tier 2 >/dev/null
}

start_server() {
    local log=$LOG/serve.$1.log
    "$A" serve --listen 127.0.0.1:0 >"$log" 2>&1 &
    SERVER_PID=$!
    local i
    for i in $(seq 100); do
        if grep -q 'listening on http://' "$log"; then break; fi
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; say "server died"; exit 1; }
        sleep 0.1
    done
    AIRLOCK_SERVER=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1)
    [[ -n $AIRLOCK_SERVER ]] || { cat "$log" >&2; say "server did not report its port"; exit 1; }
    export AIRLOCK_SERVER
    AIRLOCK_TOKEN=$("$A" admin token pm)
    export AIRLOCK_TOKEN
    # Let the process settle, then record its idle footprint.
    sleep 0.5
    IDLE_RSS_KIB=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# Per-thread CPU ticks of a process: "tid comm ticks" lines.
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        [[ -r $t/stat ]] || continue
        # comm may contain spaces; fields after the last ')' are fixed: utime=12th, stime=13th.
        awk -v tid="${t##*/}" -v comm="$(tr ' ' '_' <"$t/comm" 2>/dev/null)" '{
            s = $0; sub(/.*\) /, "", s); split(s, f, " "); print tid, comm, f[12] + f[13] }' "$t/stat" 2>/dev/null || true
    done
}
proc_ticks() { awk '{ s = $0; sub(/.*\) /, "", s); split(s, f, " "); print f[12] + f[13] }' "/proc/$1/stat"; }
# "busy iowait total" jiffies of the whole machine.
sys_ticks() { awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, $6, t }' /proc/stat; }

# "rchar wchar" of a process: bytes it read (socket + files) and wrote (file + socket) so far.
# %.0f: mawk prints numbers past 2^31 as 2.1e+09, and clamps %d to 2147483647 (so a kill at
# 50% of a file over 4 GiB never came).
proc_io() { awk '/^rchar:/ { r = $2 } /^wchar:/ { w = $2 } END { printf "%.0f %.0f\n", r, w }' "/proc/$1/io"; }

sampler() { # pid outfile: "t_ns rss_kib cpu_ticks rchar wchar" every SAMPLE_SECS
    local pid=$1 out=$2
    while kill -0 "$pid" 2>/dev/null; do
        printf '%s %s %s %s\n' "$(now_ns)" \
            "$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null)" \
            "$(proc_ticks "$pid" 2>/dev/null)" "$(proc_io "$pid" 2>/dev/null)" >>"$out"
        sleep "$SAMPLE_SECS"
    done
}

HZ=$(getconf CLK_TCK)

# One streaming PUT of $1 (a file) on the running server. Sets: ING_SECS, ING_RSS_MAX, ING_HWM,
# ING_SRV_CPU (server CPU% of one core, averaged), ING_CURL_CPU, ING_SYS_BUSY, ING_IOWAIT,
# ING_THREADS (per-thread-group CPU seconds), and checks the digests against $2/$3.
ingest_once() {
    local file=$1 ref_sha=$2 ref_b3=$3 tag=$4
    local tid ut resp before_thr after_thr t0 t1 p0 p1 s0 s1 size
    size=$(stat -c %s "$file")
    tid=$("$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
    ut=$("$A" transfer token "$tid" --ttl 1h 2>>"$LOG/cli.err")
    settle
    local samples=$LOG/samples.$tag
    : >"$samples"
    sampler "$SERVER_PID" "$samples" &
    SAMPLER_PID=$!
    before_thr=$(thread_ticks "$SERVER_PID")
    p0=$(proc_ticks "$SERVER_PID")
    s0=$(sys_ticks)
    io0=$(proc_io "$SERVER_PID")
    t0=$(now_ns)
    if ! /usr/bin/time -f '%U %S' -o "$LOG/curl.time.$tag" \
        curl -sS --fail-with-body -X PUT -H "Authorization: Bearer $ut" \
        -H 'Content-Type: application/octet-stream' -T "$file" \
        -o "$LOG/resp.$tag.json" "$AIRLOCK_SERVER/api/v1/transfers/$tid/files/big.bin"; then
        say "upload failed:"; cat "$LOG/resp.$tag.json" >&2 || true; exit 1
    fi
    t1=$(now_ns)
    s1=$(sys_ticks)
    p1=$(proc_ticks "$SERVER_PID")
    after_thr=$(thread_ticks "$SERVER_PID")
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=
    ING_SECS=$(secs "$t0" "$t1")
    # Phases, from the samples: when the server had written the whole file (wchar, i.e. into
    # the page cache); the rest is the commit (fsync of file and folder, database, reply).
    # Resolution: SAMPLE_SECS. (rchar does not count socket receives, so it is not used.)
    ING_PHASES=$(awk -v t0="$t0" -v t1="$t1" -v n="$size" -v w0="${io0#* }" '
        NF >= 5 && !wd && $5 - w0 >= n { wd = ($1 - t0) / 1e9 }
        END {
            e = (t1 - t0) / 1e9
            if (!wd) wd = e
            printf "file fully written (to page cache) at %.1f s, commit tail (fsync+db+reply) %.1f s", wd, e - wd
        }' "$samples")
    ING_HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
    ING_RSS_MAX=$(awk 'max < $2 { max = $2 } END { print max + 0 }' "$samples")
    ING_SRV_CPU=$(awk -v d=$((p1 - p0)) -v hz="$HZ" -v s="$ING_SECS" 'BEGIN { printf "%.0f", d / hz / s * 100 }')
    ING_CURL_CPU=$(awk -v s="$ING_SECS" '{ printf "%.0f", ($1 + $2) / s * 100 }' "$LOG/curl.time.$tag")
    read -r b0 w0 a0 <<<"$s0"
    read -r b1 w1 a1 <<<"$s1"
    ING_SYS_BUSY=$(awk -v b=$((b1 - b0)) -v a=$((a1 - a0)) 'BEGIN { printf "%.0f", b / a * 100 }')
    ING_IOWAIT=$(awk -v w=$((w1 - w0)) -v a=$((a1 - a0)) 'BEGIN { printf "%.0f", w / a * 100 }')
    # CPU seconds per server thread over the upload (threads born during it count from zero;
    # threads that ended before it finished are only in the process total above). Tokio names
    # its async workers and its blocking pool alike, so threads are listed one by one.
    ING_THREADS=$(awk -v hz="$HZ" -v s="$ING_SECS" '
        NR == FNR { b[$1] = $3; next }
        { d = $3 - (($1 in b) ? b[$1] : 0); if (d > 0) printf "    tid %-8s %-18s %7.2f cpu-s  %4.0f%% of wall\n", $1, $2, d / hz, d / hz / s * 100 }
    ' <(printf '%s\n' "$before_thr") <(printf '%s\n' "$after_thr") | sort -k4 -g -r | head -12)
    # Digests.
    local got_sha got_b3 got_size
    got_sha=$(jq -r '.sha256 // empty' "$LOG/resp.$tag.json")
    got_b3=$(jq -r '.blake3 // empty' "$LOG/resp.$tag.json")
    got_size=$(jq -r '.size // empty' "$LOG/resp.$tag.json")
    ING_DIGEST_OK=yes
    [[ $got_sha == "$ref_sha" ]] || ING_DIGEST_OK="NO (sha256 $got_sha != $ref_sha)"
    [[ -z $ref_b3 || $got_b3 == "$ref_b3" ]] || ING_DIGEST_OK="NO (blake3 $got_b3 != $ref_b3)"
    [[ $got_size == "$size" ]] || ING_DIGEST_OK="NO (size $got_size != $size)"
    # Free the disk (and page cache) for the next run.
    curl -sS -o /dev/null -X DELETE -H "Authorization: Bearer $ut" \
        "$AIRLOCK_SERVER/api/v1/transfers/$tid/files/big.bin" || say "warning: DELETE failed"
    sync
}

# Client mode: `airlock upload` of $1, SIGKILLed once when the server has written INTERRUPT_PCT of
# it (wchar of the server process: the file's bytes dominate it), then run again to the end.
# Sets the same ING_* figures as ingest_once (ING_CURL_CPU is the client's, both runs), plus
# ING_RESUME (where the second run resumed, from its `resumed` event) and ING_WRITTEN (bytes
# the server wrote for the upload, so a re-send shows as more than the file's size).
client_once() {
    local file=$1 ref_sha=$2 ref_b3=$3 tag=$4
    local tid ut size t0 t1 p0 p1 s0 s1 io0 w0 cpid killed=no before_thr after_thr
    size=$(stat -c %s "$file")
    tid=$("$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
    ut=$("$A" transfer token "$tid" --ttl 24h 2>>"$LOG/cli.err")
    settle
    local samples=$LOG/samples.$tag
    : >"$samples"
    sampler "$SERVER_PID" "$samples" &
    SAMPLER_PID=$!
    before_thr=$(thread_ticks "$SERVER_PID")
    p0=$(proc_ticks "$SERVER_PID")
    s0=$(sys_ticks)
    io0=$(proc_io "$SERVER_PID")
    w0=${io0#* }
    local dir base
    dir=$(dirname "$file") base=$(basename "$file")
    t0=$(now_ns)
    (cd "$dir" && exec /usr/bin/time -f '%U %S' -o "$LOG/client.time1.$tag" \
        "$C" upload --token "$ut" --json "$base") >"$LOG/events1.$tag" 2>"$LOG/client1.$tag.err" &
    cpid=$!
    local cut=$((size / 100 * INTERRUPT_PCT))
    while kill -0 "$cpid" 2>/dev/null; do
        local io w
        io=$(proc_io "$SERVER_PID")
        w=${io#* }
        if ((INTERRUPT_PCT > 0 && w - w0 >= cut)); then
            # The whole process group: /usr/bin/time and the client under it.
            pkill -KILL -P "$cpid" 2>/dev/null || true
            kill -KILL "$cpid" 2>/dev/null || true
            killed=yes
            break
        fi
        sleep 0.05
    done
    wait "$cpid" 2>/dev/null || true
    [[ $killed == yes ]] || say "  warning: the first run finished before ${INTERRUPT_PCT}% (no interruption)"
    (cd "$dir" && exec /usr/bin/time -f '%U %S' -o "$LOG/client.time2.$tag" \
        "$C" upload --token "$ut" --json "$base") >"$LOG/events2.$tag" 2>"$LOG/client2.$tag.err" ||
        { cat "$LOG/client2.$tag.err" >&2; say "the second client run failed"; exit 1; }
    t1=$(now_ns)
    s1=$(sys_ticks)
    p1=$(proc_ticks "$SERVER_PID")
    after_thr=$(thread_ticks "$SERVER_PID")
    local io1
    io1=$(proc_io "$SERVER_PID")
    ING_WRITTEN=$((${io1#* } - w0))
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=
    ING_SECS=$(secs "$t0" "$t1")
    ING_PHASES="killed: $killed; second run resumed at byte $(jq -r 'select(.event == "resumed") | .offset' "$LOG/events2.$tag" | head -1) of $size; the server wrote $ING_WRITTEN bytes in all"
    ING_RESUME=$(jq -r 'select(.event == "resumed") | .offset' "$LOG/events2.$tag" | head -1)
    ING_HWM=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
    ING_RSS_MAX=$(awk 'max < $2 { max = $2 } END { print max + 0 }' "$samples")
    ING_SRV_CPU=$(awk -v d=$((p1 - p0)) -v hz="$HZ" -v s="$ING_SECS" 'BEGIN { printf "%.0f", d / hz / s * 100 }')
    ING_CURL_CPU=$(cat "$LOG/client.time1.$tag" "$LOG/client.time2.$tag" 2>/dev/null |
        awk -v s="$ING_SECS" '/^[0-9.]+ [0-9.]+$/ { c += $1 + $2 } END { printf "%.0f", c / s * 100 }')
    read -r b0 w0_ a0 <<<"$s0"
    read -r b1 w1 a1 <<<"$s1"
    ING_SYS_BUSY=$(awk -v b=$((b1 - b0)) -v a=$((a1 - a0)) 'BEGIN { printf "%.0f", b / a * 100 }')
    ING_IOWAIT=$(awk -v w=$((w1 - w0_)) -v a=$((a1 - a0)) 'BEGIN { printf "%.0f", w / a * 100 }')
    ING_THREADS=$(awk -v hz="$HZ" -v s="$ING_SECS" '
        NR == FNR { b[$1] = $3; next }
        { d = $3 - (($1 in b) ? b[$1] : 0); if (d > 0) printf "    tid %-8s %-18s %7.2f cpu-s  %4.0f%% of wall\n", $1, $2, d / hz, d / hz / s * 100 }
    ' <(printf '%s\n' "$before_thr") <(printf '%s\n' "$after_thr") | sort -k4 -g -r | head -12)
    # Digests: the second run's `done` (or `skipped`, had the first finished) event.
    local got_sha got_b3 got_size
    got_sha=$(jq -r 'select(.event == "done" or .event == "skipped") | .sha256' "$LOG/events2.$tag" | tail -1)
    got_b3=$(jq -r 'select(.event == "done" or .event == "skipped") | .blake3' "$LOG/events2.$tag" | tail -1)
    got_size=$(jq -r 'select(.event == "done" or .event == "skipped") | .size' "$LOG/events2.$tag" | tail -1)
    ING_DIGEST_OK=yes
    [[ $got_sha == "$ref_sha" ]] || ING_DIGEST_OK="NO (sha256 $got_sha != $ref_sha)"
    [[ -z $ref_b3 || $got_b3 == "$ref_b3" ]] || ING_DIGEST_OK="NO (blake3 $got_b3 != $ref_b3)"
    [[ $got_size == "$size" ]] || ING_DIGEST_OK="NO (size $got_size != $size)"
    curl -sS -o /dev/null -X DELETE -H "Authorization: Bearer $ut" \
        "$AIRLOCK_SERVER/api/v1/transfers/$tid/files/$base" || say "warning: DELETE failed"
    sync
}

upload_once() { if [[ $MODE == client ]]; then client_once "$@"; else ingest_once "$@"; fi; }

setup_airlock

# ---- memory at smaller sizes (fresh server each) ------------------------------------------
mem_rows=()
for m in $MEM_SIZES; do
    ((m < SIZE_MIB)) || continue
    small=$WORK/input.$m.bin
    head -c $((m * 1024 * 1024)) "$FILE" >"$small"
    ssha=$(sha256sum "$small" | awk '{ print $1 }')
    sb3=
    [[ -n $REF_B3 ]] && sb3=$(b3sum --no-names "$small")
    start_server "mem$m"
    say "memory run: $m MiB upload on a fresh server ..."
    upload_once "$small" "$ssha" "$sb3" "mem$m"
    mem_rows+=("$(printf '%8s MiB  %9s  %12s  %12s  %8s MiB/s  digests %s' "$m" \
        "$((IDLE_RSS_KIB / 1024)) MiB" "$((ING_RSS_MAX / 1024)) MiB" "$((ING_HWM / 1024)) MiB" \
        "$(mibps $((m * 1024 * 1024)) "$ING_SECS")" "$ING_DIGEST_OK")")
    stop_server
    rm -f "$small"
done

# ---- main runs (interleaved, so slow phases of the machine hit all three alike) -----------
start_server main
MAIN_IDLE_RSS=$IDLE_RSS_KIB
dd_t=() ossl_t=() ing_t=() rss_max=0 hwm_first= digest_all=yes
declare -a ing_detail dd_detail
for r in $(seq "$RUNS"); do
    say "round $r/$RUNS: dd ..."
    settle
    t0=$(now_ns)
    dd if="$FILE" of="$WORK/dd.out" bs=8M conv=fsync status=none &
    dd_pid=$!
    sampler "$dd_pid" "$LOG/samples.dd$r" &
    SAMPLER_PID=$!
    wait "$dd_pid" || { say "dd failed"; exit 1; }
    t1=$(now_ns)
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=
    dd_t+=("$(secs "$t0" "$t1")")
    dd_detail+=("$(awk -v t0="$t0" -v t1="$t1" -v n="$bytes" -v r="$r" '
        NF >= 5 && !wd && $5 >= n { wd = ($1 - t0) / 1e9 }
        END { e = (t1 - t0) / 1e9; if (!wd) wd = e
              printf "  run %d: %7.3f s | all written (to page cache) at %.1f s, fsync tail %.1f s", r, e, wd, e - wd }
        ' "$LOG/samples.dd$r")")
    rm -f "$WORK/dd.out"
    sync

    say "round $r/$RUNS: openssl dgst -sha256 ..."
    settle
    t0=$(now_ns)
    osha=$(openssl dgst -sha256 -r "$FILE" | awk '{ print $1 }')
    t1=$(now_ns)
    ossl_t+=("$(secs "$t0" "$t1")")
    [[ $osha == "$REF_SHA" ]] || say "warning: openssl sha256 differs from sha256sum"

    say "round $r/$RUNS: $ING_LABEL ..."
    upload_once "$FILE" "$REF_SHA" "$REF_B3" "main$r"
    ing_t+=("$ING_SECS")
    ((ING_RSS_MAX > rss_max)) && rss_max=$ING_RSS_MAX
    [[ -z $hwm_first ]] && hwm_first=$ING_HWM
    [[ $ING_DIGEST_OK == yes ]] || digest_all=$ING_DIGEST_OK
    ing_detail+=("$(printf '  run %d: %7.3f s  %7s MiB/s | server CPU %s%% of one core, %s %s%% | machine busy %s%% of %s cores, iowait %s%% | RSS max %s MiB\n    %s\n%s' \
        "$r" "$ING_SECS" "$(mibps "$bytes" "$ING_SECS")" "$ING_SRV_CPU" "${MODE/put/curl}" "$ING_CURL_CPU" \
        "$ING_SYS_BUSY" "$(nproc)" "$ING_IOWAIT" "$((ING_RSS_MAX / 1024))" "$ING_PHASES" "$ING_THREADS")")
    say "  ingest ${ING_SECS}s ($(mibps "$bytes" "$ING_SECS") MiB/s), digests: $ING_DIGEST_OK"
done
hwm_last=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
stop_server

# ---- report -------------------------------------------------------------------------------
best_dd=$(min_of "${dd_t[@]}")
best_ossl=$(min_of "${ossl_t[@]}")
best_ing=$(min_of "${ing_t[@]}")
row() { # name times... (best is the min)
    local name=$1; shift
    local best; best=$(min_of "$@")
    printf '%-34s %-26s %8s %9s %9s\n' "$name" "$*" "$best" "$(mibps "$bytes" "$best")" "$(mbps "$bytes" "$best")"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; } # throughput ratio = time_b/time_a
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "PASS" : "FAIL" }'; }
r_disk=$(ratio "$best_ing" "$best_dd")
r_ossl=$(ratio "$best_ing" "$best_ossl")
peak_kib=$hwm_last
((rss_max > peak_kib)) && peak_kib=$rss_max

cat <<EOF

================ airlock ingest benchmark ================
host:      $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)
fs:        $(df -PT "$BENCH_TMP" | awk 'NR == 2 { print $1 " (" $2 ") at " $7 }')
binary:    $A
file:      $SIZE_MIB MiB ($bytes bytes) random, page cache warm; best of $RUNS
sha256:    $REF_SHA

measurement                        times (s)                  best (s)     MiB/s      MB/s
-------------------------------------------------------------------------------------------
$(row "$ING_LABEL" "${ing_t[@]}")
$(row "baseline A: dd bs=8M conv=fsync" "${dd_t[@]}")
$(row "baseline B: openssl dgst -sha256" "${ossl_t[@]}")

ratios (throughput)                value   target
  ingest / disk write              $r_disk    >= 0.90   $(verdict "$r_disk" 0.90)
  ingest / openssl sha256          $r_ossl    >= 0.80   $(verdict "$r_ossl" 0.80)

digests returned by the server == sha256sum/b3sum of the file: $digest_all

server memory ($SIZE_MIB MiB upload)
  idle RSS after start             $((MAIN_IDLE_RSS / 1024)) MiB
  VmHWM after first upload         $((hwm_first / 1024)) MiB
  VmHWM after all $RUNS uploads        $((hwm_last / 1024)) MiB
  max sampled VmRSS (every ${SAMPLE_SECS}s)  $((rss_max / 1024)) MiB
  peak vs target 64 MiB            $((peak_kib / 1024)) MiB   $( ((peak_kib < 65536)) && echo PASS || echo FAIL)
EOF
if ((${#mem_rows[@]} > 0)); then
    cat <<EOF

memory vs file size (fresh server per size, one upload)
      size       idle RSS  max sampled RSS      VmHWM   throughput
$(printf '%s\n' "${mem_rows[@]}")
$(printf '%8s MiB  %9s  %12s  %12s  %8s MiB/s  (main runs; VmHWM after 1st upload, best throughput)' "$SIZE_MIB" "$((MAIN_IDLE_RSS / 1024)) MiB" "$((rss_max / 1024)) MiB" "$((hwm_first / 1024)) MiB" "$(mibps "$bytes" "$best_ing")")
EOF
fi
cat <<EOF

where the time goes in dd (wchar sampled every ${SAMPLE_SECS}s):
$(printf '%s\n' "${dd_detail[@]}")

where the time goes during each ingest (server CPU seconds per thread, busiest first):
$(printf '%s\n' "${ing_detail[@]}")
EOF
