"""Grad-CAM of a batch of images: the original's per-image way against our batched
``make_gradcam_heatmaps``, for the scratch CNN and the HED VGG16 transfer model (random weights
for the scratch CNN and the head: speed does not depend on training).

Original's way (``original_gradcam`` below, the Keras example the original study followed), per
image: ``model.predict`` of the image, then a grad model ``keras.Model(model.inputs, [conv.output,
model.output])`` built anew (Keras 3 needs the conv output on the path to ``model.outputs[0]``,
see ``functions_for_grad_cam.layer_output_feeding_model_output``), a GradientTape on the sigmoid
output, channel weights = mean gradient, map = ReLU(sum of weighted activations) / max. Ours: one ``make_gradcam_heatmaps`` call on the
whole batch (one forward pass, gradient of the logit). With ``class_index=1`` ours explains the
same class as the original (which always explains the single sigmoid unit); the notes give the
largest difference between the two sets of maps.

    .venv/bin/python bench/bench_gradcam.py [--quick] [--images 32] [--output PATH]

Writes entries ``gradcam_batch_scratch`` and ``gradcam_batch_vgg16`` (unit s per batch).
"""
from __future__ import annotations

import numpy as np

import common


def original_gradcam(img_array, model, last_conv_layer_name):
    """The original's Grad-CAM of one image (1, 224, 224, 3): (heatmap (h, w), probability)."""
    import keras
    import tensorflow as tf

    import functions_for_grad_cam as fgc

    probability = float(model.predict(img_array, verbose=0)[0, 0])
    conv_output = fgc.layer_output_feeding_model_output(model, model.get_layer(last_conv_layer_name))
    grad_model = keras.Model(model.inputs[0], [conv_output, model.outputs[0]])
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(img_array)
        class_channel = preds[:, 0]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = tf.squeeze(last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis])
    heatmap = tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)
    return heatmap.numpy(), probability


def measure(model, conv_name: str, images: np.ndarray, args, label: str) -> dict:
    import functions_for_grad_cam as fgc

    def original():
        return [original_gradcam(images[i:i + 1], model, conv_name) for i in range(len(images))]

    def ours():
        return fgc.make_gradcam_heatmaps(images, model, conv_name, class_index=1)

    baseline = common.time_runs(original, args.repeats, args.warmup)
    fast = common.time_runs(ours, args.repeats, args.warmup)
    reference = np.stack([np.nan_to_num(heatmap) for heatmap, _ in original()])
    maps, probabilities = ours()
    difference = float(np.abs(reference - maps).max())
    notes = (f"{label}: Grad-CAM of {len(images)} images (224 px test split), median of {args.repeats} "
             f"after {args.warmup} warm-up. Baseline: per image model.predict + new grad model + "
             f"GradientTape on the sigmoid output ({common.spread(baseline)}). Ours: "
             f"make_gradcam_heatmaps on the batch, one forward pass, logit gradient "
             f"({common.spread(fast)}). Max |map difference| with class_index=1: {difference:.2g}.")
    return common.make_entry(common.median(baseline), common.median(fast), "s/batch", False, notes)


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--images", type=int, default=None, help="images per batch (default 32, quick 4)")
    args = common.finish_args(parser.parse_args())
    n_images = 4 if args.quick else (args.images or 32)

    import keras

    import functions_for_grad_cam as fgc

    paths, targets = common.class_files(args.data_root / "chest_xray_224" / "test")
    chosen, _ = common.interleave(paths, targets, n_images)
    images = fgc.load_images(chosen)
    keras.utils.set_random_seed(0)
    scratch = fgc.build_scratch_cnn()
    entries = {"gradcam_batch_scratch": measure(scratch, "conv4", images, args, "scratch CNN (conv4)")}
    vgg16, _ = fgc.build_transfer_model(fgc.HED_BASE)
    conv_name = fgc.last_conv_layer_name(vgg16)
    entries["gradcam_batch_vgg16"] = measure(vgg16, conv_name, images, args,
                                             f"HED VGG16 transfer, random head ({conv_name})")
    common.merge_results(args.output, entries, args.quick)


if __name__ == "__main__":
    main()
