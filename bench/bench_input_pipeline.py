"""Input pipeline: images per second delivered, the original's ImageDataGenerator against our
tf.data ``make_dataset``, on the 224 px train folder and on the full-size originals sample.

Original's way: ``ImageDataGenerator(rescale=1/255).flow_from_directory(dir, target_size=(224,
224), batch_size=16, class_mode='binary')`` (here with shuffle=False so both sides read the same
files in the same order), the first N batches read as model.fit reads a PyDataset (``gen[i]``).
Ours: ``make_dataset`` of the same N*16 files, batch 16; the "ours" number is the second and later
epochs (decoded images cached in memory), the first epoch (decoding) is given in the notes.

    .venv/bin/python bench/bench_input_pipeline.py [--quick] [--batches 40] [--output PATH]

Writes entries ``input_pipeline_224`` and ``input_pipeline_fullsize`` (unit images/s).
"""
from __future__ import annotations

import gc

import common


def measure(folder, batches: int, args, label: str) -> dict:
    import functions_for_grad_cam as fgc

    generator_class, where = common.image_data_generator()
    batch_size = 16
    paths, targets = common.class_files(folder)
    generator = generator_class(rescale=1 / 255).flow_from_directory(
        str(folder), target_size=(224, 224), batch_size=batch_size, class_mode="binary", shuffle=False)
    batches = min(batches, len(generator))
    n_images = min(batches * batch_size, generator.samples)
    chosen = [str(folder / name) for name in generator.filenames[:n_images]]
    assert len(chosen) == n_images and set(chosen) <= set(paths)
    chosen_targets = generator.classes[:n_images].astype("float32")

    def original():
        for i in range(batches):
            x, y = generator[i]
        return x

    baseline = common.time_runs(original, args.repeats, args.warmup)

    def first_epoch():
        dataset = fgc.make_dataset(chosen, chosen_targets, batch_size=batch_size)
        for x, y in dataset.as_numpy_iterator():
            pass
        return dataset

    first = common.time_runs(first_epoch, args.repeats, args.warmup)
    gc.collect()
    cached_dataset = fgc.make_dataset(chosen, chosen_targets, batch_size=batch_size)

    def cached_epoch():
        for x, y in cached_dataset.as_numpy_iterator():
            pass

    cached = common.time_runs(cached_epoch, args.repeats, max(1, args.warmup))  # warm-up fills the cache
    rate = lambda seconds: n_images / common.median(seconds)
    notes = (f"{label}: {n_images} images ({batches} batches of {batch_size}) of {folder.name}; "
             f"median of {args.repeats} after {args.warmup} warm-up. Baseline {where} "
             f"flow_from_directory (shuffle=False, default nearest resize, 1 thread as model.fit "
             f"reads it): {spread_rate(baseline, n_images)}. Ours make_dataset (tf.data, parallel "
             f"decode, bilinear antialias resize), second+ epoch from the in-memory cache: "
             f"{spread_rate(cached, n_images)}; first epoch (decoding): {rate(first):.1f} images/s "
             f"({rate(first) / rate(baseline):.2f}x the baseline).")
    return common.make_entry(rate(baseline), rate(cached), "images/s", True, notes)


def spread_rate(seconds, n_images) -> str:
    return (f"{n_images / common.median(seconds):.1f} images/s (runs {min(seconds):.3g}-"
            f"{max(seconds):.3g} s)")


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--batches", type=int, default=None,
                        help="batches of 16 per pass (default 40 for 224 px, all 26 for full size; quick 2)")
    args = common.finish_args(parser.parse_args())
    small = 2 if args.quick else (args.batches or 40)
    full = 2 if args.quick else (args.batches or 1000)
    entries = {
        "input_pipeline_224": measure(args.data_root / "chest_xray_224" / "train", small, args, "224 px train"),
        "input_pipeline_fullsize": measure(args.data_root / "chest_xray_fullsize_sample" / "train", full, args,
                                           "full-size originals sample, train"),
    }
    common.merge_results(args.output, entries, args.quick)


if __name__ == "__main__":
    main()
