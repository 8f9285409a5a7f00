#!/usr/bin/env bash
# Every CUDA benchmark section and the CUDA tests in one run within a time budget, for a few minutes on a GPU machine.
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [--out DIR] [--budget SECONDS]
#
# Steps, in this order: the environment (versions, GPU, imports), the tests marked `cuda` (pytest -m cuda), gpu-fps on
# the static path (ViT-S, B, L at batch 1), gpu-throughput (batches 8 and 32), forward and training (ViT-L, CUDA
# memory), then gpu-fps on the torch.compile path (ours and transformers', S, B, L) as far as the budget allows. Each
# step runs with a time limit (`timeout`) within what is left of the budget (default 345 s on CUDA); a step that cannot
# get its minimum is skipped, and the summary says so.
#
# Writes to DIR (--out, else $GPU_CHECK_OUT, else $OUT, else outputs/gpu_check), rewritten after every step:
#   summary.md     steps, the batch-1 goals, all results as Markdown
#   results.json   the same as JSON (environment, steps, every row of every section)
#   gpu_check.log  everything the steps printed
#   pytest.log     the CUDA tests' output
#
# Needs Python ($PYTHON, default python3) with torch, transformers, accelerate, numpy, pillow, scipy, safetensors, tqdm
# and pytest; the repository need not be installed (it runs from the repository root with PYTHONPATH), and datasets,
# evaluate and pycocotools are not used. Wheels in .whl/ at the repository root, if any, are installed to /tmp/site
# first.
# --device cpu runs the same steps on tiny models and 32-pixel images: a rehearsal that checks everything runs (the
# numbers mean nothing); tests/benchmarks/test_gpu_check.py runs it.
set -uo pipefail

DEVICE=cuda
OUT_DIR=${GPU_CHECK_OUT:-${OUT:-outputs/gpu_check}}
BUDGET=${GPU_CHECK_BUDGET:-}
while [ $# -gt 0 ]; do
    case $1 in
        --device) DEVICE=$2; shift 2 ;;
        --out) OUT_DIR=$2; shift 2 ;;
        --budget) BUDGET=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $DEVICE in cuda|cpu) ;; *) echo "gpu_check.sh: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;; esac
# The step limits below are for one GPU; the CPU rehearsal (tiny models on a small, maybe busy machine) gets 4 times as
# much, and a 20-minute budget.
if [ "$DEVICE" = cpu ]; then SCALE=4 DEFAULT_BUDGET=1200; else SCALE=1 DEFAULT_BUDGET=345; fi
BUDGET=${BUDGET:-$DEFAULT_BUDGET}
case $BUDGET in ''|*[!0-9]*) echo "gpu_check.sh: --budget must be a number of seconds, got $BUDGET" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
mkdir -p "$OUT_DIR" || exit 1
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
: > "$WORK/steps.tsv"
LOG=$OUT_DIR/gpu_check.log
: > "$LOG"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)

say() { echo "[gpu_check $(($(date +%s) - START)) s] $*" | tee -a "$LOG"; }

report() {
    timeout 60 "$PY" -m benchmarks.gpu_check report --work "$WORK" --out "$OUT_DIR" --budget "$BUDGET" >> "$LOG" 2>&1 \
        || say "writing the report failed (see gpu_check.log)"
}

# step NAME LIMIT MINIMUM COMMAND...: run COMMAND with at most LIMIT seconds (fewer if less of the budget is left), or
# skip it when less than MINIMUM seconds are left; its output goes to the log (and the console).
step() {
    local name=$1 limit=$(($2 * SCALE)) minimum=$(($3 * SCALE))
    shift 3
    local left=$((BUDGET - ($(date +%s) - START)))
    if [ "$left" -lt "$minimum" ]; then
        say "$name: skipped ($left s of the budget left, needs $minimum s)"
        printf '%s\tskipped (budget)\t0\t%s\n' "$name" "$limit" >> "$WORK/steps.tsv"
        return
    fi
    local cut=0
    [ "$limit" -gt "$left" ] && limit=$left cut=1
    say "$name: start, limit $limit s"
    local begin
    begin=$(date +%s)
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
    local status=${PIPESTATUS[0]} took=$(($(date +%s) - begin)) result
    case $status in
        0) result=ok ;;
        124|137) result="timed out"; [ "$cut" = 1 ] && result="cut short by the budget" ;;
        *) result="failed (exit $status)" ;;
    esac
    say "$name: $result in $took s"
    printf '%s\t%s\t%s\t%s\n' "$name" "$result" "$took" "$limit" >> "$WORK/steps.tsv"
    report
}

if [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null; then
    say "installing the wheels in .whl/ to /tmp/site"
    "$PY" -m pip install -q --no-deps --no-index --target /tmp/site .whl/*.whl 2>&1 | tee -a "$LOG"
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi

BENCH=("$PY" -m training.commands benchmark --device "$DEVICE")
TESTS=$(grep -rl --include='*.py' "pytest.mark.cuda" tests | sort | tr '\n' ' ')
if [ "$DEVICE" = cuda ]; then
    BENCH+=(--repeats 5 --warmup 1)
    FPS_SIZES=(S B L)
    LARGE=(--size L)
    TRAIN=(--size L --train-image-size 640 --train-batch-size 4 --train-queries 100)
else  # a rehearsal: tiny models, small images, few repetitions, compilation without code generation
    TINY='{"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "num_blocks": 2}'
    BENCH+=(--rehearse --model-config "$TINY" --image-size 32 --queries 5 --repeats 2 --warmup 0 --threads 1
            --gpu-iterations 2 --gpu-batch-sizes 2,3 --compile-backend aot_eager --memory-repeats 1)
    FPS_SIZES=(S)
    LARGE=()
    TRAIN=(--train-image-size 32 --train-batch-size 2 --train-queries 5)
fi
sizes() { local IFS=,; echo "$*"; }

say "device $DEVICE, budget $BUDGET s, output $OUT_DIR"
step env 60 20 "$PY" -m benchmarks.gpu_check env --device "$DEVICE" --work "$WORK"
# shellcheck disable=SC2086  # one argument per test file
step tests 90 30 bash -c \
    "set -o pipefail; \"$PY\" -m pytest -q -m cuda -p no:cacheprovider $TESTS 2>&1 | tee \"$OUT_DIR/pytest.log\""
step gpu-fps-static 150 40 "${BENCH[@]}" --sections gpu-fps --gpu-paths static \
    --gpu-sizes "$(sizes "${FPS_SIZES[@]}")" --out "$WORK/gpu-fps-static.json"
step gpu-throughput 130 40 "${BENCH[@]}" --sections gpu-throughput --gpu-sizes "$(sizes "${FPS_SIZES[@]}")" \
    --out "$WORK/gpu-throughput.json"
step forward 45 20 "${BENCH[@]}" --sections forward "${LARGE[@]}" --out "$WORK/forward.json"
step training 75 30 "${BENCH[@]}" --sections training "${TRAIN[@]}" --out "$WORK/training.json"
for size in "${FPS_SIZES[@]}"; do
    step "gpu-fps-compile-$size" 150 45 "${BENCH[@]}" --sections gpu-fps --gpu-paths compile --gpu-sizes "$size" \
        --out "$WORK/gpu-fps-compile-$size.json"
done
report
say "done in $(($(date +%s) - START)) s: $OUT_DIR/summary.md"
cat "$OUT_DIR/summary.md"
# Exit status 1 when a step failed or ran past its own limit (steps skipped or cut short for the budget are not
# failures: their rows so far are in the report).
if grep -qE $'\t(failed|timed out)' "$WORK/steps.tsv"; then
    exit 1
fi
