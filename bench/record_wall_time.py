"""Hook for wall times of whole runs (e.g. the full reproduction): time a command, or take seconds
measured elsewhere, and merge an entry {"ours": seconds, "unit": "s", "baseline": null unless
given} into the results file.

    .venv/bin/python bench/record_wall_time.py --name reproduction_wall_time -- \\
        .venv/bin/python -m papermill model_deep_learning.ipynb out.ipynb
    .venv/bin/python bench/record_wall_time.py --name reproduction_wall_time --seconds 5400 \\
        --notes "all notebooks, full data"

Options: --name (default reproduction_wall_time), --seconds (record without running a command),
--baseline SECONDS (the original's time, if known: then ratio is filled), --caches (what the caches
held when the run started: empty, partly filled or filled), --scope TEXT (what the run covered,
where less than the whole job), --condition TEXT (repeatable: what a
reader needs to judge the time, shown beside the budget verdict in the README), --commit and
--measured-at (for a run timed elsewhere), --notes, --output.
Exits with the command's exit code; a failed command is not recorded.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

import common


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="reproduction_wall_time")
    parser.add_argument("--seconds", type=float, default=None, help="wall seconds measured elsewhere")
    parser.add_argument("--baseline", type=float, default=None, help="the original's seconds, if known")
    parser.add_argument("--caches", choices=["empty", "partly filled", "filled"], default=None,
                        help="what cache/ (frozen-base features, decoded images) held when the run started")
    parser.add_argument("--condition", action="append", default=[],
                        help="a condition of the run that a reader needs to judge the time (repeatable), e.g. "
                             "a model family that did not run or data that was already on disk")
    parser.add_argument("--scope", default=None,
                        help="what the timed run covered, where less than the whole job (shown with the verdict)")
    parser.add_argument("--commit", default=None, help="the commit that ran (with --seconds: not this checkout's)")
    parser.add_argument("--measured-at", default=None, help="when the run ended, UTC ISO 8601 (with --seconds)")
    parser.add_argument("--notes", default="")
    parser.add_argument("--output", type=Path, default=common.DEFAULT_OUTPUT)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- command to time")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if (args.seconds is None) == (not command):
        parser.error("give either --seconds or a command after --")
    notes = args.notes
    if command:
        start = time.perf_counter()
        code = subprocess.call(command)
        seconds = time.perf_counter() - start
        if code != 0:
            print(f"command failed (exit {code}) after {seconds:.1f} s: not recorded", file=sys.stderr)
            return code
        notes = (notes + " " if notes else "") + f"command: {shlex.join(command)}"
    else:
        seconds = args.seconds
    entry = common.make_entry(args.baseline, seconds, "s", False, notes or "wall time recorded by hand")
    if args.caches:
        entry["caches"] = args.caches
    if args.scope:
        entry["scope"] = args.scope
    if args.condition:
        entry["conditions"] = args.condition
    if args.commit:
        entry["measured_at_commit"] = args.commit
    if args.measured_at:
        entry["measured_at"] = args.measured_at
    common.merge_results(args.output, {args.name: entry})
    return 0


if __name__ == "__main__":
    sys.exit(main())
