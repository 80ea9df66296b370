"""Run-to-run agreement of two full runs of the model notebook (same code, same data, same seeds).

    .venv/bin/python scripts/compare_runs.py BEFORE.json AFTER.json [--output results/rerun_agreement.json]

BEFORE and AFTER are results/metrics.json files of two runs, as paths or as REV:path in this
repository's history (e.g. 95c3495:results/metrics.json for an earlier committed run). Writes, per
family and seed, best epoch, threshold, validation ROC-AUC and test accuracy and ROC-AUC before and
after, how many values were compared, the largest absolute difference and whether all are identical
(pcx.evaluation.rerun_agreement), and the commits between the two runs' code that touch the package or the
notebooks; scripts/update_readme.py renders it into docs/reproducibility.md ("rerun" section). Runs
of different data, a quick run, and a run compared with itself (the same file, or two records with the
same scored_at and commit) are refused.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pneumonia_cxr.evaluation as evaluation
from pneumonia_cxr import jsonio

ROOT = Path(__file__).resolve().parents[1]


def read_metrics(path: Path) -> dict:
    """A model-notebook metrics dict from a file, or from ``REV:path`` in this repository's git
    history. Raises ValueError naming the problem (missing file or revision, not JSON, no models)."""
    if not path.exists() and ":" in str(path):
        shown = subprocess.run(["git", "-C", str(ROOT), "show", str(path)], capture_output=True, text=True)
        if shown.returncode != 0:
            raise ValueError(f"git show failed: {shown.stderr.strip()}")
        text = shown.stdout
    else:
        try:
            text = path.read_text()
        except OSError as error:
            raise ValueError(error.strerror or str(error)) from error
    try:
        metrics = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"not JSON ({error})") from error
    if not isinstance(metrics, dict) or not isinstance(metrics.get("models"), dict):
        raise ValueError("no 'models' object: not a results/metrics.json of the model notebook")
    return metrics


def code_changes(before: str | None, after: str | None) -> list[str] | None:
    """Commits between the two runs' code that touch the package or the notebooks (one line each), or
    None when either commit is unknown to this repository."""
    if not before or not after:
        return None
    log = subprocess.run(["git", "-C", str(ROOT), "log", "--format=%h %s", f"{before}..{after}", "--",
                          "pneumonia_cxr", "*.ipynb"], capture_output=True, text=True)
    return log.stdout.splitlines() if log.returncode == 0 else None


def run_identity(metrics: dict, path: Path) -> dict:
    """Where a run's metrics came from: its file, and when and at which commit the test set was scored."""
    last = (metrics.get("protocol", {}).get("history") or [{}])[-1]
    return {"file": str(path), "scored_at": last.get("scored_at"), "code_commit": last.get("code_commit"),
            "machine": metrics.get("machine")}


def same_run(before: dict, after: dict) -> str | None:
    """Why two run identities (:func:`run_identity`) are one run, or None when they are two: the same
    file (the same path once resolved, or the same ``REV:path``), or the same test scoring (equal,
    recorded ``scored_at`` and ``code_commit``)."""
    def where(name: str) -> str:
        path = Path(name)
        return str(path.resolve()) if path.exists() else name

    if where(before["file"]) == where(after["file"]):
        return f"the same file twice ({before['file']})"
    if before["scored_at"] and before["code_commit"] and \
            (before["scored_at"], before["code_commit"]) == (after["scored_at"], after["code_commit"]):
        return (f"two copies of one run (both scored {before['scored_at']} at commit {before['code_commit']})")
    return None


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
            runs[side] = read_metrics(path)
        except ValueError as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 1
    identities = {side: run_identity(runs[side], getattr(args, side)) for side in ("before", "after")}
    reason = same_run(identities["before"], identities["after"])
    if reason:
        print(f"a run cannot be compared with itself: {reason}; compare two runs of the model notebook",
              file=sys.stderr)
        return 1
    if runs["before"].get("quick") or runs["after"].get("quick"):
        print("a quick run is not comparable with a full run: compare two full runs", file=sys.stderr)
        return 1
    digests = [runs[side].get("dataset", {}).get("images_sha256") for side in ("before", "after")]
    if None in digests or digests[0] != digests[1]:
        print("the two runs used different images, or one record has no 'dataset.images_sha256' (the hash of the "
              "ordered content hashes of its images): not comparable", file=sys.stderr)
        return 1
    table = evaluation.rerun_agreement(runs["before"], runs["after"])
    report = dict(identities)
    report["code_changes"] = code_changes(report["before"]["code_commit"], report["after"]["code_commit"])
    report["rows"] = table.astype(object).where(table.notna(), None).to_dict(orient="records")  # full precision
    jsonio.write_json(report, args.output)
    print(table.to_string(index=False))
    print(f"{int(table['identical'].sum())} of {len(table)} rows identical; written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
