#!/usr/bin/env bash
# Volumes on S3 benchmark, two parts in one run, each against rclone on the same Garage in the
# same run (see benches/README.md, `s3.sh`):
#
# 1. Ingest: one SIZE_MIB random file PUT through a release `airlock serve` whose quarantine,
#    released and egress volumes are on a local Garage (the output volume local), streamed into
#    an S3 multipart upload (5 MiB parts), SHA-256 and BLAKE3 computed server-side, the 201 once
#    the object is complete; against `rclone copyto FILE g:BUCKET/...` of the same file into
#    the same Garage. Interleaved rounds (the order turns each round), best of RUNS. The digests
#    returned are checked against sha256sum/b3sum; the server's RSS is sampled during each
#    upload (VmRSS every SAMPLE_SECS, VmHWM), and once on a fresh server with MEM_MIB.
# 2. Re-verification: VERIFY_FILES files of VERIFY_MIB released to Garage through airlock
#    (PUT, seal, approve, released), then `airlock verify TRANSFER --released-only` (the
#    released objects, those rclone reads) and `airlock verify TRANSFER` (a full pass, the
#    quarantine's objects too), both through the API, against `rclone check --download LOCAL_DIR g:BUCKET/<release prefix>` of the same
#    objects; with HASHSUM=1 also `rclone hashsum sha256 --download` of every object airlock's
#    pass reads (the released objects and the quarantine's). Interleaved, best of RUNS.
#
# Ratios are rclone time / airlock time (above 1: airlock faster).
#
# Knobs (environment):
#   SIZE_MIB      the ingest file, MiB                                   (default 4096)
#   RUNS          rounds of every measurement; the best time is kept     (default 3)
#   MEM_MIB       a smaller file uploaded once on a fresh server first, to compare peak RSS
#                 with the file size ("" skips it)                       (default 1024)
#   VERIFY_FILES  files released for re-verification                     (default 10)
#   VERIFY_MIB    size of each of them, MiB                              (default 1024)
#   HASHSUM=0     skip the extra `rclone hashsum sha256 --download` baseline
#   PARTS         "ingest verify", "ingest" or "verify"                  (default both)
#   RCLONE_FLAGS  extra flags for every rclone command (default none: rclone's defaults,
#                 --s3-chunk-size 5Mi --s3-upload-concurrency 4 --checkers 8)
#   SAMPLE_SECS   RSS sampling interval                                  (default 0.2)
#   GARAGE_BIN    the garage binary (default: on the PATH, else ~/.cargo/bin/garage)
#   BENCH_TMP     scratch parent dir                                     (default /work/bench-tmp)
#   AIRLOCK_BIN   the airlock binary (default: a release build, see lib.sh)
#   KEEP_DATA=1   keep the scratch dir (files, Garage's data, logs)
set -euo pipefail

SIZE_MIB=${SIZE_MIB:-4096}
RUNS=${RUNS:-3}
MEM_MIB=${MEM_MIB-1024}
VERIFY_FILES=${VERIFY_FILES:-10}
VERIFY_MIB=${VERIFY_MIB:-1024}
HASHSUM=${HASHSUM:-1}
PARTS=${PARTS:-"ingest verify"}
RCLONE_FLAGS=${RCLONE_FLAGS:-}
SAMPLE_SECS=${SAMPLE_SECS:-0.2}

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
find_airlock
for t in curl jq rclone sha256sum b3sum python3 awk openssl; do need "$t"; done
[[ -x /usr/bin/time ]] || die "missing /usr/bin/time (apt-get install time)"
if [[ -z ${GARAGE_BIN:-} ]]; then
    GARAGE_BIN=$(command -v garage || true)
    [[ -n $GARAGE_BIN ]] || GARAGE_BIN=${CARGO_HOME:-$HOME/.cargo}/bin/garage
fi
[[ -x $GARAGE_BIN ]] || die "no garage at $GARAGE_BIN (cargo install --locked garage, or set GARAGE_BIN)"
want() { [[ " $PARTS " == *" $1 "* ]]; }
read -ra RCF <<<"$RCLONE_FLAGS"
# rclone 1.60 refuses to start when AWS_CA_BUNDLE is set (a TLS setting; Garage here is plain
# HTTP), and reads its remote `g:` from RCLONE_CONFIG_G_* (start_garage), as tests/common/garage.rs.
RC=(env -u AWS_CA_BUNDLE rclone)

make_work s3
TCK=$(getconf CLK_TCK)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$(date -u +%H:%M)
bytes=$((SIZE_MIB << 20))
vbytes=$((VERIFY_MIB << 20))

# ---- disk check -------------------------------------------------------------------------
# Garage frees a deleted object's blocks only after its block GC delay (minutes), so the ingest
# part may hold every round's two copies at once; each part gets its own Garage, removed after.
need_kib=0
want ingest && need_kib=$(((bytes >> 10) * (1 + 2 * RUNS)))
v=$(((vbytes >> 10) * VERIFY_FILES * 3))
want verify && ((v > need_kib)) && need_kib=$v
need_kib=$((need_kib + (2 << 20)))
avail_kib=$(df -Pk "$BENCH_TMP" | awk 'NR == 2 { print $4 }')
((avail_kib >= need_kib)) ||
    die "not enough free space in $BENCH_TMP: need ~$((need_kib >> 20)) GiB, have $((avail_kib >> 20)) GiB"

# ---- Garage -------------------------------------------------------------------------------
# As tests/common/garage.rs: `garage server --single-node --default-bucket` on free ports, a
# garage.toml with the sqlite db engine in a directory of its own, the default key and bucket
# from GARAGE_DEFAULT_*; healthy once rclone lists the bucket. Exports rclone's remote `g:` and
# airlock's settings for it (every volume on S3 but output). Sets GARAGE_PID, GARAGE_DIR.
GARAGE_PID='' GARAGE_DIR='' BUCKET=airlock
hex() { openssl rand -hex "$1"; }
start_garage() { # tag
    GARAGE_DIR=$WORK/garage-$1
    mkdir -p "$GARAGE_DIR"
    local s3 rpc admin i
    s3=$(free_port) rpc=$(free_port) admin=$(free_port)
    cat >"$GARAGE_DIR/garage.toml" <<EOF
metadata_dir = "$GARAGE_DIR/meta"
data_dir = "$GARAGE_DIR/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(hex 32)"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
    GARAGE_KEY=GK$(hex 12) GARAGE_SECRET=$(hex 32)
    GARAGE_DEFAULT_ACCESS_KEY=$GARAGE_KEY GARAGE_DEFAULT_SECRET_KEY=$GARAGE_SECRET \
        GARAGE_DEFAULT_BUCKET=$BUCKET RUST_LOG=garage=warn \
        "$GARAGE_BIN" -c "$GARAGE_DIR/garage.toml" server --single-node --default-bucket \
        >/dev/null 2>"$LOG/garage.$1.log" &
    GARAGE_PID=$!
    BG_PIDS+=("$GARAGE_PID")
    export RCLONE_CONFIG=/dev/null RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other \
        RCLONE_CONFIG_G_ENDPOINT=http://127.0.0.1:$s3 RCLONE_CONFIG_G_REGION=garage \
        RCLONE_CONFIG_G_ACCESS_KEY_ID=$GARAGE_KEY RCLONE_CONFIG_G_SECRET_ACCESS_KEY=$GARAGE_SECRET \
        RCLONE_CONFIG_G_FORCE_PATH_STYLE=true
    export AIRLOCK__STORAGE__BACKEND=s3 AIRLOCK__STORAGE__S3__ENDPOINT=http://127.0.0.1:$s3 \
        AIRLOCK__STORAGE__S3__REGION=garage AIRLOCK__STORAGE__S3__BUCKET=$BUCKET \
        AIRLOCK__STORAGE__S3__ACCESS_KEY_ID=$GARAGE_KEY \
        AIRLOCK__STORAGE__S3__SECRET_ACCESS_KEY=$GARAGE_SECRET \
        AIRLOCK__STORAGE__S3__PATH_STYLE=true AIRLOCK__STORAGE__VOLUMES__OUTPUT__BACKEND=local
    for i in $(seq 300); do
        "${RC[@]}" lsf "g:$BUCKET" >/dev/null 2>&1 && return 0
        kill -0 "$GARAGE_PID" 2>/dev/null || { cat "$LOG/garage.$1.log" >&2; die "garage died"; }
        sleep 0.1
    done
    cat "$LOG/garage.$1.log" >&2
    die "Garage never served its bucket"
}
stop_garage() { # removes its data too
    [[ -n $GARAGE_PID ]] || return 0
    stop_pid "$GARAGE_PID"
    local p keep=()
    for p in "${BG_PIDS[@]}"; do [[ $p == "$GARAGE_PID" ]] || keep+=("$p"); done
    BG_PIDS=("${keep[@]}")
    GARAGE_PID=
    [[ $KEEP_DATA == 1 ]] || rm -rf "$GARAGE_DIR"
}

# ---- airlock ------------------------------------------------------------------------------
# The tier-1 policy without the clamav requirement (as collect.sh): no clamd needed, an
# ingress transfer goes to review as soon as it is sealed; investigator = 1 approves it. The
# re-verification interval stays 7d, so the scheduler does not re-hash during the timings.
POLICY=$WORK/s3-policy.toml
sed -e 's/^required = \["clamav"\]/required = []/' "$repo/policies/tier1.toml" >"$POLICY"
grep -q '^required = \[\]' "$POLICY" || die "could not write the benchmark policy from policies/tier1.toml"
new_data_dir() { # tag: a fresh data directory (SQLite) with people, a project, a workspace
    DATA=$WORK/data-$1
    mkdir -p "$DATA"
    export AIRLOCK__STORAGE__DATA_DIR=$DATA
    local u
    for u in pm:project-manager inv:investigator prov:provider; do
        "$A" admin user add "${u%%:*}" --role "${u#*:}" >/dev/null
    done
    "$A" admin project create bench >/dev/null
    "$A" admin project add-member bench pm --role project-manager >/dev/null
    "$A" admin project add-member bench inv --role investigator >/dev/null
    "$A" admin workspace create bench ws --tier 1 --policy "$POLICY" >/dev/null
}
serve() { # tag: start_server, then the tokens and the idle RSS
    start_server "$1"
    PM=$("$A" admin token pm)
    export AIRLOCK_TOKEN=$PM
    INV=$("$A" admin token inv)
    sleep 0.5
    IDLE_KIB=$(rss_kib "$SERVER_PID")
}

# ---- measuring ----------------------------------------------------------------------------
cpu_s() { awk -v d="$1" -v t="$TCK" 'BEGIN { printf "%.1f", d / t }'; }
min_of() { printf '%s\n' "$@" | sort -g | head -1; }
mibps() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / 1048576 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; } # b / a
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "PASS" : "FAIL" }'; }
# Start each timed step from the same place: no dirty pages left by the last one (Garage does
# not fsync; its writes are flushed here, outside every timing), the local inputs cached.
settle() { # files...
    sync
    sleep 1
    [[ $# == 0 ]] || cat "$@" >/dev/null
}

# Runs one timed command (stdout to $LOG/out.TAG, stderr to $LOG/err.TAG) while sampling the
# server's VmRSS every SAMPLE_SECS. Sets M_SECS, M_SRV / M_GAR / M_CLI / M_OTHER (CPU seconds
# of the server, Garage, the command, everything else on the machine), M_CLI_KIB (the
# command's peak RSS), M_RSS_MAX, M_RSS_H1 / M_RSS_H2 (max sampled server RSS over the first
# and second half of the time, KiB), M_THREADS (the server's busiest threads).
measure() { # tag command...
    local tag=$1 spid t0 t1 s0 s1 g0 g1 thr0 thr1 mb0 mt0 mb1 mt1 c
    shift
    local samples=$LOG/rss.$tag
    (while kill -0 "$SERVER_PID" 2>/dev/null; do
        printf '%s %s\n' "$(now_ns)" "$(rss_kib "$SERVER_PID")"
        sleep "$SAMPLE_SECS"
    done) >"$samples" &
    spid=$!
    BG_PIDS+=("$spid")
    thr0=$(thread_ticks "$SERVER_PID")
    s0=$(cpu_ticks "$SERVER_PID") g0=$(cpu_ticks "$GARAGE_PID")
    read -r mb0 mt0 < <(machine_ticks)
    t0=$(now_ns)
    /usr/bin/time -f '%U %S %M' -o "$LOG/time.$tag" "$@" >"$LOG/out.$tag" 2>"$LOG/err.$tag" ||
        { tail -20 "$LOG/err.$tag" >&2; cat "$LOG/out.$tag" >&2; die "$tag failed: $*"; }
    t1=$(now_ns)
    read -r mb1 mt1 < <(machine_ticks)
    s1=$(cpu_ticks "$SERVER_PID") g1=$(cpu_ticks "$GARAGE_PID")
    thr1=$(thread_ticks "$SERVER_PID")
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    unset 'BG_PIDS[${#BG_PIDS[@]}-1]'
    M_SECS=$(secs "$t0" "$t1")
    M_SRV=$(cpu_s $((s1 - s0)))
    M_GAR=$(cpu_s $((g1 - g0)))
    c=$(tail -1 "$LOG/time.$tag")
    M_CLI=$(awk '{ printf "%.1f", $1 + $2 }' <<<"$c")
    M_CLI_KIB=$(awk '{ print $3 }' <<<"$c")
    M_OTHER=$(awk -v b=$((mb1 - mb0)) -v t="$TCK" -v s="$M_SRV" -v g="$M_GAR" -v c="$M_CLI" \
        'BEGIN { printf "%.1f", b / t - s - g - c }')
    read -r M_RSS_MAX M_RSS_H1 M_RSS_H2 < <(awk -v t0="$t0" -v t1="$t1" '
        { m = $2 + 0; if (m > a) a = m; if ($1 < (t0 + t1) / 2) { if (m > h1) h1 = m } else if (m > h2) h2 = m }
        END { print a + 0, h1 + 0, h2 + 0 }' "$samples")
    M_THREADS=$(awk -v hz="$TCK" -v s="$M_SECS" '
        NR == FNR { b[$1] = $3; next }
        { d = $3 - (($1 in b) ? b[$1] : 0); if (d > 0) printf "      %-18s %6.1f cpu-s  %4.0f%% of wall\n", $2, d / hz, d / hz / s * 100 }
    ' <(printf '%s\n' "$thr0") <(printf '%s\n' "$thr1") | sort -k2 -g -r | head -"${TOP_THREADS:-6}")
}
# One row of the per-run detail.
detail() { # label bytes
    printf '  %-34s %8.2f s %6s MiB/s | CPU s: server %5s, Garage %5s, client %5s, other %5s | server RSS max %s MiB\n' \
        "$1" "$M_SECS" "$(mibps "$2" "$M_SECS")" "$M_SRV" "$M_GAR" "$M_CLI" "$M_OTHER" "$((M_RSS_MAX >> 10))"
}

# ======================= part 1: ingest ===================================================
ING_OUT=()
if want ingest; then
    FILE=$WORK/input.bin
    say "generating $SIZE_MIB MiB of random bytes ..."
    head -c "$bytes" /dev/urandom >"$FILE"
    cat "$FILE" >/dev/null
    REF_SHA=$(sha256sum "$FILE" | awk '{ print $1 }')
    REF_B3=$(b3sum --no-names "$FILE")
    start_garage ingest
    new_data_dir ingest
    say "Garage $RCLONE_CONFIG_G_ENDPOINT (pid $GARAGE_PID), data dir $DATA"

    # One PUT of $1 into a new transfer, measured; checks the digests, then deletes the file
    # through the API. Sets DIGESTS (yes, or what differs) and HWM_KIB (VmHWM after it).
    airlock_put() { # file sha256 blake3 tag
        local tid ut size
        size=$(stat -c %s "$1")
        tid=$("$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
        ut=$("$A" transfer token "$tid" --ttl 2h 2>>"$LOG/cli.err")
        settle "$1"
        measure "$4" curl -sS --fail-with-body -X PUT -H "Authorization: Bearer $ut" \
            -H 'Content-Type: application/octet-stream' -T "$1" -o "$LOG/resp.$4.json" \
            "$AIRLOCK_SERVER/api/v1/transfers/$tid/files/big.bin"
        HWM_KIB=$(hwm_kib "$SERVER_PID")
        local r=$LOG/resp.$4.json
        DIGESTS=yes
        [[ $(jq -r '.sha256 // empty' "$r") == "$2" ]] || DIGESTS="NO (sha256 $(jq -r .sha256 "$r") != $2)"
        [[ $(jq -r '.blake3 // empty' "$r") == "$3" ]] || DIGESTS="NO (blake3 $(jq -r .blake3 "$r") != $3)"
        [[ $(jq -r '.size // empty' "$r") == "$size" ]] || DIGESTS="NO (size $(jq -r .size "$r") != $size)"
        curl -sS --fail -o /dev/null -X DELETE -H "Authorization: Bearer $ut" \
            "$AIRLOCK_SERVER/api/v1/transfers/$tid/files/big.bin" || say "warning: DELETE failed"
    }

    MEM_ROW=
    if [[ -n $MEM_MIB ]] && ((MEM_MIB < SIZE_MIB)); then
        small=$WORK/input.$MEM_MIB.bin
        head -c $((MEM_MIB << 20)) "$FILE" >"$small"
        ssha=$(sha256sum "$small" | awk '{ print $1 }')
        sb3=$(b3sum --no-names "$small")
        serve mem
        say "memory run: $MEM_MIB MiB on a fresh server ..."
        airlock_put "$small" "$ssha" "$sb3" mem
        MEM_ROW=$(printf '  %6s MiB, fresh server: idle %s MiB, max sampled RSS %s MiB (1st half %s, 2nd half %s), VmHWM %s MiB; %s MiB/s; digests %s' \
            "$MEM_MIB" "$((IDLE_KIB >> 10))" "$((M_RSS_MAX >> 10))" "$((M_RSS_H1 >> 10))" "$((M_RSS_H2 >> 10))" \
            "$((HWM_KIB >> 10))" "$(mibps $((MEM_MIB << 20)) "$M_SECS")" "$DIGESTS")
        stop_server
        rm -f "$small"
    fi

    serve main
    MAIN_IDLE=$IDLE_KIB
    air_t=() rc_t=() air_rows=() rc_rows=() digest_all=yes rss_max=0 hwm_first=
    for r in $(seq "$RUNS"); do
        order=(airlock rclone)
        ((r % 2 == 0)) && order=(rclone airlock)
        for who in "${order[@]}"; do
            say "round $r/$RUNS: $who ..."
            if [[ $who == airlock ]]; then
                airlock_put "$FILE" "$REF_SHA" "$REF_B3" "put$r"
                air_t+=("$M_SECS")
                [[ -z $hwm_first ]] && hwm_first=$HWM_KIB
                ((M_RSS_MAX > rss_max)) && rss_max=$M_RSS_MAX
                [[ $DIGESTS == yes ]] || digest_all=$DIGESTS
                air_rows+=("$(detail "round $r: airlock PUT" "$bytes"); RSS 1st half $((M_RSS_H1 >> 10)), 2nd half $((M_RSS_H2 >> 10)) MiB; digests $DIGESTS
    server threads (busiest first):
$M_THREADS")
            else
                settle "$FILE"
                measure "rc$r" "${RC[@]}" "${RCF[@]}" copyto "$FILE" "g:$BUCKET/rclone/big.bin"
                rc_t+=("$M_SECS")
                rc_rows+=("$(detail "round $r: rclone copyto" "$bytes"); rclone RSS $((M_CLI_KIB >> 10)) MiB")
                "${RC[@]}" deletefile "g:$BUCKET/rclone/big.bin" || say "warning: rclone deletefile failed"
            fi
            say "  ${M_SECS}s ($(mibps "$bytes" "$M_SECS") MiB/s)"
        done
    done
    hwm_last=$(hwm_kib "$SERVER_PID")
    stop_server
    stop_garage
    rm -f "$FILE"
    best_air=$(min_of "${air_t[@]}")
    best_rc=$(min_of "${rc_t[@]}")
    r_ing=$(ratio "$best_air" "$best_rc")
    peak=$hwm_last
    ((rss_max > peak)) && peak=$rss_max
    ING_OUT+=(
        "1. ingest: one $SIZE_MIB MiB random file into Garage; best of $RUNS, rounds interleaved"
        "$(printf '  %-34s %-28s %8s s %6s MiB/s' "airlock: curl -T PUT (201)" "${air_t[*]}" "$best_air" "$(mibps "$bytes" "$best_air")")"
        "$(printf '  %-34s %-28s %8s s %6s MiB/s' "rclone copyto" "${rc_t[*]}" "$best_rc" "$(mibps "$bytes" "$best_rc")")"
        "  rclone time / airlock time        $r_ing   (target >= 0.90)   $(verdict "$r_ing" 0.90)"
        "  digests returned == sha256sum/b3sum: $digest_all"
        "  server memory: idle $((MAIN_IDLE >> 10)) MiB; max sampled VmRSS over the uploads $((rss_max >> 10)) MiB;"
        "    VmHWM after the first $SIZE_MIB MiB upload $((hwm_first >> 10)) MiB, after all $((hwm_last >> 10)) MiB"
        ${MEM_ROW:+"$MEM_ROW"}
        "  per run:"
        "${air_rows[@]}"
        "${rc_rows[@]}"
    )
fi

# ======================= part 2: re-verification ==========================================
VER_OUT=()
if want verify; then
    VDIR=$WORK/vfiles
    mkdir -p "$VDIR"
    say "generating $VERIFY_FILES files of $VERIFY_MIB MiB ..."
    vnames=()
    for i in $(seq -w 1 "$VERIFY_FILES"); do
        head -c "$vbytes" /dev/urandom >"$VDIR/f$i.bin"
        vnames+=("f$i.bin")
    done
    start_garage verify
    new_data_dir verify
    serve verify
    TID=$("$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
    UT=$("$A" transfer token "$TID" --ttl 12h 2>>"$LOG/cli.err")
    say "uploading $VERIFY_FILES files into transfer $TID ..."
    t0=$(now_ns)
    for f in "${vnames[@]}"; do
        curl -sS --fail-with-body -X PUT -H "Authorization: Bearer $UT" \
            -H 'Content-Type: application/octet-stream' -T "$VDIR/$f" -o "$LOG/vresp.$f.json" \
            "$AIRLOCK_SERVER/api/v1/transfers/$TID/files/$f" || die "PUT $f failed: $(cat "$LOG/vresp.$f.json")"
    done
    t1=$(now_ns)
    UP_SECS=$(secs "$t0" "$t1")
    for f in "${vnames[@]}"; do
        [[ $(jq -r .blake3 "$LOG/vresp.$f.json") == "$(b3sum --no-names "$VDIR/$f")" ]] || die "$f: the server's BLAKE3 differs from b3sum"
    done
    code=$(curl -sS -o "$LOG/seal.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $UT" \
        "$AIRLOCK_SERVER/api/v1/transfers/$TID/seal")
    [[ $code == 200 ]] || die "seal answered $code: $(head -c 500 "$LOG/seal.json")"
    wait_state "$TID" in_review "$PM" 600
    t0=$(now_ns)
    AIRLOCK_TOKEN=$INV "$A" transfer approve "$TID" --as investigator >"$LOG/approve.out" 2>&1 ||
        { cat "$LOG/approve.out" >&2; die "approve failed"; }
    wait_state "$TID" released "$PM" 3600
    t1=$(now_ns)
    REL_SECS=$(secs "$t0" "$t1")
    LOC=$(curl -sS -H "Authorization: Bearer $PM" "$AIRLOCK_SERVER/api/v1/transfers/$TID" | jq -r .release.location)
    PREFIX=${LOC#s3://"$BUCKET"/}
    PREFIX=${PREFIX%/}
    [[ $LOC == "s3://$BUCKET/$PREFIX/" ]] || die "unexpected release location: $LOC"
    listed=$("${RC[@]}" lsf -R --files-only "g:$BUCKET/$PREFIX" | wc -l)
    [[ $listed == "$VERIFY_FILES" ]] || die "rclone lists $listed objects under $PREFIX, not $VERIFY_FILES"
    "${RC[@]}" lsf "g:$BUCKET/$PREFIX.manifest.jsonl" | grep -q . || die "no manifest object $PREFIX.manifest.jsonl"
    QPREFIX=quarantine/transfers/$TID
    qlisted=$("${RC[@]}" lsf -R --files-only "g:$BUCKET/$QPREFIX" | wc -l)
    total=$((vbytes * VERIFY_FILES))
    say "released to $LOC in ${REL_SECS}s (upload ${UP_SECS}s); $qlisted quarantine objects"

    air_t=() rc_t=() hs_t=() ro_t=() air_rows=() rc_rows=() hs_rows=() ro_rows=() hwm_reset=yes vpeak=0
    for r in $(seq "$RUNS"); do
        order=(airlock released rclone)
        ((r % 2 == 0)) && order=(rclone released airlock)
        [[ $HASHSUM == 1 ]] && order+=(hashsum)
        for who in "${order[@]}"; do
            say "round $r/$RUNS: $who ..."
            case $who in
            airlock)
                settle
                reset_hwm "$SERVER_PID" || hwm_reset="no (cumulative)"
                measure "verify$r" env AIRLOCK_TOKEN="$PM" "$A" verify "$TID" --json
                v=$LOG/out.verify$r
                [[ $(jq '.[0].problems | length' "$v") == 0 && $(jq '.[0].more_problems' "$v") == 0 ]] ||
                    die "verify found problems: $(jq -c '.[0].problems[:3]' "$v")"
                ok=$(jq '.[0].ok' "$v") vb=$(jq '.[0].bytes' "$v")
                [[ $ok == $((2 * VERIFY_FILES)) ]] || die "verify checked $ok copies, not $((2 * VERIFY_FILES))"
                h=$(hwm_kib "$SERVER_PID")
                ((h > vpeak)) && vpeak=$h
                air_t+=("$M_SECS")
                air_rows+=("$(detail "round $r: airlock verify" "$vb"); VmHWM $((h >> 10)) MiB; $ok copies, $((vb >> 20)) MiB re-hashed
    server threads (busiest first):
$M_THREADS")
                ;;
            released)
                # The released copies alone: the same objects rclone check reads.
                settle
                measure "released$r" env AIRLOCK_TOKEN="$PM" "$A" verify "$TID" --released-only --json
                v=$LOG/out.released$r
                [[ $(jq '.[0].problems | length' "$v") == 0 ]] ||
                    die "verify --released-only found problems: $(jq -c '.[0].problems[:3]' "$v")"
                ok=$(jq '.[0].ok' "$v") vb=$(jq '.[0].bytes' "$v")
                [[ $ok == "$VERIFY_FILES" ]] || die "verify --released-only checked $ok copies, not $VERIFY_FILES"
                ro_t+=("$M_SECS")
                ro_rows+=("$(detail "round $r: airlock verify --released-only" "$vb")")
                ;;
            rclone)
                settle "$VDIR"/*
                measure "check$r" "${RC[@]}" "${RCF[@]}" check --download "$VDIR" "g:$BUCKET/$PREFIX"
                grep -q "0 differences found" "$LOG/err.check$r" || die "rclone check: $(tail -3 "$LOG/err.check$r")"
                grep -q "$VERIFY_FILES matching files" "$LOG/err.check$r" || die "rclone check: $(tail -3 "$LOG/err.check$r")"
                rc_t+=("$M_SECS")
                rc_rows+=("$(detail "round $r: rclone check --download" "$total"); rclone RSS $((M_CLI_KIB >> 10)) MiB")
                ;;
            hashsum)
                # Every object airlock's pass reads (released and quarantine), SHA-256 each.
                settle
                measure "hashsum$r" bash -c 'a=$1 b=$2; shift 2
                    "$@" hashsum sha256 --download "$a" && "$@" hashsum sha256 --download "$b"' \
                    _ "g:$BUCKET/$PREFIX" "g:$BUCKET/$QPREFIX" "${RC[@]}" "${RCF[@]}"
                n=$(wc -l <"$LOG/out.hashsum$r")
                [[ $n == $((VERIFY_FILES + qlisted)) ]] || die "rclone hashsum listed $n objects"
                hs_t+=("$M_SECS")
                hs_rows+=("$(detail "round $r: rclone hashsum --download" $((2 * total))); rclone RSS $((M_CLI_KIB >> 10)) MiB")
                ;;
            esac
            say "  ${M_SECS}s"
        done
    done
    # The released objects' SHA-256 as rclone read them == the local files'.
    if [[ $HASHSUM == 1 ]]; then
        while read -r sum name; do
            [[ $(awk -v n="$name" '$2 == n { print $1 }' "$LOG/out.hashsum1") == "$sum" ]] ||
                die "rclone hashsum of $name differs from sha256sum"
        done < <(cd "$VDIR" && sha256sum "${vnames[@]}")
    fi
    stop_server
    stop_garage
    best_air=$(min_of "${air_t[@]}")
    best_rc=$(min_of "${rc_t[@]}")
    best_ro=$(min_of "${ro_t[@]}")
    r_ver=$(ratio "$best_ro" "$best_rc")
    VER_OUT+=(
        "2. re-verification: $VERIFY_FILES x $VERIFY_MIB MiB released to $LOC"
        "  (upload $UP_SECS s, $(mibps "$total" "$UP_SECS") MiB/s; approve -> released $REL_SECS s, $(mibps "$total" "$REL_SECS") MiB/s)"
        "  airlock's pass re-hashes $((2 * VERIFY_FILES)) copies, $((2 * total >> 20)) MiB (quarantine and released); rclone check reads $((total >> 20)) MiB from Garage"
        "$(printf '  %-34s %-28s %8s s %6s MiB/s read from S3' "airlock verify (full pass)" "${air_t[*]}" "$best_air" "$(mibps $((2 * total)) "$best_air")")"
        "$(printf '  %-34s %-28s %8s s %6s MiB/s read from S3' "airlock verify --released-only" "${ro_t[*]}" "$best_ro" "$(mibps "$total" "$best_ro")")"
        "$(printf '  %-34s %-28s %8s s %6s MiB/s read from S3' "rclone check --download" "${rc_t[*]}" "$best_rc" "$(mibps "$total" "$best_rc")")"
    )
    if [[ $HASHSUM == 1 ]]; then
        best_hs=$(min_of "${hs_t[@]}")
        VER_OUT+=("$(printf '  %-34s %-28s %8s s %6s MiB/s read from S3' "rclone hashsum sha256 (same objects)" "${hs_t[*]}" "$best_hs" "$(mibps $((2 * total)) "$best_hs")")")
    fi
    VER_OUT+=("  rclone check time / airlock --released-only time  $r_ver   (the issue's figure: the same objects read)")
    VER_OUT+=("  rclone check time / airlock full pass time  $(ratio "$best_air" "$best_rc")   (airlock also reads the quarantine copies)")
    [[ $HASHSUM == 1 ]] && VER_OUT+=("  rclone hashsum time / airlock time $(ratio "$best_air" "$best_hs")   (the same bytes read and hashed)")
    VER_OUT+=(
        "  server VmHWM during a pass (reset before each: $hwm_reset): max $((vpeak >> 10)) MiB"
        "  per run:"
        "${air_rows[@]}"
        "${ro_rows[@]}"
        "${rc_rows[@]}"
    )
    [[ $HASHSUM == 1 ]] && VER_OUT+=("${hs_rows[@]}")
fi

cat <<EOF

================ airlock on S3 (Garage) vs rclone ================
host:     $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)
          load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg); $T_START-$(date -u +%H:%M) UTC
binary:   $A ($BUILD)
garage:   $("$GARAGE_BIN" --version 2>/dev/null | head -1), single node, sqlite metadata, on $(df -PT "$BENCH_TMP" | awk 'NR == 2 { print $2 " at " $7 }')
rclone:   $("${RC[@]}" version 2>/dev/null | head -1)${RCLONE_FLAGS:+ $RCLONE_FLAGS}
"other" CPU: the machine's busy time minus the server, Garage and the client: other people's work

EOF
((${#ING_OUT[@]} == 0)) || printf '%s\n' "${ING_OUT[@]}" ""
((${#VER_OUT[@]} == 0)) || printf '%s\n' "${VER_OUT[@]}"
