"""Soak a running app container with mixed uploads from several clients, and record the outcome.

Waits for ``GET /healthz`` (and checks it names ``--expect-model``), then sends ``--uploads``
(default 300) uploads to ``POST /api/predict`` from ``--clients`` (default 6) threads, in rounds,
cycling through a mix: full-size originals (the test split of the full-size sample), their 224 px
copies, other formats (an RGBA PNG, a 16-bit grey PNG, a 14 MP PNG near the pixel limit) and bad
files (empty, text, random bytes, truncated JPEG, an image over the pixel limit).
Expects no 5xx and no dropped connection; for each X-ray HTTP 200 with a label, a probability, the
served model and a PNG overlay, the same answer every time whichever worker answers; for each bad
file HTTP 400 with a JSON error. With ``--container``, samples the resident memory and CPU time of
the gunicorn processes inside it (``podman exec``) after each round, and expects the memory to level
off (the second half of the soak may add at most ``--memory-growth-limit-mb``) and at least two
workers to have done the work (so that identical answers mean identical across workers). Writes what it measured, with the build facts
given on the command line, to ``--output`` (JSON); when an answer is wrong prints why, writes nothing,
exits 1. The image's requirements (at most 1.5 GB, a non-root user, no compiler or pip) are recorded
with their verdicts under ``requirements``; one not met also exits 1, after writing.

    python scripts/check_container.py --url http://127.0.0.1:5001 --expect-model NAME \
        --container NAME --output bench/container.json [--image NAME --image-size-bytes N ...]

scripts/build_container.sh runs it against the image it has just built. Standard library only,
apart from Pillow to make the over-the-limit image.
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image

from pneumonia_cxr import jsonio

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASS_NAMES = ("NORMAL", "PNEUMONIA")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MIN_RECORDED_UPLOADS = 300
MAX_IMAGE_BYTES = 1.5e9  # the image's size limit (1.5 GB, decimal, as podman reports sizes)
LARGE_SIDE = 3800  # px: a square grey PNG of 14.4 MP, near the app's 16 MP limit
# Resident memory (MB) and CPU time (s) of the container's gunicorn processes: JSON {pid: [MB, s]}.
PROCESS_SCRIPT = """import json, os, pathlib
found = {}
for proc in pathlib.Path('/proc').glob('[0-9]*'):
    try:
        if b'gunicorn' in (proc / 'cmdline').read_bytes():
            rss_kb = int(next(l.split()[1] for l in (proc / 'status').read_text().splitlines() if l.startswith('VmRSS:')))
            ticks = (proc / 'stat').read_text().rsplit(')', 1)[1].split()[11:13]
            found[proc.name] = [round(rss_kb / 1024, 1), round(sum(map(int, ticks)) / os.sysconf('SC_CLK_TCK'), 2)]
    except (OSError, StopIteration):
        pass
print(json.dumps(found))"""


class CheckFailed(Exception):
    """The container did not answer as it should; the message says how."""


@dataclass(frozen=True)
class Upload:
    """One file of the mix: its kind ("full-size", "224 px", "other format", "bad file"), name and bytes."""

    kind: str
    name: str
    data: bytes


def data_root() -> Path:
    return Path(os.environ.get("CHEST_XRAY_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))


def xray_uploads(root: Path) -> list[Upload]:
    """The test split's full-size originals and their 224 px copies."""
    uploads = []
    for original in sorted((root / "chest_xray_fullsize_sample").glob("test/*/*.jpeg")):
        copy = root / "chest_xray_224" / original.relative_to(root / "chest_xray_fullsize_sample")
        for kind, path in (("full-size", original), ("224 px", copy)):
            if path.is_file():
                uploads.append(Upload(kind, "/".join(path.parts[-4:]), path.read_bytes()))
    if not uploads:
        raise CheckFailed(f"No X-ray found in {root}/chest_xray_fullsize_sample/test/*/ (set CHEST_XRAY_DATA_ROOT)")
    return uploads


def other_format_uploads(jpeg: bytes) -> list[Upload]:
    """Valid uploads the app must answer with HTTP 200, made from one X-ray: an RGBA PNG, a 16-bit
    grey PNG (content 1000-3000 of 65535), and a smooth grey PNG of ``LARGE_SIDE`` squared pixels,
    near the pixel limit (so the soak also draws the largest overlays the app accepts)."""
    with Image.open(io.BytesIO(jpeg)) as image:
        grey = image.convert("L")
    uploads = []
    for name, picture in (("RGBA PNG", grey.convert("RGBA")),
                          ("16-bit grey PNG", grey.point(lambda v: 1000 + 8 * v, mode="I").convert("I;16")),
                          (f"{LARGE_SIDE} px PNG", grey.resize((LARGE_SIDE, LARGE_SIDE)))):
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        uploads.append(Upload("other format", name, buffer.getvalue()))
    return uploads


def bad_uploads(jpeg: bytes) -> list[Upload]:
    """Files the app must refuse with HTTP 400."""
    buffer = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buffer, format="PNG")  # 25 MP: over the 16 MP limit, 25 KB
    return [Upload("bad file", "empty", b""),
            Upload("bad file", "text", b"patient: anonymous\nnot an image\n" * 20),
            Upload("bad file", "random bytes", random.Random(0).randbytes(4000)),
            Upload("bad file", "truncated JPEG", jpeg[: len(jpeg) // 3]),
            Upload("bad file", "25 MP PNG", buffer.getvalue())]


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


def post(url: str, upload: Upload, timeout: float) -> tuple[int, dict | None, float]:
    """POST the upload as multipart field ``file`` to /api/predict: (HTTP status or 0 for a dropped
    connection, JSON body or None, seconds)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"upload\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + upload.data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/api/predict", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:  # 4xx/5xx: keep the app's JSON error message
        status, payload = error.code, error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None, time.perf_counter() - start
    try:
        return status, json.loads(payload), time.perf_counter() - start
    except json.JSONDecodeError:
        return status, None, time.perf_counter() - start


def problem(upload: Upload, status: int, answer: dict | None, model: str) -> str | None:
    """What is wrong with one answer, or None."""
    if status == 0 or status >= 500 or answer is None:
        return f"HTTP {status or 'connection dropped'}, body {str(answer)[:200]}"
    if upload.kind == "bad file":
        return None if status == 400 and "error" in answer else f"HTTP {status} (expected 400): {str(answer)[:200]}"
    if status != 200:
        return f"HTTP {status}: {answer.get('error', answer)}"
    if answer.get("label") not in CLASS_NAMES or not 0.0 <= float(answer.get("probability", -1)) <= 1.0:
        return f"label {answer.get('label')!r}, probability {answer.get('probability')!r}"
    if answer.get("model") != model:
        return f"model {answer.get('model')!r}, /healthz says {model!r}"
    png = base64.b64decode(answer.get("heatmap_png", ""))
    if not png.startswith(PNG_SIGNATURE):
        return "heatmap_png is not a PNG"
    return None


def gunicorn_processes(container: str) -> dict[str, list[float]]:
    """{pid: [resident MB, CPU seconds]} of the gunicorn processes in ``container`` (podman exec)."""
    result = subprocess.run(["podman", "exec", container, "python", "-c", PROCESS_SCRIPT], capture_output=True,
                            text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise CheckFailed(f"podman exec {container} failed: {result.stderr.strip()[-300:]}")
    return json.loads(result.stdout)


def soak(args: argparse.Namespace, url: str, model: str) -> dict:
    """Send the uploads in rounds; returns the per-kind results, answers and memory samples."""
    xrays = xray_uploads(data_root())
    first = next(u.data for u in xrays if u.kind == "full-size")
    mix = xrays + other_format_uploads(first) + bad_uploads(first)
    uploads = [mix[i % len(mix)] for i in range(args.uploads)]
    random.Random(0).shuffle(uploads)
    round_size = args.clients * 10
    results, memory = [], []
    with ThreadPoolExecutor(args.clients) as pool:
        for start in range(0, len(uploads), round_size):
            batch = uploads[start:start + round_size]
            results += zip(batch, pool.map(lambda upload: post(url, upload, args.timeout), batch))
            if args.container:
                memory.append({"after_uploads": len(results), "processes": gunicorn_processes(args.container)})
    failures = [f"{upload.name}: {issue}" for upload, (status, answer, _) in results
                if (issue := problem(upload, status, answer, model))]
    answers = defaultdict(set)
    for upload, (status, answer, _) in results:
        if upload.kind != "bad file" and status == 200:
            answers[upload.name].add((answer["label"], round(answer["probability"], 6)))
    differing = {name: sorted(found) for name, found in answers.items() if len(found) > 1}
    if failures or differing:
        raise CheckFailed(f"{len(failures)} bad answers (first: {failures[:3]}); "
                          f"{len(differing)} images with differing answers (first: {list(differing.items())[:2]})")
    return {"results": results, "memory": memory}


def memory_summary(samples: list[dict], limit_mb: float) -> dict:
    """Resident memory per sample, its growth over the second half of the soak, and how many
    gunicorn processes did the work (CPU time over the soak > 1 s).

    Raises:
        CheckFailed: memory grew by more than ``limit_mb`` over the second half, or fewer than two
            processes answered (then identical answers across workers would not have been tested).
    """
    totals = [round(sum(rss for rss, _ in sample["processes"].values()), 1) for sample in samples]
    growth = totals[-1] - totals[len(totals) // 2 - 1] if len(totals) >= 2 else 0.0
    if growth > limit_mb:
        raise CheckFailed(f"gunicorn memory still growing: +{growth:.0f} MB over the soak's second half "
                          f"(limit {limit_mb:.0f} MB; totals {totals})")
    first, last = samples[0]["processes"], samples[-1]["processes"]
    busy = sorted(pid for pid in last if pid in first and last[pid][1] - first[pid][1] > 1.0)
    if len(busy) < 2:
        raise CheckFailed(f"only {len(busy)} gunicorn process(es) did the work: answers across workers untested")
    return {"samples_pid_rss_mb_cpu_s": samples, "total_rss_mb": totals, "second_half_growth_mb": round(growth, 1),
            "second_half_growth_limit_mb": limit_mb, "processes_that_answered": len(busy)}


def by_kind(results: list) -> dict:
    """Uploads, HTTP statuses and latency (p50, p95, ms) per kind of upload."""
    summary = {}
    for kind in ("full-size", "224 px", "other format", "bad file"):
        rows = [(status, seconds) for upload, (status, _, seconds) in results if upload.kind == kind]
        latencies = sorted(seconds * 1000 for _, seconds in rows)
        statuses = defaultdict(int)
        for status, _ in rows:
            statuses[str(status)] += 1
        summary[kind] = {"uploads": len(rows), "http_status": dict(statuses),
                         "latency_ms_p50": round(statistics.median(latencies), 1) if latencies else None,
                         "latency_ms_p95": round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None}
    return summary


def check(args: argparse.Namespace) -> dict:
    url = args.url.rstrip("/")
    health, startup_wait = wait_healthy(url, args.startup_timeout)
    if args.expect_model and health.get("model") != args.expect_model:
        raise CheckFailed(f"/healthz names model {health.get('model')!r}, expected {args.expect_model!r}")
    started = time.perf_counter()
    outcome = soak(args, url, health["model"])
    wall = time.perf_counter() - started
    results = outcome["results"]
    return {
        "measured_at_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "image": args.image, "image_size_bytes": args.image_size_bytes,
        "image_size_mb": round(args.image_size_bytes / 1e6, 1) if args.image_size_bytes else None,
        "image_facts": json.loads(args.image_facts) if args.image_facts else None,
        "base_image": args.base_image, "builder": args.builder,
        "model": {"name": health.get("model"), "threshold": health.get("threshold"), "source": args.model_source},
        "startup_until_healthy_s": round(startup_wait, 1),
        **one_xray(results),
        "soak": {"uploads": len(results), "clients": args.clients, "wall_s": round(wall, 1),
                 "http_5xx": 0, "dropped_connections": 0, "identical_answers_per_image": True,
                 "by_kind": by_kind(results),
                 "worker_memory": memory_summary(outcome["memory"], args.memory_growth_limit_mb)
                 if outcome["memory"] else None},
    }


def image_requirements(outcome: dict, max_bytes: float = MAX_IMAGE_BYTES) -> dict[str, dict]:
    """The image's own requirements, each with the figure it was judged on and whether it is met:
    size at most ``max_bytes``, a non-root user, no compiler or pip (from ``image_facts``)."""
    size, facts = outcome.get("image_size_bytes"), outcome.get("image_facts") or {}
    user, tools = facts.get("user"), facts.get("compilers_or_pip")
    return {f"image size <= {max_bytes / 1e9:.1f} GB": {"measured": size, "met": size is not None and size <= max_bytes},
            "runs as a non-root user": {"measured": user, "met": user is not None and user != 0},
            "no compiler or pip in the image": {"measured": tools, "met": tools == []}}


def one_xray(results: list) -> dict:
    """The soak seen from its first full-size X-ray: request, first answer, first and median
    later latency (the keys scripts/update_readme.py reads)."""
    rows = [(upload, status, answer, seconds) for upload, (status, answer, seconds) in results
            if upload.kind == "full-size"]
    upload, status, answer, first_seconds = rows[0]
    later = [seconds for other, _, _, seconds in rows[1:] if other.name == upload.name]
    with Image.open(io.BytesIO(upload.data)) as image:
        size = list(image.size)
    with Image.open(io.BytesIO(base64.b64decode(answer["heatmap_png"]))) as overlay:
        overlay_size = list(overlay.size)
    return {"request": {"endpoint": "POST /api/predict", "xray": upload.name, "xray_bytes": len(upload.data),
                        "xray_width_height": size, "true_label": upload.name.split("/")[-2]},
            "response": {"http_status": status, "label": answer["label"], "probability": answer["probability"],
                         "threshold": answer.get("threshold"), "model": answer["model"],
                         "heatmap_png_width_height": overlay_size},
            "latency_s": {"first_request": round(first_seconds, 3),
                          "warm_median": round(statistics.median(later), 3) if later else None,
                          "warm_requests": len(later)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:5001", help="the running container (default %(default)s)")
    parser.add_argument("--expect-model", help="model name /healthz must report (the manifest's default)")
    parser.add_argument("--container", help="podman container name: sample its gunicorn memory after each round")
    parser.add_argument("--uploads", type=int, default=MIN_RECORDED_UPLOADS, help="uploads in all (default 300)")
    parser.add_argument("--clients", type=int, default=6, help="concurrent clients (default 6)")
    parser.add_argument("--memory-growth-limit-mb", type=float, default=100,
                        help="largest memory growth allowed over the soak's second half (default 100 MB)")
    parser.add_argument("--output", type=Path, help="JSON file for the outcome (default: print only)")
    parser.add_argument("--startup-timeout", type=float, default=600, help="seconds to wait for /healthz (600)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per request (180)")
    parser.add_argument("--image", help="image name, recorded as given")
    parser.add_argument("--image-size-bytes", type=int, help="image size as podman reports it, in bytes")
    parser.add_argument("--image-facts", help="JSON object of facts about the image (what takes space, its "
                        "user...), recorded as given")
    parser.add_argument("--base-image", help="base image the image was built from, recorded as given")
    parser.add_argument("--model-source", help="where the served model came from, recorded as given")
    parser.add_argument("--builder", help="tools that built it, recorded as given")
    args = parser.parse_args(argv)
    if args.output and args.uploads < MIN_RECORDED_UPLOADS:
        parser.error(f"a recorded soak needs --uploads >= {MIN_RECORDED_UPLOADS}")
    try:
        outcome = check(args)
    except (CheckFailed, OSError) as error:
        print(f"check_container: FAILED: {error}", file=sys.stderr)
        return 1
    outcome["requirements"] = image_requirements(outcome)
    text = jsonio.dumps(outcome, indent=2) + "\n"
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    unmet = [name for name, verdict in outcome["requirements"].items() if not verdict["met"]]
    if unmet:
        print(f"check_container: FAILED: requirement(s) not met, recorded in the output: {'; '.join(unmet)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
