"""Does training the scratch CNN in mixed_bfloat16 keep its accuracy? Validation data only.

Trains the scratch CNN twice on the same patient-grouped split as model_deep_learning.ipynb, from
the same initial weights, the same data order and the same augmentation: once in float32, once in
mixed_bfloat16 (bfloat16 compute, float32 weights), both with the fused BatchNorm, class weights,
Adam 1e-3, batch 16, a fixed number of epochs, and the weights of the epoch of lowest validation
loss kept. Each trained model is then evaluated in float32 on the validation split. The official
test split is not read.

Rule, fixed before the run: mixed_bfloat16 keeps accuracy when its validation ROC-AUC is at most
0.01 below float32's and its validation accuracy (threshold 0.5) at most 0.02 below. One seed per
precision: seed-to-seed spread of the same precision is of the same order, so this rules out a
gross loss, not a small one.

    .venv/bin/python bench/check_bf16_accuracy.py [--epochs 6] [--seed 42] [--quick]
        [--data-root DIR] [--output bench/precision_check.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import common

AUC_TOLERANCE = 0.01
ACCURACY_TOLERANCE = 0.02
DEFAULT_OUTPUT = common.REPO / "bench" / "precision_check.json"


def train_and_validate(fgc, subsets: dict, class_weight: dict, precision: str, epochs: int, seed: int) -> dict:
    """Train the scratch CNN in ``precision`` from seed ``seed``; validation metrics of the kept epoch."""
    import keras

    keras.utils.set_random_seed(seed)  # same initial weights, shuffling and augmentation for each precision
    train = subsets["train"]
    train_ds = fgc.make_dataset(train["path"], train["target"].to_numpy(), 16, shuffle=True, seed=seed,
                                augment=fgc.build_augmentation(seed))
    val = subsets["val"]
    val_ds = fgc.make_dataset(val["path"], val["target"].to_numpy(), 16)
    model, result = fgc.train_scratch_cnn(train_ds, val_ds, class_weight, epochs, patience=epochs,
                                          precision=precision)
    probabilities = fgc.predict_probabilities(model, fgc.make_dataset(val["path"], batch_size=32, cache=False))
    metrics = fgc.binary_metrics(val["target"].to_numpy(), probabilities, 0.5)
    return {"precision": result.precision, "best_epoch": result.best_epoch, "seconds": round(result.seconds, 1),
            "images_per_second": round(len(train) * len(result.history["loss"]) / result.seconds, 1),
            "val_at_best_epoch": {k: round(float(v), 4) for k, v in metrics.items()},
            "history": {k: [round(float(x), 4) for x in v] for k, v in result.history.items()}}


def markdown(report: dict) -> str:
    """The two runs as a markdown table, then the rule and its verdict."""
    import pandas as pd

    import functions_for_grad_cam as fgc

    rows = [{"training precision": name, "kept epoch": run["best_epoch"],
             "val ROC-AUC": run["val_at_best_epoch"]["roc_auc"], "val accuracy (0.5)": run["val_at_best_epoch"]["accuracy"],
             "val sensitivity": run["val_at_best_epoch"]["sensitivity"],
             "val specificity": run["val_at_best_epoch"]["specificity"],
             "min val loss": min(run["history"]["val_loss"]), "training images/s": run["images_per_second"]}
            for name, run in report["runs"].items()]
    setup = report["setup"]
    verdict = "keeps" if report["keeps_accuracy"] else "does NOT keep"
    return (fgc.markdown_table(pd.DataFrame(rows).round(3)) +
            f"\n\nRule ({report['rule']}): mixed_bfloat16 **{verdict}** the accuracy (AUC drop "
            f"{report['auc_drop']:+.3f}, accuracy drop {report['accuracy_drop']:+.3f}). {setup['epochs']} epochs, "
            f"train {setup['train_n']} / validation {setup['val_n']} images, seed {setup['seed']}, one run per "
            f"precision, {report['machine']['cpu']}, {setup['date']}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=common.default_data_root())
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="40 images per class, 1 epoch: checks the script runs")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    import functions_for_grad_cam as fgc

    index = fgc.readable(fgc.build_index(args.data_root / "chest_xray_224"))
    index = index[index["split"] != "test"]  # the test split is never read here
    if args.quick:
        index = fgc.subsample_per_class(index, 40, seed=args.seed)
        args.epochs = 1
    split = fgc.patient_grouped_split(index, val_fraction=0.1, seed=args.seed)
    subsets = {name: split[split["subset"] == name].reset_index(drop=True) for name in ("train", "val")}
    class_weight = fgc.compute_class_weights(subsets["train"]["target"])

    runs = {precision: train_and_validate(fgc, subsets, class_weight, precision, args.epochs, args.seed)
            for precision in ("float32", "mixed_bfloat16")}
    reference, candidate = (runs[p]["val_at_best_epoch"] for p in ("float32", "mixed_bfloat16"))
    auc_drop = reference["roc_auc"] - candidate["roc_auc"]
    accuracy_drop = reference["accuracy"] - candidate["accuracy"]
    report = {
        "question": "does mixed_bfloat16 training keep the scratch CNN's validation accuracy?",
        "rule": f"val ROC-AUC drop <= {AUC_TOLERANCE} and val accuracy (threshold 0.5) drop <= {ACCURACY_TOLERANCE}",
        "keeps_accuracy": bool(auc_drop <= AUC_TOLERANCE and accuracy_drop <= ACCURACY_TOLERANCE),
        "auc_drop": round(auc_drop, 4), "accuracy_drop": round(accuracy_drop, 4),
        "setup": {"train_n": len(subsets["train"]), "val_n": len(subsets["val"]), "epochs": args.epochs,
                  "seed": args.seed, "quick": args.quick,
                  "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "machine": common.machine_info(), "runs": runs,
    }
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("keeps_accuracy", "auc_drop", "accuracy_drop")}),
          {p: (r["val_at_best_epoch"]["roc_auc"], r["val_at_best_epoch"]["accuracy"], r["images_per_second"])
           for p, r in runs.items()})
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
