#!/usr/bin/env bash
# Status-read benchmark: latency of `GET /api/v1/transfers/{id}` at a constant request rate
# (open loop: examples/loadgen.rs), for transfers of several file counts, each against
# `GET /healthz` measured just before it in the same run. See benches/README.md.
#
# Knobs (environment):
#   COUNTS       file counts of the transfers, space separated   (default "10 10000 100000")
#   RATE         requests per second                              (default 500)
#   DURATION     seconds of load per measurement                  (default 10)
#   WARMUP       seconds sent first and not counted               (default 1)
#   DECISIONS    approvals recorded on each transfer (the policy asks one more, so it stays
#                in review)                                       (default 3)
#   FILE_BYTES   size of each file                                (default 64)
#   BATCH        files per tar archive PUT                        (default 2000)
#   JOBS         parallel curl PUTs when the archive route is absent (default 8)
#   LOADGEN_THREADS  tokio worker threads of the load generator   (default 1)
#   BENCH_TMP    scratch parent dir                               (default /work/bench-tmp)
#   AIRLOCK_BIN  the airlock binary (default: a release build, see lib.sh)
#   LOADGEN_BIN  the load generator (default: examples/loadgen next to AIRLOCK_BIN)
#   KEEP_DATA=1  keep the scratch dir
set -euo pipefail

COUNTS=${COUNTS:-"10 10000 100000"}
RATE=${RATE:-500}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
DECISIONS=${DECISIONS:-3}
FILE_BYTES=${FILE_BYTES:-64}
BATCH=${BATCH:-2000}
JOBS=${JOBS:-8}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
find_airlock
LG=${LOADGEN_BIN:-$(dirname "$A")/examples/loadgen}
[[ -x $LG ]] || die "no load generator at $LG; build it with: cargo build --release --example loadgen (or set LOADGEN_BIN)"
for t in curl jq tar python3 awk; do need "$t"; done

make_work api

# ---- people, and a policy that keeps every transfer in review with DECISIONS approvals ----
POLICY=$WORK/api-policy.toml
sed -e 's/^required = \["clamav"\]/required = ["filetype", "archive"]/' \
    -e "/^\[approvals.data-ingress\]/,/^\[/ s/^investigator = 1/investigator = $((DECISIONS + 1))/" \
    "$repo/policies/tier1.toml" >"$POLICY"
grep -q "investigator = $((DECISIONS + 1))" "$POLICY" || die "could not write the benchmark policy from policies/tier1.toml"
"$A" admin user add pm --role project-manager >/dev/null
"$A" admin user add prov --role provider >/dev/null
"$A" admin project create bench >/dev/null
"$A" admin project add-member bench pm --role project-manager >/dev/null
for i in $(seq "$DECISIONS"); do
    "$A" admin user add "inv$i" --role investigator >/dev/null
    "$A" admin project add-member bench "inv$i" --role investigator >/dev/null
done
"$A" admin workspace create bench ws --tier 1 --policy "$POLICY" >/dev/null
start_server main
PM=$("$A" admin token pm)
export AIRLOCK_TOKEN=$PM

# ---- test data: one tree of the largest count; smaller transfers take its first files ----
max=0
for n in $COUNTS; do ((n > max)) && max=$n; done
SRC=$WORK/src
say "writing $max files of $FILE_BYTES bytes ..."
python3 - "$SRC" "$max" "$FILE_BYTES" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = []
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    name = f"d{i // 1000:03d}/f{i:06d}.txt"
    with open(os.path.join(root, name), "wb") as f:
        f.write(os.urandom(size))
    names.append(name)
with open(os.path.join(root, "..", "names.txt"), "w") as f:
    f.write("\n".join(names) + "\n")
PY
NAMES=$WORK/names.txt

# PUTs the first $3 files of the tree into transfer $1 with upload token $2: tar archives of
# BATCH files (the archive route), or parallel plain PUTs where this build has no such route.
FILL_MODE=
fill() { # id token count
    local id=$1 ut=$2 n=$3 start code
    if [[ -z $FILL_MODE || $FILL_MODE == archive ]]; then
        for ((start = 0; start < n; start += BATCH)); do
            local take=$((n - start < BATCH ? n - start : BATCH))
            # sed, not tail | head: head closing the pipe early is a SIGPIPE under pipefail.
            sed -n "$((start + 1)),$((start + take))p" "$NAMES" >"$WORK/batch.txt"
            code=$(tar -cf - -C "$SRC" --no-recursion -T "$WORK/batch.txt" |
                curl -sS -o "$LOG/archive.json" -w '%{http_code}' -X PUT -T - \
                    -H "Authorization: Bearer $ut" -H 'Content-Type: application/x-tar' \
                    "$AIRLOCK_SERVER/api/v1/transfers/$id/archive")
            if [[ $code == 404 ]] && grep -q 'no such route' "$LOG/archive.json"; then
                [[ $start == 0 ]] || die "the archive route vanished halfway"
                say "  no PUT /api/v1/transfers/{id}/archive in this build: falling back to $JOBS parallel curl PUTs"
                FILL_MODE=put
                break
            fi
            [[ $code == 201 ]] || die "archive PUT answered $code: $(head -c 500 "$LOG/archive.json")"
            local got
            got=$(jq '.files | length' "$LOG/archive.json")
            [[ $got == "$take" ]] || die "archive PUT of $take files acknowledged $got"
            FILL_MODE=archive
        done
        [[ $FILL_MODE == archive ]] && return 0
    fi
    # One curl per 50 files (one connection each), JOBS at once.
    head -n "$n" "$NAMES" | AUTH="Authorization: Bearer $ut" URL="$AIRLOCK_SERVER/api/v1/transfers/$id/files" \
        SRC="$SRC" xargs -P "$JOBS" -n 50 bash -c '
        args=()
        for f; do args+=(-T "$SRC/$f" "$URL/$f" -o /dev/null); done
        curl -sS --fail-with-body -H "$AUTH" "${args[@]}"' _ ||
        die "a plain PUT failed"
}

# ---- transfers: filled, sealed, scanned, DECISIONS approvals each ------------------------
declare -A TID
for n in $COUNTS; do
    id=$("$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
    ut=$("$A" transfer token "$id" --ttl 12h 2>>"$LOG/cli.err")
    say "transfer of $n files ($id): uploading ..."
    t0=$(now_ns)
    fill "$id" "$ut" "$n"
    t1=$(now_ns)
    say "  uploaded in $(secs "$t0" "$t1") s ($FILL_MODE); sealing and scanning ..."
    code=$(curl -sS -o "$LOG/seal.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $ut" \
        "$AIRLOCK_SERVER/api/v1/transfers/$id/seal")
    [[ $code == 200 ]] || die "seal answered $code: $(head -c 500 "$LOG/seal.json")"
    wait_state "$id" in_review "$PM"
    for i in $(seq "$DECISIONS"); do
        AIRLOCK_TOKEN=$("$A" admin token "inv$i") "$A" transfer approve "$id" --as investigator \
            >>"$LOG/decide.log" 2>&1 || { cat "$LOG/decide.log" >&2; die "approval $i of $id failed"; }
    done
    st=$(transfer_state "$id" "$PM")
    [[ $st == in_review ]] || die "transfer $id is $st after $DECISIONS approvals, not in_review"
    TID[$n]=$id
done

# ---- load -------------------------------------------------------------------------------
load() { # label url
    local out=$LOG/load.$1.json
    LOADGEN_TOKEN=$PM "$LG" --url "$2" --rate "$RATE" --duration "${DURATION}s" --warmup "${WARMUP}s" \
        --threads "$LOADGEN_THREADS" >"$out" 2>>"$LOG/loadgen.err" || die "the load generator failed: $(cat "$LOG/loadgen.err")"
    cat "$out"
}
rows=() verdicts=()
for n in $COUNTS; do
    say "load: $RATE req/s for ${DURATION}s, /healthz then the transfer of $n files ..."
    h=$(load "healthz.$n" "$AIRLOCK_SERVER/healthz")
    s=$(load "status.$n" "$AIRLOCK_SERVER/api/v1/transfers/${TID[$n]}")
    size=$(curl -sS -H "Authorization: Bearer $PM" "$AIRLOCK_SERVER/api/v1/transfers/${TID[$n]}" | wc -c)
    for pair in "healthz|$h" "status|$s"; do
        what=${pair%%|*} j=${pair#*|}
        rows+=("$(jq -r --arg n "$n" --arg what "$what" --arg size "$size" '
            [$n, $what, (.p50_ms // "-" | tostring), (.p90_ms // "-" | tostring), (.p99_ms // "-" | tostring), (.max_ms // "-" | tostring),
             (.errors|tostring), (.achieved_rate|tostring), (if $what == "status" then $size else "-" end)]
            | @tsv' <<<"$j")")
    done
    hp99=$(jq '.p99_ms // "-"' <<<"$h") sp99=$(jq '.p99_ms // "-"' <<<"$s") serr=$(jq .errors <<<"$s")
    verdicts+=("$(awk -v n="$n" -v h="$hp99" -v s="$sp99" -v e="$serr" 'BEGIN {
        if (s == "-" || h == "-") { printf "%s\t%s\t%s\t-\tFAIL (no request answered)", n, s, h; exit }
        printf "%s\t%s\t%s\t%.2f\t%s", n, s, h, (h > 0 ? s / h : 0), (s < 20 && e == 0 ? "PASS" : (e > 0 ? "FAIL (" e " errors)" : "FAIL")) }')")
done
stop_server

cat <<EOF

================ airlock status-read benchmark ================
host:     $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)
binary:   $A ($BUILD)
load:     $RATE req/s open loop (examples/loadgen, $LOADGEN_THREADS thread), ${DURATION}s each after ${WARMUP}s warm-up, same machine
transfers: in review with $DECISIONS approvals each; files of $FILE_BYTES bytes, uploaded by $FILL_MODE

EOF
{
    printf 'files\ttarget\tp50 ms\tp90 ms\tp99 ms\tmax ms\terrors\treq/s\tbody bytes\n'
    printf '%s\n' "${rows[@]}"
} | column -t -s $'\t'
echo
{
    printf 'files\tstatus p99 ms\thealthz p99 ms\tratio\ttarget p99 < 20 ms\n'
    printf '%s\n' "${verdicts[@]}"
} | column -t -s $'\t'
