"""Grad-CAM and Grad-CAM++ for a one-unit sigmoid classifier, and the checks that make maps trustworthy."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from . import models
from .models import _keras
from .training import predict_probabilities


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
    name = last_conv_layer_name or models.last_conv_layer_name(model)
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
