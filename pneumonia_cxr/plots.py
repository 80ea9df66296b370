"""Figures of training and evaluation."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .common import CLASS_NAMES, DISPLAY_NAMES


# ----------------------------------------------------------------------------------------------
# Figures of training and evaluation
# ----------------------------------------------------------------------------------------------
def _new_figure(width: float, height: float):
    """A matplotlib Figure (inches) outside pyplot's global state, freed when unreferenced."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _pyplot_figure(width: float, height: float):
    """A constrained-layout figure (inches) known to pyplot, so that ``plt.show()`` in a notebook
    cell displays it, as the model notebook does after saving each figure."""
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width, height), layout="constrained")


def _save_figure(figure, path: str | os.PathLike | None, dpi: int = 150) -> None:
    """Save ``figure`` as an image at ``path`` (parent folders created); nothing when path is None."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=dpi, bbox_inches="tight")


def save_figure(figure, directory: str | os.PathLike | None, name: str):
    """Save ``figure`` as ``<directory>/<name>.png`` (150 dpi) when a directory is given; return it."""
    if directory is not None:
        _save_figure(figure, Path(directory) / f"{name}.png")
    return figure


def readable_names(text: str) -> str:
    """``text`` with every model code name (``DISPLAY_NAMES``) replaced by its readable name, e.g.
    ``"scratch_cnn, seed 0"`` -> ``"Scratch CNN, seed 0"``."""
    for code in sorted(DISPLAY_NAMES, key=len, reverse=True):  # longest first: no name inside another
        text = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(code)}(?![A-Za-z0-9_])", DISPLAY_NAMES[code], text)
    return text


def _plain_log_axis(axis, which: str = "y") -> None:
    """A log scale on ``axis`` whose tick labels are plain numbers (0.1, 1, 10), not mathtext
    powers: mathtext asks the font manager for the STIX fonts as its fallback, and where those are
    missing every figure printed a ``findfont`` warning per font."""
    from matplotlib.ticker import FuncFormatter

    def plain(value, _position) -> str:
        return f"{value:g}"

    def some(value, _position) -> str:  # minor ticks: label 2 and 5 of each decade, so a short axis has labels
        if value <= 0:
            return ""
        leading = round(value / 10 ** np.floor(np.log10(value)))
        return f"{value:g}" if leading in (2, 5) else ""

    getattr(axis, f"set_{which}scale")("log")
    target = axis.yaxis if which == "y" else axis.xaxis
    target.set_major_formatter(FuncFormatter(plain))
    target.set_minor_formatter(FuncFormatter(some))


def plot_training_curves(history: dict, best_epoch: int, title: str):
    """Accuracy and loss per epoch, train vs validation (whole-number epoch ticks, loss on a log scale
    so that one large epoch does not flatten the rest), with the kept epoch (lowest validation loss)
    marked. Model code names in ``title`` are shown by their readable names."""
    from matplotlib.ticker import MaxNLocator

    figure = _pyplot_figure(11, 4)
    axes = figure.subplots(1, 2)
    epochs = np.arange(1, len(history["loss"]) + 1)
    title = readable_names(title)
    for axis, metric in zip(axes, ("accuracy", "loss")):
        for key, name in ((metric, "train (augmented)"), (f"val_{metric}", "validation")):
            axis.plot(epochs, np.asarray(history[key], dtype=float), marker="o", label=name)
        axis.axvline(best_epoch, color="grey", linestyle="--", label=f"kept: epoch {best_epoch} of {len(epochs)}")
        if metric == "loss":
            _plain_log_axis(axis, "y")
        axis.set(xlabel="epoch", ylabel="binary cross-entropy (log scale)" if metric == "loss" else "accuracy",
                 title=f"{title}: {metric}")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.legend()
    return figure


def plot_confusion_matrices(y_true: Sequence[int], predictions: dict[str, Sequence[int]],
                            thresholds: dict[str, float]):
    """One confusion matrix per model, rows true class, columns predicted class; each cell gives the count
    and its share of the true class (so the diagonal reads as specificity and sensitivity); panels titled
    with the models' readable names and their probability threshold (``thresholds``, fixed on validation)."""
    from sklearn.metrics import confusion_matrix

    figure = _pyplot_figure(4.2 * len(predictions), 4.4)
    axes = figure.subplots(1, len(predictions), squeeze=False)
    for axis, (name, y_pred) in zip(axes[0], predictions.items()):
        counts = confusion_matrix(y_true, y_pred, labels=[0, 1])
        shares = counts / counts.sum(axis=1, keepdims=True)
        axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for row in range(2):
            for column in range(2):
                axis.text(column, row, f"{counts[row, column]}\n{shares[row, column]:.0%}", ha="center", va="center",
                          color="white" if shares[row, column] > 0.5 else "black", fontsize=12)
        axis.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
                 xlabel="predicted", ylabel="true", title=f"{readable_names(name)}\nthreshold {thresholds[name]:.3f}")
    figure.suptitle(f"Confusion matrices, official test set ({len(y_true)} images; % of each true class)")
    return figure


def plot_roc_curves(y_true: Sequence[int], probabilities: dict[str, Sequence[float]], thresholds: dict[str, float]):
    """ROC curves of all models in one plot, AUC in the legend (readable model names), each model's
    operating point at its validation ``thresholds`` (probability) marked."""
    from sklearn.metrics import RocCurveDisplay

    figure = _pyplot_figure(5.5, 5)
    axis = figure.subplots()
    y_true = np.asarray(y_true)
    for name, p in probabilities.items():
        display = RocCurveDisplay.from_predictions(y_true, p, name=readable_names(name), ax=axis)
        predicted = np.asarray(p) >= thresholds[name]
        axis.plot(np.mean(predicted[y_true == 0]), np.mean(predicted[y_true == 1]), "o", markersize=8,
                  color=display.line_.get_color())
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="chance")
    axis.set(title=f"ROC curves, official test set ({len(y_true)} images)\ndots: operating points at the validation thresholds",
             xlabel="1 - specificity", ylabel="sensitivity")
    axis.legend(loc="lower right")
    return figure


def plot_reliability(y_true: Sequence[int], probabilities: dict[str, Sequence[float]], n_bins: int = 10):
    """Reliability diagram: observed PNEUMONIA share against mean predicted probability per bin
    (readable model names, Brier score in the legend)."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    figure = _pyplot_figure(5.5, 5)
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], "k--", linewidth=0.8, label="perfectly calibrated")
    for name, p in probabilities.items():
        observed, predicted = calibration_curve(y_true, p, n_bins=n_bins, strategy="quantile")
        axis.plot(predicted, observed, marker="o",
                  label=f"{readable_names(name)} (Brier {brier_score_loss(y_true, p):.3f})")
    axis.set(title="Calibration, official test set", xlabel="mean predicted probability of PNEUMONIA",
             ylabel="observed share of PNEUMONIA")
    axis.legend(loc="upper left")
    return figure


def plot_model_comparison(metrics: dict, references: Sequence[tuple[str, float, float | None]] = ()):
    """Test accuracy and ROC-AUC of every model that ran: the seed-ensemble (or cross-model
    ensemble) as a dot with its 95% bootstrap interval, each seed as a small grey mark, and the
    published references as dashed vertical lines (labelled); models by their readable names.
    ``references`` are ``(label, accuracy, roc_auc or None, ...)`` tuples, e.g. ``PUBLISHED_RESULTS``."""
    import matplotlib.pyplot as plt

    entries = {name: entry for name, entry in metrics["models"].items() if "test" in entry}
    figure = _pyplot_figure(12, 2.2 + 0.6 * len(entries))
    axes = figure.subplots(1, 2, sharey=True)
    rows = np.arange(len(entries))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, metric, column in zip(axes, ("accuracy", "roc_auc"), (1, 2)):
        for row, (name, entry) in zip(rows, entries.items()):
            low, high = entry["test"][f"{metric}_ci95"]
            value = entry["test"][metric]
            axis.errorbar(value, row, xerr=[[value - low], [high - value]], fmt="o", color="black", capsize=4,
                          label="ensemble (of seeds or of models), 95% bootstrap CI" if row == 0 else None)
            seeds = [seed["test"][metric] for seed in entry.get("seeds", []) if "test" in seed]
            axis.plot(seeds, [row] * len(seeds), "|", color="grey", markersize=14,
                      label="single seeds" if row == 0 else None)
        for number, reference in enumerate(references):  # one colour per reference, the same in both panels
            if reference[column] is not None:
                axis.axvline(reference[column], linestyle="--", color=colours[number % len(colours)],
                             label=reference[0])
        axis.set(xlabel=f"test {metric.replace('_', '-').upper() if metric == 'roc_auc' else metric}",
                 title=f"Official test set: {'ROC-AUC' if metric == 'roc_auc' else 'accuracy'}")
        axis.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(rows, [readable_names(name) for name in entries])
    axes[0].invert_yaxis()
    handles = {label: handle for axis in axes for handle, label in zip(*axis.get_legend_handles_labels())}
    figure.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=3, fontsize=8)  # never over a point
    return figure
