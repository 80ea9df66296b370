"""pneumonia_cxr.plots: constrained layout, whole-number epochs, a log loss axis without mathtext,
readable model names, and figures that plt.show() displays (the model notebook's pattern)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _texts(figure) -> str:
    return " ".join(t.get_text() for t in figure.findobj(matplotlib.text.Text))


def test_training_curves_have_integer_epochs_a_log_loss_axis_and_readable_names(fgc):
    history = {"loss": [14.0, 0.5, 0.3, 0.2, 0.19, 0.18, 0.17], "val_loss": [3.0, 0.6, 0.4, 0.35, 0.3, 0.3, 0.31],
               "accuracy": np.linspace(0.5, 0.95, 7), "val_accuracy": np.linspace(0.6, 0.9, 7)}
    figure = fgc.plot_training_curves(history, 6, "xception_imagenet_transfer, seed 0")
    accuracy_axis, loss_axis = figure.axes
    assert figure.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
    assert loss_axis.get_yscale() == "log" and accuracy_axis.get_yscale() == "linear"
    figure.canvas.draw()
    for axis in figure.axes:
        ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
        assert all(float(t).is_integer() for t in ticks), ticks
    labels = [t.get_text() for t in loss_axis.get_yticklabels() if t.get_text()]
    assert labels and not any("$" in label or "mathdefault" in label for label in labels)  # no mathtext
    assert "ImageNet Xception transfer, seed 0: loss" in _texts(figure)
    assert "xception_imagenet_transfer" not in _texts(figure)
    assert "kept: epoch 6 of 7" in _texts(figure)  # the kept epoch is marked on both panels
    assert [line.get_xdata()[0] for axis in figure.axes for line in axis.get_lines() if line.get_linestyle() == "--"] == [6, 6]
    assert plt.fignum_exists(figure.number)  # known to pyplot: plt.show() in the notebook displays it


def test_log_axes_ask_for_no_fallback_font(fgc, caplog):
    """Mathtext tick labels made matplotlib look up the STIX fonts (a findfont warning each where they
    are missing); plain labels never call the font manager for them."""
    import logging

    from matplotlib import font_manager

    calls = []
    original = font_manager.FontManager.findfont

    def spy(self, prop, *args, **kwargs):
        calls.append(str(prop.get_family() if hasattr(prop, "get_family") else prop))
        return original(self, prop, *args, **kwargs)

    font_manager.FontManager.findfont = spy
    try:
        history = {"loss": [14.0, 0.5, 0.2], "val_loss": [3.0, 0.6, 0.4], "accuracy": [0.5, 0.8, 0.9],
                   "val_accuracy": [0.6, 0.8, 0.85]}
        with warnings.catch_warnings(), caplog.at_level(logging.WARNING, logger="matplotlib.font_manager"):
            warnings.simplefilter("error")
            figure = fgc.plot_training_curves(history, 3, "scratch_cnn")
            figure.canvas.draw()
    finally:
        font_manager.FontManager.findfont = original
    assert not any("STIX" in call for call in calls), calls
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]


def test_evaluation_figures_use_readable_names(fgc):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    probabilities = {"scratch_cnn": rng.random(60), "hed_vgg16_transfer": rng.random(60)}
    thresholds = {name: 0.5 for name in probabilities}
    for figure in (fgc.plot_roc_curves(y, probabilities, thresholds), fgc.plot_reliability(y, probabilities),
                   fgc.plot_confusion_matrices(y, {k: (p > 0.5).astype(int) for k, p in probabilities.items()}, thresholds)):
        text = _texts(figure)
        assert "Scratch CNN" in text and "HED-VGG16 transfer" in text and "scratch_cnn" not in text
        assert figure.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
        assert plt.fignum_exists(figure.number)


def test_confusion_matrix_cells_give_counts_and_shares_of_the_true_class(fgc):
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    predicted = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 0])  # specificity 3/4, sensitivity 5/6
    text = _texts(fgc.plot_confusion_matrices(y, {"scratch_cnn": predicted}, {"scratch_cnn": 0.777}))
    assert "3\n75%" in text and "1\n25%" in text and "5\n83%" in text and "1\n17%" in text
    assert "threshold 0.777" in text and "10 images" in text


def test_roc_operating_point_sits_at_the_threshold_rates(fgc):
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.6, 0.7, 0.3, 0.8, 0.9, 0.95])  # at 0.5: FPR 2/4, TPR 3/4
    figure = fgc.plot_roc_curves(y, {"scratch_cnn": p}, {"scratch_cnn": 0.5})
    points = [(line.get_xdata()[0], line.get_ydata()[0]) for line in figure.axes[0].get_lines() if line.get_marker() == "o"]
    assert points == [(0.5, 0.75)]


def test_model_comparison_marks_each_reference_alike_and_keeps_the_legend_off_the_data(fgc):
    test = {"accuracy": 0.85, "accuracy_ci95": [0.82, 0.88], "roc_auc": 0.93, "roc_auc_ci95": [0.91, 0.95]}
    metrics = {"models": {"scratch_cnn": {"test": test, "seeds": [{"test": test}] * 3},
                          "vggface_transfer": {"status": "not run: weights unavailable"}}}
    references = [("accuracy only", 0.82, None), ("both", 0.93, 0.97)]
    figure = fgc.plot_model_comparison(metrics, references)
    accuracy_axis, auc_axis = figure.axes
    colour = {axis: {line.get_label(): line.get_color() for line in axis.get_lines()} for axis in figure.axes}
    assert colour[accuracy_axis]["both"] == colour[auc_axis]["both"] != colour[accuracy_axis]["accuracy only"]
    assert "accuracy only" not in colour[auc_axis]  # a reference without that metric draws no line there
    assert [t.get_text() for t in accuracy_axis.get_yticklabels()] == ["Scratch CNN"]  # models that ran, readable
    assert accuracy_axis.get_legend() is None and auc_axis.get_legend() is None
    legend = figure.legends[0]
    assert {t.get_text() for t in legend.get_texts()} >= {"both", "accuracy only", "single seeds"}
    figure.canvas.draw()
    box = legend.get_window_extent()
    assert not any(box.overlaps(axis.get_window_extent()) for axis in figure.axes)  # never over a point
    published = fgc.plot_model_comparison(metrics, fgc.PUBLISHED_RESULTS)  # the cited results work as references
    assert "Kermany et al. 2018, InceptionV3 (ImageNet), fine-tuned" in _texts(published)
