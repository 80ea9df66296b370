"""Thresholds, metrics with bootstrap intervals, McNemar, result tables and README sections."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
def youden_threshold(y_true: Sequence[int], probabilities: Sequence[float]) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity - 1 (use validation data only).

    Ties go to the threshold closest to 0.5. Predicted PNEUMONIA when probability >= threshold.
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(np.asarray(y_true), np.asarray(probabilities))
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    j = tpr - fpr
    best = np.flatnonzero(np.isclose(j, j.max()))
    return float(thresholds[best[np.argmin(np.abs(thresholds[best] - 0.5))]])


def binary_metrics(y_true: Sequence[int], probabilities: Sequence[float], threshold: float) -> dict[str, float]:
    """accuracy, balanced_accuracy, sensitivity, specificity, precision, f1, roc_auc, pr_auc."""
    from sklearn import metrics

    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    y_pred = (probabilities >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": metrics.accuracy_score(y_true, y_pred),
        "balanced_accuracy": metrics.balanced_accuracy_score(y_true, y_pred) if both_classes else np.nan,
        "sensitivity": metrics.recall_score(y_true, y_pred, pos_label=1, zero_division=0),
        "specificity": metrics.recall_score(y_true, y_pred, pos_label=0, zero_division=0),
        "precision": metrics.precision_score(y_true, y_pred, zero_division=0),
        "f1": metrics.f1_score(y_true, y_pred, zero_division=0),
        "roc_auc": metrics.roc_auc_score(y_true, probabilities) if both_classes else np.nan,
        "pr_auc": metrics.average_precision_score(y_true, probabilities) if both_classes else np.nan,
    }


def bootstrap_ci(y_true: Sequence[int], probabilities: Sequence[float], threshold: float,
                 n_resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of every :func:`binary_metrics` value, resampling cases.

    Returns {"<metric>_ci95": [low, high]} (level 0.95 by default)."""
    y_true = np.asarray(y_true)
    probabilities = np.asarray(probabilities)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_resamples):
        rows = rng.integers(0, len(y_true), len(y_true))
        if len(np.unique(y_true[rows])) == 2:
            samples.append(binary_metrics(y_true[rows], probabilities[rows], threshold))
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


def evaluate_on_test(y_true: Sequence[int], probabilities: Sequence[float], threshold: float,
                     n_resamples: int = 2000, seed: int = 0) -> dict[str, float | list[float]]:
    """Point metrics and their 95% bootstrap intervals, as stored in ``results/metrics.json``."""
    point = binary_metrics(y_true, probabilities, threshold)
    intervals = bootstrap_ci(y_true, probabilities, threshold, n_resamples, seed)
    return {**{k: float(v) for k, v in point.items()}, **intervals}


def results_table(metrics: dict) -> pd.DataFrame:
    """Rows per model from a ``results/metrics.json`` dict, beside the published references."""
    rows = []
    for name, entry in metrics["models"].items():
        test = entry.get("test", {})
        rows.append({
            "model": name, "status": entry["status"],
            "accuracy": _with_ci(test, "accuracy"), "roc_auc": _with_ci(test, "roc_auc"),
            "sensitivity": _fmt(test.get("sensitivity")), "specificity": _fmt(test.get("specificity")),
            "f1": _fmt(test.get("f1")), "threshold": _fmt(entry.get("threshold")),
            "best_epoch": entry.get("best_epoch", ""),
            "train_minutes": _fmt(entry["train_seconds"] / 60, 1) if entry.get("train_seconds") else "",
        })
    for name, accuracy, auc in (("original study, scratch CNN", "0.82", ""),
                                ("original study, VGG-Face transfer", "0.88", ""),
                                ("Kermany et al. 2018 (ImageNet InceptionV3)", "0.928", "0.968")):
        rows.append({"model": name, "status": "published", "accuracy": accuracy, "roc_auc": auc})
    return pd.DataFrame(rows).fillna("")


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


def replace_marked_section(path: str | os.PathLike, marker: str, content: str) -> None:
    """Replace the text between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in a file."""
    path = Path(path)
    text = path.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{path}: markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{content}\n{end}{tail}")
