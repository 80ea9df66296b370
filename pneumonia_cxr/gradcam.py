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
from .common import CLASS_NAMES, IMAGE_SIZE
from .data import subsample_per_class
from .evaluation import sigmoid
from .models import _keras
from .training import predict_logits


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


METHODS: tuple[str, str] = ("gradcam", "gradcam++")


def _conv_and_logit_gradients(images, parts, output_layer, class_index, threshold):
    """Forward once; return conv activations A (N, h, w, C) and d score / dA (float32), and
    probabilities (N,) float64. Score = logit for PNEUMONIA, -logit for NORMAL; ``class_index`` None
    explains the predicted class. ``parts`` and ``output_layer`` come from :func:`_gradcam_parts`.

    Probabilities are the float64 sigmoid of the logits, so that the decision ``probability >=
    threshold`` holds where a float32 sigmoid would saturate at 1.0 (logits beyond about 17)."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images, dtype=tf.float32)
    with tf.GradientTape() as tape:
        conv_out, penultimate = parts(images, training=False)
        tape.watch(conv_out)
        logits = tf.squeeze(tf.matmul(tf.cast(penultimate, tf.float32), tf.cast(output_layer.kernel, tf.float32))
                            + tf.cast(output_layer.bias, tf.float32), axis=-1)
        probabilities = sigmoid(logits.numpy())
        if class_index is None:
            explained = probabilities >= threshold
        else:
            explained = np.broadcast_to(class_index, probabilities.shape)
        scores = tf.where(tf.constant(np.asarray(explained) == 1), logits, -logits)
        total = tf.reduce_sum(scores)  # images are independent: d total / dA_i = d score_i / dA_i
    grads = tape.gradient(total, conv_out)
    return (np.asarray(conv_out, np.float32), np.asarray(grads, np.float32), probabilities)


def _maps_from_gradients(activations: np.ndarray, grads: np.ndarray, method: str) -> np.ndarray:
    """Normalised maps (N, h, w) from activations and score gradients (N, h, w, C) by ``method``."""
    if method == "gradcam":
        weights = grads.mean(axis=(1, 2))
    else:  # gradcam++: Chattopadhay et al. 2018, exponential-score closed form
        grads_2, grads_3 = grads ** 2, grads ** 3
        sum_activations = activations.sum(axis=(1, 2), keepdims=True)
        denominator = 2 * grads_2 + sum_activations * grads_3
        alphas = grads_2 / np.where(denominator != 0, denominator, 1.0)
        weights = (alphas * np.maximum(grads, 0)).sum(axis=(1, 2))
    return _normalise_maps(np.einsum("nhwc,nc->nhw", activations, weights))


def _normalise_maps(cams: np.ndarray) -> np.ndarray:
    """ReLU then scale each map (N, h, w) to [0, 1]; an all-zero map where nothing is positive."""
    cams = np.maximum(cams, 0.0)
    peak = cams.reshape(len(cams), -1).max(axis=1)
    scale = np.where(peak > 0, peak, 1.0)
    return (cams / scale[:, None, None]).astype(np.float32)


def gradcam_maps(images, model, last_conv_layer_name: str | None = None,
                 class_index: int | Sequence[int] | None = None, threshold: float = 0.5,
                 methods: Sequence[str] = METHODS, batch_size: int = 16) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Maps of several methods from one forward pass per batch of ``batch_size`` images.

    Args:
        images: float32 (N, H, W, 3) in [0, 1] (224 x 224 for this project's models).
        class_index: None explains the predicted class (probability >= threshold -> PNEUMONIA);
            1 explains PNEUMONIA (score = logit); 0 explains NORMAL (score = -logit); an array (N,)
            gives the class per image.
        methods: any of "gradcam" (channel weights = mean gradient) and "gradcam++" (Chattopadhay
            et al. 2018, with the exponential-score closed form).
        batch_size: images per forward and backward pass; bounds the memory the gradient tape holds.

    Returns:
        ({method: float32 (N, h, w) in [0, 1] at the conv layer's resolution}, probabilities of
        PNEUMONIA (N,) float64 from the same forward pass).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown method {unknown or list(methods)}: use 'gradcam' or 'gradcam++'")
    images = np.asarray(images, np.float32)
    classes = None if class_index is None else np.broadcast_to(np.asarray(class_index), (len(images),))
    parts, output_layer = _gradcam_parts(model, last_conv_layer_name)
    maps, probabilities = {m: [] for m in methods}, []
    for start in range(0, len(images), batch_size):
        chunk = slice(start, start + batch_size)
        activations, grads, chunk_probabilities = _conv_and_logit_gradients(
            images[chunk], parts, output_layer, None if classes is None else classes[chunk], threshold)
        for method in methods:
            maps[method].append(_maps_from_gradients(activations, grads, method))
        probabilities.append(chunk_probabilities)
    return {m: np.concatenate(v) for m, v in maps.items()}, np.concatenate(probabilities)


def make_gradcam_heatmaps(images, model, last_conv_layer_name: str | None = None,
                          class_index: int | Sequence[int] | None = None, threshold: float = 0.5,
                          method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (or Grad-CAM++) maps of a batch, with the predictions of the same forward pass.

    One method of :func:`gradcam_maps` (same arguments).

    Returns:
        (heatmaps float32 (N, h, w) in [0, 1] at the conv layer's resolution, probabilities (N,)).
    """
    maps, probabilities = gradcam_maps(images, model, last_conv_layer_name, class_index, threshold, (method,))
    return maps[method], probabilities


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
# Deletion and insertion: remove or reveal pixels in a map's order vs a random order
# ----------------------------------------------------------------------------------------------
TOP_K_FRACTIONS: tuple[float, ...] = (0.1, 0.2)  # the top-k masking test: points of the deletion curve


def upsample_maps(heatmaps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Maps (N, h, w) resized bilinearly to ``size`` (H, W) pixels: float32 (N, H, W)."""
    import tensorflow as tf

    heatmaps = np.asarray(heatmaps, np.float32)
    return tf.image.resize(heatmaps[..., None], size, method="bilinear").numpy()[..., 0]


def smooth_random_maps(count: int, map_shape: tuple[int, int], size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Uniform random maps at a map's own resolution ``map_shape`` (h, w), upsampled like the maps
    to ``size`` (H, W): float32 (count, H, W). Their top pixels form blobs of a map cell's size, so
    a random order made from them removes pixels in regions shaped like a map's, not scattered."""
    rng = np.random.default_rng(seed)
    return upsample_maps(rng.random((count, *map_shape), dtype=np.float32), size)


def pixel_orders(maps: np.ndarray, tie_breaker: np.ndarray) -> np.ndarray:
    """Flat pixel indices (N, H*W) of maps (N, H, W), highest value first; equal values (a map's
    zero region) are ordered by ``tie_breaker`` (N, H, W), highest first."""
    n = len(maps)
    return np.lexsort((-tie_breaker.reshape(n, -1), -maps.reshape(n, -1)), axis=-1)


def top_k_masks(orders: np.ndarray, k: int, size: tuple[int, int]) -> np.ndarray:
    """Boolean masks (N, H, W) of the first ``k`` pixels of each order (N, H*W): exactly k pixels each."""
    masks = np.zeros(orders.shape, bool)
    np.put_along_axis(masks, orders[:, :k], True, axis=1)
    return masks.reshape(len(orders), *size)


def baseline_images(images: np.ndarray, fill: str = "blur", blur_sigma: float = 10.0) -> np.ndarray:
    """What a removed pixel becomes (N, H, W, 3): ``"blur"`` a Gaussian blur of the image
    (``blur_sigma`` in pixels), ``"mean"`` the image's mean colour."""
    from scipy.ndimage import gaussian_filter

    images = np.asarray(images, np.float32)
    if fill == "blur":
        return gaussian_filter(images, sigma=(0, blur_sigma, blur_sigma, 0), mode="nearest")
    if fill == "mean":
        return np.broadcast_to(images.mean(axis=(1, 2), keepdims=True), images.shape).copy()
    raise ValueError(f"Unknown fill '{fill}': use 'blur' or 'mean'")


def explained_score(probabilities: np.ndarray, explained: np.ndarray) -> np.ndarray:
    """Probability (N,) of the explained class: P(PNEUMONIA) where explained is 1, else 1 - it."""
    return np.where(np.asarray(explained) == 1, probabilities, 1.0 - probabilities)


def curve_fractions(steps: int, extra: Sequence[float] = TOP_K_FRACTIONS) -> np.ndarray:
    """Fractions of pixels removed / revealed: 0, 1/steps, ..., 1 plus ``extra`` (sorted, unique)."""
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    return np.unique(np.round(np.concatenate([np.linspace(0.0, 1.0, steps + 1), np.asarray(extra, np.float64)]), 12))


def deletion_insertion_curves(model, images: np.ndarray, orders: dict[str, np.ndarray], explained: np.ndarray,
                              fractions: np.ndarray, fill: str = "blur",
                              batch_size: int = 32) -> dict[str, dict[str, np.ndarray]]:
    """Score of the explained class as pixels are removed (deletion) or revealed (insertion).

    Deletion at fraction f: the first f of each order's pixels replaced by :func:`baseline_images`;
    insertion: the baseline image with those pixels restored. Every order and both kinds are scored
    in one batch per fraction; fractions 0 and 1 are the image and the baseline, shared by all orders.

    Args:
        images: float32 (N, H, W, 3) in [0, 1]; orders: {name: flat pixel indices (N, H*W)};
        explained: class (N,) whose probability is the score; fractions: (S,) in [0, 1].

    Returns:
        {name: {"deletion": (N, S), "insertion": (N, S)}} probabilities of the explained class
        (float64 sigmoid of the model's logits: distinct even where a float32 sigmoid saturates).
    """
    images = np.asarray(images, np.float32)
    n, height, width = images.shape[:3]
    baseline = baseline_images(images, fill)
    names = list(orders)

    def score(batch: np.ndarray, copies: int) -> np.ndarray:
        return explained_score(sigmoid(predict_logits(model, batch, batch_size)), np.tile(explained, copies))

    full, empty = score(images, 1), score(baseline, 1)
    curves = {name: {"deletion": np.empty((n, len(fractions))), "insertion": np.empty((n, len(fractions)))}
              for name in names}
    for j, fraction in enumerate(fractions):
        k = int(round(fraction * height * width))
        if k in (0, height * width):
            for name in names:
                curves[name]["deletion"][:, j] = full if k == 0 else empty
                curves[name]["insertion"][:, j] = empty if k == 0 else full
            continue
        batch = []
        for name in names:
            mask = top_k_masks(orders[name], k, (height, width))[..., None]
            batch += [np.where(mask, baseline, images), np.where(mask, images, baseline)]
        scores = score(np.concatenate(batch), len(batch)).reshape(len(names), 2, n)
        for i, name in enumerate(names):
            curves[name]["deletion"][:, j], curves[name]["insertion"][:, j] = scores[i]
    return curves


def curve_area(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Area (N,) under curves (N, S) over fractions 0 -> 1 (trapezoids): the mean score, in [0, 1]."""
    return np.trapezoid(curves, fractions, axis=1)


# ----------------------------------------------------------------------------------------------
# Verdict rules: one-sided sign tests over images
# ----------------------------------------------------------------------------------------------
ALPHA = 0.05
RANK_CORR_LIMIT = 0.5  # the sanity check: a map "differs" from the random network's below this


def sign_test_p(successes: int, n: int) -> float:
    """One-sided sign test: P(X >= successes) for X ~ Binomial(n, 1/2); 1.0 when n is 0."""
    from scipy.stats import binom

    return float(binom.sf(successes - 1, n, 0.5)) if n > 0 else 1.0


def passes_sign_test(successes: int, n: int, alpha: float = ALPHA) -> bool | None:
    """Whether ``successes`` of ``n`` images are significantly more than half (sign_test_p < alpha);
    None when n is too small for any result to be significant (0.5 ** n >= alpha: n < 5 at 0.05)."""
    if 0.5 ** n >= alpha:
        return None
    return sign_test_p(successes, n) < alpha


def faithfulness_verdict(deletion_wins: int, insertion_wins: int, n: int, alpha: float = ALPHA) -> str:
    """Faithfulness verdict from the images (of ``n``) where the map beat random on deletion and on
    insertion: "faithful" when both pass :func:`passes_sign_test`, "partly faithful (deletion)" or
    "partly faithful (insertion)" when one does, "not faithful" when neither, "too few images" when
    ``n`` is too small to decide."""
    deletion, insertion = passes_sign_test(deletion_wins, n, alpha), passes_sign_test(insertion_wins, n, alpha)
    if deletion is None:
        return "too few images"
    if deletion and insertion:
        return "faithful"
    if deletion or insertion:
        return f"partly faithful ({'deletion' if deletion else 'insertion'})"
    return "not faithful"


def _yes_no_verdict(successes: int, n: int, yes: str, no: str, alpha: float = ALPHA) -> str:
    """``yes`` / ``no`` by :func:`passes_sign_test`, "too few images" when it cannot decide."""
    result = passes_sign_test(successes, n, alpha)
    return "too few images" if result is None else (yes if result else no)


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
    markers and collimation edges sit; 0.36 for a uniform map with border 0.1 (when 10% of the
    side is a whole number of pixels). NaN for empty maps."""
    heatmaps = np.asarray(heatmaps, np.float64)
    _, height, width = heatmaps.shape
    mask = np.ones((height, width), bool)
    top, left = max(1, round(height * border)), max(1, round(width * border))
    mask[top:height - top, left:width - left] = False
    total = heatmaps.sum(axis=(1, 2))
    return np.where(total > 0, (heatmaps * mask).sum(axis=(1, 2)) / np.where(total > 0, total, 1), np.nan)


@dataclass
class FaithfulnessResult:
    """Per-image faithfulness numbers and the curves they come from.

    ``per_image``: one row per (image, map set) with columns image (position), method,
    deletion_auc, deletion_auc_random, insertion_auc, insertion_auc_random, drop_top10,
    drop_random10, drop_top20, drop_random20 (for TOP_K_FRACTIONS); ``fractions`` (S,);
    ``curves``: {map set or "random": {"deletion"/"insertion": (N, S)}}."""

    per_image: pd.DataFrame
    fractions: np.ndarray
    curves: dict[str, dict[str, np.ndarray]]


def faithfulness(model, images: np.ndarray, maps: dict[str, np.ndarray], explained: np.ndarray,
                 steps: int = 10, fill: str = "blur", seed: int = 0) -> FaithfulnessResult:
    """Deletion and insertion curves of each map set against a random order of the same shape.

    The random order ranks the pixels of :func:`smooth_random_maps` at the maps' resolution (one
    per image, shared by all map sets); it also breaks ties inside a map's zero region, so an empty
    map scores exactly like random. A faithful map has a lower deletion area and a higher
    insertion area than random. ``drop_topXX`` / ``drop_randomXX``: fall of the explained class's
    probability when the map's top XX% of pixels, or as many in the random order (the top of a
    smooth random map: same pixel count, blobs of the map's scale), are removed.

    Args:
        images: float32 (N, H, W, 3) in [0, 1]; maps: {name: (N, h, w)} all at one resolution;
        explained: class (N,) each map explains; steps: curve points are 0, 1/steps, ..., 1 and
        TOP_K_FRACTIONS; fill: "blur" or "mean" (:func:`baseline_images`).
    """
    size = tuple(images.shape[1:3])
    map_shape = next(iter(maps.values())).shape[1:]
    random_maps = smooth_random_maps(len(images), map_shape, size, seed)
    orders = {name: pixel_orders(upsample_maps(m, size), random_maps) for name, m in maps.items()}
    orders["random"] = pixel_orders(random_maps, random_maps)
    fractions = curve_fractions(steps)
    curves = deletion_insertion_curves(model, images, orders, explained, fractions, fill)
    frames = []
    for name in maps:
        row = {"image": np.arange(len(images)), "method": name}
        for kind in ("deletion", "insertion"):
            row[f"{kind}_auc"] = curve_area(curves[name][kind], fractions)
            row[f"{kind}_auc_random"] = curve_area(curves["random"][kind], fractions)
        for fraction in TOP_K_FRACTIONS:
            j = int(np.flatnonzero(np.isclose(fractions, fraction))[0])
            for label, order in (("top", name), ("random", "random")):
                deletion = curves[order]["deletion"]
                row[f"drop_{label}{round(fraction * 100)}"] = deletion[:, 0] - deletion[:, j]
        frames.append(pd.DataFrame(row))
    return FaithfulnessResult(pd.concat(frames, ignore_index=True), fractions, curves)


def gradcam_checks(model, images: np.ndarray, y_true: Sequence[int], maps: dict[str, np.ndarray],
                   probabilities: np.ndarray, threshold: float, last_conv_layer_name: str | None = None,
                   steps: int = 10, fill: str = "blur", seed: int = 0) -> FaithfulnessResult:
    """All trust checks of one model's maps, per image (summarise with :func:`summarise_gradcam_checks`).

    Args:
        images: float32 (N, 224, 224, 3); y_true: labels (N,); maps, probabilities: from
            :func:`gradcam_maps` of these images explaining the predicted class at ``threshold``.

    Returns:
        :class:`FaithfulnessResult` whose ``per_image`` also has: true, predicted, correct;
        rank_corr_random_weights (Spearman correlation with the maps of the same architecture with
        random weights, same class explained; Adebayo et al. 2018); border_mass (share of the map,
        upsampled to the image, in the outer 10% frame; 0.354 for a uniform 224 x 224 map); empty_map (no
        positive evidence).
    """
    y_true = np.asarray(y_true).astype(int)
    predicted = (np.asarray(probabilities) >= threshold).astype(int)
    random_maps, _ = gradcam_maps(images, randomised_copy(model, seed), last_conv_layer_name,
                                  class_index=predicted, methods=list(maps))
    result = faithfulness(model, images, maps, predicted, steps, fill, seed)
    extra = []
    for name, heatmaps in maps.items():
        extra.append(pd.DataFrame({
            "true": y_true, "predicted": predicted, "correct": predicted == y_true,
            "rank_corr_random_weights": map_rank_correlation(heatmaps, random_maps[name]),
            "border_mass": border_mass(upsample_maps(heatmaps, tuple(images.shape[1:3]))),
            "empty_map": heatmaps.reshape(len(heatmaps), -1).max(axis=1) == 0}))
    result.per_image = pd.concat([result.per_image, pd.concat(extra, ignore_index=True)], axis=1)
    return result


def _summary_row(rows: pd.DataFrame, alpha: float) -> dict:
    """Counts, means, wins over random and verdicts of one group of per-image check rows."""
    n = len(rows)
    uniform_border = float(border_mass(np.ones((1, *IMAGE_SIZE)))[0])  # maps are compared at image size
    wins = {"deletion_wins": int((rows["deletion_auc"] < rows["deletion_auc_random"]).sum()),
            "insertion_wins": int((rows["insertion_auc"] > rows["insertion_auc_random"]).sum()),
            "sanity_passes": int((rows["rank_corr_random_weights"].abs() < RANK_CORR_LIMIT).sum()),
            "border_passes": int((rows["border_mass"] < uniform_border).sum())}
    means = {c: float(rows[c].mean()) for c in rows.columns if c.startswith(("deletion_auc", "insertion_auc", "drop_"))
             or c in ("rank_corr_random_weights", "border_mass")}
    return {"n_images": n, "n_normal": int((rows["true"] == 0).sum()), "n_pneumonia": int((rows["true"] == 1).sum()),
            "n_correct": int(rows["correct"].sum()), "n_wrong": int((~rows["correct"]).sum()),
            **means, **wins, "empty_maps": float(rows["empty_map"].mean()),
            "deletion_p": sign_test_p(wins["deletion_wins"], n), "insertion_p": sign_test_p(wins["insertion_wins"], n),
            "faithfulness_verdict": faithfulness_verdict(wins["deletion_wins"], wins["insertion_wins"], n, alpha),
            "sanity_verdict": _yes_no_verdict(wins["sanity_passes"], n, "passes", "fails", alpha),
            "border_verdict": _yes_no_verdict(wins["border_passes"], n, "interior", "not interior", alpha)}


def summarise_gradcam_checks(per_image: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per (model if present, method, subset): subset "all", "correct" and "wrong"
    (predictions), empty subsets left out.

    Verdict rules (one-sided sign test over the images of the row, :func:`passes_sign_test`):
    - faithfulness_verdict: deletion wins where the map's deletion area is below random's,
      insertion wins where its insertion area is above; see :func:`faithfulness_verdict`.
    - sanity_verdict "passes" when |rank correlation| with the random network's map is below
      RANK_CORR_LIMIT in significantly more than half the images, else "fails".
    - border_verdict "interior" when the border share is below a uniform map's in significantly
      more than half the images, else "not interior".
    Ties and NaN (empty maps) count against the map.
    """
    keys = [c for c in ("model", "method") if c in per_image.columns]
    rows = []
    for values, group in per_image.groupby(keys, sort=False):
        labels = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        for subset, part in (("all", group), ("correct", group[group["correct"]]), ("wrong", group[~group["correct"]])):
            if len(part):
                rows.append({**labels, "subset": subset, **_summary_row(part, alpha)})
    return pd.DataFrame(rows)


def describe_checks(row: dict | pd.Series) -> str:
    """The verdicts of one :func:`summarise_gradcam_checks` row in plain words, with their counts."""
    n = row["n_images"]
    label = " ".join(str(row[c]) for c in ("model", "method") if c in row)
    return (f"{label}, {row['subset']} predictions ({n} images: {row['n_normal']} NORMAL, "
            f"{row['n_pneumonia']} PNEUMONIA):\n"
            f"  faithfulness: {row['faithfulness_verdict'].upper()}. Removing pixels in the map's order lowers "
            f"the score more than the same-shape random order in {row['deletion_wins']} of {n} images "
            f"(sign test p = {row['deletion_p']:.2g}); revealing them raises it more in "
            f"{row['insertion_wins']} of {n} (p = {row['insertion_p']:.2g}).\n"
            f"  sanity check: {row['sanity_verdict']}. The map differs from a random-weight network's "
            f"(|rank correlation| < {RANK_CORR_LIMIT}) in {row['sanity_passes']} of {n} images.\n"
            f"  borders: {row['border_verdict']}. Less of the map on the border than a uniform map in "
            f"{row['border_passes']} of {n} images.")


def plot_faithfulness_curves(result: FaithfulnessResult, title: str):
    """Mean deletion and insertion curves (explained class's probability vs fraction of pixels)
    of each map set and of the random order, side by side."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, kind in zip(axes, ("deletion", "insertion")):
        for name, curves in result.curves.items():
            area = curve_area(curves[kind], result.fractions).mean()
            axis.plot(result.fractions, curves[kind].mean(axis=0), marker=".",
                      linestyle="--" if name == "random" else "-", label=f"{name} (area {area:.3f})")
        axis.set(xlabel=f"fraction of pixels {'removed' if kind == 'deletion' else 'revealed'}",
                 ylabel="probability of the explained class", title=kind, ylim=(0, 1))
        axis.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
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
