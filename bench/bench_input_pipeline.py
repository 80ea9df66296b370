"""Input pipeline, like for like: images per second delivered by the original's ImageDataGenerator
and by our tf.data ``make_dataset``, on the same files, batches of 16, no shuffling, read as
model.fit reads them (the generator's batches ``gen[i]`` one after another; our dataset iterated).

Three comparisons, each on both the 224 px train split and the full-size originals sample:

(i) decoding epoch, every file read and decoded on both sides. Baseline:
    ``ImageDataGenerator(rescale=1/255).flow_from_directory(..., target_size=(224, 224))`` (one
    thread, nearest resize). Ours: ``make_dataset(cache=False)`` (parallel decode on all cores,
    bilinear antialias resize, skipped for images already 224 x 224).
(ii) steady state, the decoded images already in memory on both sides. Baseline:
    ``ImageDataGenerator(rescale=1/255).flow(x)`` on an in-memory float32 array of its own decoded
    images. Ours: the second and later epochs of ``make_dataset`` (in-memory cache).
(iii) a later run's first epoch: ours ``make_dataset(decoded_cache_dir=..., cache=False)`` reading
    the persistent decoded cache that an earlier run filled, against the baseline's decoding epoch.

The functions are timed in turn (baseline, ours, baseline, ours ...; common.time_interleaved) so that
both sides see the same load on a shared machine; the 1-minute load average before and after is in
the notes. An epoch is timed from the first to the last batch; building the generator or the dataset
(listing files; hashing files, tracing) is timed apart and given in the notes, as is a first run that
fills an empty decoded cache (building, decoding and writing included). The files are read from the
page cache on both sides (they are read once before timing).

    .venv/bin/python bench/bench_input_pipeline.py [--quick] [--memory-images 640] [--output PATH]

Writes ``input_pipeline_224`` and ``input_pipeline_fullsize`` (steady state, ii),
``input_pipeline_decoding_epoch`` (i) and ``input_pipeline_first_epoch`` (iii) (224 px train split;
full-size sample in the notes); unit images/s.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable
from pathlib import Path

import numpy as np

import common

BATCH_SIZE = 16
MEMORY_RUNS = frozenset({"baseline_memory", "ours_memory", "ours_memory_shuffled",
                         "ours_memory_shuffled_decoded"})  # on n_memory images


@dataclass
class Measured:
    """Seconds per timed round of each measured function of one data set, and its description."""

    label: str
    n_decode: int
    n_memory: int
    seconds: dict[str, list[float]]
    load_before: float
    load_after: float
    max_difference: float  # max |baseline - ours| over the first decoding batch, in [0, 1] units

    def rate(self, name: str) -> float:
        """Images per second of the median round of ``name``."""
        n_images = self.n_memory if name in MEMORY_RUNS else self.n_decode
        return n_images / common.median(self.seconds[name])

    def ratio(self, ours: str, baseline: str) -> float:
        return self.rate(ours) / self.rate(baseline)

    def describe(self, name: str) -> str:
        """'1234 images/s (runs 0.1-0.2 s)' of one measured function."""
        runs = self.seconds[name]
        return f"{self.rate(name):.0f} images/s (runs {min(runs):.3g}-{max(runs):.3g} s)"

    def conditions(self) -> str:
        return (f"{self.label}: load average (1 min) {self.load_before:.2f} before, "
                f"{self.load_after:.2f} after")


def link_folder(paths: list[str], targets: list[int], root: Path) -> Path:
    """``root/{NORMAL,PNEUMONIA}`` of symbolic links to ``paths`` (class from ``targets``), so that
    flow_from_directory lists exactly these files; returns ``root``."""
    for path, target in zip(paths, targets):
        folder = root / common.CLASS_NAMES[target]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / Path(path).name).symlink_to(path)
    return root


def generator_over(folder: Path, rescale: float | None):
    """The original's ``flow_from_directory`` over ``folder`` (224 x 224, batch 16, binary, no shuffle)."""
    generator_class, _ = common.image_data_generator()
    return generator_class(rescale=rescale).flow_from_directory(
        str(folder), target_size=(224, 224), batch_size=BATCH_SIZE, class_mode="binary", shuffle=False)


def read_all(batches) -> None:
    """Read every batch of a generator (``gen[i]`` in order, as model.fit reads a PyDataset) or of a
    tf.data dataset."""
    if hasattr(batches, "as_numpy_iterator"):
        for _ in batches.as_numpy_iterator():
            pass
    else:
        for i in range(len(batches)):
            batches[i]


def generator_order(generator, originals: dict[str, str]) -> tuple[list[str], np.ndarray]:
    """(original paths, float32 targets) in the order the generator reads its (linked) files."""
    return [originals[Path(p).name] for p in generator.filepaths], generator.classes.astype("float32")


def measure(folder: Path, n_decode: int | None, n_memory: int | None, args, label: str,
            work: Path) -> Measured:
    """Run the interleaved comparison on ``folder`` (train split with NORMAL/ and PNEUMONIA/):
    decoding on ``n_decode`` files (None: all), in-memory on ``n_memory`` files."""
    import pneumonia_cxr as pcx

    all_paths, all_targets = common.class_files(folder)
    n_decode = min(n_decode or len(all_paths), len(all_paths))
    n_memory = min(n_memory or len(all_paths), n_decode)
    paths, targets = common.interleave(all_paths, all_targets, n_decode)
    originals = {Path(p).name: p for p in paths}
    decode_folder = link_folder(paths, targets, work / "decode")
    memory_folder = link_folder(paths[:n_memory], targets[:n_memory], work / "memory")

    generator = generator_over(decode_folder, 1 / 255)
    ordered, ordered_targets = generator_order(generator, originals)
    raw = generator_over(memory_folder, None)
    memory_paths, memory_targets = generator_order(raw, originals)
    x = np.concatenate([raw[i][0] for i in range(len(raw))])  # float32 (N, 224, 224, 3) in [0, 255]
    generator_class, _ = common.image_data_generator()
    in_memory = generator_class(rescale=1 / 255).flow(x, memory_targets, batch_size=BATCH_SIZE, shuffle=False)

    decoding = pcx.pipeline.make_dataset(ordered, ordered_targets, BATCH_SIZE, cache=False)
    cached = pcx.pipeline.make_dataset(memory_paths, memory_targets, BATCH_SIZE)
    shuffled = pcx.pipeline.make_dataset(memory_paths, memory_targets, BATCH_SIZE, shuffle=True)
    filled = work / "decoded"
    read_all(pcx.pipeline.make_dataset(ordered, ordered_targets, BATCH_SIZE, cache=False, decoded_cache_dir=filled))
    from_decoded_cache = pcx.pipeline.make_dataset(ordered, ordered_targets, BATCH_SIZE, cache=False,
                                          decoded_cache_dir=filled)
    shuffled_decoded = pcx.pipeline.make_dataset(memory_paths, memory_targets, BATCH_SIZE, shuffle=True,
                                        decoded_cache_dir=filled)
    difference = float(np.abs(generator[0][0] - next(decoding.as_numpy_iterator())[0]).max())
    fresh = iter(range(10 ** 6))

    def first_run() -> None:
        """A first run: an empty decoded cache, filled while reading (setup included)."""
        folder_ = work / f"empty-{next(fresh)}"
        read_all(pcx.pipeline.make_dataset(ordered, ordered_targets, BATCH_SIZE, cache=False, decoded_cache_dir=folder_))
        shutil.rmtree(folder_)

    functions = {
        "baseline_decoding": lambda: read_all(generator),
        "ours_decoding": lambda: read_all(decoding),
        "ours_decoded_cache": lambda: read_all(from_decoded_cache),
        "baseline_memory": lambda: read_all(in_memory),
        "ours_memory": lambda: read_all(cached),
        "ours_memory_shuffled": lambda: read_all(shuffled),
        "ours_memory_shuffled_decoded": lambda: read_all(shuffled_decoded),
        "baseline_setup": lambda: generator_over(decode_folder, 1 / 255),
        "ours_setup": lambda: pcx.pipeline.make_dataset(ordered, ordered_targets, BATCH_SIZE, cache=False,
                                               decoded_cache_dir=filled),
        "ours_first_run": first_run,
    }
    load_before = common.load_average()
    seconds = common.time_interleaved(functions, args.repeats, args.warmup)
    return Measured(label, len(ordered), len(memory_paths), seconds, load_before, common.load_average(), difference)


def common_notes(m: Measured, args) -> str:
    return (f"{m.label}; batches of {BATCH_SIZE}, no shuffling; median of {args.repeats} rounds after "
            f"{args.warmup} warm-up, baseline and ours timed in turn; {m.conditions()}.")


def verdict(ratio: float, target: float) -> str:
    return f"target >= {target:g}x {'met' if ratio >= target else 'MISSED'} ({ratio:.2f}x)"


def steady_state_entry(m: Measured, args) -> dict:
    """(ii): in-memory epochs on both sides."""
    notes = (f"Steady state, decoded images in memory on both sides, {m.n_memory} images; "
             f"{common_notes(m, args)} Baseline ImageDataGenerator(rescale=1/255).flow on an in-memory "
             f"float32 array of its decoded images: {m.describe('baseline_memory')}. Ours make_dataset, "
             f"second+ epoch from its in-memory cache: {m.describe('ours_memory')}; "
             f"{verdict(m.ratio('ours_memory', 'baseline_memory'), 3)}. Ours shuffled (the training "
             f"case, batches re-formed every epoch from float32 images in memory): "
             f"{m.describe('ours_memory_shuffled')} ({m.ratio('ours_memory_shuffled', 'baseline_memory'):.2f}x); "
             f"shuffled with decoded_cache_dir (the entries' uint8 bytes in memory, checked and made float32 "
             f"batch by batch): {m.describe('ours_memory_shuffled_decoded')} "
             f"({m.ratio('ours_memory_shuffled_decoded', 'baseline_memory'):.2f}x).")
    return common.make_entry(m.rate("baseline_memory"), m.rate("ours_memory"), "images/s", True, notes)


def decoding_summary(m: Measured) -> str:
    """The decoding epochs of one data set, for notes."""
    return (f"baseline flow_from_directory {m.describe('baseline_decoding')}, ours make_dataset(cache=False) "
            f"{m.describe('ours_decoding')}: {verdict(m.ratio('ours_decoding', 'baseline_decoding'), 1)}; "
            f"max |baseline - ours| on the first batch {m.max_difference:.3g}")


def first_epoch_summary(m: Measured) -> str:
    """A later run's first epoch and the setups of one data set, for notes."""
    setup = {name: common.median(m.seconds[name]) for name in ("baseline_setup", "ours_setup")}
    with_setup = ((setup["baseline_setup"] + common.median(m.seconds["baseline_decoding"]))
                  / (setup["ours_setup"] + common.median(m.seconds["ours_decoded_cache"])))
    first_run = common.median(m.seconds["ours_first_run"])
    baseline_run = setup["baseline_setup"] + common.median(m.seconds["baseline_decoding"])
    return (f"ours from the decoded cache {m.describe('ours_decoded_cache')} against the baseline's "
            f"decoding epoch {m.describe('baseline_decoding')}: "
            f"{verdict(m.ratio('ours_decoded_cache', 'baseline_decoding'), 3)}. Setup: baseline "
            f"flow_from_directory {setup['baseline_setup']:.3g} s, ours make_dataset (hashing the files, "
            f"tracing) {setup['ours_setup']:.3g} s; setup + first epoch {with_setup:.2f}x the baseline's. "
            f"A first run filling an empty decoded cache (setup, decode, write): {first_run:.3g} s, "
            f"{baseline_run / first_run:.2f}x the baseline's setup + decoding epoch")


def both_sizes(small: Measured, full: Measured, summary: Callable[[Measured], str]) -> str:
    """``summary`` of the 224 px measurement, then of the full-size sample with its conditions."""
    return (f"224 px: {summary(small)}. Full-size sample ({full.n_decode} images; {full.conditions()}): "
            f"{summary(full)}")


def decoding_entry(small: Measured, full: Measured, args) -> dict:
    """(i): decoding epochs, 224 px as the value, full-size in the notes."""
    notes = (f"Decoding epoch, every file read and decoded, {small.n_decode} images; {common_notes(small, args)} "
             f"{both_sizes(small, full, decoding_summary)}. Ours decodes in parallel (tf.data, all "
             f"cores), keeps grey images in one channel and skips the resize of images already 224 x 224 "
             f"(the identity, bit for bit); the baseline decodes on one thread.")
    return common.make_entry(small.rate("baseline_decoding"), small.rate("ours_decoding"), "images/s", True, notes)


def first_epoch_entry(small: Measured, full: Measured, args) -> dict:
    """(iii): a later run's first epoch from the persistent decoded cache."""
    notes = (f"First epoch of a later run, reading the persistent decoded cache "
             f"(make_dataset(decoded_cache_dir=..., cache=False), filled by an earlier run; uint8, one "
             f"file per image content, grey stored as 1 channel), {small.n_decode} images; "
             f"{common_notes(small, args)} {both_sizes(small, full, first_epoch_summary)}.")
    return common.make_entry(small.rate("baseline_decoding"), small.rate("ours_decoded_cache"), "images/s",
                             True, notes)


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--memory-images", type=int, default=None,
                        help="images held in memory for the steady state of the 224 px set (default 640; quick 32)")
    parser.add_argument("--decode-images", type=int, default=None,
                        help="images decoded per epoch (default all of the train split; quick 32)")
    args = common.finish_args(parser.parse_args())
    n_decode = 32 if args.quick else args.decode_images
    n_memory = 32 if args.quick else (args.memory_images or 640)
    with tempfile.TemporaryDirectory(prefix="bench_input_") as work:
        small = measure(args.data_root / "chest_xray_224" / "train", n_decode, n_memory, args,
                        "224 px train split", Path(work) / "224")
        full = measure(args.data_root / "chest_xray_fullsize_sample" / "train", n_decode, n_decode, args,
                       "full-size originals sample, train", Path(work) / "fullsize")
    entries = {
        "input_pipeline_224": steady_state_entry(small, args),
        "input_pipeline_fullsize": steady_state_entry(full, args),
        "input_pipeline_decoding_epoch": decoding_entry(small, full, args),
        "input_pipeline_first_epoch": first_epoch_entry(small, full, args),
    }
    common.merge_results(args.output, entries, args.quick)


if __name__ == "__main__":
    main()
