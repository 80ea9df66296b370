"""Constants and exceptions shared by every part of the package."""
from __future__ import annotations

import hashlib
import os

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


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks; FileNotFoundError / OSError name the file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
