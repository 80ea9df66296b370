#!/usr/bin/env bash
# The main job: set up .venv, find or download the data, execute the three notebooks top to bottom
# and refresh figures, results and the README tables.
#
#   bash scripts/reproduce.sh                       # download the data with kagglehub, full run
#   bash scripts/reproduce.sh --data-dir DIR        # data already on disk (Kaggle layout)
#   bash scripts/reproduce.sh --quick [...]         # small subset, minutes; writes to build/quick/
#
# --fullsize-dir DIR: full-resolution originals for the size and intensity statistics
# (defaults to the data folder, which holds originals when it is the Kaggle download).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=False
DATA_DIR="${CHEST_XRAY_DIR:-}"
FULLSIZE_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=True; shift ;;
        --data-dir) DATA_DIR="$2"; shift 2 ;;
        --fullsize-dir) FULLSIZE_DIR="$2"; shift 2 ;;
        *) echo "unknown option: $1 (use --quick, --data-dir DIR, --fullsize-dir DIR)" >&2; exit 2 ;;
    esac
done
bash scripts/setup_venv.sh requirements.txt
PY=.venv/bin/python
if [ -z "$DATA_DIR" ]; then
    DATA_DIR="$($PY -c 'import functions_for_grad_cam as f; print(f.resolve_data_dir())')"
fi
FULLSIZE_DIR="${FULLSIZE_DIR:-$DATA_DIR}"
$PY -m ipykernel install --sys-prefix --name python3 > /dev/null
if [ "$QUICK" = True ]; then OUT=build/quick; mkdir -p "$OUT"; else OUT=.; fi
export OUTPUT_DIR="$OUT"
for NOTEBOOK in data_visualization model_deep_learning grad_cam; do
    if [ "$QUICK" = True ]; then TARGET="$OUT/$NOTEBOOK.ipynb"; else TARGET="$NOTEBOOK.ipynb"; fi
    echo "== $NOTEBOOK ($(date +%H:%M:%S)) -> $TARGET"
    $PY -m papermill "$NOTEBOOK.ipynb" "$TARGET" --cwd . --log-level WARNING \
        -p data_dir "$DATA_DIR" -p fullsize_dir "$FULLSIZE_DIR" -p output_dir "$OUT" -p quick "$QUICK"
done
if [ "$QUICK" = False ]; then $PY scripts/update_readme.py; fi
echo "== done ($(date +%H:%M:%S)); outputs in $OUT"
