"""Train families' seeds ahead of model_deep_learning.ipynb, into the run cache it loads.

The notebook trains whatever is missing itself; this script only lets runs train in another process
(e.g. the scratch CNN while the frozen bases compute their features). It calls the same package
functions with the notebook's defaults (``pcx.experiment``), so the cache keys (:mod:`pneumonia_cxr.runs`)
match. It reads no test file.

    .venv/bin/python scripts/train_runs.py --data-dir ../shared/data/chest_xray_224 --families scratch_cnn \\
        [--xception-weights FILE] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pneumonia_cxr as pcx

FAMILIES = ("scratch_cnn", "face_dlib_resnet", "xception_imagenet_transfer")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(pcx.experiment.SEEDS))
    parser.add_argument("--xception-weights", default=None)
    parser.add_argument("--recipe-file", default="results/xception_recipe_choice.json")
    parser.add_argument("--feature-cache", default="cache/features")
    parser.add_argument("--cache-dir", default=str(pcx.runs.DEFAULT_RUN_CACHE))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    perturbations = list(pcx.augmentation.VALIDATION_PERTURBATIONS)
    subsets = pcx.experiment.experiment_subsets(args.data_dir, score_test=False, quick=args.quick)
    class_weight = pcx.dataset.compute_class_weights(subsets["train"]["target"].to_numpy())
    for family in args.families:
        if family == "scratch_cnn":
            views = pcx.experiment.validation_views(subsets["val"], perturbations)
            runs = pcx.experiment.scratch_runs(subsets, class_weight, args.seeds, views, args.cache_dir, verbose=2)
        elif family == "face_dlib_resnet":
            runs = pcx.experiment.face_family(subsets, class_weight, args.seeds, pcx.experiment.HEAD_RECIPE, perturbations,
                                              args.feature_cache, args.cache_dir)["runs"]
        else:
            weights = pcx.models.resolve_xception_weights(args.xception_weights)
            chosen = json.loads(Path(args.recipe_file).read_text())["chosen"]
            runs = pcx.experiment.xception_family(
                subsets, class_weight, args.seeds, weights, chosen, pcx.experiment.XCEPTION_EPOCHS,
                pcx.experiment.XCEPTION_PATIENCE, pcx.experiment.XCEPTION_VIEWS, pcx.experiment.VIEW_SEED, perturbations,
                args.feature_cache, args.cache_dir)["runs"]
        for run in runs:
            result = run["result"]
            print(f"{family} seed {run['seed']}: {'loaded' if run['loaded'] else 'trained'}, best epoch "
                  f"{result.best_epoch} of {len(result.history['loss'])}, min val loss "
                  f"{min(result.history['val_loss']):.4f}, {result.seconds / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
