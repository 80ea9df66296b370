"""Regenerate the marked sections of README.md, docs/*.md and app/README.md from the files the
notebooks, scripts and benchmarks wrote. Text between ``<!-- name:start -->`` and
``<!-- name:end -->`` is replaced; everything else is left as written.

    .venv/bin/python scripts/update_readme.py

Inputs (each optional; a section whose input is missing is left as it is):

- results/metrics.json (model_deep_learning.ipynb): README "question", "answer", "trust" (the first
  screen, with results/patient_overlap.json, results/size_baseline.json, results/squash_sensitivity.json
  and results/data_summary.json), "results", "served"; docs/reproducibility.md "protocol", "targets",
  "training", "model-findings" (the model notebook's findings);
- results/gradcam_checks.csv (grad_cam.ipynb): README "gradcam-verdicts" (and findings); the whole of
  docs/gradcam.md and docs/gradcam_method.md (pneumonia_cxr.gradcam_report);
- results/data_summary.json (data_visualization.ipynb): README findings (the shortcut caveat),
  docs/data.md "data-findings"; results/patient_overlap.json: docs/data.md "patient-overlap";
- results/rerun_agreement.json (scripts/compare_runs.py): docs/reproducibility.md "rerun";
- results/xception_recipe_choice.json: docs/reproducibility.md "xception-recipe";
- results/train_serve_consistency.json: docs/reproducibility.md and app/README.md "train-serve";
- bench/results.json: docs/performance.md "speed", docs/reproducibility.md "budget", README and
  app/README.md "cost"; bench/app_results.json: docs/performance.md "app-speed";
  bench/precision_check.json: docs/reproducibility.md "precision-check";
  bench/container.json: docs/app_verification.md "container".

Always: docs/reproducibility.md "published" (pneumonia_cxr.common.PUBLISHED_RESULTS).
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


def bench_renderers(root: Path = ROOT, name: str = "render_table"):
    """bench/<name>.py (render_table by default), loaded from its file: bench/ is a folder of scripts,
    not a package, and not on the import path; its scripts import their helper bench/common.py as
    ``common``, which is loaded the same way first."""
    def load(module_name: str):
        spec = importlib.util.spec_from_file_location(module_name, root / "bench" / f"{module_name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    if name != "render_table" and "common" not in sys.modules and (root / "bench" / "common.py").is_file():
        sys.modules["common"] = load("common")
    return load(name)


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
def question_section(metrics: dict) -> str:
    """The README's question, as this run tested it (pcx.front_page.readme_question), wrapped."""
    return wrap(pcx.front_page.readme_question(metrics))


def answer_section(metrics: dict) -> str:
    """The README's answer in 3-5 plain sentences (pcx.front_page.readme_answer), wrapped."""
    return wrap(pcx.front_page.readme_answer(metrics))


def trust_section(metrics: dict, overlap: dict | None = None, baseline: dict | None = None,
                  sensitivity: dict | None = None, data: dict | None = None) -> str:
    """The README's "How far to trust this" bullets (pcx.front_page.trust_list), wrapped."""
    return bullets(pcx.front_page.trust_list(metrics, overlap, baseline, sensitivity, data))


def model_findings_section(metrics: dict) -> str:
    """docs/reproducibility.md: the model notebook's findings (pcx.findings.model_findings), wrapped."""
    return bullets(pcx.findings.model_findings(metrics))


def size_shortcut_section(baseline: dict | None, sensitivity: dict | None) -> str:
    """docs/data.md: the size-only baseline's table and the shortcut caveat with the squash sensitivity."""
    if not baseline:
        return wrap("Not measured yet: `data_visualization.ipynb` writes the size-only baseline "
                    "(`results/size_baseline.json`) and `model_deep_learning.ipynb` the squash sensitivity "
                    "(`results/squash_sensitivity.json`).")
    return (pcx.evaluation.markdown_table(pcx.shortcut.baseline_table(baseline).reset_index()) + "\n\n"
            + wrap(pcx.shortcut.shortcut_caveat(baseline, sensitivity)))


def training_curves_section(metrics: dict) -> str:
    """docs/reproducibility.md: the training-curve figure the model notebook writes for each family that
    ran (``images_for_readme/curves_<family>.png``)."""
    shown = [f"![Training curves of {pcx.common.display_name(name)}, its saved seed]"
             f"(../images_for_readme/curves_{name}.png)" for name in pcx.findings.families(metrics)]
    return "\n\n".join(shown) or "No family was trained in this run."


def api_example_section(manifest: dict | None, metadata: dict | None) -> str:
    """app/README.md's curl example; the threshold is the default bundle's (``models/<default>.json``)
    when trained networks are present, else a placeholder, never a typed number."""
    model = (manifest or {}).get("default")
    threshold = (metadata or {}).get("threshold")
    shown = f"{threshold:.3f}" if isinstance(threshold, (int, float)) else "<the bundle's threshold>"
    return ("```bash\n"
            "curl -F file=@person1_virus_6.jpeg http://127.0.0.1:5000/api/predict\n"
            f"# {{\"label\": \"PNEUMONIA\", \"probability\": <0 to 1>, \"threshold\": {shown}, "
            f"\"model\": \"{model or '...'}\",\n"
            "#  \"heatmap_png\": \"<base64 PNG of the Grad-CAM overlay>\"}\n"
            "curl http://127.0.0.1:5000/healthz       # {\"status\": \"ok\", \"model\": \"...\", \"threshold\": ...}\n"
            "```")


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
        precision = (training.get("scratch_recipe") or {}).get("precision")
        native = (metrics.get("cpu") or {}).get("native_bfloat16")
        note.append(f"Trained on {metrics['machine']}"
                    + ("" if native is None else f" ({'with' if native else 'without'} native bfloat16)")
                    + (f", in {precision}" if precision else "") + ".")
    return pcx.evaluation.markdown_table(pcx.front_page.compact_results_table(metrics)) + "\n\n" + wrap(" ".join(note))


def _ordinal(n: int) -> str:
    """1 -> "1st", 2 -> "2nd", 5 -> "5th", 11 -> "11th"."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def published_section() -> str:
    """Published results on the same official test split, each with its citation."""
    return (pcx.evaluation.markdown_table(pcx.front_page.published_table()) + "\n\n"
            + wrap("Quoted from their sources; their protocols, splits and thresholds differ from ours, and the "
                   "original study and Kermany et al. report a single run."))


def served_section(metrics: dict) -> str:
    """One sentence: the network the app serves by default and its own test row."""
    served = pcx.findings.served_entry(metrics)
    if not served:
        return "No default network recorded in `results/metrics.json`."
    seed = f" (seed {served['seed']})" if served.get("seed") is not None else ""
    chosen = ("the network the validation rule chose before the test set was scored" if metrics.get("served")
              else "the run's default network (highest validation ROC-AUC, the earlier rule)")
    text = f"Without `--model` the app serves {pcx.common.display_name(served['name'])}{seed}, {chosen}"
    test = served.get("test")
    if test:
        text += (f"; on the test set this one network (not its family's seed-ensemble, so the figures differ from the "
                 f"table above) scores accuracy {pcx.findings.number(test.get('accuracy'))}, ROC-AUC "
                 f"{pcx.findings.number(test.get('roc_auc'))}, sensitivity {pcx.findings.number(test.get('sensitivity'))} "
                 f"and specificity {pcx.findings.number(test.get('specificity'))}")
    verdicts = pcx.findings.served_verdicts(metrics)
    if verdicts:
        missed = [v["target"] for v in verdicts if not v["met"]]
        text += (f". Test targets set for the best family: {len(verdicts) - len(missed)} of {len(verdicts)} met"
                 + (f" (missed: {', '.join(missed)})" if missed else ""))
    return wrap(text + ".")


def data_section(summary: dict) -> str:
    """The README's data line: the source and the counts data_visualization.ipynb found."""
    official = summary["official"]
    counts = ", ".join(f"{split} {sum(official[split].values()):,}" for split in ("train", "val", "test") if split in official)
    return wrap(f"**Data:** Kermany, Zhang, Goldbaum, Mendeley Data v2, "
                f"[doi:10.17632/rscbjbr9sj.2](https://doi.org/10.17632/rscbjbr9sj.2), CC BY 4.0: "
                f"{summary['images']:,} chest X-rays of children aged one to five; official split {counts}. Its patient "
                f"ids, the size shortcut and every figure of the data notebook: [docs/data.md](docs/data.md).")


def cost_section(bench: dict, docs: str = "docs") -> str:
    """What the main command costs: time on the measured machine (full run from empty caches, quick
    mode) with their budget verdicts, and the download, from bench/results.json; ``docs``: the docs
    folder relative to the file the text goes into."""
    full, quick = bench.get("reproduction_wall_time"), bench.get("reproduction_quick_wall_time")
    parts = []
    if full:
        machine = full.get("machine", {})
        verb = "trained" if full.get("caches") == "empty" else "loaded from the run cache"
        scope = f"; it {verb} {full['model']}" if full.get("model") else ""
        parts.append(f"The full run took {full['ours'] / 60:.1f} min{_budget_words('reproduction_wall_time', full)} on "
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
    """The project's targets on the official test set, each met or missed with the measured figure."""
    verdicts = pcx.findings.target_verdicts(metrics)
    lines = [f"- {v['target']}: {'**met**' if v['met'] else '**missed**'} ({v['measured']})." for v in verdicts]
    missing = pcx.findings.not_run(metrics)
    note = f"\n\nNot run, so not judged: {pcx.findings.not_run_list(missing)}." if missing else ""
    best = pcx.findings.best_family(metrics)
    if best is None:
        head = ""
    elif pcx.findings.chosen_on_validation(metrics):
        head = (f"Verdicts computed from `results/metrics.json`; the targets for the best family are judged on "
                f"the seed-ensemble of the family chosen on validation ({pcx.common.display_name(best)}, the served "
                f"network's family), not on the family with the highest test score. No rule chose the "
                f"seed-ensemble itself; the served network, one seed, is judged after the list.\n\n")
    else:
        head = (f"Verdicts computed from `results/metrics.json`; the best family is the one with the highest test "
                f"accuracy ({pcx.common.display_name(best)}).\n\n")
    served = pcx.findings.served_entry(metrics) or {}
    served_lines = [f"- {v['target']}: {'**met**' if v['met'] else '**missed**'} ({v['measured']})."
                    for v in pcx.findings.served_verdicts(metrics)]
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
    if entry.get("caches") not in (None, "empty"):  # the budget is for a run from empty caches
        return f" (budget {limit} min from empty caches: not judged, this run's caches were {entry['caches']})"
    return f" (budget {limit} min: {'met' if entry['ours'] / 60 <= limit else 'not met'})"


def budget_section(bench: dict) -> str:
    """The time budget, each with its verdict computed from bench/results.json: a run counts only if it
    started with empty caches (or did not record what they held)."""
    lines = []
    for name, limit in BUDGET_MINUTES.items():
        entry = bench.get(name)
        aim = BUDGET_AIM_MINUTES.get(name)
        what = "Full reproduction with empty caches" if name == "reproduction_wall_time" else "Quick mode"
        target = f"≤ {limit} min" + (f" (aim {aim})" if aim else "")
        if entry is None or entry.get("caches") not in (None, "empty"):  # a budget holds for a run from empty caches
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
             "what changed before this scoring": h.get("what_changed", "") + (
                 f" After it: {h['reporting_changed_after']}" if h.get("reporting_changed_after") else ""),
             "test accuracy / ROC-AUC": "; ".join(
                 f"{pcx.common.display_name(name)} {pcx.findings.number(r.get('accuracy'))} / "
                 f"{pcx.findings.number(r.get('roc_auc'))}" for name, r in h.get("results", {}).items())}
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
    for key, label in (("scratch_recipe", "Scratch CNN recipe"), ("head_recipe", "Frozen-base heads' recipe"),
                       ("xception_recipe", "Xception recipe")):
        recipe = training.get(key)
        if isinstance(recipe, dict) and recipe:
            lines.append(f"- **{label}:** " + ", ".join(f"{pcx.reporting.readable_column(k)} {v}" for k, v in recipe.items()
                                                       if v is not None))
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
            f"record's metrics, bootstrap intervals, thresholds and epochs (wall times, and whether a seed was trained or "
            f"loaded from the run cache, excluded). Before: the run "
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


def gradcam_checks_section(checks) -> str:
    """The README's Grad-CAM verdicts (between its ``gradcam-verdicts`` markers), in the words of
    :func:`pneumonia_cxr.gradcam_report.verdicts_section`, and which network each row explains."""
    return (pcx.gradcam_report.verdicts_section(checks) + "\n\n" +
            wrap("Each row explains one network: its family's saved seed (the lowest pooled validation log loss; "
                 "`seed` in the bundle's metadata, `models/<family>.json`), not the seed-ensemble of the results "
                 "table."))


def data_findings_section(summary: dict) -> str:
    """The data notebook's findings (results/data_summary.json), as bullets."""
    return bullets(pcx.eda.data_findings(summary))


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


def app_speed_section(report: dict) -> str:
    """bench/app_results.json: latency and throughput of the app's POST /api/predict."""
    markdown = bench_renderers(name="bench_app").markdown

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
    out: list[tuple[Path, str, str]] = [(docs / "reproducibility.md", "published", published_section())]
    metrics = _json(root / "results" / "metrics.json")
    checks_path = root / "results" / "gradcam_checks.csv"
    checks = pd.read_csv(checks_path) if checks_path.is_file() else None
    data = _json(root / "results" / "data_summary.json")
    overlap = _json(root / "results" / "patient_overlap.json")
    baseline = _json(root / "results" / "size_baseline.json")
    sensitivity = _json(root / "results" / "squash_sensitivity.json")
    if metrics is not None:
        out += [(readme, "question", question_section(metrics)),
                (readme, "answer", answer_section(metrics)),
                (readme, "trust", trust_section(metrics, overlap, baseline, sensitivity, data)),
                (docs / "reproducibility.md", "model-findings", model_findings_section(metrics)),
                (docs / "reproducibility.md", "training-curves", training_curves_section(metrics)),
                (readme, "results", results_section(metrics)),
                (readme, "served", served_section(metrics)),
                (docs / "reproducibility.md", "targets", targets_section(metrics)),
                (docs / "reproducibility.md", "training", training_section(metrics))]
        if "protocol" in metrics:
            out.append((docs / "reproducibility.md", "protocol", protocol_section(metrics)))
    if checks is not None:
        out.append((readme, "gradcam-verdicts", gradcam_checks_section(checks)))
    out.append((docs / "data.md", "size-shortcut", size_shortcut_section(baseline, sensitivity)))
    manifest = _json(root / "models" / "manifest.json")
    if manifest is not None and manifest.get("default"):
        metadata = _json(root / "models" / f"{manifest['default']}.json")
        out.append((app_readme, "api-example", api_example_section(manifest, metadata)))
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
        try:
            out.append((docs / "reproducibility.md", "precision-check",
                        wrap(bench_renderers().render_precision_check(precision))))
        except (KeyError, TypeError) as error:  # a file of another format than bench/render_table.py reads
            print(f"bench/precision_check.json does not have the format bench/render_table.py reads ({error!r}): "
                  "re-run bench/check_bf16_accuracy.py; the precision-check section is left as it is", file=sys.stderr)
    return out


def write_gradcam_docs(root: Path = ROOT) -> list[Path]:
    """docs/gradcam.md and docs/gradcam_method.md, wholly generated from results/gradcam_checks.csv
    and the rules' constants (pneumonia_cxr.gradcam_report.write_gradcam_docs); nothing without the file."""
    import pandas as pd

    checks_path = root / "results" / "gradcam_checks.csv"
    if not checks_path.is_file():
        return []
    return pcx.gradcam_report.write_gradcam_docs(pd.read_csv(checks_path), root / "docs", root / "images_for_readme")


def main(root: Path = ROOT) -> None:
    for path, marker, content in sections(root):
        replace_marked_section(path, marker, content)
    write_gradcam_docs(root)


if __name__ == "__main__":
    main()
