"""The fast paths the speed benchmarks (bench/) use compute what the original's way computes.

- ``jit_compile=True`` (XLA) gives the same predictions, loss and one training step as the default
  compile, on a tiny scratch CNN (48 px inputs, dropout off so the step is deterministic).
- ``make_dataset`` gives the images the original's ``ImageDataGenerator(rescale=1/255)
  .flow_from_directory(target_size=(224, 224))`` gives, for 224 px files (no resize on either side).
  Not bit-identical: TensorFlow decodes JPEG with its fast integer IDCT, PIL with the accurate one,
  which moves pixels by up to 2-3 gray levels (mean about 0.5).
"""
from __future__ import annotations

import shutil

import numpy as np

SHAPE = (48, 48, 3)


def _twin_models(fgc):
    import keras

    keras.utils.set_random_seed(0)
    weights = fgc.build_scratch_cnn(SHAPE).get_weights()
    models = []
    for jit in (False, True):
        model = fgc.build_scratch_cnn(SHAPE)
        model.set_weights(weights)
        model.get_layer("dropout").rate = 0.0  # random masks would differ between the two paths
        fgc.compile_binary_classifier(model)
        model.jit_compile = jit
        models.append(model)
    return models


def test_jit_compile_matches_default(fgc):
    rng = np.random.default_rng(0)
    x = rng.random((8, *SHAPE), dtype=np.float32)
    y = np.array([0, 1] * 4, dtype=np.float32)
    default, jit = _twin_models(fgc)
    assert jit.jit_compile and not default.jit_compile

    np.testing.assert_allclose(default.predict(x, verbose=0), jit.predict(x, verbose=0), atol=1e-5)
    loss = [m.evaluate(x, y, verbose=0, return_dict=True)["loss"] for m in (default, jit)]
    np.testing.assert_allclose(loss[0], loss[1], rtol=1e-4)

    step = [m.train_on_batch(x, y, return_dict=True)["loss"] for m in (default, jit)]
    np.testing.assert_allclose(step[0], step[1], rtol=1e-4)
    # Adam's first step moves every weight by about +-learning rate (1e-3) whatever the gradient's
    # size, so a near-zero gradient whose sign differs by rounding may move one weight differently:
    # bound every weight by 2 steps and require nearly all to agree closely.
    differences = np.concatenate([np.abs(a - b).ravel() for a, b in zip(default.get_weights(), jit.get_weights())])
    assert differences.max() <= 2e-3
    assert np.mean(differences > 1e-5) < 0.001
    np.testing.assert_allclose(default.predict(x, verbose=0), jit.predict(x, verbose=0), atol=1e-4)


def test_make_dataset_matches_image_data_generator_on_224_files(fgc, data_224, tmp_path):
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    paths = []
    for label in fgc.CLASS_NAMES:
        (tmp_path / label).mkdir()
        for source in sorted((data_224 / "train" / label).iterdir())[:3]:
            paths.append(str(shutil.copy(source, tmp_path / label / source.name)))
    generator = ImageDataGenerator(rescale=1 / 255).flow_from_directory(
        str(tmp_path), target_size=(224, 224), batch_size=len(paths), class_mode="binary", shuffle=False)
    assert [str(tmp_path / name) for name in generator.filenames] == paths
    original, labels = generator[0]
    ours = fgc.load_images(paths)

    assert ours.shape == original.shape == (len(paths), 224, 224, 3)
    assert ours.dtype == original.dtype == np.float32
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    difference = np.abs(ours - original)
    assert difference.max() <= 4 / 255
    assert difference.mean() <= 1 / 255
