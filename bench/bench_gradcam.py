"""Grad-CAM of a batch of images: the original's per-image way against a ``GradCamExplainer`` built
once, for every saved network architecture: the scratch CNN, the HED VGG16 transfer model and the
Xception transfer model. Weights do not change speed, so each network is built untrained, without
any download: the scratch CNN and the head seeded, the HED trunk as VGG16 with random weights
(``pretrained=False``), Xception from a file of random Xception weights written here.

Original's way (``original_gradcam`` below, the Keras example the original study followed), per
image: ``model.predict`` of the image, then a grad model ``keras.Model(model.inputs, [conv.output,
model.output])`` built anew (Keras 3 needs the conv output on the path to ``model.outputs[0]``,
see ``functions_for_grad_cam.layer_output_feeding_model_output``), a GradientTape on the sigmoid
output (called with ``training=False``: see the comment there), channel weights = mean gradient,
map = ReLU(sum of weighted activations) / max. Ours: a
``GradCamExplainer`` built once (as an app worker or the notebook does; its build and first, tracing
call are timed apart and reported in the notes), then one compiled call on the whole batch (one
forward pass, gradient of the logit). With ``class_index=1`` ours explains the same class as the
original (which always explains the single sigmoid unit); the notes give the largest difference
between the two sets of maps at the convolution's resolution. Both ways are timed in turn, round by
round, so that both see the same machine load.

    .venv/bin/python bench/bench_gradcam.py [--quick] [--images 32] [--output PATH]

Writes entries ``gradcam_batch_scratch``, ``gradcam_batch_vgg16`` (HED) and ``gradcam_batch_xception``
(unit s per batch).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

import common


def original_gradcam(img_array, model, last_conv_layer_name):
    """The original's Grad-CAM of one image (1, 224, 224, 3): (heatmap (h, w), probability)."""
    import keras
    import tensorflow as tf

    import pneumonia_cxr as pcx

    probability = float(model.predict(img_array, verbose=0)[0, 0])
    conv_output = pcx.gradcam.layer_output_feeding_model_output(model, model.get_layer(last_conv_layer_name))
    grad_model = keras.Model(model.inputs[0], [conv_output, model.outputs[0]])
    with tf.GradientTape() as tape:
        # training=False, as Keras 2 defaulted to: in Keras 3 the CenterCrop first layer's call default
        # (training=True) reaches the later layers, so BatchNorm would use batch statistics and update them
        last_conv_layer_output, preds = grad_model(img_array, training=False)
        class_channel = preds[:, 0]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = tf.squeeze(last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis])
    heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
    return heatmap.numpy(), probability


def untrained_networks(folder: Path) -> dict[str, tuple[object, str]]:
    """{entry name: (model, description)} of the three saved architectures with untrained weights."""
    import keras

    import pneumonia_cxr as pcx

    keras.utils.set_random_seed(0)
    xception_weights = folder / "xception_random.weights.h5"
    keras.applications.Xception(include_top=False, weights=None, input_shape=pcx.common.IMAGE_SHAPE).save_weights(xception_weights)
    return {
        "gradcam_batch_scratch": (pcx.models.build_scratch_cnn(), "scratch CNN (build_scratch_cnn), random weights (seed 0)"),
        "gradcam_batch_vgg16": (pcx.models.build_transfer_model(pcx.models.HED_BASE, pretrained=False)[0],
                                "HED VGG16 transfer architecture (build_transfer_model, pretrained=False): random trunk and head"),
        "gradcam_batch_xception": (pcx.models.build_xception_transfer(weights=xception_weights)[0],
                                   "Xception transfer architecture (build_xception_transfer) with random Xception weights"),
    }


def measure(model, images: np.ndarray, args, label: str) -> dict:
    import pneumonia_cxr as pcx

    started = time.perf_counter()
    explainer = pcx.gradcam.GradCamExplainer(model, methods=("gradcam",))
    explainer(images[:1], class_index=1)
    build_seconds = time.perf_counter() - started
    conv_name = explainer.last_conv_layer_name

    def original():
        return [original_gradcam(images[i:i + 1], model, conv_name) for i in range(len(images))]

    def ours():
        return explainer(images, class_index=1)

    seconds = common.time_interleaved({"original": original, "ours": ours}, args.repeats, args.warmup)
    reference = np.stack([np.nan_to_num(heatmap) for heatmap, _ in original()])
    difference = float(np.abs(reference - ours().conv_maps["gradcam"]).max())
    notes = (f"{label} ({conv_name}; input box seen by the model {explainer.box}, top/left/height/width): Grad-CAM "
             f"of {len(images)} images (224 px test split), median of {args.repeats} after {args.warmup} warm-up, "
             f"the two ways timed in turn. Baseline: per image model.predict + new grad model + GradientTape on "
             f"the sigmoid output ({common.spread(seconds['original'])}). Ours: GradCamExplainer built once, then "
             f"one compiled call on the batch, one forward pass, logit gradient ({common.spread(seconds['ours'])}); "
             f"building it and its first (tracing) call took {build_seconds:.3g} s once per process. Max |map "
             f"difference| with class_index=1: {difference:.2g}. Machine load (1-min average) at the end: "
             f"{common.load_average():.2f}.")
    return common.make_entry(common.median(seconds["original"]), common.median(seconds["ours"]), "s/batch", False, notes)


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--images", type=int, default=None, help="images per batch (default 32, quick 4)")
    args = common.finish_args(parser.parse_args())
    n_images = 4 if args.quick else (args.images or 32)

    import pneumonia_cxr as pcx

    paths, targets = common.class_files(args.data_root / "chest_xray_224" / "test")
    chosen, _ = common.interleave(paths, targets, n_images)
    images = pcx.pipeline.load_images(chosen)
    entries = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, (model, description) in untrained_networks(Path(folder)).items():
            entries[name] = {**measure(model, images, args, description), "model": description}
    common.merge_results(args.output, entries, args.quick)


if __name__ == "__main__":
    main()
