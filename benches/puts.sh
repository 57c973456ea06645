#!/usr/bin/env bash
# Concurrent small PUTs with and without group commit, in the same run: FILES files of
# FILE_BYTES sent by curl, CONC at a time, to a fresh server and data dir for each setting
# (`[storage] group_commit`), and the ratio of the two rates. Every answer is checked: status
# 201 and the SHA-256 the server computed equals sha256sum of what was sent. See
# benches/README.md. (Replaces the timed #[ignore] test that used to live in
# tests/group_commit.rs.)
#
# Knobs (environment):
#   FILES       PUTs per setting        (default 2000)
#   FILE_BYTES  size of each file       (default 4096)
#   CONC        PUTs in flight at once  (default 32)
#   BENCH_TMP, AIRLOCK_BIN, KEEP_DATA as in lib.sh
set -euo pipefail

FILES=${FILES:-2000}
FILE_BYTES=${FILE_BYTES:-4096}
CONC=${CONC:-32}

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
find_airlock
for t in curl jq python3 awk xargs sha256sum; do need "$t"; done
make_work puts
SRC=$WORK/src
mkdir -p "$SRC"
python3 - "$SRC" "$FILES" "$FILE_BYTES" <<'PY'
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    with open(os.path.join(root, f"f{i:06d}.bin"), "wb") as f:
        f.write(os.urandom(size))
PY
(cd "$SRC" && sha256sum f*.bin | sort -k2) >"$LOG/want"

declare -A RATE
for group in false true; do
    export AIRLOCK__STORAGE__GROUP_COMMIT=$group
    export AIRLOCK__STORAGE__DATA_DIR=$WORK/data-$group
    mkdir -p "$AIRLOCK__STORAGE__DATA_DIR"
    "$A" admin user add pm --role project-manager >/dev/null
    "$A" admin user add prov --role provider >/dev/null
    "$A" admin project create bench >/dev/null
    "$A" admin project add-member bench pm --role project-manager >/dev/null
    "$A" admin workspace create bench ws --tier 1 >/dev/null
    start_server "$group"
    export AIRLOCK_TOKEN=$("$A" admin token pm)
    tid=$("$A" transfer create --workspace bench/ws --kind data-ingress --uploader prov)
    ut=$("$A" transfer token "$tid" --ttl 24h 2>>"$LOG/cli.err")
    url=$AIRLOCK_SERVER/api/v1/transfers/$tid/files
    sync
    t0=$(now_ns)
    (cd "$SRC" && ls f*.bin | xargs -P "$CONC" -I{} \
        curl -sS -o "$LOG/put.$group.{}" -w '%{http_code} {}\n' -T {} \
        -H "Authorization: Bearer $ut" "$url/{}") >"$LOG/codes.$group"
    t1=$(now_ns)
    bad=$(awk '$1 != 201' "$LOG/codes.$group" | wc -l)
    [[ $bad == 0 ]] || die "group_commit=$group: $bad PUTs did not answer 201 (see $LOG/codes.$group)"
    for f in "$LOG"/put."$group".f*.bin; do
        printf '%s  %s\n' "$(jq -r .sha256 "$f")" "${f##*/put.$group.}"
    done | sort -k2 >"$LOG/got.$group"
    cmp -s "$LOG/want" "$LOG/got.$group" || die "group_commit=$group: the server's digests differ from sha256sum"
    RATE[$group]=$(awk -v n="$FILES" -v s="$(secs "$t0" "$t1")" 'BEGIN { printf "%.0f", n / s }')
    say "  group_commit=$group: $FILES PUTs in $(secs "$t0" "$t1") s = ${RATE[$group]} files/s"
    stop_server
done

cat <<EOF

================ airlock concurrent-PUT benchmark ================
host:     $(nproc) cores, kernel $(uname -r); fs $(df -PT "$BENCH_TMP" | awk 'NR == 2 { print $2 }')
server:   $A ($BUILD)
load:     $FILES PUTs of $FILE_BYTES bytes, $CONC at a time (curl), digests checked against sha256sum

group_commit=false   ${RATE[false]} files/s
group_commit=true    ${RATE[true]} files/s
ratio (group / per-request): $(awk -v a="${RATE[false]}" -v b="${RATE[true]}" 'BEGIN { printf "%.2f", b / a }')
EOF
