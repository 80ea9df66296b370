"""Grad-CAM and Grad-CAM++ for a one-unit sigmoid classifier, and the checks that make maps trustworthy."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from . import models
from .common import CLASS_NAMES
from .data import subsample_per_class
from .evaluation import sigmoid
from .models import _keras


# ----------------------------------------------------------------------------------------------
# Grad-CAM and Grad-CAM++ for a one-unit sigmoid classifier
# ----------------------------------------------------------------------------------------------
METHODS: tuple[str, str] = ("gradcam", "gradcam++")
CROP_LAYER_NAME = "centre_crop"  # a keras.layers.CenterCrop applied to the model's input, if any


def _gradcam_parts(model, last_conv_layer_name: str | None):
    """(model image -> [conv activations, input of the output layer], output Dense layer)."""
    keras = _keras()
    output_layer = model.layers[-1]
    if not isinstance(output_layer, keras.layers.Dense) or output_layer.units != 1 \
            or output_layer.activation is not keras.activations.sigmoid:
        raise ValueError(f"Model '{model.name}': Grad-CAM here needs one sigmoid unit from a Dense "
                         f"output layer, found {output_layer.__class__.__name__} '{output_layer.name}'")
    name = last_conv_layer_name or models.last_conv_layer_name(model)
    try:
        conv = model.get_layer(name)
    except ValueError:
        raise ValueError(f"Model '{model.name}' has no layer named '{name}'") from None
    parts = keras.Model(model.inputs[0], [layer_output_feeding_model_output(model, conv),
                                          models.output_layer_input(model)])
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


def input_crop_box(model) -> tuple[int, int, int, int]:
    """(top, left, height, width) in input pixels of the part of the input the model sees.

    A model whose layer ``centre_crop`` (``keras.layers.CenterCrop``) crops its input sees only that
    central box (Keras puts it at ``(H - height) // 2``, ``(W - width) // 2``); its last convolution,
    and so its Grad-CAM map, covers the box. Without such a layer: the whole input ``(0, 0, H, W)``.

    Raises:
        ValueError: the crop layer is not the model's first layer, or is larger than the input.
    """
    height, width = (int(side) for side in model.inputs[0].shape[1:3])
    try:
        crop = model.get_layer(CROP_LAYER_NAME)
    except ValueError:
        return 0, 0, height, width
    first = next(layer for layer in model.layers if not isinstance(layer, _keras().layers.InputLayer))
    if crop is not first or crop.height > height or crop.width > width:
        raise ValueError(f"Model '{model.name}': layer '{CROP_LAYER_NAME}' must be the first layer, cropping the "
                         f"{height} x {width} input to a box no larger, got {crop.height} x {crop.width}")
    return (height - crop.height) // 2, (width - crop.width) // 2, crop.height, crop.width


@dataclass
class GradCamBatch:
    """What :class:`GradCamExplainer` returns for N images.

    ``logits``: float64 (N,), the PNEUMONIA logit (pre-sigmoid output); ``probabilities``: float64
    (N,) sigmoid of the logits, the probability of PNEUMONIA in [0, 1]; ``explained``: int (N,) the
    class each map explains (1 PNEUMONIA, 0 NORMAL); ``maps``: {method: float32 (N, H, W)} in [0, 1],
    in the input's frame (the map upsampled bilinearly onto the box the model sees, zero outside it,
    peak 1; all zero when the class has no positive evidence); ``conv_maps``: {method: float32 (N, h,
    w)} in [0, 1], the same maps at the last convolution's resolution (covering that box only)."""

    logits: np.ndarray
    probabilities: np.ndarray
    explained: np.ndarray
    maps: dict[str, np.ndarray]
    conv_maps: dict[str, np.ndarray]

    def subset(self, index: Sequence[int]) -> "GradCamBatch":
        """The same for the images at ``index`` (positions), in that order."""
        index = np.asarray(index, int)
        return GradCamBatch(self.logits[index], self.probabilities[index], self.explained[index],
                            {m: v[index] for m, v in self.maps.items()}, {m: v[index] for m, v in self.conv_maps.items()})


class GradCamExplainer:
    """Grad-CAM and Grad-CAM++ of one model, built once (per app worker, per notebook model).

    Builds the gradient sub-model (image -> last conv activations, output layer's input) once and
    wraps one forward pass, the gradient of the class score with respect to the activations, the maps
    of every method and their placement in the input frame in a compiled ``tf.function`` with a fixed
    input signature (batch dimension None: any batch size runs the same graph, traced once).

    Class scores: the logit for PNEUMONIA, the negated logit for NORMAL (gradients of the logit, not
    of the saturating sigmoid). Grad-CAM weights each channel by the mean gradient (Selvaraju et al.
    2017); Grad-CAM++ by Chattopadhay et al. 2018's closed form for an exponential score.

    Args:
        model: a Keras model (N, H, W, 3) -> Dense(1, sigmoid), this project's models take
            (N, 224, 224, 3) RGB in [0, 1]; a ``centre_crop`` first layer is honoured
            (:func:`input_crop_box`).
        last_conv_layer_name: the layer whose activations are weighted; None: the last Conv2D or
            SeparableConv2D.
        methods: any of :data:`METHODS`.
        compiled: False runs the same computation eagerly (no tracing cost: for a one-off call).

    Raises:
        ValueError: no single sigmoid output, unknown layer or method.
    """

    def __init__(self, model, last_conv_layer_name: str | None = None, methods: Sequence[str] = METHODS,
                 compiled: bool = True):
        import tensorflow as tf

        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"Unknown method {unknown or list(methods)}: use 'gradcam' or 'gradcam++'")
        self.model, self.methods = model, tuple(methods)
        self.last_conv_layer_name = last_conv_layer_name or models.last_conv_layer_name(model)
        self._parts, output_layer = _gradcam_parts(model, self.last_conv_layer_name)
        self._kernel, self._bias = output_layer.kernel, output_layer.bias
        self.input_shape = tuple(int(side) for side in model.inputs[0].shape[1:])
        self.box = input_crop_box(model)
        images = tf.TensorSpec((None, *self.input_shape), tf.float32)
        self._explain = self._explain_batch
        self._logits = self._logits_batch
        if compiled:
            self._explain = tf.function(self._explain_batch, input_signature=[
                images, tf.TensorSpec((None,), tf.int32), tf.TensorSpec((), tf.float64)])
            self._logits = tf.function(self._logits_batch, input_signature=[images])

    def _logits_from(self, penultimate):
        import tensorflow as tf

        flat = tf.reshape(tf.cast(penultimate, tf.float32), (tf.shape(penultimate)[0], -1))
        return tf.squeeze(tf.matmul(flat, tf.cast(self._kernel, tf.float32)) + tf.cast(self._bias, tf.float32), -1)

    def _logits_batch(self, images):
        return self._logits_from(self._parts(images, training=False)[1])

    def _explain_batch(self, images, classes, threshold):
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)  # the eager path gets arrays
        with tf.GradientTape() as tape:
            tape.watch(images)  # records every op after the input, whatever the layers' trainable flags
            activations, penultimate = self._parts(images, training=False)
            logits = self._logits_from(penultimate)
            predicted = tf.cast(tf.math.sigmoid(tf.cast(logits, tf.float64)) >= threshold, tf.int32)
            explained = tf.where(classes < 0, predicted, classes)
            total = tf.reduce_sum(tf.where(explained == 1, logits, -logits))  # d total / dA_i = d score_i / dA_i
        grads = tf.cast(tape.gradient(total, activations), tf.float32)
        activations = tf.cast(activations, tf.float32)
        cams = {method: self._cam(activations, grads, method) for method in self.methods}
        frame = self.input_shape[:2]
        return (logits, explained, {m: _peak_normalised(c) for m, c in cams.items()},
                {m: _peak_normalised(place_in_frame(c, self.box, frame)) for m, c in cams.items()})

    @staticmethod
    def _cam(activations, grads, method: str):
        """ReLU of the weighted sum of activations (N, h, w, C) -> (N, h, w), not normalised."""
        import tensorflow as tf

        if method == "gradcam":
            weights = tf.reduce_mean(grads, axis=(1, 2))
        else:  # gradcam++: Chattopadhay et al. 2018, exponential-score closed form
            grads_2 = grads * grads
            denominator = 2 * grads_2 + tf.reduce_sum(activations, axis=(1, 2), keepdims=True) * grads_2 * grads
            alphas = grads_2 / tf.where(denominator != 0, denominator, tf.ones_like(denominator))
            weights = tf.reduce_sum(alphas * tf.nn.relu(grads), axis=(1, 2))
        return tf.nn.relu(tf.einsum("nhwc,nc->nhw", activations, weights))

    def __call__(self, images, class_index: int | Sequence[int] | None = None, threshold: float = 0.5,
                 batch_size: int = 32) -> GradCamBatch:
        """Maps of every method, with the predictions of the same forward pass.

        Args:
            images: float32 (N, H, W, 3), for this project's models (N, 224, 224, 3) RGB in [0, 1].
            class_index: None explains the predicted class (probability >= threshold -> PNEUMONIA);
                1 explains PNEUMONIA; 0 NORMAL; an array (N,) gives the class per image.
            threshold: probability of PNEUMONIA from which an image is predicted PNEUMONIA (the
                float64 sigmoid decides, so that logits beyond about 17 still compare correctly).
            batch_size: images per compiled call; bounds the memory of one call.
        """
        images = np.asarray(images, np.float32)
        classes = np.broadcast_to(np.asarray(-1 if class_index is None else class_index, np.int32), (len(images),))
        parts = [self._explain(images[start:start + batch_size], classes[start:start + batch_size], float(threshold))
                 for start in range(0, len(images), batch_size)]
        logits = np.concatenate([np.asarray(p[0], np.float64) for p in parts])
        return GradCamBatch(logits, sigmoid(logits), np.concatenate([np.asarray(p[1]) for p in parts]),
                            {m: np.concatenate([np.asarray(p[3][m]) for p in parts]) for m in self.methods},
                            {m: np.concatenate([np.asarray(p[2][m]) for p in parts]) for m in self.methods})

    def logits(self, images, batch_size: int = 32) -> np.ndarray:
        """PNEUMONIA logits float64 (N,) of images (N, H, W, 3): forward passes only, compiled."""
        images = np.asarray(images, np.float32)
        return np.concatenate([np.asarray(self._logits(images[start:start + batch_size]), np.float64)
                               for start in range(0, len(images), batch_size)]) if len(images) else np.empty(0)


def _peak_normalised(maps):
    """Maps (N, h, w) >= 0 divided by their peak: values in [0, 1]; all zero where a map is all zero."""
    import tensorflow as tf

    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return maps / tf.where(peak > 0, peak, tf.ones_like(peak))


def make_gradcam_heatmaps(images, model, last_conv_layer_name: str | None = None,
                          class_index: int | Sequence[int] | None = None, threshold: float = 0.5,
                          method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (or Grad-CAM++) maps of a batch, with the predictions of the same forward pass.

    A one-off :class:`GradCamExplainer` run eagerly (arguments as there); for repeated calls build
    the explainer once instead.

    Returns:
        (heatmaps float32 (N, H, W) in [0, 1] in the input's frame, probabilities of PNEUMONIA (N,) float64).
    """
    result = GradCamExplainer(model, last_conv_layer_name, (method,), compiled=False)(images, class_index, threshold)
    return result.maps[method], result.probabilities


def make_gradcam_heatmap(img_array, model, last_conv_layer_name: str | None = None,
                         pred_index: int | None = None, threshold: float = 0.5) -> np.ndarray:
    """Grad-CAM map float32 (H, W) in [0, 1] of one image ``img_array`` (1, 224, 224, 3), in the
    input's frame.

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
# Test images balanced by class
# ----------------------------------------------------------------------------------------------
def balanced_sample(index: pd.DataFrame, per_class: int, seed: int = 0, split: str = "test") -> pd.DataFrame:
    """``per_class`` rows of each class of ``split``, drawn at random (seeded), in random order.

    Same seed, same sample (and order); the classes are mixed so that any prefix holds both.

    Raises:
        ValueError: a class of ``split`` has fewer than ``per_class`` rows.
    """
    rows = index[index["split"] == split]
    counts = rows["target"].value_counts()
    short = {CLASS_NAMES[t]: int(counts.get(t, 0)) for t in (0, 1) if counts.get(t, 0) < per_class}
    if short:
        raise ValueError(f"Split '{split}' has too few images for {per_class} per class: {short}")
    picked = subsample_per_class(rows, per_class, seed=seed, by=("target",))
    return picked.sample(frac=1.0, random_state=seed).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Deletion and insertion (Petsiuk et al. 2018) against baselines of the map's own shape
# ----------------------------------------------------------------------------------------------
DELETION_FILLS: tuple[str, str] = ("mean", "zeros")


@dataclass(frozen=True)
class CurveSettings:
    """How the deletion and insertion curves and their baselines are drawn.

    steps: curve points at 0, 1/steps, ..., 1 of the input's pixels (RISE steps 224 pixels of 224 x
    224 at a time, 224 steps). deletion_fill: what a deleted pixel becomes, ``"mean"`` the image's
    mean colour (RISE deletes to 0 after ImageNet normalisation: close to the data set's mean colour)
    or ``"zeros"`` (black). insertion_blur_sigma: pixels, the Gaussian blur of the canvas insertion
    starts from (RISE: an 11 x 11 kernel, sigma 5). baseline_draws: shifted-and-flipped copies of each
    map (the same-shape baseline). draws_per_point: copies scored at each curve point, taken in turn
    (``baseline_draws`` scores every copy at every point: the mean of the copies' curves; fewer cost
    less and estimate the same mean curve, unbiased, with each copy giving every
    ``baseline_draws / draws_per_point``-th point). seed: of the copies, the noise baseline and the
    bootstrap.
    """

    steps: int = 50
    deletion_fill: str = "mean"
    insertion_blur_sigma: float = 5.0
    baseline_draws: int = 10
    draws_per_point: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.steps < 2:
            raise ValueError(f"steps must be at least 2, got {self.steps}")
        if self.deletion_fill not in DELETION_FILLS:
            raise ValueError(f"Unknown deletion_fill '{self.deletion_fill}': use one of {DELETION_FILLS}")
        if not 1 <= self.draws_per_point <= self.baseline_draws:
            raise ValueError(f"Need 1 <= draws_per_point <= baseline_draws, got {self.draws_per_point} and "
                             f"{self.baseline_draws}")

    def columns(self) -> dict[str, object]:
        """The settings as the summary table's columns."""
        return {"deletion_fill": self.deletion_fill, "insertion_blur_sigma": self.insertion_blur_sigma,
                "curve_steps": self.steps, "baseline_draws": self.baseline_draws,
                "baseline_draws_per_point": self.draws_per_point}


def place_in_frame(maps, box: tuple[int, int, int, int], frame: tuple[int, int]):
    """Maps (N, h, w) resized bilinearly to the box (top, left, height, width) and padded with zeros to
    ``frame`` (H, W): float32 (N, H, W), a tf.Tensor (runs inside a compiled function or eagerly)."""
    import tensorflow as tf

    top, left, height, width = box
    resized = tf.image.resize(tf.convert_to_tensor(maps, tf.float32)[..., None], (height, width), method="bilinear")
    return tf.pad(resized[..., 0], [[0, 0], [top, frame[0] - top - height], [left, frame[1] - left - width]])


def noise_maps(count: int, cells: tuple[int, int], box: tuple[int, int, int, int], frame: tuple[int, int],
               seed: int = 0) -> np.ndarray:
    """The scattered-noise baseline (the old one): uniform noise, independent per map cell (``cells``
    (h, w), the map's resolution), placed like a map: float32 (count, H, W), zero outside the box.
    Its top pixels form many blobs of a cell's size spread over the box."""
    rng = np.random.default_rng(seed)
    return np.asarray(place_in_frame(rng.random((count, *cells), dtype=np.float32), box, frame))


def shifted_maps(maps: np.ndarray, box: tuple[int, int, int, int], draws: int, seed: int = 0) -> np.ndarray:
    """The same-shape baseline: each map (N, H, W) ``draws`` times flipped (up-down and left-right,
    each with probability 1/2) and shifted circularly by a uniform random offset inside the box (top,
    left, height, width); zero outside it. float32 (N, draws, H, W): the same values as the map, so
    regions of the same size and compactness, at random places."""
    rng = np.random.default_rng(seed)
    top, left, height, width = box
    out = np.zeros((len(maps), draws, *maps.shape[1:]), np.float32)
    for i, heatmap in enumerate(np.asarray(maps, np.float32)[:, top:top + height, left:left + width]):
        for d in range(draws):
            flipped = heatmap[::rng.choice((1, -1)), ::rng.choice((1, -1))]
            out[i, d, top:top + height, left:left + width] = np.roll(
                flipped, (rng.integers(height), rng.integers(width)), axis=(0, 1))
    return out


def pixel_ranks(maps: np.ndarray, tie_breaker: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Removal rank of every pixel, int32 of the shape of ``maps`` (N, ..., H, W): 0 goes first.

    Pixels inside the box (top, left, height, width) come first, by map value (highest first), equal
    values (a map's zero region) by ``tie_breaker`` (N, H, W, highest first); pixels outside the box,
    which the model never sees, come last. The same tie-breaker for a map and its baselines makes an
    empty map rank exactly like its baselines."""
    maps = np.asarray(maps, np.float32)
    height, width = maps.shape[-2:]
    top, left, box_height, box_width = box
    outside = np.ones((height, width), bool)
    outside[top:top + box_height, left:left + box_width] = False
    flat = maps.reshape(len(maps), -1, height * width)
    ties = np.broadcast_to(np.asarray(tie_breaker, np.float32).reshape(len(maps), 1, -1), flat.shape)
    order = np.lexsort((-ties, -flat, np.broadcast_to(outside.ravel(), flat.shape)), axis=-1)
    ranks = np.empty(flat.shape, np.int32)
    np.put_along_axis(ranks, order, np.arange(height * width, dtype=np.int32)[None, None], axis=-1)
    return ranks.reshape(maps.shape)


def deletion_images(images: np.ndarray, fill: str) -> np.ndarray:
    """What deletion turns each image (N, H, W, 3) into: ``"zeros"`` black, ``"mean"`` its mean colour."""
    images = np.asarray(images, np.float32)
    if fill == "zeros":
        return np.zeros_like(images)
    if fill == "mean":
        return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).copy()
    raise ValueError(f"Unknown fill '{fill}': use one of {DELETION_FILLS}")


def blurred_images(images: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (``sigma`` pixels, edges repeated) of images (N, H, W, 3): insertion's canvas."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.asarray(images, np.float32), sigma=(0, sigma, sigma, 0), mode="nearest")


def explained_score(probabilities: np.ndarray, explained: np.ndarray) -> np.ndarray:
    """Probability (N,) of the explained class: P(PNEUMONIA) where explained is 1, else 1 - it."""
    return np.where(np.asarray(explained) == 1, probabilities, 1.0 - probabilities)


def curve_fractions(steps: int) -> np.ndarray:
    """Fractions of the input's pixels removed / revealed: 0, 1/steps, ..., 1 (float64, steps + 1)."""
    return np.linspace(0.0, 1.0, steps + 1)


def deletion_insertion_curves(explainer: "GradCamExplainer", images: np.ndarray, ranks: dict[str, np.ndarray],
                              explained: np.ndarray, settings: CurveSettings) -> dict[str, dict[str, np.ndarray]]:
    """Score of the explained class as pixels are deleted, or inserted, in the order of each ranking.

    Deletion at fraction f: the f * H * W pixels of lowest rank replaced by :func:`deletion_images`;
    insertion: the :func:`blurred_images` canvas with those pixels restored. A ranking with D draws
    (N, D, H, W) is scored at point j on ``settings.draws_per_point`` of them, taken in turn, and
    averaged. All rankings and both kinds of one point go through the model together (one batched call
    per point). Points where only pixels outside the model's box change are not run: they equal the
    fully deleted (the fill image) or fully inserted (the image) end.

    Args:
        explainer: the model's :class:`GradCamExplainer` (its compiled forward pass and box).
        images: float32 (N, H, W, 3) in [0, 1]; ranks: {name: int (N, H, W) or (N, D, H, W)} from
            :func:`pixel_ranks`; explained: class (N,) whose probability is the score.

    Returns:
        {name: {"deletion": (N, S), "insertion": (N, S)}} probabilities of the explained class at
        :func:`curve_fractions` (S = steps + 1), float64.
    """
    images = np.asarray(images, np.float32)
    n, height, width = images.shape[:3]
    deleted, canvas = deletion_images(images, settings.deletion_fill), blurred_images(images, settings.insertion_blur_sigma)
    ranks = {name: r if r.ndim == 4 else r[:, None] for name, r in ranks.items()}
    seen = explainer.box[2] * explainer.box[3]  # pixels the model sees: ranked first

    def score(batch: np.ndarray, copies: int) -> np.ndarray:
        return explained_score(sigmoid(explainer.logits(batch)), np.tile(explained, copies))

    full, empty, blurred = score(images, 1), score(deleted, 1), score(canvas, 1)
    fractions = curve_fractions(settings.steps)
    curves = {name: {"deletion": np.empty((n, len(fractions))), "insertion": np.empty((n, len(fractions)))}
              for name in ranks}
    for j, fraction in enumerate(fractions):
        k = int(round(fraction * height * width))
        if k == 0 or k >= seen:
            for name in ranks:
                curves[name]["deletion"][:, j] = full if k == 0 else empty
                curves[name]["insertion"][:, j] = blurred if k == 0 else full
            continue
        batch, counts = [], []
        for name, rank in ranks.items():
            draws = min(settings.draws_per_point, rank.shape[1])
            chosen = [(j * draws + i) % rank.shape[1] for i in range(draws)]
            masks = (rank[:, chosen] < k)[..., None]  # (N, draws, H, W, 1)
            batch += [np.where(masks, deleted[:, None], images[:, None]).swapaxes(0, 1).reshape(-1, height, width, 3),
                      np.where(masks, images[:, None], canvas[:, None]).swapaxes(0, 1).reshape(-1, height, width, 3)]
            counts.append(draws)
        scores = score(np.concatenate(batch), 2 * sum(counts))
        start = 0
        for name, draws in zip(ranks, counts):
            for kind in ("deletion", "insertion"):
                curves[name][kind][:, j] = scores[start:start + draws * n].reshape(draws, n).mean(axis=0)
                start += draws * n
    return curves


def curve_area(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area (N,) under curves (N, S) over fractions 0 -> 1 by the trapezoid rule: the mean score, in [0, 1]."""
    return np.trapezoid(curves, fractions, axis=1)


@dataclass
class FaithfulnessResult:
    """Per-image check numbers and the curves they come from.

    ``per_image``: one row per (image, method), columns in :func:`faithfulness` and
    :func:`gradcam_checks`; ``fractions`` (S,); ``curves``: {method, "<method> shifted" or "noise":
    {"deletion"/"insertion": (N, S)}}; ``settings``: how they were drawn."""

    per_image: pd.DataFrame
    fractions: np.ndarray
    curves: dict[str, dict[str, np.ndarray]]
    settings: CurveSettings


def faithfulness(explainer: "GradCamExplainer", images: np.ndarray, batch: GradCamBatch,
                 settings: CurveSettings = CurveSettings()) -> FaithfulnessResult:
    """Deletion and insertion areas of each method's maps and of two baselines, per image.

    Baselines: ``shifted``, the map itself shifted and flipped inside the box (:func:`shifted_maps`,
    ``settings.baseline_draws`` copies: same shape, random place); ``noise``, the old scattered-noise
    order (:func:`noise_maps`, one per image, shared by the methods). The noise map also breaks ties
    in every ranking. A faithful map: deletion area below its baselines', insertion area above.

    Args:
        explainer, batch: the model's explainer and its output for ``images`` (float32 (N, H, W, 3)).

    Returns:
        :class:`FaithfulnessResult` whose ``per_image`` has image (position), method, deletion_auc,
        deletion_auc_shifted, deletion_auc_noise and the same three for insertion.
    """
    frame = tuple(images.shape[1:3])
    cells = next(iter(batch.conv_maps.values())).shape[1:]
    noise = noise_maps(len(images), cells, explainer.box, frame, settings.seed)
    ranks = {"noise": pixel_ranks(noise, noise, explainer.box)}
    for i, (method, maps) in enumerate(batch.maps.items()):
        ranks[method] = pixel_ranks(maps, noise, explainer.box)
        shifted = shifted_maps(maps, explainer.box, settings.baseline_draws, settings.seed + 1 + i)
        ranks[f"{method} shifted"] = pixel_ranks(shifted, noise, explainer.box)
    curves = deletion_insertion_curves(explainer, images, ranks, batch.explained, settings)
    fractions = curve_fractions(settings.steps)
    areas = {name: {kind: curve_area(c, fractions) for kind, c in kinds.items()} for name, kinds in curves.items()}
    frames = [pd.DataFrame({"image": np.arange(len(images)), "method": method,
                            **{f"{kind}_auc{suffix}": areas[name][kind] for kind in ("deletion", "insertion")
                               for suffix, name in (("", method), ("_shifted", f"{method} shifted"), ("_noise", "noise"))}})
              for method in batch.maps]
    return FaithfulnessResult(pd.concat(frames, ignore_index=True), fractions, curves, settings)


# ----------------------------------------------------------------------------------------------
# Sanity and borders
# ----------------------------------------------------------------------------------------------
RANK_CORR_LIMIT = 0.5  # the sanity check: a map "differs" from the random network's below this


def randomised_copy(model, seed: int = 0):
    """Same architecture with freshly initialised weights (the model-randomisation sanity check)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.models.clone_model(model)


def map_rank_correlation(maps: np.ndarray, random_maps: np.ndarray) -> np.ndarray:
    """Spearman rank correlation (N,) of each map (N, h, w) with its random-weights network's map.

    0 where the random network's map is constant and the map is not (no rank agreement: they
    differ, which is what the check asks); NaN where the map itself is constant (an empty map shows
    nothing to check)."""
    from scipy.stats import spearmanr

    out = []
    for a, b in zip(maps, random_maps):
        a, b = a.ravel(), b.ravel()
        out.append(np.nan if a.std() == 0 else 0.0 if b.std() == 0 else spearmanr(a, b).statistic)
    return np.asarray(out, dtype=np.float64)


def border_share(heatmaps: np.ndarray, border: float = 0.1) -> np.ndarray:
    """Share (N,) of each map's mass (N, H, W) in the outer frame (``border`` of each side) where
    text markers and collimation edges sit; 0.36 for a uniform map with border 0.1 (when 10% of the
    side is a whole number of pixels). NaN for empty maps."""
    heatmaps = np.asarray(heatmaps, np.float64)
    _, height, width = heatmaps.shape
    mask = np.ones((height, width), bool)
    top, left = max(1, round(height * border)), max(1, round(width * border))
    mask[top:height - top, left:width - left] = False
    total = heatmaps.sum(axis=(1, 2))
    return np.where(total > 0, (heatmaps * mask).sum(axis=(1, 2)) / np.where(total > 0, total, 1), np.nan)


def gradcam_checks(explainer: "GradCamExplainer", images: np.ndarray, y_true: Sequence[int], batch: GradCamBatch,
                   settings: CurveSettings = CurveSettings(),
                   curve_images: Sequence[int] | None = None) -> FaithfulnessResult:
    """All trust checks of one model's maps, per image (summarise with :func:`summarise_gradcam_checks`).

    Args:
        explainer: the model's :class:`GradCamExplainer`; images: float32 (N, 224, 224, 3) in [0, 1];
            y_true: labels (N,); batch: ``explainer(images, threshold=...)``, the maps of the
            predicted class; curve_images: positions of the images that get deletion and insertion
            curves (by far the costliest check; None: all); the others' areas are NaN.

    Returns:
        :class:`FaithfulnessResult` (:func:`faithfulness` of the curve images, ``image`` their
        position in ``images``) whose ``per_image`` has a row per image and method, and also true_class,
        predicted_class (names), probability (of PNEUMONIA), correct; rank_corr_random_weights
        (:func:`map_rank_correlation` with the maps, same class, of the architecture with random
        weights at the convolution's resolution; Adebayo et al. 2018) and random_map_constant;
        border_share (:func:`border_share` in the input frame) and border_share_uniform (that of a
        map uniform over the box the model sees: 0.354 for the whole 224 x 224 input, 0.157 for its
        central 196 x 196); empty_map (no positive evidence).
    """
    y_true = np.asarray(y_true).astype(int)
    random_explainer = GradCamExplainer(randomised_copy(explainer.model, settings.seed),
                                        explainer.last_conv_layer_name, tuple(batch.maps), compiled=False)  # one call
    random_batch = random_explainer(images, class_index=batch.explained)
    curve_index = np.arange(len(images)) if curve_images is None else np.asarray(curve_images, int)
    result = faithfulness(explainer, images[curve_index], batch.subset(curve_index), settings)
    result.per_image["image"] = curve_index[result.per_image["image"]]
    cells = next(iter(batch.conv_maps.values())).shape[1:]
    uniform = float(border_share(np.asarray(place_in_frame(np.ones((1, *cells)), explainer.box, images.shape[1:3])))[0])
    names = np.asarray(CLASS_NAMES)
    extra = [pd.DataFrame({
        "method": method, "image": np.arange(len(images)), "true_class": names[y_true], "predicted_class": names[batch.explained], "probability": batch.probabilities,
        "correct": batch.explained == y_true,
        "rank_corr_random_weights": map_rank_correlation(batch.conv_maps[method], random_batch.conv_maps[method]),
        "random_map_constant": random_batch.conv_maps[method].reshape(len(images), -1).std(axis=1) == 0,
        "border_share": border_share(batch.maps[method]), "border_share_uniform": uniform,
        "empty_map": batch.conv_maps[method].reshape(len(images), -1).max(axis=1) == 0}) for method in batch.maps]
    result.per_image = pd.concat(extra, ignore_index=True).merge(result.per_image, on=["image", "method"], how="left")
    return result


# ----------------------------------------------------------------------------------------------
# Verdicts: effect with a bootstrap interval, sign tests with Holm's correction
# ----------------------------------------------------------------------------------------------
ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 4000


def sign_test_p(successes: int, n: int) -> float:
    """One-sided sign test: P(X >= successes) for X ~ Binomial(n, 1/2) (scipy.stats.binomtest); NaN
    when n is 0."""
    from scipy.stats import binomtest

    return float(binomtest(successes, n, 0.5, alternative="greater").pvalue) if n > 0 else np.nan


def holm_adjusted(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error) of the tests that were run; NaN (a test
    not run) stays NaN and does not count in the family."""
    p = np.asarray(p_values, np.float64)
    run = np.flatnonzero(~np.isnan(p))
    order = run[np.argsort(p[run], kind="stable")]
    adjusted = np.full_like(p, np.nan)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((len(order) - np.arange(len(order))) * p[order]))
    return adjusted


def bootstrap_interval(values: Sequence[float], statistic=np.mean, n_resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float, float]:
    """(statistic, 95% low, 95% high) of ``values`` over images: percentile bootstrap resampling the
    images (scipy.stats.bootstrap); NaN values are left out; interval NaN with fewer than 2 values."""
    from scipy.stats import bootstrap

    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return (float(statistic(values)) if len(values) else np.nan), np.nan, np.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0]), float(values[0])
    interval = bootstrap((values,), statistic, n_resamples=n_resamples, method="percentile",
                         rng=np.random.default_rng(seed)).confidence_interval
    return float(statistic(values)), float(interval.low), float(interval.high)


def enough_images(n: int, alpha: float = ALPHA, tests: int = 1) -> bool:
    """Whether a one-sided sign test over n images can reach significance at all once Holm-adjusted
    over ``tests`` tests: its smallest p-value, 0.5 ** n, times ``tests`` is below ``alpha`` (one test:
    n >= 5 at 0.05; 8 tests: n >= 8). Fewer images give the verdict "too few images"."""
    return tests * 0.5 ** n < alpha


def faithfulness_label(deletion: bool, insertion: bool) -> str:
    """"faithful" (both), "partly faithful (deletion)" / "(insertion)" (one), "not faithful" (neither)."""
    if deletion and insertion:
        return "faithful"
    if deletion or insertion:
        return f"partly faithful ({'deletion' if deletion else 'insertion'})"
    return "not faithful"


SUBSETS: tuple[str, str, str] = ("all", "correct", "wrong")


def _group_stats(rows: pd.DataFrame, seed: int) -> dict:
    """Counts, means, paired differences with intervals and raw sign-test p-values of one group
    (deletion and insertion over its images with curves)."""
    n = len(rows)
    curves = rows.dropna(subset=["deletion_auc"])
    stats = {"n_images": n, "n_normal": int((rows["true_class"] == CLASS_NAMES[0]).sum()),
             "n_pneumonia": int((rows["true_class"] == CLASS_NAMES[1]).sum()),
             "n_correct": int(rows["correct"].sum()), "n_wrong": int((~rows["correct"]).sum()),
             "n_curve_images": len(curves)}
    for kind, sign in (("deletion", -1), ("insertion", 1)):  # deletion: lower is better; insertion: higher
        for suffix in ("", "_shifted", "_noise"):
            stats[f"{kind}_auc{suffix}"] = float(curves[f"{kind}_auc{suffix}"].mean())
        difference = curves[f"{kind}_auc"] - curves[f"{kind}_auc_shifted"]
        stats[f"{kind}_diff_mean"], stats[f"{kind}_diff_ci_low"], stats[f"{kind}_diff_ci_high"] = \
            bootstrap_interval(difference, seed=seed)
        stats[f"{kind}_wins"] = int((sign * difference > 0).sum())  # ties count against the map
        stats[f"{kind}_wins_noise"] = int((sign * (curves[f"{kind}_auc"] - curves[f"{kind}_auc_noise"]) > 0).sum())
    passes = rows["rank_corr_random_weights"].abs() < RANK_CORR_LIMIT  # NaN (empty map) fails
    stats["rank_corr_median"], stats["rank_corr_ci_low"], stats["rank_corr_ci_high"] = \
        bootstrap_interval(rows["rank_corr_random_weights"], np.median, seed=seed)
    stats.update(sanity_passes=int(passes.sum()), random_maps_constant=int(rows["random_map_constant"].sum()),
                 border_share=float(rows["border_share"].mean()),
                 border_share_uniform=float(rows["border_share_uniform"].iloc[0]),
                 border_passes=int((rows["border_share"] < rows["border_share_uniform"]).sum()),
                 empty_maps=int(rows["empty_map"].sum()))
    for test, wins, count in (("deletion", "deletion_wins", len(curves)), ("insertion", "insertion_wins", len(curves)),
                              ("sanity", "sanity_passes", n), ("border", "border_passes", n)):
        stats[f"{test}_p"] = sign_test_p(stats[wins], count) if enough_images(count) else np.nan
    return stats


def summarise_gradcam_checks(per_image: pd.DataFrame, settings: CurveSettings = CurveSettings(),
                             alpha: float = ALPHA) -> pd.DataFrame:
    """One row per (model if present, method, subset): subsets "all", "correct" and "wrong"
    (predictions), empty subsets left out; the curve settings as columns.

    Verdict rules (one-sided sign tests over the images of a row, ties and empty maps counting against
    the map, each p-value Holm-adjusted over the "all" rows' tests of its kind: ``*_p_holm``; the "correct" and
    "wrong" subsets are descriptive only, with no p_holm and the verdict "descriptive (subset)"; deletion and
    insertion over the row's images with curves, ``n_curve_images``; where even a win on every image
    could not pass after Holm's correction over its family (:func:`enough_images`: 8 faithfulness
    tests need at least 8 images with curves), the verdict is "too few images". A failed test means
    no evidence of the property, not evidence against it:

    - deletion passes when the map's deletion area is below its shifted baseline's in significantly
      more than half the images, **and** the 95% bootstrap interval of the paired mean difference
      (map - baseline, ``deletion_diff_*``) lies below 0; insertion likewise, above 0. The deletion
      and insertion tests of the "all" rows form one family. faithfulness_verdict: "faithful" when both
      pass, "partly faithful (...)" when one does, else "not faithful".
    - faithfulness_verdict_old_rule: the previous rule on the same images, for comparison: sign tests
      against the scattered-noise baseline at ``alpha``, no correction, no interval.
    - sanity_verdict "passes" when |rank correlation| with the random-weights network's map is below
      RANK_CORR_LIMIT (a constant random map counts as a pass) in significantly more than half the
      images, else "fails"; rank_corr_median with its 95% bootstrap interval.
    - border_verdict "interior" when the map's border share is below that of a map uniform over the
      model's box in significantly more than half the images, else "not interior".
    """
    keys = [c for c in ("model", "method") if c in per_image.columns]
    rows = []
    for values, group in per_image.groupby(keys, sort=False):
        labels = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        for subset, part in zip(SUBSETS, (group, group[group["correct"]], group[~group["correct"]])):
            if len(part):
                rows.append({**labels, "subset": subset, **settings.columns(),
                             **_group_stats(part, settings.seed)})
    table = pd.DataFrame(rows)
    tested = (table["subset"] == SUBSETS[0]).to_numpy()  # the "all" rows; subsets are descriptive only
    for column in ("deletion_p_holm", "insertion_p_holm", "sanity_p_holm", "border_p_holm"):
        table[column] = np.nan
    faithfulness_p = holm_adjusted(np.concatenate([table.loc[tested, "deletion_p"], table.loc[tested, "insertion_p"]]))
    table.loc[tested, "deletion_p_holm"], table.loc[tested, "insertion_p_holm"] = np.split(faithfulness_p, 2)
    for test in ("sanity", "border"):
        table.loc[tested, f"{test}_p_holm"] = holm_adjusted(table.loc[tested, f"{test}_p"])
    verdicts = pd.DataFrame(_verdicts(table, alpha), index=table.index)
    for column in ("faithfulness_verdict", "sanity_verdict", "border_verdict"):
        verdicts.loc[~tested & (verdicts[column] != "too few images"), column] = "descriptive (subset)"
    return table.assign(**verdicts)


def _verdicts(table: pd.DataFrame, alpha: float) -> dict[str, list[str]]:
    """The verdict columns of a summary table (rules in :func:`summarise_gradcam_checks`)."""
    verdicts = {"faithfulness_verdict": [], "faithfulness_verdict_old_rule": [], "sanity_verdict": [],
                "border_verdict": []}
    few = "too few images"
    tested = table["subset"] == "all"
    faithfulness_tests = 2 * int(tested.sum())  # the Holm family: deletion and insertion of every "all" row
    for _, row in table.iterrows():
        n, n_curves = row["n_images"], row["n_curve_images"]
        deletion = row["deletion_p_holm"] < alpha and row["deletion_diff_ci_high"] < 0
        insertion = row["insertion_p_holm"] < alpha and row["insertion_diff_ci_low"] > 0
        old = [sign_test_p(row[f"{kind}_wins_noise"], n_curves) < alpha for kind in ("deletion", "insertion")]
        verdicts["faithfulness_verdict"].append(faithfulness_label(deletion, insertion)
                                                if enough_images(n_curves, alpha, faithfulness_tests) else few)
        verdicts["faithfulness_verdict_old_rule"].append(faithfulness_label(*old) if enough_images(n_curves, alpha) else few)
        verdicts["sanity_verdict"].append(few if not enough_images(n, alpha, int(tested.sum())) else
                                          "passes" if row["sanity_p_holm"] < alpha else "fails")
        verdicts["border_verdict"].append(few if not enough_images(n, alpha, int(tested.sum())) else
                                          "interior" if row["border_p_holm"] < alpha else "not interior")
    return verdicts


# ----------------------------------------------------------------------------------------------
# The checks in words and tables
# ----------------------------------------------------------------------------------------------
def describe_checks(row: dict | pd.Series, name: str | None = None) -> str:
    """The verdicts of one :func:`summarise_gradcam_checks` row in plain words, with their numbers;
    ``name``: how to call the model (default: its code name)."""
    n = row["n_images"]
    label = " ".join(str(v) for v in (name or row.get("model"), row["method"]) if v is not None)
    return (f"{label}, {row['subset']} predictions ({n} images: {row['n_normal']} NORMAL, "
            f"{row['n_pneumonia']} PNEUMONIA):\n"
            f"  faithfulness: {row['faithfulness_verdict'].upper()}. Deleting pixels in the map's order leaves "
            f"a deletion area {row['deletion_diff_mean']:+.3f} [{row['deletion_diff_ci_low']:+.3f}, "
            f"{row['deletion_diff_ci_high']:+.3f}] from the shifted map's (lower in {row['deletion_wins']} of "
            f"{row['n_curve_images']} images with curves, "
            f"Holm p = {row['deletion_p_holm']:.2g}); inserting them, an insertion area "
            f"{row['insertion_diff_mean']:+.3f} [{row['insertion_diff_ci_low']:+.3f}, "
            f"{row['insertion_diff_ci_high']:+.3f}] (higher in {row['insertion_wins']} of {row['n_curve_images']}, "
            f"Holm p = {row['insertion_p_holm']:.2g}). Old rule: {row['faithfulness_verdict_old_rule']}.\n"
            f"  sanity check: {row['sanity_verdict']}. Rank correlation with a random-weights network's map: "
            f"median {row['rank_corr_median']:+.2f} [{row['rank_corr_ci_low']:+.2f}, {row['rank_corr_ci_high']:+.2f}]; "
            f"|r| < {RANK_CORR_LIMIT} in {row['sanity_passes']} of {n} images "
            f"({row['random_maps_constant']} random maps constant).\n"
            f"  borders: {row['border_verdict']}. Border share {row['border_share']:.2f} on average, below a "
            f"uniform map's {row['border_share_uniform']:.2f} in {row['border_passes']} of {n} images.")


CHECK_COLUMNS: dict[str, str] = {  # summary column -> readable heading, for the notebook's table
    "model": "model", "method": "method", "subset": "predictions", "n_images": "images",
    "deletion_diff_mean": "deletion: map - shifted", "deletion_diff_ci_low": "deletion CI low",
    "deletion_diff_ci_high": "deletion CI high", "deletion_p_holm": "deletion p (Holm)",
    "insertion_diff_mean": "insertion: map - shifted", "insertion_diff_ci_low": "insertion CI low",
    "insertion_diff_ci_high": "insertion CI high", "insertion_p_holm": "insertion p (Holm)",
    "faithfulness_verdict": "faithfulness", "faithfulness_verdict_old_rule": "old rule",
    "rank_corr_median": "rank corr. (median)", "sanity_verdict": "sanity",
    "border_share": "border share", "border_share_uniform": "uniform map's", "border_verdict": "borders"}


def readable_checks(checks: pd.DataFrame, names: dict[str, str] | None = None, digits: int = 3) -> pd.DataFrame:
    """The summary's main columns (:data:`CHECK_COLUMNS`) under readable headings, numbers rounded to
    ``digits``, model code names replaced by ``names`` where given."""
    table = checks[[c for c in CHECK_COLUMNS if c in checks.columns]].round(digits)
    if "model" in table.columns and names:
        table["model"] = table["model"].map(lambda m: names.get(m, m))
    return table.rename(columns=CHECK_COLUMNS)


def verdict_changes(before: pd.DataFrame, after: pd.DataFrame, before_column: str = "faithfulness_verdict",
                    after_column: str = "faithfulness_verdict") -> pd.DataFrame:
    """Rows (model, method, subset) present in both tables whose verdicts differ: columns model, method,
    subset, before, after."""
    keys = [c for c in ("model", "method", "subset") if c in before.columns and c in after.columns]
    joined = before[keys + [before_column]].rename(columns={before_column: "before"}).merge(
        after[keys + [after_column]].rename(columns={after_column: "after"}), on=keys)
    return joined[joined["before"] != joined["after"]].reset_index(drop=True)


def _trust_problems(row: pd.Series) -> list[str]:
    """What keeps one summary row's maps from being trusted (empty: faithful, sane, interior)."""
    problems = []
    if row["faithfulness_verdict"] != "faithful":
        problems.append(f"faithfulness {row['faithfulness_verdict']}")
    if row["sanity_verdict"] != "passes":
        problems.append("fails the sanity check" if row["sanity_verdict"] == "fails" else row["sanity_verdict"])
    if row["border_verdict"] != "interior":
        problems.append("not kept off the border" if row["border_verdict"] == "not interior" else row["border_verdict"])
    return problems


def findings_markdown(checks: pd.DataFrame, names: dict[str, str] | None = None,
                      previous: pd.DataFrame | None = None) -> str:
    """The notebook's closing findings, generated from the summary table (subset "all").

    Per model: whether each method's maps are faithful (with the deletion and insertion effects),
    pass the sanity check and stay off the image border (as far as the share of the map in the outer frame can tell); then how much the faithfulness tests could show with the images they had; the models
    whose maps should not be trusted (no method passes all three); then
    the "all" rows whose faithfulness verdict changes between the old rule and the new on the same images,
    and, when ``previous`` (an earlier summary table) is given, against it."""
    names = names or {}
    everything = checks[checks["subset"] == "all"]
    lines, distrusted = [], []
    for model, rows in everything.groupby("model", sort=False):
        name = names.get(model, model)
        parts = []
        for _, row in rows.iterrows():
            parts.append(
                f"{row['method']}: faithfulness **{row['faithfulness_verdict']}** (deletion area "
                f"{row['deletion_diff_mean']:+.3f} [{row['deletion_diff_ci_low']:+.3f}, {row['deletion_diff_ci_high']:+.3f}], "
                f"insertion area {row['insertion_diff_mean']:+.3f} [{row['insertion_diff_ci_low']:+.3f}, "
                f"{row['insertion_diff_ci_high']:+.3f}] against the shifted map), sanity **{row['sanity_verdict']}** "
                f"(median rank correlation {row['rank_corr_median']:+.2f}), borders **{row['border_verdict']}** "
                f"(border share {row['border_share']:.2f} vs {row['border_share_uniform']:.2f} for a uniform map)")
        trusted = [row["method"] for _, row in rows.iterrows() if not _trust_problems(row)]
        verdict = (f"Its {' and '.join(trusted)} maps pass all three checks." if trusted else
                   "None of its maps passes all three checks: " + "; ".join(
                       f"{row['method']} {', '.join(_trust_problems(row))}" for _, row in rows.iterrows()) + ".")
        if not trusted:
            distrusted.append(name)
        lines.append(f"- **{name}** ({rows['n_images'].iloc[0]} test images): " + "; ".join(parts) + f". {verdict}")
    lines.append("")
    lines.append(_power_sentence(checks))
    lines.append("")
    lines.append(("**Maps that should not be trusted:** " + ", ".join(distrusted) + ".") if distrusted else
                 "Every model has at least one method whose maps pass all three checks.")
    changed = verdict_changes(everything, everything, "faithfulness_verdict_old_rule")  # subsets: descriptive
    lines.append("")
    lines.append(_changes_sentence(changed, names, "Under the old rule (sign tests against the scattered-noise "
                                                   "baseline, no correction, no interval) on the same images"))
    if previous is not None:
        lines.append("")
        lines.append(_changes_sentence(verdict_changes(previous, everything), names,
                                       "Against the previous table (earlier networks and curves)"))
    return "\n".join(lines)


def _power_sentence(checks: pd.DataFrame, alpha: float = ALPHA) -> str:
    """How much the faithfulness tests of a summary table could show: images with curves, tests in
    Holm's family, and the smallest p-value possible."""
    n = int(checks["n_curve_images"].max())
    tests = int(checks[["deletion_p_holm", "insertion_p_holm"]].notna().sum().sum())  # Holm's family: the "all" rows
    sentence = (f"Deletion and insertion ran on {n} images per model, and Holm's correction covers {tests} tests: "
                f"a map that wins on every image has a sign-test p-value of {0.5 ** n:.2g} before the correction")
    if 0.5 ** n * tests >= alpha:
        return sentence + (f", up to {0.5 ** n * tests:.2g} after it; with this few images \"not faithful\" "
                           f"means not shown to be faithful, not shown to be unfaithful.")
    return sentence + "."


def _changes_sentence(changes: pd.DataFrame, names: dict[str, str], context: str) -> str:
    """One sentence listing verdict changes (rows of :func:`verdict_changes`)."""
    if changes.empty:
        return f"{context}, no row's faithfulness verdict differs."
    listed = "; ".join(f"{names.get(r['model'], r['model'])} {r['method']} ({r['subset']}): {r['before']} → {r['after']}"
                       for _, r in changes.iterrows())
    return f"{context}, {len(changes)} rows change faithfulness verdict: {listed}."


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------
def plot_faithfulness_curves(result: FaithfulnessResult, title: str):
    """Mean deletion and insertion curves (explained class's probability vs fraction of pixels) of
    each method and of its baselines, side by side."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for axis, kind in zip(axes, ("deletion", "insertion")):
        for name, curves in result.curves.items():
            area = curve_area(curves[kind], result.fractions).mean()
            axis.plot(result.fractions, curves[kind].mean(axis=0), linestyle=":" if name == "noise" else
                      "--" if name.endswith("shifted") else "-", label=f"{name} (area {area:.3f})")
        axis.set(xlabel=f"fraction of pixels {'deleted' if kind == 'deletion' else 'inserted'}",
                 ylabel="probability of the explained class", title=kind, ylim=(0, 1))
        axis.legend(fontsize=8)
    figure.suptitle(title)
    return figure


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
                      suptitle: str, alpha: float = 0.4, colormap: str = "jet"):
    """One row per image: the X-ray, then one overlay per method in ``heatmap_sets``, with a colourbar
    of the map's scale (0 none, 1 the map's peak) and constrained layout (no overlapping titles).

    ``images`` uint8 (N, H, W, 3); each heatmap set (N, h, w) in [0, 1]; ``titles`` one per row."""
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    columns = 1 + len(heatmap_sets)
    figure, axes = plt.subplots(len(images), columns, figsize=(2.6 * columns + 0.6, 2.8 * len(images)),
                                squeeze=False, layout="constrained")
    for row, (image, title) in enumerate(zip(images, titles)):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(title, fontsize=8)
        for column, (method, heatmaps) in enumerate(heatmap_sets.items(), start=1):
            axes[row, column].imshow(overlay_heatmap(image, heatmaps[row], alpha, colormap))
            axes[row, column].set_title(method, fontsize=8)
    for axis in axes.ravel():
        axis.axis("off")
    figure.colorbar(ScalarMappable(Normalize(0, 1), colormap), ax=axes[:, 1:], shrink=min(1.0, 2.0 / len(images)),
                    label="map value (1 = the map's peak)")
    figure.suptitle(suptitle)
    return figure
