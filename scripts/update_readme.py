"""Regenerate the README's tables from the files the notebooks and benchmarks wrote.

results/metrics.json -> sections "results" and "protocol"; results/rerun_agreement.json -> "rerun";
results/xception_recipe_choice.json ->
"xception-recipe"; results/gradcam_checks.csv -> "gradcam-checks";
results/patient_overlap.json -> "patient-overlap";
bench/results.json -> "speed" and "budget" (when present);
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
    """Markdown results table with the data set, the protocol and the machine it was measured on."""
    data, protocol = metrics["dataset"], metrics.get("protocol", {})
    ensemble = metrics["models"].get("ensemble", {})
    scorings = protocol.get("test_scorings")
    return (F.markdown_table(F.results_table(metrics)) +
            f"\n\nOfficial test set: {data['test_n']} images ({data['test_normal']} NORMAL, "
            f"{data['test_pneumonia']} PNEUMONIA); train {data['train_n']}, validation {data['val_n']} "
            f"({data['split']}). A family's accuracy and ROC-AUC are those of its seed-ensemble (mean logit), "
            f"with 95% bootstrap intervals over test cases; \"over seeds\" is mean ± sd of the single seeds. "
            f"Thresholds (logit) chosen on validation. "
            + (f"Cross-model ensemble members, chosen on validation: {', '.join(ensemble['members'])}. "
               if ensemble.get("members") else "")
            + (f"The official test set has now been scored {scorings} times for published results "
               f"(see the protocol below). " if scorings is not None else "")
            + f"Trained on {metrics['machine']}; app default (highest validation ROC-AUC): "
              f"{metrics.get('app_default', 'n/a')}.")


TARGETS = {"best_accuracy": 0.90, "best_roc_auc": 0.96, "scratch_mean_accuracy": 0.85, "min_seeds": 3}


def targets_section(metrics: dict) -> str:
    """Issue 10's targets, each with its verdict computed from results/metrics.json."""
    models = {name: e for name, e in metrics["models"].items() if e.get("status") == "ok" and "test" in e}
    best = max(models, key=lambda name: (models[name]["test"]["accuracy"], models[name]["test"]["roc_auc"]))
    both = [name for name, e in models.items() if e["test"]["accuracy"] >= TARGETS["best_accuracy"]
            and e["test"]["roc_auc"] >= TARGETS["best_roc_auc"]]
    scratch = models.get("scratch_cnn", {}).get("seed_spread", {})
    seeds = {name: len(e["seeds"]) for name, e in models.items() if "seeds" in e}
    not_run = {name: e["status"].removeprefix("not run: ") for name, e in metrics["models"].items()
               if e.get("status", "").startswith("not run")}

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    lines = [
        f"- Best reported model accuracy ≥ {TARGETS['best_accuracy']:.2f} and ROC-AUC ≥ {TARGETS['best_roc_auc']:.2f}: "
        f"{verdict(bool(both))} (" + (f"by {', '.join(both)}" if both else
        f"highest accuracy: {best}, {models[best]['test']['accuracy']:.3f} / ROC-AUC {models[best]['test']['roc_auc']:.3f}"
        + "".join(f"; ROC-AUC ≥ {TARGETS['best_roc_auc']:.2f} reached by {name} at accuracy {e['test']['accuracy']:.3f}"
                  for name, e in models.items() if e["test"]["roc_auc"] >= TARGETS["best_roc_auc"])) + ").",
        f"- Scratch CNN mean test accuracy over seeds ≥ {TARGETS['scratch_mean_accuracy']:.2f}: "
        + (f"{verdict(scratch['accuracy_mean'] >= TARGETS['scratch_mean_accuracy'])} "
           f"({scratch['accuracy_mean']:.3f} ± {scratch['accuracy_sd']:.3f} over {scratch['n_seeds']} seeds)."
           if scratch else "not run."),
        f"- Every model that ran ({len(seeds)} of {len(seeds) + len(not_run)} families"
        + "".join(f"; {name} not run: {status}" for name, status in not_run.items())
        + f") has ≥ {TARGETS['min_seeds']} seeds: "
        f"{verdict(all(n >= TARGETS['min_seeds'] for n in seeds.values()))} "
        f"({', '.join(f'{name} {n}' for name, n in seeds.items())}).",
    ]
    return "Issue 10's targets on the official test set, verdicts computed from `results/metrics.json`:\n\n" + "\n".join(lines)


BUDGET_MINUTES = {"reproduction_wall_time": 75, "reproduction_quick_wall_time": 5}


def budget_section(bench: dict) -> str:
    """Issue 10's time budget, each with its verdict computed from bench/results.json: the full
    reproduction counts only if it started with empty caches."""
    lines = []
    for name, limit in BUDGET_MINUTES.items():
        entry = bench.get(name)
        what = "Full reproduction with empty caches" if name == "reproduction_wall_time" else "Quick mode"
        if entry is None or (name == "reproduction_wall_time" and entry.get("caches") != "empty"):
            lines.append(f"- {what} ≤ {limit} min: **not measured** (no `{name}` entry"
                         + (" with empty caches" if entry else "") + " in `bench/results.json`).")
            continue
        minutes = entry["ours"] / 60
        machine = entry.get("machine", {})
        conditions = ([f"caches {entry['caches']}"] if "caches" in entry else []) + entry.get("conditions", [])
        lines.append(f"- {what} ≤ {limit} min: {'**met**' if minutes <= limit else '**not met**'}"
                     + (f" for {entry['scope']}" if entry.get("scope") else "")
                     + f"{', under the conditions listed' if conditions else ''} "
                     f"({minutes:.1f} min, `{name}`, {entry.get('measured_at', 'date not recorded')}, "
                     f"{machine.get('cpu', 'machine not recorded')}, {machine.get('cores', '?')} cores)"
                     + (". Conditions: " + "; ".join(conditions) if conditions else "") + ".")
    return "Issue 10's time budget, verdicts computed from `bench/results.json`:\n\n" + "\n".join(lines)


def protocol_section(metrics: dict) -> str:
    """The test protocol of results/metrics.json: what was chosen on validation, and every scoring
    of the official test set with what changed before it."""
    protocol = metrics["protocol"]
    chosen = "\n".join(f"- {item}" for item in protocol["chosen_on_validation"])
    import pandas as pd

    rows = [{"scored at": h.get("scored_at", ""), "code": h.get("code_commit", ""),
             "published": "yes" if h.get("published") else "no (exploratory)",
             "what changed before this scoring": h.get("what_changed", ""),
             "test accuracy / ROC-AUC": "; ".join(
                 f"{name} {r['accuracy']:.3f} / {r['roc_auc']:.3f}" if r.get("roc_auc") is not None
                 else f"{name} {r['accuracy']:.3f}" for name, r in h.get("results", {}).items())}
            for h in protocol["history"] if not h.get("quick")]
    return (f"Chosen on validation data only:\n\n{chosen}\n\n"
            f"Every scoring of the official test set so far: {len(rows)} in all, {protocol['test_scorings']} of "
            f"them for published results:\n\n{F.markdown_table(pd.DataFrame(rows))}\n\n"
            f"Not counted above, because none of them feeds a choice (of model, recipe, threshold or ensemble): quick runs and the "
            f"test suite's notebook runs score a 40-per-class test subset (written to `build/quick/` or a temporary "
            f"folder); `grad_cam.ipynb` explains and scores a class-balanced sample of test images; "
            f"`scripts/train_serve_consistency.py`, `scripts/app_screenshot.py` and `bench/bench_app.py` run the "
            f"saved networks on full-size test originals.")


def xception_recipe_section(choice: dict) -> str:
    """The validation-only choice of the Xception recipe (results/xception_recipe_choice.json)."""
    import pandas as pd

    rows = [{"recipe": name, "fine-tuned": "block14" if r["fine_tune"] else "head only",
             "learning rate": f"{r['learning_rate']:g}", "best epoch": f"{r['best_epoch']} of {r['epochs_run']}"
             + (" (hit the cap)" if r["epochs_run"] == r["max_epochs"] and r["best_epoch"] == r["max_epochs"] else ""),
             "epoch cap, patience": f"{r['max_epochs']}, {r['patience']}",
             "min val loss": f"{r['min_val_loss']:.4f}", "val ROC-AUC": f"{r['val_roc_auc']:.4f}",
             "val accuracy": f"{r['val_accuracy']:.3f}", "s/epoch (shared machine)": f"{r['seconds_per_epoch']:.0f}"}
            for name, r in choice["recipes"].items()]
    return (F.markdown_table(pd.DataFrame(rows)) +
            f"\n\nRule: {choice['rule']}. Chosen: **{choice['chosen']}**. One seed ({choice['seed']}) per "
            f"recipe, train {choice['train_n']} / validation {choice['val_n']} images, weights {choice['weights']}, "
            f"{choice['machine']}, {choice['measured_at']}. The candidates had different epoch caps; a "
            f"recipe marked \"hit the cap\" was still improving when stopped, so the rule may under-rate it. "
            f"The same validation split then also serves early stopping, thresholds, ensemble members and "
            f"the app default, so validation figures of the chosen models are optimistic.")


def patient_overlap_section(report: dict) -> str:
    """Markdown for the README's Data section from results/patient_overlap.json (written by
    data_visualization.ipynb): the overlap table, a sentence per class and what the id readings mean."""
    readings = "; ".join(f"`{name}`: {text}" for name, text in report["readings"].items())
    return (F.markdown_table(F.patient_overlap_table(report)) + "\n\n" + F.patient_overlap_summary(report) +
            f"\n\nId readings: {readings}. Ids are compared within a class.")


GRADCAM_VERDICTS = {"faithfulness_verdict", "sanity_verdict", "border_verdict"}


def gradcam_checks_section(checks) -> str:
    """Markdown table of results/gradcam_checks.csv (summarise_gradcam_checks): per model, method and
    subset of predictions, the areas and drops against the same-shape random order with the number of
    images where the map wins, and the verdicts grad_cam.ipynb computed (copied, not re-derived)."""
    import pandas as pd

    def versus(row, kind: str) -> str:
        return (f"{row[f'{kind}_auc']:.3f} / {row[f'{kind}_auc_random']:.3f} "
                f"({row[f'{kind}_wins']} of {row['n_images']})")

    def judged(row, value: str, passes: str, verdict: str) -> str:
        return f"{row[value]:.2f} ({row[passes]} of {row['n_images']}): {row[verdict]}"

    table = pd.DataFrame([{
        "model": row["model"], "method": row["method"], "predictions": row["subset"],
        "images (NORMAL / PNEUMONIA)": f"{row['n_images']} ({row['n_normal']} / {row['n_pneumonia']})",
        "deletion area: map / random (map lower in)": versus(row, "deletion"),
        "insertion area: map / random (map higher in)": versus(row, "insertion"),
        "top-20% drop: map / same-shape random": f"{row['drop_top20']:.3f} / {row['drop_random20']:.3f}",
        "faithfulness": row["faithfulness_verdict"],
        f"rank corr. with random weights (|r| < {F.RANK_CORR_LIMIT} in)":
            judged(row, "rank_corr_random_weights", "sanity_passes", "sanity_verdict"),
        "border share (below a uniform map's in)": judged(row, "border_mass", "border_passes", "border_verdict"),
    } for _, row in checks.iterrows()])
    return F.markdown_table(table)


def container_section(report: dict) -> str:
    """One paragraph from bench/container.json (scripts/build_container.sh): the image, the model it
    served and what the check got back."""
    response, latency = report["response"], report["latency_s"]
    width, height = report["request"]["xray_width_height"]
    return (f"Last run ({report['measured_at_utc']}): image `{report['image']}`, {report['image_size_mb']:.0f} MB as "
            f"podman reports it, base `{report['base_image']}` ({report['builder']}); serving "
            f"`{report['model']['name']}` ({report['model']['source']}); `{report['request']['endpoint']}` with "
            f"`{report['request']['xray']}` ({width} x {height} px, true label {report['request']['true_label']}): "
            f"HTTP {response['http_status']}, {response['label']} at probability {response['probability']:.3f} "
            f"(threshold {response['threshold']:.3f}), Grad-CAM PNG {response['heatmap_png_width_height'][0]} x "
            f"{response['heatmap_png_width_height'][1]}; healthy after {report['startup_until_healthy_s']:.1f} s, "
            f"first request {latency['first_request']:.2f} s, warm median {latency['warm_median']:.2f} s over "
            f"{latency['warm_requests']} requests; {report['image_healthcheck']}.")


def train_serve_section(report: dict) -> str:
    """One sentence from results/train_serve_consistency.json (scripts/train_serve_consistency.py)."""
    return (f"With the app's default model ({report['model']}), over the {report['n_pairs']} {report['splits']} "
            f"at hand, the probability of PNEUMONIA from a full-size original (decoded and resized as the app "
            f"does) and from the data set's 224 px copy of it (what training read) differ by at most "
            f"{report['max_abs_diff']:.3f} (median {report['median_abs_diff']:.3f}; largest for "
            f"`{report['worst_pair']}`), and {report['label_flips']} of the {report['n_pairs']} labels change at "
            f"the threshold {report['threshold']:.3f} ({report['measured_at']}).")


def rerun_section(report: dict) -> str:
    """Run-to-run agreement table from results/rerun_agreement.json (scripts/compare_runs.py)."""
    import pandas as pd

    rows = pd.DataFrame(report["rows"])

    def pair(column: str, digits: int) -> list[str]:
        before, after = rows[f"{column} before"], rows[f"{column} after"]
        return ["–" if pd.isna(a) and pd.isna(b) else
                ("–" if pd.isna(a) else f"{a:.{digits}f}") + (" (same)" if a == b else
                (" → –" if pd.isna(b) else f" → {b:.{digits}f}")) for a, b in zip(before, after)]

    table = pd.DataFrame({"model": rows["model"], "seed": rows["seed"].astype(str),
                          "best epoch": pair("best_epoch", 0), "test accuracy": pair("test.accuracy", 3),
                          "test ROC-AUC": pair("test.roc_auc", 4), "values compared": rows["fields_compared"],
                          "largest |difference|": rows["max_abs_diff"].map("{:.2g}".format),
                          "identical": [("yes" if same else "no") + (f" (only in the {only} run)" if only else "")
                                        for same, only in zip(rows["identical"], rows["only_in"])]})
    before, after = report["before"], report["after"]
    changes = report.get("code_changes")
    return (F.markdown_table(table) +
            f"\n\n{int(rows['identical'].sum())} of {len(rows)} rows identical in every value compared: each "
            f"record's metrics, bootstrap intervals, thresholds and epochs (wall times excluded). Before: the run "
            f"scored {before['scored_at']} at commit {before['code_commit']} ({before['machine']}); after: the run "
            f"scored {after['scored_at']} at commit {after['code_commit']} ({after['machine']}). "
            + ("Commits between the two that touch the package or the notebooks: "
               + "; ".join(f"`{line.split(' ', 1)[0]}` {line.split(' ', 1)[1]}" for line in changes) + "."
               if changes else "No commit between the two touches the package or the notebooks." if changes == []
               else ""))


def main() -> None:
    readme = ROOT / "README.md"
    metrics_path = ROOT / "results" / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        F.replace_marked_section(readme, "results", results_section(metrics))
        if "protocol" in metrics:
            F.replace_marked_section(readme, "protocol", protocol_section(metrics))
        if "ensemble" in metrics["models"]:
            F.replace_marked_section(readme, "targets", targets_section(metrics))
    rerun_path = ROOT / "results" / "rerun_agreement.json"
    if rerun_path.is_file():
        F.replace_marked_section(readme, "rerun", rerun_section(json.loads(rerun_path.read_text())))
    choice_path = ROOT / "results" / "xception_recipe_choice.json"
    if choice_path.is_file():
        F.replace_marked_section(readme, "xception-recipe", xception_recipe_section(json.loads(choice_path.read_text())))
    checks_path = ROOT / "results" / "gradcam_checks.csv"
    if checks_path.is_file():
        import pandas as pd

        checks = pd.read_csv(checks_path)
        if GRADCAM_VERDICTS <= set(checks.columns):
            F.replace_marked_section(readme, "gradcam-checks", gradcam_checks_section(checks))
        else:
            print(f"{checks_path} has no verdict columns (written before the checks of issue 11): "
                  "re-run grad_cam.ipynb; the Grad-CAM table is left as it is", file=sys.stderr)
    overlap_path = ROOT / "results" / "patient_overlap.json"
    if overlap_path.is_file():
        F.replace_marked_section(readme, "patient-overlap", patient_overlap_section(json.loads(overlap_path.read_text())))
    serve_path = ROOT / "results" / "train_serve_consistency.json"
    if serve_path.is_file():
        section = train_serve_section(json.loads(serve_path.read_text()))
        for path in (readme, ROOT / "app" / "README.md"):
            F.replace_marked_section(path, "train-serve", section)
    container_path = ROOT / "bench" / "container.json"
    if container_path.is_file():
        F.replace_marked_section(ROOT / "app" / "README.md", "container",
                                 container_section(json.loads(container_path.read_text())))
    bench_path = ROOT / "bench" / "results.json"
    if bench_path.is_file():
        from render_table import render_table  # bench/render_table.py

        bench = json.loads(bench_path.read_text())
        F.replace_marked_section(readme, "speed", render_table(bench))
        F.replace_marked_section(readme, "budget", budget_section(bench))
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
