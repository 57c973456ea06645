#!/usr/bin/env bash
# Browser UI page benchmark: time to first byte and full load of the inbox (`GET /ui/`) and of
# the page of a FILES-file transfer (`GET /ui/transfers/{id}`, the first page of its tree), as
# a signed-in referee, each against `GET /healthz` measured in the same run, interleaved.
# Target: p99 of the full load under 100 ms for both pages. See benches/README.md.
#
# Setup: a fresh data dir; a project with a Project Manager, a provider and an investigator
# (the referee who signs in); a tier-1 workspace whose policy is policies/tier1.toml with
# `[scanning] required = ["filetype", "archive"]` (no clamd needed); one transfer of FILES
# small files, PUT as tar archives of BATCH files (as benches/api.sh does), sealed and scanned,
# so it is in review awaiting the investigator; plus EXTRA small transfers in review, so the
# inbox has more than one row. The referee signs in the way a browser does: `airlock admin
# login-link`, then the link's token POSTed as form field `token` to /ui/login with a
# same-origin `Origin` and `Sec-Fetch-Site`, which answers 303 with the session cookie.
#
# Loads: ROUNDS rounds, each PER_ROUND loads of /healthz, then of /ui/, then of the transfer
# page, every target over one keep-alive connection per round (one curl with PER_ROUND URLs),
# after WARMUP uncounted loads of each. curl's `time_starttransfer` (first byte) and
# `time_total` (whole body) per load; p50, p99 and max, and the ratio of each page's p99 to
# /healthz's. "Full load" is the HTML document: its stylesheet and scripts are static,
# content-hashed files, fetched once and cached by a browser.
#
# Knobs (environment):
#   FILES        files in the big transfer                          (default 100000)
#   FILE_BYTES   size of each file                                  (default 64)
#   PER_DIR      files per folder                                   (default 1000)
#   BATCH        files per tar archive PUT                          (default 2000)
#   EXTRA        more transfers of 10 files in review, for the inbox (default 20)
#   ROUNDS       rounds of loads                                    (default 10)
#   PER_ROUND    loads of each target per round                     (default 20)
#   WARMUP       uncounted loads of each target first               (default 20)
#   BENCH_TMP    scratch parent dir                                 (default /work/bench-tmp)
#   AIRLOCK_BIN  the airlock binary (default: a release build, see lib.sh)
#   KEEP_DATA=1  keep the scratch dir
set -euo pipefail

FILES=${FILES:-100000}
FILE_BYTES=${FILE_BYTES:-64}
PER_DIR=${PER_DIR:-1000}
BATCH=${BATCH:-2000}
EXTRA=${EXTRA:-20}
ROUNDS=${ROUNDS:-10}
PER_ROUND=${PER_ROUND:-20}
WARMUP=${WARMUP:-20}
TARGET_MS=100

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
find_airlock
for t in curl jq tar python3 awk sort; do need "$t"; done
help=$("$A" admin --help 2>&1 || true)
grep -q 'login-link' <<<"$help" ||
    die "$A: no \`airlock admin login-link\` in this build (the browser UI of issue 13)"

make_work ui

# ---- people, workspace, policy ------------------------------------------------------------
POLICY=$WORK/ui-policy.toml
sed -e 's/^required = \["clamav"\]/required = ["filetype", "archive"]/' \
    "$repo/policies/tier1.toml" >"$POLICY"
grep -q '^required = \["filetype", "archive"\]' "$POLICY" ||
    die "could not write the benchmark policy from policies/tier1.toml"
"$A" admin user add pm --role project-manager >/dev/null
"$A" admin user add prov --role provider >/dev/null
"$A" admin user add inv --role investigator >/dev/null
"$A" admin project create bench >/dev/null
"$A" admin project add-member bench pm --role project-manager >/dev/null
"$A" admin project add-member bench inv --role investigator >/dev/null
"$A" admin workspace create bench ws --tier 1 --policy "$POLICY" >/dev/null
start_server main
PM=$("$A" admin token pm)
export AIRLOCK_TOKEN=$PM

# ---- the tree -----------------------------------------------------------------------------
SRC=$WORK/src
say "writing $FILES files of $FILE_BYTES bytes ..."
python3 - "$SRC" "$FILES" "$FILE_BYTES" "$PER_DIR" "$WORK/names.txt" <<'PY'
import os, sys
root, n, size, per, names_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
names = []
for i in range(n):
    d = f"d{i // per:04d}"
    if i % per == 0:
        os.makedirs(os.path.join(root, d), exist_ok=True)
    name = f"{d}/f{i:06d}.txt"
    with open(os.path.join(root, name), "wb") as f:
        f.write(os.urandom(size))
    names.append(name)
with open(names_path, "w") as f:
    f.write("\n".join(names) + "\n")
PY
NAMES=$WORK/names.txt

# PUTs the first $3 files of the tree into transfer $1 with upload token $2, as tar archives
# of BATCH files each.
fill() { # id token count
    local id=$1 ut=$2 n=$3 start take code got
    for ((start = 0; start < n; start += BATCH)); do
        take=$((n - start < BATCH ? n - start : BATCH))
        # sed, not tail | head: head closing the pipe early is a SIGPIPE under pipefail.
        sed -n "$((start + 1)),$((start + take))p" "$NAMES" >"$WORK/batch.txt"
        code=$(tar -cf - -C "$SRC" --no-recursion -T "$WORK/batch.txt" |
            curl -sS -o "$LOG/archive.json" -w '%{http_code}' -X PUT -T - \
                -H "Authorization: Bearer $ut" -H 'Content-Type: application/x-tar' \
                "$AIRLOCK_SERVER/api/v1/transfers/$id/archive")
        [[ $code == 201 ]] || die "archive PUT answered $code: $(head -c 500 "$LOG/archive.json")"
        got=$(jq '.files | length' "$LOG/archive.json")
        [[ $got == "$take" ]] || die "archive PUT of $take files acknowledged $got"
    done
}

# Opens a transfer, fills it with the first $1 files, seals it; prints its id. Scanning
# goes on in the background.
transfer_of() { # count
    local id ut code
    id=$("$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
    ut=$("$A" transfer token "$id" --ttl 12h 2>>"$LOG/cli.err")
    fill "$id" "$ut" "$1"
    code=$(curl -sS -o "$LOG/seal.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $ut" \
        "$AIRLOCK_SERVER/api/v1/transfers/$id/seal")
    [[ $code == 200 ]] || die "seal answered $code: $(head -c 500 "$LOG/seal.json")"
    printf '%s\n' "$id"
}

say "transfer of $FILES files: uploading and sealing ..."
t0=$(now_ns)
TID=$(transfer_of "$FILES")
t1=$(now_ns)
say "  $TID: uploaded and sealed in $(secs "$t0" "$t1") s; $EXTRA more of 10 files ..."
others=()
for ((i = 0; i < EXTRA; i++)); do
    id=$(transfer_of 10)
    others+=("$id")
done
say "  scanning ..."
wait_state "$TID" in_review "$PM"
for id in "${others[@]}"; do wait_state "$id" in_review "$PM"; done
say "  all in review after $(secs "$t0" "$(now_ns)") s"

# ---- sign in as the referee, as a browser does ---------------------------------------------
LINK=$(AIRLOCK__UI__PUBLIC_URL=$AIRLOCK_SERVER "$A" admin login-link inv --data-dir "$DATA")
[[ $LINK == */ui/login#* ]] || die "admin login-link printed '$LINK', not http://HOST:PORT/ui/login#TOKEN"
code=$(curl -sS -o "$LOG/login.body" -D "$LOG/login.headers" -w '%{http_code}' \
    -H "Origin: $AIRLOCK_SERVER" -H 'Sec-Fetch-Site: same-origin' \
    --data-urlencode "token=${LINK#*#}" "$AIRLOCK_SERVER/ui/login")
[[ $code == 303 ]] || die "POST /ui/login answered $code, not 303: $(head -c 500 "$LOG/login.body")"
SESSION=$(tr -d '\r' <"$LOG/login.headers" |
    sed -n 's/^[Ss]et-[Cc]ookie: *\(__Host-airlock-session=[^;]*\).*/\1/p' | head -1)
[[ -n $SESSION ]] || die "POST /ui/login set no __Host-airlock-session cookie: $(cat "$LOG/login.headers")"

# The pages answer 200 and show what they should.
check_page() { # path must-contain
    local code
    code=$(curl -sS -o "$LOG/page.html" -w '%{http_code}' -H "Cookie: $SESSION" "$AIRLOCK_SERVER$1")
    [[ $code == 200 ]] || die "GET $1 answered $code: $(head -c 500 "$LOG/page.html")"
    grep -qF -- "$2" "$LOG/page.html" || die "GET $1 does not show $2"
    wc -c <"$LOG/page.html"
}
INBOX_BYTES=$(check_page /ui/ "$TID")
PAGE_BYTES=$(check_page "/ui/transfers/$TID" "d0000")

# ---- loads --------------------------------------------------------------------------------
declare -A PATHS=([healthz]=/healthz [inbox]=/ui/ [transfer]="/ui/transfers/$TID")
ORDER=(healthz inbox transfer)

# N loads of one target over one connection; appends "ttfb_s total_s" lines to $LOG/times.NAME.
loads() { # name count [counted: yes|no]
    local name=$1 n=$2 keep=${3:-yes} args=() i out=$LOG/round.out
    for ((i = 0; i < n; i++)); do args+=(-o /dev/null "$AIRLOCK_SERVER${PATHS[$name]}"); done
    curl -sS -H "Cookie: $SESSION" \
        -w '%{http_code} %{time_starttransfer} %{time_total}\n' "${args[@]}" >"$out" ||
        die "curl of ${PATHS[$name]} failed"
    awk -v p="${PATHS[$name]}" '$1 != 200 { print "GET " p " answered " $1 > "/dev/stderr"; bad = 1 }
        END { exit bad }' "$out" || die "a load of ${PATHS[$name]} failed"
    [[ $keep == yes ]] && awk '{ print $2, $3 }' "$out" >>"$LOG/times.$name"
    return 0
}

say "loads: $WARMUP warm-up, then $ROUNDS rounds of $PER_ROUND of each of ${ORDER[*]} ..."
for name in "${ORDER[@]}"; do
    : >"$LOG/times.$name"
    loads "$name" "$WARMUP" no
done
for ((r = 0; r < ROUNDS; r++)); do
    for name in "${ORDER[@]}"; do loads "$name" "$PER_ROUND"; done
done

# "p50 p99 max" in ms of column $2 (1: first byte, 2: total) of file $1.
pct() { # file column
    awk -v c="$2" '{ print $c * 1000 }' "$1" | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "- - -"; exit }
            i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++
            i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++
            printf "%.2f %.2f %.2f\n", v[i50], v[i99], v[NR]
        }'
}

declare -A P50 P99 MAX
for name in "${ORDER[@]}"; do
    for col in 1 2; do
        read -r a b c < <(pct "$LOG/times.$name" "$col")
        P50[$name.$col]=$a P99[$name.$col]=$b MAX[$name.$col]=$c
    done
done
stop_server

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }'; }
verdict() { awk -v a="$1" -v t="$TARGET_MS" 'BEGIN { print (a < t ? "PASS" : "FAIL") }'; }

cat <<EOF

================ airlock browser UI page benchmark ================
host:      $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r)
binary:    $A ($BUILD)
data:      one transfer of $FILES files of $FILE_BYTES bytes in folders of $PER_DIR, plus $EXTRA of 10 files, all in review
session:   the investigator, signed in through a login link
loads:     $((ROUNDS * PER_ROUND)) counted per target ($ROUNDS interleaved rounds of $PER_ROUND over one keep-alive connection each), after $WARMUP warm-up; curl on the same machine
pages:     /ui/ $INBOX_BYTES bytes, /ui/transfers/$TID $PAGE_BYTES bytes

EOF
{
    printf 'target\tfirst byte p50 ms\tp99 ms\tmax ms\tfull load p50 ms\tp99 ms\tmax ms\tp99 / healthz p99 (first byte, full)\ttarget full p99 < %s ms\n' "$TARGET_MS"
    for name in "${ORDER[@]}"; do
        if [[ $name == healthz ]]; then
            r="-" v="-"
        else
            r="$(ratio "${P99[$name.1]}" "${P99[healthz.1]}"), $(ratio "${P99[$name.2]}" "${P99[healthz.2]}")"
            v=$(verdict "${P99[$name.2]}")
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "${PATHS[$name]}" \
            "${P50[$name.1]}" "${P99[$name.1]}" "${MAX[$name.1]}" \
            "${P50[$name.2]}" "${P99[$name.2]}" "${MAX[$name.2]}" "$r" "$v"
    done
} | column -t -s $'\t'
