"""Results in words and in readable tables: the notebooks' ``## Findings`` sections, the README's
findings and the tables shown to readers. Every sentence is built from the numbers it is given
(``results/metrics.json``, ``results/gradcam_checks.csv``, ``results/data_summary.json``); nothing
numeric is typed here except the targets, which are the project's own and stated as such."""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .common import DISPLAY_NAMES, PUBLISHED_RESULTS, display_name
from .augmentation import VALIDATION_PERTURBATIONS
from .plots import readable_names

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
    # results/gradcam_checks.csv (pneumonia_cxr.gradcam.summarise_gradcam_checks) and its per-image file
    "deletion_fill": "deletion fill", "insertion_blur_sigma": "insertion blur (sigma, px)",
    "curve_steps": "curve steps", "baseline_draws": "shifted copies per image",
    "baseline_draws_per_point": "shifted copies scored per curve point", "n_curve_images": "images with curves",
    "deletion_auc": "deletion area", "deletion_auc_shifted": "deletion area (shifted map)",
    "deletion_auc_noise": "deletion area (noise order)", "insertion_auc": "insertion area",
    "insertion_auc_shifted": "insertion area (shifted map)", "insertion_auc_noise": "insertion area (noise order)",
    "deletion_diff_mean": "deletion: map - shifted", "deletion_diff_ci_low": "deletion: map - shifted, 95% CI low",
    "deletion_diff_ci_high": "deletion: map - shifted, 95% CI high",
    "insertion_diff_mean": "insertion: map - shifted", "insertion_diff_ci_low": "insertion: map - shifted, 95% CI low",
    "insertion_diff_ci_high": "insertion: map - shifted, 95% CI high",
    "deletion_wins": "deletion: map lower than baseline in", "deletion_wins_noise": "deletion: map lower than noise in",
    "insertion_wins": "insertion: map higher than baseline in",
    "insertion_wins_noise": "insertion: map higher than noise in",
    "deletion_p": "deletion sign test p", "insertion_p": "insertion sign test p",
    "sanity_p": "sanity sign test p", "border_p": "border sign test p",
    "deletion_p_holm": "deletion p (Holm)", "insertion_p_holm": "insertion p (Holm)",
    "sanity_p_holm": "sanity p (Holm)", "border_p_holm": "border p (Holm)",
    "rank_corr_random_weights": "rank corr. with random weights", "rank_corr_median": "rank corr. (median)",
    "rank_corr_ci_low": "rank corr. 95% CI low", "rank_corr_ci_high": "rank corr. 95% CI high",
    "sanity_passes": "|r| below the limit in", "random_maps_constant": "random maps constant",
    "random_map_constant": "random map constant", "border_share": "border share",
    "border_share_uniform": "border share of a uniform map", "border_passes": "below a uniform map's share in",
    "empty_maps": "empty maps", "empty_map": "empty map", "true_class": "true class",
    "predicted_class": "predicted class", "probability": "probability of PNEUMONIA",
    "faithfulness_verdict": "faithfulness", "faithfulness_verdict_old_rule": "faithfulness (old rule)",
    "sanity_verdict": "sanity", "border_verdict": "borders",
    # the checks' earlier table (until the run that writes the columns above)
    "border_mass": "border share", "deletion_auc_random": "deletion area (random)",
    "insertion_auc_random": "insertion area (random)", "drop_top10": "top-10% drop", "drop_random10": "random 10% drop",
    "drop_top20": "top-20% drop", "drop_random20": "random 20% drop",
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
    integers (``3.000`` -> ``3``). Returns a new DataFrame; ``frame`` is left as it is. Columns of
    Python objects (e.g. after a transpose) are first given the dtype their values share."""
    table = frame.infer_objects()
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
    "face_dlib_resnet": "face recognition",
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


def chosen_on_validation(metrics: dict) -> bool:
    """Whether :func:`best_family` is the served network's family, chosen by the validation rule (a
    ``served`` record naming a scored family), rather than the family with the best test figures."""
    return metrics.get("served", {}).get("name") in families(metrics)


def ensemble_dropped(entry: dict | None) -> bool:
    """Whether a cross-model ensemble entry records that the validation rule did not keep it (status
    ``not kept: ...`` or ``dropped...``)."""
    return str((entry or {}).get("status", "")).startswith(("not kept", "dropped"))


def ensemble_status_text(entry: dict) -> str:
    """A cross-model ensemble's status in words, code names readable: ``not kept: the validation rule
    chose one family (xception_imagenet_transfer)`` -> ``dropped by the validation rule, which chose one
    family: ImageNet Xception transfer``; other statuses with their code names replaced."""
    status = readable_names(str(entry.get("status", "not scored")))
    if not status.startswith("not kept"):
        return status
    reason = status.split(":", 1)[1].strip() if ":" in status else ""
    named = re.match(r"^(.*?)\s*\(([^()]+)\)$", reason)
    if named and named.group(2) in DISPLAY_NAMES.values():
        reason = f"{named.group(1)}: {named.group(2)}"
    if reason.startswith("the validation rule "):
        return "dropped by the validation rule, which " + reason.removeprefix("the validation rule ")
    return "dropped by the validation rule" + (f" ({reason})" if reason else "")


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
    if any(len(e.get("seeds", [])) != len(scratch.get("seeds", [])) for e in transfer.values()):
        return _pretrained_finding_single_networks(scratch, transfer, not_run(metrics))
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
    return (f"**Pretrained for another purpose vs from scratch: {answer}.** Test accuracy "
            + " and ".join(parts) + f", against the scratch CNN's {reference:.3f}{caveat}.{_not_run_sentence(not_run(metrics))}")


def _not_run_sentence(missing: Mapping[str, str]) -> str:
    """`` Not run: VGG-Face transfer, weights unavailable; HED-VGG16 transfer, compute budget.`` (with
    a leading space), or "" when every family ran."""
    return f" Not run: {not_run_list(missing)}." if missing else ""


def not_run_list(missing: Mapping[str, str]) -> str:
    """``VGG-Face transfer, weights unavailable; HED-VGG16 transfer, compute budget``: the families
    of :func:`not_run` with their reasons."""
    return "; ".join(f"{display_name(name)}, {why}" for name, why in missing.items())


def _pretrained_finding_single_networks(scratch: dict, transfer: dict, missing: dict) -> str:
    """The pretrained-vs-scratch finding when the families ran different numbers of seeds: single
    networks compared (mean test accuracy of each family's seeds, with their number), since a
    seed-ensemble has an advantage a single network has not."""
    def mean_of_seeds(entry: dict) -> tuple[float, int]:
        values = [s["test"]["accuracy"] for s in entry.get("seeds", []) if "test" in s]
        return (float(np.mean(values)) if values else float("nan")), len(values)

    reference, n_scratch = mean_of_seeds(scratch)
    parts, better = [], []
    means = {name: mean_of_seeds(entry) for name, entry in transfer.items()}
    for name, (value, n) in sorted(means.items(), key=lambda item: -item[1][0]):  # highest first, as the other wording
        purpose = FAMILIES_PRETRAINED_FOR.get(name)
        parts.append(f"{display_name(name)}{f' ({purpose})' if purpose else ''} {value:.3f} (mean of {n} seed"
                     f"{'s' if n != 1 else ''})")
        better.append(value > reference)
    answer = "yes" if all(better) else "partly" if any(better) else "no"
    scratch_seeds = f"{n_scratch} seeds" if n_scratch != 1 else "1 seed, so its spread over seeds is unknown"
    return (f"**Pretrained for another purpose vs from scratch: {answer}, single networks compared.** Test accuracy "
            + " and ".join(parts) + f", against the scratch CNN's {reference:.3f} ({scratch_seeds})."
            + _not_run_sentence(missing))


def _short_model(label: str) -> str:
    """A published model's name without its details: ``InceptionV3 (ImageNet), fine-tuned`` ->
    ``InceptionV3``; ``ResNet-18, end to end (224 px)`` -> ``ResNet-18``."""
    return re.sub(r"\s*\([^()]*\)$", "", label.split(",")[0].strip())


def _grouped(rows, names: str = "all", column: int = 1) -> str:
    """``the original study (scratch CNN 0.820, VGG-Face transfer 0.880) and Kermany et al. 2018
    (InceptionV3 0.928)``: the results grouped by source (a label up to its first comma), each with its
    model's short name (:func:`_short_model`); ``names="original"`` names the original study's models
    only, ``"none"`` none. ``column``: 1 the accuracy, 2 the ROC-AUC of each published row."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        source, _, model = r[0].partition(",")
        original = source.lower() == "original study"
        named = model.strip() and (names == "all" or names == "original" and original)
        groups.setdefault("the original study" if original else source, []).append(
            f"{_short_model(model)} {r[column]:.3f}" if named else f"{r[column]:.3f}")
    return " and ".join(f"{source} ({', '.join(values)})" for source, values in groups.items())


def _reference_finding(metrics: dict, references: Iterable = PUBLISHED_RESULTS) -> str | None:
    """How the best family (:func:`best_family`: the served network's family when the run recorded
    one, its seed-ensemble scored) compares with the original study and the published references:
    each published accuracy above our 95% interval ("below X"), inside it ("level with X") or under it
    ("above X"); then the published ROC-AUCs outside our ROC-AUC interval, so that "level with" is never
    read as holding for both. The first of five wordings within ``FINDING_MAX_CHARS``: every model named
    and the ROC-AUC's interval given; then without the ROC-AUC's interval; then only the original
    study's models named; then also the ROC-AUC comparison without model names and a shorter tail;
    then no model named at all."""
    best = best_family(metrics)
    if best is None:
        return None
    test = metrics["models"][best]["test"]
    heading = "Served network's family (seed-ensemble)" if chosen_on_validation(metrics) else "Best model"
    accuracy = _placed(test, "accuracy", 1, references)
    auc = _placed(test, "roc_auc", 2, references) if "roc_auc" in test else {}

    def sentence(names: str, auc_interval: bool, auc_names: str, tail: str) -> str:
        parts = [f"above {_grouped(accuracy['above'], names)}" if accuracy["above"] else "",
                 f"not distinguishable from {_grouped(accuracy['within'], names)} (inside our 95% interval)"
                 if accuracy["within"] else "",
                 f"below {_grouped(accuracy['below'], names)}" if accuracy["below"] else ""]
        auc_parts = [f"{word} {_grouped(auc[key], auc_names, column=2)}"
                     for key, word in (("above", "above"), ("below", "below")) if auc.get(key)]
        auc_text = f"; ROC-AUC {' and '.join(auc_parts)}" if auc_parts else ""
        value = with_ci(test, "roc_auc") if auc_interval else f"{test['roc_auc']:.3f}" if "roc_auc" in test else "–"
        return (f"**{heading}: {display_name(best)}**, test accuracy {with_ci(test, 'accuracy')}, ROC-AUC {value}: "
                f"accuracy " + "; ".join(p for p in parts if p) + auc_text + f" ({tail}).")

    see = "; see the table below"
    wordings = (("all", True, "all", f"published protocols differ from ours{see}"),
                ("all", False, "all", f"published protocols differ{see}"),
                ("original", False, "original", f"published protocols differ{see}"),
                ("original", False, "none", "protocols differ"), ("none", False, "none", "protocols differ"))
    for wording in wordings:
        text = sentence(*wording)
        if len(text) <= FINDING_MAX_CHARS:
            return text
    return text


def _placed(test: dict, metric: str, column: int, references: Iterable) -> dict[str, list]:
    """The published rows whose ``metric`` (at ``column`` of each row) lies under our 95% interval
    ("above": we are above them), inside it ("within") or over it ("below"); rows without the metric
    left out."""
    value = test[metric]
    low, high = test.get(f"{metric}_ci95") or (value, value)
    rows = [r for r in references if r[column] is not None]
    return {"above": [r for r in rows if r[column] < low], "within": [r for r in rows if low <= r[column] <= high],
            "below": [r for r in rows if r[column] > high]}


def _errors_finding(metrics: dict) -> str | None:
    """Which errors the best family (:func:`best_family`) makes: sensitivity against specificity, and
    how its threshold carried from validation (the validation rule's pooled validation, the original
    images and a perturbed copy under each of ``VALIDATION_PERTURBATIONS``, when the run chose on it)
    to the test set: the validation and test figures side by side, and which of sensitivity and
    specificity fell by more than ``TRANSFER_TOLERANCE`` on test (or that neither did)."""
    best = best_family(metrics)
    if best is None:
        return None
    entry = metrics["models"][best]
    test, val = entry["test"], entry.get("val", {})
    if "sensitivity" not in test or "specificity" not in test:
        return None
    data = metrics.get("dataset", {})
    false_alarms = (1 - test["specificity"]) * data.get("test_normal", 1)  # NORMAL called PNEUMONIA
    misses = (1 - test["sensitivity"]) * data.get("test_pneumonia", 1)  # PNEUMONIA called NORMAL
    lower = "NORMAL" if false_alarms > misses else "PNEUMONIA"  # the class behind most errors, by count
    share = max(false_alarms, misses) / (false_alarms + misses) if false_alarms + misses else 0.0
    errors = (f"its errors split about evenly ({misses:.0f} missed pneumonia, {false_alarms:.0f} false alarms)"
              if share < EVEN_SPLIT else
              f"most of its errors are {lower} X-rays called {'PNEUMONIA' if lower == 'NORMAL' else 'NORMAL'}")
    start = (f"**Errors.** At its validation threshold, {display_name(best)} finds {test['sensitivity']:.1%} of "
             f"test pneumonia (sensitivity) and clears {test['specificity']:.1%} of normal X-rays (specificity); "
             f"{errors}.")
    rates = [k for k in ("sensitivity", "specificity") if k in val]
    figures = [(f"{k} {val[k]:.1%}", f"{test[k]:.1%}") for k in rates]
    if "roc_auc" in val and "roc_auc" in test:
        figures.append((f"ROC-AUC {val['roc_auc']:.3f}", f"{test['roc_auc']:.3f}"))
    if not figures:
        return start
    # chosen on the validation rule's pooled validation: the images as they are and under each perturbation
    where = (f"validation pooled with {len(VALIDATION_PERTURBATIONS)} perturbed copies" if chosen_on_validation(metrics)
             else "validation")
    fell = [(k, val[k] - test[k]) for k in rates if val[k] - test[k] > TRANSFER_TOLERANCE]
    verdict = ("" if len(rates) < 2 else
               " (" + " and ".join(f"{k} {drop * 100:.1f} points lower" for k, drop in fell) + ")" if fell else
               f" (both rates within {TRANSFER_TOLERANCE * 100:.0f} points)")
    return (f"{start} On {where}: {', '.join(v for v, _ in figures)}; on test "
            f"{', '.join(t for _, t in figures)}{verdict}.")


TRANSFER_TOLERANCE = 0.02  # a rate within 2 points of its validation value "carries" to the test set
EVEN_SPLIT = 0.6  # errors "split about evenly" when neither kind makes 60% of them


def _ensemble_finding(metrics: dict) -> str | None:
    """The cross-model ensemble against its best member, or that it was dropped."""
    entry = metrics.get("models", {}).get("ensemble")
    if entry is None:
        return None
    if entry.get("status", "ok") != "ok" or "test" not in entry:
        return f"**Cross-model ensemble:** {ensemble_status_text(entry)}."
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


def _mean_over_seeds(spread: Mapping, metric: str) -> str:
    """``0.820 ± 0.010 over 3 seeds``, or ``0.821, 1 seed: no spread`` where there is no spread."""
    n, sd = spread.get("n_seeds"), spread.get(f"{metric}_sd")
    if n == 1 or sd is None or (isinstance(sd, float) and np.isnan(sd)):
        return f"{spread[f'{metric}_mean']:.3f}, {n if n is not None else '?'} seed{'' if n == 1 else 's'}: no spread"
    return f"{spread[f'{metric}_mean']:.3f} ± {sd:.3f} over {n} seeds"


def served_verdicts(metrics: dict) -> list[dict]:
    """The served network (one seed, :func:`served_entry`) against the best family's test targets
    (accuracy, ROC-AUC, sensitivity, specificity), each with ``target``, ``met`` and ``measured``;
    empty when the run recorded no served test row."""
    test = (served_entry(metrics) or {}).get("test", {})
    return _test_target_verdicts(test, ("accuracy", "roc_auc", "sensitivity", "specificity"))


def _test_target_verdicts(test: Mapping, metrics: Sequence[str], judged: str = "", name: str = "") -> list[dict]:
    """``test`` (a test row) against ``TARGETS["best_<metric>"]`` for each of ``metrics`` it holds,
    in that order: ``target`` ("<judged> <metric> ≥ <limit>"), ``met`` and ``measured`` ("<name>
    <value>")."""
    out = []
    for metric in metrics:
        if metric in test:
            limit = TARGETS[f"best_{metric}"]
            label = "ROC-AUC" if metric == "roc_auc" else metric
            out.append({"target": f"{judged} {label} ≥ {limit:g}".lstrip(), "met": bool(test[metric] >= limit),
                        "measured": f"{name} {test[metric]:.3f}".lstrip()})
    return out


def target_verdicts(metrics: dict) -> list[dict]:
    """The project's targets (``TARGETS``), each with ``target`` (in words), ``met`` (bool) and
    ``measured`` (the figure it was judged on), computed from ``metrics``. The "best family" targets
    are judged on :func:`best_family` (the family chosen on validation when the run recorded it, and
    then called so). A cross-model ensemble the validation rule did not keep meets its target (dropped);
    one that failed or was not scored for another reason is not judged. Targets whose numbers are
    missing are left out."""
    out = []
    best = best_family(metrics)
    if best is not None:
        judged = "chosen family's seed-ensemble:" if chosen_on_validation(metrics) else "best family"
        out += _test_target_verdicts(metrics["models"][best]["test"], ("accuracy", "roc_auc", "specificity", "sensitivity"),
                                     judged, display_name(best))
    spread = metrics.get("models", {}).get("scratch_cnn", {}).get("seed_spread", {})
    if "accuracy_mean" in spread:
        out.append({"target": f"scratch CNN mean accuracy over seeds ≥ {TARGETS['scratch_mean_accuracy']:g}",
                    "met": bool(spread["accuracy_mean"] >= TARGETS["scratch_mean_accuracy"]),
                    "measured": _mean_over_seeds(spread, "accuracy")})
    ensemble = metrics.get("models", {}).get("ensemble")
    if ensemble is not None:
        scored = scored_models(metrics)
        members = [m for m in ensemble.get("members", []) if m in scored]
        target = "cross-model ensemble at least as good as its best member (accuracy and ROC-AUC), or dropped"
        if ensemble_dropped(ensemble):
            out.append({"target": target, "met": True, "measured": ensemble_status_text(ensemble)})
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
METHOD_NAMES: dict[str, str] = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}


def _method_names(methods: pd.Series) -> pd.Series:
    return methods.map(METHOD_NAMES).fillna(methods)


def _subset_rows(checks: pd.DataFrame, subset: str) -> pd.DataFrame:
    return checks[checks["subset"] == subset] if "subset" in checks else checks


def gradcam_images(row: Mapping) -> str:
    """``32 (curves on 10)``: a summary row's images, and of them those with deletion and insertion
    curves when fewer (``n_curve_images``); ``32`` when the table has no such column."""
    n = int(row["n_images"])
    curves = row.get("n_curve_images")
    if curves is None or pd.isna(curves) or int(curves) == n:
        return str(n)
    return f"{n} (curves on {int(curves)})"


def gradcam_verdict_table(checks: pd.DataFrame, subset: str = "all") -> pd.DataFrame:
    """One row per model and method (predictions ``subset``), the verdicts only, readable: model,
    method, images (:func:`gradcam_images`), faithfulness, sanity, borders. The verdicts are copied
    from ``results/gradcam_checks.csv`` (grad_cam.ipynb computed them), never re-derived; verdict
    columns the file lacks are left out."""
    rows = _subset_rows(checks, subset)
    columns = {"model": "model", "method": "method", "n_images": "images",
               "faithfulness_verdict": "faithfulness (deletion / insertion)",
               "sanity_verdict": "sanity (random weights)", "border_verdict": "borders"}
    present = [c for c in columns if c in rows.columns]
    table = rows[present].rename(columns=columns).reset_index(drop=True)
    if "images" in table:
        table["images"] = [gradcam_images(row) for _, row in rows.iterrows()]
    if "model" in table:
        table["model"] = table["model"].map(display_name)
    if "method" in table:
        table["method"] = _method_names(table["method"])
    return table


def gradcam_rule_changes(checks: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``results/gradcam_checks.csv`` whose faithfulness verdict differs between the old
    rule (``faithfulness_verdict_old_rule``: sign tests against the scattered-noise baseline, no
    correction, no interval) and the current one, on the same images: columns model, method (readable),
    subset, old, new. Only the rows of all predictions are compared: the current rule leaves the
    "correct" and "wrong" subsets descriptive. Empty when the file has no old-rule column."""
    columns = ["model", "method", "subset", "old", "new"]
    if not {"faithfulness_verdict", "faithfulness_verdict_old_rule"} <= set(checks.columns):
        return pd.DataFrame(columns=columns)
    judged = _subset_rows(checks, "all")  # Holm's family; the "correct" and "wrong" rows are descriptive only
    changed = judged[judged["faithfulness_verdict_old_rule"] != judged["faithfulness_verdict"]]
    return pd.DataFrame({"model": changed.get("model", pd.Series("", index=changed.index)).map(display_name),
                         "method": _method_names(changed.get("method", pd.Series("", index=changed.index))),
                         "subset": changed.get("subset", pd.Series("all", index=changed.index)),
                         "old": changed["faithfulness_verdict_old_rule"],
                         "new": changed["faithfulness_verdict"]}, columns=columns).reset_index(drop=True)


def gradcam_untrusted(checks: pd.DataFrame, subset: str = "all") -> list[str] | None:
    """Readable names of the models none of whose methods' maps pass all three checks (faithful,
    sanity passes, borders interior) on ``subset`` predictions, as grad_cam.ipynb's findings judge
    trust; None when the file lacks a verdict column."""
    needed = {"model", "faithfulness_verdict", "sanity_verdict", "border_verdict"}
    if not needed <= set(checks.columns):
        return None
    rows = _subset_rows(checks, subset)
    trusted = ((rows["faithfulness_verdict"] == "faithful") & (rows["sanity_verdict"] == "passes")
               & (rows["border_verdict"] == "interior"))
    return [display_name(model) for model, ok in trusted.groupby(rows["model"], sort=False).any().items() if not ok]


_FAITHFULNESS_WORDS = {"not faithful": "not shown faithful",  # a failed test shows no effect, not its absence
                       "too few images": "too few images for faithfulness"}
_SANITY_WORDS = {"passes": "passes sanity", "fails": "fails sanity"}
_BORDER_WORDS = {"interior": "off", "not interior": "not shown off"}  # the first one: "... the image edge"
FINDING_MAX_CHARS = 398  # a README findings bullet, "- " included, stays within 400 characters


def gradcam_findings(checks: pd.DataFrame, subset: str = "all", method: str = "gradcam") -> str | None:
    """One bullet on where the models look, from ``results/gradcam_checks.csv``'s verdicts (``method``,
    ``subset`` predictions): per model whether its maps are faithful (deletion and insertion; "not
    faithful" said as "not shown faithful"), pass the sanity check (random weights) and stay off the
    image edge (the border verdict, with the mean border share against a uniform map's), then whether any
    model's maps pass all three checks with either method (:func:`gradcam_untrusted`). When that is
    longer than ``FINDING_MAX_CHARS``, the border shares are left out (the README's table and
    docs/gradcam.md give them). The table's earlier format (``border_mass``, no uniform share) gives
    the same sentence without what it lacks."""
    if not {"model", "method", "faithfulness_verdict"} <= set(checks.columns):
        return None
    rows = _subset_rows(checks, subset)
    rows = rows[rows["method"] == method]
    if rows.empty:
        return None
    images = f"{int(rows['n_images'].iloc[0])} test images" if "n_images" in rows else "a sample of test images"
    untrusted = gradcam_untrusted(checks, subset)
    trust = ("" if untrusted is None else
             " No model's maps pass all three checks." if len(untrusted) == rows["model"].nunique() else
             f" No method passes all three checks for {', '.join(untrusted)}." if untrusted else
             " Every model has a method whose maps pass all three checks.")
    share_column = "border_share" if "border_share" in rows else "border_mass" if "border_mass" in rows else None
    uniform = rows["border_share_uniform"].dropna().unique() if "border_share_uniform" in rows else []

    def sentence(shares: bool) -> str:
        parts = []
        for _, row in rows.iterrows():
            bits = [_FAITHFULNESS_WORDS.get(row["faithfulness_verdict"], row["faithfulness_verdict"])]
            if "sanity_verdict" in row:
                bits.append(_SANITY_WORDS.get(row["sanity_verdict"], f"sanity {row['sanity_verdict']}"))
            if "border_verdict" in row:
                border = _BORDER_WORDS.get(row["border_verdict"])
                border = f"borders {row['border_verdict']}" if border is None else \
                    border + ("" if parts else " the image edge")
                if shares and share_column and pd.notna(row[share_column]):
                    against = f", uniform map {uniform[0]:.2f}" if len(uniform) == 1 and not parts else ""
                    border += f" ({'' if parts else 'border share '}{row[share_column]:.2f}{against})"
                bits.append(border)
            parts.append(f"{display_name(row['model'])} {', '.join(bits)}")
        return (f"**Where the models look** ({METHOD_NAMES.get(method, method)}, {images}): "
                + "; ".join(parts) + f".{trust}")

    text = sentence(shares=True)
    return text if len(text) <= FINDING_MAX_CHARS else sentence(shares=False)


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
    row per family that did not run, or ensemble that was not kept, saying why."""
    rows = []
    for name, entry in metrics.get("models", {}).items():
        test = entry.get("test", {})
        label = display_name(name)
        if entry.get("status", "ok") != "ok" or not test:
            status = ensemble_status_text(entry) if name == "ensemble" or "members" in entry else \
                readable_names(str(entry.get("status", "not scored")))
            rows.append({"model": f"{label} ({status})", "accuracy [95% CI]": "–",
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
