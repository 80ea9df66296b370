"""How far Grad-CAM maps can be trusted: the test sample, ROAD curves against same-shape baselines,
cascading randomisation, the border share, and the rules that turn them into verdicts.

This module and :mod:`pneumonia_cxr.gradcam_stats` (the statistics and verdicts) are the one home
of the rules: every constant a verdict depends on is defined here, and
:mod:`pneumonia_cxr.gradcam_report` writes the words (notebook findings, README table, docs) from
these constants and from the tables ``gradcam_stats.summarise_checks`` returns.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .common import CLASS_NAMES
from .gradcam import GradCamBatch, GradCamExplainer, crop_to_box, place_in_frame
from .models import _keras

# ----------------------------------------------------------------------------------------------
# The rules' constants
# ----------------------------------------------------------------------------------------------
ALPHA = 0.05  # family-wise error rate of each Holm family
PERCENTILES: tuple[int, ...] = tuple(range(10, 100, 10))  # ROAD: % of the seen pixels removed per curve point
ROAD_NOISE = 0.01  # standard deviation of the noise added to imputed pixels, in input units ([0, 1])
TIE_TOLERANCE = 1e-3  # logit units: |map - baseline| at or below this is a tie (float32 batches differ ~1e-5)
RANK_CORR_LIMIT = 0.5  # sanity: a map "differs" from the randomised network's when |Spearman rho| is below this
BORDER_FRACTION = 0.1  # the border: this share of each side of the crop the model sees
SHIFT_FRACTION = 0.5  # baseline copies move by up to this share of the crop's side, without wrapping
BOOTSTRAP_RESAMPLES = 4000  # BCa intervals (scipy.stats.bootstrap)
SUBSETS: tuple[str, str, str] = ("all", "correct", "wrong")  # only "all" is tested; the others are descriptive
CURVE_ORDERS: tuple[str, str] = ("morf", "lerf")  # most-relevant-first: lower is better; least-relevant-first: higher
BETTER_SIGN = {"morf": -1, "lerf": 1}  # the sign of map - baseline that favours the map


@dataclass(frozen=True)
class CheckSettings:
    """How the checks are run (the notebook's parameters).

    baseline_draws: shifted copies of each map, each scored at every curve point (so draws per point
    = baseline_draws). sanity_seeds: re-initialisations of the cascading randomisation;
    sanity_stages: at most this many cascade depths are scored (spaced geometrically from the top).
    curve_methods: the methods whose maps get ROAD curves. seed: of the copies, the imputation noise,
    the tie-breaking order and the bootstrap."""

    baseline_draws: int = 10
    sanity_seeds: int = 3
    sanity_stages: int = 6
    curve_methods: tuple[str, ...] = ("gradcam",)
    seed: int = 0

    def columns(self) -> dict[str, object]:
        """The settings as the summary table's columns."""
        return {"curve_score": "logit", "tie_tolerance": TIE_TOLERANCE, "curve_kind": "road",
                "curve_points": len(PERCENTILES), "road_noise": ROAD_NOISE, "baseline_draws": self.baseline_draws,
                "baseline_draws_per_point": self.baseline_draws, "sanity_randomisation": "cascading",
                "sanity_seeds": self.sanity_seeds}


# ----------------------------------------------------------------------------------------------
# Test images balanced by class
# ----------------------------------------------------------------------------------------------
def balanced_sample(index: pd.DataFrame, per_class: int, seed: int = 0, split: str = "test") -> pd.DataFrame:
    """``per_class`` rows of each class of ``split``, drawn at random (seeded), classes mixed in a
    random order (any prefix holds both).

    Raises:
        ValueError: a class of ``split`` has fewer than ``per_class`` rows.
    """
    from .dataset import subsample_per_class

    rows = index[index["split"] == split]
    counts = rows["target"].value_counts()
    short = {CLASS_NAMES[t]: int(counts.get(t, 0)) for t in (0, 1) if counts.get(t, 0) < per_class}
    if short:
        raise ValueError(f"Split '{split}' has too few images for {per_class} per class: {short}")
    picked = subsample_per_class(rows, per_class, seed=seed, by=("target",))
    return picked.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def load_test_sample(data_dir, per_class: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """(:func:`balanced_sample` of the decodable test images under ``data_dir``, their model inputs
    float32 (N, 224, 224, 3) in [0, 1])."""
    from .dataset import build_index, decodable
    from .pipeline import load_images

    sample = balanced_sample(decodable(build_index(data_dir)), per_class, seed)
    return sample, load_images(sample["path"])


# ----------------------------------------------------------------------------------------------
# Noisy linear imputation (Rong et al. 2022, ROAD), batched
# ----------------------------------------------------------------------------------------------
NEIGHBOUR_WEIGHTS = np.array([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
SOLVER_ITERATIONS = 100  # conjugate-gradient iterations on the finest grid, twice that on each coarser one
SOLVER_TOLERANCE = 1e-6  # ... fewer when every image's largest residual is below this (input units)
IMPUTATION_ERROR_LIMIT = ROAD_NOISE / 2  # largest |fill - exact solution| the tests accept, input units
COARSEST_SIDE = 8


def _weighted_sum(values):
    """Sum of each pixel's in-image 8 neighbours weighted by ROAD's weights, tf (M, H, W, 1)."""
    import tensorflow as tf

    kernel = tf.constant(NEIGHBOUR_WEIGHTS[:, :, None, None], tf.float32)
    return tf.nn.conv2d(values, kernel, 1, "SAME")


def _cascadic_solve(values, known, iterations: int, tolerance: float):
    """Cascadic conjugate gradients: solve on a 2x coarser grid (a pixel known if any of its four
    is) with twice the iterations, upsample that solution as the start, then ``iterations``
    conjugate-gradient iterations here (the coarse grids carry the far-reaching part cheaply)."""
    import tensorflow as tf

    height, width = values.shape[1], values.shape[2]
    start = values * known
    if min(height, width) > COARSEST_SIDE:
        known_share = tf.nn.avg_pool2d(known, 2, 2, "SAME")
        coarse = tf.nn.avg_pool2d(values * known, 2, 2, "SAME") / tf.maximum(known_share, 1e-12)
        solved = _cascadic_solve(coarse, tf.cast(known_share > 0, tf.float32), 2 * iterations, tolerance)
        start = known * values + (1 - known) * tf.image.resize(solved, (height, width), method="bilinear")
    return _conjugate_gradients(start, known, tolerance, iterations)


def _conjugate_gradients(values, known, tolerance: float, max_iterations: int):
    """Solve ROAD's system exactly (to ``tolerance``) by Jacobi-preconditioned conjugate gradients,
    batched, started from ``values``: for every unknown pixel i, D_i v_i - sum_j w_ij v_j = 0 over
    its in-image neighbours j (D_i their total weight), the known pixels fixed. The matrix is
    symmetric positive definite, so CG converges. One compiled graph loop for every shape; tf (M, H, W, 1)."""
    import tensorflow as tf

    return _compiled_cg()(values, known, tf.constant(tolerance, tf.float32), tf.constant(max_iterations, tf.int32))


_CG = None


def _compiled_cg():
    """The compiled loop of :func:`_conjugate_gradients` (built on first use: TensorFlow loads then)."""
    global _CG
    if _CG is not None:
        return _CG
    import tensorflow as tf

    def dot(a, b):
        return tf.reduce_sum(a * b, axis=(1, 2, 3), keepdims=True)

    grid = tf.TensorSpec([None, None, None, 1], tf.float32)

    @tf.function(input_signature=[grid, grid, tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int32)])
    def solve(values, known, tolerance, max_iterations):
        unknown = 1 - known
        total = _weighted_sum(tf.ones_like(values[:1]))

        def apply(v):  # the system's matrix on the unknowns (v zero on the known pixels)
            return unknown * (total * v - _weighted_sum(v))

        x = unknown * values
        residual = unknown * _weighted_sum(known * values) - apply(x)
        z = residual / total

        def step(i, x, residual, direction, rz):
            product = apply(direction)
            alpha = tf.math.divide_no_nan(rz, dot(direction, product))
            x, residual = x + alpha * direction, residual - alpha * product
            z = residual / total
            rz_next = dot(residual, z)
            return i + 1, x, residual, z + tf.math.divide_no_nan(rz_next, rz) * direction, rz_next

        def going(i, x, residual, direction, rz):
            return tf.logical_and(i < max_iterations, tf.reduce_max(tf.abs(residual)) >= tolerance)

        _, x, *_ = tf.while_loop(going, step, (tf.constant(0), x, residual, z, dot(residual, z)))
        return known * values + x

    _CG = solve
    return _CG


def linear_imputation(images: np.ndarray, removed: np.ndarray, iterations: int = SOLVER_ITERATIONS) -> np.ndarray:
    """ROAD's linear imputation without noise: each removed pixel (``removed`` bool (M, H, W)) of
    images float32 (M, H, W, C) becomes the weighted mean of its 8 neighbours (1/6 edge, 1/12
    diagonal neighbours; neighbours outside the image left out), removed or not: the solution of
    ROAD's sparse linear system, by batched cascadic conjugate gradients (``iterations`` on the
    image's grid, :func:`_cascadic_solve`); tests hold it within IMPUTATION_ERROR_LIMIT of scipy's
    sparse direct solve. float32 (M, H, W, C)."""
    import tensorflow as tf

    images = np.asarray(images, np.float32)
    known = tf.constant(~np.asarray(removed, bool)[..., None], tf.float32)
    channels = []
    for c in range(images.shape[-1]):
        values = tf.constant(images[..., c:c + 1])
        channels.append(np.asarray(_cascadic_solve(values, known, iterations, SOLVER_TOLERANCE)))
    return np.concatenate(channels, axis=-1)


def noisy_linear_imputation(images: np.ndarray, removed: np.ndarray, rng: np.random.Generator,
                            noise: float = ROAD_NOISE) -> np.ndarray:
    """:func:`linear_imputation` plus Gaussian noise (``noise`` standard deviation, per pixel and
    channel) on the removed pixels, as ROAD's NoisyLinearImputer. Grey images (equal channels)
    are solved once and copied to every channel. float32 (M, H, W, C)."""
    images = np.asarray(images, np.float32)
    grey = bool(np.all(images == images[..., :1]))
    filled = linear_imputation(images[..., :1] if grey else images, removed)
    filled = np.broadcast_to(filled, images.shape) if grey else filled
    jitter = rng.normal(0.0, noise, images.shape).astype(np.float32)
    return np.where(np.asarray(removed, bool)[..., None], filled + jitter, images)


# ----------------------------------------------------------------------------------------------
# ROAD curves of each map and of its same-shape copies
# ----------------------------------------------------------------------------------------------
def shifted_maps(maps: np.ndarray, draws: int, rng: np.random.Generator) -> np.ndarray:
    """The same-shape baseline: each map (N, H, W) ``draws`` times flipped (up-down and left-right,
    each with probability 1/2) and moved by a uniform offset of up to ``SHIFT_FRACTION`` of each
    side, without wrapping: what leaves the frame is dropped, what it uncovers is 0.
    float32 (N, draws, H, W)."""
    maps = np.asarray(maps, np.float32)
    height, width = maps.shape[1:]
    reach = (int(height * SHIFT_FRACTION), int(width * SHIFT_FRACTION))
    out = np.zeros((len(maps), draws, height, width), np.float32)
    for i, heatmap in enumerate(maps):
        for d in range(draws):
            flipped = heatmap[::rng.choice((1, -1)), ::rng.choice((1, -1))]
            dy, dx = (int(rng.integers(-r, r + 1)) for r in reach)
            out[i, d, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
                flipped[max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)]
    return out


def relevance_ranks(maps: np.ndarray, tie_breaker: np.ndarray) -> np.ndarray:
    """Rank of every pixel of maps (..., H, W), 0 the most relevant: by map value, highest first,
    equal values by ``tie_breaker`` (H, W), highest first. int32 of the maps' shape."""
    maps = np.asarray(maps, np.float32)
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1])
    ties = np.broadcast_to(np.asarray(tie_breaker, np.float32).ravel(), flat.shape)
    order = np.lexsort((-ties, -flat), axis=-1)
    ranks = np.empty(flat.shape, np.int32)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1], dtype=np.int32)[None], axis=-1)
    return ranks.reshape(maps.shape)


def removal_masks(ranks: np.ndarray, order: str) -> np.ndarray:
    """Pixels removed at each of :data:`PERCENTILES`: bool (len(PERCENTILES), ...) for ranks (..., H, W).
    ``"morf"`` removes the p% most relevant pixels, ``"lerf"`` the p% least relevant."""
    pixels = ranks.shape[-2] * ranks.shape[-1]
    counts = [int(round(p / 100 * pixels)) for p in PERCENTILES]
    if order == "morf":
        return np.stack([ranks < k for k in counts])
    if order == "lerf":
        return np.stack([ranks >= pixels - k for k in counts])
    raise ValueError(f"Unknown order '{order}': use one of {CURVE_ORDERS}")


def explained_logit(logits: np.ndarray, explained: np.ndarray) -> np.ndarray:
    """The score of the explained class (N,): the PNEUMONIA logit where explained is 1, its negative
    where 0 (NORMAL). Not the sigmoid, which saturates."""
    return np.where(np.asarray(explained) == 1, 1.0, -1.0) * np.asarray(logits, np.float64)


def road_curves(explainer: GradCamExplainer, images: np.ndarray, maps: dict[str, np.ndarray],
                explained: np.ndarray, settings: CheckSettings) -> dict[str, dict[str, np.ndarray]]:
    """ROAD curves of each method's maps and of their shifted copies, scored by the explained logit.

    Everything happens in the box the model sees (its centre crop): percentiles count its pixels, the
    imputation works on it, the pixels outside stay as they are. All curves of one image (every
    method, map and copies, both orders, every percentile) go through the model in one batched call.

    Args:
        images: float32 (N, H, W, 3) in [0, 1]; maps: {method: (N, H, W)} in the input's frame;
            explained: the class (N,) each map explains.

    Returns:
        {method: {"morf" / "lerf": (N, P), "morf_shifted" / "lerf_shifted": (N, draws, P)}},
        explained logits at the P = len(PERCENTILES) points, float64.
    """
    rng = np.random.default_rng(settings.seed)
    box = explainer.box
    crops = crop_to_box(images, box)
    out = {m: {k: np.empty((len(images), *([settings.baseline_draws] if k.endswith("shifted") else []),
                                len(PERCENTILES))) for k in ("morf", "lerf", "morf_shifted", "lerf_shifted")}
           for m in maps}
    for i in range(len(images)):
        tie_breaker = rng.random(crops.shape[1:3])
        rankings = []  # (method, draws + 1, H, W): the map first, then its copies
        for method, frame_maps in maps.items():
            crop_map = crop_to_box(frame_maps[i:i + 1], box)
            rankings.append(relevance_ranks(np.concatenate([crop_map[:, None], shifted_maps(
                crop_map, settings.baseline_draws, rng)], axis=1)[0], tie_breaker))
        masks = np.stack([removal_masks(np.stack(rankings), order) for order in CURVE_ORDERS])
        flat = masks.reshape(-1, *crops.shape[1:3])  # (orders x P x methods x (draws + 1), h, w)
        filled = noisy_linear_imputation(np.broadcast_to(crops[i], (len(flat), *crops.shape[1:])), flat, rng)
        batch = np.broadcast_to(images[i], (len(flat), *images.shape[1:])).copy()
        top, left, height, width = box
        batch[:, top:top + height, left:left + width] = filled
        scores = explained_logit(explainer.logits(batch), np.full(len(flat), explained[i]))
        scores = scores.reshape(masks.shape[:4])  # (orders, P, methods, draws + 1)
        for o, order in enumerate(CURVE_ORDERS):
            for m, method in enumerate(maps):
                out[method][order][i] = scores[o, :, m, 0]
                out[method][f"{order}_shifted"][i] = scores[o, :, m, 1:].T
    return out


def curve_table(curves: dict[str, dict[str, np.ndarray]], explained: np.ndarray) -> pd.DataFrame:
    """Per image and method: the mean explained logit over the percentiles of the map's MoRF and LeRF
    curves and of its copies' (their mean), the paired differences map - copies, and ROAD's combined
    score (LeRF - MoRF) / 2 of each. Columns image, method, morf_map, morf_shifted, morf_diff,
    lerf_map, lerf_shifted, lerf_diff, road_map, road_shifted."""
    frames = []
    for method, kinds in curves.items():
        frame = pd.DataFrame({"image": np.arange(len(explained)), "method": method})
        for order in CURVE_ORDERS:
            frame[f"{order}_map"] = kinds[order].mean(axis=1)
            frame[f"{order}_shifted"] = kinds[f"{order}_shifted"].mean(axis=(1, 2))
            frame[f"{order}_diff"] = frame[f"{order}_map"] - frame[f"{order}_shifted"]
        for suffix in ("map", "shifted"):
            frame[f"road_{suffix}"] = (frame[f"lerf_{suffix}"] - frame[f"morf_{suffix}"]) / 2
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------------
# Sanity: cascading randomisation (Adebayo et al. 2018), from the top layer down
# ----------------------------------------------------------------------------------------------
def cascade_groups(model) -> list[list[str]]:
    """The layers with weights, top (output) first, in groups randomised together: the layers of one
    Xception block (``block14_...``) or of one numbered stage (``conv4``, ``bn4``) form one group,
    every other layer its own."""
    groups: list[list[str]] = []
    keys: list[str] = []
    for layer in reversed(model.layers):
        if not layer.weights:
            continue
        match = re.match(r"(block\d+)_", layer.name) or re.fullmatch(r"[a-z]+(\d+)", layer.name)
        key = f"stage {match.group(1)}" if match else layer.name
        if keys and keys[-1] == key:
            groups[-1].append(layer.name)
        else:
            groups.append([layer.name])
            keys.append(key)
    return groups


def cascade_depths(groups: int, stages: int) -> list[int]:
    """How many groups (from the top) are randomised at each scored depth: at most ``stages``
    depths, spaced geometrically from 1 (the output layer alone) to ``groups`` (every layer)."""
    return sorted({int(round(d)) for d in np.geomspace(1, groups, min(stages, groups))})


def map_rank_correlation(maps: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Spearman rank correlation (N,) of each map (N, h, w) with its counterpart; NaN where either is
    constant (a constant map has no ranks to compare)."""
    from scipy.stats import spearmanr

    return np.array([spearmanr(a.ravel(), b.ravel()).statistic if np.ptp(a) > 0 and np.ptp(b) > 0 else np.nan
                     for a, b in zip(maps, other)], np.float64)


def cascade_stages(model, working, groups: list[list[str]], stages: int, seed: int):
    """Randomise ``working`` (a clone of ``model``) cumulatively from the top, yielding each depth
    of :func:`cascade_depths` once ``working``'s top ``depth`` groups carry freshly initialised
    weights (a clone of ``model`` initialised under ``seed``: every weight, batch-norm statistics
    included) and every lower layer the trained weights of ``model``."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    fresh = keras.models.clone_model(model)
    working.set_weights(model.get_weights())
    done = 0
    for depth in cascade_depths(len(groups), stages):
        for name in (n for group in groups[done:depth] for n in group):
            working.get_layer(name).set_weights(fresh.get_layer(name).get_weights())
        done = depth
        yield depth


def cascading_randomisation(explainer: GradCamExplainer, images: np.ndarray, batch: GradCamBatch,
                            settings: CheckSettings) -> pd.DataFrame:
    """Rank correlation of each trained map with the map of the same network whose top layers are
    re-initialised, cumulatively from the output down (:func:`cascade_depths`), for each of
    ``settings.sanity_seeds`` seeds; same class, at the last convolution's resolution.

    Returns:
        One row per (seed, depth, method, image): seed, depth (groups randomised), groups,
        layers_randomised, deepest_layer (the lowest layer randomised), method, image, rank_corr,
        random_map_constant.
    """
    groups = cascade_groups(explainer.model)
    working = _keras().models.clone_model(explainer.model)
    randomised = GradCamExplainer(working, explainer.last_conv_layer_name, tuple(batch.maps))
    rows = []
    for seed in range(settings.seed, settings.seed + settings.sanity_seeds):
        for depth in cascade_stages(explainer.model, working, groups, settings.sanity_stages, seed):
            random_batch = randomised(images, class_index=batch.explained)
            for method in batch.maps:
                random_maps = random_batch.conv_maps[method]
                rows.append(pd.DataFrame({
                    "seed": seed, "depth": depth, "groups": len(groups),
                    "layers_randomised": sum(len(g) for g in groups[:depth]), "deepest_layer": groups[depth - 1][-1],
                    "method": method, "image": np.arange(len(images)),
                    "rank_corr": map_rank_correlation(batch.conv_maps[method], random_maps),
                    "random_map_constant": np.ptp(random_maps.reshape(len(images), -1), axis=1) == 0}))
    return pd.concat(rows, ignore_index=True)


def sanity_per_image(cascade: pd.DataFrame) -> pd.DataFrame:
    """Per image and method, at the deepest depth (every layer randomised): rank_corr_random_weights
    (median over seeds, NaN if any seed's map is constant), random_map_constant (in any seed) and
    sanity_pass (|rank_corr_random_weights| < RANK_CORR_LIMIT; a constant map never passes)."""
    last = cascade[cascade["depth"] == cascade["depth"].max()]
    grouped = last.groupby(["method", "image"], sort=False)
    frame = grouped.agg(rank_corr_random_weights=("rank_corr", lambda r: r.median(skipna=False)),
                        random_map_constant=("random_map_constant", "any")).reset_index()
    frame["sanity_pass"] = frame["rank_corr_random_weights"].abs() < RANK_CORR_LIMIT  # NaN: False
    return frame


# ----------------------------------------------------------------------------------------------
# Borders of the crop the model sees
# ----------------------------------------------------------------------------------------------
def border_share(maps: np.ndarray) -> np.ndarray:
    """Share (N,) of each map's mass (N, H, W) in the outer ``BORDER_FRACTION`` of each side; NaN for
    empty maps. Give it maps cropped to the box the model sees (:func:`crop_to_box`)."""
    maps = np.asarray(maps, np.float64)
    _, height, width = maps.shape
    mask = np.ones((height, width), bool)
    top, left = max(1, round(height * BORDER_FRACTION)), max(1, round(width * BORDER_FRACTION))
    mask[top:height - top, left:width - left] = False
    total = maps.sum(axis=(1, 2))
    return np.where(total > 0, (maps * mask).sum(axis=(1, 2)) / np.where(total > 0, total, 1), np.nan)


# ----------------------------------------------------------------------------------------------
# Every check of one network, per image
# ----------------------------------------------------------------------------------------------
def run_checks(explainer: GradCamExplainer, images: np.ndarray, y_true: Sequence[int], batch: GradCamBatch,
               settings: CheckSettings = CheckSettings()) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Every check of one network's maps on every image.

    Args:
        explainer: the network's :class:`GradCamExplainer`; images float32 (N, H, W, 3) in [0, 1];
        y_true: labels (N,); batch: ``explainer(images, threshold=...)``, maps of the predicted class.

    Returns:
        (per_image, cascade, curves): per_image one row per (method, image) with true_class,
        predicted_class, logit, probability, correct, empty_map, the :func:`curve_table` columns
        (NaN for methods without curves), the :func:`sanity_per_image` columns, border_share,
        border_share_uniform (a map uniform over the crop) and border_pass; cascade the rows of
        :func:`cascading_randomisation`; curves those of :func:`road_curves`.
    """
    y_true = np.asarray(y_true).astype(int)
    names = np.asarray(CLASS_NAMES)
    cells = next(iter(batch.conv_maps.values())).shape[1:]
    uniform = place_in_frame(np.ones((1, *cells), np.float32), explainer.box, images.shape[1:3])
    uniform_share = float(border_share(crop_to_box(np.asarray(uniform), explainer.box))[0])
    frames = []
    for method in batch.maps:
        share = border_share(crop_to_box(batch.maps[method], explainer.box))
        frames.append(pd.DataFrame({
            "method": method, "image": np.arange(len(images)), "true_class": names[y_true],
            "predicted_class": names[batch.explained], "logit": batch.logits, "probability": batch.probabilities,
            "correct": batch.explained == y_true,
            "empty_map": batch.conv_maps[method].reshape(len(images), -1).max(axis=1) == 0,
            "border_share": share, "border_share_uniform": uniform_share,
            "border_pass": share < uniform_share}))
    per_image = pd.concat(frames, ignore_index=True)
    curve_maps = {m: batch.maps[m] for m in settings.curve_methods if m in batch.maps}
    curves = road_curves(explainer, images, curve_maps, batch.explained, settings) if curve_maps else {}
    if curves:
        per_image = per_image.merge(curve_table(curves, batch.explained), on=["method", "image"], how="left")
    cascade = cascading_randomisation(explainer, images, batch, settings)
    per_image = per_image.merge(sanity_per_image(cascade), on=["method", "image"], how="left")
    return per_image, cascade, curves
