"""The data set: locating and downloading it, the index of its images, the patient-grouped split and
class weights."""
from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from .common import (
    CLASS_NAMES,
    DATA_ENV_VAR,
    IMAGE_SUFFIXES,
    JUNK_NAMES,
    KAGGLE_DATASET,
    SPLITS,
    DatasetLayoutError,
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
    file is a decodable image). Undecodable and non-image files stay in the index with their
    problem, so counts never lose them; :func:`decodable` selects the usable rows. A split left
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


def decodable(index: pd.DataFrame, warn: bool = True) -> pd.DataFrame:
    """Rows of ``index`` that are decodable images; warn naming every file left out."""
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

