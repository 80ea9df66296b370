#!/usr/bin/env bash
# Build the app's image with podman, serving the default bundle of models/manifest.json, and soak
# it, on a machine without a Docker engine or Docker Hub (Debian bookworm, run as root):
#   1. installs podman, runc and debootstrap from Debian if missing;
#   2. makes the base image (Debian bookworm + its python3, via debootstrap) if missing;
#   3. reads the manifest of the models folder (every SHA-256 checked) for its default bundle;
#   4. stages a build context in build/container-context/ with the code, the example X-rays and a
#      models/ holding only that bundle and its manifest (scripts/pack_models.py --bundle, then
#      scripts/fetch_models.py), and the wheels of the image's requirements (downloaded on the host
#      into wheels/, the wheelhouse: the build container cannot verify TLS to the package index);
#   5. builds the Dockerfile with BASE_IMAGE=<that base> and WHEELHOUSE=wheels, and measures what
#      takes space in the image;
#   6. runs it and has scripts/check_container.py soak it (300 mixed uploads from 6 clients), which
#      writes the outcome, with the image's facts, to the output JSON.
#
#   bash scripts/build_container.sh [--models DIR] [--image NAME] [--port N] [--base-image NAME]
#                                   [--output JSON]
#
#   --models DIR   folder with manifest.json and its bundles (default: models/ of the repo).
#   --output JSON  default bench/container.json when serving models/ of the repo; for any other
#                  folder (a stand-in model, say) build/container-check.json, never the record.
# Podman uses Debian's runc (crun fails here: "cgroups in hybrid mode not supported") and explicit
# ulimits (else "setrlimit ... Operation not permitted").
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"

MODELS_DIR="$REPO/models"
IMAGE="localhost/pneumonia-gradcam-app:latest"
BASE_IMAGE="localhost/debian-py311:bookworm"
HOST_PORT=5001
OUTPUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --models) MODELS_DIR="$(cd "$2" 2> /dev/null && pwd)" \
                      || { echo "--models: no such folder: $2" >&2; exit 2; }; shift 2 ;;
        --image) IMAGE="$2"; shift 2 ;;
        --base-image) BASE_IMAGE="$2"; shift 2 ;;
        --port) HOST_PORT="$2"; shift 2 ;;
        --output) OUTPUT="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) echo "build_container.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$OUTPUT" ]; then
    if [ "$MODELS_DIR" = "$REPO/models" ]; then OUTPUT="$REPO/bench/container.json"
    else OUTPUT="$REPO/build/container-check.json"; fi
fi
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"  # host Python: manifest, wheels, the soak
RUNTIME=(--runtime /usr/sbin/runc)
LIMITS=(--ulimit nofile=20000:20000 --ulimit nproc=4096:4096)
CONTEXT="$REPO/build/container-context"
step() { echo "== $(date -u +%H:%M:%S) $*"; }
mkdir -p "$REPO/build"

# 3 (first: fail before anything is built). The model: the manifest's default bundle ---------------
DEFAULT_MODEL="$("$PYTHON" -c '
import sys
from pneumonia_cxr.manifest import ManifestError, read_manifest
try:
    print(read_manifest(sys.argv[1])["default"])
except ManifestError as error:
    sys.exit(f"No model to serve: {error}")' "$MODELS_DIR")"
step "serving $DEFAULT_MODEL, the default bundle of $MODELS_DIR/manifest.json"

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

# 4. Build context: the Dockerfile's inputs, models/ with the default bundle only, the wheels ------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || { echo "$PYTHON is not Python 3.11: the wheels must match the image's Python 3.11 (set PYTHON=...)" >&2; exit 1; }
step "downloading the wheels of requirements-app.txt (tensorflow-cpu for tensorflow, as the Dockerfile) into wheels/"
sed 's/^tensorflow==/tensorflow-cpu==/' requirements-app.txt > "$REPO/build/requirements-image.txt"
"$PYTHON" -m pip download --quiet --only-binary=:all: -r "$REPO/build/requirements-image.txt" -d wheels
step "staging the build context in $CONTEXT"
rm -rf "$CONTEXT" && mkdir -p "$CONTEXT/images"
cp -r .dockerignore requirements-app.txt functions_for_grad_cam.py pneumonia_cxr app "$CONTEXT/"
cp images/*example*.png "$CONTEXT/images/"
cp -rl wheels "$CONTEXT/wheels" 2> /dev/null || cp -r wheels "$CONTEXT/wheels"
"$PYTHON" scripts/pack_models.py --models-dir "$MODELS_DIR" --bundle "$DEFAULT_MODEL" \
    --output "$REPO/build/image-models.tar.gz"
"$PYTHON" scripts/fetch_models.py "$REPO/build/image-models.tar.gz" --models-dir "$CONTEXT/models"

# 5. Build (docker format: OCI images drop HEALTHCHECK), then what takes space ------------------
step "building $IMAGE from $BASE_IMAGE"
OLD_ID="$(podman image inspect --format '{{.Id}}' "$IMAGE" 2> /dev/null || true)"
podman "${RUNTIME[@]}" build --format docker "${LIMITS[@]}" -f Dockerfile \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg WHEELHOUSE=wheels -t "$IMAGE" "$CONTEXT"
if [ -n "$OLD_ID" ] && [ "$OLD_ID" != "$(podman image inspect --format '{{.Id}}' "$IMAGE")" ]; then
    podman rmi "$OLD_ID" > /dev/null 2>&1 || true  # the previous build, now untagged
fi
SIZE_BYTES="$(podman image inspect --format '{{.Size}}' "$IMAGE")"
step "image $IMAGE: $(podman images --format '{{.Size}}' "$IMAGE") ($SIZE_BYTES bytes)"
IMAGE_FACTS="$(podman "${RUNTIME[@]}" run --rm "${LIMITS[@]}" --entrypoint python "$IMAGE" -c '
import json, os, shutil, subprocess
def mb(path):
    return round(int(subprocess.run(["du", "-sk", path], capture_output=True, text=True).stdout.split()[0]) / 1024)
site = "/opt/venv/lib/python3.11/site-packages"
packages = sorted(((mb(os.path.join(site, name)), name) for name in os.listdir(site)), reverse=True)[:8]
print(json.dumps({
    "size_breakdown_mb": {"/opt/venv": mb("/opt/venv"), "/srv/pneumonia/models": mb("/srv/pneumonia/models"),
                          "/usr (base)": mb("/usr"), "largest packages": {name: size for size, name in packages}},
    "user": os.getuid(), "compilers_or_pip": [tool for tool in ("gcc", "cc", "strip", "pip") if shutil.which(tool)]}))')"
echo "$IMAGE_FACTS"

# 6. Run and soak ------------------------------------------------------------------------------
NAME="pneumonia-check-$$"
trap 'podman "${RUNTIME[@]}" rm -f "$NAME" > /dev/null 2>&1 || true' EXIT
step "running $IMAGE as $NAME on 127.0.0.1:$HOST_PORT"
podman "${RUNTIME[@]}" run "${LIMITS[@]}" --name "$NAME" -d -p "127.0.0.1:$HOST_PORT:5000" "$IMAGE" > /dev/null
RUNC_VERSION="$(/usr/sbin/runc --version | awk 'NR==1 {print $3}')"
if ! "$PYTHON" scripts/check_container.py --url "http://127.0.0.1:$HOST_PORT" --expect-model "$DEFAULT_MODEL" \
        --container "$NAME" --output "$OUTPUT" --image "$IMAGE" --image-size-bytes "$SIZE_BYTES" \
        --image-facts "$IMAGE_FACTS" --base-image "$BASE_IMAGE" \
        --model-source "default bundle of ${MODELS_DIR#"$REPO"/}/manifest.json, baked into the image" \
        --builder "$(podman --version), runtime runc $RUNC_VERSION, wheelhouse wheels/"; then
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
