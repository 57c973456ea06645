#!/usr/bin/env bash
# Disclosure-check throughput: `airlock disclosure --quiet FILE` (the egress disclosure checks
# `egress submit` runs: CSV table rules, identifier rules on text cells) on one large CSV,
# against Python's `csv` module merely reading the same file (csv.reader, counting fields),
# in the same run. See benches/README.md.
#
# Measured: wall time of each (best of RUNS, interleaved airlock, python, airlock, ...; the
# file is read into the page cache before each run), MB/s (10^6 B/s) of both, the ratio
# airlock / python (throughput; above 1: airlock is faster), airlock's peak RSS (GNU time %M).
# Target: the design sets none; the PASS/FAIL line is this script's own bar: airlock at least as
# fast as a bare Python csv read (ratio >= 1) although it checks every cell. Peak RSS should
# stay bounded (the whole-table checks keep at most max_table_rows_analysed rows), whatever
# the file size.
#
# Knobs (environment):
#   SIZE_MIB     size of the CSV in MiB                           (default 1024)
#   RUNS         repetitions of each measurement (best is kept)    (default 3)
#   BENCH_TMP    scratch parent dir; the CSV is cached there       (default /work/bench-tmp)
#   AIRLOCK_BIN  the airlock binary (default: a release build, see lib.sh)
#   PYTHON       the Python interpreter of the baseline             (default python3)
set -euo pipefail

SIZE_MIB=${SIZE_MIB:-1024}
RUNS=${RUNS:-3}
PYTHON=${PYTHON:-python3}

source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
find_airlock
for t in "$PYTHON" awk; do need "$t"; done
[[ -x /usr/bin/time ]] || die "missing GNU time at /usr/bin/time (apt-get install time)"
mkdir -p "$BENCH_TMP"

# ---- the table, generated once and cached: 8 columns, a header, unique ids -----------------
CSV=$BENCH_TMP/disclosure-$SIZE_MIB.csv
if [[ ! -s $CSV ]]; then
    say "writing $CSV ($SIZE_MIB MiB) ..."
    "$PYTHON" - "$CSV.part" "$SIZE_MIB" <<'PY'
import random, sys
path, target = sys.argv[1], int(sys.argv[2]) << 20
rnd = random.Random(42)
regions = ["North East", "North West", "Yorkshire", "East Midlands", "West Midlands",
           "East of England", "London", "South East", "South West", "Wales", "Scotland"]
bands = ["0-15", "16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"]
# 65,536 distinct row tails (date, region, age band, sex, count, population, amount); each
# row is a unique id plus one of them, so generation runs at join speed, not random() speed.
tails = []
for _ in range(1 << 16):
    y, m, d = rnd.randint(2015, 2024), rnd.randint(1, 12), rnd.randint(1, 28)
    pop = rnd.randint(100, 250000)
    tails.append(f"{y}-{m:02d}-{d:02d},{rnd.choice(regions)},{rnd.choice(bands)},"
                 f"{rnd.choice('FM')},{rnd.randint(0, 5000)},{pop},{rnd.randint(0, 10**7)}\n")
with open(path, "w", newline="") as f:
    f.write("record_id,event_date,region,age_band,sex,count,population,amount\n")
    written, i, step = 0, 0, 1 << 16
    while written < target:
        chunk = "".join([f"{n},{tails[(n * 40503) & 0xffff]}" for n in range(i, i + step)])
        f.write(chunk)
        written += len(chunk)
        i += step
PY
    mv "$CSV.part" "$CSV"
fi
BYTES=$(stat -c %s "$CSV")
ROWS=$(($(wc -l <"$CSV") - 1))
say "table: $CSV, $BYTES bytes, $ROWS data rows"

WORK=$(mktemp -d "$BENCH_TMP/disclosure.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

PYCODE='import csv,sys
n=0
for r in csv.reader(open(sys.argv[1], newline="")): n+=len(r)
print(n)'

# Runs "$@" once with the file in the page cache; prints "seconds peak_rss_kib".
timed() { # out_file cmd...
    local out=$1 s e
    shift
    cat "$CSV" >/dev/null
    s=$(now_ns)
    # The exit code is ignored: airlock exits 1 when a finding fails (a random table has many).
    /usr/bin/time -f '%M' -o "$WORK/time" "$@" >"$out" 2>"$out.err" || true
    e=$(now_ns)
    echo "$(secs "$s" "$e") $(tail -1 "$WORK/time")"
}

a_times=() p_times=() a_rss=0 p_rss=0 a_line=
for r in $(seq "$RUNS"); do
    read -r t m < <(timed "$WORK/a.out" "$A" disclosure --quiet "$CSV")
    grep -q 'files,' "$WORK/a.out" || { cat "$WORK/a.out" "$WORK/a.out.err" >&2; die "airlock disclosure printed no summary"; }
    a_times+=("$t"); ((m > a_rss)) && a_rss=$m
    a_line=$(grep 'files,' "$WORK/a.out" | tail -1)
    read -r t m < <(timed "$WORK/p.out" "$PYTHON" -c "$PYCODE" "$CSV")
    [[ $(cat "$WORK/p.out") == $(((ROWS + 1) * 8)) ]] || { cat "$WORK/p.out" "$WORK/p.out.err" >&2; die "python read $(cat "$WORK/p.out") fields, expected $(((ROWS + 1) * 8))"; }
    p_times+=("$t"); ((m > p_rss)) && p_rss=$m
    say "  run $r: airlock ${a_times[-1]} s, python ${p_times[-1]} s"
done

best() { printf '%s\n' "$@" | sort -g | head -1; }
mbs() { awk -v b="$BYTES" -v t="$1" 'BEGIN { printf "%.1f", b / 1e6 / t }'; }
a_best=$(best "${a_times[@]}")
p_best=$(best "${p_times[@]}")
ratio=$(awk -v a="$a_best" -v p="$p_best" 'BEGIN { printf "%.2f", p / a }')
verdict=$(awk -v r="$ratio" 'BEGIN { print (r >= 1.0 ? "PASS" : "FAIL") }')

echo "airlock: $A ($BUILD); $(nproc) cores; best of $RUNS, interleaved, page cache warm"
echo "table: $SIZE_MIB MiB CSV ($BYTES bytes, $ROWS rows x 8 columns)"
echo
printf '  %-44s %-26s %8s %10s %10s\n' "measurement" "times (s)" "best s" "MB/s" "peak RSS"
printf '  %-44s %-26s %8s %10s %10s\n' "airlock disclosure --quiet" "${a_times[*]}" "$a_best" "$(mbs "$a_best")" "$(mib "$a_rss") MiB"
printf '  %-44s %-26s %8s %10s %10s\n' "python3 csv.reader (fields counted)" "${p_times[*]}" "$p_best" "$(mbs "$p_best")" "$(mib "$p_rss") MiB"
echo
echo "  airlock's own summary (last run): $a_line"
echo "  airlock / python throughput: $ratio   (target >= 1.00: $verdict)"
