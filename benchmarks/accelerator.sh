#!/usr/bin/env bash
# The speed figures on whatever device JAX picks (a GPU where jax[cuda] is installed), in one run:
# the forward model on the full Eiger 4M, then a twin scan synthesised, reduced and fitted, the fit
# timed per frame (cold, then warm from the compilation cache) and checked against the truth.
#
# Usage: bash benchmarks/accelerator.sh [OUT] [SHAPE] [STEP_UM]
#
#   OUT      output folder (default accelerator); logs in OUT/*.txt
#   SHAPE    scan shape of the twin (default "[13,13]")
#   STEP_UM  scan step in um (default 2.5: the full twin's 30 x 30 um map on a 13 x 13 grid)
#
# PYTHON (environment) picks the interpreter (default python3); STAGE_TIMEOUT (s, default 240)
# bounds each stage, so that one stuck stage leaves the others' figures. FORWARD=0 skips the
# forward benchmark. FIT_SET holds extra arguments for both fits, e.g. FIT_SET="--set fit.batch=64".
# The compilation cache is OUT/jax-cache (XMODEL_CACHE_DIR), empty at the start: the first fit's
# figure includes compiling, the second's does not.
# Figures: docs/performance.md ("On a GPU").
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-accelerator}
SHAPE=${2:-[13,13]}
STEP=${3:-2.5}
PY=${PYTHON:-python3}
T=${STAGE_TIMEOUT:-240}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export XMODEL_CACHE_DIR="$OUT/jax-cache" PYTHONUNBUFFERED=1
cd "$REPO"

stage() {   # stage NAME COMMAND...: run COMMAND under the stage timeout, log to OUT/NAME.txt
    local name=$1 t0 rc
    shift
    echo "== $name: $*"
    t0=$(date +%s)
    timeout "$T" "$@" >"$OUT/$name.txt" 2>&1
    rc=$?
    echo "== $name: rc $rc, $(($(date +%s) - t0)) s wall"
    tail -n 25 "$OUT/$name.txt"
}

{
    echo "date: $(date -u +%FT%TZ)  cores: $(nproc)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c "import jax, numpy; print('jax', jax.__version__, 'numpy', numpy.__version__, jax.devices())"
} | tee "$OUT/machine.txt"

[[ ${FORWARD:-1} == 0 ]] || stage forward "$PY" benchmarks/forward.py --no-sasmodels --repeats 7
stage synth "$PY" -m xmodel.cli -q synth configs/twin.toml --set "scan.shape=$SHAPE" \
    --set "scan.step_um=$STEP" --out "$OUT/twin"
stage reduce "$PY" -m xmodel.cli -q reduce "$OUT/twin/twin_master.h5" --positions "$OUT/twin/twin.fio" \
    --monitor "$OUT/twin/twin.fio:monitor" --out "$OUT/results.h5"
read -r -a FIT_ARGS <<<"${FIT_SET:-}"
stage fit_cold "$PY" benchmarks/fit.py "$OUT/results.h5" --no-baseline --out "$OUT/fit_cold" "${FIT_ARGS[@]}"
stage fit_warm "$PY" benchmarks/fit.py "$OUT/results.h5" --no-baseline --out "$OUT/fit_warm" "${FIT_ARGS[@]}"
stage truth "$PY" benchmarks/validation.py "$OUT/fit_warm/fits.h5" "$OUT/twin/truth.h5"
