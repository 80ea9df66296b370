"""A face-recognition base that runs offline: dlib's ResNet face-recognition network.

The original study asked whether a base pretrained for face recognition (VGG-Face) helps. VGG-Face's
weights download from a model hub; dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``:
128-d face descriptors, 99.38 % on LFW as its authors report) ships inside the PyPI package
``face-recognition-models`` and runs with the prebuilt ``dlib-bin`` wheel, so it runs here.

There is no face detection: the whole X-ray, after the centre crop every model uses, is resized to the
150 x 150 RGB "face chip" the network expects, and its 128-d descriptor is the frozen feature on which the
original study's head (Dense 512 ReLU, Dropout 0.5, Dense 1) is trained. The descriptors are cached like
every frozen network's features (:func:`pneumonia_cxr.training.frozen_features`), keyed by the model
file's sha256 and the chip recipe. dlib computes outside Keras: this family has no Grad-CAM map and the
app cannot serve it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from .common import IMAGE_SHAPE, WeightsUnavailableError, file_sha256
from .models import CROP_SIZE

FACE_CHIP_SIZE = 150  # pixels: dlib's face-recognition network takes 150 x 150 RGB chips
DESCRIPTOR_SIZE = 128
FACE_PACKAGES = "face-recognition-models==0.3.0 dlib-bin==20.0.1.post1"
FACE_PREPROCESSING = (f"centre crop {CROP_SIZE} x {CROP_SIZE} of the 224 x 224 input, resized (area-averaged) to "
                      f"{FACE_CHIP_SIZE} x {FACE_CHIP_SIZE} RGB uint8: the whole X-ray is the face chip (no detection)")


def face_model_path(path: str | os.PathLike | None = None) -> Path:
    """The dlib face-recognition model file: ``path`` when given, else the one bundled with the
    package ``face-recognition-models``. Raises WeightsUnavailableError (one line saying what to
    install) when neither is there."""
    if path is None:
        try:
            import face_recognition_models
        except ImportError as error:
            raise WeightsUnavailableError(f"dlib's face-recognition model is not installed: pip install {FACE_PACKAGES}") from error
        path = face_recognition_models.face_recognition_model_location()
    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailableError(f"dlib face-recognition model file not found: {path}")
    return path


def face_chips(images: np.ndarray) -> list[np.ndarray]:
    """Images float32 (B, 224, 224, 3) in [0, 1] -> B chips uint8 (150, 150, 3): the central 196 x 196,
    resized with area averaging (antialiased), rounded to uint8."""
    import tensorflow as tf

    offset = (IMAGE_SHAPE[0] - CROP_SIZE) // 2
    crop = np.asarray(images, np.float32)[:, offset:offset + CROP_SIZE, offset:offset + CROP_SIZE]
    resized = tf.image.resize(crop, (FACE_CHIP_SIZE, FACE_CHIP_SIZE), method="area").numpy()
    return list(np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8))


class FaceDescriptorExtractor:
    """The frozen face-recognition base, with the two things :func:`pneumonia_cxr.training.cached_features`
    asks of an extractor: ``output_shape`` (None, 128) and ``predict_on_batch(images)`` -> float32 (B, 128).
    ``identity``: sha256 of the model file and the chip recipe (the cache key of its descriptors)."""

    output_shape = (None, DESCRIPTOR_SIZE)

    def __init__(self, model_path: str | os.PathLike | None = None):
        import dlib

        path = face_model_path(model_path)
        self.network = dlib.face_recognition_model_v1(str(path))
        self.model_sha256 = file_sha256(path)
        self.identity = hashlib.sha256(f"dlib-face-resnet|{self.model_sha256}|{FACE_PREPROCESSING}".encode()).hexdigest()

    def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
        """128-d descriptors float32 (B, 128) of images float32 (B, 224, 224, 3) in [0, 1]."""
        descriptors = self.network.compute_face_descriptor(face_chips(images))
        return np.asarray([np.asarray(d) for d in descriptors], np.float32).reshape(len(images), DESCRIPTOR_SIZE)
