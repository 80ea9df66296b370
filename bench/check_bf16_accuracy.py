"""Is mixed_bfloat16 training of the scratch CNN safe? Validation data only, 3 seeds per precision.

Trains the scratch CNN with the notebook's recipe (``pcx.training.SCRATCH_RECIPE``) and seeds, once in
float32 and once in mixed_bfloat16 (bfloat16 compute, float32 weights), on the same patient-grouped
split as model_deep_learning.ipynb. Runs go through the notebook's run cache (``cache/runs``), so the
float32 seeds are the notebook's own and are loaded when it has trained them. The official test split is
not read. Each trained network is evaluated in float32 on the clean validation images: log loss,
ROC-AUC, and how large its logits are (median |logit|, and Youden's J threshold as a logit).

Rule, fixed before the run: bfloat16 training is safe when its seed mean of the validation ROC-AUC is at
most 0.01 below float32's and its seed mean validation log loss at most 0.05 above. Where the CPU has no
native bfloat16 (AVX512-BF16 or AMX-BF16), bfloat16 is emulated and slow: the script says so and
trains only the float32 seeds.

    .venv/bin/python bench/check_bf16_accuracy.py [--seeds 0 1 2] [--quick] [--data-root DIR]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import common
from pneumonia_cxr import jsonio

AUC_TOLERANCE = 0.01
LOG_LOSS_TOLERANCE = 0.05
DEFAULT_OUTPUT = common.REPO / "bench" / "precision_check.json"


def seed_summary(run: dict, y_val: np.ndarray) -> dict:
    """Validation figures of one trained run: best epoch, epochs run, log loss, ROC-AUC, accuracy at
    logit 0, the median |logit| and Youden's J threshold (a logit), and training speed."""
    import pneumonia_cxr as pcx

    logits = run["view_logits"]["val"]
    metrics = pcx.evaluation.scored(y_val, logits, 0.0)
    return {"seed": run["seed"], "precision": run["result"].precision, "best_epoch": run["result"].best_epoch,
            "epochs_run": len(run["result"].history["loss"]), "seconds": round(run["result"].seconds, 1),
            "val_log_loss": round(pcx.evaluation.log_loss_of_logits(y_val, logits), 4),
            "val_roc_auc": round(metrics["roc_auc"], 4), "val_accuracy_at_0": round(metrics["accuracy"], 4),
            "median_abs_logit": round(float(np.median(np.abs(logits))), 2),
            "threshold_logit": round(pcx.evaluation.logit_threshold(y_val, logits), 2)}


def verdict(runs: dict[str, list[dict]]) -> dict:
    """The rule applied to the seed means of each precision."""
    means = {p: {k: float(np.mean([r[k] for r in rs])) for k in ("val_roc_auc", "val_log_loss")} for p, rs in runs.items()}
    if "mixed_bfloat16" not in means:
        return {"safe": None, "means": means}
    auc_drop = means["float32"]["val_roc_auc"] - means["mixed_bfloat16"]["val_roc_auc"]
    loss_rise = means["mixed_bfloat16"]["val_log_loss"] - means["float32"]["val_log_loss"]
    return {"safe": bool(auc_drop <= AUC_TOLERANCE and loss_rise <= LOG_LOSS_TOLERANCE), "means": means,
            "auc_drop": round(auc_drop, 4), "log_loss_rise": round(loss_rise, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=common.default_data_root())
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="40 images per class, 2 epochs: checks the script runs")
    parser.add_argument("--cache-dir", default="cache/runs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    import pneumonia_cxr as pcx

    subsets = pcx.experiment.experiment_subsets(args.data_root / "chest_xray_224", score_test=False, quick=args.quick)
    class_weight = pcx.dataset.compute_class_weights(subsets["train"]["target"].to_numpy())
    views = pcx.experiment.validation_views(subsets["val"], list(pcx.augmentation.VALIDATION_PERTURBATIONS))
    y_val = subsets["val"]["target"].to_numpy()
    cpu = pcx.record.cpu_description()
    precisions = ["float32", "mixed_bfloat16"] if cpu["native_bfloat16"] else ["float32"]
    runs = {}
    for precision in precisions:
        recipe = {"precision": precision} | ({"max_epochs": 2, "patience": 1} if args.quick else {})
        trained = pcx.experiment.scratch_runs(subsets, class_weight, args.seeds, views, args.cache_dir, recipe)
        runs[precision] = [seed_summary(run, y_val) for run in trained]
    report = {
        "question": "is mixed_bfloat16 training of the scratch CNN safe (validation only)?",
        "rule": f"seed mean val ROC-AUC at most {AUC_TOLERANCE} below float32 and seed mean val log loss at most "
                f"{LOG_LOSS_TOLERANCE} above",
        **verdict(runs),
        "note": None if cpu["native_bfloat16"] else "no native bfloat16 on this CPU: only float32 trained",
        "setup": {"train_n": len(subsets["train"]), "val_n": len(subsets["val"]), "seeds": args.seeds,
                  "recipe": pcx.training.SCRATCH_RECIPE, "quick": args.quick,
                  "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "machine": common.machine_info(),
        "runs": runs,
    }
    jsonio.write_json(report, args.output)
    print(json.dumps({k: report.get(k) for k in ("safe", "auc_drop", "log_loss_rise", "means")}))
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
