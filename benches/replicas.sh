#!/usr/bin/env bash
# Replicas benchmark, two parts in one run (see benches/README.md):
#
# 1. Status reads on PostgreSQL: `GET /api/v1/transfers/{id}` at a constant open-loop rate
#    (examples/loadgen) split across two `airlock serve` replicas on one database and one data
#    directory (RATE per replica, 2 x RATE in all), against one replica alone at RATE, and, for
#    context, one replica alone at 2 x RATE; interleaved, ROUNDS times.
# 2. Ingest of FILES small files through the client (`airlock upload --jobs JOBS --json`) into
#    a fresh transfer on a fresh data directory: on SQLite (the default) against PostgreSQL (a
#    fresh database), the same tree, interleaved, ROUNDS times.
#
# Knobs (environment):
#   ROUNDS       repetitions of every measurement; medians are reported   (default 3)
#   RATE         status reads per second per replica                      (default 500)
#   DURATION     seconds of load per measurement                          (default 10)
#   WARMUP       seconds sent first and not counted                       (default 1)
#   COUNT        files in the transfer whose status is read               (default 10)
#   DECISIONS    approvals recorded on it (the policy asks one more, so it stays in review)
#                                                                         (default 3)
#   CONTEXT=0    skip the context measurement (one replica at 2 x RATE)
#   FILES        files ingested per run (part 2)                          (default 20000)
#   FILE_KIB     size of each of them in KiB                              (default 4)
#   PER_DIR      files per folder                                         (default 1000)
#   JOBS         the client's --jobs                                      (default 4)
#   PARTS        which parts to run: "status ingest", "status" or "ingest" (default both)
#   PG_FSYNC=off PostgreSQL without fsync/synchronous_commit/full_page_writes (as the tests
#                run it); the default keeps its durability, as SQLite's is kept
#   PG_BIN       PostgreSQL's bin dir (default: the newest /usr/lib/postgresql/*/bin)
#   LOADGEN_THREADS  tokio worker threads of each load generator          (default 1)
#   BENCH_TMP    scratch parent dir                                       (default /work/bench-tmp)
#   AIRLOCK_BIN  the airlock binary (default: a release build, see lib.sh)
#   LOADGEN_BIN  the load generator (default: examples/loadgen next to AIRLOCK_BIN)
#   KEEP_DATA=1  keep the scratch dirs (data, logs, PostgreSQL cluster)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
RATE=${RATE:-500}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
COUNT=${COUNT:-10}
DECISIONS=${DECISIONS:-3}
CONTEXT=${CONTEXT:-1}
FILES=${FILES:-20000}
FILE_KIB=${FILE_KIB:-4}
PER_DIR=${PER_DIR:-1000}
JOBS=${JOBS:-4}
PARTS=${PARTS:-"status ingest"}
PG_FSYNC=${PG_FSYNC:-on}
LOADGEN_THREADS=${LOADGEN_THREADS:-1}

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
find_airlock
LG=${LOADGEN_BIN:-$(dirname "$A")/examples/loadgen}
[[ -x $LG ]] || die "no load generator at $LG; build it with: cargo build --release --example loadgen (or set LOADGEN_BIN)"
for t in curl jq python3 awk column sync; do need "$t"; done
help=$("$A" upload --help 2>&1 || true)
for flag in --jobs --json; do
    grep -q -- "$flag" <<<"$help" || die "$A: \`airlock upload\` has no $flag"
done
want() { [[ " $PARTS " == *" $1 "* ]]; }

make_work replicas
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TCK=$(getconf CLK_TCK)
start_postgres
say "PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT (fsync $PG_FSYNC)"

median() { # numbers... ("-" ignored); the lower middle of an even count
    printf '%s\n' "$@" | awk '$1 != "-"' | sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'
}
ratio() { # a b -> b / a
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == 0) print "-"; else printf "%.2f", b / a }'
}
# CPU use over a wall time, in % of one core (200 is the whole of a 2-core machine).
core_pct() { # ticks seconds
    awk -v d="$1" -v t="$TCK" -v w="$2" 'BEGIN { printf "%.0f", 100 * d / t / w }'
}
cpu_s() { # ticks
    awk -v d="$1" -v t="$TCK" 'BEGIN { printf "%.1f", d / t }'
}
# Sets CHILD_TICKS: the CPU ticks of this shell's children it has waited for (cutime +
# cstime), read without a fork, so the delta over a stretch that only starts and waits for the
# load generators (or the client) is theirs.
children_ticks() {
    local st f
    read -r st </proc/$$/stat
    read -ra f <<<"${st##*) }"
    CHILD_TICKS=$((f[13] + f[14]))
}

# The people, a project and a workspace in the database AIRLOCK__DATABASE__URL names (SQLite in
# AIRLOCK__STORAGE__DATA_DIR without it); with a policy file, the workspace uses it.
setup_people() { # [policy]
    "$A" admin user add pm --role project-manager >/dev/null
    "$A" admin user add prov --role provider >/dev/null
    "$A" admin project create bench >/dev/null
    "$A" admin project add-member bench pm --role project-manager >/dev/null
    local i
    for i in $(seq "$DECISIONS"); do
        "$A" admin user add "inv$i" --role investigator >/dev/null
        "$A" admin project add-member bench "inv$i" --role investigator >/dev/null
    done
    "$A" admin workspace create bench ws --tier 1 ${1:+--policy "$1"} >/dev/null
}

# ======================= part 1: status reads over two replicas ===========================
STATUS_ROWS=() STATUS_SUMMARY=()
if want status; then
    # The policy of api.sh: scanners that need no clamd, DECISIONS + 1 investigators to approve.
    POLICY=$WORK/policy.toml
    sed -e 's/^required = \["clamav"\]/required = ["filetype", "archive"]/' \
        -e "/^\[approvals.data-ingress\]/,/^\[/ s/^investigator = 1/investigator = $((DECISIONS + 1))/" \
        "$repo/policies/tier1.toml" >"$POLICY"
    grep -q "investigator = $((DECISIONS + 1))" "$POLICY" || die "could not write the benchmark policy from policies/tier1.toml"

    AIRLOCK__DATABASE__URL=$(pg_create_db status)
    export AIRLOCK__DATABASE__URL
    setup_people "$POLICY"
    start_replica A
    PID_A=$REPLICA_PID URL_A=$REPLICA_URL
    start_replica B
    PID_B=$REPLICA_PID URL_B=$REPLICA_URL
    export AIRLOCK_SERVER=$URL_A
    PM=$("$A" admin token pm)
    export AIRLOCK_TOKEN=$PM
    say "replicas: A $URL_A (pid $PID_A), B $URL_B (pid $PID_B), data dir $DATA"

    # The transfer: COUNT files through the client (on A), sealed on B, scanned (by whichever
    # replica leases the job), DECISIONS approvals split across A and B.
    mkdir -p "$WORK/small"
    for i in $(seq "$COUNT"); do head -c 64 /dev/urandom >"$WORK/small/f$i.txt"; done
    TID=$("$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
    UT=$("$A" transfer token "$TID" --ttl 12h 2>>"$LOG/cli.err")
    (cd "$WORK/small" && "$A" upload --token "$UT" --jobs 4 --json .) >"$LOG/status-upload.json" 2>>"$LOG/cli.err" ||
        die "uploading the status transfer failed: $(tail -5 "$LOG/cli.err")"
    AIRLOCK_SERVER=$URL_B "$A" seal --token "$UT" >>"$LOG/cli.err" 2>&1 || die "seal on B failed: $(tail -5 "$LOG/cli.err")"
    wait_state "$TID" in_review "$PM" 600
    for i in $(seq "$DECISIONS"); do
        url=$URL_A
        ((i % 2 == 0)) && url=$URL_B
        AIRLOCK_SERVER=$url AIRLOCK_TOKEN=$("$A" admin token "inv$i") "$A" transfer approve "$TID" --as investigator \
            >>"$LOG/decide.log" 2>&1 || { cat "$LOG/decide.log" >&2; die "approval $i failed"; }
    done
    for u in "$URL_A" "$URL_B"; do
        v=$(curl -sS -H "Authorization: Bearer $PM" "$u/api/v1/transfers/$TID")
        [[ $(jq -r .state <<<"$v") == in_review ]] || die "$u: transfer $TID is not in_review: $(head -c 300 <<<"$v")"
    done
    in_db=$(pg_sql status "SELECT COUNT(*) FROM files WHERE transfer_id = '$TID'")
    [[ $in_db == "$COUNT" ]] || die "PostgreSQL holds $in_db files of $TID, not $COUNT"
    BODY_BYTES=$(curl -sS -H "Authorization: Bearer $PM" "$URL_A/api/v1/transfers/$TID" | wc -c)
    say "transfer $TID: $COUNT files, in review with $DECISIONS approvals, $BODY_BYTES-byte status body, on both replicas and in PostgreSQL"

    # A measurement: the generators given as "file url rate" triples, all at once; records the
    # CPU of both replicas, of PostgreSQL, of the generators and of everything else on the
    # machine over it. Appends one row to STATUS_ROWS.
    measure() { # round mode target spec...
        local round=$1 mode=$2 target=$3 spec f u r p pids=() files=()
        shift 3
        local a0 b0 g0 m0 a1 b1 g1 m1 mb0 mb1 c0 c1
        # The machine's reading innermost, so its window is the measurement's (pg_cpu_ticks
        # itself runs a short python3 outside it).
        a0=$(cpu_ticks "$PID_A") b0=$(cpu_ticks "$PID_B") g0=$(pg_cpu_ticks)
        local t0 t1
        m0=$(machine_ticks)
        t0=$(now_ns)
        children_ticks
        c0=$CHILD_TICKS
        for spec in "$@"; do
            read -r f u r <<<"$spec"
            LOADGEN_TOKEN=$PM "$LG" --url "$u" --rate "$r" --duration "${DURATION}s" --warmup "${WARMUP}s" \
                --threads "$LOADGEN_THREADS" >"$f" 2>>"$LOG/loadgen.err" &
            pids+=($!) files+=("$f")
        done
        BG_PIDS=("${pids[@]}") # so an interrupted run stops them
        for p in "${pids[@]}"; do wait "$p" || die "the load generator failed: $(tail -5 "$LOG/loadgen.err")"; done
        BG_PIDS=()
        children_ticks
        c1=$CHILD_TICKS
        t1=$(now_ns)
        m1=$(machine_ticks)
        a1=$(cpu_ticks "$PID_A") b1=$(cpu_ticks "$PID_B") g1=$(pg_cpu_ticks)
        local wall
        wall=$(secs "$t0" "$t1")
        local cpu_a cpu_b cpu_pg cpu_lg other
        cpu_a=$(core_pct $((a1 - a0)) "$wall")
        cpu_b=$(core_pct $((b1 - b0)) "$wall")
        cpu_pg=$(core_pct $((g1 - g0)) "$wall")
        cpu_lg=$(core_pct $((c1 - c0)) "$wall")
        read -r mb0 _ <<<"$m0"
        read -r mb1 _ <<<"$m1"
        other=$(($(core_pct $((mb1 - mb0)) "$wall") - cpu_a - cpu_b - cpu_pg - cpu_lg))
        # Every generator's figures; p50/p90/p99/max across several are the worst of them (an
        # upper bound of the percentile over all their requests together), counts are summed.
        STATUS_ROWS+=("$(jq -s -r --arg round "$round" --arg mode "$mode" --arg target "$target" \
            --arg ca "$cpu_a" --arg cb "$cpu_b" --arg cpg "$cpu_pg" --arg clg "$cpu_lg" --arg other "$other" '
            def worst(k): (map(.[k]) | if any(. == null) then "-" else (max | tostring) end);
            [$round, $mode, $target,
             (map(.requests) | add | tostring), (map(.errors) | add | tostring),
             worst("p50_ms"), worst("p90_ms"), worst("p99_ms"), worst("max_ms"),
             (map(.achieved_rate) | add | . * 10 | round / 10 | tostring), worst("generator_late_max_ms"),
             $ca, $cb, $cpg, $clg, $other,
             (map(.error_kinds | to_entries[] | "\(.key)=\(.value)") | join(",") | if . == "" then "-" else . end)]
            | @tsv' "${files[@]}")")
    }

    TX=/api/v1/transfers/$TID
    modes=(one two)
    [[ $CONTEXT == 1 ]] && modes+=(one2x)
    for ((round = 1; round <= ROUNDS; round++)); do
        # The order turns each round (one, two, one2x; two, one2x, one; ...), and the replica
        # measured alone alternates (A on odd rounds, B on even), so neither the machine's
        # drift nor which replica runs the background jobs favours one mode.
        solo=A solo_url=$URL_A
        ((round % 2 == 0)) && solo=B solo_url=$URL_B
        n=${#modes[@]}
        for ((k = 0; k < n; k++)); do
            mode=${modes[$(((k + round - 1) % n))]}
            say "round $round/$ROUNDS: $mode ..."
            case $mode in
            one) measure "$round" one "$solo at $RATE/s" "$LOG/r$round.one.json $solo_url$TX $RATE" ;;
            two) measure "$round" two "A+B at $RATE/s each" \
                "$LOG/r$round.two.A.json $URL_A$TX $RATE" "$LOG/r$round.two.B.json $URL_B$TX $RATE" ;;
            one2x) measure "$round" one2x "$solo at $((2 * RATE))/s" "$LOG/r$round.one2x.json $solo_url$TX $((2 * RATE))" ;;
            esac
        done
    done
    for p in "$PID_A" "$PID_B"; do kill -0 "$p" 2>/dev/null || die "a replica died under load (logs in $LOG)"; done
    for p in "$PID_A" "$PID_B"; do stop_pid "$p"; done
    SERVER_PIDS=()
    unset AIRLOCK_TOKEN

    # Medians over the rounds, per mode (columns of a row: 4 requests, 5 errors, 6 p50, 8 p99,
    # 9 max, 11 generator lateness, 12-16 CPU).
    col() { # mode column
        printf '%s\n' "${STATUS_ROWS[@]}" | awk -F'\t' -v m="$1" -v c="$2" '$2 == m { print $c }'
    }
    declare -A MED_P99
    for mode in "${modes[@]}"; do
        mapfile -t p50s < <(col "$mode" 6)
        mapfile -t p99s < <(col "$mode" 8)
        mapfile -t maxs < <(col "$mode" 9)
        mapfile -t errs < <(col "$mode" 5)
        mapfile -t reqs < <(col "$mode" 4)
        mapfile -t others < <(col "$mode" 16)
        MED_P99[$mode]=$(median "${p99s[@]}")
        case $mode in
        one) label="one replica at $RATE/s" ;;
        two) label="A+B at $RATE/s each ($((2 * RATE))/s)" ;;
        one2x) label="one replica at $((2 * RATE))/s" ;;
        esac
        STATUS_SUMMARY+=("$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$label" "$(median "${p50s[@]}")" "${MED_P99[$mode]}" \
            "$(median "${maxs[@]}")" "$(printf '%s\n' "${p99s[@]}" | paste -sd/)" \
            "$(printf '%s\n' "${errs[@]}" | awk '{ s += $1 } END { print s + 0 }')" \
            "$(printf '%s\n' "${reqs[@]}" | awk '{ s += $1 } END { print s + 0 }')" "$(median "${others[@]}")")")
    done
    # The ratio of the medians, and the median of the per-round ratios (each round's two
    # measurements a minute apart at most).
    RATIO_TWO=$(ratio "${MED_P99[one]}" "${MED_P99[two]}")
    mapfile -t one_p99 < <(col one 8)
    mapfile -t two_p99 < <(col two 8)
    per_round=()
    for ((i = 0; i < ${#one_p99[@]}; i++)); do per_round+=("$(ratio "${one_p99[$i]}" "${two_p99[$i]}")"); done
    RATIO_TWO_PAIRED=$(median "${per_round[@]}")
    RATIO_TWO_ROUNDS=$(printf '%s\n' "${per_round[@]}" | paste -sd/)
    RATIO_ONE2X=-
    [[ $CONTEXT == 1 ]] && RATIO_ONE2X=$(ratio "${MED_P99[one]}" "${MED_P99[one2x]}")
    unset AIRLOCK__DATABASE__URL
fi

# ======================= part 2: ingest, SQLite against PostgreSQL ========================
INGEST_ROWS=()
declare -A RATES
if want ingest; then
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

    # One run: a fresh data dir (and, on PostgreSQL, a fresh database), one server, a new
    # transfer, the tree through the client; checked by the client's summary and by the
    # server's file count; then the server stops and the data dir goes.
    ingest_run() { # backend round
        local be=$1 round=$2 dir=$WORK/ingest.$1.$2
        mkdir -p "$dir"
        export AIRLOCK__STORAGE__DATA_DIR=$dir
        if [[ $be == postgres ]]; then
            AIRLOCK__DATABASE__URL=$(pg_create_db "ingest_$round")
            export AIRLOCK__DATABASE__URL
        else
            unset AIRLOCK__DATABASE__URL
        fi
        setup_people
        start_server "ingest.$be.$round"
        local pm tid ut
        pm=$("$A" admin token pm)
        tid=$(AIRLOCK_TOKEN=$pm "$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
        ut=$(AIRLOCK_TOKEN=$pm "$A" transfer token "$tid" --ttl 12h 2>>"$LOG/cli.err")
        local out=$LOG/ingest.$be.$round.json s0 g0 m0 s1 g1 m1 t0 t1 c0 c1 cpid
        sync
        s0=$(cpu_ticks "$SERVER_PID") g0=$(pg_cpu_ticks)
        m0=$(machine_ticks)
        t0=$(now_ns)
        children_ticks
        c0=$CHILD_TICKS
        # In the background and waited for, so an interrupted run stops it at once.
        (cd "$SRC" && exec "$A" upload --token "$ut" --jobs "$JOBS" --json tree) >"$out" 2>"$LOG/ingest.$be.$round.err" &
        cpid=$!
        BG_PIDS=("$cpid")
        wait "$cpid" || { tail -20 "$LOG/ingest.$be.$round.err" >&2; die "airlock upload ($be, round $round) failed"; }
        BG_PIDS=()
        children_ticks
        c1=$CHILD_TICKS
        t1=$(now_ns)
        m1=$(machine_ticks)
        s1=$(cpu_ticks "$SERVER_PID") g1=$(pg_cpu_ticks)
        local wall done_n failed_n on_server
        wall=$(secs "$t0" "$t1")
        done_n=$(jq -r 'select(.event == "summary") | .done' "$out")
        failed_n=$(jq -r 'select(.event == "summary") | .failed' "$out")
        [[ $done_n == "$FILES" && $failed_n == 0 ]] ||
            die "$be round $round: the client sent $done_n files ($failed_n failed), not $FILES"
        on_server=$(AIRLOCK_TOKEN=$pm "$A" transfer show "$tid" --json | jq '.files | length')
        [[ $on_server == "$FILES" ]] || die "$be round $round: the server lists $on_server files, not $FILES"
        if [[ $be == postgres ]]; then
            local in_db
            in_db=$(pg_sql "ingest_$round" "SELECT COUNT(*) FROM files WHERE transfer_id = '$tid'")
            [[ $in_db == "$FILES" ]] || die "postgres round $round: the database holds $in_db files, not $FILES"
        fi
        stop_server
        chmod -R u+w "$dir" && rm -rf "$dir"
        local mb0 mb1 srv pgs cli other
        read -r mb0 _ <<<"$m0"
        read -r mb1 _ <<<"$m1"
        srv=$(cpu_s $((s1 - s0))) pgs=$(cpu_s $((g1 - g0))) cli=$(cpu_s $((c1 - c0)))
        other=$(awk -v m="$(cpu_s $((mb1 - mb0)))" -v a="$srv" -v b="$pgs" -v c="$cli" 'BEGIN { printf "%.1f", m - a - b - c }')
        [[ $be == postgres ]] || pgs=-
        RATES[$be.$round]=$(awk -v n="$FILES" -v s="$wall" 'BEGIN { printf "%.0f", n / s }')
        INGEST_ROWS+=("$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "$round" "$be" "$wall" "${RATES[$be.$round]}" \
            "$srv" "$pgs" "$cli" "$other" "$on_server")")
        say "  $be, round $round: $wall s, ${RATES[$be.$round]} files/s"
    }
    for ((round = 1; round <= ROUNDS; round++)); do
        # SQLite first on odd rounds, PostgreSQL first on even ones.
        if ((round % 2 == 1)); then order=(sqlite postgres); else order=(postgres sqlite); fi
        for be in "${order[@]}"; do
            say "ingest round $round/$ROUNDS: $FILES files on $be ..."
            ingest_run "$be" "$round"
        done
    done
    export AIRLOCK__STORAGE__DATA_DIR=$DATA
    unset AIRLOCK__DATABASE__URL
    rates_of() { local r; for ((r = 1; r <= ROUNDS; r++)); do echo "${RATES[$1.$r]}"; done; }
    mapfile -t sq < <(rates_of sqlite)
    mapfile -t pg < <(rates_of postgres)
    MED_SQLITE=$(median "${sq[@]}") MED_PG=$(median "${pg[@]}")
    RATIO_INGEST=$(ratio "$MED_SQLITE" "$MED_PG")
    per_round=()
    for ((i = 0; i < ROUNDS; i++)); do per_round+=("$(ratio "${sq[$i]}" "${pg[$i]}")"); done
    RATIO_INGEST_PAIRED=$(median "${per_round[@]}")
    RATIO_INGEST_ROUNDS=$(printf '%s\n' "${per_round[@]}" | paste -sd/)
fi

# ======================= summary ==========================================================
cat <<EOF

================ airlock replicas benchmark ================
date:     $(date -u '+%Y-%m-%d %H:%M UTC')
host:     $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)
load avg: $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end
binary:   $A ($BUILD)
database: PostgreSQL $PG_VERSION, private cluster on loopback, fsync $PG_FSYNC; SQLite in the data dir (group commit)
rounds:   $ROUNDS, interleaved; figures below are medians over the rounds
EOF
if want status; then
    cat <<EOF

---- part 1: status reads, GET /api/v1/transfers/{id} ($COUNT files, in review, $BODY_BYTES-byte body) ----
open loop (examples/loadgen, $LOADGEN_THREADS thread each, one per replica loaded), ${DURATION}s after ${WARMUP}s warm-up;
two replicas (A, B) on one PostgreSQL database and one data dir, all on this machine.
Across two generators, p50/p90/p99/max are the worse of the two (an upper bound of the
percentile over all their requests); requests, errors and req/s are summed. CPU in % of one
core ($(nproc)00 = the machine): each replica, PostgreSQL (all its processes), the load
generators, and everything else on the machine (other users' work included).

EOF
    {
        printf 'round\tmode\ttarget\trequests\terrors\tp50 ms\tp90 ms\tp99 ms\tmax ms\treq/s\tgen late ms\tCPU%% A\tCPU%% B\tCPU%% PG\tCPU%% gen\tCPU%% other\terror kinds\n'
        printf '%s\n' "${STATUS_ROWS[@]}"
    } | column -t -s $'\t'
    echo
    {
        printf 'mode\tp50 ms\tp99 ms\tmax ms\tp99 each round\terrors\trequests\tCPU%% other\n'
        printf '%s\n' "${STATUS_SUMMARY[@]}"
    } | column -t -s $'\t'
    cat <<EOF

p99 two replicas at $((2 * RATE))/s / one replica at $RATE/s:  $RATIO_TWO (of the medians); per round $RATIO_TWO_ROUNDS, median $RATIO_TWO_PAIRED
EOF
    [[ $CONTEXT == 1 ]] && echo "p99 one replica at $((2 * RATE))/s / one replica at $RATE/s:   $RATIO_ONE2X (of the medians)"
fi
if want ingest; then
    cat <<EOF

---- part 2: ingest of $FILES files x $FILE_KIB KiB through airlock upload --jobs $JOBS --json, one server ----
(CPU seconds: the server, PostgreSQL (all its processes), the client, and everything else on the machine)

EOF
    {
        printf 'round\tdatabase\tseconds\tfiles/s\tserver CPU s\tPG CPU s\tclient CPU s\tother CPU s\tfiles on server\n'
        printf '%s\n' "${INGEST_ROWS[@]}"
    } | column -t -s $'\t'
    cat <<EOF

SQLite:     $MED_SQLITE files/s (median; rounds $(printf '%s\n' "${sq[@]}" | paste -sd/))
PostgreSQL: $MED_PG files/s (median; rounds $(printf '%s\n' "${pg[@]}" | paste -sd/))
PostgreSQL / SQLite (files/s): $RATIO_INGEST (of the medians); per round $RATIO_INGEST_ROUNDS, median $RATIO_INGEST_PAIRED
EOF
fi
