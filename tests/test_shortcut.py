"""The size shortcut (``pneumonia_cxr.shortcut``): header-only size features, the size-only baseline,
squash and letterbox, the squash sensitivity of a (tiny) Keras network, its JSON and the README caveat.
All on synthetic images written to a temporary folder; fast."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from pneumonia_cxr import jsonio, shortcut


def _write(path: Path, pixels: np.ndarray, format: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=format)
    return path


def _noise(height: int, width: int, channels: int = 0, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 0 else (height, width, channels)
    return np.random.default_rng(seed).integers(40, 220, shape, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# Size features from headers
# ----------------------------------------------------------------------------------------------
def test_size_features_come_from_headers_without_decoding_pixels(tmp_path, monkeypatch):
    grey = _write(tmp_path / "grey.jpeg", _noise(200, 300))
    colour = _write(tmp_path / "colour.png", _noise(150, 100, 3), format="PNG")
    truncated = tmp_path / "truncated.jpeg"  # header intact, most pixel data cut away
    full = _write(tmp_path / "whole.jpeg", _noise(400, 500)).read_bytes()
    truncated.write_bytes(full[:len(full) // 4])

    def refuse(self, *args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", refuse)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "convert", refuse)
    features = shortcut.size_features([grey, colour, truncated])

    assert features["path"].tolist() == [str(grey), str(colour), str(truncated)]
    assert features[["width", "height"]].values.tolist() == [[300, 200], [100, 150], [500, 400]]
    assert features["grey"].tolist() == [1.0, 0.0, 1.0]
    np.testing.assert_allclose(features["log_width"], np.log([300, 100, 500]))
    np.testing.assert_allclose(features["log_height"], np.log([200, 150, 400]))
    np.testing.assert_allclose(features["log_aspect"], np.log([300 / 200, 100 / 150, 500 / 400]))


def test_targets_accept_names_and_numbers():
    assert shortcut.targets_of(["NORMAL", "PNEUMONIA", "NORMAL"]).tolist() == [0, 1, 0]
    assert shortcut.targets_of([1, 0]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="unknown labels"):
        shortcut.targets_of(["COVID"])


# ----------------------------------------------------------------------------------------------
# The size-only baseline
# ----------------------------------------------------------------------------------------------
def _synthetic_features(n: int = 120, seed: int = 0, separation: float = 1.5) -> tuple[pd.DataFrame, np.ndarray]:
    """Size features where PNEUMONIA files are smaller and wider, as in the data."""
    rng = np.random.default_rng(seed)
    targets = (rng.random(n) < 0.7).astype(int)
    log_width = rng.normal(7.3 - 0.3 * separation * targets, 0.2)
    log_height = rng.normal(7.1 - 0.5 * separation * targets, 0.2)
    features = pd.DataFrame({"log_width": log_width, "log_height": log_height,
                             "log_aspect": log_width - log_height, "grey": (rng.random(n) < 0.95).astype(float)})
    return features, targets


def test_cv_baseline_records_what_it_is_and_separates_separable_classes():
    features, targets = _synthetic_features()
    result = shortcut.size_only_baseline_cv(features, targets, folds=5, seed=0, n_boot=50)
    assert result["kind"] == "cross-validated on the full-size sample"
    assert result["n"] == 120 and sum(result["class_counts"].values()) == 120
    assert result["class_counts"]["PNEUMONIA"] == int(targets.sum())
    metrics = result["metrics"]
    assert metrics["roc_auc"] > 0.9
    for name in ("roc_auc", "accuracy"):
        low, high = metrics[f"{name}_ci95"]
        assert low <= metrics[name] <= high
    jsonio.dumps(result)


def test_cv_baseline_is_at_chance_without_signal():
    features, targets = _synthetic_features(n=200, seed=1, separation=0.0)
    result = shortcut.size_only_baseline_cv(features, targets, n_boot=20)
    assert 0.3 < result["metrics"]["roc_auc"] < 0.7


def test_split_baseline_thresholds_on_validation_and_scores_test():
    features, targets = _synthetic_features(n=300, seed=2)
    frame = features.assign(target=targets, path=[f"f{i}.jpeg" for i in range(300)])
    result = shortcut.size_only_baseline_split(frame[:200], frame[200:240], frame[240:], n_boot=20)
    assert result["kind"].startswith("trained on the training split")
    assert result["n"] == {"train": 200, "val": 40, "test": 60}
    assert result["test"]["roc_auc"] > 0.9 and "roc_auc_ci95" in result["test"]
    assert math.isclose(result["threshold_probability"], 1 / (1 + math.exp(-result["threshold"])))


def test_split_baseline_reads_features_of_an_index(tmp_path):
    """An index subset as ``build_index`` gives it (path, target, width, height, ...): features from the files."""
    rows = []
    for i in range(24):
        target = i % 2
        size = (300 + 7 * i, 200) if target == 0 else (160, 240 + 5 * i)  # (width, height)
        path = _write(tmp_path / f"{i}.jpeg", _noise(size[1], size[0], seed=i))
        rows.append({"path": str(path), "target": target, "width": size[0], "height": size[1]})
    index = pd.DataFrame(rows, index=range(100, 124))
    result = shortcut.size_only_baseline_split(index[:12], index[12:18], index[18:], n_boot=10)
    assert result["n"]["test"] == 6 and result["test"]["roc_auc"] == 1.0


def test_has_originals_tells_resized_copies_from_originals():
    resized = pd.DataFrame({"split": ["train", "test"], "width": [224, 224], "height": [224, 224]})
    originals = pd.DataFrame({"split": ["train", "test"], "width": [1800, 900], "height": [1400, 700]})
    assert not shortcut.has_originals(resized)
    assert shortcut.has_originals(originals)
    assert not shortcut.has_originals(originals[originals["split"] == "train"])  # no test split


# ----------------------------------------------------------------------------------------------
# Squash and letterbox
# ----------------------------------------------------------------------------------------------
def _gradient(height: int, width: int, axis: int) -> np.ndarray:
    """uint8 grey image (H, W) rising strictly from 50 to 200 along ``axis`` (0: rows, 1: columns)."""
    ramp = np.linspace(50, 200, (height, width)[axis])
    return np.round(np.broadcast_to(ramp[:, None] if axis == 0 else ramp[None, :], (height, width))).astype(np.uint8)


@pytest.mark.parametrize("height, width", [(150, 300), (300, 150), (413, 1000)])
def test_letterbox_keeps_the_aspect_ratio_and_pads_with_the_edge(height, width):
    across = 0 if width >= height else 1  # the short side, the one padded
    boxed = shortcut.letterbox(_gradient(height, width, across), 224, fill="edge")
    assert boxed.shape == (224, 224, 3) and boxed.dtype == np.float32
    profile = boxed[:, 112, 0] if across == 0 else boxed[112, :, 0]
    content = np.flatnonzero(np.diff(profile) > 0)  # the image rises strictly; the padding is flat
    extent = content[-1] - content[0] + 2
    assert abs(extent - 224 * min(height, width) / max(height, width)) <= 1
    assert profile[0] == pytest.approx(profile[content[0]], abs=1e-6)  # padding = the edge pixel
    assert profile[-1] == pytest.approx(profile[content[-1] + 1], abs=1e-6)
    assert boxed.min() > 40 / 255  # no black border


def test_letterbox_mean_fill_pads_with_the_image_mean_not_black():
    image = _noise(100, 200, 3, seed=3)
    boxed = shortcut.letterbox(image, 224, fill="mean")
    top = (224 - 112) // 2
    content = boxed[top:top + 112]
    np.testing.assert_allclose(boxed[0, 0], content.mean(axis=(0, 1)), atol=1e-5)
    np.testing.assert_allclose(boxed[-1, -1], content.mean(axis=(0, 1)), atol=1e-5)
    assert boxed[:top].min() > 0.3
    with pytest.raises(ValueError):
        shortcut.letterbox(image, fill="black")


def test_squash_is_the_models_resize():
    from pneumonia_cxr import images

    grey = _noise(300, 180)
    squashed = shortcut.squash(grey)
    assert squashed.shape == (224, 224, 3) and squashed.dtype == np.float32
    assert 0.0 <= squashed.min() and squashed.max() <= 1.0
    expected = np.asarray(images.preprocess_pixels(np.repeat(grey[:, :, None], 3, axis=2)[None]))[0]
    np.testing.assert_array_equal(squashed, expected)
    with pytest.raises(ValueError):
        shortcut.squash(grey, size=128)


# ----------------------------------------------------------------------------------------------
# Squash sensitivity of a network
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model():
    """A Keras model (N, 224, 224, 3) -> sigmoid: logit = 4 x (mean of the top half - mean of the
    bottom half), so it reacts to where the anatomy sits, as a letterbox moves it."""
    import keras

    inputs = keras.Input((224, 224, 3))
    halves = keras.layers.AveragePooling2D(pool_size=(112, 224))(inputs)  # (N, 2, 1, 3)
    flat = keras.layers.Flatten()(halves)  # top R, G, B, bottom R, G, B
    output = keras.layers.Dense(1, activation="sigmoid")(flat)
    model = keras.Model(inputs, output)
    model.layers[-1].set_weights([np.array([[4 / 3] * 3 + [-4 / 3] * 3], np.float32).T, np.zeros(1, np.float32)])
    return model


@pytest.fixture()
def originals(tmp_path) -> tuple[list[Path], list[str]]:
    """Six 'originals': NORMAL wide grey JPEGs (bright at the top), PNEUMONIA tall grey PNGs (noise),
    of different sizes."""
    paths, labels = [], []
    for i in range(6):
        label = "NORMAL" if i % 2 == 0 else "PNEUMONIA"
        height, width = (120 + 10 * i, 260) if label == "NORMAL" else (260, 120 + 10 * i)
        pixels = _gradient(height, width, 0)[::-1].copy() if label == "NORMAL" else _noise(height, width, seed=i)
        # a grey JPEG goes through the pipeline's own one-channel decode
        suffix, format = ("jpeg", "JPEG") if label == "NORMAL" else ("png", "PNG")
        paths.append(_write(tmp_path / label / f"{i}.{suffix}", pixels, format=format))
        labels.append(label)
    return paths, labels


def test_squash_sensitivity_per_image_and_summary(tiny_model, originals):
    from pneumonia_cxr import pipeline, training

    paths, labels = originals
    per_image = shortcut.squash_sensitivity(tiny_model, paths, labels, threshold_logit=0.0, n_boot=200,
                                            chunk_size=4)
    assert list(per_image["label"]) == labels and len(per_image) == 6
    np.testing.assert_allclose(per_image["delta"], per_image["logit_letterbox"] - per_image["logit_squash"])
    sides = (per_image["logit_squash"] >= 0) != (per_image["logit_letterbox"] >= 0)
    assert (per_image["flipped"] == sides).all()
    as_trained = training.predict_logits(tiny_model, pipeline.load_images([str(p) for p in paths]))
    np.testing.assert_allclose(per_image["logit_squash"], as_trained, atol=1e-6)  # the training pipeline's input
    # a wide NORMAL image, bright at the top: squashed, the bright rows fill the top half; letterboxed,
    # the top half holds the bright edge repeated and then the content's upper part, a different mean
    normal = per_image[per_image["label"] == "NORMAL"]
    assert (normal["logit_squash"] > 0).all() and (normal["delta"].abs() > 1e-3).all()

    summary = shortcut.squash_sensitivity_summary(per_image)
    assert list(summary.index) == ["NORMAL", "PNEUMONIA"] and summary["n"].tolist() == [3, 3]
    assert summary.attrs["n_boot"] == 200
    for _, row in summary.iterrows():
        assert row["delta_ci_low"] <= row["mean_delta"] <= row["delta_ci_high"]
        assert row["flip_ci_low"] <= row["flip_share"] <= row["flip_ci_high"]
        assert row["direction"] in ("towards PNEUMONIA", "towards NORMAL", "no clear change")


def _summary(normal: tuple[float, float, float], pneumonia: tuple[float, float, float]) -> pd.DataFrame:
    rows = {label: {"n": n, "mean_delta": mean, "delta_ci_low": low, "delta_ci_high": high, "flip_share": 0.1,
                    "flip_ci_low": 0.0, "flip_ci_high": 0.2, "flips_to_pneumonia": 1, "flips_to_normal": 0,
                    "direction": shortcut._direction(low, high)}
            for label, n, (mean, low, high) in (("NORMAL", 40, normal), ("PNEUMONIA", 60, pneumonia))}
    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.attrs.update(threshold_logit=0.25, n_boot=100, fill="edge")
    return summary


def test_bootstrap_interval_contains_the_mean():
    values = np.random.default_rng(0).normal(0.4, 1.0, 80)
    low, high = shortcut.bootstrap_mean_ci(values, n_boot=500)
    assert low < values.mean() < high and low > 0
    assert shortcut.bootstrap_mean_ci([0.0, 0.0, 0.0]) == (0.0, 0.0)


def test_verdicts():
    assert shortcut.sensitivity_verdict(_summary((0.5, 0.2, 0.8), (-0.4, -0.6, -0.2))) == shortcut.LEANS
    assert shortcut.sensitivity_verdict(_summary((0.5, 0.2, 0.8), (0.4, 0.2, 0.6))) == shortcut.COMMON_SHIFT
    assert shortcut.sensitivity_verdict(_summary((0.1, -0.2, 0.3), (0.0, -0.1, 0.1))) == shortcut.NO_CLEAR_CHANGE
    assert shortcut.sensitivity_verdict(_summary((-0.5, -0.8, -0.2), (0.4, 0.2, 0.6))) == shortcut.OTHER
    # the same direction, intervals apart (as measured: NORMAL -0.4, PNEUMONIA -3.6): not a common shift
    assert shortcut.sensitivity_verdict(_summary((-0.4, -0.6, -0.1), (-3.6, -3.9, -3.3))) == shortcut.UNEQUAL_SHIFT
    assert shortcut.sensitivity_verdict(_summary((-0.4, -0.6, -0.1), (-0.5, -0.8, -0.2))) == shortcut.COMMON_SHIFT


def test_plot_json_and_caveat_carry_the_numbers(tmp_path):
    summaries = {"scratch_cnn": _summary((0.52, 0.21, 0.83), (-0.44, -0.61, -0.27)),
                 "xception": _summary((0.31, 0.12, 0.5), (0.2, 0.05, 0.35))}
    figure = shortcut.plot_squash_sensitivity(summaries, path=tmp_path / "squash.png")
    axis = figure.axes[0]
    assert "100 (40 NORMAL, 60 PNEUMONIA) full-size originals" in axis.get_title()
    assert axis.get_xlabel() and axis.get_ylabel() and (tmp_path / "squash.png").is_file()

    written = shortcut.write_squash_sensitivity(summaries, tmp_path / "results" / "squash_sensitivity.json")
    sensitivity = json.loads(written.read_text(), parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert sensitivity["networks"]["scratch_cnn"]["verdict"] == shortcut.LEANS
    assert sensitivity["networks"]["xception"]["per_class"]["PNEUMONIA"]["mean_delta"] == 0.2

    features, targets = _synthetic_features()
    baseline = shortcut.size_only_baseline_cv(features, targets, n_boot=50)
    baseline["metrics"]["pr_auc"] = float("nan")  # strict JSON writes it as null
    path = shortcut.write_size_baseline(baseline, tmp_path / "results" / "size_baseline.json")
    baseline = json.loads(path.read_text())
    assert baseline["metrics"]["pr_auc"] is None

    text = shortcut.shortcut_caveat(baseline, sensitivity)
    metrics = baseline["metrics"]
    low, high = metrics["roc_auc_ci95"]
    assert f"ROC-AUC {metrics['roc_auc']:.2f} [{low:.2f}, {high:.2f}]" in text
    assert f"accuracy {metrics['accuracy']:.2f}" in text and "5-fold cross-validation on a sample of 120 full-size" in text
    assert "NORMAL logits by +0.52 [+0.21, +0.83]" in text and "PNEUMONIA logits by -0.44 [-0.61, -0.27]" in text
    assert "On 100 full-size originals (40 NORMAL, 60 PNEUMONIA), for the Scratch CNN" in text
    assert "so the network leans on the distortion" in text and "a shift common to both classes" in text
    assert shortcut.shortcut_caveat(baseline).count("ROC-AUC") == 1

    brief = shortcut.shortcut_caveat_brief(baseline, sensitivity)  # no sample words, no seeds recorded
    assert "Letterboxing instead of squashing (100 originals) changes the logits" in brief
    in_sample = shortcut.write_squash_sensitivity(summaries, tmp_path / "in_sample.json", sample="from the training "
                                                  "splits (in-sample)", seeds={"scratch_cnn": 1, "xception": 1})
    brief = shortcut.shortcut_caveat_brief(baseline, json.loads(in_sample.read_text()))
    assert "Letterboxing instead of squashing (100 in-sample originals, saved seed 1) changes" in brief
