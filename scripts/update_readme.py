"""Regenerate the README's tables from the files the notebooks and benchmarks wrote.

results/metrics.json -> section "results"; results/gradcam_checks.csv -> "gradcam-checks";
bench/results.json -> "speed" (when present);
bench/app_results.json -> "app-speed"; bench/precision_check.json -> "precision-check" (when present). Run by scripts/reproduce.sh and bench/run_all.sh.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import functions_for_grad_cam as F  # noqa: E402


def results_section(metrics: dict) -> str:
    """Markdown results table with the data set and machine it was measured on."""
    data = metrics["dataset"]
    return (F.markdown_table(F.results_table(metrics)) +
            f"\n\nOfficial test set: {data['test_n']} images ({data['test_normal']} NORMAL, "
            f"{data['test_pneumonia']} PNEUMONIA); train {data['train_n']}, validation {data['val_n']} "
            f"({data['split']}). Accuracy and ROC-AUC with 95% bootstrap intervals; thresholds chosen on "
            f"validation. Trained on {metrics['machine']}.")


def main() -> None:
    readme = ROOT / "README.md"
    metrics_path = ROOT / "results" / "metrics.json"
    if metrics_path.is_file():
        F.replace_marked_section(readme, "results", results_section(json.loads(metrics_path.read_text())))
    checks_path = ROOT / "results" / "gradcam_checks.csv"
    if checks_path.is_file():
        import pandas as pd

        F.replace_marked_section(readme, "gradcam-checks", F.markdown_table(pd.read_csv(checks_path).round(3)))
    bench_path = ROOT / "bench" / "results.json"
    if bench_path.is_file():
        from render_table import render_table  # bench/render_table.py

        F.replace_marked_section(readme, "speed", render_table(json.loads(bench_path.read_text())))
    app_path = ROOT / "bench" / "app_results.json"
    if app_path.is_file():
        from bench_app import markdown

        report = json.loads(app_path.read_text())
        F.replace_marked_section(readme, "app-speed", markdown(report["results"]) +
                                 f"\n\nModel {report['model']}, {report['machine']['cpus']} CPUs, "
                                 f"{report['requests_per_measurement']} uploads per row, {report['date']}.")
    precision_path = ROOT / "bench" / "precision_check.json"
    if precision_path.is_file():
        from check_bf16_accuracy import markdown as precision_markdown

        F.replace_marked_section(readme, "precision-check", precision_markdown(json.loads(precision_path.read_text())))


if __name__ == "__main__":
    main()
