"""Constants and exceptions shared by every part of the package."""
from __future__ import annotations

import hashlib
import os
from typing import NamedTuple

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
PIPELINE_VERSION = "resize-bilinear-antialias-v1"  # part of feature-cache keys: change with preprocessing
JUNK_NAMES = frozenset({"__MACOSX", ".DS_Store", "Thumbs.db", "desktop.ini"})


class DatasetLayoutError(ValueError):
    """The data folder does not have the Kaggle layout {train,val,test}/{NORMAL,PNEUMONIA}."""


class ImageDecodeError(ValueError):
    """Bytes that are not a decodable image of a supported kind and size."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights that could not be downloaded or found on disk."""


class ManifestError(ValueError):
    """``models/manifest.json`` missing, malformed, or disagreeing with the files it lists; the
    one-line message names the file, the problem and how to fix it."""


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks; FileNotFoundError / OSError name the file."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


# ----------------------------------------------------------------------------------------------
# Names for readers
# ----------------------------------------------------------------------------------------------
DISPLAY_NAMES: dict[str, str] = {  # code name -> the name figures, tables and the README show
    "scratch_cnn": "Scratch CNN",
    "vggface_transfer": "VGG-Face transfer",
    "face_dlib_resnet": "Face-recognition base (dlib ResNet)",
    "hed_vgg16_transfer": "HED-VGG16 transfer",
    "xception_imagenet_transfer": "ImageNet Xception transfer",
    "ensemble": "Cross-model ensemble",
}


def display_name(name: str) -> str:
    """The readable name of a model (``DISPLAY_NAMES``); a name it does not know comes back as it is."""
    return DISPLAY_NAMES.get(name, name)


class PublishedResult(NamedTuple):
    """A published result on the official test split (624 images): ``(label, accuracy, roc_auc)``
    first, as ``plot_model_comparison``'s references, then where it comes from."""

    label: str
    accuracy: float
    roc_auc: float | None
    citation: str
    url: str
    note: str


PUBLISHED_RESULTS: tuple[PublishedResult, ...] = (
    PublishedResult("Original study, scratch CNN", 0.82, None,
                    "Silvano315/Pneumonia_Detection (GitHub)", "https://github.com/Silvano315/Pneumonia_Detection",
                    "the study this repository revisits; single run"),
    PublishedResult("Original study, VGG-Face transfer", 0.88, None,
                    "Silvano315/Pneumonia_Detection (GitHub)", "https://github.com/Silvano315/Pneumonia_Detection",
                    "frozen VGG-Face base; single run"),
    PublishedResult("Kermany et al. 2018, InceptionV3 (ImageNet), fine-tuned", 0.928, 0.968,
                    "Kermany et al., Cell 172(5), 2018", "https://doi.org/10.1016/j.cell.2018.02.010",
                    "the data set's own paper; model kept by its test score"),
    PublishedResult("MedMNIST+, ResNet-18, end to end (224 px)", 0.911, 0.980,
                    "Doerrich et al., Scientific Reports 2025", "https://arxiv.org/abs/2404.15786",
                    "ImageNet-pretrained, centre crop, early stopping on validation, threshold 0.5, mean of 3 seeds"),
    PublishedResult("MedMNIST+, ResNet-18, end to end (128 px)", 0.899, 0.979,
                    "Doerrich et al., Scientific Reports 2025", "https://arxiv.org/abs/2404.15786",
                    "as the 224 px row, at 128 px (the scratch CNN's input size here); mean of 3 seeds"),
    PublishedResult("MedMNIST+, VGG16, end to end (64 px)", 0.893, 0.987,
                    "Doerrich et al., Scientific Reports 2025", "https://arxiv.org/abs/2404.15786",
                    "ImageNet-pretrained, end to end at 64 px; mean of 3 seeds"),
    PublishedResult("MedMNIST+, DINO ViT-B/16, linear probe (224 px)", 0.916, 0.989,
                    "Doerrich et al., Scientific Reports 2025", "https://arxiv.org/abs/2404.15786",
                    "frozen self-supervised base, linear head; mean of 3 seeds"),
)
