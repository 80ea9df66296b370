"""Pixel-space augmentation of training images and the validation perturbations declared before
the test scoring (every family sees the same)."""
from __future__ import annotations

import numpy as np


AUGMENTATION = {  # pixel-space augmentation of training images (every family): Keras layer arguments
    "zoom": 0.3,  # RandomZoom height and width factors (-0.3, 0): a zoom-in crop of 70-100 % per axis
    "translation": 0.08,  # RandomTranslation: the crop moves by up to 8 % of the side
    "rotation": 0.03,  # RandomRotation: up to 0.03 turn (about 11 degrees)
    "brightness": 0.1,  # RandomBrightness: +-0.1 on the [0, 1] scale
    "contrast": 0.2,  # RandomContrast: factor in [0.8, 1.2]
    "gamma": 0.25,  # RandomGamma: exponent in [1/1.25, 1.25], log-uniform
}
AUGMENTATION_DESCRIPTION = ("random zoom-in crop (70-100 % of each side, independently, so aspect ratio varies) "
                            "moved by up to 8 %, rotation up to 11 degrees, brightness +-0.1, contrast 0.8-1.2, "
                            "gamma 0.8-1.25; no flips (anatomy is not symmetric)")


def _make_random_gamma_layer():
    import keras

    class RandomGamma(keras.layers.Layer):
        """x -> x ** g per image, g log-uniform in [1 / (1 + factor), 1 + factor]; inputs in [0, 1].

        Identity at inference (``training=False``)."""

        def __init__(self, factor: float, seed: int | None = None, **kwargs):
            super().__init__(**kwargs)
            self.factor = float(factor)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def call(self, inputs, training=True):
            if not training:
                return inputs
            ops = keras.ops
            limit = float(np.log1p(self.factor))
            log_gamma = keras.random.uniform((ops.shape(inputs)[0], 1, 1, 1), -limit, limit,
                                             seed=self.seed_generator)
            return ops.power(ops.clip(inputs, 0.0, 1.0), ops.exp(log_gamma))

    return RandomGamma


def build_augmentation(seed: int = 0):
    """Pixel-space augmentation of [0, 1] images (B, 224, 224, 3), as :data:`AUGMENTATION` says.

    Applied before the model's centre crop; output clipped to [0, 1]. Each layer is seeded from
    ``seed``, so the same seed and the same sequence of batches give the same views."""
    import keras

    a = AUGMENTATION
    return keras.Sequential([
        keras.layers.RandomZoom((-a["zoom"], 0.0), (-a["zoom"], 0.0), fill_mode="reflect", seed=seed),
        keras.layers.RandomTranslation(a["translation"], a["translation"], fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomRotation(a["rotation"], fill_mode="reflect", seed=seed + 2),
        keras.layers.RandomBrightness(a["brightness"], value_range=(0.0, 1.0), seed=seed + 3),
        keras.layers.RandomContrast(a["contrast"], seed=seed + 4),
        _make_random_gamma_layer()(a["gamma"], seed=seed + 5),
    ], name="augmentation")


VALIDATION_PERTURBATIONS = {  # declared before the test scoring of the run that first used them (evaluation.SELECTION_RULE)
    "zoom": "central 85 % of each side, resized back to 224 x 224 (a tighter framing)",
    "low_contrast": "contrast halved about each image's mean",
    "blur": "Gaussian blur, sigma 2 px",
    "noise": "additive Gaussian noise, sigma 0.05, clipped to [0, 1] (fixed seed)",
}


def perturb_images(images: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """One of :data:`VALIDATION_PERTURBATIONS` applied to images float32 (B, 224, 224, 3) in [0, 1].

    Deterministic: the same images, kind and seed give the same output (B, 224, 224, 3) in [0, 1]."""
    from scipy import ndimage

    images = np.asarray(images, np.float32)
    if kind == "zoom":
        import tensorflow as tf

        height, width = images.shape[1:3]
        crop = tf.image.central_crop(images, 0.85)
        return np.clip(tf.image.resize(crop, (height, width), antialias=True).numpy(), 0.0, 1.0)
    if kind == "low_contrast":
        mean = images.mean(axis=(1, 2, 3), keepdims=True)
        return mean + 0.5 * (images - mean)
    if kind == "blur":
        return ndimage.gaussian_filter(images, sigma=(0, 2, 2, 0))
    if kind == "noise":
        noise = np.random.default_rng(seed).normal(0.0, 0.05, images.shape[:3] + (1,)).astype(np.float32)
        return np.clip(images + noise, 0.0, 1.0)
    raise ValueError(f"unknown perturbation {kind!r}; expected one of {sorted(VALIDATION_PERTURBATIONS)}")
