"""The record of a model run (``results/metrics.json``): machine, data, training settings, every family's
validation and test results, and the test protocol with every scoring of the official test set."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Sequence

import pandas as pd



BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_description(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict:
    """The CPU a run ran on: ``model`` (the "model name" line), ``flags`` (sorted), ``native_bfloat16``
    (AVX512-BF16 or AMX-BF16 present), ``cores`` (``os.cpu_count()``). Model "unknown" and no flags where
    the file cannot be read (not Linux)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        lines = Path(cpuinfo).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags.update(value.split())
    return {"model": model, "cores": os.cpu_count(), "native_bfloat16": bool(flags & set(BFLOAT16_FLAGS)),
            "flags": sorted(flags)}


def images_digest(subsets: dict[str, pd.DataFrame]) -> str:
    """sha256 (hex) of the ordered list of the images' content hashes, subset by subset in the order
    train, val, test: two runs on the same images in the same split have the same digest."""
    digest = hashlib.sha256()
    for name in ("train", "val", "test"):
        if name in subsets:
            digest.update(f"|{name}|".encode())
            digest.update("\n".join(subsets[name]["sha256"]).encode())
    return digest.hexdigest()


def _git(*args: str) -> str:
    """What ``git <args>`` prints (stripped), or "unknown" outside a git checkout or where it prints nothing."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip() or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def git_commit() -> str:
    """Short hash of HEAD, or "unknown" outside a git checkout."""
    return _git("rev-parse", "--short", "HEAD")


def git_describe() -> str:
    """``git describe --always --dirty`` of the checkout (the code a run started from), or "unknown"."""
    return _git("describe", "--always", "--dirty")


def dataset_record(subsets: dict[str, pd.DataFrame], split_seed: int) -> dict:
    """Counts of the run's subsets, how they were split, and :func:`images_digest`."""
    y_test = subsets["test"]["target"].to_numpy()
    return {"test_n": len(y_test), "test_normal": int((y_test == 0).sum()), "test_pneumonia": int((y_test == 1).sum()),
            "train_n": len(subsets["train"]), "val_n": len(subsets["val"]),
            "split": f"patient-grouped stratified re-split of official train+val (10% validation, seed {split_seed}); "
                     "official test untouched",
            "images_sha256": images_digest(subsets)}


def scoring_history(previous: dict, entries: dict[str, dict], new_scoring: bool, scored_at: str, run_describe: str,
                    quick: bool, note: str) -> list[dict]:
    """The protocol's list of test scorings: the previous record's, plus this run's when it computed
    test logits (``new_scoring``); a run that loaded every test logit from the run cache scored nothing."""
    history = list(previous.get("protocol", {}).get("history", []))
    if new_scoring:
        history.append({"scored_at": scored_at, "code_commit": git_commit(), "run_started_describe": run_describe,
                        "published": not quick, "quick": quick, "what_changed": note or "re-run (no change recorded)",
                        "results": {name: {"accuracy": round(e["test"]["accuracy"], 3), "roc_auc": round(e["test"]["roc_auc"], 3)}
                                    for name, e in entries.items() if "test" in e}})
    return history


def previous_record(path: str | os.PathLike) -> dict:
    """The record at ``path``, or {} where there is none yet."""
    return json.loads(Path(path).read_text()) if Path(path).is_file() else {}


def metrics_record(*, subsets: dict[str, pd.DataFrame], split_seed: int, machine: str, quick: bool, served: str,
                   saved_seed: int, served_record: dict, served_val_loss: float, training: dict, status: dict[str, str],
                   entries: dict[str, dict], members: Sequence[str], selection_rule: Sequence[str],
                   chosen_on_validation: Sequence[str], run_describe: str, run_started_at: str,
                   history: list[dict], paired_tests: Sequence[dict] = (),
                   single_network_tests: Sequence[dict] = ()) -> dict:
    """``results/metrics.json`` of a run: data, machine (with :func:`cpu_description`), the served network,
    training settings, every family's record (status, per-seed and seed-ensemble validation and test
    results), the paired tests between models on the test images (``paired_tests``: exact McNemar, one
    dict per pair with ``a`` and ``b`` named), the same test between single networks
    (``single_network_tests``, :func:`pneumonia_cxr.evaluation.single_network_tests`) and the protocol (the
    rule, what was chosen on validation, every scoring)."""
    models = {name: {"status": status.get(name, "ok")} for name in status}
    for name, entry in entries.items():
        models.setdefault(name, {}).update(entry)
    if "ensemble" not in entries:
        models["ensemble"] = {"status": f"not kept: the validation rule chose one family ({members[0]})"}
    return {
        "dataset": dataset_record(subsets, split_seed),
        "machine": machine, "cpu": cpu_description(), "quick": quick, "app_default": served,
        "served": {"name": served, "seed": saved_seed, "test": served_record["test"], "val_pooled_log_loss": served_val_loss},
        "training": training,
        "models": models,
        "paired_tests": list(paired_tests),
        "single_network_tests": list(single_network_tests),
        "protocol": {"selection_rule": list(selection_rule), "run_started_describe": run_describe,
                     "run_started_at": run_started_at, "chosen_on_validation": list(chosen_on_validation),
                     "test_scorings": sum(1 for h in history if h["published"] and not h.get("quick")),
                     "history": history},
    }

