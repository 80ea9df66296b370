"""Render bench/results.json as a markdown table (printed; ``render_table`` returns it).

    .venv/bin/python bench/render_table.py [--results bench/results.json] [--no-notes]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results.json"


def _number(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def render_table(results: dict, notes: bool = True) -> str:
    """Markdown: one row per benchmark (sorted by name), then a line describing the machine."""
    columns = ["benchmark", "original's way", "ours", "unit", "ours is × faster"] + (["notes"] if notes else [])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for name in sorted(k for k in results if k != "machine"):
        entry = results[name]
        ratio = entry.get("ratio")
        row = [f"`{name}`", _number(entry.get("baseline")), _number(entry.get("ours")), entry.get("unit", ""),
               "–" if ratio is None else f"{ratio:.2f}×"]
        if notes:
            row.append(str(entry.get("notes", "")).replace("|", "\\|").replace("\n", " "))
        lines.append("| " + " | ".join(row) + " |")
    machine = results.get("machine")
    if machine:
        lines.append("")
        lines.append(f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, TensorFlow "
                     f"{machine.get('tensorflow')}, Keras {machine.get('keras')}, "
                     f"{'GPU' if machine.get('gpu') else 'CPU only'}; run {machine.get('date', '')}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--no-notes", action="store_true", help="leave out the notes column")
    args = parser.parse_args()
    print(render_table(json.loads(args.results.read_text()), notes=not args.no_notes))


if __name__ == "__main__":
    main()
