"""Render bench/results.json as a markdown table (printed; ``render_table`` returns it), and
bench/precision_check.json (``render_precision_check``).

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


COMMIT_DATE_MARK = "†"  # after a date that is the commit's, not the run's


def _machine(entry: dict) -> str:
    """'CPU model, N cores' of an entry's machine, '–' when not recorded."""
    machine = entry.get("machine") or {}
    if not machine.get("cpu"):
        return "–"
    return f"{machine['cpu']}, {machine.get('cores', '?')} cores"


def _measured_at(entry: dict) -> str:
    """The entry's UTC date, marked when it is only the date of the commit that recorded it."""
    when = entry.get("measured_at") or "–"
    return f"{when} {COMMIT_DATE_MARK}" if entry.get("measured_at_source") else when


def render_table(results: dict, notes: bool = True) -> str:
    """Markdown: one row per benchmark (sorted by name) with its date, machine and model, then a line
    on the software of the last run and on dates taken from commits."""
    import pandas as pd

    import pneumonia_cxr as pcx

    rows = []
    for name in sorted(k for k in results if k != "machine"):
        entry = results[name]
        ratio = entry.get("ratio")
        row = {"benchmark": f"`{name}`", "original's way": _number(entry.get("baseline")),
               "ours": _number(entry.get("ours")), "unit": entry.get("unit", ""),
               "ours is × faster": "–" if ratio is None else f"{ratio:.2f}×",
               "measured at (UTC)": _measured_at(entry), "machine": _machine(entry),
               "model": entry.get("model") or "–"}
        if notes:
            row["notes"] = entry.get("notes", "")
        rows.append(row)
    lines = [pcx.evaluation.markdown_table(pd.DataFrame(rows))]
    machine = results.get("machine")
    if machine:
        lines.append(f"Last run {machine.get('date', '')} on {machine.get('cpu')}, {machine.get('cores')} cores: "
                     f"TensorFlow {machine.get('tensorflow')}, Keras {machine.get('keras')}, "
                     f"{'GPU' if machine.get('gpu') else 'CPU only'}. Each row gives the date and machine of its own run.")
    dated_otherwise = [entry for name, entry in results.items() if name != "machine" and entry.get("measured_at_source")]
    for source in sorted({entry["measured_at_source"] for entry in dated_otherwise}):
        commits = sorted({entry.get("measured_at_commit", "?") for entry in dated_otherwise
                          if entry["measured_at_source"] == source})
        lines.append(f"{COMMIT_DATE_MARK} {source[:1].upper()}{source[1:]} ({', '.join(commits)}): the run itself was earlier and its "
                     f"date was not stored.")
    return "\n\n".join(lines)


def render_precision_check(report: dict) -> str:
    """bench/precision_check.json (bench/check_bf16_accuracy.py) as markdown: one row per precision and
    seed, then the rule and its verdict (or why there is none)."""
    import pandas as pd

    import pneumonia_cxr as pcx

    rows = [{"training precision": run["precision"], "seed": run["seed"], "kept epoch": f"{run['best_epoch']} of {run['epochs_run']}",
             "val log loss": run["val_log_loss"], "val ROC-AUC": run["val_roc_auc"],
             "median abs(logit)": run["median_abs_logit"], "threshold (logit)": run["threshold_logit"],
             "minutes": round(run["seconds"] / 60, 1)}
            for runs in report["runs"].values() for run in runs]
    setup = report["setup"]
    if report["safe"] is None:
        verdict = f"no verdict: {report['note']}"
    else:
        verdict = (f"mixed_bfloat16 training is **{'safe' if report['safe'] else 'NOT safe'}** (ROC-AUC drop "
                   f"{report['auc_drop']:+.3f}, log loss rise {report['log_loss_rise']:+.3f}, seed means)")
    return (pcx.evaluation.markdown_table(pd.DataFrame(rows)) +
            f"\n\nRule ({report['rule']}): {verdict}. Train {setup['train_n']} / validation {setup['val_n']} images, "
            f"seeds {setup['seeds']}, {report['machine']['cpu']}, {setup['date']}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    parser.add_argument("--no-notes", action="store_true", help="leave out the notes column")
    args = parser.parse_args()
    print(render_table(json.loads(args.results.read_text()), notes=not args.no_notes))


if __name__ == "__main__":
    main()
