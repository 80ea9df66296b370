"""Thresholds, metrics with bootstrap intervals, McNemar and result tables."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .common import PUBLISHED_RESULTS


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def binary_metrics(y_true: Sequence[int], logits: Sequence[float], threshold: float) -> dict[str, float]:
    """accuracy, balanced_accuracy, sensitivity, specificity, precision, f1, roc_auc, pr_auc of
    ``logits`` called PNEUMONIA at or above ``threshold`` (a logit too; any score that rises with
    PNEUMONIA works, with a threshold on its own scale)."""
    from sklearn import metrics

    y_true = np.asarray(y_true)
    logits = np.asarray(logits)
    y_pred = (logits >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": metrics.accuracy_score(y_true, y_pred),
        "balanced_accuracy": metrics.balanced_accuracy_score(y_true, y_pred) if both_classes else np.nan,
        "sensitivity": metrics.recall_score(y_true, y_pred, pos_label=1, zero_division=0),
        "specificity": metrics.recall_score(y_true, y_pred, pos_label=0, zero_division=0),
        "precision": metrics.precision_score(y_true, y_pred, zero_division=0),
        "f1": metrics.f1_score(y_true, y_pred, zero_division=0),
        "roc_auc": metrics.roc_auc_score(y_true, logits) if both_classes else np.nan,
        "pr_auc": metrics.average_precision_score(y_true, logits) if both_classes else np.nan,
    }


def bootstrap_ci(y_true: Sequence[int], logits: Sequence[float], threshold: float,
                 n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of every :func:`binary_metrics` value, resampling cases.

    Returns {"<metric>_ci95": [low, high]} (level 0.95 by default)."""
    y_true = np.asarray(y_true)
    logits = np.asarray(logits)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_resamples):
        rows = rng.integers(0, len(y_true), len(y_true))
        if len(np.unique(y_true[rows])) == 2:
            samples.append(binary_metrics(y_true[rows], logits[rows], threshold))
    table = pd.DataFrame(samples)
    tail = (1 - level) / 2 * 100
    return {f"{name}_ci95": [float(np.percentile(table[name], tail)), float(np.percentile(table[name], 100 - tail))]
            for name in table.columns}


def mcnemar_exact(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int]) -> dict[str, float]:
    """Exact McNemar test of two classifiers on the same cases.

    Returns b (A right, B wrong), c (A wrong, B right) and the two-sided binomial p-value."""
    from scipy.stats import binomtest

    y_true, pred_a, pred_b = map(np.asarray, (y_true, pred_a, pred_b))
    a_right, b_right = pred_a == y_true, pred_b == y_true
    b = int(np.sum(a_right & ~b_right))
    c = int(np.sum(~a_right & b_right))
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"a_right_b_wrong": b, "a_wrong_b_right": c, "p_value": p_value}


def single_network_tests(y_true: Sequence[int], seed_logits: dict[str, Sequence[Sequence[float]]],
                         entries: dict[str, dict], reference: str = "scratch_cnn") -> list[dict]:
    """McNemar's exact test of every single network of each family against every single network of
    ``reference`` on the same cases: for family seeds i and reference seeds j, all pairs (seed numbers
    are arbitrary, so none is privileged). Each network is thresholded at its own validation threshold
    (``entries[name]["seeds"][k]["threshold"]``, a logit; ``seed_logits[name][k]`` its logits (N,)).

    Returns one dict per pair: ``a`` (the family), ``seed_a``, ``b`` (the reference), ``seed_b``, the
    accuracies ``accuracy_a`` and ``accuracy_b``, and the :func:`mcnemar_exact` fields."""
    y_true = np.asarray(y_true)

    def networks(name: str) -> list[tuple[int, np.ndarray]]:
        return [(record["seed"], (np.asarray(logits) >= record["threshold"]).astype(int))
                for record, logits in zip(entries[name]["seeds"], seed_logits[name], strict=True)]

    if reference not in seed_logits:
        return []
    references = networks(reference)  # thresholded once, paired with every network of every family
    rows = []
    for name in (n for n in seed_logits if n != reference):
        for seed_a, pred_a in networks(name):
            for seed_b, pred_b in references:
                rows.append({"a": name, "seed_a": seed_a, "b": reference, "seed_b": seed_b,
                             "accuracy_a": float(np.mean(pred_a == y_true)), "accuracy_b": float(np.mean(pred_b == y_true)),
                             **mcnemar_exact(y_true, pred_a, pred_b)})
    return rows


def evaluate_on_test(y_true: Sequence[int], logits: Sequence[float], threshold: float,
                     n_resamples: int = 2000, seed: int = 0) -> dict[str, float | list[float]]:
    """Point metrics and their 95% bootstrap intervals at a logit threshold, as stored in
    ``results/metrics.json``."""
    return {**scored(y_true, logits, threshold),
            **bootstrap_ci(y_true, logits, threshold, n_resamples, seed)}


def sigmoid(logits) -> np.ndarray:
    """Probability of PNEUMONIA from logits, float64, without overflow warnings."""
    from scipy.special import expit

    return expit(np.asarray(logits, np.float64))


def logit_threshold(y_true: Sequence[int], logits: Sequence[float]) -> float:
    """Decision threshold in logit space, from validation data only.

    Rule: the cut that maximises Youden's J (sensitivity + specificity - 1), placed halfway between
    the two neighbouring validation logits it separates (not on a validation case itself); among
    equally good cuts, the one nearest logit 0 (probability 0.5). Predict PNEUMONIA when
    logit >= threshold. Logits do not saturate as float32 probabilities do (where many
    validation cases share probability 1.0 and the cut can land on exactly 1.0).
    """
    y_true = np.asarray(y_true)
    logits = np.asarray(logits, np.float64)
    values = np.unique(logits)
    cuts = np.concatenate([[values[0] - 1.0], (values[:-1] + values[1:]) / 2, [values[-1] + 1.0]])
    positives, negatives = max(int((y_true == 1).sum()), 1), max(int((y_true == 0).sum()), 1)
    predicted = logits[None, :] >= cuts[:, None]
    j = (predicted & (y_true == 1)).sum(1) / positives - (predicted & (y_true == 0)).sum(1) / negatives
    best = np.flatnonzero(np.isclose(j, j.max()))
    return float(cuts[best[np.argmin(np.abs(cuts[best]))]])


def log_loss_of_logits(y_true: Sequence[int], logits: Sequence[float]) -> float:
    """Mean binary cross-entropy (nats) of sigmoid(logits), computed stably from the logits."""
    y_true = np.asarray(y_true, np.float64)
    logits = np.asarray(logits, np.float64)
    return float(np.mean(np.logaddexp(0.0, logits) - y_true * logits))


def mean_logit(logits: Sequence[Sequence[float]]) -> np.ndarray:
    """Ensemble of members' logits (M, N) -> (N,): their mean."""
    return np.mean(np.asarray(logits, np.float64), axis=0)


SELECTION_RULE: tuple[str, ...] = (  # fixed before the test set is scored; the notebook applies it as written
    "Validation signal: every trained network is scored on the validation split as it is and under four "
    "perturbations declared in advance (zoom, low contrast, blur, noise: pneumonia_cxr.augmentation.VALIDATION_PERTURBATIONS); "
    "the five copies are pooled (5 x the validation images). A validation ROC-AUC near 0.99 for every "
    "candidate cannot tell them apart; the pooled log loss can.",
    "Epochs: early stopping on clean validation loss, best weights kept, within each family's epoch cap.",
    "Thresholds: Youden's J on the pooled validation logits (midpoint between neighbouring logits).",
    "Saved seed of each family: the lowest pooled validation log loss.",
    "Cross-model ensemble: the subset of families whose mean logit has the lowest pooled validation log loss; "
    "when that subset is one family, no cross-model ensemble is kept.",
    "Served network (the app's default): the saved seed with the lowest pooled validation log loss over the "
    "families saved as Keras networks (the app serves those; the face-recognition family computes in dlib).",
    "Xception recipe (fine-tuned block, learning rate): kept from the earlier validation-only search "
    "(results/xception_recipe_choice.json, clean validation loss); not searched again under this rule.",
    "Set outside the rule, by the compute of a 2-core CPU and before any scoring: the scratch CNN's input size "
    "(128 px), the seeds (3 per family), the epoch caps, and which families run.",
)


def pooled(y_val: Sequence[int], logits_by_view: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Pool validation views (V, N) of logits into (V * N,) with the labels repeated: the signal of
    :data:`SELECTION_RULE`."""
    logits = np.concatenate([np.asarray(z, np.float64) for z in logits_by_view])
    return np.tile(np.asarray(y_val), len(logits_by_view)), logits


def choose_ensemble_members(y_val: Sequence[int], val_logits: dict[str, Sequence[float]]) -> list[str]:
    """Members of the cross-model ensemble, from validation data only: the non-empty subset of
    ``val_logits`` whose mean logit has the lowest validation log loss; ties go to fewer members,
    then to the first in order."""
    from itertools import combinations

    names = list(val_logits)
    best, best_loss = None, np.inf
    for size in range(1, len(names) + 1):
        for members in combinations(names, size):
            loss = log_loss_of_logits(y_val, mean_logit([val_logits[m] for m in members]))
            if loss < best_loss - 1e-12:
                best, best_loss = list(members), loss
    return best


def scored(y_true: Sequence[int], logits: Sequence[float], threshold: float) -> dict[str, float]:
    """:func:`binary_metrics` of logits at a logit threshold, floats only (for metrics.json)."""
    return {k: float(v) for k, v in binary_metrics(y_true, logits, threshold).items()}


def family_entry(y_val: Sequence[int], seeds: list[dict]) -> dict:
    """A model family's validation-side record: per seed ``{seed, best_epoch, threshold, val}`` and
    the seed-ensemble's threshold and validation metrics.

    ``seeds``: one dict per trained seed with keys ``seed``, ``best_epoch``, ``val_logits`` (and
    anything else to keep, e.g. ``train_seconds``). Test metrics are added by :func:`score_on_test`.
    """
    records = []
    for run in seeds:
        threshold = logit_threshold(y_val, run["val_logits"])
        records.append({k: v for k, v in run.items() if not k.endswith("_logits")}
                       | {"threshold": threshold, "val": scored(y_val, run["val_logits"], threshold)})
    return {"status": "ok", "seeds": records, **_thresholded(y_val, mean_logit([run["val_logits"] for run in seeds]))}


def _thresholded(y_val: Sequence[int], logits: np.ndarray) -> dict:
    """The validation threshold of ``logits`` (Youden's J, a logit), its probability and the validation
    metrics there: the threshold part of a seed-ensemble's or a cross-model ensemble's record."""
    threshold = logit_threshold(y_val, logits)
    return {"threshold": threshold, "threshold_probability": float(sigmoid(threshold)),
            "val": scored(y_val, logits, threshold)}


def ensemble_entry(y_val: Sequence[int], val_logits: dict[str, np.ndarray], members: Sequence[str]) -> dict:
    """The cross-model ensemble's validation-side record: its members, the threshold (Youden's J on the
    mean of the members' logits) and the validation metrics there."""
    return {"status": "ok", "members": list(members), **_thresholded(y_val, mean_logit([val_logits[m] for m in members]))}


def precision_agreement(y_val: Sequence[int], fast: Sequence[float], exact: Sequence[float]) -> dict[str, float]:
    """How far logits from reduced-precision (bfloat16) features ``fast`` stray from the float32 ones
    ``exact`` on the same images: the largest absolute logit difference, the share of images given the
    same label at the float32 logits' validation threshold, and the ROC-AUC of both."""
    fast, exact = np.asarray(fast, np.float64), np.asarray(exact, np.float64)
    cut = logit_threshold(y_val, exact)
    return {"max |logit difference|": float(np.max(np.abs(fast - exact))),
            "same label": float(np.mean((fast >= cut) == (exact >= cut))),
            "roc_auc (bfloat16)": scored(y_val, fast, cut)["roc_auc"], "roc_auc (float32)": scored(y_val, exact, cut)["roc_auc"]}


def chosen_on_validation(xception_choice: str, recipe_file: str, members: Sequence[str], served: str) -> list[str]:
    """What a run chose on validation data, in words, for the protocol of ``results/metrics.json``."""
    return ["epochs: early stopping on clean validation loss, best weights restored, within the epoch caps",
            "thresholds: Youden's J on pooled validation logits (clean + perturbations), midpoint between neighbouring logits",
            f"Xception recipe: {xception_choice} ({recipe_file}, lowest clean validation loss, earlier search)",
            f"cross-model ensemble members: {list(members) if len(members) > 1 else 'none kept'} "
            "(lowest pooled validation log loss of the mean logit)",
            f"saved seed per family and the served network ({served}): lowest pooled validation log loss"]


def score_on_test(entry: dict, y_test: Sequence[int], seed_test_logits: Sequence[Sequence[float]],
                  n_resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """Add test metrics to a :func:`family_entry` record, in place, at the thresholds fixed on
    validation: per seed (point values), the seed-ensemble (mean logit; with bootstrap intervals) and
    the spread over seeds (``seed_spread``: mean and sd of accuracy and ROC-AUC). Returns the
    ensemble's test logits."""
    for record, logits in zip(entry["seeds"], seed_test_logits):
        record["test"] = scored(y_test, logits, record["threshold"])
    ensemble = mean_logit(seed_test_logits)
    entry["test"] = evaluate_on_test(y_test, ensemble, entry["threshold"], n_resamples, seed)
    entry["seed_spread"] = seed_spread([record["test"] for record in entry["seeds"]])
    return ensemble


def seed_spread(per_seed: Sequence[dict]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1) over seeds of accuracy and ROC-AUC."""
    spread = {}
    for name in ("accuracy", "roc_auc"):
        values = np.array([record[name] for record in per_seed], np.float64)
        spread[f"{name}_mean"] = float(values.mean())
        spread[f"{name}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
    spread["n_seeds"] = len(per_seed)
    return spread


RERUN_FIELDS: tuple[str, ...] = ("best_epoch", "threshold", "val.roc_auc", "test.accuracy", "test.roc_auc")


RUN_BOOKKEEPING: tuple[str, ...] = ("from_cache",)  # how a run got its seed (trained or loaded), not what it is


def _leaves(record: dict, prefix: str = "") -> dict[str, object]:
    """Every value of a nested metrics record by dotted key, without wall times (keys ending in
    "seconds"), without :data:`RUN_BOOKKEEPING` and without the per-seed list (compared seed by seed)."""
    leaves = {}
    for key, value in record.items():
        if key == "seeds" or key.endswith("seconds") or key in RUN_BOOKKEEPING:
            continue
        if isinstance(value, dict):
            leaves |= _leaves(value, f"{prefix}{key}.")
        else:
            leaves[f"{prefix}{key}"] = value
    return leaves


def _same(a, b) -> bool:
    """Equal, counting two NaNs (e.g. an undefined standard deviation) as equal."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b))


def rerun_agreement(before: dict, after: dict) -> pd.DataFrame:
    """Run-to-run agreement of two ``results/metrics.json`` dicts of the same code and data.

    One row per family and seed (and per family's seed-ensemble or the cross-model ensemble, ``seed``
    = "ensemble") with the :data:`RERUN_FIELDS` values before and after; ``fields_compared``: how
    many values of the record were compared (every metric, interval, threshold and epoch; wall times
    and whether the seed was loaded from the run cache excluded); ``max_abs_diff``: the largest absolute
    difference among the numeric ones;
    ``identical``: all compared values equal. A family or seed that only one run has gets a row with
    ``identical`` False and ``only_in`` naming that run ("" when both have it)."""
    rows = []
    names = list(after["models"]) + [name for name in before["models"] if name not in after["models"]]
    for name in names:
        old, new = before["models"].get(name, {}), after["models"].get(name, {})
        if "test" not in old and "test" not in new:
            continue  # not run in either
        old_seeds = {record["seed"]: record for record in old.get("seeds", [])}
        new_seeds = {record["seed"]: record for record in new.get("seeds", [])}
        seeds = list(new_seeds) + [seed for seed in old_seeds if seed not in new_seeds]
        pairs = [(seed, old_seeds.get(seed), new_seeds.get(seed)) for seed in seeds]
        for seed, a, b in pairs + [("ensemble", old if "test" in old else None, new if "test" in new else None)]:
            row = {"model": name, "seed": seed, "only_in": "" if a and b else ("before" if a else "after")}
            leaves_a, leaves_b = _leaves(a or {}), _leaves(b or {})
            for field in RERUN_FIELDS:  # dotted keys of the leaves
                row[f"{field} before"], row[f"{field} after"] = leaves_a.get(field), leaves_b.get(field)
            keys = set(leaves_a) | set(leaves_b)
            numeric = [abs(leaves_a[k] - leaves_b[k]) for k in set(leaves_a) & set(leaves_b)
                       if isinstance(leaves_a[k], (int, float)) and isinstance(leaves_b[k], (int, float))]
            row["fields_compared"] = len(keys)
            row["max_abs_diff"] = float(np.nanmax(numeric)) if numeric else 0.0
            row["identical"] = bool(a and b) and all(_same(leaves_a.get(k), leaves_b.get(k)) for k in keys)
            rows.append(row)
    return pd.DataFrame(rows)


PUBLISHED_REFERENCES: tuple[tuple[str, float, float | None], ...] = tuple(
    (result.label, result.accuracy, result.roc_auc) for result in PUBLISHED_RESULTS)  # (label, accuracy, ROC-AUC)


def results_table(metrics: dict) -> pd.DataFrame:
    """Rows per model from a ``results/metrics.json`` dict, beside the published references.

    A family's row is its seed-ensemble (accuracy and ROC-AUC with 95% bootstrap intervals), with the
    mean ± sd over its seeds beside; the cross-model ensemble lists its members."""
    rows = []
    for name, entry in metrics["models"].items():
        test, spread = entry.get("test", {}), entry.get("seed_spread", {})
        seconds = sum(s.get("train_seconds", 0.0) for s in entry.get("seeds", [])) + entry.get("feature_seconds", 0.0)
        rows.append({
            "model": name if "members" not in entry else f"{name} ({' + '.join(entry['members'])})",
            "status": entry["status"],
            "seeds": spread.get("n_seeds", ""),
            "accuracy": _with_ci(test, "accuracy"), "accuracy over seeds": _mean_sd(spread, "accuracy"),
            "roc_auc": _with_ci(test, "roc_auc"), "roc_auc over seeds": _mean_sd(spread, "roc_auc"),
            "sensitivity": _fmt(test.get("sensitivity")), "specificity": _fmt(test.get("specificity")),
            "val roc_auc": _fmt(entry.get("val", {}).get("roc_auc")),
            "threshold (logit)": _fmt(entry.get("threshold"), 2),
            "train_minutes": _fmt(seconds / 60, 1) if seconds else "",
        })
    for name, accuracy, auc in PUBLISHED_REFERENCES:
        rows.append({"model": name, "status": "published", "accuracy": f"{accuracy:.3f}",
                     "roc_auc": "" if auc is None else f"{auc:.3f}"})
    return pd.DataFrame(rows).fillna("")


def _mean_sd(spread: dict, name: str) -> str:
    """``mean ± sd``; the mean alone where there is no spread (one seed: sd NaN, or null in JSON)."""
    if f"{name}_mean" not in spread:
        return ""
    sd = _fmt(spread.get(f"{name}_sd"))
    return f"{spread[f'{name}_mean']:.3f}" + (f" ± {sd}" if sd else "")


def _fmt(value, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def _with_ci(test: dict, name: str) -> str:
    if name not in test:
        return ""
    low, high = test[f"{name}_ci95"]
    return f"{test[name]:.3f} [{low:.3f}, {high:.3f}]"


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of ``frame`` (no index); "|" and line breaks inside cells
    are escaped so that they cannot break the table."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def fullsize_copy_pairs(fullsize_dir: str | os.PathLike, small_dir: str | os.PathLike,
                        splits: Sequence[str] = ("test",)) -> list[tuple[Path, Path]]:
    """(full-size original, its 224 px copy) pairs of the given splits, both classes, sorted: every
    image file under ``<fullsize_dir>/<split>/<class>/`` whose copy exists at the same relative path
    under ``small_dir``."""
    from .common import IMAGE_SUFFIXES

    fullsize_dir, small_dir = Path(fullsize_dir), Path(small_dir)
    pairs = [(original, small_dir / original.relative_to(fullsize_dir))
             for split in splits for original in sorted(fullsize_dir.glob(f"{split}/*/*"))
             if original.suffix.lower() in IMAGE_SUFFIXES]
    return [(original, copy) for original, copy in pairs if copy.is_file()]


def train_serve_gaps(model, pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike]]) -> pd.DataFrame:
    """How close what the app computes is to what training saw: per (full-size original, its 224 px
    copy) pair, the probability of PNEUMONIA from each, each decoded and preprocessed as the app does
    (``load_image_for_model``), and ``abs_diff`` = |p(original) - p(copy)|."""
    from .images import load_image_for_model

    rows = []
    for original, copy in pairs:
        inputs = [load_image_for_model(Path(path).read_bytes(), Path(path).name)[1] for path in (original, copy)]
        p_original, p_copy = (float(np.asarray(model(x, training=False)).reshape(-1)[0]) for x in inputs)
        rows.append({"original": str(original), "copy": str(copy), "p_original": p_original, "p_copy": p_copy,
                     "abs_diff": abs(p_original - p_copy)})
    return pd.DataFrame(rows)
