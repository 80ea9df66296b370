"""Train the scratch CNN's seeds ahead of model_deep_learning.ipynb, into the run cache it loads.

The notebook trains whatever is missing itself; this script only lets the seeds train in a second
process (e.g. while the frozen bases compute their features). It calls the same package functions with
the notebook's defaults, so the cache keys (:mod:`pneumonia_cxr.runs`) match. It reads no test file.

    .venv/bin/python scripts/train_runs.py --data-dir ../shared/data/chest_xray_224 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import sys

from pneumonia_cxr import augmentation, dataset, experiment, runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cache-dir", default=str(runs.DEFAULT_RUN_CACHE))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    subsets = experiment.experiment_subsets(args.data_dir, score_test=False, quick=args.quick)
    class_weight = dataset.compute_class_weights(subsets["train"]["target"].to_numpy())
    views = experiment.validation_views(subsets["val"], list(augmentation.VALIDATION_PERTURBATIONS))
    for run in experiment.scratch_runs(subsets, class_weight, args.seeds, views, args.cache_dir, verbose=2):
        result = run["result"]
        print(f"seed {run['seed']}: {'loaded' if run['loaded'] else 'trained'}, best epoch {result.best_epoch} of "
              f"{len(result.history['loss'])}, min val loss {min(result.history['val_loss']):.4f}, "
              f"{result.seconds / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
