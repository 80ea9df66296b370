"""Train/serve consistency as a number: the largest |p(full-size original) - p(its 224 px copy)| with
the app's default model, over the full-size originals of the official test and val splits.

Training read the data set's 224 px copies; the app decodes and resizes full-size uploads. Writes
results/train_serve_consistency.json (rendered into README.md and app/README.md by
scripts/update_readme.py).

    .venv/bin/python scripts/train_serve_consistency.py [--data-root ../shared/data] [--model FILE]
"""
from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("CHEST_XRAY_DATA_ROOT", REPO.parent / "shared" / "data")))
    parser.add_argument("--model", default=None, help="a .keras bundle (default: the app's default)")
    parser.add_argument("--output", type=Path, default=REPO / "results" / "train_serve_consistency.json")
    args = parser.parse_args()

    import pneumonia_cxr as pcx
    from app import resolve_model_path

    fullsize, small = args.data_root / "chest_xray_fullsize_sample", args.data_root / "chest_xray_224"
    pairs = pcx.evaluation.fullsize_copy_pairs(fullsize, small, splits=("test", "val"))
    if not pairs:
        sys.exit(f"error: no full-size originals with 224 px copies under {args.data_root}")
    model_path = resolve_model_path(args.model)
    model, metadata = pcx.models.load_model_bundle(model_path)
    gaps = pcx.evaluation.train_serve_gaps(model, pairs)
    threshold = float(metadata["threshold"])
    flips = int(((gaps["p_original"] >= threshold) != (gaps["p_copy"] >= threshold)).sum())
    worst = gaps.loc[gaps["abs_diff"].idxmax()]
    report = {"model": metadata["model_name"], "threshold": threshold, "n_pairs": len(gaps),
              "max_abs_diff": float(gaps["abs_diff"].max()), "median_abs_diff": float(gaps["abs_diff"].median()),
              "label_flips": flips, "worst_pair": Path(worst["original"]).relative_to(fullsize).as_posix(),
              "splits": "official test and val full-size originals",
              "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "pairs": [{**row, "original": Path(row["original"]).relative_to(fullsize).as_posix(),
                         "copy": Path(row["copy"]).relative_to(small).as_posix()}
                        for row in gaps.to_dict("records")]}
    pcx.jsonio.write_json(report, args.output)
    print(f"{report['model']}: max |dp| {report['max_abs_diff']:.4f} over {len(gaps)} pairs, {flips} label flips")


if __name__ == "__main__":
    main()
