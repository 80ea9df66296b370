"""Results in words and in readable tables: the notebooks' ``## Findings`` sections, the README's
findings and the tables shown to readers. Every sentence is built from the numbers it is given
(``results/metrics.json``, ``results/gradcam_checks.csv``, ``results/data_summary.json``); nothing
numeric is typed here except the targets, which are the project's own and stated as such."""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from .common import DISPLAY_NAMES, PUBLISHED_RESULTS, display_name

# ----------------------------------------------------------------------------------------------
# Readable tables
# ----------------------------------------------------------------------------------------------
READABLE_COLUMNS: dict[str, str] = {  # column names that the generic rule would get wrong
    "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "val_roc_auc": "validation ROC-AUC",
    "roc_auc_ci95": "ROC-AUC 95% CI", "accuracy_ci95": "accuracy 95% CI",
    "n_seeds": "seeds", "n_images": "images", "n_normal": "NORMAL images", "n_pneumonia": "PNEUMONIA images",
    "n_correct": "correct", "n_wrong": "wrong", "n_files": "files",
    "pneumonia_share": "PNEUMONIA share", "grayscale_share": "greyscale share",
    "train_seconds": "training (s)", "train_minutes": "training (min)", "feature_seconds": "feature pass (s)",
    "seconds": "seconds", "best_epoch": "best epoch", "epochs_run": "epochs run",
    "threshold": "threshold (logit)", "threshold_probability": "threshold (probability)",
    "f1": "F1", "p_value": "p-value", "ids_in_other_splits": "ids in other splits",
    "images_per_patient_mean": "images per patient (mean)", "images_per_patient_max": "images per patient (max)",
    "width_median": "median width (px)", "height_median": "median height (px)",
    "aspect_q25": "aspect ratio (25th pct.)", "aspect_median": "aspect ratio (median)",
    "aspect_q75": "aspect ratio (75th pct.)", "megapixels_median": "median megapixels",
    "rank_corr_random_weights": "rank corr. with random weights", "border_mass": "border share",
    "drop_top10": "top-10% drop", "drop_random10": "random 10% drop",
    "drop_top20": "top-20% drop", "drop_random20": "random 20% drop",
    "deletion_auc": "deletion area", "deletion_auc_random": "deletion area (random)",
    "insertion_auc": "insertion area", "insertion_auc_random": "insertion area (random)",
    "deletion_p": "deletion p", "insertion_p": "insertion p",
    "faithfulness_verdict": "faithfulness", "sanity_verdict": "sanity", "border_verdict": "borders",
}
_WORDS = {"sd": "SD", "ci95": "95% CI", "auc": "AUC", "roc": "ROC", "val": "validation", "mean": "mean",
          "n": "number of", "id": "id", "ids": "ids", "gradcam": "Grad-CAM"}


def readable_column(name) -> str:
    """A column name in words: ``READABLE_COLUMNS`` first, model code names by ``DISPLAY_NAMES``,
    else underscores become spaces and a few abbreviations are spelt out (``accuracy_sd`` ->
    ``accuracy SD``). Names that are not strings (ints, tuples) come back unchanged."""
    if not isinstance(name, str):
        return name
    if name in READABLE_COLUMNS:
        return READABLE_COLUMNS[name]
    if name in DISPLAY_NAMES:
        return DISPLAY_NAMES[name]
    if "_" not in name:
        return name
    return " ".join(_WORDS.get(word, word) for word in name.split("_"))


def _readable_value(value):
    if isinstance(value, str):
        return DISPLAY_NAMES.get(value, value)
    return value


def _is_text(index: pd.Index) -> bool:
    return index.dtype == object or pd.api.types.is_string_dtype(index)


def readable_table(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``frame`` as a reader should see it: column and index names in words
    (:func:`readable_column`), model code names in cells and index as their readable names,
    floats rounded to ``digits`` decimals and float columns that hold only whole numbers shown as
    integers (``3.000`` -> ``3``). Returns a new DataFrame; ``frame`` is left as it is."""
    table = frame.copy()
    for column in table.columns:
        values = table[column]
        if pd.api.types.is_bool_dtype(values):
            continue
        if pd.api.types.is_float_dtype(values):
            finite = values.dropna()
            if len(finite) and np.isfinite(finite).all() and (finite == np.round(finite)).all():
                table[column] = values.round().astype("Int64")
            else:
                table[column] = values.round(digits)
        elif values.dtype == object or pd.api.types.is_string_dtype(values):
            table[column] = values.map(_readable_value)
    table = table.rename(columns=readable_column)
    if isinstance(table.index, pd.MultiIndex):
        table.index = table.index.set_levels([level.map(_readable_value) if _is_text(level) else level
                                              for level in table.index.levels])
    elif _is_text(table.index):
        table.index = table.index.map(_readable_value)
    table.index = table.index.set_names([readable_column(n) if n is not None else None for n in table.index.names])
    if isinstance(table.columns, pd.Index) and table.columns.name is not None:
        table.columns.name = readable_column(table.columns.name)
    return table


# ----------------------------------------------------------------------------------------------
# Reading results/metrics.json
# ----------------------------------------------------------------------------------------------
FAMILIES_PRETRAINED_FOR = {  # what each transfer family's base was trained for
    "vggface_transfer": "faces",
    "hed_vgg16_transfer": "edge detection",
    "xception_imagenet_transfer": "object photos",
}

# The project's targets on the official test set, for the published rows.
TARGETS = {"best_accuracy": 0.92, "best_roc_auc": 0.975, "best_specificity": 0.85, "best_sensitivity": 0.95,
           "scratch_mean_accuracy": 0.85, "min_seeds": 3}


def scored_models(metrics: dict) -> dict[str, dict]:
    """Entries of ``metrics["models"]`` that ran and were scored on the test set, in file order."""
    return {name: entry for name, entry in metrics.get("models", {}).items()
            if entry.get("status", "ok") == "ok" and "accuracy" in entry.get("test", {})}


def families(metrics: dict) -> dict[str, dict]:
    """Scored model families (seed-ensembles): every scored entry except cross-model ensembles."""
    return {name: entry for name, entry in scored_models(metrics).items() if "members" not in entry}


def best_family(metrics: dict) -> str | None:
    """The family the validation rule ranks first: that of the served network (``served.name``), so the
    test set never picks it; without a ``served`` record (older runs), the family with the highest test
    accuracy of its seed-ensemble (ROC-AUC breaks ties). None when no family was scored."""
    scored = families(metrics)
    served = metrics.get("served", {}).get("name")
    if served in scored:
        return served
    return max(scored, key=lambda n: (scored[n]["test"]["accuracy"], scored[n]["test"].get("roc_auc", 0))) \
        if scored else None


def not_run(metrics: dict) -> dict[str, str]:
    """Families that did not run, with the reason (``status`` without its ``not run: `` prefix)."""
    return {name: entry.get("status", "").removeprefix("not run: ")
            for name, entry in metrics.get("models", {}).items()
            if str(entry.get("status", "")).startswith("not run")}


def with_ci(test: dict, metric: str) -> str:
    """``0.886 [0.862, 0.912]``, or the bare value when there is no interval, or "–"."""
    if metric not in test or test[metric] is None:
        return "–"
    interval = test.get(f"{metric}_ci95")
    return f"{test[metric]:.3f}" + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _overlap(a: dict, b: dict, metric: str) -> bool | None:
    """Whether the 95% intervals of ``metric`` of two test records overlap (None: no intervals)."""
    ia, ib = a.get(f"{metric}_ci95"), b.get(f"{metric}_ci95")
    if not ia or not ib:
        return None
    return not (ia[1] < ib[0] or ib[1] < ia[0])


def served_entry(metrics: dict) -> dict | None:
    """The network the app serves: ``metrics["served"]`` (name, seed, test row) when the run wrote
    it, else the saved network of ``metrics["app_default"]`` (its family's seed with the highest
    validation ROC-AUC) with that seed's test row, else None."""
    served = metrics.get("served")
    if isinstance(served, dict) and served.get("name"):
        return served
    name = metrics.get("app_default")
    entry = metrics.get("models", {}).get(name or "", {})
    seeds = [s for s in entry.get("seeds", []) if "test" in s and "val" in s]
    if not seeds:
        return {"name": name} if name else None
    seed = max(seeds, key=lambda s: s["val"].get("roc_auc", 0))
    return {"name": name, "seed": seed.get("seed"), "test": seed["test"]}


# ----------------------------------------------------------------------------------------------
# Findings in words
# ----------------------------------------------------------------------------------------------
def _pretrained_finding(metrics: dict) -> str | None:
    """Does a base pretrained for another purpose beat the scratch CNN?"""
    scored = families(metrics)
    scratch = scored.get("scratch_cnn")
    transfer = {n: e for n, e in scored.items() if n != "scratch_cnn"}
    if not scratch or not transfer:
        return None
    reference = scratch["test"]["accuracy"]
    better = [n for n, e in transfer.items() if e["test"]["accuracy"] > reference]
    answer = "partly" if better and len(better) < len(transfer) else "yes" if better else "no"
    parts = []
    for name, entry in sorted(transfer.items(), key=lambda item: -item[1]["test"]["accuracy"]):
        purpose = FAMILIES_PRETRAINED_FOR.get(name)
        parts.append(f"{display_name(name)}{f' ({purpose})' if purpose else ''} {entry['test']['accuracy']:.3f}")
    overlaps = [_overlap(e["test"], scratch["test"], "accuracy") for e in transfer.values()]
    caveat = ("; the 95% intervals overlap in every comparison" if all(o is True for o in overlaps) else
              "; the 95% intervals overlap in some comparisons" if any(o is True for o in overlaps) else "")
    missing = not_run(metrics)
    absent = (" " + "; ".join(f"{display_name(n)} not run ({why})." for n, why in missing.items())) if missing else ""
    return (f"**Pretrained for another purpose vs from scratch: {answer}.** Test accuracy "
            + " and ".join(parts) + f", against the scratch CNN's {reference:.3f}{caveat}.{absent}")


def _grouped(rows) -> str:
    """``Original study 0.820 and 0.880; Kermany et al. 2018 0.928`` (label up to its first comma)."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        source = r[0].split(",")[0]
        groups.setdefault("the original study" if source.lower() == "original study" else source, []).append(
            f"{r[1]:.3f}")
    return " and ".join(f"{source} ({', '.join(values)})" for source, values in groups.items())


def _reference_finding(metrics: dict, references: Iterable = PUBLISHED_RESULTS) -> str | None:
    """How the best family compares with the original study and the published references."""
    best = best_family(metrics)
    if best is None:
        return None
    test = metrics["models"][best]["test"]
    accuracy = test["accuracy"]
    above = [r for r in references if r[1] is not None and accuracy > r[1]]
    below = [r for r in references if r[1] is not None and accuracy <= r[1]]
    return (f"**Best model: {display_name(best)}**, test accuracy {with_ci(test, 'accuracy')}, ROC-AUC "
            f"{with_ci(test, 'roc_auc')}: above {_grouped(above) or 'none of the published results'}"
            + (f"; below {_grouped(below)}." if below else "."))


def _errors_finding(metrics: dict) -> str | None:
    """Which errors the best family makes: sensitivity against specificity, and the validation gap."""
    best = best_family(metrics)
    if best is None:
        return None
    entry = metrics["models"][best]
    test, val = entry["test"], entry.get("val", {})
    if "sensitivity" not in test or "specificity" not in test:
        return None
    lower = "NORMAL" if test["specificity"] < test["sensitivity"] else "PNEUMONIA"
    gap = (f" On validation the same model scores ROC-AUC {val['roc_auc']:.3f} against {test['roc_auc']:.3f} on "
           f"test: the test set comes from another collection, so a threshold fixed on validation transfers "
           f"imperfectly." if "roc_auc" in val and "roc_auc" in test else "")
    return (f"**Errors.** At its validation threshold, {display_name(best)} finds {test['sensitivity']:.1%} of "
            f"test pneumonia (sensitivity) and clears {test['specificity']:.1%} of normal X-rays (specificity); "
            f"most of its errors are {lower} X-rays called "
            f"{'PNEUMONIA' if lower == 'NORMAL' else 'NORMAL'}.{gap}")


def _ensemble_finding(metrics: dict) -> str | None:
    """The cross-model ensemble against its best member, or that it was dropped."""
    entry = metrics.get("models", {}).get("ensemble")
    if entry is None:
        return None
    if entry.get("status", "ok") != "ok" or "test" not in entry:
        return f"**Cross-model ensemble:** {entry.get('status', 'not scored')}."
    members = [m for m in entry.get("members", []) if m in scored_models(metrics)]
    if not members:
        return None
    best = max(members, key=lambda m: metrics["models"][m]["test"]["accuracy"])
    a, b = entry["test"]["accuracy"], metrics["models"][best]["test"]["accuracy"]
    overlap = _overlap(entry["test"], metrics["models"][best]["test"], "accuracy")
    caveat = "" if overlap is None else ("; 95% intervals overlap" if overlap else "; 95% intervals apart")
    where = "below" if a < b else "above" if a > b else "level with"
    return (f"**Cross-model ensemble** of {len(members)} families (chosen on validation): accuracy {a:.3f}, "
            f"ROC-AUC {entry['test']['roc_auc']:.3f}, {where} its best member, {display_name(best)} ({b:.3f}{caveat}).")


def _served_finding(metrics: dict) -> str | None:
    """The network the app serves, with its own test row."""
    served = served_entry(metrics)
    if not served or "test" not in served:
        return None
    test = served["test"]
    seed = f", seed {served['seed']}" if served.get("seed") is not None else ""
    return (f"**Served by the app:** {display_name(served['name'])}{seed}, chosen on validation: test accuracy "
            f"{test['accuracy']:.3f}, ROC-AUC {test.get('roc_auc', float('nan')):.3f}, sensitivity "
            f"{test.get('sensitivity', float('nan')):.3f}, specificity {test.get('specificity', float('nan')):.3f}.")


def model_findings(metrics: dict) -> str:
    """``## Findings`` of ``model_deep_learning.ipynb`` as Markdown bullets, from the metrics dict
    the notebook wrote (``results/metrics.json``): pretrained vs scratch, the best model against the
    published results, its errors, the cross-model ensemble, the network the app serves, and the
    targets met or not. Keys it does not find are left out, never guessed."""
    bullets = [_pretrained_finding(metrics), _reference_finding(metrics), _errors_finding(metrics),
               _ensemble_finding(metrics), _served_finding(metrics)]
    lines = [f"- {b}" for b in bullets if b]
    verdicts = target_verdicts(metrics)
    if verdicts:
        lines.append(f"- **Targets:** {sum(v['met'] for v in verdicts)} of {len(verdicts)} met.")
        lines += [f"  - {v['target']}: {'met' if v['met'] else '**not met**'} ({v['measured']})" for v in verdicts]
    if metrics.get("quick"):
        lines.insert(0, "- *Quick run on a small subset: these numbers check the pipeline, they are not results.*")
    return "\n".join(lines) if lines else "- No model was scored on the test set in this run."


def target_verdicts(metrics: dict) -> list[dict]:
    """The project's targets (``TARGETS``), each with ``target`` (in words), ``met`` (bool) and
    ``measured`` (the figure it was judged on), computed from ``metrics``. Targets whose numbers are
    missing are left out."""
    out = []
    best = best_family(metrics)
    if best is not None:
        test = metrics["models"][best]["test"]
        checks = [("accuracy", "best_accuracy", "≥"), ("roc_auc", "best_roc_auc", "≥"),
                  ("specificity", "best_specificity", "≥"), ("sensitivity", "best_sensitivity", "≥")]
        for metric, key, sign in checks:
            if metric in test:
                label = "ROC-AUC" if metric == "roc_auc" else metric
                out.append({"target": f"best family {label} {sign} {TARGETS[key]:g}",
                            "met": bool(test[metric] >= TARGETS[key]),
                            "measured": f"{display_name(best)} {test[metric]:.3f}"})
    spread = metrics.get("models", {}).get("scratch_cnn", {}).get("seed_spread", {})
    if "accuracy_mean" in spread:
        out.append({"target": f"scratch CNN mean accuracy over seeds ≥ {TARGETS['scratch_mean_accuracy']:g}",
                    "met": bool(spread["accuracy_mean"] >= TARGETS["scratch_mean_accuracy"]),
                    "measured": f"{spread['accuracy_mean']:.3f} ± {spread.get('accuracy_sd', float('nan')):.3f}"
                                f" over {spread.get('n_seeds', '?')} seeds"})
    ensemble = metrics.get("models", {}).get("ensemble")
    if ensemble is not None:
        scored = scored_models(metrics)
        members = [m for m in ensemble.get("members", []) if m in scored]
        target = "cross-model ensemble at least as good as its best member (accuracy and ROC-AUC), or dropped"
        if ensemble.get("status", "ok") != "ok" or "test" not in ensemble:
            out.append({"target": target, "met": True, "measured": ensemble.get("status") or "not scored"})
        elif members:
            top_accuracy = max(members, key=lambda m: scored[m]["test"]["accuracy"])
            top_auc = max(members, key=lambda m: scored[m]["test"].get("roc_auc", 0))
            ok = (ensemble["test"]["accuracy"] >= scored[top_accuracy]["test"]["accuracy"]
                  and ensemble["test"].get("roc_auc", 0) >= scored[top_auc]["test"].get("roc_auc", 0))
            out.append({"target": target, "met": bool(ok),
                        "measured": f"ensemble {ensemble['test']['accuracy']:.3f} / {ensemble['test']['roc_auc']:.3f}"
                                    f" against {display_name(top_accuracy)} "
                                    f"{scored[top_accuracy]['test']['accuracy']:.3f} (accuracy) and "
                                    f"{display_name(top_auc)} {scored[top_auc]['test']['roc_auc']:.3f} (ROC-AUC)"})
    seeds = {n: len(e.get("seeds", [])) for n, e in families(metrics).items()}
    if seeds:
        out.append({"target": f"≥ {TARGETS['min_seeds']} seeds per family that runs",
                    "met": all(n >= TARGETS["min_seeds"] for n in seeds.values()),
                    "measured": ", ".join(f"{display_name(n)} {k}" for n, k in seeds.items())})
    return out


# ----------------------------------------------------------------------------------------------
# Grad-CAM in words
# ----------------------------------------------------------------------------------------------
def gradcam_verdict_table(checks: pd.DataFrame, subset: str = "all") -> pd.DataFrame:
    """One row per model and method (predictions ``subset``), the verdicts only, readable:
    model, method, images, faithfulness, sanity, borders. Verdict columns the file lacks are left out."""
    rows = checks[checks["subset"] == subset] if "subset" in checks else checks
    columns = {"model": "model", "method": "method", "n_images": "images",
               "faithfulness_verdict": "faithfulness (deletion / insertion)",
               "sanity_verdict": "sanity (random weights)", "border_verdict": "borders"}
    present = [c for c in columns if c in rows.columns]
    table = rows[present].rename(columns=columns).reset_index(drop=True)
    if "model" in table:
        table["model"] = table["model"].map(display_name)
    if "method" in table:
        table["method"] = table["method"].map({"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}).fillna(table["method"])
    return table


def gradcam_findings(checks: pd.DataFrame, subset: str = "all") -> str | None:
    """One sentence on where the models look, from ``results/gradcam_checks.csv``'s verdicts
    (Grad-CAM, ``subset`` predictions): which models' maps are faithful, pass the sanity check and
    stay off the image border."""
    if not {"model", "method", "faithfulness_verdict"} <= set(checks.columns):
        return None
    rows = checks[(checks["method"] == "gradcam") & (checks.get("subset", subset) == subset)]
    if rows.empty:
        return None
    parts = []
    for _, row in rows.iterrows():
        bits = [f"{row['faithfulness_verdict']}"]
        if "sanity_verdict" in row:
            bits.append(f"sanity {row['sanity_verdict']}")
        if "border_verdict" in row:
            share = (f" (share {row['border_mass']:.2f})" if "border_mass" in row and pd.notna(row["border_mass"])
                     else "")
            bits.append(f"borders {row['border_verdict']}{share}")
        parts.append(f"{display_name(row['model'])}: {', '.join(bits)}")
    n = int(rows["n_images"].iloc[0]) if "n_images" in rows else None
    return (f"**Where the models look** (Grad-CAM on {n if n is not None else 'a sample of'} test images; "
            f"verdicts of grad_cam.ipynb): " + "; ".join(parts) + ".")


# ----------------------------------------------------------------------------------------------
# The README's first screen
# ----------------------------------------------------------------------------------------------
def readme_findings(metrics: dict, checks: pd.DataFrame | None = None, data: Mapping | None = None) -> str:
    """4-6 Markdown bullets answering the README's question: pretrained vs scratch, the best model
    against the original study and the published results, its errors, where the models look
    (``checks``: results/gradcam_checks.csv) and the shortcut caveat (``data``:
    results/data_summary.json, written by data_visualization.ipynb)."""
    from .eda import size_shortcut_sentence

    bullets = [_pretrained_finding(metrics), _reference_finding(metrics), _errors_finding(metrics)]
    if checks is not None:
        bullets.append(gradcam_findings(checks))
    shortcut = size_shortcut_sentence(dict(data)) if data else ""
    if shortcut:
        bullets.append(f"**Caveat, a shortcut:** {shortcut}")
    served = _served_finding(metrics)
    if served and sum(b is not None for b in bullets) < 4:  # the web app section names it otherwise
        bullets.append(served)
    lines = [f"- {b}" for b in bullets if b]
    if metrics.get("quick"):
        lines.insert(0, "- *Quick run on a small subset: these numbers check the pipeline, they are not results.*")
    return "\n".join(lines)


def compact_results_table(metrics: dict) -> pd.DataFrame:
    """The README's results table: model, accuracy [95% CI], ROC-AUC [95% CI], sensitivity,
    specificity, seeds; one row per family (its seed-ensemble) and per cross-model ensemble, and a
    row per family that did not run saying why."""
    rows = []
    for name, entry in metrics.get("models", {}).items():
        test = entry.get("test", {})
        label = display_name(name)
        if entry.get("status", "ok") != "ok" or not test:
            rows.append({"model": f"{label} ({entry.get('status', 'not scored')})", "accuracy [95% CI]": "–",
                         "ROC-AUC [95% CI]": "–", "sensitivity": "–", "specificity": "–", "seeds": "–"})
            continue
        seeds = entry.get("seed_spread", {}).get("n_seeds", len(entry.get("seeds", [])))
        rows.append({"model": label + (f" ({len(entry['members'])} models)" if "members" in entry else ""),
                     "accuracy [95% CI]": with_ci(test, "accuracy"), "ROC-AUC [95% CI]": with_ci(test, "roc_auc"),
                     "sensitivity": f"{test['sensitivity']:.3f}" if "sensitivity" in test else "–",
                     "specificity": f"{test['specificity']:.3f}" if "specificity" in test else "–",
                     "seeds": str(int(seeds)) if seeds else "–"})
    return pd.DataFrame(rows, columns=["model", "accuracy [95% CI]", "ROC-AUC [95% CI]", "sensitivity",
                                       "specificity", "seeds"])


def published_table(references: Iterable = PUBLISHED_RESULTS) -> pd.DataFrame:
    """Published results on the official test split, each with its citation (linked) and a note on
    its protocol."""
    rows = []
    for r in references:
        citation, url, note = (r[3], r[4], r[5]) if len(r) >= 6 else ("", "", "")
        rows.append({"result": r[0], "accuracy": f"{r[1]:.3f}" if r[1] is not None else "–",
                     "ROC-AUC": f"{r[2]:.3f}" if r[2] is not None else "–",
                     "source": f"[{citation}]({url})" if url else citation, "protocol": note})
    return pd.DataFrame(rows)
