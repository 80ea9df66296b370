"""Choose how the Xception (ImageNet) transfer model is trained, on validation data only.

Same patient-grouped split as model_deep_learning.ipynb (official train + val re-split 90/10 by
patient, seed 42); the official test split is not used (its files are only indexed). The model's
centre crop (224 -> 196 px) comes first, as in the notebook. The frozen base's activations entering
``block14_sepconv1`` (N, 6, 6, 1024), of the clean images only (no augmented views), are computed
once (cached in ``--cache-dir``, keyed by the extractor's architecture and weight bytes, see
``frozen_features``), then one seed of each candidate recipe trains the model's tail on them with
class weights and early stopping on validation loss:

- ``head``: base frozen, only global-average-pooling -> Dropout 0.2 -> Dense 1 trains (Adam 1e-3);
- ``block14_lr1e-4`` / ``block14_lr1e-5``: the exit flow's last block (two separable convolutions;
  BatchNorm stays in inference mode) trains with the head (Adam 1e-4 / 1e-5).

Rule, fixed before the run: the recipe with the lowest validation loss (binary cross-entropy of the
restored best epoch) is used by the notebook; its best epoch count is reported. Also reported:
validation ROC-AUC, accuracy at the validation-chosen logit threshold, seconds per epoch.

    .venv/bin/python scripts/choose_xception_recipe.py [--data-dir DIR] [--weights FILE|imagenet]
        [--cache-dir cache/features] [--output FILE] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get("CHEST_XRAY_DIR", str(REPO.parent / "shared/data/chest_xray_224")))
    parser.add_argument("--weights", default=None, help='"imagenet" or a weights file (default $XCEPTION_WEIGHTS)')
    parser.add_argument("--cache-dir", default=str(REPO / "cache" / "features"))
    parser.add_argument("--output", default=None,
                        help="default results/xception_recipe_choice.json (what the notebook reads); "
                             "build/quick/xception_recipe_choice.json with --quick")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="40 images per split and class, 2 epochs")
    args = parser.parse_args()
    if args.output is None:
        args.output = str(REPO / ("build/quick" if args.quick else "results") / "xception_recipe_choice.json")

    import pneumonia_cxr as pcx

    index = pcx.dataset.decodable(pcx.dataset.build_index(args.data_dir, splits=("train", "val")))  # no test file
    if args.quick:
        index = pcx.dataset.subsample_per_class(index, 40, seed=args.seed)
    split = pcx.dataset.patient_grouped_split(index, val_fraction=0.1, seed=args.seed)
    subsets = {name: split[split["subset"] == name].reset_index(drop=True) for name in ("train", "val")}
    targets = {name: frame["target"].to_numpy() for name, frame in subsets.items()}
    class_weight = pcx.dataset.compute_class_weights(targets["train"])
    weights = pcx.models.resolve_xception_weights(args.weights)
    weights_id = pcx.models.weights_identity(weights)  # for the report; the cache keys hash the extractor itself
    model, _ = pcx.models.build_xception_transfer(weights, seed=args.seed)
    # clean views only: features["train"] is (1, N, 6, 6, 1024), features["val"] (N_val, 6, 6, 1024)
    features, feature_seconds = pcx.training.frozen_features(pcx.models.tail_input_extractor(model), subsets, args.cache_dir)
    print(f"features: {feature_seconds:.0f} s (0 = from cache)", flush=True)

    runs = {}
    for name, recipe in pcx.training.XCEPTION_RECIPES.items():
        fine_tune, learning_rate = recipe["fine_tune"], recipe["learning_rate"]
        epochs, patience = recipe["max_epochs"], recipe["patience"]
        if args.quick:
            epochs, patience = 2, 1
        pcx.training.seed_everything(args.seed)
        model, tail = pcx.models.build_xception_transfer(weights, fine_tune=fine_tune, seed=args.seed)
        result = pcx.training.train_head_on_cached_features(tail, features, targets, class_weight, epochs, patience,
                                                 batch_size=32, learning_rate=learning_rate, seed=args.seed,
                                                 verbose=0)
        val_logits = pcx.training.predict_logits(tail, features["val"])
        threshold = pcx.evaluation.logit_threshold(targets["val"], val_logits)
        metrics = pcx.evaluation.scored(targets["val"], val_logits, threshold)
        runs[name] = {"fine_tune": fine_tune, "learning_rate": learning_rate, "max_epochs": epochs,
                      "patience": patience, "best_epoch": result.best_epoch,
                      "epochs_run": len(result.history["loss"]),
                      "min_val_loss": float(min(result.history["val_loss"])),
                      "seconds_per_epoch": result.seconds / len(result.history["loss"]),
                      "val_roc_auc": metrics["roc_auc"], "val_accuracy": metrics["accuracy"],
                      "val_threshold_logit": threshold}
        print(name, json.dumps(runs[name]), flush=True)
    chosen = min(runs, key=lambda name: runs[name]["min_val_loss"])
    report = {"rule": "lowest validation loss (restored best epoch); validation split only, test not read",
              "chosen": chosen, "recipes": runs, "seed": args.seed, "quick": args.quick,
              "train_n": len(subsets["train"]), "val_n": len(subsets["val"]),
              "feature_seconds": feature_seconds, "weights": weights_id,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    pcx.jsonio.write_json(report, args.output)
    print(f"chosen: {chosen}")


if __name__ == "__main__":
    main()
