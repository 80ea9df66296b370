"""Cached features of frozen bases, training precision and training loops."""
from __future__ import annotations

import hashlib
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .common import IMAGE_SHAPE, PIPELINE_VERSION
from .augmentation import (AUGMENTATION, augment_images, draw_augmentation, identity_augmentation, perturb_images,
                           sampling_transforms)
from .pipeline import make_dataset
from .models import CROP_SIZE, _keras, build_scratch_cnn, compile_binary_classifier, output_layer_input


# ----------------------------------------------------------------------------------------------
# Cached features and training
# ----------------------------------------------------------------------------------------------
def extractor_identity(extractor) -> str:
    """sha256 (hex) of what a frozen network computes: its architecture up to the cut (the Keras
    config of every layer, so the centre crop, the preprocessing layer with its mean, and the dtype
    policy of each layer count) and the bytes of its weights.

    Layer and model names do not count (:func:`_name_free_config`): Keras numbers unnamed layers
    (``max_pooling2d_4``, ``add_24``) by how many were built before in the process, so the same
    network would otherwise get a new identity, and recompute its features, on every build."""
    import json

    digest = hashlib.sha256(json.dumps(_name_free_config(extractor), sort_keys=True, default=str).encode())
    for weight in extractor.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def _name_free_config(model) -> dict:
    """``model.get_config()`` with every layer name replaced by the layer's position (``#0``, ``#1``,
    ...) where the config names a layer (a layer's ``name``, ``keras_history`` links, the input and
    output layers), and the model's own name dropped: what the network computes, not what it is called."""
    positions = {layer.name: f"#{i}" for i, layer in enumerate(model.layers)}

    def rename(value):
        return positions.get(value, value) if isinstance(value, str) else value

    def walk(value, key=None):
        if isinstance(value, dict):
            return {k: rename(v) if k == "name" else walk(v, k) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            if key == "keras_history" and value:
                return [rename(value[0]), *value[1:]]
            if key in ("input_layers", "output_layers"):
                value = [[rename(v[0]), *v[1:]] if isinstance(v, (list, tuple)) and v else rename(v) for v in value]
            return [walk(v) for v in value]
        return value

    config = dict(model.get_config())
    config.pop("name", None)
    return walk(config)


def features_cache_key(extractor_id: str, index: pd.DataFrame, view: str = "clean") -> str:
    """Name of a feature cache file: the extractor (:func:`extractor_identity`), the input pipeline
    version, the view of the images (``"clean"``, an augmented view with its seed and settings, a
    validation perturbation) and the content hashes of the images, in order."""
    digest = hashlib.sha256(f"{extractor_id}|{PIPELINE_VERSION}|{view}".encode())
    for value in index["sha256"]:
        digest.update(value.encode())
    return f"{re.sub(r'[^A-Za-z0-9]+', '-', view)[:40]}_{len(index)}_{digest.hexdigest()[:20]}"


BatchTransform = Callable[[np.ndarray, int], np.ndarray]  # (images (B, 224, 224, 3), batch number) -> images


def _load_checked(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The array in ``path`` if it reads back as float32 with exactly ``shape``, else None."""
    try:
        features = np.load(path)
    except (OSError, ValueError, EOFError):
        return None  # truncated or corrupt
    return features if features.dtype == np.float32 and features.shape == shape else None


def cached_features(extractor, index: pd.DataFrame, cache_dir: str | os.PathLike, view: str = "clean",
                    transform: BatchTransform | None = None, batch_size: int = 32,
                    identity: str | None = None) -> tuple[np.ndarray, bool]:
    """Frozen-network outputs float32 (N, ...) of the images in ``index`` (in order), e.g. (N, 6, 6, 512).

    ``view`` names what ``transform`` does to each batch of input images before the network
    (``"clean"``: nothing); batches are transformed in order, so a seeded augmentation gives the same
    view every time. Stored in ``cache_dir`` as ``.npy`` under :func:`features_cache_key`, which
    hashes the extractor's architecture and weights (:func:`extractor_identity`), the view and the
    image contents; a file that does not read back as float32 of the expected shape is recomputed.
    ``identity``: :func:`extractor_identity` of ``extractor`` when the caller has it already (it hashes
    every weight). Returns (features, loaded_from_cache)."""
    identity = identity or extractor_identity(extractor)
    if transform is not None:  # a seeded transform draws per batch: the batch size is part of the view
        view = f"{view}|batch{batch_size}"
    path = Path(cache_dir) / f"{features_cache_key(identity, index, view)}.npy"
    shape = (len(index), *extractor.output_shape[1:])
    if path.is_file() and (features := _load_checked(path, shape)) is not None:
        return features, True
    batches = make_dataset(index["path"].tolist(), batch_size=batch_size, cache=False).as_numpy_iterator()
    features = np.concatenate([
        np.asarray(extractor.predict_on_batch(batch if transform is None else transform(batch, number)), np.float32)
        for number, batch in enumerate(batches)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # one per process: parallel writers never share it
    np.save(tmp, features)
    tmp.replace(path)
    return features, False


def augmented_view(seed: int) -> tuple[str, BatchTransform]:
    """(view name, transform) of one augmented view of whole 224 x 224 images (for a frozen network,
    whose own first layer crops): :func:`augment_images` with parameters drawn for batch ``b`` from seed
    ``[seed, b]``; its settings (:data:`AUGMENTATION`) and code are part of the name, so a change of
    either is a new cache entry."""
    settings = ",".join(f"{k}={v}" for k, v in sorted(AUGMENTATION.items()))
    side = IMAGE_SHAPE[0]

    def transform(batch: np.ndarray, number: int) -> np.ndarray:
        return augment_images(batch, draw_augmentation(np.random.default_rng([seed, number]), len(batch)), side, side)

    digest = _code_digest(draw_augmentation, sampling_transforms, augment_images)
    return f"augment-seed{seed}-{settings}-{digest}", transform


def _code_digest(*parts) -> str:
    """12 hex digits of sha256 over ``parts``: functions by their source code, anything else as JSON, so
    that a change of a view's code or settings (layer order, fill mode, a perturbation's strength) is a
    new cache entry."""
    import inspect
    import json

    digest = hashlib.sha256()
    for part in parts:
        text = inspect.getsource(part) if callable(part) else json.dumps(part, sort_keys=True, default=str)
        digest.update(text.encode())
    return digest.hexdigest()[:12]


def perturbed_view(kind: str) -> tuple[str, BatchTransform]:
    """(view name, transform) of a validation perturbation (:data:`VALIDATION_PERTURBATIONS`); the
    noise of batch ``b`` is drawn with seed ``b``."""
    return f"perturb-{kind}-{_code_digest(perturb_images)}", lambda batch, number: perturb_images(batch, kind, seed=number)


def perturb_in_batches(images: np.ndarray, kind: str, batch_size: int = 32) -> np.ndarray:
    """:func:`perturb_images` of images (N, 224, 224, 3) batch by batch, batch ``b`` with seed ``b``:
    the same pixels :func:`cached_features` feeds a frozen network for the view ``perturbed_view(kind)``."""
    return np.concatenate([perturb_images(images[start:start + batch_size], kind, seed=number)
                           for number, start in enumerate(range(0, len(images), batch_size))])


def frozen_features(extractor, subsets: dict[str, pd.DataFrame], cache_dir: str | os.PathLike,
                    train_views: int = 0, view_seed: int = 0,
                    perturbations: Sequence[str] = ()) -> tuple[dict[str, np.ndarray], float]:
    """Cached outputs of a frozen network for a whole run: each subset clean; for "train" also
    ``train_views`` augmented views (seeds ``view_seed``, ``view_seed + 1``, ...), stacked as
    ``features["train"]`` (1 + train_views, N, ...) with the clean view first; for "val" also each
    perturbation, as ``features["val_<kind>"]``. Returns the features and the seconds spent computing
    (0.0 when all came from the cache)."""
    start, hits, features = time.perf_counter(), [], {}
    # once for every view of every subset; an extractor outside Keras (dlib) carries its own identity
    identity = getattr(extractor, "identity", None) or extractor_identity(extractor)
    for name, frame in subsets.items():
        values, hit = cached_features(extractor, frame, cache_dir, identity=identity)
        hits.append(hit)
        views = [values]
        if name == "train":
            for view in range(train_views):
                label, transform = augmented_view(view_seed + view)
                values, hit = cached_features(extractor, frame, cache_dir, label, transform, identity=identity)
                views.append(values)
                hits.append(hit)
            features[name] = np.stack(views)
        else:
            features[name] = values
        if name == "val":
            for kind in perturbations:
                label, transform = perturbed_view(kind)
                features[f"val_{kind}"], hit = cached_features(extractor, frame, cache_dir, label, transform,
                                                               identity=identity)
                hits.append(hit)
    return features, 0.0 if all(hits) else time.perf_counter() - start


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


def frozen_extractor(build: Callable[[], "keras.Model"], cut: Callable[["keras.Model"], "keras.Model"],
                     policy: str) -> tuple["keras.Model", "keras.Model"]:
    """(model, extractor): ``build()`` in float32, and ``cut`` applied to a second copy built under
    the dtype ``policy`` with the same weights, so the frozen part runs its cached passes in that
    precision while the model that is trained, evaluated and saved stays float32."""
    model = build()
    with dtype_policy(policy):
        fast = build()
    fast.set_weights(model.get_weights())
    return model, cut(fast)


SCRATCH_RECIPE: dict = {  # the scratch CNN's default recipe, the same on every CPU
    "input_size": 128,  # pixels: the 196 px centre crop resized to this side (docs/reproducibility.md: why)
    "batch_size": 32,
    "max_epochs": 12,  # cap; early stopping on validation loss picks the epoch
    "patience": 3,
    "learning_rate": 1e-3,
    "precision": "float32",  # "mixed_bfloat16" is opt-in (bench/check_bf16_accuracy.py)
}


def grey_uint8(images: np.ndarray) -> np.ndarray:
    """Images float32 (N, H, W, 3) in [0, 1] -> uint8 (N, H, W, 1): the mean of the channels, rounded
    (the X-rays are grey; a colour file becomes its grey level)."""
    return np.clip(np.rint(np.asarray(images, np.float32).mean(axis=3, keepdims=True) * 255.0), 0, 255).astype(np.uint8)


def load_grey_images(paths: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """The files in ``paths`` as model inputs (:func:`make_dataset`), held as uint8 grey (N, 224, 224, 1):
    a twelfth of float32 RGB in memory (4,709 training images: 236 MB)."""
    batches = make_dataset(list(paths), batch_size=batch_size, cache=False).as_numpy_iterator()
    return np.concatenate([grey_uint8(batch) for batch in batches])


def cropped_views(images: np.ndarray, input_size: int) -> np.ndarray:
    """What the saved scratch CNN's centre crop and resize make of images (N, 224, 224, C):
    float32 (N, input_size, input_size, 3), computed by the same resampling as the training views."""
    return np.concatenate([augment_images(images[i:i + 64], identity_augmentation(len(images[i:i + 64])), CROP_SIZE,
                                          input_size) for i in range(0, len(images), 64)])


def augmented_batches(grey: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, input_size: int):
    """A ``keras.utils.PyDataset`` of augmented training views: each epoch visits every image once in a
    new order (seed ``[seed, epoch]``); batch ``b`` of epoch ``e`` draws its parameters from seed
    ``[seed, e, b]`` (:func:`draw_augmentation`) and resamples the centre crop to ``input_size`` in one
    pass (:func:`augment_images`): (views float32 (B, input_size, input_size, 3), targets float32 (B,))."""
    keras = _keras()
    targets = np.asarray(targets, np.float32)

    class AugmentedBatches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0
            self.order = np.random.default_rng([seed, 0]).permutation(len(grey))

        def __len__(self):
            return -(-len(grey) // batch_size)

        def __getitem__(self, number):
            rows = np.sort(self.order[number * batch_size:(number + 1) * batch_size])
            params = draw_augmentation(np.random.default_rng([seed, self.epoch, number]), len(rows))
            return augment_images(grey[rows], params, CROP_SIZE, input_size), targets[rows]

        def on_epoch_end(self):
            self.epoch += 1
            self.order = np.random.default_rng([seed, self.epoch]).permutation(len(grey))

    return AugmentedBatches()


def train_scratch_cnn(train_grey: np.ndarray, train_targets: np.ndarray, val_images: np.ndarray,
                      val_targets: np.ndarray, class_weight: dict[int, float], seed: int,
                      recipe: dict | None = None, verbose: int = 0):
    """Train the scratch CNN with ``recipe`` (default :data:`SCRATCH_RECIPE`), class weights and early
    stopping on validation loss, seeded by ``seed`` (weights, order, augmentation).

    ``train_grey``: uint8 (N, 224, 224, 1) (:func:`load_grey_images`); ``val_images``: float32
    (M, 224, 224, 3) in [0, 1]. A network without crop and resize trains on views already cropped and
    resized to ``recipe["input_size"]``; its weights are then copied into the float32 network that has
    them (input 224 x 224 x 3), which is what is returned, evaluated, explained and saved, whatever the
    training precision. Returns (model, result)."""
    recipe = {**SCRATCH_RECIPE, **(recipe or {})}
    size, policy = recipe["input_size"], training_precision(recipe["precision"])
    seed_everything(seed)
    with dtype_policy(policy):
        trained = compile_binary_classifier(build_scratch_cnn(input_size=size, preprocessing=False),
                                            recipe["learning_rate"])
        train = augmented_batches(train_grey, train_targets, recipe["batch_size"], seed, size)
        val = (cropped_views(val_images, size), np.asarray(val_targets, np.float32))
        result = train_with_early_stopping(trained, train, val, class_weight, recipe["max_epochs"], recipe["patience"],
                                           verbose=verbose)
    model = compile_binary_classifier(build_scratch_cnn(input_size=size), recipe["learning_rate"])
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


def _view_sampler(views: np.ndarray, targets: np.ndarray, batch_size: int, seed: int):
    """A ``keras.utils.PyDataset`` over cached views (V, N, ...) and targets (N,): each epoch visits
    every image once, in a new random order, each time in one of its V views drawn at random
    (seeded by ``seed``; the same seed gives the same sequence of batches)."""
    keras = _keras()

    class ViewSampler(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.on_epoch_end()

        def __len__(self):
            return -(-views.shape[1] // batch_size)

        def __getitem__(self, number):
            rows = self.order[number * batch_size:(number + 1) * batch_size]
            return views[self.view[rows], rows], targets[rows]

        def on_epoch_end(self):
            self.order = self.rng.permutation(views.shape[1])
            self.view = self.rng.integers(0, views.shape[0], views.shape[1])

    return ViewSampler()


def train_head_on_cached_features(head, features: dict[str, np.ndarray], targets: dict[str, np.ndarray],
                                  class_weight: dict[int, float], epochs: int, patience: int,
                                  batch_size: int = 16, learning_rate: float = 1e-3, seed: int = 0,
                                  verbose: int = 2) -> TrainingResult:
    """Train a head (or a model's trainable tail) on cached frozen-network outputs.

    ``features["train"]``: views (V, N, ...) of the training images (clean first, then augmented;
    :func:`frozen_features`), of which each epoch shows one per image at random (``seed``);
    ``features["val"]`` (N_val, ...); ``targets`` maps "train" and "val" to (N,) labels. The head,
    whose layers the full model shares, is fit with class weights and early stopping on validation
    loss (best weights restored)."""
    compile_binary_classifier(head, learning_rate)
    train = _view_sampler(features["train"], np.asarray(targets["train"], np.float32), batch_size, seed)
    return train_with_early_stopping(head, train, (features["val"], np.asarray(targets["val"], np.float32)),
                                     class_weight, epochs, patience, verbose=verbose)


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

