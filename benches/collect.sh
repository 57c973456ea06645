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
#      the SIZE_MIB request and for a second request of MEM_SIZE_MIB: the peak should be flat in
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

# ---- people, project, workspace with a clamd-free tier-1 policy ------------------------------
POLICY=$WORK/collect-policy.toml
sed -e 's/^required = \["clamav"\]/required = []/' "$repo/policies/tier1.toml" >"$POLICY"
grep -q '^required = \[\]' "$POLICY" || die "could not write the benchmark policy from policies/tier1.toml"
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
# The outputs: hard links to the cached sources (same filesystem), a copy where that fails.
ln "$SRC" "$OUT/big.bin" 2>/dev/null || cp "$SRC" "$OUT/big.bin"
[[ -n $MEM_SIZE_MIB ]] && { ln "$SRC_MEM" "$OUT/mid.bin" 2>/dev/null || cp "$SRC_MEM" "$OUT/mid.bin"; }
printf 'import numpy as np\n# made the outputs\nnp.save("big.bin", np.random.bytes(1))\n' >"$OUT/a.py"

start_server main
T_PM=$("$A" admin token pm) T_RES=$("$A" admin token res)
T_INV=$("$A" admin token inv) T_PROV=$("$A" admin token prov)

api() { # method path token [json] -> body on stdout; dies on a non-2xx answer
    local code body=()
    [[ -n ${4:-} ]] && body=(-H 'Content-Type: application/json' --data "$4")
    code=$(curl -sS -o "$LOG/api.json" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $3" \
        "${body[@]}" "$AIRLOCK_SERVER$2")
    [[ $code == 2* ]] || die "$1 $2 answered $code: $(head -c 800 "$LOG/api.json")"
    cat "$LOG/api.json"
}

# The egress flow for one output file; prints the collection token.
release() { # output-file-name
    local name=$1 id t0 t1 t2 f role tok
    id=$(api POST /api/v1/egress "$T_RES" "$(jq -cn --arg f "$name" '{workspace: "bench/ws",
        context: "benchmark outputs: random bytes, nothing disclosive",
        files: [{path: $f, role: "output"}, {path: "a.py", role: "code"}], recipients: ["recip"]}')" | jq -r .id)
    t0=$(now_ns)
    api POST "/api/v1/egress/$id/submit" "$T_RES" >/dev/null
    wait_state "$id" in_review "$T_PM"
    t1=$(now_ns)
    for role in investigator:$T_INV provider:$T_PROV; do
        tok=${role#*:} role=${role%%:*}
        api POST "/api/v1/egress/$id/votes" "$tok" "$(jq -cn --arg p "$name" --arg r "$role" '{path: $p, as: $r, vote: "approve"}')" >/dev/null
        for f in $(curl -sS -H "Authorization: Bearer $T_PM" "$AIRLOCK_SERVER/api/v1/transfers/$id" | jq -r '.disclosure.findings[]?.id'); do
            api POST "/api/v1/egress/$id/acknowledge" "$tok" "$(jq -cn --arg f "$f" --arg r "$role" '{finding: $f, as: $r}')" >/dev/null
        done
        api POST "/api/v1/egress/$id/review" "$tok" "$(jq -cn --arg r "$role" '{as: $r}')" >/dev/null
    done
    wait_state "$id" released "$T_PM"
    t2=$(now_ns)
    say "  $name: request $id submitted -> in_review $(secs "$t0" "$t1") s (pin + checks), reviews -> released $(secs "$t1" "$t2") s"
    # No max_downloads: every benchmark run is a download.
    api POST "/api/v1/egress/$id/collection-tokens" "$T_PM" '{"recipient": "recip", "ttl": "2h"}' | jq -r .token
}

say "releasing big.bin ($SIZE_MIB MiB) through the egress flow ..."
CT=$(release big.bin)
[[ -n $MEM_SIZE_MIB ]] && { say "releasing mid.bin ($MEM_SIZE_MIB MiB) ..."; CT_MEM=$(release mid.bin); }
BYTES=$(stat -c %s "$SRC")

# The released copy airlock serves: nginx serves the same file (read-only, sealed).
REL=$(find "$DATA" -path "$DATA/volumes/bench/ws/output" -prune -o -type f -name big.bin -newer "$POLICY" -print |
    grep -v /quarantine/ | head -1)
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

# CPU ticks (user + system) of a process and its children's threads: one process here.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
nginx_ticks() { # the workers (children of the master)
    local s=0 p
    for p in $(ps -o pid= --ppid "$NGINX_PID"); do s=$((s + $(ticks "$p"))); done
    echo "$s"
}
HZ=$(getconf CLK_TCK)

# One download with curl to /dev/null; prints "seconds cpu%" (the server side's CPU, % of
# one core). The file is read into the page cache first.
download() { # url token tickfn
    local url=$1 tok=$2 tf=$3 c0 c1 out code size t
    cat "$REL" >/dev/null
    c0=$($tf)
    out=$(curl -sS -o /dev/null ${tok:+-H "Authorization: Bearer $tok"} \
        -w '%{http_code} %{size_download} %{time_total}' "$url")
    c1=$($tf)
    read -r code size t <<<"$out"
    [[ $code == 200 && $size == "$BYTES" ]] || die "GET $url: $code, $size of $BYTES bytes"
    echo "$t $(awk -v c=$((c1 - c0)) -v hz="$HZ" -v t="$t" 'BEGIN { printf "%.0f", 100 * c / hz / t }')"
}

air_ticks() { ticks "$SERVER_PID"; }
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
    x=$(download "$URL_AIR" "$CT" air_ticks); read -r t c <<<"$x"; t_air+=("$t"); c_air+=("$c")
    x=$(download "$URL_ON" "" nginx_ticks); read -r t c <<<"$x"; t_on+=("$t"); c_on+=("$c")
    x=$(download "$URL_OFF" "" nginx_ticks); read -r t c <<<"$x"; t_off+=("$t"); c_off+=("$c")
    say "  run $r: airlock ${t_air[-1]} s (${c_air[-1]}% CPU), nginx ${t_on[-1]} s (${c_on[-1]}%), nginx sendfile off ${t_off[-1]} s (${c_off[-1]}%)"
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

# ---- memory: zip streams on a freshly started server -----------------------------------------
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
say "streaming package.zip ..."
zip_rss "$CT" big
read -r z_before z_peak z_t z_bytes <<<"$Z"
if [[ -n $MEM_SIZE_MIB ]]; then
    zip_rss "$CT_MEM" mid
    read -r m_before m_peak m_t m_bytes <<<"$Z"
fi

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
printf '  %-40s %-28s %8s %9s %12s\n' "download" "times (s)" "best s" "MB/s" "server CPU"
printf '  %-40s %-28s %8s %9s %12s\n' "airlock /api/v1/collect/files/big.bin" "${t_air[*]}" "$b_air" "$(mbs "$BYTES" "$b_air")" "$(at_best "${t_air[@]}" -- "${c_air[@]}")%"
printf '  %-40s %-28s %8s %9s %12s\n' "nginx (sendfile on, Debian's config)" "${t_on[*]}" "$b_on" "$(mbs "$BYTES" "$b_on")" "$(at_best "${t_on[@]}" -- "${c_on[@]}")%"
printf '  %-40s %-28s %8s %9s %12s\n' "nginx (sendfile off, nginx's default)" "${t_off[*]}" "$b_off" "$(mbs "$BYTES" "$b_off")" "$(at_best "${t_off[@]}" -- "${c_off[@]}")%"
echo "  (server CPU: % of one core over the fastest run; airlock: the whole process, nginx: its workers)"
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
