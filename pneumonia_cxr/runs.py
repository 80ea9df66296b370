"""Trained networks and their predictions, cached under a key of everything that made them.

A run (one family, one seed) is trained once: its weights, training record and logits are stored under
``cache/runs/<key>/``, where the key hashes the training code's source, the recipe, the data (content
hashes and labels of the images, in order), the seed and the precision. Re-running a notebook with
nothing changed loads the runs, so findings and wording can be regenerated without retraining and,
because test logits are cached the same way, without a new scoring of the official test set.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .training import TrainingResult

DEFAULT_RUN_CACHE = Path("cache") / "runs"
_DONE = "run.json"


def data_digest(subsets: dict[str, pd.DataFrame]) -> str:
    """sha256 (hex) of the images of each subset, in order: subset name, then each image's content
    hash and label. The same files in another order, or relabelled, give another digest."""
    digest = hashlib.sha256()
    for name in sorted(subsets):
        digest.update(f"|{name}|".encode())
        for sha, label in zip(subsets[name]["sha256"], subsets[name]["target"]):
            digest.update(f"{sha}:{int(label)};".encode())
    return digest.hexdigest()


def run_key(family: str, seed: int, parts: dict, code: Sequence[Callable | type]) -> str:
    """Key (24 hex digits, prefixed by the family and seed) of a run: sha256 over ``parts`` (recipe,
    data digest, precision, feature identity ... as JSON) and the source code of ``code``."""
    digest = hashlib.sha256(json.dumps({"family": family, "seed": seed, **parts}, sort_keys=True, default=str).encode())
    for item in code:
        digest.update(inspect.getsource(item).encode())
    return f"{family}-seed{seed}-{digest.hexdigest()[:24]}"


def _result_record(result: TrainingResult) -> dict:
    return {"history": {k: [float(v) for v in values] for k, values in result.history.items()},
            "best_epoch": result.best_epoch, "seconds": result.seconds, "feature_seconds": result.feature_seconds,
            "precision": result.precision}


def cached_run(cache_dir: str | os.PathLike, key: str, build: Callable[[], "keras.Model"],
               train: Callable[[], tuple["keras.Model", TrainingResult]],
               score: Callable[["keras.Model"], dict[str, np.ndarray]]) -> tuple["keras.Model", TrainingResult, dict, bool]:
    """(net, result, logits, loaded): the run stored under ``key`` when complete, its weights loaded
    into ``build()``; otherwise ``train()`` then ``score(net)`` (a dict of logit arrays, e.g. the
    validation views), stored in one step (written to a temporary folder, then renamed), so an
    interrupted run leaves nothing half-written."""
    folder = Path(cache_dir) / key
    if (folder / _DONE).is_file():
        net = build()
        net.load_weights(folder / "net.weights.h5")
        record = json.loads((folder / _DONE).read_text())
        with np.load(folder / "logits.npz") as stored:
            logits = {name: stored[name] for name in stored.files}
        return net, TrainingResult(**record), logits, True
    net, result = train()
    logits = {name: np.asarray(values, np.float64) for name, values in score(net).items()}
    tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    net.save_weights(tmp / "net.weights.h5")
    np.savez(tmp / "logits.npz", **logits)
    (tmp / _DONE).write_text(json.dumps(_result_record(result), indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return net, result, logits, False


def cached_logits(cache_dir: str | os.PathLike, key: str, name: str,
                  compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """(logits, loaded): the logits ``name`` (e.g. "test") of the run ``key``, computed by ``compute()``
    and stored beside the run the first time, loaded afterwards. Used for the official test set, so that
    a re-run loads its scores and does not count as a new scoring."""
    path = Path(cache_dir) / key / f"{name}.npy"
    if path.is_file():
        return np.load(path), True
    logits = np.asarray(compute(), np.float64)
    tmp = path.with_name(f"{name}.{os.getpid()}.tmp.npy")
    np.save(tmp, logits)
    tmp.replace(path)
    return logits, False
