# Shared helpers of the benchmarks (sourced, not run): the binaries, a private scratch
# directory, a server (or several replicas) on a free port, clamd, a private PostgreSQL, memory
# and CPU readings, waiting for a transfer's state. Each function says what it sets.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
BENCH_TMP=${BENCH_TMP:-/work/bench-tmp}
KEEP_DATA=${KEEP_DATA:-0}

say() { printf '%s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
now_ns() { date +%s%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b - a) / 1e9 }'; }
need() { # tool [install hint]
    command -v "$1" >/dev/null || die "missing tool: $1${2:+ ($2)}"
}

# Sets A: the airlock binary (AIRLOCK_BIN, else a release build in the usual target dirs).
find_airlock() {
    if [[ -z ${AIRLOCK_BIN:-} ]]; then
        local c
        for c in "${CARGO_TARGET_DIR:-/nonexistent}/release/airlock" /work/bench-target/release/airlock \
            "$repo/target/release/airlock"; do
            if [[ -x $c ]]; then AIRLOCK_BIN=$c; break; fi
        done
    fi
    A=${AIRLOCK_BIN:-}
    [[ -n $A ]] || die "no release binary found; build with: CARGO_TARGET_DIR=/work/bench-target cargo build --release (or set AIRLOCK_BIN)"
    [[ -x $A ]] || die "not executable: $A"
    BUILD=release
    [[ $A == */debug/* ]] && BUILD="DEBUG (figures not meaningful)"
    return 0
}

# Sets WORK (a private directory under BENCH_TMP, removed on exit unless KEEP_DATA=1), DATA,
# LOG, and AIRLOCK__STORAGE__DATA_DIR. Installs the cleanup trap (server, clamd, samplers).
make_work() { # prefix
    mkdir -p "$BENCH_TMP"
    WORK=$(mktemp -d "$BENCH_TMP/$1.XXXXXX")
    DATA=$WORK/data
    LOG=$WORK/log
    mkdir -p "$DATA" "$LOG"
    export AIRLOCK__STORAGE__DATA_DIR=$DATA
    # The upload client keeps its resume state here, not in the user's cache.
    export AIRLOCK_CACHE_DIR=$WORK/cache XDG_CACHE_HOME=$WORK/cache
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
}

SERVER_PID= CLAMD_PID= BG_PIDS=() SERVER_PIDS=()
bench_cleanup() {
    local rc=$? p
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${SERVER_PIDS[@]}" $SERVER_PID; do kill "$p" 2>/dev/null || true; done
    for p in "${SERVER_PIDS[@]}" $SERVER_PID; do wait "$p" 2>/dev/null || true; done
    stop_postgres
    if [[ -n $CLAMD_PID ]]; then
        kill "$CLAMD_PID" 2>/dev/null || true
        wait "$CLAMD_PID" 2>/dev/null || true
    fi
    if [[ $KEEP_DATA == 1 ]]; then
        say "kept $WORK"
    elif [[ -n ${WORK:-} ]]; then
        # Released files are sealed read-only; make everything removable first.
        chmod -R u+w "$WORK" 2>/dev/null || true
        rm -rf "$WORK"
    fi
    exit $rc
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts the repository's clamd (scripts/clamd.sh) on a free port; exports
# AIRLOCK__SCANNING__CLAMD for the server.
start_clamd() {
    need clamd "apt-get install clamav-daemon"
    local port
    port=$(free_port)
    CLAMD_WORK_DIR=$WORK/clamd "$repo/scripts/clamd.sh" "$port" >"$LOG/clamd.log" 2>&1 &
    CLAMD_PID=$!
    local i
    for i in $(seq 300); do
        python3 - "$port" <<'PY' 2>/dev/null && break
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
s.sendall(b"zPING\0")
assert s.recv(16).startswith(b"PONG")
PY
        kill -0 "$CLAMD_PID" 2>/dev/null || { cat "$LOG/clamd.log" >&2; die "clamd died"; }
        sleep 0.1
        ((i < 300)) || die "clamd did not answer on port $port"
    done
    export AIRLOCK__SCANNING__CLAMD=127.0.0.1:$port
}

# Starts `airlock serve` on a free port. Sets SERVER_PID and exports AIRLOCK_SERVER.
start_server() { # tag
    local log=$LOG/serve.$1.log i
    "$A" serve --listen 127.0.0.1:0 >"$log" 2>&1 &
    SERVER_PID=$!
    for i in $(seq 200); do
        if grep -q 'listening on http://' "$log"; then break; fi
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$log" >&2; die "server died"; }
        sleep 0.1
    done
    AIRLOCK_SERVER=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1)
    [[ -n $AIRLOCK_SERVER ]] || { cat "$log" >&2; die "server did not report its port"; }
    export AIRLOCK_SERVER
}

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# Starts one more `airlock serve` on a free port (a replica: several may run at once on the same
# data directory and database), with the environment as it is. Sets REPLICA_PID and REPLICA_URL;
# the cleanup trap stops it (or stop_pid).
start_replica() { # tag
    local log=$LOG/serve.$1.log i
    "$A" serve --listen 127.0.0.1:0 >"$log" 2>&1 &
    REPLICA_PID=$!
    SERVER_PIDS+=("$REPLICA_PID")
    for i in $(seq 300); do
        if grep -q 'listening on http://' "$log"; then break; fi
        kill -0 "$REPLICA_PID" 2>/dev/null || { cat "$log" >&2; die "replica $1 died"; }
        sleep 0.1
    done
    REPLICA_URL=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -1)
    [[ -n $REPLICA_URL ]] || { cat "$log" >&2; die "replica $1 did not report its port"; }
}

stop_pid() { # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# ---- PostgreSQL -------------------------------------------------------------------------
# A private cluster as tests/common/pg.rs starts one: Debian's binaries (the newest
# /usr/lib/postgresql/*/bin, or PG_BIN), run as the `postgres` user when we are root (the server
# refuses root), trust auth, superuser `airlock`, on a free port, in a directory under BENCH_TMP
# that the cleanup trap stops and removes. PostgreSQL's own durability stays on (fsync,
# synchronous_commit) unless PG_FSYNC=off, which turns them off as the tests do; PG_OPTS adds
# server options (e.g. "-c shared_preload_libraries=pg_stat_statements").
# Sets PG_DIR, PG_PORT, PG_BIN, PG_VERSION.
PG_DIR='' PG_AS=()
start_postgres() {
    need psql "apt-get install postgresql"
    need createdb "apt-get install postgresql"
    if [[ -z ${PG_BIN:-} ]]; then
        PG_BIN=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null |
            sort -V | tail -1)
        PG_BIN=${PG_BIN%/postgres}
    fi
    [[ -n $PG_BIN && -x $PG_BIN/postgres ]] ||
        die "no PostgreSQL server at /usr/lib/postgresql/*/bin (apt-get install postgresql, or set PG_BIN)"
    PG_AS=()
    [[ $(id -u) == 0 ]] && PG_AS=(runuser -u postgres --)
    mkdir -p "$BENCH_TMP"
    PG_DIR=$(mktemp -d "$BENCH_TMP/pg.XXXXXX")
    chmod 755 "$PG_DIR"
    ((${#PG_AS[@]} == 0)) || chown postgres:postgres "$PG_DIR"
    "${PG_AS[@]}" test -w "$PG_DIR" ||
        die "the postgres user cannot write $PG_DIR (every folder above it must be searchable by others)"
    "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U airlock --auth=trust -E UTF8 --locale=C \
        >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
    PG_PORT=$(free_port)
    local opts="-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=${PG_MAX_CONNECTIONS:-100}"
    [[ ${PG_FSYNC:-on} == off ]] && opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    opts+=${PG_OPTS:+ $PG_OPTS}
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/postgres.log" -o "$opts" -w -t 60 start \
        >/dev/null 2>&1 || { cat "$PG_DIR/postgres.log" >&2; die "postgres did not start"; }
    PG_VERSION=$("$PG_BIN/postgres" --version | awk '{ print $3 }')
}

# Stops the cluster (fast shutdown) and removes its directory (kept with KEEP_DATA=1).
stop_postgres() {
    [[ -n $PG_DIR && -d $PG_DIR ]] || return 0
    if [[ -f $PG_DIR/data/postmaster.pid ]]; then
        "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            kill -INT "$(head -1 "$PG_DIR/data/postmaster.pid")" 2>/dev/null || true
    fi
    if [[ $KEEP_DATA == 1 ]]; then
        say "kept $PG_DIR (PostgreSQL)"
    else
        rm -rf "$PG_DIR"
    fi
    PG_DIR=
}

# One statement through psql as `airlock`; prints the rows, unaligned.
pg_sql() { # db sql
    psql -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U airlock -d "$1" -c "$2"
}

# Creates an empty database; prints its URL (for AIRLOCK__DATABASE__URL).
pg_create_db() { # name
    createdb -h 127.0.0.1 -p "$PG_PORT" -U airlock "$1" || die "createdb $1 failed"
    printf 'postgres://airlock@127.0.0.1:%s/%s\n' "$PG_PORT" "$1"
}

# CPU time of a process in clock ticks (user + system), 0 once it is gone.
cpu_ticks() { # pid
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return 0; }
    awk '{ print $12 + $13 }' <<<"${st##*) }"
}
# CPU time of the PostgreSQL cluster in clock ticks: the postmaster (with its reaped children)
# and every live child (the pools' backends, the WAL writer, the checkpointer, ...).
pg_cpu_ticks() {
    local pm
    pm=$(head -1 "$PG_DIR/data/postmaster.pid" 2>/dev/null) || { echo 0; return 0; }
    python3 - "$pm" <<'PY'
import os, sys
pm, t = sys.argv[1], 0
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        s = open(f"/proc/{p}/stat").read()
    except OSError:
        continue
    f = s[s.rfind(")") + 2:].split()  # f[1] ppid, f[11:15] utime stime cutime cstime
    if p == pm:
        t += sum(int(x) for x in f[11:15])
    elif f[1] == pm:
        t += int(f[11]) + int(f[12])
print(t)
PY
}
# Busy and total jiffies of the whole machine (all cores), from /proc/stat: "busy total".
machine_ticks() {
    awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

# Memory of a process, KiB.
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# RSS split: "anon file shmem" KiB (RssAnon, RssFile, RssShmem).
rss_parts_kib() {
    awk '/^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } /^RssShmem:/ { s = $2 } END { print a + 0, f + 0, s + 0 }' \
        "/proc/$1/status" 2>/dev/null || echo "0 0 0"
}
# Resets a process's VmHWM to its current RSS (Linux >= 4.0), so the next reading is the peak
# of the next step alone. Returns non-zero where the kernel does not allow it.
reset_hwm() { echo 5 2>/dev/null >"/proc/$1/clear_refs"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# The transfer's state, read with a staff token (the summary route).
transfer_state() { # id token
    curl -sS -H "Authorization: Bearer $2" "$AIRLOCK_SERVER/api/v1/transfers/$1" | jq -r .state
}

# Waits until the transfer is in state $2 (polling every 0.5 s, up to $4 seconds, default 3600);
# dies naming the state it is in otherwise.
wait_state() { # id state token [timeout]
    local i st= limit=$((${4:-3600} * 2))
    for ((i = 0; i < limit; i++)); do
        st=$(transfer_state "$1" "$3")
        [[ $st == "$2" ]] && return 0
        case $st in blocked | rejected | cancelled | expired) die "transfer $1 is $st, not $2: $(curl -sS -H "Authorization: Bearer $3" "$AIRLOCK_SERVER/api/v1/transfers/$1" | jq -c '{state, state_reason}')" ;; esac
        sleep 0.5
    done
    die "transfer $1 never reached $2 (still $st)"
}

# One sample of a counter from the server's /metrics (0 when absent).
metric() { # series
    curl -sS "$AIRLOCK_SERVER/metrics" | awk -v s="$1" '$1 == s { print $2; f = 1 } END { if (!f) print 0 }'
}

# Per-thread CPU ticks of a process: "tid comm ticks" lines. comm may contain spaces; the
# fields after the last ')' are fixed: utime is the 12th, stime the 13th.
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        [[ -r $t/stat ]] || continue
        awk -v tid="${t##*/}" -v comm="$(tr ' ' '_' <"$t/comm" 2>/dev/null)" '{
            s = $0; sub(/.*\) /, "", s); split(s, f, " "); print tid, comm, f[12] + f[13] }' "$t/stat" 2>/dev/null || true
    done
}
