"""Check a running app container: post a full-size chest X-ray to its POST /api/predict.

Waits for ``GET /healthz``, posts the X-ray (multipart field ``file``), verifies the answer (HTTP 200,
a label of the two classes, a probability in [0, 1], the model named by /healthz, a Grad-CAM PNG
at the upload's resolution), then posts it ``--repeats`` more times for the warm latency. Writes
what it measured, with the build facts given on the command line, to ``--output`` (JSON). Standard
library only, apart from Pillow for the X-ray's size. Exit status 1 with the reason on failure
(nothing is written then).

    python scripts/check_container.py --url http://127.0.0.1:5001 --output bench/container.json \
        [--xray FILE] [--image NAME --image-size-bytes N --base-image NAME --model-source TEXT --builder TEXT]

scripts/build_container.sh runs it against the image it has just built.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import struct
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ("NORMAL", "PNEUMONIA")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class CheckFailed(Exception):
    """The container did not answer as it should; the message says how."""


def default_xray() -> Path:
    """First test-split original of $CHEST_XRAY_DATA_ROOT/chest_xray_fullsize_sample."""
    root = Path(os.environ.get("CHEST_XRAY_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))
    originals = sorted((root / "chest_xray_fullsize_sample").glob("test/*/*.jpeg"))
    if not originals:
        raise CheckFailed(f"No full-size X-ray found in {root}/chest_xray_fullsize_sample/test/*/ "
                          f"(set CHEST_XRAY_DATA_ROOT or pass --xray)")
    return originals[0]


def wait_healthy(url: str, timeout: float) -> tuple[dict, float]:
    """GET /healthz until it answers 200; returns its JSON and the seconds waited."""
    start = time.perf_counter()
    last_error = "no answer yet"
    while time.perf_counter() - start < timeout:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
                return json.load(response), time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError) as error:
            last_error = f"{type(error).__name__}: {error}"
        time.sleep(2)
    raise CheckFailed(f"{url}/healthz did not answer within {timeout:.0f} s (last: {last_error})")


def post_xray(url: str, data: bytes, filename: str, timeout: float) -> tuple[int, dict, float]:
    """POST ``data`` as multipart field ``file`` to /api/predict: (HTTP status, JSON body, seconds)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/api/predict", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:  # 4xx/5xx: keep the app's JSON error message
        status, payload = error.code, error.read()
    seconds = time.perf_counter() - start
    try:
        return status, json.loads(payload), seconds
    except json.JSONDecodeError:
        raise CheckFailed(f"POST /api/predict answered HTTP {status} with a non-JSON body: {payload[:200]!r}") from None


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise CheckFailed("heatmap_png is not a PNG image")
    return struct.unpack(">II", png[16:24])


def check(args: argparse.Namespace) -> dict:
    url = args.url.rstrip("/")
    xray = Path(args.xray) if args.xray else default_xray()
    data = xray.read_bytes()
    with Image.open(xray) as image:
        xray_size = image.size
    health, startup_wait = wait_healthy(url, args.startup_timeout)

    status, answer, first_seconds = post_xray(url, data, xray.name, args.timeout)
    if status != 200:
        raise CheckFailed(f"POST /api/predict answered HTTP {status}: {answer.get('error', answer)}")
    if answer.get("label") not in CLASS_NAMES:
        raise CheckFailed(f"label {answer.get('label')!r} is not one of {CLASS_NAMES}")
    probability = answer.get("probability")
    if not isinstance(probability, float) or not 0.0 <= probability <= 1.0:
        raise CheckFailed(f"probability {probability!r} is not a number in [0, 1]")
    if answer.get("model") != health.get("model"):
        raise CheckFailed(f"model {answer.get('model')!r} differs from /healthz's {health.get('model')!r}")
    heatmap_size = png_size(base64.b64decode(answer.get("heatmap_png", "")))
    if heatmap_size != xray_size:
        raise CheckFailed(f"Grad-CAM PNG is {heatmap_size}, the upload {xray_size} (width, height)")

    warm = []
    for _ in range(args.repeats):
        status, repeat, seconds = post_xray(url, data, xray.name, args.timeout)
        if status != 200 or repeat.get("probability") != probability:
            raise CheckFailed(f"repeated POST answered HTTP {status}, probability {repeat.get('probability')!r} "
                              f"(first: {probability!r})")
        warm.append(seconds)

    return {
        "measured_at_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "image": args.image,
        "image_size_bytes": args.image_size_bytes,
        "image_size_mb": round(args.image_size_bytes / 1e6, 1) if args.image_size_bytes else None,
        "base_image": args.base_image,
        "builder": args.builder,
        "model": {"name": health.get("model"), "threshold": health.get("threshold"), "source": args.model_source},
        "request": {"endpoint": "POST /api/predict", "xray": "/".join(xray.resolve().parts[-4:]),
                    "xray_bytes": len(data), "xray_width_height": list(xray_size),
                    "true_label": xray.parent.name},
        "response": {"http_status": 200, "label": answer["label"], "probability": probability,
                     "threshold": answer.get("threshold"), "model": answer["model"],
                     "heatmap_png_width_height": list(heatmap_size)},
        "startup_until_healthy_s": round(startup_wait, 1),
        "latency_s": {"first_request": round(first_seconds, 3),
                      "warm_median": round(statistics.median(warm), 3) if warm else None,
                      "warm_requests": len(warm)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:5001", help="the running container (default %(default)s)")
    parser.add_argument("--xray", help="X-ray to post (default: first full-size test original of the data root)")
    parser.add_argument("--output", type=Path, help="JSON file for the outcome (default: print only)")
    parser.add_argument("--repeats", type=int, default=3, help="warm requests after the first (default 3)")
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds to wait for /healthz (600)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per request (180)")
    parser.add_argument("--image", help="image name, recorded as given")
    parser.add_argument("--image-size-bytes", type=int, help="image size as podman reports it, in bytes")
    parser.add_argument("--base-image", help="base image the image was built from, recorded as given")
    parser.add_argument("--model-source", help="where the served model came from, recorded as given")
    parser.add_argument("--builder", help="tools that built it, recorded as given")
    args = parser.parse_args(argv)
    try:
        outcome = check(args)
    except (CheckFailed, OSError) as error:
        print(f"check_container: FAILED: {error}", file=sys.stderr)
        return 1
    text = json.dumps(outcome, indent=2) + "\n"
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
