"""The fast paths the speed benchmarks (bench/) use compute what the original's way computes.

- ``FusedBatchNormalization`` computes what ``keras.layers.BatchNormalization`` computes: outputs,
  gradients and moving statistics in training mode, outputs in inference mode; fallbacks agree too.
- The scratch CNN with the fused BatchNorm, and compiled with ``jit_compile=True`` (XLA), give the
  same predictions, loss and one training step as Keras' own layers with the default compile, on a
  tiny scratch CNN (56 px inputs, centre-cropped to 49 px as the model's first layer does; dropout off
  so the step is deterministic).
- ``train_scratch_cnn`` in mixed_bfloat16 returns a float32 model with the trained weights and
  leaves the global dtype policy as it found it; "auto" picks bfloat16 only on CPUs that have it.
- ``make_dataset`` gives the images the original's ``ImageDataGenerator(rescale=1/255)
  .flow_from_directory(target_size=(224, 224))`` gives, for 224 px files (no resize on either side).
  Not bit-identical: TensorFlow decodes JPEG with its fast integer IDCT, PIL with the accurate one,
  which moves pixels by up to 2-3 gray levels (mean about 0.5).
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

SHAPE = (56, 56, 3)  # the scratch CNN's centre crop keeps 7/8 (49 px): 4 conv-pool blocks leave 1 x 1


def _twin_models(fgc, fast: dict):
    """(reference, fast): scratch CNNs with the same weights, dropout off; the reference uses
    Keras' BatchNormalization and the default compile, the fast one the options in ``fast``
    (``fused_batch_norm``, ``jit``)."""
    import keras

    keras.utils.set_random_seed(0)
    weights = fgc.build_scratch_cnn(SHAPE, fused_batch_norm=False).get_weights()
    models = []
    for options in ({"fused_batch_norm": False, "jit": False}, fast):
        model = fgc.build_scratch_cnn(SHAPE, fused_batch_norm=options["fused_batch_norm"])
        model.set_weights(weights)
        model.get_layer("dropout").rate = 0.0  # random masks would differ between the two paths
        fgc.compile_binary_classifier(model)
        model.jit_compile = options["jit"]
        models.append(model)
    return models


@pytest.fixture
def without_op_determinism():
    """TensorFlow op determinism off inside the test, as it was after: Keras refuses jit_compile while it
    is on, and any earlier ``seed_everything`` of the session turned it on."""
    from tensorflow.python.framework import config

    enabled = config.is_op_determinism_enabled()
    config.disable_op_determinism()
    yield
    if enabled:
        config.enable_op_determinism()


@pytest.mark.parametrize("fast", [{"fused_batch_norm": True, "jit": False}, {"fused_batch_norm": False, "jit": True}],
                         ids=["fused_batch_norm", "jit_compile"])
def test_fast_scratch_cnn_matches_reference(fgc, fast, without_op_determinism):
    rng = np.random.default_rng(0)
    x = rng.random((8, *SHAPE), dtype=np.float32)
    y = np.array([0, 1] * 4, dtype=np.float32)
    reference, quick = _twin_models(fgc, fast)
    assert quick.jit_compile == fast["jit"] and not reference.jit_compile

    np.testing.assert_allclose(reference.predict(x, verbose=0), quick.predict(x, verbose=0), atol=1e-5)
    loss = [m.evaluate(x, y, verbose=0, return_dict=True)["loss"] for m in (reference, quick)]
    np.testing.assert_allclose(loss[0], loss[1], rtol=1e-4)

    step = [m.train_on_batch(x, y, return_dict=True)["loss"] for m in (reference, quick)]
    np.testing.assert_allclose(step[0], step[1], rtol=1e-4)
    # Adam's first step moves every weight by about +-learning rate (1e-3) whatever the gradient's
    # size, so a near-zero gradient whose sign differs by rounding may move one weight differently:
    # bound every weight by 2 steps and require nearly all to agree closely.
    differences = np.concatenate([np.abs(a - b).ravel() for a, b in zip(reference.get_weights(), quick.get_weights())])
    assert differences.max() <= 2e-3
    assert np.mean(differences > 1e-5) < 0.001
    np.testing.assert_allclose(reference.predict(x, verbose=0), quick.predict(x, verbose=0), atol=1e-4)


def _batch_norm_pair(fgc, shape, dtype_policy="float32"):
    """Keras' BatchNormalization and FusedBatchNormalization, built for ``shape``, same gamma/beta."""
    import keras

    rng = np.random.default_rng(1)
    gamma = rng.normal(1.0, 0.2, shape[-1]).astype(np.float32)
    beta = rng.normal(0.0, 0.2, shape[-1]).astype(np.float32)
    layers = [keras.layers.BatchNormalization(dtype=dtype_policy),
              fgc.custom_layers()["FusedBatchNormalization"](dtype=dtype_policy)]
    for layer in layers:
        layer.build(shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return layers


def _train_call(layer, x, upstream):
    """Training-mode output, and gradients of sum(output * upstream) w.r.t. input, gamma, beta."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        total = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
    return [np.asarray(v, dtype=np.float32) for v in (y, *tape.gradient(total, [x, layer.gamma, layer.beta]))]


@pytest.mark.parametrize("shape", [(4, 9, 7, 5), (6, 5)], ids=["4d_fused", "2d_fallback"])
def test_fused_batch_norm_matches_keras(fgc, shape):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32))
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
    keras_bn, fused_bn = _batch_norm_pair(fgc, shape)
    for _ in range(2):  # two training calls: the moving statistics move twice
        reference, fused = _train_call(keras_bn, x, upstream), _train_call(fused_bn, x, upstream)
        for name, a, b in zip(("output", "d/dx", "d/dgamma", "d/dbeta"), reference, fused):
            np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(fused_bn.moving_mean.numpy(), keras_bn.moving_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused_bn.moving_variance.numpy(), keras_bn.moving_variance.numpy(), rtol=1e-5)
    assert not np.allclose(keras_bn.moving_variance.numpy(), 1.0)  # the statistics did move
    np.testing.assert_allclose(fused_bn(x, training=False).numpy(), keras_bn(x, training=False).numpy(), atol=1e-5)


def test_fused_batch_norm_bfloat16_matches_keras(fgc):
    """Under mixed_bfloat16 both normalise a bfloat16 input with float32 statistics."""
    import tensorflow as tf

    rng = np.random.default_rng(2)
    shape = (4, 9, 7, 5)
    x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32), dtype=tf.bfloat16)
    upstream = tf.constant(rng.normal(size=shape).astype(np.float32))
    keras_bn, fused_bn = _batch_norm_pair(fgc, shape, "mixed_bfloat16")
    reference, fused = _train_call(keras_bn, x, upstream), _train_call(fused_bn, x, upstream)
    assert fused_bn(x, training=False).dtype == tf.bfloat16
    for name, a, b in zip(("output", "d/dx", "d/dgamma", "d/dbeta"), reference, fused):
        np.testing.assert_allclose(b, a, atol=0.05, rtol=0.02, err_msg=name)  # bfloat16: 8 mantissa bits
    np.testing.assert_allclose(fused_bn.moving_variance.numpy(), keras_bn.moving_variance.numpy(), rtol=1e-3)


def test_training_precision_choice(fgc, monkeypatch, tmp_path):
    from pneumonia_cxr import training

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile\n")
    assert fgc.cpu_has_native_bfloat16(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert not fgc.cpu_has_native_bfloat16(cpuinfo)
    assert not fgc.cpu_has_native_bfloat16(tmp_path / "absent")

    for native, expected in ((True, "mixed_bfloat16"), (False, "float32")):
        monkeypatch.setattr(training, "cpu_has_native_bfloat16", lambda native=native: native)
        assert fgc.training_precision("auto") == expected
    assert fgc.training_precision("float32") == "float32"
    assert fgc.training_precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="'float16'"):
        fgc.training_precision("float16")


def test_scratch_cnn_output_layer_stays_float32_under_mixed_bfloat16(fgc):
    """A bfloat16 sigmoid saturates at |logit| > ~6 and mixed-precision training then collapsed to
    one class: the output layer must compute in float32 whatever the policy."""
    with fgc.dtype_policy("mixed_bfloat16"):
        model = fgc.build_scratch_cnn(SHAPE)
    assert model.get_layer("conv1").compute_dtype == "bfloat16"
    assert model.get_layer("bn1").compute_dtype == "bfloat16"
    assert model.get_layer("prediction").compute_dtype == "float32"
    assert model(np.zeros((1, *SHAPE), np.float32)).dtype == "float32"


def test_train_scratch_cnn_in_bfloat16_returns_float32_model(fgc):
    import keras

    rng = np.random.default_rng(3)
    grey = (rng.random((8, 224, 224, 1)) * 255).astype(np.uint8)
    y = np.array([0, 1] * 4, dtype=np.float32)
    val = rng.random((4, 224, 224, 3), dtype=np.float32)
    recipe = {"input_size": 64, "batch_size": 4, "max_epochs": 2, "patience": 2, "precision": "mixed_bfloat16"}
    fgc.seed_everything(0)
    initial = fgc.build_scratch_cnn(input_size=64, preprocessing=False).get_weights()  # what training starts from
    before = keras.mixed_precision.global_policy().name
    model, result = fgc.train_scratch_cnn(grey, y, val, y[:4], {0: 1.0, 1: 1.0}, seed=0, recipe=recipe)
    assert keras.mixed_precision.global_policy().name == before
    assert result.precision == "mixed_bfloat16" and len(result.history["loss"]) == 2
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert model.input_shape == (None, 224, 224, 3) and model.get_layer("resize").output.shape[1:3] == (64, 64)
    changed = [not np.allclose(a, b) for a, b in zip(model.get_weights(), initial)]
    assert all(changed[:4])  # conv1 kernel and bias, bn1 gamma and beta moved: the trained weights
    probabilities = fgc.predict_probabilities(model, val)
    assert probabilities.shape == (4,) and np.all((probabilities >= 0) & (probabilities <= 1))


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
