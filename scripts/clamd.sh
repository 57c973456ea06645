#!/usr/bin/env bash
# Starts clamd in the foreground for airlock on one machine (the quickstart, the benchmark):
# scanners/clamd.conf.template filled in, listening on 127.0.0.1:PORT (default 3310, what
# scanners/clamav.toml expects). The signature database is DB_DIR if given (e.g.
# /var/lib/clamav after `freshclam`), else a folder holding only scanners/test.hdb (EICAR), as
# on machines that cannot download signatures. Needs Debian's clamav-daemon.
#
#   scripts/clamd.sh [PORT] [DB_DIR]        # Ctrl-C stops it
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
port="${1:-3310}"
work="${CLAMD_WORK_DIR:-$repo/clamd-data}"
mkdir -p "$work"
db="${2:-}"
if [ -z "$db" ]; then
  db="$work/db"
  mkdir -p "$db"
  cp "$repo/scanners/test.hdb" "$db/test.hdb"
fi
clamd_bin="$(command -v clamd || echo /usr/sbin/clamd)"
[ -x "$clamd_bin" ] || { echo "clamd not found: apt-get install clamav-daemon" >&2; exit 1; }
sed -e "s|@PORT@|$port|" -e "s|@DATABASE_DIR@|$db|" -e "s|@LOG_FILE@|$work/clamd.log|" \
    -e "s|@STREAM_MAX_LENGTH@|${STREAM_MAX_LENGTH:-100M}|" \
    "$repo/scanners/clamd.conf.template" > "$work/clamd.conf"
echo "clamd on 127.0.0.1:$port, database $db, log $work/clamd.log" >&2
exec "$clamd_bin" -c "$work/clamd.conf"
