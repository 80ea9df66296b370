#!/usr/bin/env bash
# The tests: set up .venv with the test tools, then run pytest. The data folder is
# $CHEST_XRAY_DATA_ROOT, by default ../shared/data beside the checkout (chest_xray_224/ and
# chest_xray_fullsize_sample/ inside). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh requirements-test.txt
export CHEST_XRAY_DATA_ROOT="${CHEST_XRAY_DATA_ROOT:-$(cd .. && pwd)/shared/data}"

# A quiet console, as in scripts/reproduce.sh (see there which setting removes which TensorFlow
# start-up line and why): C++ INFO and WARNING logs off, C++ errors kept, and the fixed start-up
# lines that no setting removes (oneDNN, "Could not find cuda drivers", cuInit) filtered from stderr
# by an exact pattern. Python warnings and tracebacks are never filtered.
export TF_CPP_MIN_LOG_LEVEL=2
TF_NOISE='WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR'
TF_NOISE+='|I0000 [0-9:. ]+[0-9]+ port\.cc:[0-9]+\] oneDNN custom operations are on'
TF_NOISE+='|I0000 [0-9:. ]+[0-9]+ cudart_stub\.cc:[0-9]+\] Could not find cuda drivers on your machine'
TF_NOISE+='|E0000 [0-9:. ]+[0-9]+ cuda_platform\.cc:[0-9]+\] failed call to cuInit: .*CUDA error'
TF_NOISE+='|\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption'
exec 2> >(grep --line-buffered -v -E "$TF_NOISE" >&2)

# The browser tests (tests/test_app_browser.py) drive the system Chromium; say so when they will skip.
CHROMIUM=/usr/bin/chromium
if [ ! -x "$CHROMIUM" ]; then
    echo "note: $CHROMIUM not found, so the browser tests (tests/test_app_browser.py) will be SKIPPED;" \
         "install Debian's chromium to run them: sudo apt-get install -y chromium"
fi
.venv/bin/python -m ipykernel install --sys-prefix --name python3 > /dev/null
exec .venv/bin/python -m pytest -q -p no:cacheprovider -rs "$@" tests
