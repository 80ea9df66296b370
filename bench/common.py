"""Shared helpers of the speed benchmarks (bench/bench_*.py): command-line options, timing,
machine description, and merging entries into bench/results.json.

Every benchmark compares "the original's way" (baselines written here in bench/, as the original
study's notebooks did it) with this project's way, in one run on the same machine, and reports the
median of repeats after a warm-up. An entry of the results file reads

    {"<name>": {"baseline": number or null, "ours": number, "unit": "...",
                "ratio": how many times faster ours is, "notes": "...",
                "measured_at": "YYYY-MM-DDTHH:MM:SSZ" (UTC, when the entry was written),
                "machine": {"cpu": ..., "cores": ..., ...}, "model": "..." or null}}

with one more entry "machine" (CPU model, cores, TensorFlow and Keras versions of the last run).
Entries carry their own date and machine because the benchmarks are re-run one at a time. An entry
whose run date was not stored instead gives "measured_at_source" (e.g. "date of the commit that
recorded it") and "measured_at_commit".
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from pneumonia_cxr import jsonio

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent

DEFAULT_OUTPUT = REPO / "bench" / "results.json"
CLASS_NAMES = ("NORMAL", "PNEUMONIA")


def default_data_root() -> Path:
    """``$CHEST_XRAY_DATA_ROOT``, else ``../shared/data`` beside the repository (as the tests)."""
    return Path(os.environ.get("CHEST_XRAY_DATA_ROOT", REPO.parent / "shared" / "data"))


def base_parser(description: str) -> argparse.ArgumentParser:
    """Options every benchmark takes: --data-root, --output, --quick, --repeats, --warmup."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=default_data_root(),
                        help="folder holding chest_xray_224/ and chest_xray_fullsize_sample/ "
                             "(default: $CHEST_XRAY_DATA_ROOT, else ../shared/data)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="results file to merge the entries into (default: bench/results.json)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and 1 repeat: checks that the script runs, measures nothing")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5, quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up runs (default 1)")
    return parser


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.warmup is None:
        args.warmup = 1
    args.repeats = max(1, args.repeats)
    args.warmup = max(0, args.warmup)
    return args


def class_files(folder: Path, per_class: int | None = None) -> tuple[list[str], list[int]]:
    """Image files of ``folder/{NORMAL,PNEUMONIA}`` sorted as flow_from_directory lists them
    (class folders in order, files by name), optionally the first ``per_class`` of each class;
    returns (paths, targets)."""
    paths, targets = [], []
    for target, label in enumerate(CLASS_NAMES):
        files = sorted(p for p in (folder / label).iterdir()
                       if p.is_file() and not p.name.startswith("."))
        for path in files[:per_class]:
            paths.append(str(path))
            targets.append(target)
    if not paths:
        raise SystemExit(f"No images found in {folder}/{{NORMAL,PNEUMONIA}}")
    return paths, targets


def interleave(paths: list[str], targets: list[int], n: int) -> tuple[list[str], list[int]]:
    """The first ``n`` items taking NORMAL and PNEUMONIA files in turn (both classes in small subsets)."""
    by_class = [[(p, t) for p, t in zip(paths, targets) if t == c] for c in (0, 1)]
    mixed = [item for pair in zip(*by_class) for item in pair]
    mixed += [item for group in by_class for item in group[len(mixed) // 2:]]
    mixed = mixed[:n]
    return [p for p, _ in mixed], [t for _, t in mixed]


def time_runs(function: Callable[[], object], repeats: int, warmup: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``function`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_interleaved(functions: dict[str, Callable[[], object]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Wall seconds of ``repeats`` calls of each function after ``warmup`` untimed rounds, called in
    turn (a round calls every function once, in the order given), so that on a shared machine every
    side sees the same load; returns {name: seconds per timed round}."""
    seconds: dict[str, list[float]] = {name: [] for name in functions}
    for round_number in range(warmup + repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            if round_number >= warmup:
                seconds[name].append(time.perf_counter() - start)
    return seconds


def median(values) -> float:
    return float(statistics.median(values))


def spread(values) -> str:
    """'median (min-max, n runs)' of a list of seconds, for notes."""
    return f"{median(values):.3g} s (min {min(values):.3g}, max {max(values):.3g}, {len(values)} runs)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU model, cores and whether it has native bfloat16 (with the flags that say so), TensorFlow /
    Keras / Python versions, date of the run."""
    import keras
    import tensorflow as tf

    import pneumonia_cxr as pcx

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "usable_cores": usable,
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "gpu": bool(tf.config.list_physical_devices("GPU")),
            "native_bfloat16": pcx.record.cpu_description()["native_bfloat16"],
            "cpu_flags_bfloat16": [f for f in pcx.record.BFLOAT16_FLAGS if f in pcx.record.cpu_description()["flags"]],
            "date": utc_now()}


# The model each benchmark runs (None: no model involved), filled into entries that do not name one.
BENCHMARK_MODELS: dict[str, str | None] = {
    "gradcam_batch_scratch": "scratch CNN (build_scratch_cnn), random weights (seed 0)",
    "gradcam_batch_vgg16": "HED VGG16 transfer (pretrained frozen base, random head)",
    "scratch_epoch": "scratch CNN (build_scratch_cnn)",
    "transfer_epoch": "HED VGG16 transfer (pretrained frozen base + head)",
    "transfer_10_epochs": "HED VGG16 transfer (pretrained frozen base + head)",
    "reproduction_wall_time": "the notebooks' defaults: scratch CNN, face-recognition base (dlib ResNet) and Xception "
                              "transfer, 3 seeds each; HED VGG16 and VGG-Face not run",
    "model_notebook_wall_time": "scratch CNN, HED VGG16 and Xception transfer, 3 seeds each (VGG-Face not run)",
    "grad_cam_notebook_wall_time": "the three saved networks (scratch CNN, HED VGG16, Xception)",
    "reproduction_quick_wall_time": "the notebooks' defaults on the quick subset: scratch CNN 1 seed, Xception transfer 3 seeds "
                                    "(HED VGG16 and VGG-Face not run)",
}


def utc_now() -> str:
    """The current UTC time as ISO 8601 to the second, e.g. ``2026-11-29T12:00:00Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def machine_summary(info: dict) -> dict:
    """The part of :func:`machine_info` stored in every entry: CPU model, cores, usable cores, GPU,
    TensorFlow and Keras versions."""
    keys = ("cpu", "cores", "usable_cores", "gpu", "tensorflow", "keras")
    return {key: info[key] for key in keys if key in info}


def stamp_entry(name: str, entry: dict, machine: dict, measured_at: str) -> dict:
    """``entry`` with ``measured_at``, ``machine`` (:func:`machine_summary`) and ``model`` (from
    :data:`BENCHMARK_MODELS` by ``name``) added where the entry does not give them."""
    defaults = {"measured_at": measured_at, "machine": machine_summary(machine),
                "model": BENCHMARK_MODELS.get(name)}
    stamped = dict(entry)
    for key, value in defaults.items():
        if stamped.get(key) is None:
            stamped[key] = value
    return stamped


def load_average() -> float:
    """The 1-minute load average: runnable processes averaged over a minute (equal to the number of
    cores when all are busy; above it, processes wait for a core)."""
    return os.getloadavg()[0]


def make_entry(baseline: float | None, ours: float, unit: str, higher_is_better: bool, notes: str) -> dict:
    """An entry with ``ratio`` = how many times faster ours is (ours/baseline for rates such as
    images/s, baseline/ours for durations such as seconds)."""
    ratio = None
    if baseline is not None and ours is not None and baseline > 0 and ours > 0:
        ratio = ours / baseline if higher_is_better else baseline / ours
    rounded = (lambda v: None if v is None else float(f"{v:.4g}"))
    return {"baseline": rounded(baseline), "ours": rounded(ours), "unit": unit,
            "ratio": None if ratio is None else round(ratio, 2), "notes": notes}


def merge_results(path: Path, entries: dict, quick: bool = False) -> None:
    """Merge ``entries`` (and a fresh "machine" entry) into the JSON file at ``path``, keeping its
    other entries; each new entry is stamped (:func:`stamp_entry`) with this run's date and machine
    unless it gives its own. Written atomically (temporary file in the same folder, then renamed). The
    benchmarks run one after another (bench/run_all.sh), so there is no lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(path.read_text()) if path.is_file() and path.stat().st_size else {}
    if quick:
        entries = {name: {**entry, "notes": "QUICK RUN (tiny sizes, not a measurement). " + entry["notes"]}
                   for name, entry in entries.items()}
    machine = machine_info()
    results.update({name: stamp_entry(name, entry, machine, machine["date"]) for name, entry in entries.items()})
    results["machine"] = machine
    handle, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(handle, "w") as out:
        out.write(jsonio.dumps(results, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    for name, entry in entries.items():
        print(f"{name}: baseline {entry['baseline']} / ours {entry['ours']} {entry['unit']} "
              f"-> {entry['ratio'] if entry['ratio'] is not None else 'n/a '}x  ({entry['notes']})")
    print(f"written: {path}")


def image_data_generator():
    """The original's ``ImageDataGenerator`` class. Keras 3 dropped it from the public
    ``keras.preprocessing.image``; it lives on as ``keras.src.legacy.preprocessing.image`` (also
    served as ``tf.keras.preprocessing.image.ImageDataGenerator``). Returns (class, where)."""
    try:
        from keras.src.legacy.preprocessing.image import ImageDataGenerator

        return ImageDataGenerator, "keras.src.legacy.preprocessing.image.ImageDataGenerator"
    except ImportError:
        import tensorflow as tf

        return tf.keras.preprocessing.image.ImageDataGenerator, "tf.keras.preprocessing.image.ImageDataGenerator"
