"""Run-to-run agreement of two full runs of the model notebook (same code, same data, same seeds).

    .venv/bin/python scripts/compare_runs.py BEFORE.json AFTER.json [--output results/rerun_agreement.json]

BEFORE and AFTER are results/metrics.json files of two runs, as paths or as REV:path in this
repository's history (e.g. 95c3495:results/metrics.json for an earlier committed run). Writes, per
family and seed present in both, best epoch, threshold, validation ROC-AUC and test accuracy and
ROC-AUC before and after, the largest absolute difference and whether every field is identical
(F.rerun_agreement); scripts/update_readme.py renders it into the README ("rerun" section).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pneumonia_cxr.evaluation as evaluation  # noqa: E402


def read_metrics(path: Path) -> str:
    """The text of a metrics file, or of ``REV:path`` in this repository's git history."""
    if not path.exists() and ":" in str(path):
        return subprocess.run(["git", "-C", str(ROOT), "show", str(path)], capture_output=True, text=True,
                              check=True).stdout
    return path.read_text()


def run_identity(metrics: dict, path: Path) -> dict:
    """Where a run's metrics came from: its file, and when and at which commit the test set was scored."""
    last = metrics.get("protocol", {}).get("history", [{}])[-1]
    return {"file": str(path), "scored_at": last.get("scored_at"), "code_commit": last.get("code_commit"),
            "machine": metrics.get("machine")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "rerun_agreement.json")
    args = parser.parse_args()
    runs = {}
    for side in ("before", "after"):
        path = getattr(args, side)
        try:
            runs[side] = json.loads(read_metrics(path))
            runs[side]["models"]
        except (OSError, ValueError, KeyError, subprocess.CalledProcessError) as error:
            print(f"{path}: not a results/metrics.json of the model notebook ({error})", file=sys.stderr)
            return 1
    if runs["before"].get("quick") or runs["after"].get("quick"):
        print("a quick run is not comparable with a full run: compare two full runs", file=sys.stderr)
        return 1
    table = evaluation.rerun_agreement(runs["before"], runs["after"])
    report = {side: run_identity(runs[side], getattr(args, side)) for side in ("before", "after")}
    report["rows"] = json.loads(table.to_json(orient="records"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(table.to_string(index=False))
    print(f"{int(table['identical'].sum())} of {len(table)} rows identical; written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
