"""Fill the frozen-feature cache (cache/features) of model_deep_learning.ipynb ahead of the notebook.

The notebook computes the same entries itself when they are missing; this script only lets the
frozen bases' passes run on a second process while the notebook trains the scratch CNN (whose
training keeps about one of two cores busy). It builds the extractors, the split and the views
exactly as the notebook does with its default parameters, so the cache keys
(``extractor_identity`` of the architecture and weight bytes, the view, the images) match.

    .venv/bin/python scripts/precompute_features.py --data-dir ../shared/data/chest_xray_224 \\
        --xception-weights ../shared/weights/xception_imagenet_notop.weights.h5
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pneumonia_cxr as pcx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--xception-weights", default=None)
    parser.add_argument("--recipe-file", default="results/xception_recipe_choice.json")
    parser.add_argument("--cache-dir", default="cache/features")
    parser.add_argument("--hed-views", type=int, default=0)
    parser.add_argument("--xception-views", type=int, default=1)
    parser.add_argument("--view-seed", type=int, default=1000)
    parser.add_argument("--split-seed", type=int, default=42)
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--families", nargs="+", default=["face_dlib_resnet", "xception_imagenet_transfer"],
                        choices=["face_dlib_resnet", "hed_vgg16_transfer", "xception_imagenet_transfer"])
    args = parser.parse_args()
    perturbations = list(pcx.augmentation.VALIDATION_PERTURBATIONS)
    subsets = pcx.experiment.experiment_subsets(args.data_dir, score_test=True, split_seed=args.split_seed)
    policy = pcx.training.training_precision(args.precision)
    chosen = json.loads(Path(args.recipe_file).read_text())["chosen"]
    jobs = {
        "hed_vgg16_transfer": lambda: (pcx.training.frozen_extractor(
            lambda: pcx.models.build_transfer_model(pcx.models.HED_BASE)[0], pcx.models.feature_extractor, policy)[1],
            args.hed_views),
        "xception_imagenet_transfer": lambda: (pcx.experiment.xception_extractor(
            pcx.models.resolve_xception_weights(args.xception_weights), chosen, policy)[1], args.xception_views),
        "face_dlib_resnet": lambda: (pcx.face.FaceDescriptorExtractor(), 0),  # dlib: float32, no augmented views
    }
    for name in args.families:
        start = time.perf_counter()
        extractor, views = jobs[name]()
        pcx.training.frozen_features(extractor, subsets, args.cache_dir, views, args.view_seed, perturbations)
        print(f"{name}: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
