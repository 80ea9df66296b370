"""Grad-CAM / Grad-CAM++ maps against independent computations (hand and chain-rule, with and
without a centre-crop first layer), the compiled explainer and overlays. The checks of the maps are
tested in tests/test_gradcam_checks.py."""
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
    explainer = fgc.GradCamExplainer(model, "last_conv")
    for class_index, sign in ((1, 1.0), (0, -1.0)):
        batch = explainer(images, class_index=class_index)
        maps = batch.conv_maps["gradcam"]
        assert maps.shape == (4, 12, 12) and batch.maps["gradcam"].shape == (4, H, W)
        np.testing.assert_array_equal(batch.explained, class_index)
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
    for a, heatmap in zip(_activations(keras, gap_model, images), maps):  # 16 x 16: the frame is the conv grid
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
# The compiled explainer and the centre crop
# ----------------------------------------------------------------------------------------------
C = 32  # input side of the crop models; the centre crop keeps 28 x 28 at rows / columns 2..29 (as 196 of 224:
B = 28  # the 10% border, 3 px, overlaps the box by 1 px)


def _crop_model(keras, stride: int = 1, crop: bool = True, name: str = "centre_crop"):
    """Input 32x32x3 -> [CenterCrop 28 named ``name``] -> Conv2D 'last_conv' (4, stride) -> GAP -> Dense(1, sigmoid)."""
    inputs = keras.Input((C, C, 3))
    x = keras.layers.CenterCrop(B, B, name=name)(inputs) if crop else inputs
    x = keras.layers.Conv2D(4, 3, strides=stride, padding="same", activation="relu", name="last_conv",
                            kernel_initializer=keras.initializers.RandomNormal(0.0, 0.5, seed=1),
                            bias_initializer=keras.initializers.Constant(0.05))(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prediction")(x)
    model = keras.Model(inputs, outputs, name="tiny_crop" if crop else "tiny_full")
    model.get_layer("prediction").set_weights([np.array([[1.5], [-2.0], [0.7], [-0.3]], np.float32),
                                               np.array([0.1], np.float32)])
    return model


@pytest.fixture(scope="module")
def crop_images():
    return np.random.default_rng(5).random((6, C, C, 3), dtype=np.float32)


def test_input_crop_box(fgc, keras_seeded):
    keras = keras_seeded
    model = _crop_model(keras)
    assert fgc.input_crop_box(model) == (2, 2, B, B)
    assert fgc.input_crop_box(_crop_model(keras, crop=False)) == (0, 0, C, C)
    assert fgc.input_crop_box(_crop_model(keras, name="some_crop")) == (0, 0, C, C)  # only "centre_crop" counts
    # Keras crops where the box says
    image = np.arange(C * C * 3, dtype=np.float32).reshape(1, C, C, 3)
    cropped = keras.Model(model.inputs[0], model.get_layer("centre_crop").output)(image, training=False)
    np.testing.assert_array_equal(np.asarray(cropped), image[:, 2:30, 2:30])
    odd = keras.Sequential([keras.Input((C, C + 1, 3)), keras.layers.CenterCrop(27, 28, name="centre_crop"),
                            keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(1, activation="sigmoid")])
    assert fgc.input_crop_box(odd) == (2, 2, 27, 28)
    late = keras.Sequential([keras.Input((C, C, 3)), keras.layers.Conv2D(2, 3, padding="same"),
                             keras.layers.CenterCrop(B, B, name="centre_crop"), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(1, activation="sigmoid")])
    with pytest.raises(ValueError, match="first layer"):  # a crop of features is no box of the input
        fgc.input_crop_box(late)


@pytest.mark.parametrize("stride", [1, 2])
def test_maps_with_crop_are_placed_in_the_input_frame(fgc, keras_seeded, crop_images, stride):
    keras = keras_seeded
    model = _crop_model(keras, stride)
    batch = fgc.GradCamExplainer(model)(crop_images, class_index=1)
    conv, frame = batch.conv_maps["gradcam"], batch.maps["gradcam"]
    assert conv.shape == (6, B // stride, B // stride) and frame.shape == (6, C, C)
    outside = np.ones((C, C), bool)
    outside[2:30, 2:30] = False
    assert np.all(frame[:, outside] == 0) and np.all(frame.max(axis=(1, 2)) == pytest.approx(1.0))
    # the conv map is the hand map of the cropped image (GAP model: weights = Dense kernel)
    activations = np.asarray(keras.Model(model.inputs[0], model.get_layer("last_conv").output)(crop_images, training=False))
    w = model.get_layer("prediction").get_weights()[0][:, 0]
    for a, heatmap in zip(activations, conv):
        np.testing.assert_allclose(heatmap, _normalise(np.einsum("hwk,k->hw", a, w)), atol=1e-5)
    # inside the box: the conv map resized bilinearly to 28 x 28 (identity at stride 1)
    import tensorflow as tf

    resized = tf.image.resize(conv[..., None], (B, B), method="bilinear").numpy()[..., 0]
    peak = resized.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(frame[:, 2:30, 2:30], resized / peak, atol=1e-5)
    # the wrappers give the frame maps
    heatmaps, probabilities = fgc.make_gradcam_heatmaps(crop_images, model, class_index=1)
    np.testing.assert_allclose(heatmaps, frame, atol=1e-6)
    np.testing.assert_allclose(probabilities, model.predict(crop_images, verbose=0)[:, 0], atol=1e-6)


def test_without_crop_the_map_covers_the_whole_input(fgc, keras_seeded, crop_images):
    model = _crop_model(keras_seeded, stride=2, crop=False)
    batch = fgc.GradCamExplainer(model)(crop_images, class_index=1)
    assert batch.conv_maps["gradcam"].shape == (6, 16, 16) and batch.maps["gradcam"].shape == (6, C, C)
    assert np.all(batch.maps["gradcam"][:, [0, -1]].max(axis=(1, 2)) > 0)  # reaches the edges


def test_explainer_compiled_once_matches_eager(fgc, keras_seeded, crop_images):
    model = _crop_model(keras_seeded, stride=2)
    explainer = fgc.GradCamExplainer(model)
    eager = fgc.GradCamExplainer(model, compiled=False)
    for size in (1, 4, 6):
        fast, slow = explainer(crop_images[:size]), eager(crop_images[:size])
        for method in fgc.METHODS:
            np.testing.assert_allclose(fast.maps[method], slow.maps[method], atol=1e-5)
            np.testing.assert_allclose(fast.conv_maps[method], slow.conv_maps[method], atol=1e-5)
        np.testing.assert_allclose(fast.logits, slow.logits, atol=1e-5)
        np.testing.assert_array_equal(fast.explained, (fast.probabilities >= 0.5).astype(int))
    chunked = explainer(crop_images, batch_size=4)  # chunks of 4 and 2
    np.testing.assert_allclose(chunked.maps["gradcam++"], explainer(crop_images).maps["gradcam++"], atol=1e-6)
    assert explainer._explain.experimental_get_tracing_count() == 1  # one graph for every batch size
    logits = explainer.logits(crop_images, batch_size=4)
    assert logits.dtype == np.float64 and logits.shape == (6,)
    np.testing.assert_allclose(logits, explainer(crop_images).logits, atol=1e-5)
    assert explainer._logits.experimental_get_tracing_count() == 1
    with pytest.raises(ValueError, match="method"):
        fgc.GradCamExplainer(model, methods=("gradcam", "lime"))


def test_explainer_leaves_batch_norm_statistics_alone(fgc, keras_seeded, crop_images):
    """A Keras 3 pitfall: CenterCrop's call default (training=True) reaches the later layers of a model
    called without training=False, and BatchNorm then updates its statistics. The explainer passes it."""
    keras = keras_seeded
    model = keras.Sequential([keras.Input((C, C, 3)), keras.layers.CenterCrop(24, 24, name="centre_crop"),
                              keras.layers.Conv2D(4, 3, name="last_conv"), keras.layers.BatchNormalization(name="bn"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid")])
    before = [w.copy() for w in model.get_layer("bn").get_weights()]
    explainer = fgc.GradCamExplainer(model, "last_conv")
    explainer(crop_images)
    explainer.logits(crop_images)
    for old, now in zip(before, model.get_layer("bn").get_weights()):
        np.testing.assert_array_equal(old, now)


# ----------------------------------------------------------------------------------------------
# Real architectures (as built now: centre crop first)
# ----------------------------------------------------------------------------------------------
def _assert_valid_maps(maps, shape):
    assert maps.shape == shape and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0


def _conv_shape(model, name):
    return tuple(model.get_layer(name).output.shape[1:3])


def test_scratch_cnn_gradcam(fgc, scratch_cnn, sample_images):
    images = sample_images[:2]
    batch = fgc.GradCamExplainer(scratch_cnn, "conv4")(images)
    _assert_valid_maps(batch.maps["gradcam"], (2, 224, 224))
    _assert_valid_maps(batch.conv_maps["gradcam++"], (2, *_conv_shape(scratch_cnn, "conv4")))
    top, left, height, width = fgc.input_crop_box(scratch_cnn)
    inside = np.zeros((224, 224), bool)
    inside[top:top + height, left:left + width] = True
    assert np.all(batch.maps["gradcam"][:, ~inside] == 0)
    np.testing.assert_allclose(batch.probabilities, scratch_cnn.predict(images, verbose=0)[:, 0], atol=1e-5)
    single = fgc.make_gradcam_heatmap(images[:1], scratch_cnn)  # default: last conv (conv4)
    np.testing.assert_allclose(single, batch.maps["gradcam"][0], atol=1e-5)


def test_hed_transfer_gradcam(fgc, hed_transfer, sample_images):
    model, _ = hed_transfer
    image = sample_images[:1]
    positive, probability = fgc.make_gradcam_heatmaps(image, model, "block5_conv3", class_index=1)
    negative, probability_again = fgc.make_gradcam_heatmaps(image, model, class_index=0)  # default layer
    _assert_valid_maps(positive, (1, 224, 224))
    _assert_valid_maps(negative, (1, 224, 224))
    assert 0.0 <= probability[0] <= 1.0 and probability_again[0] == pytest.approx(probability[0], abs=1e-6)
    assert not np.allclose(positive, negative)
    assert positive.max() > 0 or negative.max() > 0
    auto = fgc.make_gradcam_heatmap(image, model)
    np.testing.assert_allclose(auto, (positive if probability[0] >= 0.5 else negative)[0], atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Overlays
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
