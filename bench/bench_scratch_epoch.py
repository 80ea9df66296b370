"""Training throughput of the scratch CNN (images/s over a fixed number of steps, to extrapolate an
epoch): the original's way against ours, plus the FLOP/s the train step achieves.

Original's way: ``ImageDataGenerator(rescale=1/255).flow_from_directory(train, target_size=(224,
224), batch_size=16, class_mode='binary')`` (default shuffle) fed to ``model.fit`` of the scratch CNN
built with Keras' own ``BatchNormalization``, float32, default compile (on a CPU-only machine
Keras 3 resolves ``jit_compile="auto"`` to False).
Ours, as ``train_scratch_cnn`` trained it until 2026-12-08 (the notebook now trains at 128 px on in-memory
grey views resampled once per image, ``pcx.training.augmented_batches``, which this benchmark does not
time; its figures are of the 196 px pipeline below): ``make_dataset`` (decoded images cached in memory,
shuffled, prefetched), the same architecture and initial weights with ``FusedBatchNormalization``
(TensorFlow's fused kernel, same function), in ``training_precision("auto")``: mixed_bfloat16 on a
CPU with native bfloat16 (AMX / AVX512-BF16), else float32. bench/check_bf16_accuracy.py checks on
validation data that bfloat16 training keeps the accuracy.
Also measured, for the notes: make_dataset with Keras' BatchNormalization in float32 (the input
pipeline's share), the fused BatchNorm in float32 (the kernel's share), and with ``--with-jit`` the
fused model compiled with ``jit_compile=True`` (XLA).

FLOPs: the forward pass counted analytically (Conv2D 2*h*w*k*k*Cin*Cout, Dense 2*in*out, the rest
ignored), a train step taken as 3x forward; the machine's peaks as the rates of a large float32
and bfloat16 ``tf.matmul`` (2*n^3 per product), each variant set against the peak of the precision
it computes in.

    .venv/bin/python bench/bench_scratch_epoch.py [--quick] [--steps 30] [--with-jit]
        [--intra-op-threads N --inter-op-threads M] [--output PATH]

Writes entry ``scratch_epoch`` (unit images/s).
"""
from __future__ import annotations

import common


def forward_flops(model) -> int:
    """Multiply-adds x2 of Conv2D and Dense layers for one image (other layers ignored)."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kh, kw = layer.kernel_size
            in_channels = layer.input.shape[-1] // layer.groups
            total += 2 * height * width * kh * kw * in_channels * out_channels
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def matmul_peak(n: int, repeats: int, dtype: str = "float32") -> float:
    """FLOP/s of an (n x n) @ (n x n) matmul in ``dtype`` with TensorFlow (median of repeats)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((n, n), seed=1), dtype)
    b = tf.cast(tf.random.normal((n, n), seed=2), dtype)
    product = tf.function(lambda: tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32)))
    seconds = common.time_runs(lambda: product().numpy(), max(3, repeats), 1)
    return 2 * n ** 3 / common.median(seconds)


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--steps", type=int, default=None, help="train steps of 16 per timed run (default 30, quick 2)")
    parser.add_argument("--with-jit", action="store_true", help="also measure the fused model with jit_compile=True")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="TF intra-op threads (0: TF's default)")
    parser.add_argument("--inter-op-threads", type=int, default=0, help="TF inter-op threads (0: TF's default)")
    parser.add_argument("--matmul-size", type=int, default=None, help="n of the peak matmul (default 2048, quick 512)")
    args = common.finish_args(parser.parse_args())
    steps = 2 if args.quick else (args.steps or 30)
    batch_size = 16

    import tensorflow as tf

    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    if args.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    import keras

    import pneumonia_cxr as pcx

    train_dir = args.data_root / "chest_xray_224" / "train"
    paths, targets = common.class_files(train_dir)
    keras.utils.set_random_seed(0)
    reference = pcx.models.build_scratch_cnn(fused_batch_norm=False)
    initial = reference.get_weights()
    precision = pcx.training.training_precision("auto")

    def fresh_model(fused: bool, policy: str = "float32", jit: bool = False):
        with pcx.training.dtype_policy(policy):
            model = pcx.models.build_scratch_cnn(fused_batch_norm=fused)
            model.set_weights(initial)
            pcx.models.compile_binary_classifier(model)
        model.jit_compile = jit
        return model

    def time_fit(model, data):
        return common.time_runs(lambda: model.fit(data, epochs=1, verbose=0, shuffle=False),
                                args.repeats, max(1, args.warmup))  # warm-up fills make_dataset's cache

    results = {}
    # Original's way: ImageDataGenerator + Keras BatchNormalization + model.fit with default settings.
    generator_class, where = common.image_data_generator()
    generator = generator_class(rescale=1 / 255).flow_from_directory(
        str(train_dir), target_size=(224, 224), batch_size=batch_size, class_mode="binary", seed=0)
    model = fresh_model(fused=False)
    results["baseline"] = common.time_runs(
        lambda: model.fit(generator, steps_per_epoch=steps, epochs=1, verbose=0), args.repeats, args.warmup)

    # Ours and its parts: make_dataset over steps*16 images (both classes), cached, shuffled
    # (the dataset reshuffles itself every epoch: fit(shuffle=False) only silences Keras' warning).
    chosen, chosen_targets = common.interleave(paths, targets, steps * batch_size)
    dataset = pcx.pipeline.make_dataset(chosen, chosen_targets, batch_size=batch_size, shuffle=True, seed=0)
    variants = {"keras_bn_float32": (False, "float32", False), "fused_bn_float32": (True, "float32", False),
                "ours": (True, precision, False)}
    if args.with_jit:
        variants["fused_bn_float32_jit"] = (True, "float32", True)
    for name, (fused, policy, jit) in variants.items():
        if name == "ours" and policy == "float32":
            results[name] = results["fused_bn_float32"]
            continue
        model = fresh_model(fused, policy, jit)
        results[name] = time_fit(model, dataset)
        if jit:
            results["jit_active"] = bool(model.jit_compile)

    n_images = steps * batch_size
    rate = {name: n_images / common.median(value) for name, value in results.items() if isinstance(value, list)}
    flops_forward = forward_flops(reference)
    matmul_size = 512 if args.quick else (args.matmul_size or 2048)
    peak = matmul_peak(matmul_size, args.repeats)
    peak_bf16 = matmul_peak(matmul_size, args.repeats, "bfloat16")
    achieved = {name: 3 * flops_forward * value for name, value in rate.items()}
    labels = {"baseline": "baseline", "keras_bn_float32": "make_dataset + Keras BatchNorm, float32",
              "fused_bn_float32": "make_dataset + fused BatchNorm, float32",
              "fused_bn_float32_jit": "make_dataset + fused BatchNorm, float32, jit_compile=True",
              "ours": f"ours (make_dataset + fused BatchNorm, {precision})"}
    compute_dtype = {name: variants[name][1] if name in variants else "float32" for name in rate}
    peaks = {"float32": peak, "mixed_bfloat16": peak_bf16}
    parts = "; ".join(f"{labels[name]} {value:.1f} images/s [runs {common.spread(results[name])}] = "
                      f"{achieved[name] / 1e9:.1f} GFLOP/s "
                      f"({achieved[name] / peaks[compute_dtype[name]]:.1%} of the "
                      f"{'bfloat16' if compute_dtype[name] == 'mixed_bfloat16' else 'float32'} matmul peak)"
                      for name, value in rate.items())
    notes = (f"{steps} train steps of {batch_size} (224 px train), median of {args.repeats} after "
             f"{args.warmup} warm-up; an epoch of {len(paths)} images takes about "
             f"{len(paths) / rate['baseline'] / 60:.1f} min the original's way, "
             f"{len(paths) / rate['ours'] / 60:.1f} min ours. Baseline: {where}.flow_from_directory + "
             f"keras.layers.BatchNormalization + model.fit defaults (jit_compile auto -> False on CPU). "
             f"{parts}. Training precision chosen by training_precision('auto') on this machine: {precision}"
             f" (native bfloat16: {pcx.training.cpu_has_native_bfloat16()}). Forward {flops_forward / 1e9:.2f} "
             f"GFLOP/image (analytic, Conv2D+Dense), train step taken as 3x forward; peak "
             f"{peak / 1e9:.1f} GFLOP/s = float32 tf.matmul rate on this machine (bfloat16 matmul: "
             f"{peak_bf16 / 1e9:.1f} GFLOP/s). Threads intra/inter: "
             f"{args.intra_op_threads or 'default'}/{args.inter_op_threads or 'default'}"
             + (f"; jit active: {results['jit_active']}." if args.with_jit else "."))
    entry = common.make_entry(rate["baseline"], rate["ours"], "images/s", True, notes)
    entry.update({"flops_forward_per_image": flops_forward, "peak_matmul_flops": float(f"{peak:.4g}"),
                  "peak_matmul_flops_bfloat16": float(f"{peak_bf16:.4g}"),
                  "training_precision": precision,
                  "achieved_train_flops": {k: float(f"{v:.4g}") for k, v in achieved.items()}})
    common.merge_results(args.output, {"scratch_epoch": entry}, args.quick)


if __name__ == "__main__":
    main()
