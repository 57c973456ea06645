#!/usr/bin/env bash
# Re-verification benchmark: airlock's hashing engine (`airlock hash`, the code the scheduler
# and `airlock verify` run: files in parallel with rayon, SHA-256 beside memory-mapped
# multi-threaded BLAKE3) against b3sum (all threads), openssl dgst -sha256, sha256sum and
# hashdeep over the same trees, in the same run. See benches/README.md.
#
#   (a) BIG_FILES files of BIG_GIB GiB each         (default 3 x 2 GiB)
#   (b) SMALL_FILES small files of SMALL_KIB KiB     (default 100000 x 4 KiB)
#
# Knobs: BIG_FILES, BIG_GIB, SMALL_FILES, SMALL_KIB, RUNS (best of, default 3),
#        BENCH_TMP (default /work/bench-tmp), AIRLOCK_BIN (default ./target/release/airlock)
set -euo pipefail

BIG_FILES=${BIG_FILES:-3}
BIG_GIB=${BIG_GIB:-2}
SMALL_FILES=${SMALL_FILES:-100000}
SMALL_KIB=${SMALL_KIB:-4}
RUNS=${RUNS:-3}
BENCH_TMP=${BENCH_TMP:-/work/bench-tmp}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
A=${AIRLOCK_BIN:-$repo/target/release/airlock}
[[ -x $A ]] || { echo "no release binary at $A; build with: cargo build --release" >&2; exit 1; }
for tool in b3sum openssl sha256sum hashdeep python3 awk nproc; do
    command -v "$tool" >/dev/null || { echo "missing tool: $tool (Debian: b3sum openssl coreutils hashdeep)" >&2; exit 1; }
done
cores=$(nproc)
mkdir -p "$BENCH_TMP"
WORK=$(mktemp -d "$BENCH_TMP/verify.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$WORK/big" "$WORK/small"
for i in $(seq "$BIG_FILES"); do
    head -c $((BIG_GIB << 30)) /dev/urandom > "$WORK/big/f$i.bin"
done
python3 - "$WORK/small" "$SMALL_FILES" "$SMALL_KIB" <<'PY'
import os, sys
root, n, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
        f.write(os.urandom(kib * 1024))
PY

best() {
    local b=
    for _ in $(seq "$RUNS"); do
        local s e t
        s=$(date +%s.%N)
        "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
        e=$(date +%s.%N)
        t=$(awk -v s="$s" -v e="$e" 'BEGIN { print e - s }')
        if [[ -z $b ]] || awk -v t="$t" -v b="$b" 'BEGIN { exit !(t < b) }'; then b=$t; fi
    done
    echo "$b"
}
warm() { find "$1" -type f -exec cat {} + > /dev/null; }
row() { printf '  %-52s %8.2f s\n' "$1" "$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }

echo "machine: $cores cores; best of $RUNS; ratio = baseline time / airlock time (above 1: airlock faster)"
echo
echo "(a) $BIG_FILES files x $BIG_GIB GiB"
warm "$WORK/big"
big=("$WORK"/big/*.bin)
t_b3=$(best b3sum "${big[@]}")
t_ssl1=$(best openssl dgst -sha256 "${big[0]}")
t_ssl=$(best openssl dgst -sha256 "${big[@]}")
t_sum=$(best sha256sum "${big[@]}")
t_hd=$(best hashdeep -c sha256 "${big[@]}")
t_air_b3=$(best "$A" hash --digest blake3 --quiet "${big[@]}")
t_air_sha=$(best "$A" hash --digest sha256 --quiet "${big[@]}")
t_air=$(best "$A" hash --quiet "${big[@]}")
row "b3sum (all threads)" "$t_b3"
row "openssl dgst -sha256 (one process)" "$t_ssl"
row "sha256sum" "$t_sum"
row "hashdeep -c sha256" "$t_hd"
row "airlock hash --digest blake3" "$t_air_b3"
row "airlock hash --digest sha256" "$t_air_sha"
row "airlock hash (both digests)" "$t_air"
# openssl per core x cores: one file's throughput, times the cores.
ssl_cores=$(awk -v t="$t_ssl1" -v n="$BIG_FILES" -v c="$cores" 'BEGIN { m = n < c ? n : c; print t * n / m }')
echo "  BLAKE3:  airlock vs b3sum                        $(ratio "$t_air_b3" "$t_b3")   (target >= 0.90)"
echo "  SHA-256: airlock vs openssl per core x cores     $(ratio "$t_air_sha" "$ssl_cores")   (target >= 0.90)"
echo "  SHA-256: airlock vs openssl (one process)        $(ratio "$t_air_sha" "$t_ssl")"
echo "  both:    airlock vs sha256sum                    $(ratio "$t_air" "$t_sum")"
echo "  both:    airlock vs hashdeep -c sha256           $(ratio "$t_air" "$t_hd")"
echo
echo "(b) $SMALL_FILES files x $SMALL_KIB KiB"
warm "$WORK/small"
t_hd=$(best hashdeep -r -c sha256 "$WORK/small")
t_b3=$(best sh -c "find '$WORK/small' -type f -print0 | xargs -0 b3sum")
t_sum=$(best sh -c "find '$WORK/small' -type f -print0 | xargs -0 sha256sum")
t_ssl=$(best sh -c "find '$WORK/small' -type f -print0 | xargs -0 openssl dgst -sha256")
t_air=$(best "$A" hash --quiet "$WORK/small")
row "hashdeep -r -c sha256" "$t_hd"
row "find | xargs b3sum" "$t_b3"
row "find | xargs sha256sum" "$t_sum"
row "find | xargs openssl dgst -sha256" "$t_ssl"
row "airlock hash (both digests)" "$t_air"
echo "  both:    airlock vs hashdeep                     $(ratio "$t_air" "$t_hd")   (target >= 5)"
echo "  both:    airlock vs sha256sum                    $(ratio "$t_air" "$t_sum")"
echo "  both:    airlock vs b3sum                        $(ratio "$t_air" "$t_b3")"
