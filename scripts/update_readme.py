"""Regenerate the marked sections of README.md, docs/*.md and app/README.md from the files the
notebooks, scripts and benchmarks wrote. Text between ``<!-- name:start -->`` and
``<!-- name:end -->`` is replaced; everything else is left as written.

    .venv/bin/python scripts/update_readme.py

Inputs (each optional; a section whose input is missing is left as it is):

- results/metrics.json (model_deep_learning.ipynb): README "findings", "results", "served";
  docs/reproducibility.md "protocol", "targets", "training";
- results/gradcam_checks.csv (grad_cam.ipynb): README "gradcam-verdicts" (and findings);
  docs/gradcam.md "gradcam-checks" (every column the file has) and "gradcam-settings";
- results/data_summary.json (data_visualization.ipynb): README findings (the shortcut caveat),
  docs/data.md "data-findings"; results/patient_overlap.json: docs/data.md "patient-overlap";
- results/rerun_agreement.json (scripts/compare_runs.py): docs/reproducibility.md "rerun";
- results/xception_recipe_choice.json: docs/reproducibility.md "xception-recipe";
- results/train_serve_consistency.json: docs/reproducibility.md and app/README.md "train-serve";
- bench/results.json: docs/performance.md "speed", docs/reproducibility.md "budget", README and
  app/README.md "cost"; bench/app_results.json: docs/performance.md "app-speed";
  bench/precision_check.json: docs/reproducibility.md "precision-check";
  bench/container.json: docs/app_verification.md "container".

Always: README "published" (pneumonia_cxr.common.PUBLISHED_RESULTS).
Run by scripts/reproduce.sh as its last step; run it by hand after any script above writes its file.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path

import pneumonia_cxr as pcx

ROOT = Path(__file__).resolve().parents[1]

WIDTH = 120  # generated prose is wrapped at this width (Markdown joins the lines into one paragraph)
KAGGLE_DOWNLOAD_GB = 1.2  # size of the Kaggle archive paultimothymooney/chest-xray-pneumonia


def wrap(text: str, bullet: bool = False) -> str:
    """``text`` wrapped at ``WIDTH`` characters; a bullet's continuation lines indented by two spaces.
    Each paragraph (blank-line separated) is wrapped on its own; tables and lists inside are kept."""
    paragraphs = []
    for paragraph in text.split("\n\n"):
        if paragraph.lstrip().startswith(("|", "- ", "  -", "```")) and not bullet:
            paragraphs.append(paragraph)
            continue
        paragraphs.append(textwrap.fill(paragraph, WIDTH, subsequent_indent="  " if bullet else "",
                                        break_on_hyphens=False, break_long_words=False))
    return "\n\n".join(paragraphs)


def replace_marked_section(path: str | os.PathLike, marker: str, content: str) -> None:
    """Replace the text between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in a file."""
    path = Path(path)
    text = path.read_text()
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start not in text or end not in text:
        raise ValueError(f"{path}: markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{content}\n{end}{tail}")


def bench_renderers(root: Path = ROOT):
    """bench/render_table.py, loaded from its file (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("render_table", root / "bench" / "render_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bullets(lines: str) -> str:
    """Each ``- `` line of ``lines`` wrapped as a bullet (sub-bullets, ``  - ``, as sub-bullets)."""
    out = []
    for line in lines.splitlines():
        if line.startswith("  - "):
            out.append(textwrap.indent(wrap(line[2:], bullet=True), "  "))
        else:
            out.append(wrap(line, bullet=True))
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# README.md
# ----------------------------------------------------------------------------------------------
def findings_section(metrics: dict, checks=None, data: dict | None = None) -> str:
    """The README's first-screen answer: 4-6 bullets (pcx.reporting.readme_findings), wrapped."""
    return bullets(pcx.reporting.readme_findings(metrics, checks, data))


def results_section(metrics: dict) -> str:
    """The compact results table (model, accuracy [CI], ROC-AUC [CI], sensitivity, specificity,
    seeds) and a short note: the test set, how a row is formed, where the training recipe is, the machine."""
    data, training = metrics.get("dataset", {}), metrics.get("training", {})
    ensemble = metrics["models"].get("ensemble", {})
    note = []
    if data:
        note.append(f"Official test set: {data['test_n']} images ({data['test_normal']} NORMAL, "
                    f"{data['test_pneumonia']} PNEUMONIA); trained on {data['train_n']:,} and validated on "
                    f"{data['val_n']} images of a patient-grouped re-split of the official training data.")
    note.append("A family's row is the mean logit of its seeds, at a threshold fixed on validation, with 95% "
                "bootstrap intervals over test images.")
    protocol = metrics.get("protocol", {})
    scoring = (f"this run's scoring of the test set, the {_ordinal(protocol['test_scorings'])} published one"
               if protocol.get("test_scorings") else "the test scoring")
    if protocol.get("selection_rule"):
        note.append(f"Thresholds, saved seeds, the ensemble and the served network follow a validation rule written "
                    f"down before {scoring}; the run's size (seeds, epoch caps, families) was set for this machine's "
                    "compute, outside the rule: [protocol, with every scoring](docs/reproducibility.md#test-protocol).")
    if training.get("crop") or training.get("augmentation"):
        note.append("Crop and augmentation: [docs/reproducibility.md](docs/reproducibility.md#models-and-training).")
    if metrics.get("machine"):
        note.append(f"Trained on {metrics['machine']}.")
    return pcx.evaluation.markdown_table(pcx.reporting.compact_results_table(metrics)) + "\n\n" + wrap(" ".join(note))


def _ordinal(n: int) -> str:
    """1 -> "1st", 2 -> "2nd", 5 -> "5th", 11 -> "11th"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def published_section() -> str:
    """Published results on the same official test split, each with its citation."""
    return (pcx.evaluation.markdown_table(pcx.reporting.published_table()) + "\n\n"
            + wrap("Quoted from their sources; their protocols, splits and thresholds differ from ours, and the "
                   "original study and Kermany et al. report a single run."))


def served_section(metrics: dict) -> str:
    """One sentence: the network the app serves by default and its own test row."""
    served = pcx.reporting.served_entry(metrics)
    if not served:
        return "No default network recorded in `results/metrics.json`."
    seed = f" (seed {served['seed']})" if served.get("seed") is not None else ""
    chosen = ("the network the validation rule chose before the test set was scored" if metrics.get("served")
              else "the run's default network (highest validation ROC-AUC, the earlier rule)")
    text = f"Without `--model` the app serves {pcx.common.display_name(served['name'])}{seed}, {chosen}"
    test = served.get("test")
    if test:
        text += (f"; on the test set it scores accuracy {test['accuracy']:.3f}, ROC-AUC {test['roc_auc']:.3f}, "
                 f"sensitivity {test['sensitivity']:.3f} and specificity {test['specificity']:.3f}")
    verdicts = pcx.reporting.served_verdicts(metrics)
    if verdicts:
        missed = [v["target"] for v in verdicts if not v["met"]]
        text += (f". Test targets set for the best family: {len(verdicts) - len(missed)} of {len(verdicts)} met"
                 + (f" (missed: {', '.join(missed)})" if missed else ""))
    return wrap(text + ".")


OLD_RULE = "sign tests against scattered noise, no correction, no interval"
STALE_CHECKS_NOTE = ("**Out of date:** the table below comes from the previous models (before the centre crop) and the "
                     "earlier method of the checks; `grad_cam.ipynb` has not yet been run on the current models.\n\n")


def gradcam_verdicts_section(checks) -> str:
    """The README's compact Grad-CAM table: one row per model, each verdict given for every method
    (``Grad-CAM / Grad-CAM++``), all predictions; then what a verdict means, the rows whose faithfulness
    verdict the current rule changes against the old one (the table's ``faithfulness_verdict_old_rule``),
    and where the figures and the method are."""
    import pandas as pd

    table = pcx.reporting.gradcam_verdict_table(checks)
    if "method" not in table or "model" not in table:
        return pcx.evaluation.markdown_table(table)
    methods = list(dict.fromkeys(table["method"]))
    rows = []
    for model, group in table.groupby("model", sort=False):
        by_method = group.set_index("method")
        row = {"model": model}
        if "images" in group:
            row["images"] = str(group["images"].iloc[0])
        for column in group.columns:
            if column not in ("model", "method", "images"):
                row[column] = " / ".join(str(by_method[column].get(m, "–")) for m in methods)
        rows.append(row)
    note = [f"Where each network looks, on a class-balanced sample of test images (all predictions); each cell: "
            f"{' / '.join(methods)}"
            + ("; in brackets, the images with deletion and insertion curves." if "n_curve_images" in checks.columns
               else ".")]
    if "faithfulness_verdict_old_rule" in checks.columns:
        note.append("\"Not faithful\": not shown to be faithful.")
        changes = pcx.reporting.gradcam_rule_changes(checks)
        judged = int((checks["subset"] == "all").sum()) if "subset" in checks else len(checks)  # the compared rows
        shown = changes[changes["subset"] == "all"]
        listed = "; ".join(f"{old} → {new}: " + ", ".join(f"{r.model} {r.method}" for r in group.itertuples())
                           for (old, new), group in shown.groupby(["old", "new"], sort=False))
        note.append(f"The old rule ({OLD_RULE}) "
                    + (f"reads {len(changes)} of {judged} rows otherwise (old → current)"
                       + (f"; on all predictions: {listed}." if listed else ", none of them on all predictions.")
                       if len(changes) else f"reads none of the {judged} rows otherwise."))
        note.append("Figures and method: [docs/gradcam.md](docs/gradcam.md).")
    else:
        note.append("Figures behind each verdict: [docs/gradcam.md](docs/gradcam.md).")
    return pcx.evaluation.markdown_table(pd.DataFrame(rows)) + "\n\n" + wrap(" ".join(note))


def data_section(summary: dict) -> str:
    """The README's data line: the source and the counts data_visualization.ipynb found."""
    official = summary["official"]
    counts = ", ".join(f"{split} {sum(official[split].values()):,}" for split in ("train", "val", "test") if split in official)
    return wrap(f"**Data:** Kermany, Zhang, Goldbaum, Mendeley Data v2, "
                f"[doi:10.17632/rscbjbr9sj.2](https://doi.org/10.17632/rscbjbr9sj.2), CC BY 4.0: "
                f"{summary['images']:,} chest X-rays of children aged one to five; official split {counts}.")


def cost_section(bench: dict, docs: str = "docs") -> str:
    """What the main command costs: time on the measured machine (full run from empty caches, quick
    mode) with their budget verdicts, and the download, from bench/results.json; ``docs``: the docs
    folder relative to the file the text goes into."""
    full, quick = bench.get("reproduction_wall_time"), bench.get("reproduction_quick_wall_time")
    parts = []
    if full:
        machine = full.get("machine", {})
        scope = f"; it trained {full['model']}" if full.get("model") else ""
        parts.append(f"The full run took {full['ours'] / 60:.0f} min{_budget_words('reproduction_wall_time', full)} on "
                     f"{machine.get('cores', '?')} CPU cores ({machine.get('cpu', 'CPU not recorded')}, no GPU) from "
                     f"{full.get('caches', 'unrecorded')} caches, with the data already on disk{scope}.")
    if quick:
        parts.append(f"Quick mode took {quick['ours'] / 60:.1f} min{_budget_words('reproduction_quick_wall_time', quick)}.")
    if full or quick:
        parts.append(f"Conditions of both: [time budget]({docs}/reproducibility.md#time-budget).")
    parts.append(f"The data download is about {KAGGLE_DOWNLOAD_GB} GB.")
    return wrap(" ".join(parts))


# ----------------------------------------------------------------------------------------------
# docs/reproducibility.md
# ----------------------------------------------------------------------------------------------
def targets_section(metrics: dict) -> str:
    """The project's targets on the official test set, each met or not met with the measured figure."""
    verdicts = pcx.reporting.target_verdicts(metrics)
    lines = [f"- {v['target']}: {'**met**' if v['met'] else '**not met**'} ({v['measured']})." for v in verdicts]
    missing = pcx.reporting.not_run(metrics)
    note = f"\n\nNot run, so not judged: {pcx.reporting.not_run_list(missing)}." if missing else ""
    best = pcx.reporting.best_family(metrics)
    if best is None:
        head = ""
    elif pcx.reporting.chosen_on_validation(metrics):
        head = (f"Verdicts computed from `results/metrics.json`; the targets for the best family are judged on "
                f"the seed-ensemble of the family chosen on validation ({pcx.common.display_name(best)}, the served "
                f"network's family), not on the family with the highest test score. No rule chose the "
                f"seed-ensemble itself; the served network, one seed, is judged after the list.\n\n")
    else:
        head = (f"Verdicts computed from `results/metrics.json`; the best family is the one with the highest test "
                f"accuracy ({pcx.common.display_name(best)}).\n\n")
    served = pcx.reporting.served_entry(metrics) or {}
    served_lines = [f"- {v['target']}: {'**met**' if v['met'] else '**not met**'} ({v['measured']})."
                    for v in pcx.reporting.served_verdicts(metrics)]
    served_note = (f"\n\nThe served network, {pcx.common.display_name(served.get('name', ''))} seed {served.get('seed')}, "
                   f"against the same test targets:\n\n" + bullets("\n".join(served_lines))) if served_lines else ""
    return head + bullets("\n".join(lines)) + note + served_note


BUDGET_MINUTES = {"reproduction_wall_time": 90, "reproduction_quick_wall_time": 5}
BUDGET_AIM_MINUTES = {"reproduction_wall_time": 75}


def _budget_words(name: str, entry: dict) -> str:
    """`` (budget 90 min: met)`` for a wall-time entry with a budget in BUDGET_MINUTES, else ""."""
    limit = BUDGET_MINUTES.get(name)
    if limit is None:
        return ""
    return f" (budget {limit} min: {'met' if entry['ours'] / 60 <= limit else 'not met'})"


def budget_section(bench: dict) -> str:
    """The time budget, each with its verdict computed from bench/results.json: the full
    reproduction counts only if it started with empty caches."""
    lines = []
    for name, limit in BUDGET_MINUTES.items():
        entry = bench.get(name)
        aim = BUDGET_AIM_MINUTES.get(name)
        what = "Full reproduction with empty caches" if name == "reproduction_wall_time" else "Quick mode"
        target = f"≤ {limit} min" + (f" (aim {aim})" if aim else "")
        if entry is None or (name == "reproduction_wall_time" and entry.get("caches") != "empty"):
            lines.append(f"- {what} {target}: **not measured** (no `{name}` entry"
                         + (" with empty caches" if entry else "") + " in `bench/results.json`).")
            continue
        minutes = entry["ours"] / 60
        machine = entry.get("machine", {})
        conditions = ([f"caches {entry['caches']}"] if "caches" in entry else []) + entry.get("conditions", [])
        over_aim = f", above the {aim}-min aim" if aim and limit >= minutes > aim else ""
        lines.append(f"- {what} {target}: {'**met**' if minutes <= limit else '**not met**'}"
                     + (f" for {entry['scope']}" if entry.get("scope") else "")
                     + f"{', under the conditions listed' if conditions else ''} "
                     f"({minutes:.1f} min{over_aim}, `{name}`, {entry.get('measured_at', 'date not recorded')}, "
                     f"{machine.get('cpu', 'machine not recorded')}, {machine.get('cores', '?')} cores)"
                     + (". Conditions: " + "; ".join(conditions) if conditions else "") + ".")
    return "Verdicts computed from `bench/results.json`:\n\n" + bullets("\n".join(lines))


def _rule_text(rule) -> str:
    if isinstance(rule, (list, tuple)):
        return "\n".join(f"- {item}" for item in rule)
    return str(rule)


def protocol_section(metrics: dict) -> str:
    """The test protocol of results/metrics.json: the selection rule written before the test was
    scored, what was chosen on validation, and every scoring of the official test set."""
    import pandas as pd

    protocol = metrics["protocol"]
    parts = []
    rule = protocol.get("selection_rule") or list(pcx.evaluation.SELECTION_RULE)
    if rule:
        head = "Selection rule (`pneumonia_cxr.evaluation.SELECTION_RULE`), written down before the test set was scored"
        parts.append(f"{head}:\n\n{bullets(_rule_text(rule))}" if isinstance(rule, (list, tuple))
                     else wrap(f"{head}: {rule}"))
    if protocol.get("chosen_on_validation"):
        parts.append("Chosen on validation data only:\n\n"
                     + bullets("\n".join(f"- {item}" for item in protocol["chosen_on_validation"])))
    if protocol.get("run_started_describe"):
        parts.append(f"The committed run started at code `{protocol['run_started_describe']}` (`git describe`).")
    rows = [{"scored at": h.get("scored_at", ""), "code": h.get("code_commit", ""),
             "published": "yes" if h.get("published") else "no (exploratory)",
             "what changed before this scoring": h.get("what_changed", ""),
             "test accuracy / ROC-AUC": "; ".join(
                 f"{pcx.common.display_name(name)} {r['accuracy']:.3f} / {r['roc_auc']:.3f}" if r.get("roc_auc") is not None
                 else f"{pcx.common.display_name(name)} {r['accuracy']:.3f}" for name, r in h.get("results", {}).items())}
            for h in protocol.get("history", []) if not h.get("quick")]
    if rows:
        published = protocol.get("test_scorings", sum(r["published"] == "yes" for r in rows))
        parts.append(f"Every scoring of the official test set so far: {len(rows)} in all, {published} of them for "
                     f"published results:\n\n{pcx.evaluation.markdown_table(pd.DataFrame(rows))}")
    parts.append(wrap(
        "Not counted above, because none of them feeds a choice (of model, recipe, threshold or ensemble): quick "
        "runs and the test suite's notebook runs score a 40-per-class test subset (written to `build/quick/` or a "
        "temporary folder); `grad_cam.ipynb` explains and scores a class-balanced sample of test images; "
        "`scripts/train_serve_consistency.py`, `scripts/app_screenshot.py` and `bench/bench_app.py` run the saved "
        "networks on full-size test originals."))
    return "\n\n".join(parts)


def training_section(metrics: dict) -> str:
    """The training recipe the run recorded (crop, augmentation), or a note that it recorded none."""
    training = metrics.get("training", {})
    lines = [f"- **{label}:** {training[key]}" for key, label in (("crop", "Crop"), ("augmentation", "Augmentation"))
             if training.get(key)]
    lines += [f"- **{pcx.reporting.readable_column(key)}:** {value}" for key, value in training.items()
              if key not in ("crop", "augmentation") and isinstance(value, (str, int, float))]
    caps = training.get("epoch_caps")
    if isinstance(caps, dict):
        lines.append("- **Epoch caps (early stopping on validation loss picks the epoch within them):** "
                     + ", ".join(f"{pcx.common.display_name(k) if k != 'patience' else 'patience'} {v}" for k, v in caps.items())
                     + _capped_note(metrics))
    views = training.get("augmented_views")
    if isinstance(views, dict):
        lines.append("- **Cached augmented views per training image:** "
                     + ", ".join(f"{pcx.common.display_name(k)} {v}" for k, v in views.items()))
    return bullets("\n".join(lines)) if lines else "The run recorded no crop or augmentation (`training` in `results/metrics.json`)."


def _capped_note(metrics: dict) -> str:
    """" (the best epoch was the cap for: ...)" naming the seeds whose best epoch equals their cap, else ""."""
    caps = metrics.get("training", {}).get("epoch_caps", {})
    capped = [f"{pcx.common.display_name(name)} seed {record['seed']}" for name, entry in metrics.get("models", {}).items()
              for record in entry.get("seeds", []) if name in caps and record.get("best_epoch") == caps[name]]
    return f"; the best epoch was the cap for {', '.join(capped)}, so longer training might have helped" if capped else ""


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
    return (pcx.evaluation.markdown_table(pd.DataFrame(rows)) + "\n\n" + wrap(
            f"Rule: {choice['rule']}. Chosen: **{choice['chosen']}**. One seed ({choice['seed']}) per "
            f"recipe, train {choice['train_n']} / validation {choice['val_n']} images, weights {choice['weights']}, "
            f"{choice['machine']}, {choice['measured_at']}. The candidates had different epoch caps; a "
            f"recipe marked \"hit the cap\" was still improving when stopped, so the rule may under-rate it. "
            f"The same validation split then also serves early stopping, thresholds, ensemble members and "
            f"the app default, so validation figures of the chosen models are optimistic."))


def train_serve_section(report: dict) -> str:
    """One sentence from results/train_serve_consistency.json (scripts/train_serve_consistency.py)."""
    return wrap(
        f"With the app's default model ({pcx.common.display_name(report['model'])}), over the {report['n_pairs']} "
        f"{report['splits']} at hand, the probability of PNEUMONIA from a full-size original (decoded and resized as "
        f"the app does) and from the data set's 224 px copy of it (what training read) differ by at most "
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

    table = pd.DataFrame({"model": rows["model"].map(pcx.common.display_name), "seed": rows["seed"].astype(str),
                          "best epoch": pair("best_epoch", 0), "test accuracy": pair("test.accuracy", 3),
                          "test ROC-AUC": pair("test.roc_auc", 4), "values compared": rows["fields_compared"],
                          "largest |difference|": rows["max_abs_diff"].map("{:.2g}".format),
                          "identical": [("yes" if same else "no") + (f" (only in the {only} run)" if only else "")
                                        for same, only in zip(rows["identical"], rows["only_in"])]})
    before, after = report["before"], report["after"]
    changes = report.get("code_changes")
    text = (f"{int(rows['identical'].sum())} of {len(rows)} rows identical in every value compared: each "
            f"record's metrics, bootstrap intervals, thresholds and epochs (wall times excluded). Before: the run "
            f"scored {before['scored_at']} at commit {before['code_commit']} ({before['machine']}); after: the run "
            f"scored {after['scored_at']} at commit {after['code_commit']} ({after['machine']}).")
    listed = ("Commits between the two that touch the package or the notebooks:\n\n"
              + bullets("\n".join(f"- `{line.split(' ', 1)[0]}` {line.split(' ', 1)[1]}" for line in changes))
              if changes else "No commit between the two touches the package or the notebooks." if changes == []
              else "")
    return pcx.evaluation.markdown_table(table) + "\n\n" + wrap(text) + ("\n\n" + listed if listed else "")


# ----------------------------------------------------------------------------------------------
# docs/data.md, docs/gradcam.md, docs/app_verification.md
# ----------------------------------------------------------------------------------------------
def patient_overlap_section(report: dict) -> str:
    """The overlap table of results/patient_overlap.json (written by data_visualization.ipynb), a
    sentence per class and what the id readings mean."""
    readings = "\n".join(f"- `{name}`: {text}" for name, text in report["readings"].items())
    return (pcx.evaluation.markdown_table(pcx.eda.patient_overlap_table(report)) + "\n\n"
            + wrap(pcx.eda.patient_overlap_summary(report)) +
            f"\n\nId readings (ids are compared within a class):\n\n{bullets(readings)}")


def data_findings_section(summary: dict) -> str:
    """The data notebook's findings (results/data_summary.json), as bullets."""
    return bullets(pcx.eda.data_findings(summary))


GRADCAM_VERDICTS = {"faithfulness_verdict", "sanity_verdict", "border_verdict"}
FAITHFULNESS_PREFIXES = ("deletion", "insertion", "faithfulness", "drop_", "n_curve")  # columns of the first table


def _number(value, digits: int = 3) -> str:
    """A cell: "–" for NaN, whole numbers without decimals, else ``digits`` decimals; text as it is."""
    import pandas as pd

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if pd.isna(value):
        return "–"
    return str(int(value)) if float(value).is_integer() else f"{value:.{digits}f}"


def _decimal(value, digits: int = 3) -> str:
    """A float cell with ``digits`` decimals, "–" for NaN."""
    import pandas as pd

    return "–" if pd.isna(value) else f"{value:.{digits}f}"


def _signed(value, digits: int = 3) -> str:
    import pandas as pd

    return "–" if pd.isna(value) else f"{value:+.{digits}f}"


def _with_interval(value, low, high, digits: int = 3) -> str:
    """``-0.075 [-0.090, -0.060]`` (signed), the bare value when the interval is missing."""
    import pandas as pd

    interval = "" if pd.isna(low) or pd.isna(high) else f" [{_signed(low, digits)}, {_signed(high, digits)}]"
    return _signed(value, digits) + interval


def _p_value(value) -> str:
    """A p-value: "–" when no test ran (NaN), "< 0.001" below that, else 3 decimals."""
    import pandas as pd

    return "–" if pd.isna(value) else "< 0.001" if value < 0.001 else f"{value:.3f}"


def _p_pair(row, name: str) -> str:
    """``0.016 (0.094)``: the sign test's p-value and its Holm-adjusted one, "–" when no test ran."""
    import pandas as pd

    if pd.isna(row[f"{name}_p"]):
        return "–"
    return f"{_p_value(row[f'{name}_p'])} ({_p_value(row[f'{name}_p_holm'])})"


def gradcam_checks_section(checks) -> str:
    """Markdown tables of results/gradcam_checks.csv (summarise_gradcam_checks), every column it has:
    a faithfulness table (deletion and insertion on the images with curves: areas of the map, its
    shifted copies and the noise order, the paired mean difference map - shifted with its 95% bootstrap
    interval, the images where the map does better, the sign test's p-value with Holm's, and the
    verdicts by the current and the old rule) and a sanity and borders table (rank correlation with
    the random-weights network's map, border share against a uniform map's, their counts, tests and
    verdicts). Verdicts are copied from the file, not re-derived; combined cells only where all their
    parts are present; any other column is shown on its own, readable, in the table its name belongs
    to; settings with one value for the whole table go to the settings line instead
    (:func:`gradcam_settings_section`). The file's earlier format renders too, its columns on their own."""
    import pandas as pd

    columns = set(checks.columns)
    used: set[str] = set()
    limit = pcx.gradcam_checks.RANK_CORR_LIMIT

    def has(*names: str) -> bool:
        if set(names) <= columns:
            used.update(names)
            return True
        return False

    def keys(row) -> dict:
        out = {}
        if has("model"):
            out["model"] = pcx.common.display_name(row["model"])
        if has("method"):
            out["method"] = pcx.reporting.METHOD_NAMES.get(row["method"], row["method"])
        if has("subset"):
            out["predictions"] = row["subset"]
        return out

    def faithfulness_cells(row) -> dict:
        out = {}
        if has("n_curve_images"):
            out["images with curves"] = _number(row["n_curve_images"])
        for kind, better in (("deletion", "lower"), ("insertion", "higher")):
            if has(f"{kind}_auc", f"{kind}_auc_shifted", f"{kind}_auc_noise"):
                out[f"{kind} area: map / shifted / noise"] = " / ".join(
                    _decimal(row[f"{kind}_auc{suffix}"]) for suffix in ("", "_shifted", "_noise"))
            if has(f"{kind}_diff_mean", f"{kind}_diff_ci_low", f"{kind}_diff_ci_high"):
                out[f"{kind}: map - shifted [95% CI]"] = _with_interval(
                    row[f"{kind}_diff_mean"], row[f"{kind}_diff_ci_low"], row[f"{kind}_diff_ci_high"])
            if has(f"{kind}_wins", f"{kind}_wins_noise", "n_curve_images"):
                out[f"{kind}: map {better} than shifted / noise in"] = (
                    f"{_number(row[f'{kind}_wins'])} / {_number(row[f'{kind}_wins_noise'])} of "
                    f"{_number(row['n_curve_images'])}")
            if has(f"{kind}_p", f"{kind}_p_holm"):
                out[f"{kind} sign test p (Holm)"] = _p_pair(row, kind)
        if has("faithfulness_verdict"):
            out["faithfulness"] = row["faithfulness_verdict"]
        if has("faithfulness_verdict_old_rule"):
            out["faithfulness, old rule"] = row["faithfulness_verdict_old_rule"]
        return out

    def sanity_and_border_cells(row) -> dict:
        out = {}
        if has("n_images", "n_normal", "n_pneumonia"):
            out["images (NORMAL / PNEUMONIA)"] = f"{_number(row['n_images'])} ({_number(row['n_normal'])} / " \
                                                 f"{_number(row['n_pneumonia'])})"
        if has("n_correct", "n_wrong"):
            out["correct / wrong"] = f"{_number(row['n_correct'])} / {_number(row['n_wrong'])}"
        if has("empty_maps"):
            out["empty maps"] = _number(row["empty_maps"])
        if has("rank_corr_median", "rank_corr_ci_low", "rank_corr_ci_high"):
            out["rank corr. with random weights: median [95% CI]"] = _with_interval(
                row["rank_corr_median"], row["rank_corr_ci_low"], row["rank_corr_ci_high"], 2)
        if has("sanity_passes", "n_images", "random_maps_constant"):
            out[f"|r| < {limit} in (random map constant)" if limit else "sanity passes in (random map constant)"] = (
                f"{_number(row['sanity_passes'])} of {_number(row['n_images'])} "
                f"({_number(row['random_maps_constant'])})")
        if has("sanity_p", "sanity_p_holm"):
            out["sanity sign test p (Holm)"] = _p_pair(row, "sanity")
        if has("sanity_verdict"):
            out["sanity"] = row["sanity_verdict"]
        if has("border_share", "border_share_uniform"):
            out["border share: map / uniform map"] = (f"{_decimal(row['border_share'], 2)} / "
                                                      f"{_decimal(row['border_share_uniform'], 2)}")
        if has("border_passes", "n_images"):
            out["map below uniform in"] = f"{_number(row['border_passes'])} of {_number(row['n_images'])}"
        if has("border_p", "border_p_holm"):
            out["border sign test p (Holm)"] = _p_pair(row, "border")
        if has("border_verdict"):
            out["borders"] = row["border_verdict"]
        return out

    first, second = [], []
    for _, row in checks.iterrows():
        used.clear()
        key = keys(row)
        faithfulness, other = faithfulness_cells(row), sanity_and_border_cells(row)
        for column in checks.columns:  # whatever else the file holds, readable, where its name belongs
            if column in used or (column in SETTINGS_COLUMNS and checks[column].nunique(dropna=False) == 1):
                continue  # one value for the whole table: in the settings line, not in every row
            target = faithfulness if column.startswith(FAITHFULNESS_PREFIXES) else other
            target[pcx.reporting.readable_column(column)] = _number(row[column])
            for verdict in ("faithfulness", "faithfulness, old rule", "sanity", "borders"):
                if verdict in target:  # verdicts stay last, after the figures they rest on
                    target[verdict] = target.pop(verdict)
        first.append({**key, **faithfulness})
        second.append({**key, **other})
    return ("Faithfulness (deletion and insertion curves):\n\n" + pcx.evaluation.markdown_table(pd.DataFrame(first))
            + "\n\nSanity (random weights) and borders:\n\n" + pcx.evaluation.markdown_table(pd.DataFrame(second)))


def container_section(report: dict) -> str:
    """One paragraph from bench/container.json (scripts/build_container.sh): the image, the model it
    served and what the check got back; keys the file lacks are left out of the sentence."""
    parts = [f"Last run ({report.get('measured_at_utc', report.get('measured_at', 'date not recorded'))})"]
    if report.get("image"):
        size = f", {report['image_size_mb']:.0f} MB as podman reports it" if report.get("image_size_mb") else ""
        base = f", base `{report['base_image']}`" if report.get("base_image") else ""
        builder = f" ({report['builder']})" if report.get("builder") else ""
        parts.append(f"image `{report['image']}`{size}{base}{builder}")
    model = report.get("model") or {}
    if model.get("name"):
        parts.append(f"serving `{model['name']}`" + (f" ({model['source']})" if model.get("source") else ""))
    request, response = report.get("request") or {}, report.get("response") or {}
    if request and response:
        width, height = request.get("xray_width_height", ("?", "?"))
        answer = f"HTTP {response.get('http_status', '?')}"
        if "label" in response and "probability" in response:
            answer += f", {response['label']} at probability {response['probability']:.3f}"
        if "threshold" in response:
            answer += f" (threshold {response['threshold']:.3f})"
        if response.get("heatmap_png_width_height"):
            answer += " , Grad-CAM PNG {} x {}".format(*response["heatmap_png_width_height"]).replace(" ,", ",")
        parts.append(f"`{request.get('endpoint', 'POST /api/predict')}` with `{request.get('xray', 'an X-ray')}` "
                     f"({width} x {height} px, true label {request.get('true_label', '?')}): {answer}")
    latency = report.get("latency_s") or {}
    timing = []
    if "startup_until_healthy_s" in report:
        timing.append(f"healthy after {report['startup_until_healthy_s']:.1f} s")
    if "first_request" in latency:
        timing.append(f"first request {latency['first_request']:.2f} s")
    if "warm_median" in latency:
        timing.append(f"warm median {latency['warm_median']:.2f} s over {latency.get('warm_requests', '?')} requests"
                      + (f" (during the soak, {report['soak'].get('clients', '?')} clients at once)"
                         if isinstance(report.get("soak"), dict) else ""))
    if timing:
        parts.append(", ".join(timing))
    soak = report.get("soak")
    if isinstance(soak, dict) and soak:
        parts.append("soak: " + ", ".join(f"{pcx.reporting.readable_column(k)} {v}" for k, v in soak.items()
                                          if isinstance(v, (str, int, float, bool))))
        kinds = [f"{kind} {summary['uploads']} (HTTP " + ", ".join(f"{code} x {n}" for code, n in summary["http_status"].items())
                 + (f", p50 {summary['latency_ms_p50'] / 1000:.2f} s" if summary.get("latency_ms_p50") is not None else "") + ")"
                 for kind, summary in (soak.get("by_kind") or {}).items() if summary.get("uploads")]
        if kinds:
            parts.append("uploads by kind: " + ", ".join(kinds))
        memory = soak.get("worker_memory") or {}
        if "second_half_growth_mb" in memory:
            parts.append(f"gunicorn memory {memory['total_rss_mb'][0]:.0f} MB after the first round, "
                         f"{memory['total_rss_mb'][-1]:.0f} MB at the end, +{memory['second_half_growth_mb']:.0f} MB over "
                         f"the second half (limit {memory['second_half_growth_limit_mb']:.0f} MB), "
                         f"{memory['processes_that_answered']} workers answered")
    requirements = report.get("requirements") or {}
    if requirements:
        parts.append("requirements: " + ", ".join(f"{name} {'met' if v['met'] else 'NOT MET'} ({v['measured']})"
                                                   for name, v in requirements.items()))
    if report.get("image_healthcheck"):
        parts.append(str(report["image_healthcheck"]))
    return wrap("; ".join(parts[:1]) + ": " + "; ".join(parts[1:]) + "." if len(parts) > 1 else parts[0] + ".")


def app_summary_section(app_results: dict | None, container: dict | None) -> str:
    """The README's app line: latency with the default network (1 client p50, most clients p95)
    from bench/app_results.json, and the image size from bench/container.json."""
    parts = []
    if app_results:
        rows = [r for r in app_results.get("results", []) if r.get("image", "").startswith("full-size")]
        single = [r for r in rows if r.get("concurrency") == 1]
        busiest = max(rows, key=lambda r: r.get("concurrency", 0)) if rows else None
        if single:
            parts.append(f"a full-size upload takes {single[0]['latency_ms_p50'] / 1000:.2f} s (median, 1 client)")
        if busiest and busiest is not (single[0] if single else None):
            parts.append(f"{busiest['latency_ms_p95'] / 1000:.2f} s (95th percentile, {busiest['concurrency']} clients)")
        if parts:
            parts[0] = (f"Measured {app_results.get('date', '')[:10]} with "
                        f"{pcx.common.display_name(app_results.get('model', 'the default network'))}: " + parts[0])
    if container and container.get("image_size_mb"):
        model = (container.get("model") or {}).get("name")
        parts.append(f"the container image is {container['image_size_mb']:.0f} MB"
                     + (f" (serving `{model}` when checked)" if model else ""))
    return wrap("; ".join(parts) + ".") if parts else "Not measured yet (`bench/bench_app.py`)."


SETTINGS_COLUMNS = ("deletion_fill", "insertion_blur_sigma", "curve_steps", "baseline_draws",
                    "baseline_draws_per_point")


def gradcam_settings_section(checks) -> str:
    """The settings of the checks that results/gradcam_checks.csv records (one value per column), or,
    for the file's earlier format (no settings columns), what that version of the checks did."""
    found = [f"{pcx.reporting.readable_column(c)}: {_number(checks[c].iloc[0])}" for c in SETTINGS_COLUMNS
             if c in checks.columns and checks[c].nunique(dropna=False) == 1]
    if found:
        return wrap("; ".join(found) + " ([what each means](gradcam_method.md)).")
    return wrap("The committed file comes from the checks' earlier version, which records no settings: its deletion "
                "filled pixels with a blurred copy, its baseline ranked pixels by random noise drawn per map cell, and "
                "its verdicts rested on sign tests alone. The next run of grad_cam.ipynb replaces it.")


def app_speed_section(report: dict) -> str:
    """bench/app_results.json: latency and throughput of the app's POST /api/predict."""
    from bench_app import markdown

    return (markdown(report["results"]) + "\n\n" +
            wrap(f"Model {pcx.common.display_name(report['model'])}, {report['machine']['cpus']} CPUs, "
                 f"{report['requests_per_measurement']} uploads per row, {report['date']}."))


# ----------------------------------------------------------------------------------------------
# Putting it together
# ----------------------------------------------------------------------------------------------
def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def sections(root: Path = ROOT) -> list[tuple[Path, str, str]]:
    """Every (file, marker, content) to write, from the inputs found under ``root``."""
    import pandas as pd

    readme, app_readme, docs = root / "README.md", root / "app" / "README.md", root / "docs"
    out: list[tuple[Path, str, str]] = [(readme, "published", published_section())]
    metrics = _json(root / "results" / "metrics.json")
    checks_path = root / "results" / "gradcam_checks.csv"
    checks = pd.read_csv(checks_path) if checks_path.is_file() else None
    data = _json(root / "results" / "data_summary.json")
    stale = checks is not None and "deletion_diff_mean" not in checks.columns  # the earlier checks' table
    if metrics is not None:
        out += [(readme, "findings", findings_section(metrics, None if stale else checks, data)),
                (readme, "results", results_section(metrics)),
                (readme, "served", served_section(metrics)),
                (docs / "reproducibility.md", "targets", targets_section(metrics)),
                (docs / "reproducibility.md", "training", training_section(metrics))]
        if "protocol" in metrics:
            out.append((docs / "reproducibility.md", "protocol", protocol_section(metrics)))
    if checks is not None:
        out += [(docs / "gradcam.md", "gradcam-checks", gradcam_checks_section(checks)),
                (docs / "gradcam.md", "gradcam-settings", gradcam_settings_section(checks))]
        if {"model", "method"} <= set(checks.columns) and GRADCAM_VERDICTS & set(checks.columns):
            out.append((readme, "gradcam-verdicts", (STALE_CHECKS_NOTE if stale else "") + gradcam_verdicts_section(checks)))
        else:
            print(f"{checks_path} has no verdict columns: re-run grad_cam.ipynb; the README's Grad-CAM table "
                  "is left as it is", file=sys.stderr)
    if data is not None:
        out += [(docs / "data.md", "data-findings", data_findings_section(data)),
                (readme, "data", data_section(data))]
    for name, path, marker, render in (
            ("rerun_agreement.json", docs / "reproducibility.md", "rerun", rerun_section),
            ("xception_recipe_choice.json", docs / "reproducibility.md", "xception-recipe", xception_recipe_section),
            ("patient_overlap.json", docs / "data.md", "patient-overlap", patient_overlap_section)):
        report = _json(root / "results" / name)
        if report is not None:
            out.append((path, marker, render(report)))
    serve = _json(root / "results" / "train_serve_consistency.json")
    if serve is not None:
        section = train_serve_section(serve)
        out += [(docs / "reproducibility.md", "train-serve", section), (app_readme, "train-serve", section)]
    container = _json(root / "bench" / "container.json")
    if container is not None:
        out.append((docs / "app_verification.md", "container", container_section(container)))
    bench = _json(root / "bench" / "results.json")
    if bench is not None:
        out += [(docs / "performance.md", "speed", wrap(bench_renderers().render_table(bench))),
                (docs / "reproducibility.md", "budget", budget_section(bench)),
                (readme, "cost", cost_section(bench)), (app_readme, "cost", cost_section(bench, docs="../docs"))]
    app_speed = _json(root / "bench" / "app_results.json")
    if app_speed is not None:
        out.append((docs / "performance.md", "app-speed", app_speed_section(app_speed)))
    if app_speed is not None or container is not None:
        out.append((readme, "app-summary", app_summary_section(app_speed, container)))
    precision = _json(root / "bench" / "precision_check.json")
    if precision is not None:
        out.append((docs / "reproducibility.md", "precision-check",
                    wrap(bench_renderers().render_precision_check(precision))))
    return out


def main(root: Path = ROOT) -> None:
    for path, marker, content in sections(root):
        replace_marked_section(path, marker, content)


if __name__ == "__main__":
    main()
