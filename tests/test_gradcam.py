"""Grad-CAM / Grad-CAM++ against independent computations (with and without a centre-crop first
layer), the compiled explainer, overlays, the balanced sampler and the map checks: deletion /
insertion against a same-shape baseline on a model whose answer is known, sanity, borders, and the
verdict rules on per-image data built so that a wrong rule fails."""
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
# Overlay, borders, sanity
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


def test_border_share(fgc):
    np.testing.assert_allclose(fgc.border_share(np.ones((2, 20, 20)), border=0.1), [0.36, 0.36])
    expected = 1 - (12 * 12) / (14 * 14)  # border of 1 pixel on a 14x14 map
    np.testing.assert_allclose(fgc.border_share(np.ones((1, 14, 14))), [expected])
    centre = np.zeros((1, 20, 20))
    centre[0, 8:12, 8:12] = 1.0
    frame = np.ones((1, 20, 20))
    frame[0, 2:18, 2:18] = 0.0
    values = fgc.border_share(np.concatenate([centre, frame, np.zeros((1, 20, 20))]))
    assert values[0] == 0.0 and values[1] == pytest.approx(1.0) and np.isnan(values[2])
    # a uniform map over the central 196 x 196 of a 224 x 224 input: the ring 14..22 px of the 22 px border
    uniform = np.asarray(fgc.place_in_frame(np.ones((1, 7, 7)), (14, 14, 196, 196), (224, 224)))
    assert fgc.border_share(uniform)[0] == pytest.approx(1 - 180 ** 2 / 196 ** 2)


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
    assert fgc.input_crop_box(copy) == fgc.input_crop_box(model)


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
    a = rng.random((3, 5, 5))
    values = fgc.map_rank_correlation(a, np.stack([a[0] * 2 + 1, np.ones((5, 5)), -a[2]]))
    assert values[0] == pytest.approx(1.0) and values[2] == pytest.approx(-1.0)
    assert values[1] == 0.0  # a constant random-weights map: the map differs from it, a pass
    assert np.isnan(fgc.map_rank_correlation(np.zeros((1, 5, 5)), a[:1])[0])  # an empty map: nothing to check


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
# Orders, baselines and fills
# ----------------------------------------------------------------------------------------------
def test_pixel_ranks(fgc):
    maps = np.zeros((1, 6, 6), np.float32)
    maps[0, 2, 3], maps[0, 3, 3] = 1.0, 0.5
    maps[0, 0, 0] = 2.0  # outside the box: never first
    ties = np.random.default_rng(0).random((1, 6, 6)).astype(np.float32)
    box = (1, 1, 4, 4)
    ranks = fgc.pixel_ranks(maps, ties, box)
    assert ranks.shape == (1, 6, 6) and ranks.dtype == np.int32
    assert sorted(ranks.ravel()) == list(range(36))
    assert ranks[0, 2, 3] == 0 and ranks[0, 3, 3] == 1
    inside = np.zeros((6, 6), bool)
    inside[1:5, 1:5] = True
    assert ranks[0][inside].max() == 15 and ranks[0][~inside].min() == 16  # outside the box comes last
    rest = inside.copy()
    rest[2, 3] = rest[3, 3] = False
    tie_order = np.argsort(-ties[0][rest])
    np.testing.assert_array_equal(np.argsort(ranks[0][rest]), tie_order)  # zeros ordered by the tie-breaker
    draws = fgc.pixel_ranks(np.stack([maps, maps], axis=1), ties, box)  # (N, D, H, W)
    assert draws.shape == (1, 2, 6, 6) and np.array_equal(draws[0, 0], ranks[0])


def test_shifted_maps_keep_the_shape(fgc):
    rng = np.random.default_rng(1)
    maps = np.zeros((2, 12, 12), np.float32)
    maps[:, 2:10, 2:10] = rng.random((2, 8, 8))
    box = (2, 2, 8, 8)
    shifted = fgc.shifted_maps(maps, box, draws=10, seed=3)
    assert shifted.shape == (2, 10, 12, 12)
    outside = np.ones((12, 12), bool)
    outside[2:10, 2:10] = False
    assert np.all(shifted[:, :, outside] == 0)
    for i in range(2):
        region = maps[i, 2:10, 2:10]
        candidates = [np.roll(region[::a, ::b], (dy, dx), axis=(0, 1)) for a in (1, -1) for b in (1, -1)
                      for dy in range(8) for dx in range(8)]
        for d in range(10):  # each copy is a flip and circular shift of the map inside the box
            assert any(np.array_equal(shifted[i, d, 2:10, 2:10], c) for c in candidates)
        assert len({shifted[i, d].tobytes() for d in range(10)}) > 6  # draws differ
    np.testing.assert_array_equal(fgc.shifted_maps(maps, box, 10, seed=3), shifted)  # seeded


def test_noise_maps(fgc):
    box = (8, 8, 48, 48)
    noise = fgc.noise_maps(3, (4, 4), box, (64, 64), seed=0)
    assert noise.shape == (3, 64, 64) and noise.dtype == np.float32
    assert np.all(noise[:, :8] == 0) and np.all(noise[:, :, 56:] == 0)
    ranks = fgc.pixel_ranks(noise, noise, box)
    masks = ranks < 300  # the top of a smooth noise map: blobs of a cell's size, not scattered pixels
    neighbours = (masks[:, :, :-1] & masks[:, :, 1:]).sum(axis=(1, 2)) / masks[:, :, :-1].sum(axis=(1, 2))
    assert np.all(neighbours > 0.8) and not np.array_equal(masks[0], masks[1])
    np.testing.assert_array_equal(fgc.noise_maps(3, (4, 4), box, (64, 64), seed=0), noise)


def test_fills(fgc):
    images = np.random.default_rng(2).random((2, 16, 16, 3)).astype(np.float32)
    images[:, :8, :8] = 1.0
    np.testing.assert_array_equal(fgc.deletion_images(images, "zeros"), 0.0)
    mean = fgc.deletion_images(images, "mean")
    np.testing.assert_allclose(mean[:, 5, 7], images.mean(axis=(1, 2)), rtol=1e-6)
    assert np.ptp(mean, axis=(1, 2)).max() < 1e-6
    blurred = fgc.blurred_images(images, 2.0)
    assert blurred.shape == images.shape and blurred.dtype == np.float32 and blurred.std() < images.std()
    assert blurred[:, 2, 2].mean() > blurred[:, -3, -3].mean() + 0.2  # still bright at the top left
    with pytest.raises(ValueError, match="fill"):
        fgc.deletion_images(images, "blur")
    with pytest.raises(ValueError, match="deletion_fill"):
        fgc.CurveSettings(deletion_fill="blur")
    with pytest.raises(ValueError, match="draws_per_point"):
        fgc.CurveSettings(baseline_draws=3, draws_per_point=4)
    with pytest.raises(ValueError, match="steps"):
        fgc.CurveSettings(steps=1)


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


def _quadrant_batch(fgc, explained: np.ndarray):
    """Hand-made maps: the true one (top-left quadrant, peaked at its centre), its inverse, an empty map."""
    n = len(explained)
    quadrant = np.zeros((n, 4, 4), np.float32)
    quadrant[:, :2, :2] = 1.0
    quadrant[:, 1, 1] = 2.0
    conv = {"quadrant": quadrant / 2, "inverse": 1.0 - quadrant / 2, "empty": np.zeros_like(quadrant)}
    frame = {name: np.repeat(np.repeat(m, Q // 4, axis=1), Q // 4, axis=2) for name, m in conv.items()}
    return fgc.GradCamBatch(np.zeros(n), np.full(n, 0.5), explained, frame, conv)


def test_deletion_insertion_on_known_model(fgc, quadrant_model, quadrant_images):
    explainer = fgc.GradCamExplainer(quadrant_model)
    explained = np.ones(8, int)
    settings = fgc.CurveSettings(steps=16, baseline_draws=4, insertion_blur_sigma=10.0)  # a 32 px image
    result = fgc.faithfulness(explainer, quadrant_images, _quadrant_batch(fgc, explained), settings)
    np.testing.assert_allclose(result.fractions, np.linspace(0, 1, 17))
    rows = {name: part.reset_index(drop=True) for name, part in result.per_image.groupby("method")}
    quadrant, inverse, empty = rows["quadrant"], rows["inverse"], rows["empty"]
    # the true map removes the evidence first, its inverse last; both baselines lie in between
    for baseline in ("shifted", "noise"):
        assert np.all(quadrant["deletion_auc"] < quadrant[f"deletion_auc_{baseline}"] - 0.05)
        assert np.all(inverse["deletion_auc"] > inverse[f"deletion_auc_{baseline}"] + 0.05)
        assert np.all(quadrant["insertion_auc"] > quadrant[f"insertion_auc_{baseline}"] + 0.05)
        assert np.all(inverse["insertion_auc"] < inverse[f"insertion_auc_{baseline}"] - 0.05)
    # an empty map is ranked by the noise map alone, and so are its shifted copies: exactly its baselines
    for kind in ("deletion", "insertion"):
        np.testing.assert_array_equal(empty[f"{kind}_auc"], empty[f"{kind}_auc_noise"])
        np.testing.assert_array_equal(empty[f"{kind}_auc"], empty[f"{kind}_auc_shifted"])
    # end points: the image, the deleted image (mean colour) and the blurred canvas
    def probability(images):
        return quadrant_model.predict(images, verbose=0)[:, 0]

    full = probability(quadrant_images)
    deleted = probability(fgc.deletion_images(quadrant_images, "mean"))
    canvas = probability(fgc.blurred_images(quadrant_images, 10.0))
    for curves in result.curves.values():
        np.testing.assert_allclose(curves["deletion"][:, 0], full, atol=1e-6)
        np.testing.assert_allclose(curves["deletion"][:, -1], deleted, atol=1e-6)
        np.testing.assert_allclose(curves["insertion"][:, 0], canvas, atol=1e-6)
        np.testing.assert_allclose(curves["insertion"][:, -1], full, atol=1e-6)
    # areas are trapezoids of the curves
    curve = result.curves["quadrant"]["deletion"]
    np.testing.assert_allclose(quadrant["deletion_auc"], (curve[:, 1:] + curve[:, :-1]).sum(axis=1) / 2 / 16)
    # explaining the other class scores 1 - P(PNEUMONIA)
    flipped = fgc.faithfulness(explainer, quadrant_images, _quadrant_batch(fgc, 1 - explained), settings)
    np.testing.assert_allclose(flipped.curves["quadrant"]["deletion"], 1 - curve, atol=1e-6)


def test_one_draw_per_point_estimates_the_mean_of_the_draws(fgc, quadrant_model, quadrant_images):
    """draws_per_point = baseline_draws averages every copy's curve; 1 takes the copies in turn."""
    explainer = fgc.GradCamExplainer(quadrant_model)
    explained = np.ones(8, int)
    maps = np.random.default_rng(4).random((8, 3, Q, Q)).astype(np.float32)
    ties = np.zeros((8, Q, Q), np.float32)
    ranks = fgc.pixel_ranks(maps, ties, (0, 0, Q, Q))
    every = fgc.CurveSettings(steps=8, baseline_draws=3, draws_per_point=3)
    single = [fgc.deletion_insertion_curves(explainer, quadrant_images, {"m": ranks[:, d]}, explained, every)["m"]
              for d in range(3)]
    averaged = fgc.deletion_insertion_curves(explainer, quadrant_images, {"m": ranks}, explained, every)["m"]
    in_turn = fgc.deletion_insertion_curves(explainer, quadrant_images, {"m": ranks}, explained,
                                            fgc.CurveSettings(steps=8, baseline_draws=3))["m"]
    for kind in ("deletion", "insertion"):
        np.testing.assert_allclose(averaged[kind], np.mean([s[kind] for s in single], axis=0), atol=1e-6)
        for j in range(9):
            np.testing.assert_allclose(in_turn[kind][:, j], single[j % 3][kind][:, j], atol=1e-6)


def test_points_beyond_the_box_equal_the_ends(fgc, keras_seeded, crop_images):
    """With a centre crop the model never sees the outside pixels; the points that only change them are
    not run, and equal what the model gives there."""
    model = _crop_model(keras_seeded, stride=2)
    explainer = fgc.GradCamExplainer(model)
    batch = explainer(crop_images)
    settings = fgc.CurveSettings(steps=8, baseline_draws=2)
    ranks = {"gradcam": fgc.pixel_ranks(batch.maps["gradcam"], batch.maps["gradcam"], explainer.box)}
    curves = fgc.deletion_insertion_curves(explainer, crop_images, ranks, batch.explained, settings)["gradcam"]
    fractions = fgc.curve_fractions(8)
    beyond = np.flatnonzero(np.round(fractions * C * C) >= B * B)
    np.testing.assert_array_equal(beyond, [7, 8])  # 7/8 of 1024 pixels = 896 >= 784 seen: point 7 is not run
    j = beyond[0]
    masks = (ranks["gradcam"] < round(fractions[j] * C * C))[..., None]
    deleted = np.where(masks, fgc.deletion_images(crop_images, "mean"), crop_images)
    probability = fgc.explained_score(model.predict(deleted, verbose=0)[:, 0], batch.explained)
    np.testing.assert_allclose(curves["deletion"][:, j], probability, atol=1e-6)
    np.testing.assert_allclose(curves["deletion"][:, beyond], curves["deletion"][:, [-1] * len(beyond)])


# ----------------------------------------------------------------------------------------------
# Verdict rules, on per-image data built so that a wrong rule fails
# ----------------------------------------------------------------------------------------------
def _per_image(deletion_diff, insertion_diff, model="m", method="gradcam", rank_corr=0.1, random_constant=False,
               border=0.1, noise_ties_map=False):
    """Per-image check rows with the given map - shifted-baseline differences (baseline areas 0.5; the
    noise baseline equal to the shifted one, or to the map's own areas)."""
    import pandas as pd

    deletion_diff, insertion_diff = np.asarray(deletion_diff, float), np.asarray(insertion_diff, float)
    n = len(deletion_diff)
    return pd.DataFrame({
        "model": model, "method": method, "image": np.arange(n),
        "true_class": np.where(np.arange(n) % 2, "PNEUMONIA", "NORMAL"),
        "predicted_class": np.where(np.arange(n) % 2, "PNEUMONIA", "NORMAL"), "probability": 0.5, "correct": True,
        "deletion_auc": 0.5 + deletion_diff, "deletion_auc_shifted": 0.5,
        "deletion_auc_noise": 0.5 + deletion_diff if noise_ties_map else 0.5,
        "insertion_auc": 0.5 + insertion_diff, "insertion_auc_shifted": 0.5,
        "insertion_auc_noise": 0.5 + insertion_diff if noise_ties_map else 0.5,
        "rank_corr_random_weights": rank_corr, "random_map_constant": random_constant,
        "border_share": border, "border_share_uniform": 0.157, "empty_map": False})


STRONG = -np.linspace(0.05, 0.1, 20)  # deletion: the map's area lower in 20 of 20, by a clear margin


def test_holm_adjusted(fgc):
    adjusted = fgc.holm_adjusted([0.01, 0.04, 0.03, np.nan, 0.5])
    np.testing.assert_allclose(adjusted[[0, 1, 2, 4]], [0.04, 0.09, 0.09, 0.5])  # 4 tests run
    assert np.isnan(adjusted[3])
    np.testing.assert_allclose(fgc.holm_adjusted([0.3, 0.6]), [0.6, 0.6])


def test_sign_alone_is_not_faithful(fgc):
    """Deletion wins in 18 of 20 images, but by 0.001, and loses 2 by 0.2: the mean difference is
    positive (against the map). A sign-only rule would call deletion faithful."""
    deletion = np.r_[[-0.001] * 18, [0.2] * 2]
    row = fgc.summarise_gradcam_checks(_per_image(deletion, -STRONG)).iloc[0]
    assert row["deletion_wins"] == 18 and row["deletion_p_holm"] < 0.05  # the sign test alone passes
    assert row["deletion_diff_mean"] > 0 and row["deletion_diff_ci_high"] > 0
    assert row["faithfulness_verdict"] == "partly faithful (insertion)"


def test_interval_alone_is_not_faithful(fgc):
    """Deletion lower by 0.3 in 8 of 20 images, higher by 0.001 in 12: the mean difference is clearly
    negative with an interval below 0, but the map wins in fewer than half. An interval-only rule would
    call deletion faithful."""
    deletion = np.r_[[-0.3] * 8, [0.001] * 12]
    row = fgc.summarise_gradcam_checks(_per_image(deletion, -STRONG)).iloc[0]
    assert row["deletion_diff_ci_high"] < 0 and row["deletion_wins"] == 8 and row["deletion_p_holm"] > 0.05
    assert row["faithfulness_verdict"] == "partly faithful (insertion)"


def test_both_make_faithful(fgc):
    row = fgc.summarise_gradcam_checks(_per_image(STRONG, -STRONG, noise_ties_map=True)).iloc[0]
    assert row["deletion_wins"] == row["insertion_wins"] == 20
    assert row["deletion_diff_ci_high"] < 0 < row["insertion_diff_ci_low"]
    assert row["faithfulness_verdict"] == "faithful"
    assert row["deletion_wins_noise"] == 0  # ties with the scattered-noise baseline count against the map
    assert row["faithfulness_verdict_old_rule"] == "not faithful"
    reversed_row = fgc.summarise_gradcam_checks(_per_image(-STRONG, STRONG)).iloc[0]
    assert reversed_row["faithfulness_verdict"] == "not faithful"  # direction matters


def test_holm_correction_changes_a_verdict(fgc):
    """Deletion wins in 15 of 20 (one-sided p = 0.021) with a clear mean effect, in three models. Holm's
    family is the "all" rows' tests (3 models x deletion and insertion = 6), so deletion's adjusted p is
    3 x 0.021 = 0.062 and deletion fails; without the correction it would pass. The "correct" subset
    rows are descriptive only: no adjusted p, no verdict."""
    import pandas as pd

    deletion = np.r_[[-0.1] * 15, [0.001] * 5]
    per_image = pd.concat([_per_image(deletion, -STRONG, model=name) for name in ("a", "b", "c")], ignore_index=True)
    table = fgc.summarise_gradcam_checks(per_image)
    assert len(table) == 6 and set(table["subset"]) == {"all", "correct"}
    assert np.allclose(table["deletion_p"], 0.0207, atol=1e-4) and np.all(table["deletion_diff_ci_high"] < 0)
    tested = table[table["subset"] == "all"]
    np.testing.assert_allclose(tested["deletion_p_holm"], 3 * 0.020695, rtol=1e-3)
    assert set(tested["faithfulness_verdict"]) == {"partly faithful (insertion)"}
    subsets = table[table["subset"] != "all"]
    assert subsets["deletion_p_holm"].isna().all()
    assert set(subsets["faithfulness_verdict"]) == {"descriptive (subset)"}


def test_sanity_rules(fgc):
    """A constant random-weights map is a pass; an empty map (NaN correlation) and a high correlation fail."""
    constant = fgc.summarise_gradcam_checks(_per_image(STRONG, -STRONG, rank_corr=0.0, random_constant=True)).iloc[0]
    assert constant["sanity_verdict"] == "passes" and constant["random_maps_constant"] == 20
    assert constant["rank_corr_median"] == 0.0
    high = fgc.summarise_gradcam_checks(_per_image(STRONG, -STRONG, rank_corr=np.linspace(0.6, 0.9, 20))).iloc[0]
    assert high["sanity_verdict"] == "fails" and high["rank_corr_ci_low"] >= 0.6
    assert high["rank_corr_median"] == pytest.approx(0.75)
    empty = fgc.summarise_gradcam_checks(_per_image(STRONG, -STRONG, rank_corr=np.nan)).iloc[0]
    assert empty["sanity_verdict"] == "fails" and empty["sanity_passes"] == 0


def test_border_rule_and_small_subsets(fgc):
    inside = fgc.summarise_gradcam_checks(_per_image(STRONG, -STRONG, border=0.05)).iloc[0]
    outside = fgc.summarise_gradcam_checks(_per_image(STRONG, -STRONG, border=0.3)).iloc[0]
    assert inside["border_verdict"] == "interior" and outside["border_verdict"] == "not interior"
    per_image = _per_image(STRONG, -STRONG)
    per_image.loc[:3, "correct"] = False  # 4 wrong predictions: too few for any verdict
    table = fgc.summarise_gradcam_checks(per_image).set_index("subset")
    assert table.loc["wrong", "n_images"] == 4 and table.loc["wrong", "faithfulness_verdict"] == "too few images"
    assert np.isnan(table.loc["wrong", "deletion_p_holm"])  # not a test: not in Holm's family
    assert table.loc["all", "n_wrong"] == 4 and table.loc["correct", "n_images"] == 16
    assert "wrong" not in set(fgc.summarise_gradcam_checks(per_image[per_image["correct"]])["subset"])


def test_summary_columns_and_words(fgc):
    settings = fgc.CurveSettings(steps=60, baseline_draws=12, deletion_fill="zeros")
    table = fgc.summarise_gradcam_checks(_per_image(STRONG, -STRONG), settings)
    required = {"deletion_fill", "curve_steps", "baseline_draws", "deletion_diff_mean", "deletion_diff_ci_low",
                "deletion_diff_ci_high", "insertion_diff_mean", "insertion_diff_ci_low", "insertion_diff_ci_high",
                "deletion_p_holm", "insertion_p_holm", "rank_corr_median", "rank_corr_ci_low", "rank_corr_ci_high"}
    assert required <= set(table.columns)
    row = table.iloc[0]
    assert (row["deletion_fill"], row["curve_steps"], row["baseline_draws"]) == ("zeros", 60, 12)
    text = fgc.describe_checks(row, "Tiny net")
    assert text.startswith("Tiny net gradcam, all predictions (20 images: 10 NORMAL, 10 PNEUMONIA)")
    assert "FAITHFUL" in text and "20 of 20" in text
    readable = fgc.readable_checks(table, {"m": "Tiny net"})
    assert readable["model"].tolist() == ["Tiny net", "Tiny net"] and "deletion p (Holm)" in readable.columns
    assert readable["deletion: map - shifted"].iloc[0] == round(row["deletion_diff_mean"], 3)


def test_findings_name_the_models_not_to_trust(fgc):
    import pandas as pd

    per_image = pd.concat([
        _per_image(STRONG, -STRONG, model="good", noise_ties_map=True),
        _per_image(np.r_[[-0.001] * 18, [0.2] * 2], -STRONG, model="sign_only"),
        _per_image(STRONG, -STRONG, model="random_like", rank_corr=0.9),
    ], ignore_index=True)
    checks = fgc.summarise_gradcam_checks(per_image)
    text = fgc.findings_markdown(checks, {"good": "Good net"})
    assert "**Good net**" in text and "Its gradcam maps pass all three checks" in text
    trust_line = next(line for line in text.splitlines() if line.startswith("**Maps that should not be trusted"))
    assert "sign_only" in trust_line and "random_like" in trust_line and "Good net" not in trust_line
    assert "fails the sanity check" in text
    assert "Deletion and insertion ran on 20 images per model, and Holm's correction covers 6 tests" in text  # the "all" rows: 3 models x 2
    assert "Under the old rule" in text and "→" in text  # good: not faithful (old rule) -> faithful
    old_rule = next(line for line in text.splitlines() if line.startswith("Under the old rule"))
    assert "(all): not faithful → faithful" in old_rule and "(correct)" not in old_rule  # subsets: descriptive
    previous = checks.assign(faithfulness_verdict="not faithful")
    with_previous = fgc.findings_markdown(checks, previous=previous)
    assert "Against the previous table" in with_previous and "(correct)" not in with_previous
    changes = fgc.verdict_changes(previous, checks)
    assert list(changes.columns) == ["model", "method", "subset", "before", "after"]
    assert set(changes["model"]) == {"good", "random_like", "sign_only"} and set(changes["before"]) == {"not faithful"}
    assert fgc.verdict_changes(checks, checks).empty


# ----------------------------------------------------------------------------------------------
# The whole check on tiny models, with and without the crop
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("crop", [True, False])
def test_gradcam_checks_end_to_end(fgc, keras_seeded, crop_images, crop):
    import matplotlib.pyplot as plt
    import pandas as pd

    model = _crop_model(keras_seeded, stride=2, crop=crop)
    explainer = fgc.GradCamExplainer(model)
    images = np.concatenate([crop_images, crop_images[:, ::-1]])
    y_true = np.arange(len(images)) % 2
    batch = explainer(images, threshold=0.5)
    settings = fgc.CurveSettings(steps=8, baseline_draws=3)
    result = fgc.gradcam_checks(explainer, images, y_true, batch, settings)
    frame = result.per_image
    assert len(frame) == 2 * len(images) and set(frame["method"]) == set(fgc.METHODS)
    np.testing.assert_array_equal(frame["predicted_class"].to_numpy()[:12], np.asarray(fgc.CLASS_NAMES)[batch.explained])
    np.testing.assert_array_equal(frame["correct"].to_numpy()[:12], batch.explained == y_true)
    areas = frame[[f"{kind}_auc{suffix}" for kind in ("deletion", "insertion") for suffix in ("", "_shifted", "_noise")]]
    assert np.isfinite(areas.to_numpy()).all() and areas.to_numpy().min() >= 0 and areas.to_numpy().max() <= 1
    assert frame["rank_corr_random_weights"].dropna().between(-1, 1).all()
    assert frame["border_share"].between(0, 1).all()
    # a 3 px border: the whole input without the crop, the 1 px ring of the 28 x 28 box with it
    uniform = (1 - 26 ** 2 / B ** 2) if crop else (1 - 26 ** 2 / C ** 2)
    assert frame["border_share_uniform"].iloc[0] == pytest.approx(uniform)
    again = fgc.gradcam_checks(explainer, images, y_true, batch, settings)
    pd.testing.assert_frame_equal(again.per_image, frame)  # seeded
    summary = fgc.summarise_gradcam_checks(frame.assign(model="tiny"), settings)
    assert {"faithfulness_verdict", "sanity_verdict", "border_verdict", "deletion_p_holm"} <= set(summary.columns)
    # curves on a subset: the same numbers for those images, NaN areas for the rest
    some = fgc.gradcam_checks(explainer, images, y_true, batch, settings, curve_images=[5, 0, 7])
    with_curves = some.per_image.dropna(subset=["deletion_auc"])
    assert sorted(set(with_curves["image"])) == [0, 5, 7] and len(some.per_image) == len(frame)
    pd.testing.assert_frame_equal(some.per_image.drop(columns=areas.columns),
                                  frame.drop(columns=areas.columns))  # sanity and borders on every image
    subset_summary = fgc.summarise_gradcam_checks(some.per_image, settings).iloc[0]
    assert subset_summary["n_curve_images"] == 3 and subset_summary["n_images"] == 12
    assert subset_summary["faithfulness_verdict"] == "too few images" and np.isnan(subset_summary["deletion_p_holm"])
    figure = fgc.plot_faithfulness_curves(result, "tiny")
    assert len(figure.axes) == 2 and len(figure.axes[0].lines) == 5  # 2 methods, their shifted copies, noise
    plt.close(figure)


def test_gradcam_grid_has_a_colourbar(fgc):
    import matplotlib.pyplot as plt

    images = np.random.default_rng(0).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    maps = {m: np.random.default_rng(1).random((2, 24, 24)).astype(np.float32) for m in fgc.METHODS}
    figure = fgc.plot_gradcam_grid(images, maps, ["a", "b"], "title")
    assert len(figure.axes) == 2 * 3 + 1 and figure.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
    assert figure.axes[-1].get_ylabel().startswith("map value")
    plt.close(figure)


def test_too_few_images_when_a_win_on_every_image_cannot_survive_holm(fgc):
    """A one-sided sign test's smallest p over n images is 0.5 ** n; Holm multiplies the smallest of m
    tests by m. 8 faithfulness tests (2 models x 2 methods x deletion/insertion) need 8 images: with 6,
    even 6 wins of 6 give 8 x 0.5 ** 6 = 0.125."""
    from pneumonia_cxr.gradcam import enough_images

    assert enough_images(5) and not enough_images(4)  # one test: 0.03125 < 0.05 <= 0.0625
    assert not enough_images(6, tests=8) and not enough_images(7, tests=8) and enough_images(8, tests=8)
    assert enough_images(8, tests=12) and not enough_images(8, tests=13)  # 12 x 0.0039 = 0.047; 13 x = 0.051
