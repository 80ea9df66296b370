"""Benchmark the app's JSON API behind gunicorn: latency per upload (p50, p95) and throughput,
with 1 and 4 concurrent clients, for a full-size original X-ray and its 224 px copy.

Starts gunicorn with app/gunicorn_conf.py (as the Docker image does) on a free localhost port with
the given model, waits for /healthz, sends a few warm-up requests, then for every (image,
concurrency) sends --requests uploads from that many client threads. Writes a JSON file and prints
a markdown table. Not a test; request counts are bounded.

    .venv/bin/python bench/bench_app.py                      # the default bundle of models/manifest.json
    .venv/bin/python bench/bench_app.py --model models/scratch_cnn.keras --requests 40 --concurrency 1 4 8
    .venv/bin/python bench/bench_app.py --url http://127.0.0.1:5000   # an already running server

The JSON records the date, the model /healthz names, and whether the issue's targets are met
(full-size upload: p50 <= 400 ms with 1 client, p95 <= 2000 ms with 4 clients).

Options: --model (default: as the app chooses: $MODEL_PATH, else the default bundle of
models/manifest.json), --full-image / --small-image (default: the first test-split original of
$CHEST_XRAY_DATA_ROOT/chest_xray_fullsize_sample and its copy in chest_xray_224; data root default
../shared/data beside the repo), --requests per measurement (default 20, at most 500), --warmup
(default 2), --concurrency (default 1 4), --workers / --threads of gunicorn (default 2 / 4),
--timeout per request in seconds (default 120), --output (default bench/app_results.json).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests

from common import cpu_model
from pneumonia_cxr import jsonio

REPO = Path(__file__).resolve().parent.parent
MAX_REQUESTS = 500
STARTUP_TIMEOUT = 300
TARGETS_MS = {(1, "latency_ms_p50"): 400, (4, "latency_ms_p95"): 2000}  # full-size upload: (clients, statistic)


def default_images() -> tuple[Path, Path]:
    root = Path(os.environ.get("CHEST_XRAY_DATA_ROOT", REPO.parent / "shared" / "data"))
    for original in sorted((root / "chest_xray_fullsize_sample").glob("test/*/*")):
        copy = root / "chest_xray_224" / original.relative_to(root / "chest_xray_fullsize_sample")
        if copy.is_file():
            return original, copy
    raise SystemExit(f"No full-size/224 pair found under {root}: pass --full-image and --small-image "
                     f"or set CHEST_XRAY_DATA_ROOT.")


def served_model(model: str | None) -> Path:
    """The .keras file the app would serve for ``model`` (a path or a bundle name of
    models/manifest.json; None: $MODEL_PATH, else the manifest's default)."""
    from app import ModelNotFoundError, resolve_model_path
    from pneumonia_cxr.manifest import ManifestError

    try:
        return resolve_model_path(model)
    except (ModelNotFoundError, ManifestError) as error:
        raise SystemExit(str(error)) from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, workers: int, threads: int, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "MODEL_PATH": str(model.resolve()), "TF_CPP_MIN_LOG_LEVEL": "2", "MALLOC_ARENA_MAX": "2",
           "WEB_CONCURRENCY": str(workers), "GUNICORN_THREADS": str(threads)}  # as the Dockerfile
    command = [sys.executable, "-m", "gunicorn", "-c", "app/gunicorn_conf.py", "--bind", f"127.0.0.1:{port}",
               "--access-logfile", "/dev/null", "app:create_app()"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


def stop_server(process: subprocess.Popen) -> None:
    """Stop gunicorn (the master and its workers: the process group it leads)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_healthy(url: str, process: subprocess.Popen | None) -> dict:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"gunicorn exited with code {process.returncode} (see its log above)")
        try:
            response = requests.get(f"{url}/healthz", timeout=5)
            if response.status_code == 200:
                return response.json()
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url}/healthz not answering after {STARTUP_TIMEOUT} s")


def one_upload(url: str, data: bytes, timeout: float) -> tuple[float, bool]:
    started = time.perf_counter()
    try:
        response = requests.post(f"{url}/api/predict", files={"file": ("upload", data)}, timeout=timeout)
        ok = response.status_code == 200 and "label" in response.json()
    except (requests.RequestException, ValueError):
        ok = False
    return time.perf_counter() - started, ok


def measure(url: str, data: bytes, count: int, clients: int, timeout: float) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: one_upload(url, data, timeout), range(count)))
    wall = time.perf_counter() - started
    latencies = np.array([seconds for seconds, ok in results if ok]) * 1000
    errors = sum(not ok for _, ok in results)
    return {"requests": count, "errors": errors, "concurrency": clients, "wall_s": round(wall, 3),
            "throughput_rps": round((count - errors) / wall, 3),
            "latency_ms_p50": round(float(np.percentile(latencies, 50)), 1) if len(latencies) else None,
            "latency_ms_p95": round(float(np.percentile(latencies, 95)), 1) if len(latencies) else None,
            "latency_ms_mean": round(float(latencies.mean()), 1) if len(latencies) else None}


def targets_met(rows: list[dict]) -> dict:
    """For each target measured (full-size upload): its limit, the value, and whether it is met."""
    met = {}
    for (clients, statistic), limit in TARGETS_MS.items():
        row = next((r for r in rows if r["image"] == "full-size original" and r["concurrency"] == clients), None)
        if row is not None and row[statistic] is not None:
            met[f"full-size {statistic.removeprefix('latency_ms_')} at {clients} client(s)"] = {
                "limit_ms": limit, "value_ms": row[statistic], "met": row[statistic] <= limit}
    return met


def markdown(rows: list[dict]) -> str:
    lines = ["| image | size (px) | upload (KB) | clients | requests | errors | p50 (ms) | p95 (ms) | throughput (req/s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['image']} | {row['size']} | {row['upload_kb']} | {row['concurrency']} | "
                     f"{row['requests']} | {row['errors']} | {row['latency_ms_p50']} | {row['latency_ms_p95']} | "
                     f"{row['throughput_rps']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a .keras file or a bundle name of models/manifest.json (default: as the app chooses)")
    parser.add_argument("--url", help="benchmark a running server at this URL instead of starting gunicorn")
    parser.add_argument("--full-image", type=Path, help="full-size original X-ray")
    parser.add_argument("--small-image", type=Path, help="the same X-ray at 224 x 224")
    parser.add_argument("--requests", type=int, default=20, help="uploads per measurement (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up uploads per image (default 2)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="client threads (default 1 4)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker (default 4)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per request (default 120)")
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "app_results.json")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS or min(args.concurrency) < 1 or max(args.concurrency) > 32:
        parser.error(f"--requests must be in 1..{MAX_REQUESTS} and --concurrency in 1..32")

    if (args.full_image is None) != (args.small_image is None):
        parser.error("give both --full-image and --small-image, or neither")
    full, small = (args.full_image, args.small_image) if args.full_image else default_images()
    from PIL import Image

    images = []
    for label, path in (("full-size original", full), ("224 px copy", small)):
        data = path.read_bytes()
        with Image.open(path) as image:
            size = f"{image.width}x{image.height}"
        images.append({"image": label, "file": path.name, "size": size, "upload_kb": round(len(data) / 1024, 1),
                       "data": data})

    load_before = os.getloadavg()[0]  # other work on the machine skews latency: recorded beside it
    process, log = None, None
    model = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        model = served_model(args.model)
        log = tempfile.NamedTemporaryFile(prefix="bench_gunicorn_", suffix=".log", delete=False)
        print(f"Starting gunicorn ({args.workers} workers x {args.threads} threads) with {model}; log {log.name}",
              file=sys.stderr)
        process, url = start_server(model, args.workers, args.threads, log)
    rows = []
    try:
        health = wait_healthy(url, process)
        for item in images:
            for _ in range(args.warmup * max(1, args.workers)):  # warm up every worker
                one_upload(url, item["data"], args.timeout)
        for item in images:
            for clients in args.concurrency:
                print(f"{item['image']}: {args.requests} uploads, {clients} client(s)...", file=sys.stderr)
                result = measure(url, item["data"], args.requests, clients, args.timeout)
                rows.append({key: value for key, value in item.items() if key != "data"} | result)
    finally:
        if process is not None:
            stop_server(process)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "model": health.get("model"), "model_path": str(model) if model else None,
              "threshold": health.get("threshold"), "url": args.url, "server": None if args.url else
              {"software": "gunicorn (app/gunicorn_conf.py)", "workers": args.workers, "threads": args.threads},
              "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest() if model else None,
              "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version()},
              "load_average_1min_before": round(load_before, 2),
              "requests_per_measurement": args.requests, "warmup_per_image": args.warmup, "results": rows,
              "targets": targets_met(rows)}
    jsonio.write_json(report, args.output)
    print(f"Model {report['model']}, {os.cpu_count()} CPUs" +
          ("" if args.url else f", gunicorn {args.workers} workers x {args.threads} threads") + ":\n")
    print(markdown(rows))
    print(f"\nWritten: {args.output}", file=sys.stderr)
    failed = sum(row["errors"] for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
