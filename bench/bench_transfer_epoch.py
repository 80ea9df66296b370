"""Frozen-base transfer model (HED VGG16 trunk + head): an epoch through the frozen base against an
epoch of the head on cached base features, and 10 epochs including the one-off feature extraction.

Original's way: ``model.fit`` of the full image-to-probability model (base frozen) on the images,
batch 16 (images given as in-memory arrays, which favours the baseline: the original also decoded
every image every epoch). Ours: ``head.fit`` on in-memory cached ``base_pool`` features (N, 6, 6,
512; the models' centre crop makes the base run at 196 px), fed as training does it, by the view
sampler of ``train_head_on_cached_features`` (one view, the clean one), batch 16, after one
``cached_features`` pass (files read and decoded, features computed and written to a fresh cache
folder).

Measured on a subset (default 64 images, quick 8) and extrapolated per image to the size of the
224 px train split; the head's epoch is timed on the subset's features tiled to --head-images
(default 1024) so that fit()'s fixed overhead does not dominate.

    .venv/bin/python bench/bench_transfer_epoch.py [--quick] [--images 64] [--output PATH]

Writes entries ``transfer_epoch`` and ``transfer_10_epochs`` (unit s, extrapolated).
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import common


def main() -> None:
    parser = common.base_parser(__doc__)
    parser.add_argument("--images", type=int, default=None, help="images through the base (default 64, quick 8)")
    parser.add_argument("--head-images", type=int, default=None, help="feature rows per head epoch (default 1024, quick 64)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the total-time entry (default 10)")
    args = common.finish_args(parser.parse_args())
    n_images = 8 if args.quick else (args.images or 64)
    n_head = 64 if args.quick else (args.head_images or 1024)
    batch_size = 16

    import keras
    import numpy as np
    import pandas as pd

    import pneumonia_cxr as pcx
    from pneumonia_cxr.training import _view_sampler

    train_dir = args.data_root / "chest_xray_224" / "train"
    paths, targets = common.class_files(train_dir)
    n_train = len(paths)
    chosen, chosen_targets = common.interleave(paths, targets, n_images)
    y = np.asarray(chosen_targets, np.float32)
    frame = pd.DataFrame({"path": chosen, "target": chosen_targets,
                          "sha256": [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in chosen]})
    keras.utils.set_random_seed(0)
    model, head = pcx.models.build_transfer_model(pcx.models.HED_BASE)
    images = pcx.pipeline.load_images(chosen)

    # Original's way: the full model (frozen base) fit on images.
    pcx.models.compile_binary_classifier(model)
    full = common.time_runs(lambda: model.fit(images, y, batch_size=batch_size, epochs=1, verbose=0),
                            args.repeats, args.warmup)

    # Ours, once: features of the images through the frozen base, into a fresh cache folder each run.
    extractor = pcx.models.feature_extractor(model)

    def extract():
        with tempfile.TemporaryDirectory() as cache_dir:
            features, loaded = pcx.training.cached_features(extractor, frame, cache_dir)
            assert not loaded
        return features

    extraction = common.time_runs(extract, args.repeats, args.warmup)
    features = extract()

    # Ours, per epoch: the head on in-memory features (tiled to n_head rows), one view per image,
    # through the view sampler that train_head_on_cached_features uses.
    reps = -(-n_head // n_images)
    head_x = np.tile(features, (reps, 1, 1, 1))[:n_head]
    head_y = np.tile(y, reps)[:n_head]
    pcx.models.compile_binary_classifier(head)
    sampler = _view_sampler(head_x[None], head_y, batch_size, seed=0)
    head_epoch = common.time_runs(lambda: head.fit(sampler, epochs=1, verbose=0), args.repeats, args.warmup)

    per_image_full = common.median(full) / n_images
    per_image_extract = common.median(extraction) / n_images
    per_image_head = common.median(head_epoch) / n_head
    epoch_full, epoch_head = per_image_full * n_train, per_image_head * n_train
    extract_all = per_image_extract * n_train
    common_notes = (f"Extrapolated per image to the {n_train} images of the 224 px train split from "
                    f"{n_images} images through the HED VGG16 base (pretrained, frozen) and {n_head} "
                    f"feature rows through the head (the {n_images} images' features tiled); median of "
                    f"{args.repeats} after {args.warmup} warm-up, batch {batch_size}. Baseline: model.fit "
                    f"of the full model on in-memory images ({per_image_full * 1e3:.1f} ms/image/epoch). "
                    f"Ours: head.fit on in-memory cached features through the view sampler "
                    f"({per_image_head * 1e3:.3f} ms/image/epoch) "
                    f"after one cached_features pass (files decoded + base forward + .npy written: "
                    f"{per_image_extract * 1e3:.1f} ms/image, {extract_all:.0f} s for the split).")
    entries = {
        "transfer_epoch": common.make_entry(epoch_full, epoch_head, "s/epoch", False,
                                            "One epoch, feature extraction excluded. " + common_notes),
        f"transfer_{args.epochs}_epochs": common.make_entry(
            args.epochs * epoch_full, extract_all + args.epochs * epoch_head, "s", False,
            f"{args.epochs} epochs; ours includes the one-off feature extraction. " + common_notes),
    }
    common.merge_results(args.output, entries, args.quick)


if __name__ == "__main__":
    main()
