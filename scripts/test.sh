#!/usr/bin/env bash
# The tests: set up .venv with the test tools, then run pytest. The data folder is
# $CHEST_XRAY_DATA_ROOT, by default ../shared/data beside the checkout (chest_xray_224/ and
# chest_xray_fullsize_sample/ inside). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements-test.txt
export CHEST_XRAY_DATA_ROOT="${CHEST_XRAY_DATA_ROOT:-$(cd .. && pwd)/shared/data}"
export TF_CPP_MIN_LOG_LEVEL=2
.venv/bin/python -m ipykernel install --sys-prefix --name python3 > /dev/null
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
