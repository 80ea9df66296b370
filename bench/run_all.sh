#!/usr/bin/env bash
# Run every speed benchmark (original's way vs ours, side by side), merge into one results file,
# then print the markdown table.
#
#   bench/run_all.sh [--quick] [--data-root DIR] [--output PATH] [--repeats N]
#
# --quick: tiny sizes and 1 repeat, only checks that the scripts run (write it to a temporary
# --output, not to bench/results.json). Other options are passed to every script.
# Each benchmark runs in its own Python process; a failing one is reported and the rest still run.
# Every entry written is stamped with its UTC date, machine and model (bench/common.py); on a shared
# machine, run when it is quiet (the load average is printed) or compare sides timed in turn.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUTPUT=bench/results.json
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --output) OUTPUT=$2; shift 2 ;;
    --output=*) OUTPUT=${1#--output=}; shift ;;
    --data-root|--repeats|--warmup) ARGS+=("$1" "$2"); shift 2 ;;
    --quick|--data-root=*|--repeats=*|--warmup=*) ARGS+=("$1"); shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
failed=()
for script in bench_input_pipeline bench_scratch_epoch bench_transfer_epoch bench_gradcam; do
  echo "== $script $(date -u +%H:%M:%SZ), 1-minute load average $(cut -d' ' -f1 /proc/loadavg)"
  start=$(date +%s)
  if ! "$PYTHON" "bench/$script.py" --output "$OUTPUT" "${ARGS[@]+"${ARGS[@]}"}"; then
    failed+=("$script")
  fi
  echo "== $script took $(( $(date +%s) - start )) s"
done
"$PYTHON" bench/render_table.py --results "$OUTPUT"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  exit 1
fi
