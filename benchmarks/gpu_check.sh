#!/usr/bin/env bash
# GPU checks and figures in one run, for a machine with one CUDA GPU; from the repository root:
#
#   benchmarks/gpu_check.sh OUTDIR [path/to/stylegan2-ada-pytorch]
#
# Writes one log per step into OUTDIR (and prints them): the environment, the GPU tests
# (custom kernels against the reference, CUDA training and metrics paths), the kernels'
# speed, the per-phase training breakdown of the paper256 preset at 256x256 (eager, then
# --compile), and, given a checkout of the established code, the side-by-side phase timings
# on the GPU. Each step has a time limit (seconds, STEP_LIMIT, default 300) and a failing
# step does not stop the others; the exit status is that of the GPU tests. ONLY="tests ops"
# (step names: env tests ops paper256_eager paper256_compile issue_gpu side_by_side) runs
# those steps alone, to split the checks over several runs.
set -u
OUT=${1:?usage: benchmarks/gpu_check.sh OUTDIR [established checkout]}
ESTABLISHED=${2:-}
LIMIT=${STEP_LIMIT:-300}
PY=${PYTHON:-python}
mkdir -p "$OUT"

ONLY=${ONLY:-}

step() {  # step NAME COMMAND...: runs COMMAND under the time limit, logs to OUTDIR/NAME.log
    local name=$1; shift
    if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then
        return 0
    fi
    echo "== $name: $*" | tee "$OUT/$name.log"
    local start=$SECONDS
    timeout "$LIMIT" "$@" >>"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/$name.log"
    tail -n 40 "$OUT/$name.log"
    return $rc
}

step env "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))"
step tests "$PY" -m pytest -q -m gpu tests
tests_rc=$?
step ops "$PY" benchmarks/bench_ops.py --device cuda
step paper256_eager "$PY" benchmarks/bench_training.py --breakdown paper256 --steps 20 --warmup 4 --device cuda
step paper256_compile "$PY" benchmarks/bench_training.py --breakdown paper256 --steps 20 --warmup 4 --device cuda \
    --no-flops --set compile=true
step issue_gpu "$PY" benchmarks/bench_training.py --breakdown issue --steps 32 --warmup 4 --device cuda
if [ -n "$ESTABLISHED" ]; then
    step side_by_side "$PY" benchmarks/speed_vs_established.py --established "$ESTABLISHED" --device cuda --steps 32
fi
exit $tests_rc
