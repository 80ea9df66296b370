#!/usr/bin/env bash
# Create .venv (if missing), install the pinned requirements file given as $1, then the package
# itself (pneumonia_cxr, functions_for_grad_cam and app, editable: pyproject.toml) without dependencies,
# built with the setuptools installed (offline too).
set -euo pipefail
cd "$(dirname "$0")/.."
REQUIREMENTS="${1:-requirements.txt}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r "$REQUIREMENTS"
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .  # setuptools: a dependency of tensorflow
