"""Architectures, pretrained weights, cached features, evaluation statistics and model bundles."""
from __future__ import annotations

import numpy as np
import pytest


# ----------------------------------------------------------------------------------------------
# Scratch CNN
# ----------------------------------------------------------------------------------------------
def test_scratch_cnn_layers_and_shapes(scratch_cnn):
    types = [layer.__class__.__name__ for layer in scratch_cnn.layers]
    assert types == (["CenterCrop"] + ["Conv2D", "FusedBatchNormalization", "MaxPooling2D"] * 4
                     + ["Flatten", "Dense", "Dropout", "Dense"])
    assert [scratch_cnn.get_layer(f"conv{i}").filters for i in range(1, 5)] == [32, 64, 128, 128]
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in scratch_cnn.layers}
    assert shapes["centre_crop"] == (196, 196, 3)
    assert shapes["conv1"] == (194, 194, 32) and shapes["pool1"] == (97, 97, 32)
    assert shapes["conv2"] == (95, 95, 64) and shapes["pool2"] == (47, 47, 64)
    assert shapes["conv3"] == (45, 45, 128) and shapes["pool3"] == (22, 22, 128)
    assert shapes["conv4"] == (20, 20, 128) and shapes["pool4"] == (10, 10, 128)
    assert shapes["flatten"] == (10 * 10 * 128,) and shapes["dense"] == (512,)
    assert tuple(scratch_cnn.input_shape[1:]) == (224, 224, 3) and tuple(scratch_cnn.output_shape[1:]) == (1,)
    assert scratch_cnn.layers[-1].activation.__name__ == "sigmoid"
    assert scratch_cnn.get_layer("dropout").rate == 0.5


def test_scratch_cnn_parameter_count(scratch_cnn):
    conv = lambda c_in, c_out: 3 * 3 * c_in * c_out + c_out
    channels = [3, 32, 64, 128, 128]
    expected = sum(conv(a, b) + 4 * b for a, b in zip(channels, channels[1:]))  # conv + BN (4 per channel)
    expected += (10 * 10 * 128) * 512 + 512 + 512 * 1 + 1
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
    assert model.layers[1].name == "centre_crop" and model.layers[1].__class__.__name__ == "CenterCrop"
    assert model.layers[2].__class__.__name__ == "CaffePreprocess"
    assert tuple(model.layers[1].output.shape[1:]) == (196, 196, 3)
    assert fgc.last_conv_layer_name(model) == "block5_conv3"
    assert tuple(model.get_layer("base_pool").output.shape[1:]) == (6, 6, 512)
    # HED's pools pad ("same"): 196 -> 98 -> 49 -> 25 -> 13; base_pool (2 x 2, "valid") -> 6
    assert tuple(model.get_layer("block5_conv3").output.shape[1:]) == (13, 13, 512)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13 and not any(layer.trainable for layer in convs)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == head.count_params() == 6 * 6 * 512 * 512 + 512 + 512 + 1
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


def test_centre_crop_is_the_first_layer_and_keeps_the_central_pixels(fgc, scratch_cnn, hed_transfer):
    import keras

    assert fgc.CROP_SIZE == 196
    image = np.random.default_rng(0).random((2, 224, 224, 3), dtype=np.float32)
    for model in (scratch_cnn, hed_transfer[0]):
        crop = model.get_layer("centre_crop")
        assert next(layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)) is crop
        np.testing.assert_array_equal(np.asarray(crop(image)), image[:, 14:210, 14:210])  # 14 px off each side
    # another input size keeps the same fraction and is cropped, never resized (a CenterCrop larger than
    # its input would upscale it)
    small = fgc.build_scratch_cnn((56, 56, 3))
    assert tuple(small.get_layer("centre_crop").output.shape[1:]) == (49, 49, 3)
    tiny = np.random.default_rng(1).random((1, 56, 56, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(small.get_layer("centre_crop")(tiny)), tiny[:, 3:52, 3:52])


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
    assert model.layers[1].name == "centre_crop" and model.layers[2].__class__.__name__ == "CaffePreprocess"
    assert np.allclose(model.layers[2].mean_bgr, fgc.VGGFACE_BASE.mean_bgr)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(convs) == 13 and not any(layer.trainable for layer in convs)
    last = fgc.last_conv_layer_name(model)
    assert last == convs[-1].name
    assert tuple(model.get_layer(last).output.shape[1:]) == (12, 12, 512)
    assert tuple(model.get_layer("base_pool").output.shape[1:]) == (6, 6, 512)
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == head.count_params()
    image = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    maps, probabilities = fgc.make_gradcam_heatmaps(image, model)
    assert maps.shape == (1, 224, 224) and np.isfinite(maps).all()  # in the input's frame
    assert 0.0 <= maps.min() and maps.max() <= 1.0
    assert 0.0 <= probabilities[0] <= 1.0


# ----------------------------------------------------------------------------------------------
# Cached features and the head
# ----------------------------------------------------------------------------------------------
def test_cached_features_and_head_training(fgc, hed_transfer, sample_rows, sample_images, tmp_path):
    model, head = hed_transfer
    extractor = fgc.feature_extractor(model)
    identity = fgc.extractor_identity(extractor)
    assert len(identity) == 64 and identity == fgc.extractor_identity(fgc.feature_extractor(model))
    features, loaded = fgc.cached_features(extractor, sample_rows, tmp_path, batch_size=4)
    assert not loaded and features.shape == (8, 6, 6, 512) and features.dtype == np.float32
    cached = list(tmp_path.glob("*.npy"))
    assert [path.name for path in cached] == [f"{fgc.features_cache_key(identity, sample_rows, 'clean')}.npy"]
    again, loaded = fgc.cached_features(extractor, sample_rows, tmp_path, batch_size=4)
    assert loaded
    np.testing.assert_array_equal(features, again)
    # a truncated cache file is recomputed, not trusted
    cached[0].write_bytes(cached[0].read_bytes()[:1000])
    rebuilt, loaded = fgc.cached_features(extractor, sample_rows, tmp_path, batch_size=4)
    assert not loaded
    np.testing.assert_array_equal(features, rebuilt)
    # cache keys depend on the images (content and order), the extractor and the view
    key = fgc.features_cache_key(identity, sample_rows)
    assert key != fgc.features_cache_key(identity, sample_rows.iloc[::-1])
    assert key != fgc.features_cache_key(identity[::-1], sample_rows)
    assert key != fgc.features_cache_key(identity, sample_rows, "perturb-blur")

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
# Feature cache keys (issue 15, item 7): the extractor up to the cut (crop, preprocessing, dtype
# policy), the view, the images and the weights' bytes; shape and dtype checked on load
# ----------------------------------------------------------------------------------------------
def _tiny_extractor(fgc, crop: int = 196, mean=(1.0, 2.0, 3.0)):
    """A frozen-extractor stand-in: image (224, 224, 3) -> centre crop -> CaffePreprocess (BGR mean
    ``mean``) -> a strided Conv2D and a pooling, both unnamed (Keras numbers them anew on every
    build), weights fixed by a seeded initializer. Output (N, 12, 12, 2) for the 196 px crop."""
    import keras

    inputs = keras.Input((224, 224, 3), name="image")
    x = keras.layers.CenterCrop(crop, crop, name="centre_crop")(inputs)
    x = fgc.caffe_preprocess_layer(mean, name="tiny_preprocess")(x)
    x = keras.layers.Conv2D(2, 5, strides=8, kernel_initializer=keras.initializers.GlorotUniform(seed=0),
                            bias_initializer=keras.initializers.Constant(0.25))(x)
    return keras.Model(inputs, keras.layers.MaxPooling2D(2)(x), name="tiny_extractor")


def _one_weight_changed(fgc):
    import keras

    extractor = _tiny_extractor(fgc)
    conv = next(layer for layer in extractor.layers if isinstance(layer, keras.layers.Conv2D))
    kernel, bias = conv.get_weights()
    kernel[0, 0, 0, 0] += 0.5
    conv.set_weights([kernel, bias])
    return extractor


def _in_bfloat16(fgc):
    with fgc.dtype_policy("mixed_bfloat16"):
        return _tiny_extractor(fgc)


def test_frozen_extractor_runs_the_cut_in_the_pass_precision_with_the_model_weights(fgc):
    import keras

    builds = []

    def build():
        model = _one_weight_changed(fgc) if builds else _tiny_extractor(fgc)  # the second build differs:
        builds.append(model)                                                # its weights must be overwritten
        return model

    def cut(model):
        return keras.Model(model.input, model.layers[-2].output)

    model, extractor = fgc.frozen_extractor(build, cut, "mixed_bfloat16")
    assert model is builds[0] and len(builds) == 2
    assert model.layers[-2].compute_dtype == "float32" and extractor.layers[-1].compute_dtype == "bfloat16"
    for mine, theirs in zip(model.layers[-2].get_weights(), extractor.layers[-1].get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored


EXTRACTOR_CHANGES = {
    "crop": lambda fgc: _tiny_extractor(fgc, crop=180),
    "mean": lambda fgc: _tiny_extractor(fgc, mean=(1.0, 2.0, 3.5)),
    "one_weight": _one_weight_changed,
    "dtype_policy": _in_bfloat16,
}


def test_feature_cache_reuses_the_same_extractor_rebuilt(fgc, sample_rows, tmp_path):
    rows = sample_rows.iloc[:4]
    first = _tiny_extractor(fgc)
    features, loaded = fgc.cached_features(first, rows, tmp_path, batch_size=4)
    assert not loaded and features.shape == (4, 12, 12, 2) and features.dtype == np.float32
    rebuilt = _tiny_extractor(fgc)
    # Keras numbered the unnamed layers anew: names are not what the network computes
    assert [layer.name for layer in rebuilt.layers] != [layer.name for layer in first.layers]
    assert fgc.extractor_identity(rebuilt) == fgc.extractor_identity(first)
    again, loaded = fgc.cached_features(rebuilt, rows, tmp_path, batch_size=4)
    assert loaded
    np.testing.assert_array_equal(again, features)


@pytest.mark.parametrize("change", EXTRACTOR_CHANGES)
def test_feature_cache_never_reuses_features_of_a_changed_extractor(fgc, sample_rows, sample_images, tmp_path,
                                                                    change):
    rows, images = sample_rows.iloc[:4], sample_images[:4]
    original = _tiny_extractor(fgc)
    old, loaded = fgc.cached_features(original, rows, tmp_path, batch_size=4)
    assert not loaded and fgc.cached_features(original, rows, tmp_path, batch_size=4)[1]  # reused unchanged
    changed = EXTRACTOR_CHANGES[change](fgc)
    assert fgc.extractor_identity(changed) != fgc.extractor_identity(original)
    assert (fgc.features_cache_key(fgc.extractor_identity(changed), rows)
            != fgc.features_cache_key(fgc.extractor_identity(original), rows))
    new, loaded = fgc.cached_features(changed, rows, tmp_path, batch_size=4)
    assert not loaded
    assert len(list(tmp_path.glob("*.npy"))) == 2  # a new entry beside the old one
    np.testing.assert_allclose(new, changed.predict(images, verbose=0), rtol=1e-6, atol=1e-5)  # its own features
    assert new.shape != old.shape or not np.allclose(new, old)  # which reusing the old ones would have hidden
    assert fgc.cached_features(changed, rows, tmp_path, batch_size=4)[1]
    if change == "crop":
        assert new.shape == (4, 11, 11, 2)


def test_feature_cache_keys_the_view(fgc, sample_rows, sample_images, tmp_path, monkeypatch):
    """Clean, augmented (seed, settings), perturbed (kind, batch size: the noise of batch b is drawn
    with seed b) and the image order each get their own entry, holding the features of that view."""
    rows, images = sample_rows.iloc[:4], sample_images[:4]
    extractor = _tiny_extractor(fgc)
    clean, _ = fgc.cached_features(extractor, rows, tmp_path, batch_size=4)
    views = {"augment_seed_0": lambda: fgc.augmented_view(0), "augment_seed_1": lambda: fgc.augmented_view(1),
             "blur": lambda: fgc.perturbed_view("blur"), "noise": lambda: fgc.perturbed_view("noise")}
    labels = {name: make()[0] for name, make in views.items()}
    assert len(set(labels.values()) | {"clean"}) == 5
    seen = {"clean": clean}
    for name, make in views.items():
        label, transform = make()
        features, loaded = fgc.cached_features(extractor, rows, tmp_path, label, transform, batch_size=4)
        assert not loaded, name
        expected = extractor.predict(make()[1](images, 0), verbose=0)  # a fresh transform: the same view
        np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-5, err_msg=name)
        assert not any(np.allclose(features, other) for other in seen.values()), name
        seen[name] = features
    for name, make in views.items():  # each view read back as it was
        features, loaded = fgc.cached_features(extractor, rows, tmp_path, *make(), batch_size=4)
        assert loaded, name
        np.testing.assert_array_equal(features, seen[name])

    # another batch size draws the noise differently: a new entry
    label, transform = fgc.perturbed_view("noise")
    features, loaded = fgc.cached_features(extractor, rows, tmp_path, label, transform, batch_size=2)
    assert not loaded
    np.testing.assert_allclose(features, extractor.predict(fgc.perturb_in_batches(images, "noise", 2), verbose=0),
                               rtol=1e-6, atol=1e-5)
    # other augmentation settings: a new entry (the settings are part of the view's name)
    monkeypatch.setitem(fgc.AUGMENTATION, "gamma", 0.5)
    label, transform = fgc.augmented_view(0)
    assert label != labels["augment_seed_0"]
    features, loaded = fgc.cached_features(extractor, rows, tmp_path, label, transform, batch_size=4)
    assert not loaded and not np.allclose(features, seen["augment_seed_0"])
    # the images in another order: a new entry
    reordered, loaded = fgc.cached_features(extractor, rows.iloc[::-1], tmp_path, batch_size=4)
    assert not loaded
    np.testing.assert_allclose(reordered, clean[::-1], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("damage", ["float64", "float16", "one_row_less", "other_shape", "object_array", "truncated"])
def test_feature_cache_file_of_wrong_shape_or_dtype_is_recomputed(fgc, sample_rows, tmp_path, damage):
    rows = sample_rows.iloc[:4]
    extractor = _tiny_extractor(fgc)
    features, _ = fgc.cached_features(extractor, rows, tmp_path, batch_size=4)
    (path,) = tmp_path.glob("*.npy")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "object_array":
        np.save(path, np.array([{"features": 1}], dtype=object), allow_pickle=True)
    else:
        np.save(path, {"float64": features.astype(np.float64), "float16": features.astype(np.float16),
                       "one_row_less": features[:-1], "other_shape": features.reshape(4, -1)}[damage])
    again, loaded = fgc.cached_features(extractor, rows, tmp_path, batch_size=4)
    assert not loaded
    np.testing.assert_array_equal(again, features)
    stored = np.load(path)  # rewritten as it should be
    assert stored.dtype == np.float32 and stored.shape == features.shape


@pytest.mark.parametrize("kind", ["zoom", "low_contrast", "blur", "noise"])
def test_perturb_in_batches_is_what_cached_features_feeds(fgc, sample_rows, sample_images, tmp_path, kind):
    """An identity 'extractor' returns the pixels cached_features feeds it for perturbed_view(kind)."""
    import keras

    inputs = keras.Input((224, 224, 3), name="image")
    pixels = keras.Model(inputs, keras.layers.Identity(name="pixels")(inputs), name="pixels")
    label, transform = fgc.perturbed_view(kind)
    fed, _ = fgc.cached_features(pixels, sample_rows, tmp_path, label, transform, batch_size=3)
    np.testing.assert_array_equal(fed, fgc.perturb_in_batches(sample_images, kind, batch_size=3))
    np.testing.assert_array_equal(fed[3:6], fgc.perturb_images(sample_images[3:6], kind, seed=1))  # batch 1, seed 1
    if kind == "noise":
        assert not np.array_equal(fed, fgc.perturb_in_batches(sample_images, kind, batch_size=4))


def test_frozen_features_stacks_training_views_and_perturbed_validation(fgc, sample_rows, tmp_path):
    extractor = _tiny_extractor(fgc)
    subsets = {"train": sample_rows.iloc[:4].reset_index(drop=True), "val": sample_rows.iloc[4:].reset_index(drop=True)}
    features, seconds = fgc.frozen_features(extractor, subsets, tmp_path, train_views=2, view_seed=7,
                                            perturbations=["blur"])
    assert seconds > 0 and set(features) == {"train", "val", "val_blur"}
    assert features["train"].shape == (3, 4, 12, 12, 2) and features["train"].dtype == np.float32
    assert features["val"].shape == features["val_blur"].shape == (4, 12, 12, 2)
    clean, loaded = fgc.cached_features(extractor, subsets["train"], tmp_path)
    assert loaded
    np.testing.assert_array_equal(features["train"][0], clean)  # the clean view first
    view_8, loaded = fgc.cached_features(extractor, subsets["train"], tmp_path, *fgc.augmented_view(8))
    assert loaded  # view v drawn with seed view_seed + v
    np.testing.assert_array_equal(features["train"][2], view_8)
    assert not np.allclose(features["train"][1], features["train"][2])
    blur, loaded = fgc.cached_features(extractor, subsets["val"], tmp_path, *fgc.perturbed_view("blur"))
    assert loaded
    np.testing.assert_array_equal(features["val_blur"], blur)
    again, seconds = fgc.frozen_features(extractor, subsets, tmp_path, 2, 7, ["blur"])
    assert seconds == 0.0 and all(np.array_equal(again[name], features[name]) for name in features)
    plain, _ = fgc.frozen_features(extractor, subsets, tmp_path)
    assert set(plain) == {"train", "val"} and plain["train"].shape == (1, 4, 12, 12, 2)


# ----------------------------------------------------------------------------------------------
# Training on cached views: one view per image per epoch (the view sampler)
# ----------------------------------------------------------------------------------------------
def _coded_views(n_views: int, n_images: int) -> np.ndarray:
    """Views (V, N, 1) whose value 100 * v + i names view v of image i."""
    return (100 * np.arange(n_views)[:, None] + np.arange(n_images)[None, :]).astype(np.float32)[..., None]


def _epochs_of(sampler, n_epochs: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    epochs = []
    for _ in range(n_epochs):
        epochs.append([sampler[i] for i in range(len(sampler))])
        sampler.on_epoch_end()
    return epochs


def test_view_sampler_shows_every_image_once_per_epoch_in_varying_views():
    from pneumonia_cxr.training import _view_sampler

    views, targets = _coded_views(3, 10), (np.arange(10) % 2).astype(np.float32)
    sampler = _view_sampler(views, targets, 4, seed=0)
    assert len(sampler) == 3
    epochs = _epochs_of(sampler, 6)
    chosen, orders = [], []
    for batches in epochs:
        assert [len(y) for _, y in batches] == [4, 4, 2] and all(x.shape[1:] == (1,) for x, _ in batches)
        codes = np.concatenate([x[:, 0] for x, _ in batches]).astype(int)
        images = codes % 100
        assert sorted(images) == list(range(10))  # every image once
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), targets[images])  # with its label
        chosen.append([int(v) for _, v in sorted(zip(images, codes // 100))])
        orders.append(images.tolist())
    assert len({tuple(c) for c in chosen}) > 1 and len({tuple(o) for o in orders}) > 1  # views and order vary
    assert {v for c in chosen for v in c} == {0, 1, 2}  # every view is used
    assert all(len({c[i] for c in chosen}) > 1 for i in range(10))  # each image seen in more than one view

    def flat(batches_by_epoch):
        return [array for batches in batches_by_epoch for batch in batches for array in batch]

    same = _epochs_of(_view_sampler(views, targets, 4, seed=0), 6)
    assert all(np.array_equal(a, b) for a, b in zip(flat(epochs), flat(same)))  # same seed, same batches
    other = _epochs_of(_view_sampler(views, targets, 4, seed=1), 6)
    assert not all(np.array_equal(a, b) for a, b in zip(flat(epochs), flat(other)))
    single = _epochs_of(_view_sampler(views[:1], targets, 4, seed=0), 2)  # only the clean view
    assert all(np.all(x[:, 0] < 100) for batches in single for x, _ in batches)


def test_head_training_sees_every_image_once_per_epoch(fgc, monkeypatch):
    """Through keras' fit: the sampler's on_epoch_end runs between epochs, never inside one."""
    import keras

    from pneumonia_cxr import training

    fetched: list = []
    real = training._view_sampler

    def spy(*args, **kwargs):
        sampler = real(*args, **kwargs)
        cls = type(sampler)  # a class of its own per call
        get, end = cls.__getitem__, cls.on_epoch_end

        def getitem(self, number):
            x, y = get(self, number)
            fetched.append(x[:, 0].astype(int).tolist())
            return x, y

        def on_epoch_end(self):
            fetched.append("end")
            end(self)

        monkeypatch.setattr(cls, "__getitem__", getitem)
        monkeypatch.setattr(cls, "on_epoch_end", on_epoch_end)
        return sampler

    monkeypatch.setattr(training, "_view_sampler", spy)
    views, targets = _coded_views(3, 22), np.arange(22) % 2
    keras.utils.set_random_seed(0)
    head = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, activation="sigmoid", name="prediction")])
    result = fgc.train_head_on_cached_features(
        head, {"train": views, "val": views[0, :6]}, {"train": targets, "val": targets[:6]}, {0: 1.0, 1: 1.0},
        epochs=4, patience=10, batch_size=4, seed=3, verbose=0)
    assert len(result.history["loss"]) == 4
    segments = [[]]
    for item in fetched:
        if item == "end":
            segments.append([])
        else:
            segments[-1].append(item)
    full = [segment for segment in segments if len(segment) == 6]  # 22 images in batches of 4
    assert len(full) == 4 and sum(len(segment) for segment in segments) <= 4 * 6 + 2  # + keras' look at 2 batches
    for segment in full:
        assert sorted(code % 100 for batch in segment for code in batch) == list(range(22))
    assert len({tuple(code // 100 for batch in segment for code in batch) for segment in full}) > 1


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


def test_pooled_stacks_the_views_and_tiles_the_labels(fgc):
    y = np.array([0, 1, 1])
    views = [[-1.0, 2.0, 3.0], np.array([-0.5, 1.0, 0.1], np.float32), (0.0, 0.0, -2.0)]
    labels, logits = fgc.pooled(y, views)
    assert labels.shape == logits.shape == (9,) and logits.dtype == np.float64
    np.testing.assert_array_equal(labels, [0, 1, 1] * 3)  # view v of image i at v * N + i
    np.testing.assert_allclose(logits, [-1.0, 2.0, 3.0, -0.5, 1.0, 0.1, 0.0, 0.0, -2.0], rtol=1e-6)
    # equal-sized views: the pooled log loss is the mean of the views' log losses
    loss = fgc.log_loss_of_logits
    assert loss(labels, logits) == pytest.approx(np.mean([loss(y, np.asarray(v, np.float64)) for v in views]))
    one_labels, one_logits = fgc.pooled(y, views[:1])
    np.testing.assert_array_equal(one_labels, y)
    np.testing.assert_array_equal(one_logits, views[0])


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
def test_markdown_table_escapes_cells_and_marked_section_replaced(fgc, update_readme, tmp_path):
    import pandas as pd

    table = fgc.markdown_table(pd.DataFrame([{"name": "a|b", "note": "two\nlines"}, {"name": "c", "note": 1.5}]))
    lines = table.splitlines()
    assert lines == ["| name | note |", "|---|---|", "| a\\|b | two lines |", "| c | 1.5 |"]

    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- t:start -->\nold\n<!-- t:end -->\nrest\n")
    update_readme.replace_marked_section(readme, "t", table)
    assert readme.read_text() == f"intro\n<!-- t:start -->\n{table}\n<!-- t:end -->\nrest\n"
    with pytest.raises(ValueError, match="absent:start"):
        update_readme.replace_marked_section(readme, "absent", "x")
    assert readme.read_text() == f"intro\n<!-- t:start -->\n{table}\n<!-- t:end -->\nrest\n"  # untouched
