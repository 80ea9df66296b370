"""Training throughput of the scratch CNN (images/s over a fixed number of steps, to extrapolate an
epoch): the original's way against ours, plus the FLOP/s the train step achieves.

Original's way: ``ImageDataGenerator(rescale=1/255).flow_from_directory(train, target_size=(224,
224), batch_size=16, class_mode='binary')`` (default shuffle) fed to ``model.fit`` with default
settings (on a CPU-only machine Keras 3 resolves ``jit_compile="auto"`` to False).
Ours: ``make_dataset`` (decoded images cached in memory, shuffled, prefetched) fed to the same
model, compiled (a) by default and (b) with ``jit_compile=True`` (XLA); "ours" is the faster of the
two and the notes name it. Optional, notes only: (c) the mixed_bfloat16 policy (AMX/AVX-512 BF16
CPUs), not used as "ours" because its effect on accuracy is not checked here.

FLOPs: the forward pass counted analytically (Conv2D 2*h*w*k*k*Cin*Cout, Dense 2*in*out, the rest
ignored), a train step taken as 3x forward; the machine's peak as the rate of a large float32
``tf.matmul`` (2*n^3 per product).

    .venv/bin/python bench/bench_scratch_epoch.py [--quick] [--steps 30] [--no-bf16]
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


def matmul_peak(n: int, repeats: int) -> float:
    """FLOP/s of an (n x n) @ (n x n) float32 matmul with TensorFlow (median of repeats)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2)
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    seconds = common.time_runs(lambda: product().numpy(), max(3, repeats), 1)
    return 2 * n ** 3 / common.median(seconds)


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--steps", type=int, default=None, help="train steps of 16 per timed run (default 30, quick 2)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the mixed_bfloat16 measurement")
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

    import functions_for_grad_cam as fgc

    train_dir = args.data_root / "chest_xray_224" / "train"
    paths, targets = common.class_files(train_dir)
    keras.utils.set_random_seed(0)
    reference = fgc.build_scratch_cnn()
    initial = reference.get_weights()

    def fresh_model(jit: bool):
        model = fgc.build_scratch_cnn()
        model.set_weights(initial)
        fgc.compile_binary_classifier(model)
        if jit:
            model.jit_compile = True
        return model

    results = {}

    # Original's way: ImageDataGenerator + model.fit with default settings.
    generator_class, where = common.image_data_generator()
    generator = generator_class(rescale=1 / 255).flow_from_directory(
        str(train_dir), target_size=(224, 224), batch_size=batch_size, class_mode="binary", seed=0)
    model = fresh_model(jit=False)
    seconds = common.time_runs(lambda: model.fit(generator, steps_per_epoch=steps, epochs=1, verbose=0),
                               args.repeats, args.warmup)
    results["baseline"] = seconds

    # Ours: make_dataset over steps*16 images (both classes), cached, shuffled.
    chosen, chosen_targets = common.interleave(paths, targets, steps * batch_size)
    # the dataset reshuffles itself every epoch: fit(shuffle=False) only silences Keras' warning
    dataset = fgc.make_dataset(chosen, chosen_targets, batch_size=batch_size, shuffle=True, seed=0)
    for name, jit in (("ours_default", False), ("ours_jit", True)):
        model = fresh_model(jit)
        results[name] = common.time_runs(lambda: model.fit(dataset, epochs=1, verbose=0, shuffle=False),
                                         args.repeats, max(1, args.warmup))  # warm-up fills the cache
        results[name + "_jit_active"] = bool(model.jit_compile)

    if not args.no_bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            model = fresh_model(jit=False)
            results["bf16"] = common.time_runs(lambda: model.fit(dataset, epochs=1, verbose=0, shuffle=False),
                                               args.repeats, max(1, args.warmup))
        finally:
            keras.mixed_precision.set_global_policy("float32")

    n_images = steps * batch_size
    rate = {name: n_images / common.median(value) for name, value in results.items()
            if isinstance(value, list)}
    best = max(("ours_default", "ours_jit"), key=rate.get)
    flops_forward = forward_flops(reference)
    peak = matmul_peak(512 if args.quick else (args.matmul_size or 2048), args.repeats)
    achieved = {name: 3 * flops_forward * value for name, value in rate.items()}
    labels = {"baseline": "baseline", "ours_default": "make_dataset + default compile",
              "ours_jit": "make_dataset + jit_compile=True", "bf16": "make_dataset + mixed_bfloat16 (not used)"}
    parts = "; ".join(f"{labels[name]} {value:.1f} images/s = {achieved[name] / 1e9:.1f} GFLOP/s "
                      f"({achieved[name] / peak:.1%} of peak)" for name, value in rate.items())
    notes = (f"{steps} train steps of {batch_size} (224 px train), median of {args.repeats} after "
             f"{args.warmup} warm-up; an epoch of {len(paths)} images takes about "
             f"{len(paths) / rate['baseline'] / 60:.1f} min the original's way, "
             f"{len(paths) / rate[best] / 60:.1f} min ours. Baseline: {where}.flow_from_directory + "
             f"model.fit defaults (jit_compile auto -> False on CPU). Ours = {labels[best]}. {parts}. "
             f"Forward {flops_forward / 1e9:.2f} GFLOP/image (analytic, Conv2D+Dense), train step "
             f"taken as 3x forward; peak {peak / 1e9:.1f} GFLOP/s = float32 tf.matmul rate on this "
             f"machine. Threads intra/inter: {args.intra_op_threads or 'default'}/"
             f"{args.inter_op_threads or 'default'}; jit active: {results['ours_jit_jit_active']}.")
    entry = common.make_entry(rate["baseline"], rate[best], "images/s", True, notes)
    entry.update({"flops_forward_per_image": flops_forward, "peak_matmul_flops": float(f"{peak:.4g}"),
                  "achieved_train_flops": {k: float(f"{v:.4g}") for k, v in achieved.items()}})
    common.merge_results(args.output, {"scratch_epoch": entry}, args.quick)


if __name__ == "__main__":
    main()
