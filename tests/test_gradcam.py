"""Grad-CAM / Grad-CAM++ against independent computations, overlays, the balanced sampler and the
map checks (deletion / insertion against a same-shape random order, verdict rules)."""
from __future__ import annotations

import numpy as np
import pytest

H = W = 16


def _normalise(cam: np.ndarray) -> np.ndarray:
    cam = np.maximum(cam, 0.0)
    return cam / cam.max() if cam.max() > 0 else cam


def _gap_model(keras, dense_kernel, bias=0.1, relu=True, seed=0):
    """Input 16x16x3 -> Conv2D 'last_conv' (4) -> GAP -> Dense(1, sigmoid), functional."""
    inputs = keras.Input((H, W, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu" if relu else None, name="last_conv",
                               kernel_initializer=keras.initializers.RandomNormal(0.0, 0.5, seed=seed),
                               bias_initializer=keras.initializers.Constant(0.05))(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(conv)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prediction")(pooled)
    model = keras.Model(inputs, outputs, name="tiny_gap")
    model.get_layer("prediction").set_weights([np.asarray(dense_kernel, np.float32).reshape(4, 1),
                                               np.array([bias], np.float32)])
    return model


def _activations(keras, model, images):
    return np.asarray(keras.Model(model.inputs[0], model.get_layer("last_conv").output)(images), np.float64)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((4, H, W, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def gap_model(keras_seeded):
    return _gap_model(keras_seeded, [1.5, -2.0, 0.7, -0.3])


def _gap_hand_map(keras, model, image, sign):
    a = _activations(keras, model, image[None])[0]
    w = model.get_layer("prediction").get_weights()[0][:, 0]
    # d logit / dA_k = w_k / (h*w) everywhere: weights are w_k / (h*w); the scale cancels in normalising
    return _normalise(sign * np.einsum("hwk,k->hw", a, w))


# ----------------------------------------------------------------------------------------------
# Against hand computations
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pred_index, sign", [(1, 1.0), (0, -1.0)])
def test_gap_model_matches_hand_computation(fgc, keras_seeded, gap_model, images, pred_index, sign):
    for image in images:
        heatmap = fgc.make_gradcam_heatmap(image[None], gap_model, "last_conv", pred_index=pred_index)
        expected = _gap_hand_map(keras_seeded, gap_model, image, sign)
        assert heatmap.shape == (H, W) and heatmap.dtype == np.float32
        assert expected.max() == 1.0  # both classes have positive evidence in this model
        np.testing.assert_allclose(heatmap, expected, atol=1e-5)


def test_sequential_flatten_model_matches_hand_computation(fgc, keras_seeded, images):
    keras = keras_seeded
    model = keras.Sequential([
        keras.Input((H, W, 3)),
        keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="last_conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(1, activation="sigmoid", name="prediction"),
    ], name="tiny_flatten")
    kernel = model.get_layer("prediction").get_weights()[0][:, 0].reshape(H, W, 3)  # d logit / dA
    activations = _activations(keras, model, images)
    maps, probabilities = fgc.make_gradcam_heatmaps(images, model, class_index=1)
    for a, heatmap in zip(activations, maps):
        expected = _normalise(np.einsum("hwk,k->hw", a, kernel.mean(axis=(0, 1))))
        np.testing.assert_allclose(heatmap, expected, atol=1e-5)
    np.testing.assert_allclose(probabilities, model.predict(images, verbose=0)[:, 0], atol=1e-6)
    # default layer: the last Conv2D
    np.testing.assert_allclose(fgc.make_gradcam_heatmaps(images, model, None, 1)[0], maps, atol=1e-7)


def test_functional_model_with_hidden_layer_matches_hand_gradient(fgc, keras_seeded, images):
    keras = keras_seeded
    inputs = keras.Input((H, W, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5, activation="relu", name="hidden",
                           bias_initializer=keras.initializers.Constant(0.1))(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prediction")(x)
    model = keras.Model(inputs, outputs, name="tiny_functional")
    w1, b1 = model.get_layer("hidden").get_weights()
    w2 = model.get_layer("prediction").get_weights()[0][:, 0]
    activations = _activations(keras, model, images)
    for class_index, sign in ((1, 1.0), (0, -1.0)):
        maps, _ = fgc.make_gradcam_heatmaps(images, model, "last_conv", class_index=class_index)
        assert maps.shape == (4, 12, 12)
        for a, heatmap in zip(activations, maps):
            pooled = a.mean(axis=(0, 1))
            active = (pooled @ w1 + b1) > 0
            d_logit_d_pooled = w1 @ (w2 * active)  # chain rule through the ReLU hidden layer
            expected = _normalise(sign * np.einsum("hwk,k->hw", a, d_logit_d_pooled))
            np.testing.assert_allclose(heatmap, expected, atol=1e-5)


def test_saturated_sigmoid_still_gives_maps(fgc, keras_seeded, images):
    keras = keras_seeded
    model = _gap_model(keras, np.array([1.5, -2.0, 0.7, -0.3]) * 1e4, bias=1e6)
    maps, probabilities = fgc.make_gradcam_heatmaps(images, model, "last_conv", class_index=1)
    assert np.all(probabilities == 1.0)  # d sigmoid / d logit is exactly 0 here
    assert np.isfinite(maps).all() and np.all(maps.max(axis=(1, 2)) == 1.0)
    for image, heatmap in zip(images, maps):
        np.testing.assert_allclose(heatmap, _gap_hand_map(keras, model, image, 1.0), atol=1e-5)
    normal_maps, _ = fgc.make_gradcam_heatmaps(images, model, "last_conv", class_index=0)
    np.testing.assert_allclose(normal_maps[0], _gap_hand_map(keras, model, images[0], -1.0), atol=1e-5)


def test_pred_index_none_explains_predicted_class(fgc, keras_seeded, images):
    keras = keras_seeded
    for bias, predicted in ((8.0, 1), (-8.0, 0)):
        model = _gap_model(keras, [1.5, -2.0, 0.7, -0.3], bias=bias)
        image = images[:1]
        auto = fgc.make_gradcam_heatmap(image, model, "last_conv")
        chosen = fgc.make_gradcam_heatmap(image, model, "last_conv", pred_index=predicted)
        other = fgc.make_gradcam_heatmap(image, model, "last_conv", pred_index=1 - predicted)
        np.testing.assert_array_equal(auto, chosen)
        assert not np.allclose(auto, other)
    # the threshold decides the predicted class
    model = _gap_model(keras, [1.5, -2.0, 0.7, -0.3])
    np.testing.assert_array_equal(fgc.make_gradcam_heatmap(images[:1], model, threshold=0.0),
                                  fgc.make_gradcam_heatmap(images[:1], model, pred_index=1))
    np.testing.assert_array_equal(fgc.make_gradcam_heatmap(images[:1], model, threshold=1.01),
                                  fgc.make_gradcam_heatmap(images[:1], model, pred_index=0))


def test_all_zero_map_without_positive_evidence(fgc, keras_seeded, images):
    model = _gap_model(keras_seeded, [1.0, 0.5, 2.0, 0.1])  # ReLU activations >= 0, all weights > 0
    maps, _ = fgc.make_gradcam_heatmaps(images, model, "last_conv", class_index=0)
    assert np.isfinite(maps).all() and np.all(maps == 0.0)
    pneumonia_maps, _ = fgc.make_gradcam_heatmaps(images, model, "last_conv", class_index=1)
    assert np.all(pneumonia_maps.max(axis=(1, 2)) == pytest.approx(1.0))
    assert np.all(pneumonia_maps >= 0.0)


def test_batched_equals_one_at_a_time(fgc, keras_seeded, images):
    model = _gap_model(keras_seeded, [1.5, -2.0, 0.7, -0.3], bias=-0.02)
    maps, probabilities = fgc.make_gradcam_heatmaps(images, model, "last_conv")
    assert maps.shape == (4, H, W) and probabilities.shape == (4,)
    for i, image in enumerate(images):
        single = fgc.make_gradcam_heatmap(image[None], model, "last_conv")
        np.testing.assert_allclose(maps[i], single, atol=1e-6)


def test_gradcam_plus_plus_matches_closed_form(fgc, keras_seeded, gap_model, images):
    keras = keras_seeded
    maps, probabilities = fgc.make_gradcam_heatmaps(images, gap_model, "last_conv", class_index=1,
                                                    method="gradcam++")
    assert maps.shape == (4, H, W) and np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0 and np.all(maps.max(axis=(1, 2)) == pytest.approx(1.0))
    w = gap_model.get_layer("prediction").get_weights()[0][:, 0].astype(np.float64)
    g = w / (H * W)  # constant gradient per channel
    for a, heatmap in zip(_activations(keras, gap_model, images), maps):
        alpha = g ** 2 / (2 * g ** 2 + a.sum(axis=(0, 1)) * g ** 3)
        weights = H * W * alpha * np.maximum(g, 0)
        np.testing.assert_allclose(heatmap, _normalise(np.einsum("hwk,k->hw", a, weights)), atol=1e-4)
    plain, _ = fgc.make_gradcam_heatmaps(images, gap_model, "last_conv", class_index=1)
    assert not np.allclose(plain, maps)


def test_gradcam_errors(fgc, keras_seeded, gap_model, images):
    keras = keras_seeded
    with pytest.raises(ValueError, match="method"):
        fgc.make_gradcam_heatmaps(images, gap_model, "last_conv", method="saliency")
    with pytest.raises(ValueError, match="no_such_layer"):
        fgc.make_gradcam_heatmaps(images, gap_model, "no_such_layer")
    softmax = keras.Sequential([keras.Input((H, W, 3)), keras.layers.Conv2D(2, 3, name="last_conv"),
                                keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ValueError, match="sigmoid"):
        fgc.make_gradcam_heatmaps(images, softmax)


# ----------------------------------------------------------------------------------------------
# Real architectures
# ----------------------------------------------------------------------------------------------
def _assert_valid_maps(maps, shape):
    assert maps.shape == shape and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0


def test_scratch_cnn_gradcam(fgc, scratch_cnn, sample_images):
    images = sample_images[:2]
    maps, probabilities = fgc.make_gradcam_heatmaps(images, scratch_cnn, "conv4")
    _assert_valid_maps(maps, (2, 24, 24))
    np.testing.assert_allclose(probabilities, scratch_cnn.predict(images, verbose=0)[:, 0], atol=1e-5)
    single = fgc.make_gradcam_heatmap(images[:1], scratch_cnn)  # default: last conv (conv4)
    np.testing.assert_allclose(single, maps[0], atol=1e-5)
    plus, _ = fgc.make_gradcam_heatmaps(images, scratch_cnn, method="gradcam++")
    _assert_valid_maps(plus, (2, 24, 24))


def test_hed_transfer_gradcam(fgc, hed_transfer, sample_images):
    model, _ = hed_transfer
    image = sample_images[:1]
    positive, probability = fgc.make_gradcam_heatmaps(image, model, "block5_conv3", class_index=1)
    negative, probability_again = fgc.make_gradcam_heatmaps(image, model, class_index=0)  # default layer
    _assert_valid_maps(positive, (1, 14, 14))
    _assert_valid_maps(negative, (1, 14, 14))
    assert 0.0 <= probability[0] <= 1.0 and probability_again[0] == pytest.approx(probability[0], abs=1e-6)
    assert not np.allclose(positive, negative)
    assert positive.max() > 0 or negative.max() > 0
    auto = fgc.make_gradcam_heatmap(image, model)
    np.testing.assert_allclose(auto, (positive if probability[0] >= 0.5 else negative)[0], atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Overlay and the checks
# ----------------------------------------------------------------------------------------------
def test_overlay_keeps_image_size_and_dtype(fgc):
    from matplotlib import colormaps

    image = np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    heatmap = np.random.default_rng(1).random((14, 14)).astype(np.float32)
    out = fgc.overlay_heatmap(image, heatmap)
    assert out.shape == (300, 500, 3) and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    np.testing.assert_array_equal(fgc.overlay_heatmap(image, heatmap, alpha=0.0), image)
    coloured = fgc.overlay_heatmap(image, np.zeros((7, 7)), alpha=1.0)
    expected = np.round(np.asarray(colormaps["jet"](0.0)[:3]) * 255)
    assert np.abs(coloured.reshape(-1, 3) - expected).max() <= 1
    gray = fgc.overlay_heatmap(image[:, :, 0], heatmap)
    assert gray.shape == (300, 500, 3) and gray.dtype == np.uint8


def test_border_mass(fgc):
    np.testing.assert_allclose(fgc.border_mass(np.ones((2, 20, 20)), border=0.1), [0.36, 0.36])
    expected = 1 - (12 * 12) / (14 * 14)  # border of 1 pixel on a 14x14 map
    np.testing.assert_allclose(fgc.border_mass(np.ones((1, 14, 14))), [expected])
    centre = np.zeros((1, 20, 20))
    centre[0, 8:12, 8:12] = 1.0
    frame = np.ones((1, 20, 20))
    frame[0, 2:18, 2:18] = 0.0
    values = fgc.border_mass(np.concatenate([centre, frame, np.zeros((1, 20, 20))]))
    assert values[0] == 0.0 and values[1] == pytest.approx(1.0) and np.isnan(values[2])


def test_randomised_copy(fgc, scratch_cnn, sample_images):
    model = scratch_cnn
    before = [w.copy() for w in model.get_weights()]
    copy = fgc.randomised_copy(model, seed=3)
    assert [layer.__class__ for layer in copy.layers] == [layer.__class__ for layer in model.layers]
    assert [w.shape for w in copy.get_weights()] == [w.shape for w in before]
    for name in ("conv1", "conv4", "dense"):
        assert not np.allclose(copy.get_layer(name).get_weights()[0], model.get_layer(name).get_weights()[0])
    assert not np.allclose(copy.predict(sample_images[:2], verbose=0), model.predict(sample_images[:2], verbose=0))
    for old, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, now)  # the original is untouched
    maps, _ = fgc.make_gradcam_heatmaps(sample_images[:1], copy)  # Grad-CAM works on the copy
    assert maps.shape == (1, 24, 24) and np.isfinite(maps).all()


def test_gradcam_on_sequential_built_with_add(fgc, keras_seeded, images):
    """Sequential.add() rebuilds the graph per layer: the conv output must be the one feeding the output."""
    keras = keras_seeded
    model = keras.Sequential(name="added")
    model.add(keras.Input((H, W, 3)))
    model.add(keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="last_conv"))
    model.add(keras.layers.GlobalAveragePooling2D())
    model.add(keras.layers.Dense(1, activation="sigmoid", name="prediction"))
    for class_index, sign in ((1, 1.0), (0, -1.0)):
        heatmap = fgc.make_gradcam_heatmap(images[:1], model, pred_index=class_index)
        np.testing.assert_allclose(heatmap, _gap_hand_map(keras, model, images[0], sign), atol=1e-5)


def test_map_rank_correlation(fgc):
    rng = np.random.default_rng(0)
    a = rng.random((2, 5, 5))
    values = fgc.map_rank_correlation(a, np.stack([a[0] * 2 + 1, np.ones((5, 5))]))
    assert values[0] == pytest.approx(1.0) and np.isnan(values[1])
    assert fgc.map_rank_correlation(a[:1], -a[:1])[0] == pytest.approx(-1.0)


def test_gradcam_maps_one_pass_for_both_methods(fgc, gap_model, images):
    classes = [1, 0, 1, 0]
    maps, probabilities = fgc.gradcam_maps(images, gap_model, "last_conv", class_index=classes)
    assert set(maps) == {"gradcam", "gradcam++"}
    for method in maps:
        single, single_probabilities = fgc.make_gradcam_heatmaps(images, gap_model, "last_conv", classes,
                                                                 method=method)
        np.testing.assert_allclose(maps[method], single, atol=1e-6)
        np.testing.assert_allclose(probabilities, single_probabilities, atol=1e-7)
    chunked, chunked_probabilities = fgc.gradcam_maps(images, gap_model, "last_conv", class_index=classes,
                                                      batch_size=3)  # chunks of 3 and 1 images
    for method in maps:
        np.testing.assert_allclose(chunked[method], maps[method], atol=1e-6)
    np.testing.assert_allclose(chunked_probabilities, probabilities, atol=1e-7)
    with pytest.raises(ValueError, match="method"):
        fgc.gradcam_maps(images, gap_model, "last_conv", methods=("gradcam", "lime"))


# ----------------------------------------------------------------------------------------------
# Balanced sample of test images
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def toy_index():
    """An index like build_index's: 30 NORMAL and 70 PNEUMONIA test rows, plus train rows."""
    import pandas as pd

    rows = [{"split": split, "target": target, "label": ("NORMAL", "PNEUMONIA")[target],
             "path": f"/data/{split}/{target}/{i:03d}.jpeg"}
            for split, counts in (("test", (30, 70)), ("train", (50, 50))) for target in (0, 1)
            for i in range(counts[target])]
    return pd.DataFrame(rows)


def test_balanced_sample(fgc, toy_index):
    sample = fgc.balanced_sample(toy_index, 16, seed=7)
    assert len(sample) == 32 and set(sample["split"]) == {"test"}
    assert sample["target"].value_counts().to_dict() == {0: 16, 1: 16}
    assert sample["path"].is_unique
    assert set(sample["target"].iloc[:8]) == {0, 1}  # classes mixed, not one class then the other
    again = fgc.balanced_sample(toy_index, 16, seed=7)
    assert again["path"].tolist() == sample["path"].tolist()  # same seed, same sample in the same order
    other = fgc.balanced_sample(toy_index, 16, seed=8)
    assert set(other["path"]) != set(sample["path"])
    assert fgc.balanced_sample(toy_index, 30, seed=0)["target"].value_counts().to_dict() == {0: 30, 1: 30}
    with pytest.raises(ValueError, match="NORMAL"):
        fgc.balanced_sample(toy_index, 31, seed=0)


# ----------------------------------------------------------------------------------------------
# Deletion / insertion on a model whose answer is known
# ----------------------------------------------------------------------------------------------
Q = 32  # image side of the quadrant model


@pytest.fixture(scope="module")
def quadrant_model(keras_seeded):
    """Sees only the top-left quadrant of a 32 x 32 image: logit = 4 * (sum of its mean RGB) - 7."""
    keras = keras_seeded
    inputs = keras.Input((Q, Q, 3))
    x = keras.layers.Cropping2D(((0, Q // 2), (0, Q // 2)))(inputs)
    x = keras.layers.Conv2D(3, 1, use_bias=False, name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prediction")(x)
    model = keras.Model(inputs, outputs, name="quadrant")
    model.get_layer("last_conv").set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)])
    model.get_layer("prediction").set_weights([np.full((3, 1), 4.0, np.float32), np.array([-7.0], np.float32)])
    return model


@pytest.fixture(scope="module")
def quadrant_images():
    """Eight images, bright top-left quadrant (0.7-1) on a dark rest (0-0.3): P(PNEUMONIA) about 0.96."""
    rng = np.random.default_rng(3)
    images = rng.uniform(0.0, 0.3, (8, Q, Q, 3)).astype(np.float32)
    images[:, :Q // 2, :Q // 2] = rng.uniform(0.7, 1.0, (8, Q // 2, Q // 2, 3))
    return images


def _quadrant_maps(n: int) -> dict[str, np.ndarray]:
    """4 x 4 maps: the true one (top-left 2 x 2 cells), its inverse, and an empty map."""
    quadrant = np.zeros((n, 4, 4), np.float32)
    quadrant[:, :2, :2] = 1.0
    return {"quadrant": quadrant, "inverse": 1.0 - quadrant, "empty": np.zeros_like(quadrant)}


def test_deletion_insertion_on_known_model(fgc, quadrant_model, quadrant_images):
    explained = np.ones(8, int)
    result = fgc.faithfulness(quadrant_model, quadrant_images, _quadrant_maps(8), explained, steps=8, fill="mean")
    assert result.fractions[0] == 0.0 and result.fractions[-1] == 1.0 and len(result.fractions) == 11  # + 0.1, 0.2
    rows = {name: part.reset_index(drop=True) for name, part in result.per_image.groupby("method")}
    quadrant, inverse, empty = rows["quadrant"], rows["inverse"], rows["empty"]
    # the true map removes the evidence first, its inverse last; random is in between
    assert np.all(quadrant["deletion_auc"] < quadrant["deletion_auc_random"] - 0.05)
    assert np.all(inverse["deletion_auc"] > inverse["deletion_auc_random"] + 0.05)
    assert np.all(quadrant["insertion_auc"] > quadrant["insertion_auc_random"] + 0.05)
    assert np.all(inverse["insertion_auc"] < inverse["insertion_auc_random"] - 0.05)
    assert np.all(quadrant["drop_top20"] > quadrant["drop_random20"])
    # an empty map is ordered by the random map alone: exactly random
    np.testing.assert_array_equal(empty["deletion_auc"], empty["deletion_auc_random"])
    np.testing.assert_array_equal(empty["insertion_auc"], empty["insertion_auc_random"])
    # shared end points: the image with nothing removed, the fill image with everything removed
    full = quadrant_model.predict(quadrant_images, verbose=0)[:, 0]
    for curves in result.curves.values():
        np.testing.assert_allclose(curves["deletion"][:, 0], full, atol=1e-6)
        np.testing.assert_allclose(curves["insertion"][:, -1], full, atol=1e-6)
        np.testing.assert_allclose(curves["deletion"][:, -1], curves["insertion"][:, 0])
    # drops are points of the deletion curve
    j = int(np.flatnonzero(np.isclose(result.fractions, 0.2))[0])
    deletion = result.curves["quadrant"]["deletion"]
    np.testing.assert_allclose(quadrant["drop_top20"], deletion[:, 0] - deletion[:, j])
    # explaining the other class scores 1 - P(PNEUMONIA)
    flipped = fgc.faithfulness(quadrant_model, quadrant_images, _quadrant_maps(8), 1 - explained, steps=8, fill="mean")
    np.testing.assert_allclose(flipped.curves["quadrant"]["deletion"], 1 - deletion, atol=1e-6)
    summary = fgc.summarise_gradcam_checks(result.per_image.assign(
        true=1, predicted=1, correct=True, rank_corr_random_weights=0.0, border_mass=0.1, empty_map=False))
    verdicts = dict(zip(summary["method"], summary["faithfulness_verdict"]))
    assert verdicts == {"quadrant": "faithful", "inverse": "not faithful", "empty": "not faithful"}


def test_same_shape_random_baseline(fgc):
    size = (64, 64)
    maps = fgc.upsample_maps(_quadrant_maps(3)["quadrant"], size)
    random_maps = fgc.smooth_random_maps(3, (4, 4), size, seed=0)
    map_orders, random_orders = fgc.pixel_orders(maps, random_maps), fgc.pixel_orders(random_maps, random_maps)
    quadrant = np.zeros(size, bool)
    quadrant[:32, :32] = True
    for k in (410, 1024, 2000):
        map_masks, random_masks = fgc.top_k_masks(map_orders, k, size), fgc.top_k_masks(random_orders, k, size)
        assert map_masks.shape == random_masks.shape == (3, *size)
        assert np.all(map_masks.sum(axis=(1, 2)) == k) and np.all(random_masks.sum(axis=(1, 2)) == k)
    inside = (fgc.top_k_masks(map_orders, 1024, size) & quadrant).sum(axis=(1, 2))
    assert np.all(inside > 0.95 * 1024)  # the map's top quarter is its quadrant (bilinear edges aside)
    # blobs of a map cell's size, not scattered pixels: most mask pixels have their right neighbour in the mask
    masks = fgc.top_k_masks(random_orders, 410, size)
    neighbours = (masks[:, :, :-1] & masks[:, :, 1:]).sum(axis=(1, 2)) / masks[:, :, :-1].sum(axis=(1, 2))
    assert np.all(neighbours > 0.8)
    assert not np.array_equal(masks[0], masks[1])  # one random map per image
    np.testing.assert_array_equal(fgc.smooth_random_maps(3, (4, 4), size, seed=0), random_maps)
    assert not np.array_equal(fgc.smooth_random_maps(3, (4, 4), size, seed=1), random_maps)


def test_baseline_images(fgc, quadrant_images):
    mean = fgc.baseline_images(quadrant_images, "mean")
    np.testing.assert_allclose(mean[:, 5, 7], quadrant_images.mean(axis=(1, 2)), rtol=1e-6)
    assert np.ptp(mean, axis=(1, 2)).max() < 1e-6
    blurred = fgc.baseline_images(quadrant_images, "blur", blur_sigma=3.0)
    assert blurred.shape == quadrant_images.shape and blurred.dtype == np.float32
    assert blurred.std() < quadrant_images.std()
    assert blurred[:, 2, 2].mean() > blurred[:, -3, -3].mean() + 0.3  # still bright at the top left
    with pytest.raises(ValueError, match="fill"):
        fgc.baseline_images(quadrant_images, "zeros")


# ----------------------------------------------------------------------------------------------
# Verdict rules and the whole check
# ----------------------------------------------------------------------------------------------
def test_verdict_rules(fgc):
    from scipy.stats import binomtest

    for successes, n in ((27, 32), (16, 32), (5, 5), (0, 7)):
        expected = binomtest(successes, n, 0.5, alternative="greater").pvalue
        assert fgc.sign_test_p(successes, n) == pytest.approx(expected)
    assert fgc.sign_test_p(0, 0) == 1.0
    assert fgc.passes_sign_test(27, 32) is True and fgc.passes_sign_test(16, 32) is False
    assert fgc.passes_sign_test(22, 32) is True and fgc.passes_sign_test(21, 32) is False  # p 0.025 / 0.055
    assert fgc.passes_sign_test(5, 5) is True and fgc.passes_sign_test(4, 4) is None
    assert fgc.faithfulness_verdict(27, 27, 32) == "faithful"
    assert fgc.faithfulness_verdict(27, 10, 32) == "partly faithful (deletion)"
    assert fgc.faithfulness_verdict(10, 27, 32) == "partly faithful (insertion)"
    assert fgc.faithfulness_verdict(16, 16, 32) == "not faithful"
    assert fgc.faithfulness_verdict(4, 4, 4) == "too few images"


def test_summary_counts_subsets_and_verdicts(fgc):
    import pandas as pd

    n = 10
    true = np.array([0] * 5 + [1] * 5)
    correct = np.array([True] * 8 + [False] * 2)
    per_image = pd.DataFrame({
        "model": "m", "method": "gradcam", "image": np.arange(n), "true": true,
        "predicted": np.where(correct, true, 1 - true), "correct": correct,
        "deletion_auc": 0.2, "deletion_auc_random": np.r_[[0.5] * 9, 0.1],  # map below random in 9 of 10
        "insertion_auc": 0.5, "insertion_auc_random": 0.5,  # ties count against the map
        "drop_top10": 0.1, "drop_random10": 0.0, "drop_top20": 0.2, "drop_random20": 0.1,
        "rank_corr_random_weights": np.r_[[0.1] * 8, -0.2, -0.9],  # |r| < 0.5 in 9 of 10; -0.9 fails
        "border_mass": np.r_[[0.5] * 9, 0.1],  # 1 of 10 below a uniform map's share (0.354)
        "empty_map": np.r_[[False] * 9, True]})
    summary = fgc.summarise_gradcam_checks(per_image).set_index("subset")
    assert summary.index.tolist() == ["all", "correct", "wrong"]
    row = summary.loc["all"]
    assert (row["n_images"], row["n_normal"], row["n_pneumonia"], row["n_correct"], row["n_wrong"]) == (10, 5, 5, 8, 2)
    assert (row["deletion_wins"], row["insertion_wins"], row["sanity_passes"], row["border_passes"]) == (9, 0, 9, 1)
    assert row["faithfulness_verdict"] == "partly faithful (deletion)"
    assert row["sanity_verdict"] == "passes" and row["border_verdict"] == "not interior"
    assert row["empty_maps"] == pytest.approx(0.1) and row["deletion_auc_random"] == pytest.approx(0.46)
    assert summary.loc["correct", "n_images"] == 8 and summary.loc["wrong", "n_images"] == 2
    assert summary.loc["wrong", "faithfulness_verdict"] == "too few images"
    text = fgc.describe_checks(summary.reset_index().iloc[0])
    assert "PARTLY FAITHFUL (DELETION)" in text and "9 of 10" in text and "5 NORMAL" in text
    assert "wrong" not in set(fgc.summarise_gradcam_checks(per_image[per_image["correct"]])["subset"])


def test_gradcam_checks_end_to_end(fgc, gap_model, images):
    import matplotlib.pyplot as plt
    import pandas as pd

    y_true = np.array([0, 1, 0, 1])
    maps, probabilities = fgc.gradcam_maps(images, gap_model, "last_conv")
    result = fgc.gradcam_checks(gap_model, images, y_true, maps, probabilities, 0.5, "last_conv", steps=4, seed=0)
    frame = result.per_image
    assert len(frame) == 8 and set(frame["method"]) == {"gradcam", "gradcam++"}
    predicted = (probabilities >= 0.5).astype(int)
    np.testing.assert_array_equal(frame["predicted"].to_numpy()[:4], predicted)
    np.testing.assert_array_equal(frame["correct"].to_numpy()[:4], predicted == y_true)
    areas = frame[["deletion_auc", "deletion_auc_random", "insertion_auc", "insertion_auc_random"]].to_numpy()
    assert np.isfinite(areas).all() and areas.min() >= 0 and areas.max() <= 1
    assert np.isfinite(frame[["drop_top10", "drop_random10", "drop_top20", "drop_random20"]].to_numpy()).all()
    assert frame["rank_corr_random_weights"].between(-1, 1).all()
    assert frame["border_mass"].between(0, 1).all()
    again = fgc.gradcam_checks(gap_model, images, y_true, maps, probabilities, 0.5, "last_conv", steps=4, seed=0)
    pd.testing.assert_frame_equal(again.per_image, frame)  # seeded
    summary = fgc.summarise_gradcam_checks(frame)
    assert {"n_normal", "n_pneumonia", "n_correct", "n_wrong", "faithfulness_verdict", "sanity_verdict",
            "border_verdict", "deletion_auc_random", "insertion_auc_random"} <= set(summary.columns)
    figure = fgc.plot_faithfulness_curves(result, "tiny")
    assert len(figure.axes) == 2 and len(figure.axes[0].lines) == 3  # gradcam, gradcam++, random
    plt.close(figure)


def test_readme_table_shows_the_computed_verdicts(fgc, update_readme):
    import pandas as pd

    per_image = pd.DataFrame({
        "model": "m", "method": "gradcam", "image": np.arange(6), "true": [0, 1] * 3, "predicted": [0, 1] * 3,
        "correct": True, "deletion_auc": 0.2, "deletion_auc_random": 0.4, "insertion_auc": 0.3,
        "insertion_auc_random": 0.6, "drop_top10": 0.1, "drop_random10": 0.0, "drop_top20": 0.2,
        "drop_random20": 0.1, "rank_corr_random_weights": 0.9, "border_mass": 0.1, "empty_map": False})
    table = update_readme.gradcam_checks_section(fgc.summarise_gradcam_checks(per_image))
    lines = table.splitlines()
    assert len(lines) == 4  # header, rule, "all" and "correct" (no wrong predictions)
    assert "faithful" in lines[0] and "| partly faithful (deletion) |" in lines[2]
    assert "6 of 6" in lines[2] and "0 of 6): fails" in lines[2] and "6 of 6): interior" in lines[2]
