#!/usr/bin/env bash
# Many-files benchmark: FILES small files through the client (`airlock upload --jobs N
# --json`), then seal, scan (the real clamd), approve and release, re-verify, BagIt export and
# `transfer show --json`, with the server's peak RSS after each step; against `rsync -a` of
# the same tree to the same disk followed by `sync`, in the same run. See benches/README.md.
#
# Knobs (environment):
#   FILES        number of files                                  (default 100000)
#   FILE_KIB     size of each file in KiB                         (default 4)
#   PER_DIR      files per folder                                 (default 1000)
#   JOBS         the client's --jobs                              (default 4)
#   SAMPLE_SECS  how often the server's RSS and ingest counter are sampled (default 0.5)
#   BENCH_TMP    scratch parent dir, on the disk to measure       (default /work/bench-tmp)
#   AIRLOCK_BIN  the server (and CLI) binary (default: a release build, see lib.sh)
#   CLIENT_BIN   the binary whose `upload` is measured            (default AIRLOCK_BIN)
#   SKIP_RSYNC=1 measure without the rsync baseline (no ratio)
#   TENTHS=0     skip the flatness runs: the same tree into a second transfer, a tenth of its
#                folders per client run, the first tenth's rate against the last's
#   KEEP_DATA=1  keep the scratch dir
set -euo pipefail

FILES=${FILES:-100000}
FILE_KIB=${FILE_KIB:-4}
PER_DIR=${PER_DIR:-1000}
JOBS=${JOBS:-4}
SAMPLE_SECS=${SAMPLE_SECS:-0.5}
SKIP_RSYNC=${SKIP_RSYNC:-0}
TENTHS=${TENTHS:-1}

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
find_airlock
C=${CLIENT_BIN:-$A}
[[ -x $C ]] || die "not executable: $C"
for t in curl jq python3 awk sync; do need "$t"; done
[[ -x /usr/bin/time ]] || die "missing GNU time at /usr/bin/time (apt-get install time)"
if [[ $SKIP_RSYNC != 1 ]]; then
    need rsync "apt-get install rsync; or SKIP_RSYNC=1 to measure without the baseline"
fi
help=$("$C" upload --help 2>&1 || true)
for flag in --jobs --json; do
    grep -q -- "$flag" <<<"$help" ||
        die "$C: \`airlock upload\` has no $flag (the resumable parallel client of issue 11 is not in this build); set CLIENT_BIN to a build that has it"
done

make_work many

# ---- the tree ---------------------------------------------------------------------------
SRC=$WORK/src
say "writing $FILES files of $FILE_KIB KiB under $SRC/tree ..."
python3 - "$SRC/tree" "$FILES" "$((FILE_KIB * 1024))" "$PER_DIR" <<'PY'
import os, sys
root, n, size, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(n):
    d = os.path.join(root, f"d{i // per:04d}")
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}.bin"), "wb") as f:
        f.write(os.urandom(size))
PY
sync
bytes=$((FILES * FILE_KIB * 1024))

# ---- baseline: rsync -a to the same disk, then sync --------------------------------------
RSYNC_SECS=
if [[ $SKIP_RSYNC != 1 ]]; then
    say "baseline: rsync -a + sync ..."
    sync
    t0=$(now_ns)
    rsync -a "$SRC/tree/" "$WORK/rsync-copy/"
    sync
    t1=$(now_ns)
    RSYNC_SECS=$(secs "$t0" "$t1")
    n=$(find "$WORK/rsync-copy" -type f | wc -l)
    [[ $n == "$FILES" ]] || die "rsync copied $n files, not $FILES"
    rm -rf "$WORK/rsync-copy"
    sync
fi

# ---- server -----------------------------------------------------------------------------
start_clamd
"$A" admin user add pm --role project-manager >/dev/null
"$A" admin user add inv --role investigator >/dev/null
"$A" admin user add prov --role provider >/dev/null
"$A" admin project create bench >/dev/null
"$A" admin project add-member bench pm --role project-manager >/dev/null
"$A" admin project add-member bench inv --role investigator >/dev/null
"$A" admin workspace create bench ws --tier 1 >/dev/null
start_server main
PM=$("$A" admin token pm)
INV=$("$A" admin token inv)
export AIRLOCK_TOKEN=$PM
sleep 0.5
IDLE_KIB=$(rss_kib "$SERVER_PID")
TID=$("$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
UT=$("$A" transfer token "$TID" --ttl 24h 2>>"$LOG/cli.err")

# The server's RSS and files ingested, every SAMPLE_SECS: "t_ns rss_kib ingested anon file shmem"
# (the last three: RSS split into anonymous memory, mapped files and shared memory, KiB).
SAMPLES=$LOG/samples
(
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        printf '%s %s %s %s\n' "$(now_ns)" "$(rss_kib "$SERVER_PID")" \
            "$(curl -sS -m 2 "$AIRLOCK_SERVER/metrics" 2>/dev/null |
                awk '$1 == "airlock_ingested_files_total" { print $2; f = 1 } END { if (!f) print "-" }')" \
            "$(rss_parts_kib "$SERVER_PID")"
        sleep "$SAMPLE_SECS"
    done
) >"$SAMPLES" &
BG_PIDS+=($!)

HWM_RESET=yes
steps=()
# Runs one step: resets the server's VmHWM first (so each figure is that step's own peak; where
# the kernel refuses, the figures are cumulative), times it, and records the server's peak and,
# for commands that work on the data directory themselves, the command's own peak RSS.
step() { # name cli(yes|no) command...
    local name=$1 cli=$2 tag=${1//[^a-zA-Z0-9]/_}
    shift 2
    reset_hwm "$SERVER_PID" || HWM_RESET="no (figures are cumulative peaks)"
    local t0 t1 cli_kib=-
    t0=$(now_ns)
    if [[ $cli == yes ]]; then
        /usr/bin/time -f '%M' -o "$LOG/time.$tag" "$@" >"$LOG/out.$tag" 2>"$LOG/err.$tag" ||
            { cat "$LOG/err.$tag" >&2; die "step $name failed"; }
        cli_kib=$(tail -1 "$LOG/time.$tag")
    else
        "$@"
    fi
    t1=$(now_ns)
    STEP_SECS=$(secs "$t0" "$t1")
    steps+=("$(printf '%s\t%s\t%s\t%s' "$name" "$STEP_SECS" "$(mib "$(hwm_kib "$SERVER_PID")")" \
        "$([[ $cli_kib == - ]] && echo - || mib "$cli_kib")")")
    say "  $name: ${STEP_SECS}s"
}

upload() {
    # Each event line is stamped with the time it arrived (ns), for the rate over time.
    (cd "$SRC" && "$C" upload --token "$UT" --jobs "$JOBS" --json tree) 2>"$LOG/upload.err" |
        python3 -u -c 'import sys, time
for line in sys.stdin:
    sys.stdout.write(f"{time.time_ns()} {line}")' >"$LOG/events" ||
        { tail -20 "$LOG/upload.err" >&2; die "airlock upload failed"; }
}
seal() { "$C" seal --token "$UT" >"$LOG/seal.out" 2>&1 || { cat "$LOG/seal.out" >&2; die "seal failed"; }; }
scan() { wait_state "$TID" in_review "$PM" 36000; }
release() {
    AIRLOCK_TOKEN=$INV "$A" transfer approve "$TID" --as investigator >"$LOG/approve.out" 2>&1 ||
        { cat "$LOG/approve.out" >&2; die "approve failed"; }
    wait_state "$TID" released "$PM" 36000
}

say "upload: $FILES files through $C upload --jobs $JOBS ..."
UP_T0=$(now_ns)
step upload no upload
UPLOAD_SECS=$STEP_SECS
step seal no seal
step scan no scan
step approve+release no release
step "verify (CLI)" yes "$A" verify "$TID"
step "bag export (CLI)" yes "$A" bag "$TID" --output "$WORK/bag"
n_bag=$(find "$WORK/bag/data" -type f | wc -l)
chmod -R u+w "$WORK/bag" && rm -rf "$WORK/bag"
step "transfer show --json (CLI)" yes "$A" transfer show "$TID" --json
n_show=$(jq '.files | length' "$LOG/out.transfer_show___json__CLI_")
kill "${BG_PIDS[@]}" 2>/dev/null || true
BG_PIDS=()
PEAK_KIB=$(awk 'max < $2 { max = $2 } END { print max + 0 }' "$SAMPLES")

# ---- flatness: a tenth per run ------------------------------------------------------------
# One run's own rate over its first and last 10% holds its start (the walk, the pipeline
# filling: about a second at --jobs 4 with 4,000-file batches, more than 10% of the files at
# 20,000 files/s) and its drain. So the cost per file as the transfer fills is also measured
# with what is the same in every run taken out: the same tree into a second transfer, a tenth
# of its folders per client run, each run timed whole. The first run meets an empty transfer,
# the last one holding 90% of the files.
TENTH_RATES=()
if [[ $TENTHS == 1 ]]; then
    TID2=$("$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
    UT2=$("$A" transfer token "$TID2" --ttl 24h 2>>"$LOG/cli.err")
    mapfile -t dirs < <(cd "$SRC" && find tree -mindepth 1 -maxdepth 1 -type d | sort)
    nd=${#dirs[@]}
    if ((nd >= 10)); then
        say "flatness: the tree again, a tenth of its $nd folders per client run ..."
        per=$(((nd + 9) / 10))
        for ((i = 0; i < 10; i++)); do
            part=("${dirs[@]:i*per:per}")
            ((${#part[@]} > 0)) || continue
            n=$(cd "$SRC" && find "${part[@]}" -type f | wc -l)
            sync
            t0=$(now_ns)
            (cd "$SRC" && "$C" upload --token "$UT2" --jobs "$JOBS" --json "${part[@]}") \
                >"$LOG/tenth.$i" 2>"$LOG/tenth.$i.err" ||
                { tail -20 "$LOG/tenth.$i.err" >&2; die "airlock upload (tenth $i) failed"; }
            t1=$(now_ns)
            done_n=$(jq -c 'select(.event == "done")' "$LOG/tenth.$i" | wc -l)
            ((done_n == n)) || die "tenth $i: $done_n files confirmed, not $n"
            TENTH_RATES+=("$(awk -v n="$n" -v s="$(secs "$t0" "$t1")" 'BEGIN { printf "%.0f", n / s }')")
        done
    else
        say "flatness runs skipped: $nd folders, fewer than 10 (FILES / PER_DIR)"
    fi
fi
stop_server

# ---- rates --------------------------------------------------------------------------------
# From the client's `done` events (time of arrival) and from the server's ingest counter.
read -r C_ALL C_FIRST C_LAST C_DONE C_MID1 C_MID9 <<<"$(python3 - "$LOG/events" "$UP_T0" "$FILES" <<'PY'
import json, sys
path, t0, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ts = []
for line in open(path):
    stamp, _, rest = line.partition(" ")
    try:
        e = json.loads(rest)
    except ValueError:
        continue
    if e.get("event") in ("done", "skipped"):
        ts.append(int(stamp))
ts.sort()
k = len(ts)
if k < 10:
    print("- - -", k, "- -"); sys.exit()
d = max(k // 10, 1)
rate = lambda a, b, m: m / max((b - a) / 1e9, 1e-9)
first = rate(t0, ts[d - 1], d)
last = rate(ts[k - d - 1], ts[k - 1], d)
# Without the start (the walk of the tree, the pipeline filling) and the end: files 10-20%
# against 80-90%, between confirmations.
mid1 = rate(ts[d - 1], ts[2 * d - 1], d)
mid9 = rate(ts[k - 2 * d - 1], ts[k - d - 1], d)
print(f"{rate(t0, ts[-1], k):.0f} {first:.0f} {last:.0f} {k} {mid1:.0f} {mid9:.0f}")
PY
)"
read -r S_FIRST S_LAST <<<"$(python3 - "$SAMPLES" "$UP_T0" "$FILES" <<'PY'
import sys
path, t0, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pts = [(int(t), float(c)) for t, _, c in (l.split()[:3] for l in open(path)) if c != "-"]
def when(count):
    # The first time the counter reached `count`, interpolated between samples.
    prev = (t0, 0.0)
    for t, c in pts:
        if t < t0:
            continue
        if c >= count:
            (pt, pc) = prev
            return pt + (t - pt) * ((count - pc) / (c - pc) if c > pc else 1)
        prev = (t, c)
    return None
d = n / 10
a, b, c, e = when(d), when(n - d), when(n), t0
if None in (a, b, c):
    print("- -"); sys.exit()
print(f"{d / ((a - e) / 1e9):.0f} {d / ((c - b) / 1e9):.0f}")
PY
)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == 0) print "-"; else printf "%.2f", b / a }'; }

cat <<EOF

================ airlock many-files benchmark ================
host:     $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)
fs:       $(df -PT "$BENCH_TMP" | awk 'NR == 2 { print $1 " (" $2 ") at " $7 }')
server:   $A ($BUILD)
client:   $C upload --jobs $JOBS --json
files:    $FILES x $FILE_KIB KiB ($((bytes / 1048576)) MiB) in folders of $PER_DIR

upload (client wall time)        ${UPLOAD_SECS} s   $(awk -v n="$FILES" -v s="$UPLOAD_SECS" 'BEGIN { printf "%.0f", n / s }') files/s   ($C_DONE done/skipped events)
rate, client done events         first 10%: $C_FIRST files/s   last 10%: $C_LAST files/s   last/first: $(ratio "$C_FIRST" "$C_LAST")   (target >= 0.80)
rate, client, 10-20% vs 80-90%   10-20%: $C_MID1 files/s   80-90%: $C_MID9 files/s   ratio: $(ratio "$C_MID1" "$C_MID9")   (the start and end without the walk and the pipeline filling and draining)
rate, server ingest counter      first 10%: $S_FIRST files/s   last 10%: $S_LAST files/s   last/first: $(ratio "$S_FIRST" "$S_LAST")
EOF
if ((${#TENTH_RATES[@]} == 10)); then
    tr=$(ratio "${TENTH_RATES[0]}" "${TENTH_RATES[9]}")
    cat <<EOF
rate, a tenth per client run     first tenth: ${TENTH_RATES[0]} files/s   last tenth: ${TENTH_RATES[9]} files/s   last/first: $tr   (target 0.80 to 1.20: $(awk -v r="$tr" 'BEGIN { print (r >= 0.8 && r <= 1.2) ? "PASS" : "FAIL" }'))
                                 every tenth: ${TENTH_RATES[*]} files/s
EOF
fi
if [[ -n $RSYNC_SECS ]]; then
    r=$(ratio "$UPLOAD_SECS" "$RSYNC_SECS")
    cat <<EOF
baseline rsync -a + sync         ${RSYNC_SECS} s   $(awk -v n="$FILES" -v s="$RSYNC_SECS" 'BEGIN { printf "%.0f", n / s }') files/s
airlock / rsync (throughput)     $r   (target >= 1.00: $(awk -v r="$r" 'BEGIN { print (r != "-" && r >= 1.0) ? "PASS" : "FAIL" }'))
EOF
fi
cat <<EOF

server memory: idle $(mib "$IDLE_KIB") MiB; max sampled VmRSS $(mib "$PEAK_KIB") MiB; VmHWM reset before each step: $HWM_RESET
  at that sample: $(awk 'max < $2 { max = $2; a = $4; f = $5; s = $6 } END { printf "anonymous %.1f MiB, files %.1f MiB, shared %.1f MiB", a / 1024, f / 1024, s / 1024 }' "$SAMPLES")
target: under 64 MiB + the SQLite page-cache allowance of 1 MiB (8 connections x 128 KiB, src/store) = 65 MiB: $(awk -v k="$PEAK_KIB" 'BEGIN { print (k / 1024 < 65) ? "PASS" : "FAIL" }')
EOF
{
    printf 'step\tseconds\tserver VmHWM MiB\tCLI max RSS MiB\n'
    printf '%s\n' "${steps[@]}"
} | column -t -s $'\t'
cat <<EOF

checks: bag holds $n_bag files, transfer show --json lists $n_show files (of $FILES)
EOF
