"""Xception and VGG-Face weights and their identity, seeding, logits, seed and cross-model ensembles."""
from __future__ import annotations

import numpy as np
import pytest


# ----------------------------------------------------------------------------------------------
# Xception (ImageNet) weights: from a file, and the clear error offline
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def xception_weights_file(tmp_path_factory, keras_seeded):
    """A Keras Xception no-top weights file with seeded random values (not ImageNet)."""
    keras = keras_seeded
    keras.utils.set_random_seed(3)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(224, 224, 3))
    path = tmp_path_factory.mktemp("xception") / "xception_notop.weights.h5"
    base.save_weights(path)
    return path, {layer.name: [w.copy() for w in layer.get_weights()] for layer in base.layers if layer.weights}


def test_xception_transfer_loads_weights_from_file(fgc, xception_weights_file):
    import keras

    path, expected = xception_weights_file
    model, tail = fgc.build_xception_transfer(path, fine_tune=True, seed=0)
    for name in ("block1_conv1", "block7_sepconv2", "block14_sepconv2_bn"):
        for got, want in zip(model.get_layer(name).get_weights(), expected[name]):
            np.testing.assert_array_equal(got, want)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # one flat graph
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable == {"block14_sepconv1", "block14_sepconv2", "prediction"}  # BatchNorm stays frozen
    assert model.layers[1].name == "centre_crop" and model.layers[2].name == "xception_preprocess"
    assert tuple(tail.input_shape[1:]) == (6, 6, 1024)  # block14's input at 196 px (the centre crop)
    assert tail.get_layer("block14_sepconv2") is model.get_layer("block14_sepconv2")  # shared layers
    frozen, _ = fgc.build_xception_transfer(path, fine_tune=False, seed=0)
    assert {w.path.split("/")[0] for w in frozen.trainable_weights} == {"prediction"}

    images = np.random.default_rng(0).random((2, 224, 224, 3), dtype=np.float32)
    activations = fgc.tail_input_extractor(model).predict(images, verbose=0)
    np.testing.assert_allclose(tail.predict(activations, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    maps, _ = fgc.make_gradcam_heatmaps(images, model, fgc.XCEPTION_GRADCAM_LAYER)
    assert maps.shape == (2, 224, 224) and np.isfinite(maps).all()  # in the input's frame
    assert fgc.last_conv_layer_name(model) == "block14_sepconv2"  # SeparableConv2D counts as a convolution


def test_xception_imagenet_offline_raises_clear_error(fgc, monkeypatch):
    from keras.src.applications import xception

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                        "[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(xception.file_utils, "get_file", offline)
    with pytest.raises(fgc.WeightsUnavailableError) as info:
        fgc.build_xception_transfer("imagenet")
    message = str(info.value)
    assert "Xception ImageNet weights unavailable" in message and "internet" in message
    assert fgc.XCEPTION_WEIGHTS_ENV_VAR in message and "Traceback" not in message


def test_xception_weights_resolution(fgc, tmp_path, monkeypatch):
    monkeypatch.delenv(fgc.XCEPTION_WEIGHTS_ENV_VAR, raising=False)
    assert fgc.resolve_xception_weights(None) == "imagenet"
    missing = tmp_path / "absent.weights.h5"
    with pytest.raises(fgc.WeightsUnavailableError, match=str(missing)):
        fgc.resolve_xception_weights(missing)
    present = tmp_path / "x.weights.h5"
    present.write_bytes(b"weights")
    monkeypatch.setenv(fgc.XCEPTION_WEIGHTS_ENV_VAR, str(present))
    assert fgc.resolve_xception_weights(None) == str(present)
    assert fgc.resolve_xception_weights("imagenet") == "imagenet"


def test_weights_identity_names_the_weights(fgc, tmp_path):
    """What the notebook and the recipe script report as the Xception weights (feature cache keys hash
    the extractor's own weights instead: tests/test_models.py, "Feature cache keys")."""
    import keras

    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    a.write_bytes(b"one set of weights")
    b.write_bytes(b"another set of weights")
    ids = {fgc.weights_identity(a), fgc.weights_identity(b), fgc.weights_identity("imagenet")}
    assert len(ids) == 3
    assert fgc.weights_identity("imagenet") == f"imagenet@keras-{keras.__version__}"
    assert fgc.weights_identity(a).startswith("sha256:")


# ----------------------------------------------------------------------------------------------
# VGG-Face: the weights file users get from deepface (Keras 2 HDF5 layout)
# ----------------------------------------------------------------------------------------------
def _write_keras2_weights_file(path, model) -> dict[str, list[np.ndarray]]:
    """Write ``model``'s weights as Keras 2's ``save_weights`` did to HDF5 (root attribute
    ``layer_names``, one group per layer with attribute ``weight_names``), with known values: each
    kernel a constant (stored as the dataset's fill value, so the file stays small) and each bias
    0, 1, 2, ... scaled. Returns the values by Keras 2 layer name."""
    import h5py

    known = {}
    counters: dict[str, int] = {}
    with h5py.File(path, "w") as f:
        names = []
        for layer in model.layers:
            kind = {"ZeroPadding2D": "zero_padding2d", "Conv2D": "conv2d", "MaxPooling2D": "max_pooling2d",
                    "Dropout": "dropout", "Flatten": "flatten", "Activation": "activation"}[layer.__class__.__name__]
            counters[kind] = counters.get(kind, 0) + 1
            name = f"{kind}_{counters[kind]}"
            names.append(name)
            group = f.create_group(name)
            weight_names = []
            values = []
            for weight in layer.weights:
                short = weight.path.split("/")[-1]
                weight_name = f"{name}/{short}:0"
                if short == "kernel":
                    value = np.float32(0.001 * len(names))
                    group.create_dataset(weight_name, shape=tuple(weight.shape), dtype="float32", fillvalue=value)
                    values.append(np.full(tuple(weight.shape), value, np.float32))
                else:
                    bias = (np.arange(weight.shape[0], dtype=np.float32) * 1e-3 + len(names)).astype(np.float32)
                    group.create_dataset(weight_name, data=bias)
                    values.append(bias)
                weight_names.append(weight_name.encode())
            group.attrs["weight_names"] = np.array(weight_names, dtype="S")
            if values:
                known[name] = values
        f.attrs["layer_names"] = np.array([n.encode() for n in names], dtype="S")
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
    return known


def test_vggface_trunk_loads_a_deepface_layout_weights_file(fgc, tmp_path):
    import keras
    from deepface.models.facial_recognition.tf.VGGFace import base_model

    path = tmp_path / "vgg_face_weights.h5"
    known = _write_keras2_weights_file(path, base_model())
    model, _ = fgc.build_transfer_model(fgc.VGGFACE_BASE, weights_path=path)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    expected = [values for name, values in known.items()][:13]  # conv1_1 .. conv5_3; fc6-8 are not in the trunk
    assert len(convs) == 13
    for layer, values in zip(convs, expected):
        kernel, bias = layer.get_weights()
        np.testing.assert_array_equal(kernel, values[0])
        np.testing.assert_array_equal(bias, values[1])
    assert not any(layer.trainable for layer in convs)


# ----------------------------------------------------------------------------------------------
# Seeds: the same seed gives the same model and predictions
# ----------------------------------------------------------------------------------------------
def _train_tiny(fgc, seed: int) -> np.ndarray:
    import keras

    fgc.seed_everything(seed)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Dropout(0.3), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(1, activation="sigmoid")])
    fgc.compile_binary_classifier(model, 1e-2)
    data = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    labels = (data.mean(axis=(1, 2, 3)) > 0.5).astype(np.float32)
    model.fit(data, labels, batch_size=16, epochs=2, shuffle=True, verbose=0)
    return fgc.predict_logits(model, data)


def test_same_seed_same_predictions(fgc):
    first, again, other = _train_tiny(fgc, 7), _train_tiny(fgc, 7), _train_tiny(fgc, 8)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_predict_logits_beyond_sigmoid_saturation(fgc):
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, activation="sigmoid")])
    model.layers[-1].set_weights([np.array([[1.0], [0.0]], np.float32), np.array([0.0], np.float32)])
    x = np.array([[-3.0, 0.0], [0.5, 9.0], [40.0, 0.0], [60.0, 1.0]], np.float32)
    logits = fgc.predict_logits(model, x, batch_size=3)
    np.testing.assert_allclose(logits, [-3.0, 0.5, 40.0, 60.0])
    assert float(model.predict(x[2:], verbose=0)[0, 0]) == float(model.predict(x[3:], verbose=0)[0, 0]) == 1.0


# ----------------------------------------------------------------------------------------------
# Ensembles: seed-ensemble of a family, cross-model ensemble, test scoring
# ----------------------------------------------------------------------------------------------
def test_mean_logit_and_members_chosen_on_validation(fgc):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    signal = np.where(y == 1, 1.0, -1.0)
    good_a = 3 * signal + rng.normal(0, 1.5, 100)
    good_b = 3 * signal + rng.normal(0, 1.5, 100)
    noise = rng.normal(0, 3, 100)
    np.testing.assert_allclose(fgc.mean_logit([[0.0, 2.0], [2.0, -4.0]]), [1.0, -1.0])
    members = fgc.choose_ensemble_members(y, {"a": good_a, "noise": noise, "b": good_b})
    assert members == ["a", "b"]  # two independent good members average their errors away; noise adds loss
    loss = fgc.log_loss_of_logits
    assert loss(y, fgc.mean_logit([good_a, good_b])) < min(loss(y, good_a), loss(y, good_b))
    # a perfect single member is not diluted: ties and losses go to the smaller set
    assert fgc.choose_ensemble_members(y, {"perfect": 50 * signal, "noise": noise}) == ["perfect"]


def test_family_entry_and_test_scoring(fgc):
    rng = np.random.default_rng(1)
    y_val, y_test = np.repeat([0, 1], 20), np.repeat([0, 1], 30)
    seeds = [{"seed": s, "best_epoch": 3, "val_logits": np.where(y_val == 1, 2.0, -2.0) + rng.normal(0, 1.5, 40)}
             for s in range(3)]
    entry = fgc.family_entry(y_val, seeds)
    assert [r["seed"] for r in entry["seeds"]] == [0, 1, 2]
    assert all({"seed", "best_epoch", "threshold", "val"} <= set(r) for r in entry["seeds"])
    assert not any(key.endswith("_logits") for r in entry["seeds"] for key in r)
    ensemble_val = fgc.mean_logit([s["val_logits"] for s in seeds])
    assert entry["threshold"] == fgc.logit_threshold(y_val, ensemble_val)
    assert entry["threshold_probability"] == pytest.approx(1 / (1 + np.exp(-entry["threshold"])))

    test_logits = [np.where(y_test == 1, 2.0, -2.0) + rng.normal(0, 2.0, 60) for _ in range(3)]
    ensemble = fgc.score_on_test(entry, y_test, test_logits, n_resamples=50, seed=0)
    np.testing.assert_allclose(ensemble, np.mean(test_logits, axis=0))
    assert entry["test"]["accuracy"] == fgc.scored(y_test, ensemble, entry["threshold"])["accuracy"]
    assert "accuracy_ci95" in entry["test"]
    per_seed = [r["test"]["accuracy"] for r in entry["seeds"]]
    assert per_seed[0] == fgc.scored(y_test, test_logits[0], entry["seeds"][0]["threshold"])["accuracy"]
    assert entry["seed_spread"]["accuracy_mean"] == pytest.approx(np.mean(per_seed))
    assert entry["seed_spread"]["accuracy_sd"] == pytest.approx(np.std(per_seed, ddof=1))
    assert entry["seed_spread"]["n_seeds"] == 3


def test_results_table_rows(fgc):
    spread = {"accuracy_mean": 0.8, "accuracy_sd": 0.02, "roc_auc_mean": 0.9, "roc_auc_sd": 0.01, "n_seeds": 3}
    test = {"accuracy": 0.85, "accuracy_ci95": [0.82, 0.88], "roc_auc": 0.93, "roc_auc_ci95": [0.91, 0.95],
            "sensitivity": 0.9, "specificity": 0.7}
    metrics = {"models": {
        "scratch_cnn": {"status": "ok", "test": test, "seed_spread": spread, "threshold": 0.5,
                        "seeds": [{"train_seconds": 60.0}] * 3},
        "vggface_transfer": {"status": "not run: weights unavailable"},
        "ensemble": {"status": "ok", "members": ["scratch_cnn", "x"], "test": test, "threshold": 0.1}}}
    table = fgc.results_table(metrics)
    rows = table.set_index("model")
    assert rows.loc["scratch_cnn", "accuracy"] == "0.850 [0.820, 0.880]"
    assert rows.loc["scratch_cnn", "accuracy over seeds"] == "0.800 ± 0.020"
    assert rows.loc["scratch_cnn", "train_minutes"] == "3.0"
    assert rows.loc["vggface_transfer", "accuracy"] == ""
    assert "ensemble (scratch_cnn + x)" in rows.index
    assert {"published"} == set(table[table["model"].str.contains("MedMNIST|Kermany|original")]["status"])


def test_rerun_agreement_finds_what_changed_between_two_runs(fgc):
    import copy

    def record(seed, accuracy):
        return {"seed": seed, "best_epoch": 3, "threshold": 0.4, "val": {"roc_auc": 0.99},
                "test": {"accuracy": accuracy, "roc_auc": 0.95}}

    before = {"models": {
        "scratch_cnn": {"threshold": 0.2, "val": {"roc_auc": 0.99}, "test": {"accuracy": 0.84, "roc_auc": 0.93},
                        "seeds": [record(0, 0.80), record(1, 0.78)]},
        "vggface_transfer": {"status": "not run: weights unavailable"}}}
    after = copy.deepcopy(before)
    after["models"]["scratch_cnn"]["seeds"][0].update({"from_cache": True, "train_seconds": 5.0})  # how, not what
    same = fgc.rerun_agreement(before, after)
    assert list(same["seed"]) == [0, 1, "ensemble"] and same["identical"].all() and (same["max_abs_diff"] == 0).all()
    after["models"]["scratch_cnn"]["seeds"][1]["test"]["accuracy"] = 0.75
    after["models"]["scratch_cnn"]["seeds"][0]["best_epoch"] = 4
    after["models"]["scratch_cnn"]["seeds"].append(record(2, 0.9))  # a seed only one run has
    after["models"]["scratch_cnn"]["test"]["accuracy_ci95"] = [0.8, 0.9]  # a value outside the table's columns
    changed = fgc.rerun_agreement(before, after).set_index("seed")
    assert list(changed.index) == [0, 1, 2, "ensemble"]
    assert not changed.loc[0, "identical"] and changed.loc[0, "best_epoch after"] == 4
    assert not changed.loc[1, "identical"] and changed.loc[1, "max_abs_diff"] == pytest.approx(0.03)
    assert not changed.loc[2, "identical"] and changed.loc[2, "only_in"] == "after"
    assert not changed.loc["ensemble", "identical"] and changed.loc["ensemble", "test.accuracy after"] == 0.84
    del after["models"]["scratch_cnn"]
    gone = fgc.rerun_agreement(before, after)
    assert set(gone["only_in"]) == {"before"} and not gone["identical"].any()  # a vanished family is reported


def test_train_serve_gaps_compare_original_and_copy(fgc, data_root):
    from helpers import build_tiny_model

    model = build_tiny_model()
    fullsize, small = data_root / "chest_xray_fullsize_sample", data_root / "chest_xray_224"
    original = sorted(fullsize.glob("test/*/*.jpeg"))[0]
    copy = small / original.relative_to(fullsize)
    gaps = fgc.train_serve_gaps(model, [(original, copy), (copy, copy)])
    assert list(gaps.columns) == ["original", "copy", "p_original", "p_copy", "abs_diff"]
    assert gaps.loc[1, "abs_diff"] == 0.0  # the same file twice: the same probability
    expected = float(model(fgc.load_image_for_model(original.read_bytes())[1], training=False)[0, 0])
    assert gaps.loc[0, "p_original"] == pytest.approx(expected)
    assert gaps.loc[0, "abs_diff"] == pytest.approx(abs(gaps.loc[0, "p_original"] - gaps.loc[0, "p_copy"]))
