#!/usr/bin/env bash
# The main job: set up .venv, find or download the data, execute the three notebooks top to bottom
# and refresh figures, results and the README tables.
#
#   bash scripts/reproduce.sh                       # download the data with kagglehub, full run
#   bash scripts/reproduce.sh --data-dir DIR        # data already on disk (Kaggle layout)
#   bash scripts/reproduce.sh --quick [...]         # small subset, minutes; writes to build/quick/
#   bash scripts/reproduce.sh --validation-only     # explore: the model notebook reads no test image and
#                                                   # records no test result (grad_cam.ipynb is skipped)
#
# --fullsize-dir DIR: full-resolution originals for the size and intensity statistics
# (defaults to the data folder, which holds originals when it is the Kaggle download).
# --test-scoring-note TEXT: what changed since the official test set was last scored; recorded in
# results/metrics.json (protocol.history) and the README's protocol table.
set -euo pipefail
cd "$(dirname "$0")/.."

# A quiet console: which TensorFlow start-up line each setting removes, and why this filter, is
# explained in scripts/tf_noise.sh (shared with scripts/test.sh).
source scripts/tf_noise.sh
exec 3>&2 2> >(grep --line-buffered -v -E "$TF_NOISE" >&3)
STDERR_FILTER=${!:-}  # empty where bash (< 4.4) does not set $! for a process substitution
# Inside the notebooks: the papermill kernel forwards what C++ libraries write to its stderr into the
# cell outputs (ipykernel's capture_fd_output). This run turns that off with a throw-away IPython
# profile, so those lines reach the console (and the filter above) instead; Python's own output,
# warnings and tracebacks still land in the notebooks. Trade-off: a C++ message that is not one of
# the lines above shows on the console, not in the notebook.
KERNEL_PROFILE="$(mktemp -d)"
finish() {  # remove the profile; let the filter print its last lines before the script returns
    rm -rf "$KERNEL_PROFILE"
    exec 2>&3
    if [ -n "$STDERR_FILTER" ]; then wait "$STDERR_FILTER" 2> /dev/null || true; fi
}
trap finish EXIT
mkdir -p "$KERNEL_PROFILE/profile_default"
echo "c.IPKernelApp.capture_fd_output = False" > "$KERNEL_PROFILE/profile_default/ipython_kernel_config.py"

QUICK=False
SCORE_TEST=True
DATA_DIR="${CHEST_XRAY_DIR:-}"
FULLSIZE_DIR=""
NOTE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --data-dir|--fullsize-dir|--test-scoring-note)
            if [ $# -lt 2 ]; then echo "$1 needs a value" >&2; exit 2; fi ;;
    esac
    case "$1" in
        --quick) QUICK=True; shift ;;
        --validation-only) SCORE_TEST=False; shift ;;
        --data-dir) DATA_DIR="$2"; shift 2 ;;
        --fullsize-dir) FULLSIZE_DIR="$2"; shift 2 ;;
        --test-scoring-note) NOTE="$2"; shift 2 ;;
        *) echo "unknown option: $1 (use --quick, --validation-only, --data-dir DIR, --fullsize-dir DIR, --test-scoring-note TEXT)" >&2
           exit 2 ;;
    esac
done
bash scripts/setup_venv.sh requirements.txt
PY=.venv/bin/python
# The data folder (given, or downloaded when none is given) and the full-size folder are checked
# before any notebook runs, so a wrong path never reaches the notebooks executed in place: each
# prints its data set root, or only the reason it is missing and how to provide it (exit 1).
resolve_data() { $PY -c 'import sys, pneumonia_cxr.dataset as d; sys.exit(d.print_data_dir(sys.argv[1] or None))' "$1"; }
DATA_DIR="$(resolve_data "$DATA_DIR")" || exit 1
FULLSIZE_DIR="$(resolve_data "${FULLSIZE_DIR:-$DATA_DIR}")" || exit 1
$PY -m ipykernel install --sys-prefix --name python3 > /dev/null
if [ "$QUICK" = True ]; then OUT=build/quick; elif [ "$SCORE_TEST" = False ]; then OUT=build/validation; else OUT=.; fi
mkdir -p "$OUT"
export OUTPUT_DIR="$OUT"
NOTEBOOKS=(data_visualization model_deep_learning grad_cam)
if [ "$SCORE_TEST" = False ]; then NOTEBOOKS=(model_deep_learning); fi
for NOTEBOOK in "${NOTEBOOKS[@]}"; do
    if [ "$QUICK" = True ] || [ "$SCORE_TEST" = False ]; then TARGET="$OUT/$NOTEBOOK.ipynb"; else TARGET="$NOTEBOOK.ipynb"; fi
    echo "== $NOTEBOOK ($(date +%H:%M:%S)) -> $TARGET"
    # executed into build/runs/ first: a failed run leaves $TARGET (the committed notebook) as it was
    RUN="build/runs/$NOTEBOOK.ipynb"
    EXTRA=()
    if [ "$NOTEBOOK" = model_deep_learning ]; then
        EXTRA=(-p score_test "$SCORE_TEST")
        if [ -n "$NOTE" ]; then EXTRA+=(-p test_scoring_note "$NOTE"); fi
    fi
    mkdir -p build/runs
    if ! IPYTHONDIR="$KERNEL_PROFILE" $PY -m papermill "$NOTEBOOK.ipynb" "$RUN" --cwd . --log-level WARNING \
        -p data_dir "$DATA_DIR" -p fullsize_dir "$FULLSIZE_DIR" -p output_dir "$OUT" -p quick "$QUICK" ${EXTRA[@]+"${EXTRA[@]}"}; then  # (empty-array form for bash < 4.4)
        echo "== $NOTEBOOK failed; $TARGET left unchanged, the executed notebook with the error: $RUN" >&2
        exit 1
    fi
    mv "$RUN" "$TARGET"
done
if [ "$QUICK" = False ] && [ "$SCORE_TEST" = True ]; then $PY scripts/update_readme.py; fi
echo "== done ($(date +%H:%M:%S)); outputs in $OUT"
