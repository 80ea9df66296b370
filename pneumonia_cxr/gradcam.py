"""Grad-CAM and Grad-CAM++ maps of a one-unit sigmoid classifier, and overlays of them.

The checks of the maps are in :mod:`pneumonia_cxr.gradcam_checks`, their words and figures in
:mod:`pneumonia_cxr.gradcam_report`."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from . import models
from .evaluation import sigmoid
from .models import _keras


# ----------------------------------------------------------------------------------------------
# Grad-CAM and Grad-CAM++ for a one-unit sigmoid classifier
# ----------------------------------------------------------------------------------------------
METHODS: tuple[str, str] = ("gradcam", "gradcam++")
CROP_LAYER_NAME = "centre_crop"  # a keras.layers.CenterCrop applied to the model's input, if any


def _gradcam_parts(model, last_conv_layer_name: str | None):
    """(model image -> [conv activations, input of the output layer], output Dense layer)."""
    keras = _keras()
    output_layer = model.layers[-1]
    if not isinstance(output_layer, keras.layers.Dense) or output_layer.units != 1 \
            or output_layer.activation is not keras.activations.sigmoid:
        raise ValueError(f"Model '{model.name}': Grad-CAM here needs one sigmoid unit from a Dense "
                         f"output layer, found {output_layer.__class__.__name__} '{output_layer.name}'")
    name = last_conv_layer_name or models.last_conv_layer_name(model)
    try:
        conv = model.get_layer(name)
    except ValueError:
        raise ValueError(f"Model '{model.name}' has no layer named '{name}'") from None
    parts = keras.Model(model.inputs[0], [layer_output_feeding_model_output(model, conv),
                                          models.output_layer_input(model)])
    return parts, output_layer


def layer_output_feeding_model_output(model, layer):
    """The symbolic output of ``layer`` on the path to ``model.outputs[0]``.

    ``layer.output`` is not enough: a Sequential built with add() keeps one node per rebuild, and
    only the last graph's node feeds the model's output (another gives a None gradient).

    Raises:
        ValueError: the layer does not feed the model's output.
    """
    found = next((t for node in layer._inbound_nodes for t in node.output_tensors
                  if _depends_on(model.outputs[0], t)), None)
    if found is None:
        raise ValueError(f"Model '{model.name}': layer '{layer.name}' does not feed the output layer")
    return found


def _depends_on(tensor, source) -> bool:
    """Whether a symbolic Keras tensor is computed from ``source`` (walks the graph backwards)."""
    stack, seen = [tensor], set()
    while stack:
        current = stack.pop()
        if current is source:
            return True
        history = getattr(current, "_keras_history", None)
        if history is None or id(current) in seen:
            continue
        seen.add(id(current))
        node = history.operation._inbound_nodes[history.node_index]
        stack.extend(node.input_tensors)
    return False


def input_crop_box(model) -> tuple[int, int, int, int]:
    """(top, left, height, width) in input pixels of the part of the input the model sees.

    A model whose layer ``centre_crop`` (``keras.layers.CenterCrop``) crops its input sees only that
    central box (Keras puts it at ``(H - height) // 2``, ``(W - width) // 2``); its last convolution,
    and so its Grad-CAM map, covers the box. Without such a layer: the whole input ``(0, 0, H, W)``.

    Raises:
        ValueError: the crop layer is not the model's first layer, or is larger than the input.
    """
    height, width = (int(side) for side in model.inputs[0].shape[1:3])
    try:
        crop = model.get_layer(CROP_LAYER_NAME)
    except ValueError:
        return 0, 0, height, width
    first = next(layer for layer in model.layers if not isinstance(layer, _keras().layers.InputLayer))
    if crop is not first or crop.height > height or crop.width > width:
        raise ValueError(f"Model '{model.name}': layer '{CROP_LAYER_NAME}' must be the first layer, cropping the "
                         f"{height} x {width} input to a box no larger, got {crop.height} x {crop.width}")
    return (height - crop.height) // 2, (width - crop.width) // 2, crop.height, crop.width


@dataclass
class GradCamBatch:
    """What :class:`GradCamExplainer` returns for N images.

    ``logits``: float64 (N,), the PNEUMONIA logit (pre-sigmoid output); ``probabilities``: float64
    (N,) sigmoid of the logits, the probability of PNEUMONIA in [0, 1]; ``explained``: int (N,) the
    class each map explains (1 PNEUMONIA, 0 NORMAL); ``maps``: {method: float32 (N, H, W)} in [0, 1],
    in the input's frame (the map upsampled bilinearly onto the box the model sees, zero outside it,
    peak 1; all zero when the class has no positive evidence); ``conv_maps``: {method: float32 (N, h,
    w)} in [0, 1], the same maps at the last convolution's resolution (covering that box only)."""

    logits: np.ndarray
    probabilities: np.ndarray
    explained: np.ndarray
    maps: dict[str, np.ndarray]
    conv_maps: dict[str, np.ndarray]

    def subset(self, index: Sequence[int]) -> "GradCamBatch":
        """The same for the images at ``index`` (positions), in that order."""
        index = np.asarray(index, int)
        return GradCamBatch(self.logits[index], self.probabilities[index], self.explained[index],
                            {m: v[index] for m, v in self.maps.items()}, {m: v[index] for m, v in self.conv_maps.items()})


class GradCamExplainer:
    """Grad-CAM and Grad-CAM++ of one model, built once (per app worker, per notebook model).

    Builds the gradient sub-model (image -> last conv activations, output layer's input) once and
    wraps one forward pass, the gradient of the class score with respect to the activations, the maps
    of every method and their placement in the input frame in a compiled ``tf.function`` with a fixed
    input signature (batch dimension None: any batch size runs the same graph, traced once).

    Class scores: the logit for PNEUMONIA, the negated logit for NORMAL (gradients of the logit, not
    of the saturating sigmoid). Grad-CAM weights each channel by the mean gradient (Selvaraju et al.
    2017); Grad-CAM++ by Chattopadhay et al. 2018's closed form for an exponential score.

    Args:
        model: a Keras model (N, H, W, 3) -> Dense(1, sigmoid), this project's models take
            (N, 224, 224, 3) RGB in [0, 1]; a ``centre_crop`` first layer is honoured
            (:func:`input_crop_box`).
        last_conv_layer_name: the layer whose activations are weighted; None: the last Conv2D or
            SeparableConv2D.
        methods: any of :data:`METHODS`.
        compiled: False runs the same computation eagerly (no tracing cost: for a one-off call).

    Raises:
        ValueError: no single sigmoid output, unknown layer or method.
    """

    def __init__(self, model, last_conv_layer_name: str | None = None, methods: Sequence[str] = METHODS,
                 compiled: bool = True):
        import tensorflow as tf

        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ValueError(f"Unknown method {unknown or list(methods)}: use 'gradcam' or 'gradcam++'")
        self.model, self.methods = model, tuple(methods)
        self.last_conv_layer_name = last_conv_layer_name or models.last_conv_layer_name(model)
        self._parts, output_layer = _gradcam_parts(model, self.last_conv_layer_name)
        self._kernel, self._bias = output_layer.kernel, output_layer.bias
        self.input_shape = tuple(int(side) for side in model.inputs[0].shape[1:])
        self.box = input_crop_box(model)
        images = tf.TensorSpec((None, *self.input_shape), tf.float32)
        self._explain = self._explain_batch
        self._logits = self._logits_batch
        if compiled:
            self._explain = tf.function(self._explain_batch, input_signature=[
                images, tf.TensorSpec((None,), tf.int32), tf.TensorSpec((), tf.float64)])
            self._logits = tf.function(self._logits_batch, input_signature=[images])

    def _logits_from(self, penultimate):
        import tensorflow as tf

        flat = tf.reshape(tf.cast(penultimate, tf.float32), (tf.shape(penultimate)[0], -1))
        return tf.squeeze(tf.matmul(flat, tf.cast(self._kernel, tf.float32)) + tf.cast(self._bias, tf.float32), -1)

    def _logits_batch(self, images):
        return self._logits_from(self._parts(images, training=False)[1])

    def _explain_batch(self, images, classes, threshold):
        import tensorflow as tf

        images = tf.convert_to_tensor(images, tf.float32)  # the eager path gets arrays
        with tf.GradientTape() as tape:
            tape.watch(images)  # records every op after the input, whatever the layers' trainable flags
            activations, penultimate = self._parts(images, training=False)
            logits = self._logits_from(penultimate)
            predicted = tf.cast(tf.math.sigmoid(tf.cast(logits, tf.float64)) >= threshold, tf.int32)
            explained = tf.where(classes < 0, predicted, classes)
            total = tf.reduce_sum(tf.where(explained == 1, logits, -logits))  # d total / dA_i = d score_i / dA_i
        grads = tf.cast(tape.gradient(total, activations), tf.float32)
        activations = tf.cast(activations, tf.float32)
        cams = {method: self._cam(activations, grads, method) for method in self.methods}
        frame = self.input_shape[:2]
        return (logits, explained, {m: _peak_normalised(c) for m, c in cams.items()},
                {m: _peak_normalised(place_in_frame(c, self.box, frame)) for m, c in cams.items()})

    @staticmethod
    def _cam(activations, grads, method: str):
        """ReLU of the weighted sum of activations (N, h, w, C) -> (N, h, w), not normalised."""
        import tensorflow as tf

        if method == "gradcam":
            weights = tf.reduce_mean(grads, axis=(1, 2))
        else:  # gradcam++: Chattopadhay et al. 2018, exponential-score closed form
            grads_2 = grads * grads
            denominator = 2 * grads_2 + tf.reduce_sum(activations, axis=(1, 2), keepdims=True) * grads_2 * grads
            alphas = grads_2 / tf.where(denominator != 0, denominator, tf.ones_like(denominator))
            weights = tf.reduce_sum(alphas * tf.nn.relu(grads), axis=(1, 2))
        return tf.nn.relu(tf.einsum("nhwc,nc->nhw", activations, weights))

    def __call__(self, images, class_index: int | Sequence[int] | None = None, threshold: float = 0.5,
                 batch_size: int = 32) -> GradCamBatch:
        """Maps of every method, with the predictions of the same forward pass.

        Args:
            images: float32 (N, H, W, 3), for this project's models (N, 224, 224, 3) RGB in [0, 1].
            class_index: None explains the predicted class (probability >= threshold -> PNEUMONIA);
                1 explains PNEUMONIA; 0 NORMAL; an array (N,) gives the class per image.
            threshold: probability of PNEUMONIA from which an image is predicted PNEUMONIA (the
                float64 sigmoid decides, so that logits beyond about 17 still compare correctly).
            batch_size: images per compiled call; bounds the memory of one call.
        """
        images = np.asarray(images, np.float32)
        classes = np.broadcast_to(np.asarray(-1 if class_index is None else class_index, np.int32), (len(images),))
        parts = [self._explain(images[start:start + batch_size], classes[start:start + batch_size], float(threshold))
                 for start in range(0, len(images), batch_size)]
        logits = np.concatenate([np.asarray(p[0], np.float64) for p in parts])
        return GradCamBatch(logits, sigmoid(logits), np.concatenate([np.asarray(p[1]) for p in parts]),
                            {m: np.concatenate([np.asarray(p[3][m]) for p in parts]) for m in self.methods},
                            {m: np.concatenate([np.asarray(p[2][m]) for p in parts]) for m in self.methods})

    def logits(self, images, batch_size: int = 32) -> np.ndarray:
        """PNEUMONIA logits float64 (N,) of images (N, H, W, 3): forward passes only, compiled."""
        images = np.asarray(images, np.float32)
        return np.concatenate([np.asarray(self._logits(images[start:start + batch_size]), np.float64)
                               for start in range(0, len(images), batch_size)]) if len(images) else np.empty(0)


def _peak_normalised(maps):
    """Maps (N, h, w) >= 0 divided by their peak: values in [0, 1]; all zero where a map is all zero."""
    import tensorflow as tf

    peak = tf.reduce_max(maps, axis=(1, 2), keepdims=True)
    return maps / tf.where(peak > 0, peak, tf.ones_like(peak))


def make_gradcam_heatmaps(images, model, last_conv_layer_name: str | None = None,
                          class_index: int | Sequence[int] | None = None, threshold: float = 0.5,
                          method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (or Grad-CAM++) maps of a batch, with the predictions of the same forward pass.

    A one-off :class:`GradCamExplainer` run eagerly (arguments as there); for repeated calls build
    the explainer once instead.

    Returns:
        (heatmaps float32 (N, H, W) in [0, 1] in the input's frame, probabilities of PNEUMONIA (N,) float64).
    """
    result = GradCamExplainer(model, last_conv_layer_name, (method,), compiled=False)(images, class_index, threshold)
    return result.maps[method], result.probabilities


def make_gradcam_heatmap(img_array, model, last_conv_layer_name: str | None = None,
                         pred_index: int | None = None, threshold: float = 0.5) -> np.ndarray:
    """Grad-CAM map float32 (H, W) in [0, 1] of one image ``img_array`` (1, 224, 224, 3), in the
    input's frame.

    The original study's signature. Gradients are of the logit (not the saturating sigmoid);
    ``pred_index`` None explains the predicted class, 1 PNEUMONIA, 0 NORMAL (negated logit).
    """
    heatmaps, _ = make_gradcam_heatmaps(img_array, model, last_conv_layer_name, pred_index, threshold)
    return heatmaps[0]


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4,
                    colormap: str = "jet") -> np.ndarray:
    """Blend a heatmap (h, w) in [0, 1] over an RGB image (H, W, 3) uint8 at the image's size.

    Returns uint8 RGB (H, W, 3) = (1 - alpha) * image + alpha * colormap(resized heatmap)."""
    import cv2
    from matplotlib import colormaps

    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    height, width = image.shape[:2]
    resized = cv2.resize(np.asarray(heatmap, np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    coloured = colormaps[colormap](np.clip(resized, 0, 1), bytes=True)[:, :, :3]
    blended = (1 - alpha) * image.astype(np.float32) + alpha * coloured
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray, compress_level: int = 6) -> bytes:
    """PNG encoding of a uint8 image (H, W) or (H, W, 3).

    ``compress_level`` 0-9 is zlib's (Pillow's default 6); the app uses 1: about 5x faster on a
    full-size overlay for a file about 15% larger."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def save_overlay_png(image: np.ndarray, heatmap: np.ndarray, path: str | os.PathLike, alpha: float = 0.4) -> Path:
    """Write :func:`overlay_heatmap` of ``image`` and ``heatmap`` to ``path`` as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(overlay_heatmap(image, heatmap, alpha)))
    return path


def place_in_frame(maps, box: tuple[int, int, int, int], frame: tuple[int, int]):
    """Maps (N, h, w) resized bilinearly to the box (top, left, height, width) and padded with zeros to
    ``frame`` (H, W): float32 (N, H, W), a tf.Tensor (runs inside a compiled function or eagerly)."""
    import tensorflow as tf

    top, left, height, width = box
    resized = tf.image.resize(tf.convert_to_tensor(maps, tf.float32)[..., None], (height, width), method="bilinear")
    return tf.pad(resized[..., 0], [[0, 0], [top, frame[0] - top - height], [left, frame[1] - left - width]])


def crop_to_box(maps: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The part of maps or images (N, H, W, ...) inside the box (top, left, height, width) the model
    sees: (N, height, width, ...), a view."""
    top, left, height, width = box
    return np.asarray(maps)[:, top:top + height, left:left + width]
