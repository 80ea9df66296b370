"""Locating and downloading the data set, the image index, the patient-grouped split, class
weights, image decoding and the tf.data input pipeline."""
from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from .common import (
    CLASS_NAMES,
    DATA_ENV_VAR,
    IMAGE_SIZE,
    IMAGE_SUFFIXES,
    JUNK_NAMES,
    KAGGLE_DATASET,
    MAX_IMAGE_PIXELS,
    SPLITS,
    DatasetLayoutError,
    ImageDecodeError,
)


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



def normalised_class_weights(weights: dict[int, float]) -> dict[int, float]:
    """Class weights scaled to sum to 1 (how the original study reported them, e.g. 0.74 / 0.26)."""
    total = sum(weights.values())
    return {k: v / total for k, v in weights.items()}


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
