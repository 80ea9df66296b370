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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import functions_for_grad_cam as F  # noqa: E402


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
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--families", nargs="+", default=["hed_vgg16_transfer", "xception_imagenet_transfer"])
    args = parser.parse_args()
    perturbations = list(F.VALIDATION_PERTURBATIONS)
    index = F.readable(F.build_index(args.data_dir))
    split = F.patient_grouped_split(index, val_fraction=0.1, seed=args.split_seed)
    subsets = {name: split[split["subset"] == name].reset_index(drop=True) for name in F.SPLITS}
    policy = F.training_precision(args.precision)
    recipe = F.XCEPTION_RECIPES[json.loads(Path(args.recipe_file).read_text())["chosen"]]
    weights = F.resolve_xception_weights(args.xception_weights)
    jobs = {
        "hed_vgg16_transfer": (lambda: F.build_transfer_model(F.HED_BASE)[0], F.feature_extractor, args.hed_views),
        "xception_imagenet_transfer": (lambda: F.build_xception_transfer(weights, fine_tune=recipe["fine_tune"])[0],
                                       F.tail_input_extractor, args.xception_views),
    }
    for name in args.families:
        build, cut, views = jobs[name]
        start = time.perf_counter()
        _, extractor = F.frozen_extractor(build, cut, policy)
        F.frozen_features(extractor, subsets, args.cache_dir, views, args.view_seed, perturbations)
        print(f"{name}: {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
