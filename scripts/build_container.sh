#!/usr/bin/env bash
# Build the app's image with podman and check it end to end, on a machine without a Docker engine
# or Docker Hub (Debian bookworm, run as root):
#   1. installs podman, runc and debootstrap from Debian if missing;
#   2. makes the base image (Debian bookworm + its python3, via debootstrap) if missing;
#   3. downloads the wheels of requirements-app.txt on the host into wheels/ (the wheelhouse);
#   4. builds the Dockerfile with BASE_IMAGE=<that base> and WHEELHOUSE=wheels;
#   5. runs the image and has scripts/check_container.py post a full-size X-ray to its
#      POST /api/predict, which writes the outcome to bench/container.json.
#
#   bash scripts/build_container.sh [--models DIR] [--model FILE] [--image NAME] [--port N]
#                                   [--base-image NAME] [--xray FILE] [--output JSON]
#
#   --models DIR   models folder to serve (default: models/ of the repo, baked into the image).
#                  Another folder is mounted read-only over /srv/pneumonia/models at run time, as
#                  app/README.md shows (`docker run -v ...`); the image itself is the same.
#   --model FILE   .keras file name in that folder to serve (sets MODEL_PATH); default: the app's
#                  choice among the folder's bundles (highest validation ROC-AUC in their .json).
#   --xray FILE    X-ray to post (default: the first test-split original of
#                  $CHEST_XRAY_DATA_ROOT/chest_xray_fullsize_sample, data root default ../shared/data).
# Podman uses Debian's runc (crun fails here: "cgroups in hybrid mode not supported") and explicit
# ulimits (else "setrlimit ... Operation not permitted").
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"

MODELS_DIR="$REPO/models"
MODEL_FILE=""
IMAGE="localhost/pneumonia-gradcam-app:latest"
BASE_IMAGE="localhost/debian-py311:bookworm"
HOST_PORT=5001
XRAY=""
OUTPUT="$REPO/bench/container.json"
while [ $# -gt 0 ]; do
    case "$1" in
        --models) MODELS_DIR="$(cd "$2" 2> /dev/null && pwd)" \
                      || { echo "--models: no such folder: $2" >&2; exit 2; }; shift 2 ;;
        --model) MODEL_FILE="$2"; shift 2 ;;
        --image) IMAGE="$2"; shift 2 ;;
        --base-image) BASE_IMAGE="$2"; shift 2 ;;
        --port) HOST_PORT="$2"; shift 2 ;;
        --xray) XRAY="$2"; shift 2 ;;
        --output) OUTPUT="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) echo "build_container.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"  # host Python: downloads the wheels, runs the check
RUNTIME=(--runtime /usr/sbin/runc)
LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
step() { echo "== $(date -u +%H:%M:%S) $*"; }

# Which model to serve, checked before anything is built ------------------------------------------
RUN_ARGS=(-d -p "127.0.0.1:$HOST_PORT:5000")
if [ "$MODELS_DIR" = "$REPO/models" ]; then
    MODEL_SOURCE="baked into the image from models/"
else
    RUN_ARGS+=(-v "$MODELS_DIR:/srv/pneumonia/models:ro")
    MODEL_SOURCE="mounted read-only from $MODELS_DIR"
fi
# No --model: the app chooses among the folder's .keras bundles (app/__init__.py), so it needs one.
shopt -s nullglob; found=("$MODELS_DIR"/*.keras); shopt -u nullglob
if [ -z "$MODEL_FILE" ] && [ "${#found[@]}" -eq 0 ]; then
    echo "No model to serve: no .keras file in $MODELS_DIR (train one with model_deep_learning.ipynb," \
         "or pass --models DIR)" >&2
    exit 1
fi
if [ -n "$MODEL_FILE" ]; then
    [ -f "$MODELS_DIR/$MODEL_FILE" ] || { echo "Model file not found: $MODELS_DIR/$MODEL_FILE" >&2; exit 1; }
    RUN_ARGS+=(-e "MODEL_PATH=models/$MODEL_FILE")
fi

# 1. Tools -------------------------------------------------------------------------------------
if ! command -v podman > /dev/null || [ ! -x /usr/sbin/runc ] || ! command -v debootstrap > /dev/null; then
    step "installing podman, runc and debootstrap (Debian packages)"
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq podman runc debootstrap > /dev/null
fi

# 2. Base image: Debian bookworm's own python3 (3.11), made from Debian packages ------------------
if [ "$BASE_IMAGE" = "localhost/debian-py311:bookworm" ] && ! podman image exists "$BASE_IMAGE"; then
    MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    [ -n "$MIRROR" ] \
        || { echo "No Debian mirror: no 'URIs:' line in /etc/apt/sources.list.d/debian.sources" >&2; exit 1; }
    ROOTFS="$REPO/build/rootfs-bookworm"  # build/ is git-ignored; removed once imported
    step "making the base image $BASE_IMAGE with debootstrap from $MIRROR"
    rm -rf "$ROOTFS" && mkdir -p "$REPO/build"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
        bookworm "$ROOTFS" "$MIRROR" > "$REPO/build/debootstrap.log" \
        || { echo "debootstrap failed: see $REPO/build/debootstrap.log" >&2; exit 1; }
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar -C "$ROOTFS" -c . \
        | podman import --change "ENV LANG=C.UTF-8" --change 'CMD ["python3"]' - "$BASE_IMAGE"
    rm -rf "$ROOTFS"
fi
podman image exists "$BASE_IMAGE" || { echo "Base image $BASE_IMAGE not found in podman's storage" >&2; exit 1; }

# 3. Wheelhouse: the build container cannot verify TLS to the index, the host can ---------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { echo "$PYTHON is not Python 3.11: the wheels must match the image's Python 3.11 (set PYTHON=...)" >&2; exit 1; }
step "downloading the wheels of requirements-app.txt into wheels/"
"$PYTHON" -m pip download --quiet --only-binary=:all: -r requirements-app.txt -d wheels

# 4. Build (docker format: OCI images drop HEALTHCHECK) ---------------------------------------
step "building $IMAGE from $BASE_IMAGE"
OLD_ID="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2> /dev/null || true)"
podman "${RUNTIME[@]}" build --format docker "${LIMITS[@]}" \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg WHEELHOUSE=wheels -t "$IMAGE" .
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    podman rmi "$OLD_ID" > /dev/null 2>&1 || true  # the previous build, now untagged
fi
SIZE_BYTES="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
step "image $IMAGE: $(podman images --format '{{.Size}}' "$IMAGE") ($SIZE_BYTES bytes)"

# 5. Run and check -----------------------------------------------------------------------------
NAME="pneumonia-check-$$"
trap 'podman "${RUNTIME[@]}" rm -f "$NAME" > /dev/null 2>&1 || true' EXIT
[ -z "$MODEL_FILE" ] || MODEL_SOURCE="$MODEL_SOURCE, MODEL_PATH=models/$MODEL_FILE"
step "running $IMAGE as $NAME on 127.0.0.1:$HOST_PORT (model $MODEL_SOURCE)"
podman "${RUNTIME[@]}" run "${LIMITS[@]}" --name "$NAME" "${RUN_ARGS[@]}" "$IMAGE" > /dev/null

RUNC_VERSION="$(/usr/sbin/runc --version | awk 'NR==1 {print $3}')"
CHECK_ARGS=(--url "http://127.0.0.1:$HOST_PORT" --output "$OUTPUT" --image "$IMAGE"
            --image-size-bytes "$SIZE_BYTES" --base-image "$BASE_IMAGE" --model-source "$MODEL_SOURCE"
            --builder "$(podman --version), runtime runc $RUNC_VERSION, wheelhouse wheels/")
[ -z "$XRAY" ] || CHECK_ARGS+=(--xray "$XRAY")
if ! "$PYTHON" scripts/check_container.py "${CHECK_ARGS[@]}"; then
    echo "Container check failed; the container's log:" >&2
    podman "${RUNTIME[@]}" logs "$NAME" 2>&1 | tail -n 40 >&2
    exit 1
fi
# The image's own HEALTHCHECK, run once by hand (podman schedules it with systemd timers, which
# this machine lacks: `podman run` logs "unable to get systemd connection", harmless here).
if ! podman "${RUNTIME[@]}" healthcheck run "$NAME"; then
    echo "The image's HEALTHCHECK reports the container unhealthy" >&2
    exit 1
fi
"$PYTHON" - "$OUTPUT" <<'PY'
import json, sys
outcome = json.load(open(sys.argv[1]))
outcome["image_healthcheck"] = "healthy (podman healthcheck run)"
open(sys.argv[1], "w").write(json.dumps(outcome, indent=2) + "\n")
PY
step "done: $OUTPUT"
