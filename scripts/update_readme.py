"""Regenerate the marked sections of README.md, docs/*.md and app/README.md from the files the
notebooks, scripts and benchmarks wrote. Text between ``<!-- name:start -->`` and
``<!-- name:end -->`` is replaced; everything else is left as written.

    .venv/bin/python scripts/update_readme.py

Inputs (each optional; a section whose input is missing is left as it is):

- results/metrics.json (model_deep_learning.ipynb): README "findings", "results", "served";
  docs/reproducibility.md "protocol", "targets", "training";
- results/gradcam_checks.csv (grad_cam.ipynb): README "gradcam-verdicts" (and findings);
  docs/gradcam.md "gradcam-checks" (every column the file has);
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

import json
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import functions_for_grad_cam as F  # noqa: E402

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
    """The README's first-screen answer: 4-6 bullets (F.readme_findings), wrapped."""
    return bullets(F.readme_findings(metrics, checks, data))


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
                "bootstrap intervals over test images. Every choice (epochs, thresholds, saved seeds, ensemble, "
                "served network) follows a validation rule written down before the test set was scored: "
                "[the rule](docs/reproducibility.md#test-protocol).")
    if ensemble.get("members"):
        note.append("The cross-model ensemble averages "
                    + ", ".join(F.display_name(m) for m in ensemble["members"]) + ", chosen on validation.")
    if training.get("crop") or training.get("augmentation"):
        note.append("Crop and augmentation: [docs/reproducibility.md](docs/reproducibility.md#models-and-training).")
    if metrics.get("machine"):
        note.append(f"Trained on {metrics['machine']}.")
    return F.markdown_table(F.compact_results_table(metrics)) + "\n\n" + wrap(" ".join(note))


def published_section() -> str:
    """Published results on the same official test split, each with its citation."""
    return (F.markdown_table(F.published_table()) + "\n\n"
            + wrap("Quoted from their sources; their protocols, splits and thresholds differ from ours, and the "
                   "original study and Kermany et al. report a single run."))


def served_section(metrics: dict) -> str:
    """One sentence: the network the app serves by default and its own test row."""
    served = F.served_entry(metrics)
    if not served:
        return "No default network recorded in `results/metrics.json`."
    seed = f" (seed {served['seed']})" if served.get("seed") is not None else ""
    text = (f"Without `--model` the app serves {F.display_name(served['name'])}{seed}, the network the "
            f"validation rule chose before the test set was scored")
    test = served.get("test")
    if test:
        text += (f"; on the test set it scores accuracy {test['accuracy']:.3f}, ROC-AUC {test['roc_auc']:.3f}, "
                 f"sensitivity {test['sensitivity']:.3f} and specificity {test['specificity']:.3f}")
    return wrap(text + ".")


def gradcam_verdicts_section(checks) -> str:
    """The README's compact Grad-CAM table: one row per model, each verdict given for every method
    (``Grad-CAM / Grad-CAM++``), all predictions."""
    table = F.gradcam_verdict_table(checks)
    if "method" not in table or "model" not in table:
        return F.markdown_table(table)
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
    import pandas as pd

    return (F.markdown_table(pd.DataFrame(rows)) + "\n\n"
            + f"Each cell: {' / '.join(methods)}. Figures behind each verdict: [docs/gradcam.md](docs/gradcam.md).")


def data_section(summary: dict) -> str:
    """The README's data line: the source and the counts data_visualization.ipynb found."""
    official = summary["official"]
    counts = ", ".join(f"{split} {sum(official[split].values()):,}" for split in ("train", "val", "test") if split in official)
    return wrap(f"**Data:** Kermany, Zhang, Goldbaum, Mendeley Data v2, "
                f"[doi:10.17632/rscbjbr9sj.2](https://doi.org/10.17632/rscbjbr9sj.2), CC BY 4.0: "
                f"{summary['images']:,} chest X-rays of children aged one to five; official split {counts}.")


def cost_section(bench: dict) -> str:
    """What the main command costs: time on the measured machine (full run from empty caches, quick
    mode) and the download, from bench/results.json."""
    full, quick = bench.get("reproduction_wall_time"), bench.get("reproduction_quick_wall_time")
    parts = []
    if full:
        machine = full.get("machine", {})
        scope = f"; it trained {full['model']}" if full.get("model") else ""
        parts.append(f"The full run took {full['ours'] / 60:.0f} min on {machine.get('cores', '?')} CPU cores "
                     f"({machine.get('cpu', 'CPU not recorded')}, no GPU) from empty caches, with the data "
                     f"already on disk{scope}.")
    if quick:
        parts.append(f"Quick mode took {quick['ours'] / 60:.1f} min.")
    parts.append(f"The data download is about {KAGGLE_DOWNLOAD_GB} GB.")
    return wrap(" ".join(parts))


# ----------------------------------------------------------------------------------------------
# docs/reproducibility.md
# ----------------------------------------------------------------------------------------------
def targets_section(metrics: dict) -> str:
    """The project's targets on the official test set, each met or not met with the measured figure."""
    verdicts = F.target_verdicts(metrics)
    lines = [f"- {v['target']}: {'**met**' if v['met'] else '**not met**'} ({v['measured']})." for v in verdicts]
    missing = F.not_run(metrics)
    note = ("\n\nNot run, so not judged: " + "; ".join(f"{F.display_name(n)} ({why})" for n, why in missing.items())
            + "." if missing else "")
    best = F.best_family(metrics)
    head = (f"Verdicts computed from `results/metrics.json`; the best family is the one with the highest test "
            f"accuracy ({F.display_name(best)}).\n\n" if best else "")
    return head + bullets("\n".join(lines)) + note


BUDGET_MINUTES = {"reproduction_wall_time": 90, "reproduction_quick_wall_time": 5}
BUDGET_AIM_MINUTES = {"reproduction_wall_time": 75}


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
    rule = protocol.get("selection_rule") or list(F.SELECTION_RULE)
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
                 f"{F.display_name(name)} {r['accuracy']:.3f} / {r['roc_auc']:.3f}" if r.get("roc_auc") is not None
                 else f"{F.display_name(name)} {r['accuracy']:.3f}" for name, r in h.get("results", {}).items())}
            for h in protocol.get("history", []) if not h.get("quick")]
    if rows:
        published = protocol.get("test_scorings", sum(r["published"] == "yes" for r in rows))
        parts.append(f"Every scoring of the official test set so far: {len(rows)} in all, {published} of them for "
                     f"published results:\n\n{F.markdown_table(pd.DataFrame(rows))}")
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
    lines += [f"- **{F.readable_column(key)}:** {value}" for key, value in training.items()
              if key not in ("crop", "augmentation") and isinstance(value, (str, int, float))]
    return bullets("\n".join(lines)) if lines else "The run recorded no crop or augmentation (`training` in `results/metrics.json`)."


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
    return (F.markdown_table(pd.DataFrame(rows)) + "\n\n" + wrap(
            f"Rule: {choice['rule']}. Chosen: **{choice['chosen']}**. One seed ({choice['seed']}) per "
            f"recipe, train {choice['train_n']} / validation {choice['val_n']} images, weights {choice['weights']}, "
            f"{choice['machine']}, {choice['measured_at']}. The candidates had different epoch caps; a "
            f"recipe marked \"hit the cap\" was still improving when stopped, so the rule may under-rate it. "
            f"The same validation split then also serves early stopping, thresholds, ensemble members and "
            f"the app default, so validation figures of the chosen models are optimistic."))


def train_serve_section(report: dict) -> str:
    """One sentence from results/train_serve_consistency.json (scripts/train_serve_consistency.py)."""
    return wrap(
        f"With the app's default model ({F.display_name(report['model'])}), over the {report['n_pairs']} "
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

    table = pd.DataFrame({"model": rows["model"].map(F.display_name), "seed": rows["seed"].astype(str),
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
    return F.markdown_table(table) + "\n\n" + wrap(text) + ("\n\n" + listed if listed else "")


# ----------------------------------------------------------------------------------------------
# docs/data.md, docs/gradcam.md, docs/app_verification.md
# ----------------------------------------------------------------------------------------------
def patient_overlap_section(report: dict) -> str:
    """The overlap table of results/patient_overlap.json (written by data_visualization.ipynb), a
    sentence per class and what the id readings mean."""
    readings = "\n".join(f"- `{name}`: {text}" for name, text in report["readings"].items())
    return (F.markdown_table(F.patient_overlap_table(report)) + "\n\n" + wrap(F.patient_overlap_summary(report)) +
            f"\n\nId readings (ids are compared within a class):\n\n{bullets(readings)}")


def data_findings_section(summary: dict) -> str:
    """The data notebook's findings (results/data_summary.json), as bullets."""
    return bullets(F.data_findings(summary))


GRADCAM_VERDICTS = {"faithfulness_verdict", "sanity_verdict", "border_verdict"}


def gradcam_checks_section(checks) -> str:
    """Markdown table of results/gradcam_checks.csv (summarise_gradcam_checks), every column it has:
    areas and drops of the map against the same-shape random order with the number of images where
    the map wins, and the verdicts grad_cam.ipynb computed (copied, not re-derived), in combined
    columns where their parts are present; any other column is shown on its own, readable."""
    import pandas as pd

    columns = set(checks.columns)
    used: set[str] = set()

    def has(*names: str) -> bool:
        if set(names) <= columns:
            used.update(names)
            return True
        return False

    def number(value, digits: int = 3) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(value)
        if pd.isna(value):
            return "–"
        return str(int(value)) if float(value).is_integer() and abs(value) >= 1 else f"{value:.{digits}f}"

    def row_cells(row) -> dict:
        out = {}
        if has("model"):
            out["model"] = F.display_name(row["model"])
        if has("method"):
            out["method"] = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}.get(row["method"], row["method"])
        if has("subset"):
            out["predictions"] = row["subset"]
        if has("n_images", "n_normal", "n_pneumonia"):
            out["images (NORMAL / PNEUMONIA)"] = f"{row['n_images']} ({row['n_normal']} / {row['n_pneumonia']})"
        elif has("n_images"):
            out["images"] = row["n_images"]
        wins = "n_images" in columns
        for kind, better in (("deletion", "lower"), ("insertion", "higher")):
            if has(f"{kind}_auc", f"{kind}_auc_random"):
                count = (f" ({row[f'{kind}_wins']} of {row['n_images']})" if wins and has(f"{kind}_wins") else "")
                out[f"{kind} area: map / random (map {better} in)"] = (
                    f"{row[f'{kind}_auc']:.3f} / {row[f'{kind}_auc_random']:.3f}{count}")
            if has(f"{kind}_diff_mean", f"{kind}_diff_ci_low", f"{kind}_diff_ci_high"):
                out[f"{kind}: map - baseline [95% CI]"] = (f"{row[f'{kind}_diff_mean']:+.3f} "
                                                           f"[{row[f'{kind}_diff_ci_low']:+.3f}, {row[f'{kind}_diff_ci_high']:+.3f}]")
            if has(f"{kind}_p", f"{kind}_p_holm"):
                out[f"{kind} sign test p (Holm)"] = f"{row[f'{kind}_p']:.2g} ({row[f'{kind}_p_holm']:.2g})"
        for share in (10, 20):
            if has(f"drop_top{share}", f"drop_random{share}"):
                out[f"top-{share}% drop: map / same-shape random"] = (
                    f"{row[f'drop_top{share}']:.3f} / {row[f'drop_random{share}']:.3f}")
        if has("faithfulness_verdict"):
            out["faithfulness"] = row["faithfulness_verdict"]
        for value, passes, verdict, title in (
                ("rank_corr_random_weights", "sanity_passes", "sanity_verdict",
                 "rank corr. with random weights" + (f" (|r| < {F.RANK_CORR_LIMIT} in)"
                                                     if hasattr(F, "RANK_CORR_LIMIT") else "")),
                ("border_mass", "border_passes", "border_verdict", "border share (below a uniform map's in)")):
            if has(value, passes, verdict) and wins:
                out[title] = f"{row[value]:.2f} ({row[passes]} of {row['n_images']}): {row[verdict]}"
            elif has(value, verdict):
                out[title.split(" (")[0]] = f"{row[value]:.2f}: {row[verdict]}"
        for column in checks.columns:  # whatever else the file holds, readable
            if column in SETTINGS_COLUMNS and checks[column].nunique(dropna=False) == 1:
                continue  # one value for the whole table: in the settings line, not in every row
            if column not in used:
                out[F.readable_column(column)] = number(row[column])
        return out

    rows = []
    for _, row in checks.iterrows():
        used.clear()
        rows.append(row_cells(row))
    return F.markdown_table(pd.DataFrame(rows))


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
        timing.append(f"warm median {latency['warm_median']:.2f} s over {latency.get('warm_requests', '?')} requests")
    if timing:
        parts.append(", ".join(timing))
    soak = report.get("soak")
    if isinstance(soak, dict) and soak:
        parts.append("soak: " + ", ".join(f"{F.readable_column(k)} {v}" for k, v in soak.items()
                                          if isinstance(v, (str, int, float, bool))))
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
                        f"{F.display_name(app_results.get('model', 'the default network'))}: " + parts[0])
    if container and container.get("image_size_mb"):
        model = (container.get("model") or {}).get("name")
        parts.append(f"the container image is {container['image_size_mb']:.0f} MB"
                     + (f" (serving `{model}` when checked)" if model else ""))
    return wrap("; ".join(parts) + ".") if parts else "Not measured yet (`bench/bench_app.py`)."


SETTINGS_COLUMNS = ("deletion_fill", "curve_steps", "baseline_draws")


def gradcam_settings_section(checks) -> str:
    """The settings of the checks that results/gradcam_checks.csv records (one value per column), or
    a note that it records none."""
    found = [f"{F.readable_column(c)}: {checks[c].iloc[0]}" for c in SETTINGS_COLUMNS
             if c in checks.columns and checks[c].nunique(dropna=False) == 1]
    return ("; ".join(found) + ".") if found else "The file records no settings columns (an earlier version of the checks)."


def app_speed_section(report: dict) -> str:
    """bench/app_results.json: latency and throughput of the app's POST /api/predict."""
    from bench_app import markdown

    return (markdown(report["results"]) + "\n\n" +
            wrap(f"Model {F.display_name(report['model'])}, {report['machine']['cpus']} CPUs, "
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
    if metrics is not None:
        out += [(readme, "findings", findings_section(metrics, checks, data)),
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
            out.append((readme, "gradcam-verdicts", gradcam_verdicts_section(checks)))
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
        from render_table import render_table  # bench/render_table.py

        out += [(docs / "performance.md", "speed", wrap(render_table(bench))),
                (docs / "reproducibility.md", "budget", budget_section(bench)),
                (readme, "cost", cost_section(bench)), (app_readme, "cost", cost_section(bench))]
    app_speed = _json(root / "bench" / "app_results.json")
    if app_speed is not None:
        out.append((docs / "performance.md", "app-speed", app_speed_section(app_speed)))
    if app_speed is not None or container is not None:
        out.append((readme, "app-summary", app_summary_section(app_speed, container)))
    precision = _json(root / "bench" / "precision_check.json")
    if precision is not None:
        from check_bf16_accuracy import markdown as precision_markdown

        out.append((docs / "reproducibility.md", "precision-check", wrap(precision_markdown(precision))))
    return out


def main(root: Path = ROOT) -> None:
    for path, marker, content in sections(root):
        F.replace_marked_section(path, marker, content)


if __name__ == "__main__":
    main()
