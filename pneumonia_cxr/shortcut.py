"""The size shortcut, measured: a baseline that sees no pixels, and how much a network leans on the squash.

NORMAL and PNEUMONIA originals differ in size, aspect ratio and colour mode. Two measurements:

- :func:`size_only_baseline_cv` / :func:`size_only_baseline_split`: a logistic regression on four
  numbers read from each file's header (log width, log height, log aspect ratio, grey or colour),
  scored with the metric and bootstrap helpers of :mod:`pneumonia_cxr.evaluation`;
- :func:`squash_sensitivity`: each full-size original fed to a network twice, squashed to 224 x 224
  as in training (:func:`squash`) and letterboxed with its aspect ratio kept (:func:`letterbox`);
  the paired change in logit per class says whether the network uses the class-specific distortion.

Conventions as everywhere in the package: label 1 is PNEUMONIA, 0 NORMAL; a logit is that of
PNEUMONIA; model inputs are float32 (N, 224, 224, 3) in [0, 1].
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .common import CLASS_NAMES, IMAGE_SIZE

BASELINE_NAME = "image size only (no pixels)"
FEATURE_COLUMNS = ("log_width", "log_height", "log_aspect", "grey")
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})  # PIL modes of one grey channel
CV_KIND = "cross-validated on the full-size sample"
SPLIT_KIND = "trained on the training split, threshold on validation, scored on the official test set"
CV_THRESHOLD_RULE = ("probability 0.5 (logit 0) on the out-of-fold probabilities; with balanced class weights "
                     "this weighs both classes equally, and no threshold is tuned")
LEANS, COMMON_SHIFT, NO_CLEAR_CHANGE, OTHER = "leans on the distortion", "common shift", "no clear change", "other"
UNEQUAL_SHIFT = "unequal shift"


# ----------------------------------------------------------------------------------------------
# Size features from the headers
# ----------------------------------------------------------------------------------------------
def header_size(path: str | os.PathLike) -> tuple[int, int, bool]:
    """(width, height, grey) of an image file from its header only: ``Image.open`` is lazy and no
    pixel is decoded. ``grey`` is True for one-channel modes (``GREY_MODES``). Sizes are as stored
    (no EXIF rotation, as the training pipeline's ``tf.io.decode_image`` reads them)."""
    with Image.open(path) as image:
        width, height = image.size
        return int(width), int(height), image.mode in GREY_MODES


def size_features(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Size-only features of image files, read from their headers without decoding pixels.

    Returns one row per path, in order (RangeIndex), columns ``path``, ``width`` and ``height``
    (pixels), ``log_width``, ``log_height`` (natural log of pixels), ``log_aspect``
    (log(width / height)) and ``grey`` (1.0 for a one-channel file, 0.0 for colour). The baseline
    uses ``FEATURE_COLUMNS``."""
    rows = []
    for path in paths:
        width, height, grey = header_size(path)
        rows.append({"path": str(path), "width": width, "height": height, "log_width": math.log(width),
                     "log_height": math.log(height), "log_aspect": math.log(width / height), "grey": float(grey)})
    return pd.DataFrame(rows, columns=["path", "width", "height", *FEATURE_COLUMNS])


def targets_of(labels: Sequence) -> np.ndarray:
    """Labels as int targets (N,): 0/1 kept, class names ``NORMAL`` / ``PNEUMONIA`` mapped to 0 / 1."""
    values = pd.Series(list(labels))
    if values.dtype == object or pd.api.types.is_string_dtype(values):
        unknown = set(values) - set(CLASS_NAMES)
        if unknown:
            raise ValueError(f"unknown labels {sorted(unknown)}; expected {CLASS_NAMES} or 0/1")
        return values.map({name: i for i, name in enumerate(CLASS_NAMES)}).to_numpy(int)
    return values.to_numpy(int)


def _class_counts(targets: np.ndarray) -> dict[str, int]:
    return {name: int((targets == i).sum()) for i, name in enumerate(CLASS_NAMES)}


# ----------------------------------------------------------------------------------------------
# The size-only baseline
# ----------------------------------------------------------------------------------------------
def size_only_model():
    """Unfitted scikit-learn Pipeline: StandardScaler, then LogisticRegression(class_weight="balanced")."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))


def _feature_matrix(features: pd.DataFrame) -> np.ndarray:
    """float64 (N, 4) of ``FEATURE_COLUMNS``."""
    return features[list(FEATURE_COLUMNS)].to_numpy(np.float64)


def size_only_baseline_cv(features: pd.DataFrame, labels: Sequence, folds: int = 5, seed: int = 0,
                          n_boot: int = 2000, groups: Sequence | None = None) -> dict:
    """Cross-validated size-only baseline, for where only a sample of originals is at hand.

    Out-of-fold logits of :func:`size_only_model` from stratified ``folds``-fold cross-validation
    (shuffled with ``seed``; ``StratifiedGroupKFold`` when ``groups``, e.g. patient ids, are given,
    so one patient's images stay in one fold), scored at probability 0.5 (``CV_THRESHOLD_RULE``) with
    :func:`pneumonia_cxr.evaluation.evaluate_on_test`: point metrics and percentile bootstrap 95%
    intervals over images (``n_boot`` resamples).

    Args:
        features: :func:`size_features` of the originals (N rows).
        labels: N labels, 0/1 or class names.
    Returns: JSON-ready dict with ``name``, ``kind`` (``CV_KIND``), ``n``, ``class_counts``,
        ``metrics`` (``roc_auc``, ``accuracy``, ... and ``<metric>_ci95``) and how it was computed.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, cross_val_predict

    from . import evaluation

    targets = targets_of(labels)
    if groups is None:
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    logits = cross_val_predict(size_only_model(), _feature_matrix(features), targets, cv=splitter,
                               groups=None if groups is None else np.asarray(groups), method="decision_function")
    return {"name": BASELINE_NAME, "kind": CV_KIND, "features": list(FEATURE_COLUMNS),
            "model": "StandardScaler + LogisticRegression(class_weight='balanced')",
            "folds": folds, "grouped_by": None if groups is None else "patient id", "seed": seed,
            "threshold": 0.0, "threshold_rule": CV_THRESHOLD_RULE, "n": int(len(targets)),
            "class_counts": _class_counts(targets), "n_boot": n_boot,
            "interval": "percentile bootstrap 95%, over images",
            "metrics": evaluation.evaluate_on_test(targets, logits, 0.0, n_boot, seed)}


def has_originals(index: pd.DataFrame, splits: Sequence[str] = ("train", "test")) -> bool:
    """True when ``index`` (of ``build_index``) holds originals in each of ``splits``: the split is
    present and none of its images is exactly 224 x 224 (the resized copies all are; originals are
    about 400 to 2,900 pixels a side)."""
    for split in splits:
        rows = index[index["split"] == split]
        if rows.empty or ((rows["width"] == IMAGE_SIZE[1]) & (rows["height"] == IMAGE_SIZE[0])).any():
            return False
    return True


def _features_and_targets(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix (N, 4) and targets (N,) of an index subset with ``path`` and ``target``
    (features read from the headers unless ``FEATURE_COLUMNS`` are there already)."""
    if not set(FEATURE_COLUMNS) <= set(frame.columns):
        frame = frame.reset_index(drop=True).join(size_features(frame["path"])[list(FEATURE_COLUMNS)])
    return _feature_matrix(frame), targets_of(frame["target"])


def size_only_baseline_split(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame,
                             n_boot: int = 2000, seed: int = 0) -> dict:
    """Size-only baseline scored like every model family; only where every image is an original
    (the Kaggle download; see :func:`has_originals`).

    Fit on ``train``, decision threshold on ``val`` with
    :func:`pneumonia_cxr.evaluation.logit_threshold` (Youden's J, in logit space), test metrics with
    bootstrap intervals from :func:`pneumonia_cxr.evaluation.evaluate_on_test`. Each argument is an
    index subset with columns ``path`` and ``target`` (0/1).

    Returns: JSON-ready dict shaped like a family entry of ``results/metrics.json`` (``status``,
    ``threshold``, ``threshold_probability``, ``val``, ``test``) plus ``name``, ``kind``
    (``SPLIT_KIND``), ``n`` and ``class_counts`` per subset."""
    from . import evaluation

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = map(_features_and_targets, (train, val, test))
    model = size_only_model().fit(x_train, y_train)
    val_logits, test_logits = model.decision_function(x_val), model.decision_function(x_test)
    threshold = evaluation.logit_threshold(y_val, val_logits)
    return {"name": BASELINE_NAME, "kind": SPLIT_KIND, "status": "ok", "features": list(FEATURE_COLUMNS),
            "model": "StandardScaler + LogisticRegression(class_weight='balanced')",
            "threshold": threshold, "threshold_probability": float(evaluation.sigmoid(threshold)),
            "n": {"train": len(y_train), "val": len(y_val), "test": len(y_test)},
            "class_counts": {name: _class_counts(y)
                             for name, y in (("train", y_train), ("val", y_val), ("test", y_test))},
            "n_boot": n_boot, "val": evaluation.scored(y_val, val_logits, threshold),
            "test": evaluation.evaluate_on_test(y_test, test_logits, threshold, n_boot, seed)}


def baseline_scores(baseline: dict) -> dict:
    """The metrics of a baseline dict: ``metrics`` (cross-validated) or ``test`` (split)."""
    return baseline["metrics"] if "metrics" in baseline else baseline["test"]


def _with_ci(scores: dict, name: str, digits: int = 3) -> str:
    low, high = scores[f"{name}_ci95"]
    return f"{scores[name]:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def baseline_table(baseline: dict) -> pd.DataFrame:
    """One-row table of a baseline dict: model, kind of figure, images, ROC-AUC, accuracy and
    balanced accuracy with their 95% intervals (as text)."""
    scores = baseline_scores(baseline)
    n = baseline["n"] if isinstance(baseline["n"], int) else baseline["n"]["test"]
    return pd.DataFrame([{"model": baseline["name"], "kind": baseline["kind"], "images": n,
                          "ROC-AUC [95% CI]": _with_ci(scores, "roc_auc"),
                          "accuracy [95% CI]": _with_ci(scores, "accuracy"),
                          "balanced accuracy [95% CI]": _with_ci(scores, "balanced_accuracy")}]).set_index("model")


# ----------------------------------------------------------------------------------------------
# Squash and letterbox
# ----------------------------------------------------------------------------------------------
def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) uint8 -> (H, W, 3) uint8, grey repeated into three channels."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an image (H, W), (H, W, 1) or (H, W, 3), got shape {image.shape}")
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image


def squash(image: np.ndarray, size: int = IMAGE_SIZE[0]) -> np.ndarray:
    """uint8 image (H, W[, C]) -> float32 (size, size, 3) in [0, 1], aspect ratio NOT kept: the
    resize the networks were trained on and the app applies
    (:func:`pneumonia_cxr.images.preprocess_pixels`, bilinear with antialiasing). Only
    ``size`` = 224 (the models' input) is offered, since that is the resize being reproduced."""
    from . import images

    if (size, size) != tuple(IMAGE_SIZE):
        raise ValueError(f"squash reproduces the models' {IMAGE_SIZE} resize; size={size} is not it")
    return np.asarray(images.preprocess_pixels(_rgb_uint8(image)[None]), np.float32)[0]


def letterbox(image: np.ndarray, size: int = IMAGE_SIZE[0], fill: str = "edge") -> np.ndarray:
    """uint8 image (H, W[, C]) -> float32 (size, size, 3) in [0, 1] with the aspect ratio kept.

    The long side is resized to ``size`` pixels and the short side to round(size x short / long)
    (at least 1), with the same resize as :func:`squash` (bilinear, antialias); the image is
    centred and the short side padded with its own edge pixels (``fill="edge"``,
    ``np.pad(mode="edge")``) or with its mean value per channel (``fill="mean"``), never black, so
    that no new border appears."""
    import tensorflow as tf

    if fill not in ("edge", "mean"):
        raise ValueError(f"fill must be 'edge' or 'mean', not {fill!r}")
    rgb = _rgb_uint8(image)
    height, width = rgb.shape[:2]
    scale = size / max(height, width)
    new_height, new_width = max(1, round(height * scale)), max(1, round(width * scale))
    resized = tf.image.resize(rgb, (new_height, new_width), method="bilinear", antialias=True)
    resized = np.clip(np.asarray(resized, np.float32) / 255.0, 0.0, 1.0)
    top, left = (size - new_height) // 2, (size - new_width) // 2
    padding = ((top, size - new_height - top), (left, size - new_width - left), (0, 0))
    if fill == "edge":
        return np.pad(resized, padding, mode="edge")
    return np.pad(resized, padding, mode="constant", constant_values=0.0) + _mean_outside(resized, padding)


def _mean_outside(resized: np.ndarray, padding) -> np.ndarray:
    """float32 (size, size, 3): the image's mean per channel where ``padding`` adds pixels, 0 inside."""
    (top, bottom), (left, right), _ = padding
    mask = np.ones((top + resized.shape[0] + bottom, left + resized.shape[1] + right, 1), np.float32)
    mask[top:top + resized.shape[0], left:left + resized.shape[1]] = 0.0
    return mask * resized.mean(axis=(0, 1), dtype=np.float64).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Squash sensitivity of a network
# ----------------------------------------------------------------------------------------------
def decode_file(path: str | os.PathLike) -> np.ndarray:
    """uint8 RGB (H, W, 3) of an image file at full size, decoded as the training pipeline decodes
    files (``tf.io.decode_image(channels=3)``, as in :mod:`pneumonia_cxr.pipeline`). Pillow, which
    the app uses, decodes the same JPEGs slightly differently (on average under 1 grey level, on
    single pixels up to about 15)."""
    import tensorflow as tf

    return tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False).numpy()


def _paired_inputs(paths: Sequence[str | os.PathLike], fill: str) -> tuple[np.ndarray, np.ndarray]:
    """(squashed, letterboxed) float32 (n, 224, 224, 3) of the files, both from one decode
    (:func:`decode_file`); the squash equals ``pipeline.load_images`` bit for bit. One full-size
    image in memory at a time."""
    squashed, boxed = [], []
    for path in paths:
        original = decode_file(path)
        squashed.append(squash(original))
        boxed.append(letterbox(original, IMAGE_SIZE[0], fill))
        del original
    return np.stack(squashed), np.stack(boxed)


def squash_sensitivity(model, paths: Sequence[str | os.PathLike], labels: Sequence, threshold_logit: float,
                       n_boot: int = 2000, seed: int = 0, fill: str = "edge", chunk_size: int = 32) -> pd.DataFrame:
    """Per image, the network's logit on the squash it was trained on and on a letterbox.

    Files are processed ``chunk_size`` at a time (memory: one full-size image plus 2 x chunk_size
    model inputs); logits come from :func:`pneumonia_cxr.training.predict_logits`. A label flips when
    the two logits fall on different sides of ``threshold_logit`` (predict PNEUMONIA when
    logit >= threshold). ``n_boot``, ``seed``, ``fill`` and the threshold are kept in ``.attrs`` for
    :func:`squash_sensitivity_summary`.

    Returns: DataFrame (N rows, in order): ``path``, ``label`` (class name), ``target`` (0/1),
    ``logit_squash``, ``logit_letterbox``, ``delta`` (letterbox - squash, logit units),
    ``pred_squash``, ``pred_letterbox`` (0/1) and ``flipped`` (bool)."""
    from . import training

    paths, targets = [str(path) for path in paths], targets_of(labels)
    if len(targets) != len(paths):
        raise ValueError(f"{len(paths)} paths but {len(targets)} labels")
    logits_squash, logits_box = [], []
    for start in range(0, len(paths), chunk_size):
        squashed, boxed = _paired_inputs(paths[start:start + chunk_size], fill)
        logits_squash.append(training.predict_logits(model, squashed, batch_size=chunk_size))
        logits_box.append(training.predict_logits(model, boxed, batch_size=chunk_size))
    squash_logits = np.concatenate(logits_squash) if logits_squash else np.zeros(0)
    box_logits = np.concatenate(logits_box) if logits_box else np.zeros(0)
    frame = pd.DataFrame({"path": paths, "label": [CLASS_NAMES[t] for t in targets],
                          "target": targets, "logit_squash": squash_logits, "logit_letterbox": box_logits})
    frame["delta"] = frame["logit_letterbox"] - frame["logit_squash"]
    frame["pred_squash"] = (frame["logit_squash"] >= threshold_logit).astype(int)
    frame["pred_letterbox"] = (frame["logit_letterbox"] >= threshold_logit).astype(int)
    frame["flipped"] = frame["pred_squash"] != frame["pred_letterbox"]
    frame.attrs.update(threshold_logit=float(threshold_logit), n_boot=n_boot, seed=seed, fill=fill)
    return frame


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (``scipy.stats.bootstrap``); the
    mean itself twice for fewer than two values or constant values."""
    from scipy.stats import bootstrap

    values = np.asarray(values, np.float64)
    if len(values) < 2 or np.all(values == values[0]):
        mean = float(values.mean()) if len(values) else float("nan")
        return mean, mean
    result = bootstrap((values,), np.mean, n_resamples=n_boot, confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _direction(low: float, high: float) -> str:
    if low > 0:
        return "towards PNEUMONIA"
    if high < 0:
        return "towards NORMAL"
    return "no clear change"


def squash_sensitivity_summary(per_image: pd.DataFrame, n_boot: int | None = None,
                               seed: int | None = None) -> pd.DataFrame:
    """Per class (index ``label``, NORMAL then PNEUMONIA): ``n``; ``mean_delta`` (mean paired change
    in logit, letterbox - squash) with its percentile bootstrap 95% interval ``delta_ci_low``,
    ``delta_ci_high``; ``flip_share`` (share of predicted labels that change) with ``flip_ci_low``,
    ``flip_ci_high``; ``flips_to_pneumonia``, ``flips_to_normal`` (counts) and ``direction`` of the
    mean change (``towards PNEUMONIA``, ``towards NORMAL`` or ``no clear change`` when the interval
    holds 0). ``n_boot`` and ``seed`` default to those kept in ``per_image.attrs`` (else 2000, 0)."""
    n_boot = per_image.attrs.get("n_boot", 2000) if n_boot is None else n_boot
    seed = per_image.attrs.get("seed", 0) if seed is None else seed
    rows = {}
    for label in [name for name in CLASS_NAMES if name in set(per_image["label"])]:
        group = per_image[per_image["label"] == label]
        delta_low, delta_high = bootstrap_mean_ci(group["delta"], n_boot, seed)
        flip_low, flip_high = bootstrap_mean_ci(group["flipped"].astype(float), n_boot, seed)
        rows[label] = {"n": len(group), "mean_delta": float(group["delta"].mean()),
                       "delta_ci_low": delta_low, "delta_ci_high": delta_high,
                       "flip_share": float(group["flipped"].mean()), "flip_ci_low": flip_low, "flip_ci_high": flip_high,
                       "flips_to_pneumonia": int((group["flipped"] & (group["pred_letterbox"] == 1)).sum()),
                       "flips_to_normal": int((group["flipped"] & (group["pred_letterbox"] == 0)).sum()),
                       "direction": _direction(delta_low, delta_high)}
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "label"
    summary.attrs.update({k: v for k, v in per_image.attrs.items()} | {"n_boot": n_boot, "seed": seed})
    return summary


def plot_squash_sensitivity(summaries: Mapping[str, pd.DataFrame], path: str | os.PathLike | None = None):
    """One figure for every network: per class the mean paired change in logit (letterbox - squash)
    with its 95% interval, a dashed line at no change. ``summaries``: network name ->
    :func:`squash_sensitivity_summary`. Saved to ``path`` when given. Returns the matplotlib Figure."""
    from .plots import _new_figure, _save_figure, readable_names

    names = list(summaries)
    figure = _new_figure(8.5, 1.8 + 0.8 * max(len(names), 1))
    axis = figure.subplots()
    offsets = {"NORMAL": -0.15, "PNEUMONIA": 0.15}
    for colour, label in zip(("tab:blue", "tab:orange"), CLASS_NAMES):
        rows = [(i, summaries[name].loc[label]) for i, name in enumerate(names) if label in summaries[name].index]
        if not rows:
            continue
        y = np.array([i + offsets[label] for i, _ in rows])
        mean = np.array([row["mean_delta"] for _, row in rows])
        errors = np.array([[m - row["delta_ci_low"], row["delta_ci_high"] - m] for m, (_, row) in zip(mean, rows)]).T
        axis.errorbar(mean, y, xerr=errors, fmt="o", color=colour, capsize=4, label=label)
    axis.axvline(0.0, color="grey", linestyle="--", linewidth=1)
    axis.set_yticks(range(len(names)), [readable_names(name) for name in names])
    axis.set_ylim(len(names) - 0.5, -0.5)  # first network on top, room around each pair
    axis.set_xlabel("mean change in logit, letterbox - squash (95% bootstrap CI); > 0: towards PNEUMONIA")
    axis.set_ylabel("network")
    counts = _image_counts(summaries)
    axis.set_title(f"Letterbox instead of squash: paired change per class\n"
                   f"{counts} full-size originals, each network")
    axis.legend(title="true class", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save_figure(figure, path)
    return figure


def _image_counts(summaries: Mapping[str, pd.DataFrame]) -> str:
    """'n (a NORMAL, b PNEUMONIA)' of the first summary (every network sees the same images)."""
    if not summaries:
        return "0"
    first = next(iter(summaries.values()))
    parts = ", ".join(f"{int(first.loc[label, 'n'])} {label}" for label in CLASS_NAMES if label in first.index)
    return f"{int(first['n'].sum())} ({parts})"


# ----------------------------------------------------------------------------------------------
# JSON results and the README's caveat
# ----------------------------------------------------------------------------------------------
def write_size_baseline(baseline: Mapping, path: str | os.PathLike) -> Path:
    """Write a size-only baseline dict as strict JSON (``results/size_baseline.json``; NaN as null,
    :func:`pneumonia_cxr.jsonio.write_json`), parent folders created; return the path."""
    return _write_strict(baseline, path)


def _write_strict(record: Mapping, path: str | os.PathLike) -> Path:
    from . import jsonio

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return jsonio.write_json(value=record, path=path)


def sensitivity_record(summaries: Mapping[str, pd.DataFrame], sample: str = "",
                       seeds: Mapping[str, int] | None = None) -> dict:
    """JSON-ready dict of :func:`squash_sensitivity_summary` tables: ``networks`` (name -> class ->
    row, with ``verdict`` and the network's ``seed``), the threshold rule, fill, bootstrap settings, image
    counts and ``sample`` (which originals, in words)."""
    first = next(iter(summaries.values()), pd.DataFrame())
    networks = {name: {"per_class": {label: dict(row) for label, row in summary.iterrows()},
                       "threshold_logit": summary.attrs.get("threshold_logit"),
                       "verdict": sensitivity_verdict(summary), "seed": (seeds or {}).get(name)}
                for name, summary in summaries.items()}
    return {"kind": "paired: the same full-size originals squashed (as trained) and letterboxed",
            "delta": "logit(letterbox) - logit(squash); > 0 moves towards PNEUMONIA",
            "fill": first.attrs.get("fill", "edge"), "n_boot": first.attrs.get("n_boot"),
            "interval": "percentile bootstrap 95%, over images",
            "images": {label: int(n) for label, n in first["n"].items()} if len(first) else {},
            "sample": sample, "networks": networks}


def write_squash_sensitivity(summaries: Mapping[str, pd.DataFrame], path: str | os.PathLike, sample: str = "",
                             seeds: Mapping[str, int] | None = None) -> Path:
    """Write :func:`sensitivity_record` of ``summaries`` as strict JSON (``results/squash_sensitivity.json``),
    parent folders created; return the path."""
    return _write_strict(sensitivity_record(summaries, sample, seeds), path)


def sensitivity_verdict(per_class: pd.DataFrame | Mapping[str, Mapping]) -> str:
    """What a network's per-class changes show. ``LEANS`` when letterboxing moves NORMAL towards
    PNEUMONIA and PNEUMONIA towards NORMAL (both intervals exclude 0): removing the distortion takes
    evidence away from each class, so the network uses it. ``COMMON_SHIFT`` when both move the same
    way by amounts whose intervals overlap, ``UNEQUAL_SHIFT`` when the intervals do not overlap (the
    output depends on the geometry, more for one class); ``NO_CLEAR_CHANGE`` when neither interval excludes 0; ``OTHER`` otherwise (one class moves,
    or the classes move apart)."""
    rows = per_class.to_dict("index") if isinstance(per_class, pd.DataFrame) else per_class
    directions = [rows[label]["direction"] if label in rows else "no clear change" for label in CLASS_NAMES]
    if directions == ["towards PNEUMONIA", "towards NORMAL"]:
        return LEANS
    if directions[0] == directions[1]:
        if directions[0] == "no clear change":
            return NO_CLEAR_CHANGE
        normal, pneumonia = (rows[label] for label in CLASS_NAMES)
        apart = normal["delta_ci_high"] < pneumonia["delta_ci_low"] or pneumonia["delta_ci_high"] < normal["delta_ci_low"]
        return UNEQUAL_SHIFT if apart else COMMON_SHIFT
    return OTHER


_VERDICT_WORDS = {
    LEANS: "the two move in opposite directions, each towards the other class, so the network leans on the distortion",
    COMMON_SHIFT: "both move the same way by amounts whose intervals overlap, a shift common to both classes rather "
                  "than a sign that the network uses the class-specific distortion",
    UNEQUAL_SHIFT: "both move the same way, but by amounts whose intervals do not overlap: the network's output "
                   "depends on the squashed geometry, more for one class than the other, as a network reading the "
                   "class-specific distortion would; but PNEUMONIA originals are also wider, so letterboxing changes "
                   "their input more whatever the network reads, and this check cannot separate the two (nor the "
                   "distortion from the edge padding that letterboxing adds)",
    NO_CLEAR_CHANGE: "neither interval excludes zero, so there is no sign that the network leans on the distortion",
    OTHER: "the two do not move towards each other's class, so there is no clear sign that the network leans on "
           "the distortion",
}


def _signed_ci(row: Mapping, digits: int = 2) -> str:
    return (f"{row['mean_delta']:+.{digits}f} [{row['delta_ci_low']:+.{digits}f}, "
            f"{row['delta_ci_high']:+.{digits}f}]")


def _network_sentence(name: str, network: Mapping) -> str:
    """One sentence of :func:`shortcut_caveat` for one network of a :func:`sensitivity_record`."""
    from .plots import readable_names

    rows = network["per_class"]
    moves = " and ".join(f"{label} logits by {_signed_ci(rows[label])} ({rows[label]['flip_share']:.0%} of "
                         f"{int(rows[label]['n'])} labels flip)" for label in CLASS_NAMES if label in rows)
    seed = f" (its saved seed {network['seed']}, at that seed's threshold)" if network.get("seed") is not None else ""
    return (f"for the {readable_names(name)}{seed}, letterboxing instead of squashing moves {moves}; "
            f"{_VERDICT_WORDS[network['verdict']]}.")


def shortcut_caveat(baseline: Mapping, sensitivity: Mapping | None = None) -> str:
    """The README's caveat in plain words from the saved results: the size-only baseline
    (``results/size_baseline.json``, a :func:`size_only_baseline_cv` or :func:`size_only_baseline_split`
    dict) and, when given, the squash sensitivity (``results/squash_sensitivity.json``, a
    :func:`sensitivity_record`). Every number comes from the dicts."""
    scores = baseline_scores(baseline)
    if baseline["kind"] == CV_KIND:
        grouped = f", folds grouped by {baseline['grouped_by']}" if baseline.get("grouped_by") else ""
        counts = ", ".join(f"{n} {label}" for label, n in baseline.get("class_counts", {}).items())
        folds = f"{baseline['folds']}-fold " if "folds" in baseline else ""
        where = (f"{folds}cross-validation{grouped} on a sample of {baseline['n']} full-size "
                 f"originals ({counts}), mostly from the training split; the intervals resample images, not "
                 f"patients, so they are somewhat narrow")
    else:
        where = f"trained on the training split and scored on the {baseline['n']['test']} official test images"
    text = (f"Image size alone (no pixels: width, height, aspect ratio and colour mode of the original file) "
            f"separates the classes with ROC-AUC {_with_ci(scores, 'roc_auc', 2)} and accuracy "
            f"{_with_ci(scores, 'accuracy', 2)} ({where}; 95% bootstrap intervals).")
    if sensitivity and sensitivity.get("networks"):
        sentences = [_network_sentence(name, network) for name, network in sensitivity["networks"].items()]
        images = sensitivity.get("images") or {}
        counts = ", ".join(f"{n} {label}" for label, n in images.items())
        counted = f" {sum(images.values())} full-size originals ({counts})" if images else " the full-size originals"
        if sensitivity.get("sample"):
            counted += f", {sensitivity['sample']}"
        text += f" On{counted}, " + " Likewise, ".join(sentences)
        text += " (Change in logit, letterbox - squash, mean [95% CI]; > 0 is towards PNEUMONIA.)"
    return text


_BRIEF_VERDICT = {
    LEANS: "the classes move towards each other: the networks lean on the distortion",
    COMMON_SHIFT: "both classes move alike: no sign of the class-specific distortion",
    UNEQUAL_SHIFT: "both classes move the same way, PNEUMONIA much further: the networks depend on the squashed "
                   "geometry, though this check cannot tell the distortion from the wider shape of PNEUMONIA originals",
    NO_CLEAR_CHANGE: "no clear change", OTHER: "no clear sign of the distortion",
}


def shortcut_caveat_brief(baseline: Mapping, sensitivity: Mapping | None = None) -> str:
    """The README's first-screen form of :func:`shortcut_caveat`: the baseline's ROC-AUC and, per network,
    the mean logit change of each class with the share of PNEUMONIA labels that flip; the full sentences
    (sample, seeds, intervals of every figure) are in docs/data.md."""
    scores = baseline_scores(baseline)
    text = (f"Image size alone (no pixels) separates the classes with ROC-AUC {_with_ci(scores, 'roc_auc', 2)} "
            f"(cross-validated on {baseline['n']} full-size originals).")
    networks = (sensitivity or {}).get("networks") or {}
    if networks:
        from .plots import readable_names

        parts = [f"{readable_names(name)} NORMAL {_signed_ci(n['per_class']['NORMAL'])}, PNEUMONIA "
                 f"{_signed_ci(n['per_class']['PNEUMONIA'])} ({n['per_class']['PNEUMONIA']['flip_share']:.0%} of "
                 f"PNEUMONIA labels flip)" for name, n in networks.items()]
        verdicts = {n["verdict"] for n in networks.values()}
        verdict = _BRIEF_VERDICT[verdicts.pop()] if len(verdicts) == 1 else "the networks differ"
        images = (sensitivity or {}).get("images") or {}
        seeds = {n.get("seed") for n in networks.values()} - {None}
        in_sample = "in-sample " if "in-sample" in (sensitivity or {}).get("sample", "") else ""
        sample = ", ".join(([f"{sum(images.values())} {in_sample}originals"] if images else [])
                           + ([f"saved seed {seeds.pop()}"] if len(seeds) == 1 else ["saved seeds"] if seeds else []))
        text += (f" Letterboxing instead of squashing{f' ({sample})' if sample else ''} changes the logits "
                 f"(mean [95% CI]): " + "; ".join(parts) + f"; {verdict}.")
    return text
