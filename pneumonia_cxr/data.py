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
    IMAGE_SHAPE,
    IMAGE_SIZE,
    IMAGE_SUFFIXES,
    JUNK_NAMES,
    KAGGLE_DATASET,
    MAX_IMAGE_PIXELS,
    PIPELINE_VERSION,
    SPLITS,
    DatasetLayoutError,
    ImageDecodeError,
    file_sha256,
)


# ----------------------------------------------------------------------------------------------
# Locating and downloading the data set
# ----------------------------------------------------------------------------------------------
class DatasetDownloadError(RuntimeError):
    """The data set could not be downloaded; the message says how to provide it instead."""


def download_dataset() -> Path:
    """Download the Kaggle data set with kagglehub (public, no account needed); return its path.

    Raises:
        DatasetDownloadError: when the download fails (no internet), saying how to provide the data.
    """
    try:
        import kagglehub

        return Path(kagglehub.dataset_download(KAGGLE_DATASET))
    except Exception as error:  # kagglehub raises many kinds of network errors
        raise DatasetDownloadError(
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


def print_data_dir(data_dir: str | os.PathLike | None = None) -> int:
    """Command-line form of :func:`resolve_data_dir` (used by scripts/reproduce.sh): print the data
    set root and return 0, or print only the error's message (no traceback) to stderr and return 1
    when the data cannot be found or downloaded. Other errors propagate with their traceback."""
    import sys

    try:
        print(resolve_data_dir(data_dir))
    except (DatasetLayoutError, DatasetDownloadError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


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


def build_index(root: str | os.PathLike, splits: Sequence[str] = SPLITS) -> pd.DataFrame:
    """Index every file of the given splits, one row per file (by split, class, then file name).

    Columns: path (str), split, label (class name), target (0 NORMAL / 1 PNEUMONIA), filename,
    patient_id, width and height (pixels), channels, file_bytes, sha256, problem ("" when the
    file is a readable image). Unreadable and non-image files stay in the index with their
    problem, so counts never lose them; :func:`readable` selects the usable rows. A split left
    out of ``splits`` is not opened at all (a validation-only run passes ``("train", "val")`` so
    that no test image is read).
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; the data set has {list(SPLITS)}")
    root = find_dataset_root(root)
    rows = []
    for split in splits:
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
# Upload formats: those Pillow decodes to an image of the size its header states. Container formats
# (ICO, ICNS, ...) state one size and may decode a bigger embedded image, past the pixel cap.
UPLOAD_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "GIF", "WEBP")
# Largest long side / short side accepted: chest X-rays are about 1 to 2. Antialiased resizing to
# 224 x 224 allocates about 224 x the long side x 3 floats, 43 GB for a 1 x 16,000,000 image.
MAX_ASPECT_RATIO = 8


def decode_image_bytes(data: bytes, source: str = "image") -> np.ndarray:
    """Decode image bytes of any common mode into a uint8 RGB array (H, W, 3).

    PNG, JPEG, TIFF, BMP, GIF and WebP (``UPLOAD_FORMATS``) are accepted, judged from the content,
    not a name; grayscale, RGB, RGBA (alpha dropped onto black), palette, CMYK and 16-bit or 32-bit
    images (the latter scaled by their actual range, min to max); EXIF orientation is applied.

    Raises:
        ImageDecodeError: empty, truncated, corrupt, non-image, other-format, oversized
        (> MAX_IMAGE_PIXELS) or elongated (> MAX_ASPECT_RATIO) input; the message names ``source``
        and the problem. Size and shape are checked from the header, before the pixels are decoded,
        and again after.
    """
    if not data:
        raise ImageDecodeError(f"{source}: the file is empty")
    return _to_rgb_uint8(_open_image(data, source))


def _open_image(data: bytes, source: str) -> Image.Image:
    """The decoded, EXIF-oriented PIL image of ``data``; ImageDecodeError for anything the bytes cause.

    Thread-safe: no warning filters are changed; Pillow's own decompression-bomb limit (about 179 MP)
    only matters for images far over ours, which are refused either way."""
    try:
        image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
        _check_size(image.width, image.height, source)  # from the header: nothing decoded yet
        image.load()
        _check_size(image.width, image.height, source)  # in case a decoder found more pixels
        ImageOps.exif_transpose(image, in_place=True)
        return image
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{source}: not an image of an accepted format (content not recognised; "
                               f"accepted: {', '.join(UPLOAD_FORMATS)})") from None
    except Image.DecompressionBombError:  # Pillow's check, in open() before ours for > ~179 MP
        raise ImageDecodeError(f"{source}: image too large (a decompression bomb); {_pixel_limit()}") from None
    except MemoryError:  # the server's shortage, not the input's fault
        raise
    except Exception as error:  # all else Pillow raises on malformed bytes: OSError, struct.error, EOFError, ...
        raise ImageDecodeError(f"{source}: corrupt, truncated or unsupported image "
                               f"({type(error).__name__}: {error})") from None


def _pixel_limit() -> str:
    """The pixel cap, as error messages state it."""
    return (f"at most {MAX_IMAGE_PIXELS / 1e6:g} megapixels ({MAX_IMAGE_PIXELS:,} pixels) are accepted, "
            f"chest X-rays need far fewer")


def _check_size(width: int, height: int, source: str) -> None:
    """ImageDecodeError naming the size and the limit when width x height > MAX_IMAGE_PIXELS or the
    long side is more than MAX_ASPECT_RATIO times the short side."""
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageDecodeError(f"{source}: image too large ({width}x{height} = "
                               f"{width * height / 1e6:.1f} megapixels; {_pixel_limit()})")
    long_side, short_side = max(width, height), min(width, height)
    if long_side > MAX_ASPECT_RATIO * short_side:
        raise ImageDecodeError(
            f"{source}: image too elongated ({width}x{height}: long side / short side = "
            f"{long_side / max(short_side, 1):,.1f}; at most {MAX_ASPECT_RATIO} is accepted, "
            f"chest X-rays are about 1 to 2)")


def _to_rgb_uint8(image: Image.Image) -> np.ndarray:
    """PIL image of any mode -> uint8 RGB array (H, W, 3); 16-bit, 32-bit and float images are
    scaled by their actual range (min -> 0, max -> 255; a constant image -> 0)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        low, high = image.getextrema()
        grey = np.asarray(image, dtype=np.float32)
        grey -= low
        grey *= 255.0 / (high - low) if high > low else 0.0
        grey += 0.5
        return np.repeat(grey.astype(np.uint8)[:, :, None], 3, axis=2)
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
    # from uint8 directly: the same values as from float32, without a full-size float32 copy
    resized = tf.image.resize(images, IMAGE_SIZE, method="bilinear", antialias=True)
    return tf.clip_by_value(resized / 255.0, 0.0, 1.0)


def load_image_for_model(data: bytes, source: str = "image",
                         display_max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Bytes -> (original uint8 RGB (H, W, 3), model input float32 (1, 224, 224, 3) in [0, 1]).

    The model input is always made from the full-resolution decode. ``display_max_side`` shrinks
    the returned original (aspect ratio kept) to at most that many pixels on its long side, for
    showing and drawing on it at a bounded cost.
    """
    original = decode_image_bytes(data, source)
    model_input = np.asarray(preprocess_pixels(original[None]))
    if display_max_side is not None and max(original.shape[:2]) > display_max_side:
        original = shrink_image(original, display_max_side)
    return original, model_input


def shrink_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """uint8 image (H, W, 3) shrunk, aspect ratio kept, to at most ``max_side`` pixels on its long
    side (Pillow's thumbnail: a cheap integer reduce, then an antialiased bilinear resample)."""
    thumbnail = Image.fromarray(image)
    thumbnail.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(thumbnail)


def _decode_rgb(data):
    """Encoded image bytes (scalar tf.string) -> uint8 RGB (H, W, 3), as ``tf.io.decode_image``."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def _decode_grey_or_rgb(data):
    """Encoded image bytes (scalar tf.string) -> uint8 (H, W, 1) for a 1-component (grey) JPEG, as
    most full-size X-rays are, else RGB (H, W, 3) as ``tf.io.decode_image(channels=3)``. Repeated into
    three channels, the grey decode is the RGB decode exactly; it saves the colour conversion and a
    third of the resizing."""
    import tensorflow as tf

    def components():
        return tf.io.extract_jpeg_shape(data)[2]

    grey_jpeg = tf.cond(tf.io.is_jpeg(data), components, lambda: tf.constant(3)) == 1
    image = tf.cond(grey_jpeg, lambda: tf.io.decode_jpeg(data, channels=1), lambda: _decode_rgb(data))
    image.set_shape([None, None, None])
    return image


def _is_grey(image):
    """True (scalar tf.bool) when the channels of an image (H, W, C) are all equal."""
    import tensorflow as tf

    return tf.reduce_all(tf.equal(image[:, :, :1], image))


def _resize_unscaled(image):
    """uint8 image (H, W, C) -> float32 (224, 224, C) with values in [0, 255], resized as
    :func:`preprocess_pixels` resizes (bilinear, antialias); an image already 224 x 224 is only cast
    (the resize is then the identity, bit for bit, and skipping it saves most of the time)."""
    import tensorflow as tf

    def resize():  # from uint8 directly: the same values as from float32, without the full-size copy
        return tf.image.resize(image, IMAGE_SIZE, method="bilinear", antialias=True)

    same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], IMAGE_SIZE))
    resized = tf.cond(same_size, lambda: tf.cast(image, tf.float32), resize)
    return tf.ensure_shape(resized, [*IMAGE_SIZE, None])


def _to_rgb(image):
    """(…, H, W, 1 or 3) -> (…, H, W, 3): grey repeated into the three channels, RGB unchanged."""
    import tensorflow as tf

    shape = tf.concat([tf.shape(image)[:-1], [3]], axis=0)
    return tf.broadcast_to(image, shape)


def _read_for_model(path):
    """File path (scalar tf.string) -> model input float32 (224, 224, 3) in [0, 1]; the same values as
    ``preprocess_pixels(tf.io.decode_image(file, channels=3))``."""
    import tensorflow as tf

    resized = _resize_unscaled(_decode_grey_or_rgb(tf.io.read_file(path)))
    return tf.ensure_shape(_to_rgb(tf.clip_by_value(resized / 255.0, 0.0, 1.0)), IMAGE_SHAPE)


# ----------------------------------------------------------------------------------------------
# Persistent cache of decoded, resized images
# ----------------------------------------------------------------------------------------------
DECODED_CACHE_ENV_VAR = "CHEST_XRAY_DECODED_CACHE"
DEFAULT_DECODED_CACHE_DIR = Path("cache") / "decoded"  # from the repository root: git-ignored cache/decoded/
_ENTRY_MAGIC = b"CXRDEC1\n"  # 8 bytes: file format of an entry, version 1
_ENTRY_HEADER_BYTES = 32  # magic, int32 LE height, width, channels, payload bytes, farmhash64 (8)
_ENTRY_SUFFIX = ".u8"


def decoded_cache_folder(cache_dir: str | os.PathLike) -> Path:
    """Folder of the entries under ``cache_dir`` for this preprocessing: named after
    ``PIPELINE_VERSION`` and the image size, so a change of either starts a new, empty folder."""
    tag = re.sub(r"[^A-Za-z0-9._-]", "_", f"{PIPELINE_VERSION}-{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}-uint8")
    return Path(cache_dir) / tag


def decoded_cache_entry(folder: str | os.PathLike, sha256: str) -> Path:
    """Entry file of the image whose file content has the hex SHA-256 ``sha256``, in ``folder``
    (from :func:`decoded_cache_folder`): ``folder/ab/abcdef….u8``."""
    return Path(folder) / sha256[:2] / f"{sha256}{_ENTRY_SUFFIX}"


def decoded_cache_entries(paths: Sequence[str], cache_dir: str | os.PathLike) -> list[Path]:
    """Entry file per image of ``paths`` (in order), keyed by the content of the file (SHA-256) and
    the preprocessing version: the same bytes under two names share one entry, and a file whose
    content changed gets a new one. Hashes the files on a few threads (about 0.1 s per 1,000 files
    of the 224 px set); creates nothing."""
    from concurrent.futures import ThreadPoolExecutor

    folder = decoded_cache_folder(cache_dir)
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        digests = list(pool.map(file_sha256, [str(p) for p in paths]))
    return [decoded_cache_entry(folder, digest) for digest in digests]


def _entry_bytes(channels) -> int:
    """Size in bytes of an entry file of a 224 x 224 image with ``channels`` (1 or 3)."""
    return _ENTRY_HEADER_BYTES + IMAGE_SIZE[0] * IMAGE_SIZE[1] * channels


def _parse_entries(raw, channels):
    """Entry files' bytes (tf.string (B,)) expected to hold ``channels`` (1 or 3) -> (valid bool (B,),
    images uint8 (B, 224, 224, channels)).

    Valid means: the expected length, the magic, the header's shape and payload length, and the
    payload's farmhash64 all match. Never fails on a short or garbled file (it is then not valid and
    its image is garbage, never to be used).
    """
    import tensorflow as tf

    length = _entry_bytes(channels)
    data = tf.io.decode_raw(raw, tf.uint8, fixed_length=length)  # (B, length), cut or zero-padded
    header = tf.reshape(tf.cast(data[:, 8:24], tf.int64), [-1, 4, 4])
    fields = tf.reduce_sum(header * tf.constant([1, 1 << 8, 1 << 16, 1 << 24], tf.int64), axis=2)
    payload = data[:, _ENTRY_HEADER_BYTES:]
    expected = tf.stack([tf.constant(IMAGE_SIZE[0], tf.int64), tf.constant(IMAGE_SIZE[1], tf.int64),
                         tf.cast(channels, tf.int64), tf.cast(length - _ENTRY_HEADER_BYTES, tf.int64)])
    valid = (tf.equal(tf.strings.length(raw), length)
             & tf.reduce_all(tf.equal(data[:, :len(_ENTRY_MAGIC)], list(_ENTRY_MAGIC)), axis=1)
             & tf.reduce_all(tf.equal(fields, expected), axis=1)
             & tf.reduce_all(tf.equal(tf.fingerprint(payload), data[:, 24:_ENTRY_HEADER_BYTES]), axis=1))
    return valid, tf.reshape(payload, tf.stack([-1, IMAGE_SIZE[0], IMAGE_SIZE[1], channels]))


def _fingerprint(payload):
    """farmhash64 of a uint8 vector (n,) -> uint8 (8,) (TensorFlow's ``tf.fingerprint``)."""
    import tensorflow as tf

    return tf.reshape(tf.fingerprint(tf.expand_dims(payload, 0)), [8])


def _as_bytes(value) -> bytes:
    """A string tensor's value as ``tf.numpy_function`` passes it (bytes in a graph, a 0-d object
    array when run eagerly) -> bytes."""
    return value.item() if isinstance(value, np.ndarray) else value


def _write_entry(folder: bytes, source_bytes: bytes, image: np.ndarray, fingerprint: np.ndarray) -> np.ndarray:
    """Write one entry atomically (temporary file in the same folder, then ``os.replace``) under the
    SHA-256 of ``source_bytes`` (the bytes actually decoded, so an entry never holds the pixels of
    other content). ``image`` uint8 (224, 224, C); returns the bytes written as int64."""
    import tempfile

    folder, source_bytes = _as_bytes(folder), _as_bytes(source_bytes)
    path = decoded_cache_entry(folder.decode(), hashlib.sha256(source_bytes).hexdigest())
    height, width, channels = image.shape
    header = (_ENTRY_MAGIC + np.array([height, width, channels, image.size], "<i4").tobytes()
              + np.asarray(fingerprint, np.uint8).tobytes())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "wb") as out:
            out.write(header + np.ascontiguousarray(image, np.uint8).tobytes())
        os.replace(tmp, path)
    except OSError as error:
        raise OSError(f"decoded cache: could not write {path} ({error})") from None
    return np.int64(len(header) + image.size)


def _quantise_grey_aware(resized):
    """float32 (224, 224, C) in [0, 255] -> uint8 rounded, (224, 224, 1) when the channels are equal
    (grey), else (224, 224, 3)."""
    import tensorflow as tf

    image = tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)
    return tf.cond(_is_grey(image), lambda: image[:, :, :1], lambda: image)


def _build_entry(source, folder):
    """Decode the file ``source`` (scalar tf.string), resize to 224 x 224, round to uint8 and store it
    in the cache ``folder`` (scalar tf.string); returns uint8 (224, 224, 1 or 3)."""
    import tensorflow as tf

    data = tf.io.read_file(source)
    image = _quantise_grey_aware(_resize_unscaled(_decode_grey_or_rgb(data)))
    written = tf.numpy_function(_write_entry, [folder, data, image, _fingerprint(tf.reshape(image, [-1]))],
                                tf.int64, stateful=True)
    with tf.control_dependencies([written]):
        return tf.identity(image)


def _rebuild_invalid(sources, images, valid, folder):
    """``images`` uint8 (B, 224, 224, C) with each image whose entry was not valid decoded again from
    its source and its entry rewritten (run eagerly, in a ``tf.py_function``: rare)."""
    import tensorflow as tf

    images = images.numpy().copy()
    for i in np.flatnonzero(~valid.numpy()):
        rebuilt = _build_entry(sources[i], folder).numpy()
        if rebuilt.shape != images[i].shape:
            raise ValueError(f"decoded cache: {sources[i].numpy().decode()} changed channels while being "
                             f"read ({images[i].shape} expected, {rebuilt.shape} now); read it again")
        images[i] = rebuilt
    return tf.constant(images)


def _entries_or_rebuild(sources, raw, channels, folder):
    """uint8 (B, 224, 224, ``channels``) of images from their entries' bytes ``raw`` (tf.string (B,));
    a corrupt or truncated entry is never used: that image is decoded from ``sources`` and rewritten.
    (The rebuild is one ``tf.py_function``: a large untaken branch would slow every batch down.)"""
    import tensorflow as tf

    valid, images = _parse_entries(raw, channels)
    fixed = tf.cond(tf.reduce_all(valid), lambda: images,
                    lambda: tf.py_function(_rebuild_invalid, [sources, images, valid, folder], tf.uint8))
    return tf.ensure_shape(fixed, images.shape)


def _entry_channels(entry: Path) -> int | None:
    """Channels (1 or 3) of the entry file by its size, None when it is missing or of no entry's
    size (cheap: the content is checked when it is read)."""
    try:
        payload = entry.stat().st_size - _ENTRY_HEADER_BYTES
    except OSError:
        return None
    pixels = IMAGE_SIZE[0] * IMAGE_SIZE[1]
    return {pixels: 1, 3 * pixels: 3}.get(payload)


def fill_decoded_cache(paths: Sequence[str], cache_dir: str | os.PathLike) -> list[Path]:
    """Entry file per image of ``paths`` (in order; :func:`decoded_cache_entries`), after decoding
    and writing, in parallel on all cores, the images whose entry is missing or of a wrong size."""
    import tensorflow as tf

    entries = decoded_cache_entries(paths, cache_dir)
    missing = {str(entry): str(path) for path, entry in zip(paths, entries) if _entry_channels(entry) is None}
    if missing:
        folder = str(decoded_cache_folder(cache_dir))
        builds = tf.data.Dataset.from_tensor_slices(list(missing.values())).map(
            lambda source: tf.shape(_build_entry(source, folder)), num_parallel_calls=tf.data.AUTOTUNE)
        for _ in builds.prefetch(tf.data.AUTOTUNE):
            pass
    return entries


def read_decoded_entry(path: str | os.PathLike) -> np.ndarray | None:
    """The image stored in a decoded-cache entry, uint8 (224, 224, 1 or 3), or None when the file is
    missing, truncated or corrupt (checked as the pipeline checks it)."""
    import tensorflow as tf

    channels = _entry_channels(Path(path))
    if channels is None:
        return None
    valid, images = _parse_entries(tf.io.read_file(str(path))[None], channels)
    return images.numpy()[0] if bool(valid[0]) else None


def _resolve_decoded_cache(decoded_cache_dir: str | os.PathLike | bool | None) -> Path | None:
    """The cache folder to use: ``decoded_cache_dir``; when None, ``$CHEST_XRAY_DECODED_CACHE`` if set;
    False or "" turns the cache off."""
    if decoded_cache_dir is None:
        decoded_cache_dir = os.environ.get(DECODED_CACHE_ENV_VAR) or None
    if decoded_cache_dir is None or decoded_cache_dir is False or str(decoded_cache_dir) == "":
        return None
    if decoded_cache_dir is True:
        raise ValueError("decoded_cache_dir: give a folder (e.g. DEFAULT_DECODED_CACHE_DIR), not True")
    return Path(decoded_cache_dir)


def _grey_batch_to_rgb(images):
    """uint8 grey images (B, 224, 224, 1) -> float32 RGB (B, 224, 224, 3) in [0, 1], the values of
    ``cast / 255`` repeated into three channels (by a product with ones, exact and faster on a CPU
    than broadcasting)."""
    import tensorflow as tf

    scaled = tf.cast(images, tf.float32) / 255.0
    rgb = tf.matmul(tf.reshape(scaled, [-1, 1]), tf.ones([1, 3], tf.float32))
    return tf.reshape(rgb, tf.concat([tf.shape(images)[:-1], [3]], axis=0))


def _decoded_cache_images(paths: list[str], cache_dir: Path):
    """(dataset of one element per image, function applied to each batch) reading the decoded cache,
    filled first for the images it lacks (:func:`fill_decoded_cache`).

    When every entry is grey (1 channel), an element is {"source": path, "entry": file bytes} (what an
    in-memory cache then holds: 50 kB an image) and the batch function checks and unpacks a whole
    batch at once into float32 RGB (B, 224, 224, 3) in [0, 1]. Otherwise the elements are already
    float32 (224, 224, 3) in [0, 1] and the batch function is None."""
    import tensorflow as tf

    entries = fill_decoded_cache(paths, cache_dir)
    channels = [_entry_channels(entry) for entry in entries]
    folder = str(decoded_cache_folder(cache_dir))
    slices = (paths, [str(entry) for entry in entries], channels)

    def read_bytes(source, entry, _):
        return {"source": source, "entry": tf.io.read_file(entry)}

    def grey_batch(element):
        sources, raw = element["source"], element["entry"]
        return tf.ensure_shape(_grey_batch_to_rgb(_entries_or_rebuild(sources, raw, 1, folder)), [None, *IMAGE_SHAPE])

    def read_rgb(source, entry, channel_count):
        image = _entries_or_rebuild(source[None], tf.io.read_file(entry)[None], channel_count, folder)[0]
        return tf.ensure_shape(_to_rgb(tf.cast(image, tf.float32) / 255.0), IMAGE_SHAPE)

    all_grey = all(c == 1 for c in channels)
    dataset = tf.data.Dataset.from_tensor_slices(slices).map(
        read_bytes if all_grey else read_rgb, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset, (grey_batch if all_grey else None)


def make_dataset(paths: Sequence[str], targets: Sequence[int] | None = None, batch_size: int = 16,
                 shuffle: bool = False, seed: int = 0, cache: bool | str = True,
                 augment: Callable | None = None,
                 decoded_cache_dir: str | os.PathLike | bool | None = None):
    """tf.data pipeline: read, decode, resize to 224 x 224, scale to [0, 1], cache, batch, prefetch.

    Yields images float32 (B, 224, 224, 3) (and targets float32 (B,) when given). The decoded
    images are cached (in memory, or in the file prefix given as ``cache``) before shuffling and
    augmentation, so only the first pass decodes JPEGs (without shuffle the batches themselves are
    cached). Without shuffle, the order is ``paths``. Files are decoded in parallel (all cores).

    ``decoded_cache_dir`` (default ``$CHEST_XRAY_DECODED_CACHE`` when set, e.g.
    ``DEFAULT_DECODED_CACHE_DIR``; False turns it off): a folder of decoded, resized uint8 images kept
    between runs, one file per image content (grey images stored as one channel), so the first epoch
    of later runs reads them instead of decoding. The call hashes the files and first decodes (in
    parallel) those not in the cache yet. Images already 224 x 224 (the 224 px set) come out
    identical to the pipeline without it; resized ones differ by the rounding to uint8 (at most half a
    grey level, 0.5/255). Entries are checked (length, checksum) and rebuilt when corrupt. When all
    the images are grey, the in-memory cache of a shuffled dataset then holds the entries' bytes
    (12 times less memory than float32 RGB), checked and made float32 RGB batch by batch.
    """
    import tensorflow as tf

    paths = [str(p) for p in paths]
    cache_folder = _resolve_decoded_cache(decoded_cache_dir)
    if cache_folder is None:
        dataset, per_batch = _plain_images(paths), None
    else:
        dataset, per_batch = _decoded_cache_images(paths, cache_folder)
    if targets is not None:
        labels = tf.data.Dataset.from_tensor_slices(np.asarray(targets, dtype=np.float32))
        dataset = tf.data.Dataset.zip((dataset, labels))
    cache_name = "" if cache is True else str(cache)
    if shuffle:
        if cache:
            dataset = dataset.cache(cache_name)
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = _map_images(dataset.batch(batch_size), per_batch, targets is not None)
    if cache and not shuffle:
        dataset = dataset.cache(cache_name)
    augment_batch = None if augment is None else (lambda x: augment(x, training=True))
    return _map_images(dataset, augment_batch, targets is not None).prefetch(tf.data.AUTOTUNE)


def _plain_images(paths: list[str]):
    """Dataset of model inputs float32 (224, 224, 3) in [0, 1], one per file, decoded in parallel."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(paths).map(_read_for_model, num_parallel_calls=tf.data.AUTOTUNE)


def _map_images(dataset, function: Callable | None, with_targets: bool):
    """``dataset`` with ``function`` applied (in parallel) to its images, targets passed through;
    unchanged when ``function`` is None."""
    import tensorflow as tf

    if function is None:
        return dataset
    if with_targets:
        return dataset.map(lambda x, y: (function(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.map(function, num_parallel_calls=tf.data.AUTOTUNE)


def load_images(paths: Sequence[str]) -> np.ndarray:
    """Model inputs float32 (N, 224, 224, 3) in [0, 1] for the files in ``paths``, in order."""
    return np.concatenate([batch for batch in make_dataset(paths, cache=False).as_numpy_iterator()])
