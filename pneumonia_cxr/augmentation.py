"""Pixel-space augmentation of training images and the validation perturbations declared before
the test scoring (every family sees the same)."""
from __future__ import annotations

import numpy as np


AUGMENTATION = {  # pixel-space augmentation of training images (every family)
    "zoom": 0.3,  # zoom-in: each axis shows 70-100 % of the window, drawn independently
    "translation": 0.08,  # the window moves by up to 8 % of the image side on each axis
    "rotation": 0.03,  # up to 0.03 turn (about 11 degrees) either way
    "brightness": 0.1,  # + U(-0.1, 0.1) on the [0, 1] scale
    "contrast": 0.2,  # (x - image mean) * U(0.8, 1.2) + image mean
    "gamma": 0.25,  # x ** g, g log-uniform in [1/1.25, 1.25]
}
AUGMENTATION_DESCRIPTION = ("random zoom-in (70-100 % of each side, independently, so aspect ratio varies) "
                            "moved by up to 8 %, rotation up to 11 degrees, brightness +-0.1, contrast 0.8-1.2, "
                            "gamma 0.8-1.25; no flips (anatomy is not symmetric); one composed affine "
                            "resampling (bilinear, reflected at the edges) per image")


def draw_augmentation(rng: np.random.Generator, count: int) -> np.ndarray:
    """Random parameters (count, 8) float64 of :data:`AUGMENTATION`, one row per image: zoom x, zoom y
    (fraction of the window shown), shift x, shift y (fraction of the image side), rotation (radians),
    brightness offset, contrast factor, gamma."""
    a = AUGMENTATION
    limit = np.log1p(a["gamma"])
    return np.column_stack([
        rng.uniform(1.0 - a["zoom"], 1.0, (count, 2)),
        rng.uniform(-a["translation"], a["translation"], (count, 2)),
        rng.uniform(-a["rotation"], a["rotation"], count) * 2.0 * np.pi,
        rng.uniform(-a["brightness"], a["brightness"], count),
        rng.uniform(1.0 - a["contrast"], 1.0 + a["contrast"], count),
        np.exp(rng.uniform(-limit, limit, count)),
    ])


def identity_augmentation(count: int) -> np.ndarray:
    """Parameters (count, 8) that leave an image as it is (the window resampled, nothing else)."""
    return np.tile([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0], (count, 1))


def sampling_transforms(params: np.ndarray, image_side: int, window: int, output_side: int) -> np.ndarray:
    """Projective transforms (B, 8) float32, as ``tf.raw_ops.ImageProjectiveTransformV3`` takes them: output
    pixel (x, y) of an ``output_side`` square samples the image (side ``image_side``) at the point
    ``centre + shift + R(angle) diag(zoom) s (x - c_out, y - c_out)``, with ``s = window / output_side``.

    With :func:`identity_augmentation` this is the central ``window`` x ``window`` crop resized to
    ``output_side`` with half-pixel centres, the same sampling as ``keras.layers.CenterCrop`` followed by
    ``keras.layers.Resizing`` (bilinear, no antialias)."""
    zoom_x, zoom_y, shift_x, shift_y, angle = (params[:, i] for i in range(5))
    scale = window / output_side
    centre_in, centre_out = (image_side - 1) / 2.0, (output_side - 1) / 2.0
    cos, sin = np.cos(angle), np.sin(angle)
    a0, a1 = cos * zoom_x * scale, -sin * zoom_y * scale  # x_in = a0 x + a1 y + a2
    b0, b1 = sin * zoom_x * scale, cos * zoom_y * scale  # y_in = b0 x + b1 y + b2
    a2 = centre_in + shift_x * image_side - (a0 + a1) * centre_out
    b2 = centre_in + shift_y * image_side - (b0 + b1) * centre_out
    zeros = np.zeros_like(a0)
    return np.column_stack([a0, a1, a2, b0, b1, b2, zeros, zeros]).astype(np.float32)


def augment_images(images: np.ndarray, params: np.ndarray, window: int, output_side: int) -> np.ndarray:
    """Images uint8 or float32 (B, S, S, C) -> float32 (B, output_side, output_side, 3) in [0, 1]: one
    affine resampling of each image (:func:`sampling_transforms`: zoom, shift, rotation, the central
    ``window`` and the resize to ``output_side`` in one bilinear pass, reflected at the edges), then
    brightness, contrast and gamma (``params`` columns 5-7), clipped to [0, 1]; grey (C = 1) becomes RGB."""
    import tensorflow as tf

    images = np.asarray(images)
    pixels = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    side = pixels.shape[1]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=pixels, transforms=sampling_transforms(params, side, window, output_side),
        output_shape=np.array([output_side, output_side], np.int32), fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT").numpy()
    brightness, contrast, gamma = (params[:, i].astype(np.float32)[:, None, None, None] for i in (5, 6, 7))
    out = np.clip(warped + brightness, 0.0, 1.0)
    mean = out.mean(axis=(1, 2, 3), keepdims=True)
    out = np.clip((out - mean) * contrast + mean, 0.0, 1.0) ** gamma
    return np.repeat(out, 3, axis=3) if out.shape[3] == 1 else out


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
