"""Render bench/results.json as a markdown table (printed; ``render_table`` returns it).

    .venv/bin/python bench/render_table.py [--results bench/results.json] [--no-notes]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results.json"


def _number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def render_table(results: dict, notes: bool = True) -> str:
    """Markdown: one row per benchmark (sorted by name), then a line describing the machine."""
    import pandas as pd

    import functions_for_grad_cam as fgc

    rows = []
    for name in sorted(k for k in results if k != "machine"):
        entry = results[name]
        ratio = entry.get("ratio")
        row = {"benchmark": f"`{name}`", "original's way": _number(entry.get("baseline")),
               "ours": _number(entry.get("ours")), "unit": entry.get("unit", ""),
               "ours is × faster": "–" if ratio is None else f"{ratio:.2f}×"}
        if notes:
            row["notes"] = entry.get("notes", "")
        rows.append(row)
    table = fgc.markdown_table(pd.DataFrame(rows))
    machine = results.get("machine")
    if not machine:
        return table
    return (table + f"\n\nMachine: {machine.get('cpu')}, {machine.get('cores')} cores, TensorFlow "
            f"{machine.get('tensorflow')}, Keras {machine.get('keras')}, "
            f"{'GPU' if machine.get('gpu') else 'CPU only'}; run {machine.get('date', '')}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--no-notes", action="store_true", help="leave out the notes column")
    args = parser.parse_args()
    print(render_table(json.loads(args.results.read_text()), notes=not args.no_notes))


if __name__ == "__main__":
    main()
