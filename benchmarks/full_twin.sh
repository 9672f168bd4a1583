#!/usr/bin/env bash
# The full-size twin end to end: synthesis, reduction, fit, accuracy against the truth,
# classification, q200 map and boundary lines, each stage timed (wall) with its peak memory.
#
# Usage: bash benchmarks/full_twin.sh [OUT] [WORKERS] [FIT_SCHEDULER]
#
#   OUT      output folder (default full_twin); a stage whose output is there already is skipped,
#            so a stopped run goes on where it stopped (the fit resumes inside its results file)
#   WORKERS  processes for the reduction and the fit (default 2: the reduction's worker pool,
#            the fit's `--scheduler local:WORKERS` dask cluster of single-threaded workers)
#   FIT_SCHEDULER  the fit's --scheduler (default local:WORKERS; local:1xWORKERS runs one worker of
#            WORKERS threads, which holds one model and template bank instead of one per worker;
#            none fits in this process, without dask)
#
# TWIN_SET (environment, optional): --set values for the twin, e.g. TWIN_SET="scan.shape=[11,11]
# scan.step_um=3.0" renders the same 30 x 30 um map on a coarser grid (a quick check of the script).
#
# Each stage runs under GNU time (`/usr/bin/time -v`, the Debian package `time`): the wall time
# and the largest resident set of the stage's processes (the parent or one of its workers) go to
# OUT/logs/<stage>.time; the summary at the end lists them with the machine and its load.
# Figures: docs/performance.md ("The full 121 x 121 twin end to end").
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-full_twin}
WORKERS=${2:-2}
FIT_SCHEDULER=${3:-local:$WORKERS}
FIT_DASK=(--scheduler "$FIT_SCHEDULER")
[[ $FIT_SCHEDULER == none ]] && FIT_DASK=()
mkdir -p "$OUT/logs"
SCAN="$OUT/scan"

stage() {   # stage NAME OUTPUT COMMAND...: run COMMAND unless OUTPUT exists
    local name=$1 output=$2
    shift 2
    if [[ -e "$output" ]]; then
        echo "== $name: $output exists, skipped"
        return
    fi
    echo "== $name: $*"
    # a new Unix process session (setsid), so that the resident sets of all its processes (workers included) can be
    # summed every 2 s: the largest sum goes to OUT/logs/<stage>.rss (kB)
    setsid /usr/bin/time -v -o "$OUT/logs/$name.time" "$@" > "$OUT/logs/$name.out" 2> "$OUT/logs/$name.err" &
    local pid=$! peak=0 total
    while kill -0 "$pid" 2> /dev/null; do
        total=$(ps -eo sid=,rss= | awk -v s="$pid" '$1 == s {t += $2} END {print t + 0}')
        (( total > peak )) && peak=$total
        sleep 2
    done
    echo "$peak" > "$OUT/logs/$name.rss"
    wait "$pid"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load $(cut -d' ' -f1-3 /proc/loadavg)"

SETS=()
for value in ${TWIN_SET:-}; do SETS+=(--set "$value"); done
stage synth "$SCAN/twin_master.h5" \
    xmodel synth "$REPO/configs/twin.toml" "${SETS[@]}" --out "$SCAN" -q
stage reduce "$OUT/results.h5" \
    xmodel reduce "$SCAN/twin_master.h5" --positions "$SCAN/twin.fio" --monitor "$SCAN/twin.fio:monitor" \
    --out "$OUT/results.h5" --workers "$WORKERS" -q
stage fit "$OUT/fits.h5.done" \
    xmodel fit "$OUT/results.h5" "$REPO/configs/experiment/p10_eiger4m.toml" "$REPO/configs/domains/red.toml" \
    --out "$OUT/fits.h5" --cache-dir "$OUT/cache" "${FIT_DASK[@]}" -q
touch "$OUT/fits.h5.done"
stage accuracy "$OUT/accuracy.txt" \
    python "$REPO/benchmarks/validation.py" "$OUT/fits.h5" "$SCAN/truth.h5"
cp "$OUT/logs/accuracy.out" "$OUT/accuracy.txt"
stage classify "$OUT/classes.png" \
    xmodel classify "$OUT/results.h5" --figure "$OUT/classes.png" -q
stage qmap "$OUT/qmap" \
    xmodel qmap "$OUT/results.h5" --family 200 --fits "$OUT/fits.h5" --figures "$OUT/qmap" -q
# boundary lines like the paper's scans: S1 (purple domain into an empty area), S2 (the orange
# domain's edge, 22 deg about [010]_SL plus 7 deg) and a grain boundary (red into purple); x, y in
# um on the twin's map (configs/twin.toml)
CONFIGS=("$REPO/configs/experiment/p10_eiger4m.toml")
stage boundary_s1 "$OUT/boundary_s1.csv" \
    xmodel boundary "$OUT/results.h5" "${CONFIGS[@]}" "$REPO/configs/domains/purple.toml" \
    --fits "$OUT/fits.h5" --from 17.0,8.5 --to 17.0,13.5 --out "$OUT/boundary_s1" -q
stage boundary_s2 "$OUT/boundary_s2.csv" \
    xmodel boundary "$OUT/results.h5" "${CONFIGS[@]}" "$REPO/configs/domains/orange.toml" \
    --fits "$OUT/fits.h5" --from 22.0,23.0 --to 26.5,23.0 --out "$OUT/boundary_s2" -q
stage boundary_grain "$OUT/boundary_grain.csv" \
    xmodel boundary "$OUT/results.h5" "${CONFIGS[@]}" "$REPO/configs/domains/red.toml" \
    --fits "$OUT/fits.h5" --from 9.5,6.5 --to 14.5,6.5 --out "$OUT/boundary_grain" -q

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-16s %12s %10s %22s %22s\n' stage wall CPU-s "largest process (GB)" "all processes (GB)"
for f in "$OUT"/logs/*.time; do
    name=$(basename "$f" .time)
    wall=$(grep 'Elapsed (wall clock)' "$f" | awk '{print $NF}')
    cpu=$(awk -F': ' '/User time|System time/ {t += $2} END {printf "%.0f", t}' "$f")
    rss=$(grep 'Maximum resident set size' "$f" | awk '{printf "%.2f", $NF / 1048576}')
    all=$(awk '{printf "%.2f", $1 / 1048576}' "$OUT/logs/$name.rss" 2> /dev/null || echo "-")
    printf '%-16s %12s %10s %22s %22s\n' "$name" "$wall" "$cpu" "$rss" "$all"
done
