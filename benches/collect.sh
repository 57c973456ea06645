#!/usr/bin/env bash
# Collection benchmark: a recipient downloading a released egress output. One random file of
# SIZE_MIB goes through the real egress flow on a fresh server (draft, submit: pinned into
# quarantine, scanned, disclosure-checked; both output checkers vote, acknowledge every
# finding and review; released; a Project Manager issues a collection token), then:
#
#   1. Download: `curl -o /dev/null` of /api/v1/collect/files/big.bin with the collection token,
#      against nginx serving the very same released file (same inode, same page cache) from a
#      private instance started here: once with Debian's packaged http settings (sendfile on,
#      tcp_nopush on) and once with nginx's compiled-in default (sendfile off). Interleaved
#      (airlock, nginx, nginx-nosendfile, airlock, ...), best of RUNS, the file read into the
#      page cache before each run. Target: airlock / nginx (sendfile on) throughput >= 0.90.
#   2. Memory: the server's RSS (VmRSS sampled every SAMPLE_SECS) while the whole package is
#      streamed as /api/v1/collect/package.zip to /dev/null, on a freshly started server, for
#      the SIZE_MIB request and for a second request of MEM_SIZE_MIB (own data dir): flat in
#      the file size. Also the VmHWM over the file downloads of step 1.
#   3. Integrity: one download to a file, its sha256sum against the source's and against the
#      `Repr-Digest` header.
#
# Scanning: the workspace's policy is policies/tier1.toml with `[scanning] required = []`, so no
# clamd is needed (the disclosure checks still run: they are not optional for egress). The
# rest of the tier-1 policy is kept: [approvals.egress] investigator = 1, provider = 1.
#
# Knobs (environment):
#   SIZE_MIB      size of the released file, MiB                          (default 4096)
#   MEM_SIZE_MIB  second, smaller request for the RSS-vs-size check; "" skips (default 1024)
#   RUNS          repetitions of each download (best is kept)              (default 3)
#   SAMPLE_SECS   RSS sampling interval                                    (default 0.2)
#   NGINX_BIN     nginx binary (Debian: apt-get install nginx-light)        (default nginx)
#   BENCH_TMP     scratch parent dir; the random sources are cached there  (default /work/bench-tmp)
#   AIRLOCK_BIN   the airlock binary (default: a release build, see lib.sh)
#   KEEP_DATA=1   keep the scratch dir
set -euo pipefail

SIZE_MIB=${SIZE_MIB:-4096}
MEM_SIZE_MIB=${MEM_SIZE_MIB-1024}
RUNS=${RUNS:-3}
SAMPLE_SECS=${SAMPLE_SECS:-0.2}
NGINX_BIN=${NGINX_BIN:-nginx}

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
find_airlock
for t in curl jq sha256sum base64 awk python3; do need "$t"; done
need "$NGINX_BIN" "apt-get install nginx-light"
[[ $MEM_SIZE_MIB == "$SIZE_MIB" ]] && MEM_SIZE_MIB=

# Disk: the cached sources, their quarantine and released copies, one downloaded copy.
mkdir -p "$BENCH_TMP"
need_mib=$((4 * (SIZE_MIB + ${MEM_SIZE_MIB:-0}) + 2048))
avail_mib=$(($(df -Pk "$BENCH_TMP" | awk 'NR == 2 { print $4 }') / 1024))
((avail_mib > need_mib)) || die "need about $need_mib MiB free under $BENCH_TMP, have $avail_mib"

# ---- random sources, generated once and cached (with their SHA-256) -------------------------
source_file() { # MiB -> prints the path
    local f=$BENCH_TMP/collect-src-$1.bin
    if [[ ! -s $f || ! -s $f.sha256 ]]; then
        say "writing $f ($1 MiB of random bytes) ..."
        head -c $(($1 << 20)) /dev/urandom >"$f.part"
        sha256sum "$f.part" | awk '{ print $1 }' >"$f.sha256"
        mv "$f.part" "$f"
    fi
    echo "$f"
}
SRC=$(source_file "$SIZE_MIB")
[[ -n $MEM_SIZE_MIB ]] && SRC_MEM=$(source_file "$MEM_SIZE_MIB")

make_work collect

# ---- a fresh data directory and server per request ------------------------------------------
# Each request gets its own data directory: a second egress request with disclosure findings in
# one database fails its checks on this build (finding ids such as "F1-1" are the primary key of
# disclosure_findings, unique across all requests; see benches/README.md).
POLICY=$WORK/collect-policy.toml
sed -e 's/^required = \["clamav"\]/required = []/' "$repo/policies/tier1.toml" >"$POLICY"
grep -q '^required = \[\]' "$POLICY" || die "could not write the benchmark policy from policies/tier1.toml"

# People, project, a workspace with the clamd-free tier-1 policy, the outputs, a server.
new_instance() { # tag source-file
    stop_server
    DATA=$WORK/data-$1
    mkdir -p "$DATA"
    export AIRLOCK__STORAGE__DATA_DIR=$DATA
    local u
    for u in pm:project-manager res:researcher inv:investigator prov:provider recip:researcher; do
        "$A" admin user add "${u%%:*}" --role "${u#*:}" >/dev/null
    done
    "$A" admin project create bench >/dev/null
    for u in pm:project-manager res:researcher inv:investigator prov:provider; do
        "$A" admin project add-member bench "${u%%:*}" --role "${u#*:}" >/dev/null
    done
    "$A" admin workspace create bench ws --tier 1 --policy "$POLICY" >/dev/null
    OUT=$DATA/volumes/bench/ws/output
    mkdir -p "$OUT"
    # The output: a hard link to the cached source (same filesystem), a copy where that fails.
    ln "$2" "$OUT/big.bin" 2>/dev/null || cp "$2" "$OUT/big.bin"
    printf 'import numpy as np\n# made the outputs\nnp.save("big.bin", np.random.bytes(1))\n' >"$OUT/a.py"
    start_server "$1"
    T_PM=$("$A" admin token pm) T_RES=$("$A" admin token res)
    T_INV=$("$A" admin token inv) T_PROV=$("$A" admin token prov)
}
drop_instance() {
    stop_server
    chmod -R u+w "$DATA" && rm -rf "$DATA"
}

api() { # method path token [json] -> body on stdout; dies on a non-2xx answer
    local code body=()
    [[ -n ${4:-} ]] && body=(-H 'Content-Type: application/json' --data "$4")
    code=$(curl -sS -o "$LOG/api.json" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $3" \
        "${body[@]}" "$AIRLOCK_SERVER$2")
    [[ $code == 2* ]] || die "$1 $2 answered $code: $(head -c 800 "$LOG/api.json")"
    cat "$LOG/api.json"
}

# The egress flow for big.bin (output) and a.py (code); prints "request-id collection-token".
release() {
    local id t0 t1 t2 f role tok ct
    id=$(api POST /api/v1/egress "$T_RES" '{"workspace": "bench/ws",
        "context": "benchmark outputs: random bytes, nothing disclosive",
        "files": [{"path": "big.bin", "role": "output"}, {"path": "a.py", "role": "code"}],
        "recipients": ["recip"]}' | jq -r .id)
    t0=$(now_ns)
    api POST "/api/v1/egress/$id/submit" "$T_RES" >/dev/null
    wait_state "$id" in_review "$T_PM"
    t1=$(now_ns)
    for role in investigator:$T_INV provider:$T_PROV; do
        tok=${role#*:} role=${role%%:*}
        api POST "/api/v1/egress/$id/votes" "$tok" "{\"path\": \"big.bin\", \"as\": \"$role\", \"vote\": \"approve\"}" >/dev/null
        for f in $(curl -sS -H "Authorization: Bearer $T_PM" "$AIRLOCK_SERVER/api/v1/transfers/$id" | jq -r '.disclosure.findings[]?.id'); do
            api POST "/api/v1/egress/$id/acknowledge" "$tok" "{\"finding\": \"$f\", \"as\": \"$role\"}" >/dev/null
        done
        api POST "/api/v1/egress/$id/review" "$tok" "{\"as\": \"$role\"}" >/dev/null
    done
    wait_state "$id" released "$T_PM"
    t2=$(now_ns)
    say "  request $id: submit -> in_review $(secs "$t0" "$t1") s (pin + checks), reviews -> released $(secs "$t1" "$t2") s"
    # No max_downloads: every benchmark run is a download.
    ct=$(api POST "/api/v1/egress/$id/collection-tokens" "$T_PM" '{"recipient": "recip", "ttl": "2h"}' | jq -r .token)
    echo "$id $ct"
}

# ---- memory: a zip stream on a freshly started server ----------------------------------------
# Sets Z="rss_before_kib peak_rss_kib seconds bytes" (not in a subshell: it restarts the server).
zip_rss() { # token tag
    stop_server
    start_server "zip-$2"
    sleep 1
    local before peak r pid code size t
    before=$(rss_kib "$SERVER_PID")
    peak=$before
    curl -sS -o /dev/null -H "Authorization: Bearer $1" -w '%{http_code} %{size_download} %{time_total}\n' \
        "$AIRLOCK_SERVER/api/v1/collect/package.zip" >"$LOG/zip-$2.out" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        r=$(rss_kib "$SERVER_PID")
        ((r > peak)) && peak=$r
        sleep "$SAMPLE_SECS"
    done
    wait "$pid" || die "zip download failed"
    read -r code size t <"$LOG/zip-$2.out"
    [[ $code == 200 ]] || die "package.zip answered $code"
    Z="$before $peak $t $size"
}

if [[ -n $MEM_SIZE_MIB ]]; then
    say "releasing a $MEM_SIZE_MIB MiB big.bin through the egress flow (own data dir) ..."
    new_instance mem "$SRC_MEM"
    x=$(release)
    read -r _ CT_MEM <<<"$x"
    say "streaming its package.zip ..."
    zip_rss "$CT_MEM" mem
    read -r m_before m_peak m_t m_bytes <<<"$Z"
    drop_instance
fi

say "releasing a $SIZE_MIB MiB big.bin through the egress flow ..."
new_instance main "$SRC"
x=$(release)
read -r ID CT <<<"$x"
BYTES=$(stat -c %s "$SRC")

# The released copy airlock serves: nginx serves the same file (read-only, sealed).
REL=$DATA/volumes/bench/ws/egress/$ID/big.bin
[[ -f $REL ]] || REL=$(find "$DATA/volumes" -path "$OUT" -prune -o -type f -name big.bin -path "*$ID*" -print | head -1)
[[ -n $REL && $(stat -c %s "$REL") == "$BYTES" ]] || die "cannot find the released copy of big.bin under $DATA"
say "released copy: $REL"

# ---- a private nginx: one port with Debian's packaged settings, one with sendfile off --------
NG=$WORK/nginx
mkdir -p "$NG/logs" "$NG/tmp"
P_ON=$(free_port) P_OFF=$(free_port)
[[ $P_ON != "$P_OFF" ]] || P_OFF=$(free_port)
MIME=/etc/nginx/mime.types
cat >"$NG/nginx.conf" <<EOF
# Debian's /etc/nginx/nginx.conf http settings, minus TLS; our own pid, logs and temp paths.
daemon off;
user root;
worker_processes auto;
pid $NG/nginx.pid;
error_log $NG/logs/error.log;
events { worker_connections 768; }
http {
    tcp_nopush on;
    types_hash_max_size 2048;
    $([[ -r $MIME ]] && echo "include $MIME;")
    default_type application/octet-stream;
    access_log $NG/logs/access.log;
    gzip on;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    server { listen 127.0.0.1:$P_ON;  root $(dirname "$REL"); sendfile on; }
    server { listen 127.0.0.1:$P_OFF; root $(dirname "$REL"); sendfile off; }
}
EOF
"$NGINX_BIN" -p "$NG" -c "$NG/nginx.conf" -t >"$LOG/nginx-t.log" 2>&1 || { cat "$LOG/nginx-t.log" >&2; die "nginx rejects its config"; }
"$NGINX_BIN" -p "$NG" -c "$NG/nginx.conf" >"$LOG/nginx.log" 2>&1 &
NGINX_PID=$!
BG_PIDS+=("$NGINX_PID")
for i in $(seq 100); do
    curl -sf -o /dev/null -r 0-0 "http://127.0.0.1:$P_OFF/big.bin" && break
    kill -0 "$NGINX_PID" 2>/dev/null || { cat "$LOG/nginx.log" "$NG/logs/error.log" >&2; die "nginx died"; }
    sleep 0.1
    ((i < 100)) || die "nginx did not answer"
done

# CPU ticks (user + system) and I/O counters (/proc/PID/io: read and write syscalls and their
# bytes, sockets included) of the serving processes: airlock's one process, nginx's workers.
air_pids() { echo "$SERVER_PID"; }
nginx_pids() { ps -o pid= --ppid "$NGINX_PID"; }
usage() { # pids... -> "ticks syscr rchar syscw wchar", summed
    local p t=0
    for p; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done
    for p; do cat "/proc/$p/io" 2>/dev/null; done |
        awk -v t="$t" '/^syscr/ { a += $2 } /^rchar/ { b += $2 } /^syscw/ { c += $2 } /^wchar/ { d += $2 }
            END { print t, a + 0, b + 0, c + 0, d + 0 }'
}
HZ=$(getconf CLK_TCK)

# One download with curl to /dev/null; prints "seconds cpu% bytes/read bytes/write" (the
# serving side's CPU, % of one core; its bytes per read and per write syscall: "-" for none).
# The file is read into the page cache first.
download() { # url token pidfn
    local url=$1 tok=$2 pids u0 u1 out code size t
    pids=$($3)
    cat "$REL" >/dev/null
    u0=$(usage $pids)
    out=$(curl -sS -o /dev/null ${tok:+-H "Authorization: Bearer $tok"} \
        -w '%{http_code} %{size_download} %{time_total}' "$url")
    u1=$(usage $pids)
    read -r code size t <<<"$out"
    [[ $code == 200 && $size == "$BYTES" ]] || die "GET $url: $code, $size of $BYTES bytes"
    awk -v t="$t" -v hz="$HZ" -v a="$u0" -v b="$u1" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        rc = y[2] - x[2]; rb = y[3] - x[3]; wc = y[4] - x[4]; wb = y[5] - x[5]
        printf "%s %.0f %s %s\n", t, 100 * (y[1] - x[1]) / hz / t,
            (rc > 0 ? sprintf("%.0fK", rb / rc / 1024) : "-"), (wc > 0 ? sprintf("%.0fK", wb / wc / 1024) : "-") }'
}

URL_AIR=$AIRLOCK_SERVER/api/v1/collect/files/big.bin
URL_ON=http://127.0.0.1:$P_ON/big.bin
URL_OFF=http://127.0.0.1:$P_OFF/big.bin

say "downloading $BYTES bytes, best of $RUNS ..."
sync
hwm_reset=yes
reset_hwm "$SERVER_PID" || hwm_reset="no (cumulative since start)"
rss_dl_before=$(rss_kib "$SERVER_PID")
t_air=() t_on=() t_off=() c_air=() c_on=() c_off=()
for r in $(seq "$RUNS"); do
    x=$(download "$URL_AIR" "$CT" air_pids); read -r t c io <<<"$x"; t_air+=("$t"); c_air+=("$c $io")
    x=$(download "$URL_ON" "" nginx_pids); read -r t c io <<<"$x"; t_on+=("$t"); c_on+=("$c $io")
    x=$(download "$URL_OFF" "" nginx_pids); read -r t c io <<<"$x"; t_off+=("$t"); c_off+=("$c $io")
    say "  run $r: airlock ${t_air[-1]} s (${c_air[-1]}), nginx ${t_on[-1]} s (${c_on[-1]}), nginx sendfile off ${t_off[-1]} s (${c_off[-1]}) [CPU% B/read B/write]"
done
hwm_dl=$(hwm_kib "$SERVER_PID")

# ---- integrity: one download to a file on the same filesystem --------------------------------
say "checking the digest of one download ..."
curl -sS -D "$LOG/headers.txt" -o "$WORK/download.bin" -H "Authorization: Bearer $CT" "$URL_AIR"
got=$(sha256sum "$WORK/download.bin" | awk '{ print $1 }')
rm -f "$WORK/download.bin"
want=$(cat "$SRC.sha256")
hdr=$(awk -F': ' 'tolower($1) == "repr-digest" { print $2 }' "$LOG/headers.txt" | tr -d '\r')
hdr_hex=$(printf '%s' "$hdr" | sed -e 's/^sha-256=://' -e 's/:$//' | base64 -d | od -An -tx1 | tr -d ' \n')
digest_ok="FAIL (download $got, source $want, Repr-Digest $hdr_hex)"
[[ $got == "$want" && $hdr_hex == "$want" ]] && digest_ok="ok ($want; Repr-Digest agrees)"

say "streaming package.zip ..."
zip_rss "$CT" main
read -r z_before z_peak z_t z_bytes <<<"$Z"

# ---- report ----------------------------------------------------------------------------------
best() { printf '%s\n' "$@" | sort -g | head -1; }
mbs() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.1f", b / 1e6 / t }'; }
at_best() { # times... -- cpus... : the CPU of the fastest run
    local -a ts cs
    local i bi=0
    while [[ $1 != -- ]]; do ts+=("$1"); shift; done
    shift
    cs=("$@")
    for i in "${!ts[@]}"; do awk -v a="${ts[$i]}" -v b="${ts[$bi]}" 'BEGIN { exit !(a < b) }' && bi=$i; done
    echo "${cs[$bi]}"
}
b_air=$(best "${t_air[@]}") b_on=$(best "${t_on[@]}") b_off=$(best "${t_off[@]}")
r_on=$(awk -v a="$b_air" -v n="$b_on" 'BEGIN { printf "%.2f", n / a }')
r_off=$(awk -v a="$b_air" -v n="$b_off" 'BEGIN { printf "%.2f", n / a }')
verdict=$(awk -v r="$r_on" 'BEGIN { print (r >= 0.9 ? "PASS" : "FAIL") }')

echo "airlock: $A ($BUILD); nginx: $("$NGINX_BIN" -v 2>&1 | sed 's/.*: //'); $(nproc) cores; best of $RUNS, interleaved, page cache warm"
echo "file: $SIZE_MIB MiB random ($BYTES bytes), released through the egress flow; curl -o /dev/null over loopback"
echo
row() { # label times best cpu-io
    local c b r w
    read -r c r w <<<"$4"
    printf '  %-38s %-27s %6.2f %8s %5s%% %7s %7s\n' "$1" "$2" "$3" "$(mbs "$BYTES" "$3")" "$c" "$r" "$w"
}
fmt() { printf '%.2f ' "$@"; }
printf '  %-38s %-27s %6s %8s %6s %7s %7s\n' "download" "times (s)" "best" "MB/s" "CPU" "B/read" "B/write"
row "airlock /api/v1/collect/files/big.bin" "$(fmt "${t_air[@]}")" "$b_air" "$(at_best "${t_air[@]}" -- "${c_air[@]}")"
row "nginx (sendfile on, Debian's config)" "$(fmt "${t_on[@]}")" "$b_on" "$(at_best "${t_on[@]}" -- "${c_on[@]}")"
row "nginx (sendfile off, nginx's default)" "$(fmt "${t_off[@]}")" "$b_off" "$(at_best "${t_off[@]}" -- "${c_off[@]}")"
echo "  (CPU: the serving side's, % of one core, over the fastest run: airlock's process, nginx's"
echo "   workers; B/read, B/write: its bytes per read / write syscall then, from /proc/PID/io)"
echo
echo "  airlock / nginx (sendfile on)    $r_on   (target >= 0.90: $verdict)"
echo "  airlock / nginx (sendfile off)   $r_off"
echo
echo "  digest of one download: $digest_ok"
echo
echo "memory (server VmRSS, sampled every $SAMPLE_SECS s; zip streams each on a freshly started server):"
echo "  file downloads above:   RSS before $(mib "$rss_dl_before") MiB, VmHWM over them $(mib "$hwm_dl") MiB (HWM reset first: $hwm_reset)"
echo "  package.zip, $SIZE_MIB MiB:  RSS before $(mib "$z_before") MiB, peak $(mib "$z_peak") MiB; $z_bytes bytes in $z_t s ($(mbs "$z_bytes" "$z_t") MB/s)"
if [[ -n $MEM_SIZE_MIB ]]; then
    echo "  package.zip, $MEM_SIZE_MIB MiB:  RSS before $(mib "$m_before") MiB, peak $(mib "$m_peak") MiB; $m_bytes bytes in $m_t s ($(mbs "$m_bytes" "$m_t") MB/s)"
    echo "  peak $SIZE_MIB MiB / peak $MEM_SIZE_MIB MiB: $(awk -v a="$z_peak" -v b="$m_peak" 'BEGIN { printf "%.2f", a / b }')   (flat in size: about 1)"
fi
