#!/usr/bin/env bash
# The tests: set up .venv with the test tools, then run pytest. The data folder is
# $CHEST_XRAY_DATA_ROOT, by default ../shared/data beside the checkout (chest_xray_224/ and
# chest_xray_fullsize_sample/ inside). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements-test.txt
export CHEST_XRAY_DATA_ROOT="${CHEST_XRAY_DATA_ROOT:-$(cd .. && pwd)/shared/data}"

# A quiet console: C++ INFO and WARNING logs off, C++ errors kept, and the fixed start-up lines that
# no setting removes filtered from stderr (scripts/tf_noise.sh says which and why).
source scripts/tf_noise.sh
exec 3>&2 2> >(grep --line-buffered -v -E "$TF_NOISE" >&3)
STDERR_FILTER=${!:-}  # empty where bash (< 4.4) does not set $! for a process substitution

# The browser tests (tests/test_app_browser.py) drive the system Chromium; say so when they will skip.
CHROMIUM=/usr/bin/chromium
if [ ! -x "$CHROMIUM" ]; then
    echo "note: $CHROMIUM not found, so the browser tests (tests/test_app_browser.py) will be SKIPPED;" \
         "install Debian's chromium to run them: sudo apt-get install -y chromium"
fi
.venv/bin/python -m ipykernel install --sys-prefix --name python3 > /dev/null
STATUS=0
.venv/bin/python -m pytest -q -p no:cacheprovider -rs "$@" tests || STATUS=$?
exec 2>&3  # close the filter's input, then let it print its last lines before exiting
if [ -n "$STDERR_FILTER" ]; then wait "$STDERR_FILTER" 2> /dev/null || true; fi
exit "$STATUS"
