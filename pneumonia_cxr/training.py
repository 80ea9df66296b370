"""Cached features of frozen bases, training precision and training loops."""
from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .common import IMAGE_SHAPE, PIPELINE_VERSION
from .data import make_dataset
from .models import _keras, build_scratch_cnn, compile_binary_classifier, feature_extractor


# ----------------------------------------------------------------------------------------------
# Cached features and training
# ----------------------------------------------------------------------------------------------
def features_cache_key(base_name: str, index: pd.DataFrame) -> str:
    """Key of a feature cache: the base and the content hashes of the images, in order."""
    digest = hashlib.sha256(f"{base_name}|{PIPELINE_VERSION}".encode())
    for value in index["sha256"]:
        digest.update(value.encode())
    return f"{base_name}_{len(index)}_{digest.hexdigest()[:16]}"


def cached_features(extractor, index: pd.DataFrame, cache_dir: str | os.PathLike, base_name: str,
                    batch_size: int = 32) -> tuple[np.ndarray, bool]:
    """Frozen-base features (N, 7, 7, 512) float32 of the images in ``index`` (in order).

    Computed once and stored in ``cache_dir`` as ``.npy`` keyed by base and image contents;
    returns (features, loaded_from_cache).
    """
    path = Path(cache_dir) / f"{features_cache_key(base_name, index)}.npy"
    if path.is_file():
        return np.load(path), True
    dataset = make_dataset(index["path"].tolist(), batch_size=batch_size, cache=False)
    features = extractor.predict(dataset, verbose=0).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, features)
    tmp.replace(path)
    return features, False


@dataclass
class TrainingResult:
    """History per epoch (dict of lists), best epoch (1-based, by validation loss), wall seconds
    of fitting, for heads on cached features the seconds spent computing those features
    (0 when all came from the cache), and the Keras dtype policy the training ran in."""

    history: dict
    best_epoch: int
    seconds: float
    feature_seconds: float = 0.0
    precision: str = "float32"


PRECISIONS: tuple[str, ...] = ("auto", "float32", "mixed_bfloat16")


def cpu_has_native_bfloat16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """True when the CPU flags list AMX-BF16 or AVX512-BF16 (bfloat16 matrix instructions, which
    oneDNN uses); False when they are absent or the file cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def training_precision(requested: str = "auto") -> str:
    """The Keras dtype policy to train in: "float32" or "mixed_bfloat16" (bfloat16 compute, float32
    weights). "auto" picks mixed_bfloat16 on a CPU-only machine whose CPU has native bfloat16
    instructions (elsewhere emulated bfloat16 is slower than float32), else float32."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {requested!r}")
    if requested != "auto":
        return requested
    import tensorflow as tf

    native = cpu_has_native_bfloat16() and not tf.config.list_physical_devices("GPU")
    return "mixed_bfloat16" if native else "float32"


@contextmanager
def dtype_policy(name: str):
    """Set Keras' global dtype policy to ``name`` inside the block; the previous one is restored
    on exit, also after an error."""
    keras = _keras()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def train_scratch_cnn(train_data, val_data, class_weight: dict[int, float], epochs: int,
                      patience: int = 3, precision: str = "auto", learning_rate: float = 1e-3,
                      input_shape: tuple[int, int, int] = IMAGE_SHAPE, verbose: int = 2):
    """Build, compile and train the scratch CNN in ``precision`` (see ``training_precision``) with
    class weights and early stopping on validation loss.

    Returns (model, result): the model is a float32 scratch CNN holding the trained weights of the
    best epoch (under mixed_bfloat16 the weights are float32 already; only the computation was
    bfloat16), so evaluation, Grad-CAM and saving never depend on the training precision;
    ``result.precision`` names the policy used.
    """
    policy = training_precision(precision)
    with dtype_policy(policy):
        trained = compile_binary_classifier(build_scratch_cnn(input_shape), learning_rate)
        result = train_with_early_stopping(trained, train_data, val_data, class_weight, epochs, patience,
                                           verbose=verbose)
    model = compile_binary_classifier(build_scratch_cnn(input_shape), learning_rate)
    model.set_weights(trained.get_weights())
    result.precision = policy
    return model, result


def train_with_early_stopping(model, train_data, val_data, class_weight: dict[int, float],
                              epochs: int, patience: int = 3, batch_size: int | None = None,
                              verbose: int = 2) -> TrainingResult:
    """Fit with class weights; keep the epoch of lowest validation loss (weights restored).

    ``train_data``/``val_data`` are tf.data datasets or (x, y) tuples of arrays.
    """
    keras = _keras()
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    arrays = isinstance(train_data, tuple)  # a tf.data dataset shuffles itself
    fit_args = {"x": train_data[0], "y": train_data[1], "batch_size": batch_size} if arrays else {"x": train_data}
    start = time.perf_counter()
    history = model.fit(**fit_args, validation_data=val_data, epochs=epochs, class_weight=class_weight,
                        callbacks=[stop], verbose=verbose, shuffle=arrays)
    seconds = time.perf_counter() - start
    best_epoch = int(np.argmin(history.history["val_loss"])) + 1
    return TrainingResult(history=history.history, best_epoch=best_epoch, seconds=seconds)


def train_head_on_cached_features(model, head, base_name: str, subsets: dict[str, pd.DataFrame],
                                  cache_dir: str | os.PathLike, class_weight: dict[int, float],
                                  epochs: int, patience: int, batch_size: int = 16,
                                  learning_rate: float = 1e-3) -> tuple[TrainingResult, dict[str, np.ndarray]]:
    """Train the head of a frozen-base transfer ``model`` on cached base features.

    ``subsets`` maps "train", "val" (and e.g. "test") to index frames. Features of each are
    computed once with the frozen base (or loaded from ``cache_dir``); the head, whose layers the
    full model shares, is fit on them with class weights and early stopping on validation loss.
    Returns the training result (with ``feature_seconds``) and the features per subset.
    """
    start = time.perf_counter()
    extractor = feature_extractor(model)
    loaded = {name: cached_features(extractor, frame, cache_dir, base_name) for name, frame in subsets.items()}
    features = {name: values for name, (values, _) in loaded.items()}
    extraction_seconds = 0.0 if all(hit for _, hit in loaded.values()) else time.perf_counter() - start
    compile_binary_classifier(head, learning_rate)
    result = train_with_early_stopping(
        head, (features["train"], subsets["train"]["target"].to_numpy(np.float32)),
        (features["val"], subsets["val"]["target"].to_numpy(np.float32)),
        class_weight, epochs, patience, batch_size=batch_size)
    result.feature_seconds = extraction_seconds
    return result, features


def predict_probabilities(model, images, batch_size: int = 32) -> np.ndarray:
    """Probabilities of PNEUMONIA (N,) float64 for a dataset or an array of images / features."""
    return np.asarray(model.predict(images, batch_size=None if hasattr(images, "element_spec") else batch_size,
                                    verbose=0), dtype=np.float64).reshape(-1)
