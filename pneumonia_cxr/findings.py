"""Model findings in words, from ``results/metrics.json``: what each family scored and what that
figure is, the project's targets judged from the record, whether early stopping acted, the README's
The README's first screen and tables are in ``front_page``. Every sentence is built from the numbers it is given;
nothing numeric is typed here except the targets, which are the project's own and stated as such.
(Readable tables and the Grad-CAM words live in ``reporting``.)"""
from __future__ import annotations

import math
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from .common import DISPLAY_NAMES, PUBLISHED_RESULTS, display_name
from .augmentation import VALIDATION_PERTURBATIONS
from .plots import readable_names
from .reporting import MISSING, p_text

FINDING_MAX_CHARS = 700  # a findings bullet (notebook and docs, not the README), "- " included

# ----------------------------------------------------------------------------------------------
# Reading results/metrics.json
# ----------------------------------------------------------------------------------------------
FAMILIES_PRETRAINED_FOR = {  # what each transfer family's base was trained for: "pretrained for <this>"
    "vggface_transfer": "face recognition",
    "face_dlib_resnet": "face recognition",
    "hed_vgg16_transfer": "edge detection",
    "xception_imagenet_transfer": "recognising objects in photos",
}

# The project's targets on the official test set, for the published rows.
TARGETS = {"best_accuracy": 0.92, "best_roc_auc": 0.975, "best_specificity": 0.85, "best_sensitivity": 0.95,
           "scratch_mean_accuracy": 0.85, "min_seeds": 3, "scratch_epoch_cap": 12}
EARLY_STOPPING_SHARE = 2 / 3  # early stopping "acted" when the best epoch is below the cap for >= 2 of 3 seeds


def number(value, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; "–" for None or NaN (never "nan")."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return f"{value:.{digits}f}"


def pretrained_for(name: str) -> str:
    """``" (pretrained for face recognition)"`` for a transfer family, "" for others."""
    purpose = FAMILIES_PRETRAINED_FOR.get(name)
    return f" (pretrained for {purpose})" if purpose else ""


def seed_count(entry: Mapping) -> int:
    """How many seeds a family's record holds (``seed_spread.n_seeds``, else its ``seeds`` list)."""
    n = (entry.get("seed_spread") or {}).get("n_seeds")
    return int(n) if n is not None else len(entry.get("seeds", []))


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
ALPHA = 0.05  # a paired difference on the test images counts when McNemar's exact p is below this


def compared_with_scratch(metrics: dict) -> list[dict]:
    """Each scored transfer family's seed-ensemble against the scratch CNN's on the same test images, highest
    accuracy first: ``name``, ``accuracy``, McNemar's exact ``p`` (``metrics["paired_tests"]``; None where the
    record has none) and ``relation``: "higher" or "lower" when p < 0.05, else "not distinguishable"."""
    scored = families(metrics)
    scratch = scored.get("scratch_cnn")
    if not scratch:
        return []
    pairs = {frozenset((t["a"], t["b"])): t["p_value"] for t in metrics.get("paired_tests", [])}
    rows = []
    for name, entry in scored.items():
        if name == "scratch_cnn":
            continue
        accuracy, p = entry["test"]["accuracy"], pairs.get(frozenset((name, "scratch_cnn")))
        apart = p < ALPHA if p is not None else _overlap(entry["test"], scratch["test"], "accuracy") is False
        relation = ("higher" if accuracy > scratch["test"]["accuracy"] else "lower") if apart else "not distinguishable"
        rows.append({"name": name, "accuracy": accuracy, "p": p, "relation": relation,
                     "single": single_network_counts(metrics, name)})
    return sorted(rows, key=lambda row: -row["accuracy"])


def single_network_counts(metrics: dict, name: str) -> dict[str, int] | None:
    """How the single networks of family ``name`` fare against the scratch CNN's, every seed against every
    seed (``metrics["single_network_tests"]``): ``pairs``, ``higher`` and ``lower`` (McNemar p < ALPHA, by
    accuracy), ``not_distinguishable``; None where the record has no such tests."""
    tests = [t for t in metrics.get("single_network_tests", []) if t["a"] == name and t["b"] == "scratch_cnn"]
    if not tests:
        return None
    apart = [t for t in tests if t["p_value"] < ALPHA]
    higher = sum(t["accuracy_a"] > t["accuracy_b"] for t in apart)
    return {"pairs": len(tests), "higher": higher, "lower": len(apart) - higher,
            "not_distinguishable": len(tests) - len(apart)}


def single_network_text(counts: Mapping | None) -> str:
    """``seed against seed, uncorrected: higher in 5 of 9 pairs, lower in 0`` (McNemar p < 0.05, no correction
    for the 9 overlapping tests; every single network of the family against every one of the scratch CNN's),
    or "" without counts."""
    if not counts:
        return ""
    return (f"seed against seed, uncorrected: higher in {counts['higher']} of {counts['pairs']} pairs, "
            f"lower in {counts['lower']}")


def pretrained_answer(comparisons: Sequence[dict]) -> str:
    """"yes" when every transfer family is higher than the scratch CNN, "partly" when some are, "no" when every
    one is lower, else "not shown" (none higher, at least one not distinguishable from the scratch CNN)."""
    higher = sum(row["relation"] == "higher" for row in comparisons)
    lower = sum(row["relation"] == "lower" for row in comparisons)
    if higher:
        return "yes" if higher == len(comparisons) else "partly"
    return "no" if lower == len(comparisons) else "not shown"


def comparison_text(row: Mapping, purpose: bool = True) -> str:
    """``ImageNet Xception transfer (pretrained for ...) 0.909, not distinguishable (McNemar p 0.708)``;
    without the "(pretrained for ...)" where ``purpose`` is False (a text that has said it already)."""
    test = f"McNemar p {p_text(row['p'])}" if row["p"] is not None else "95% intervals"
    single = single_network_text(row.get("single"))
    what = pretrained_for(row["name"]) if purpose else ""
    return (f"{display_name(row['name'])}{what} {row['accuracy']:.3f}, {row['relation']} ({test}"
            + (f"; {single}" if single else "") + ")")


def _count(metrics: dict, key: str) -> str:
    """``"624 "`` from ``metrics["dataset"][key]``, or "" where the record has no such count."""
    value = metrics.get("dataset", {}).get(key)
    return f"{value} " if value is not None else ""


def _pretrained_finding(metrics: dict) -> str | None:
    """Does a base pretrained for another purpose beat the scratch CNN? Judged per family by the paired test
    on the test images, not by the point estimates."""
    scored = families(metrics)
    scratch = scored.get("scratch_cnn")
    transfer = {n: e for n, e in scored.items() if n != "scratch_cnn"}
    if not scratch or not transfer:
        return None
    if any(len(e.get("seeds", [])) != len(scratch.get("seeds", [])) for e in transfer.values()):
        return _pretrained_finding_single_networks(scratch, transfer, not_run(metrics))
    comparisons = compared_with_scratch(metrics)
    n = seed_count(scratch)
    return (f"**Pretrained for another purpose vs from scratch: {pretrained_answer(comparisons)}.** Test accuracy of "
            f"each family's seed-ensemble (the mean logit of its {n} seed{'s' if n != 1 else ''}), against the "
            f"scratch CNN's {scratch['test']['accuracy']:.3f} on the same {_count(metrics, 'test_n')}test images: "
            + "; ".join(comparison_text(row) for row in comparisons)
            + f".{_not_run_sentence(not_run(metrics))}")


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
        parts.append(f"{display_name(name)}{pretrained_for(name)} {number(value)} (mean of {n} seed"
                     f"{'s' if n != 1 else ''})")
        better.append(value > reference)
    answer = "yes" if all(better) else "partly" if any(better) else "no"
    scratch_seeds = f"{n_scratch} seeds" if n_scratch != 1 else "1 seed, so its spread over seeds is unknown"
    return (f"**Pretrained for another purpose vs from scratch: {answer}, single networks compared.** Test accuracy "
            + " and ".join(parts) + f", against the scratch CNN's {number(reference)} ({scratch_seeds})."
            + _not_run_sentence(missing))


def _short_model(label: str) -> str:
    """A published model's name without its details but with its input size, when given:
    ``InceptionV3 (ImageNet), fine-tuned`` -> ``InceptionV3``; ``ResNet-18, end to end (224 px)`` ->
    ``ResNet-18 224 px``."""
    name = re.sub(r"\s*\([^()]*\)$", "", label.split(",")[0].strip())
    size = re.search(r"\((\d+ px)\)\s*$", label)
    return f"{name} {size.group(1)}" if size else name


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
    heading = "Family chosen on validation (its seed-ensemble)" if chosen_on_validation(metrics) else "Best model"
    accuracy = _placed(test, "accuracy", 1, references)
    auc = _placed(test, "roc_auc", 2, references) if "roc_auc" in test else {}

    def sentence(names: str, auc_interval: bool, auc_names: str, tail: str) -> str:
        parts = [f"above {_grouped(accuracy['above'], names)}" if accuracy["above"] else "",
                 f"within our 95% interval {_grouped(accuracy['within'], names)}"
                 if accuracy["within"] else "",
                 f"below {_grouped(accuracy['below'], names)}" if accuracy["below"] else ""]
        auc_parts = [f"{word} {_grouped(auc[key], auc_names, column=2)}"
                     for key, word in (("above", "above"), ("below", "below")) if auc.get(key)]
        auc_text = f"; ROC-AUC {' and '.join(auc_parts)}" if auc_parts else ""
        value = with_ci(test, "roc_auc") if auc_interval else f"{test['roc_auc']:.3f}" if "roc_auc" in test else "–"
        return (f"**{heading}: {display_name(best)}**, test accuracy {with_ci(test, 'accuracy')}, ROC-AUC {value}: "
                f"accuracy " + "; ".join(p for p in parts if p) + auc_text + f" ({tail}).")

    see = "; see the README's table of published results"
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
    where = "below" if a < b else "above" if a > b else "equal to"
    mcnemar = (entry.get("mcnemar_vs_members") or {}).get(best) or {}
    test_p = f"; McNemar p {p_text(mcnemar['p_value'])}" if "p_value" in mcnemar else ""
    return (f"**Cross-model ensemble** of {len(members)} families (chosen on validation): accuracy {a:.3f}, "
            f"ROC-AUC {number(entry['test'].get('roc_auc'))}, {where} its best member, {display_name(best)} "
            f"({b:.3f}{caveat}{test_p}).")


def _served_finding(metrics: dict) -> str | None:
    """The network the app serves, with its own test row."""
    served = served_entry(metrics)
    if not served or "test" not in served:
        return None
    test = served["test"]
    seed = f", seed {served['seed']}" if served.get("seed") is not None else ""
    return (f"**Served by the app:** {display_name(served['name'])}{seed}, chosen on validation. It is one network, "
            f"not the family's seed-ensemble, so its figures differ: test accuracy {number(test.get('accuracy'))}, "
            f"ROC-AUC {number(test.get('roc_auc'))}, sensitivity {number(test.get('sensitivity'))}, specificity "
            f"{number(test.get('specificity'))}.")


def scratch_cap(metrics: dict) -> int | None:
    """The scratch CNN's epoch cap: ``training.scratch_recipe.max_epochs``, else ``training.epoch_caps``."""
    training = metrics.get("training", {})
    cap = (training.get("scratch_recipe") or {}).get("max_epochs")
    return cap if cap is not None else (training.get("epoch_caps") or {}).get("scratch_cnn")


def early_stopping(metrics: dict, name: str = "scratch_cnn") -> dict | None:
    """Whether early stopping acted for family ``name``: ``cap``, ``best_epochs`` (per seed), ``below``
    (seeds whose best epoch is below the cap) and ``acted`` (below the cap for at least two thirds of the
    seeds, i.e. >= 2 of 3); None when the record lacks the cap or the seeds' best epochs."""
    cap = scratch_cap(metrics) if name == "scratch_cnn" else \
        (metrics.get("training", {}).get("epoch_caps") or {}).get(name)
    epochs = [s["best_epoch"] for s in metrics.get("models", {}).get(name, {}).get("seeds", [])
              if s.get("best_epoch") is not None]
    if cap is None or not epochs:
        return None
    below = sum(e < cap for e in epochs)
    return {"cap": cap, "best_epochs": epochs, "below": below,
            "acted": below >= EARLY_STOPPING_SHARE * len(epochs) - 1e-9}


def _early_stopping_finding(metrics: dict) -> str | None:
    """The scratch CNN's training: its input size, and whether early stopping acted or training was cut."""
    stop = early_stopping(metrics)
    if stop is None:
        return None
    recipe = metrics.get("training", {}).get("scratch_recipe") or {}
    size = f" at {recipe['input_size']} px input" if recipe.get("input_size") else ""
    epochs = ", ".join(map(str, stop["best_epochs"]))
    n = len(stop["best_epochs"])
    if stop["acted"]:
        return (f"**Scratch CNN training{size}:** early stopping acted: the best epoch (lowest validation loss) fell "
                f"below the cap of {stop['cap']} for {stop['below']} of {n} seeds (best epochs {epochs}).")
    return (f"**Scratch CNN training{size}: training was cut.** The best epoch (lowest validation loss) fell below "
            f"the cap of {stop['cap']} for only {stop['below']} of {n} seeds (best epochs {epochs}): validation loss "
            f"was still falling, so longer training might score higher.")


def _face_finding(metrics: dict, references: Iterable = PUBLISHED_RESULTS) -> str | None:
    """The face-recognition family (dlib ResNet) beside the original study's VGG-Face result, with what differs."""
    entry = families(metrics).get("face_dlib_resnet")
    if entry is None:
        return None
    vggface = next((r for r in references if "vgg-face" in r[0].lower() and r[0].lower().startswith("original")), None)
    beside = f", beside the original study's VGG-Face transfer {vggface[1]:.3f}" if vggface else ""
    n = seed_count(entry)
    return (f"**{display_name('face_dlib_resnet')}**, pretrained for face recognition: test accuracy "
            f"{with_ci(entry['test'], 'accuracy')} (seed-ensemble of {n} seed{'s' if n != 1 else ''}){beside}. "
            f"It differs from the original study's base: dlib's ResNet face embedding (a 128-number descriptor "
            f"per image) instead of VGG-Face's convolutional features, which cannot be downloaded here.")


def model_findings(metrics: dict) -> str:
    """``## Findings`` of ``model_deep_learning.ipynb`` as Markdown bullets, from the metrics dict
    the notebook wrote (``results/metrics.json``): pretrained vs scratch, the best model against the
    published results, its errors, the cross-model ensemble, the network the app serves, and the
    targets met or not. Keys it does not find are left out, never guessed."""
    bullets = [_pretrained_finding(metrics), _face_finding(metrics), _reference_finding(metrics),
               _errors_finding(metrics), _early_stopping_finding(metrics), _ensemble_finding(metrics),
               _served_finding(metrics)]
    lines = [f"- {b}" for b in bullets if b]
    verdicts = target_verdicts(metrics)
    if verdicts:
        lines.append(f"- **Targets:** {sum(v['met'] for v in verdicts)} of {len(verdicts)} met.")
        lines += [f"  - {v['target']}: {verdict_word(v)} ({v['measured']})" for v in verdicts]
    if metrics.get("quick"):
        lines.insert(0, "- *Quick run on a small subset: these numbers check the pipeline, they are not results.*")
    return "\n".join(lines) if lines else "- No model was scored on the test set in this run."


def verdict_word(verdict: Mapping, bold: bool = True) -> str:
    """"met", or "missed" (bold by default) for a target verdict."""
    return "met" if verdict["met"] else ("**missed**" if bold else "missed")


def _mean_over_seeds(spread: Mapping, metric: str) -> str:
    """``0.820 ± 0.010 over 3 seeds``, or ``0.821, 1 seed: no spread`` where there is no spread
    (never "± nan")."""
    n, sd = spread.get("n_seeds"), spread.get(f"{metric}_sd")
    mean = number(spread.get(f"{metric}_mean"))
    if n == 1 or sd is None or (isinstance(sd, float) and not math.isfinite(sd)):
        return f"{mean}, {n if n is not None else '?'} seed{'' if n == 1 else 's'}: no spread"
    return f"{mean} ± {sd:.3f} over {n} seeds"


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


def _precision_verdict(metrics: dict) -> dict | None:
    """The target "float32 by default whatever the CPU": met when the recipe's default precision is float32 and
    every seed of every family recorded training, and the frozen passes recorded running, in float32 (unrecorded
    precisions do not pass), on this run's CPU (``metrics["cpu"]``: model and native bfloat16, named in the
    figure); None where the record has no recipe precision."""
    training = metrics.get("training", {})
    default = (training.get("scratch_recipe") or {}).get("precision")
    if default is None:
        return None
    used = sorted({record["training_precision"] for entry in families(metrics).values()
                   for record in entry.get("seeds", []) if record.get("training_precision")})
    frozen = training.get("frozen_pass_precision")
    cpu_record = metrics.get("cpu") or {}
    native = cpu_record.get("native_bfloat16")
    cpu = ("" if native is None else f", on {cpu_record.get('model', 'a CPU')} "
           f"{'with' if native else 'without'} native bfloat16")
    return {"target": "float32 by default whatever the CPU (training and frozen passes; judged on this run's CPU)",
            "met": bool(default == "float32" and used == ["float32"] and frozen == "float32"),
            "measured": f"recipe default {default}; seeds trained in {', '.join(used) or '–'}; frozen passes in "
                        f"{frozen or '–'}{cpu}"}


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
    scratch = metrics.get("models", {}).get("scratch_cnn", {})
    spread = scratch.get("seed_spread", {})
    if spread.get("accuracy_mean") is not None:
        n = seed_count(scratch)
        out.append({"target": f"scratch CNN mean accuracy over ≥ {TARGETS['min_seeds']} seeds "
                              f"≥ {TARGETS['scratch_mean_accuracy']:g}",
                    "met": bool(spread["accuracy_mean"] >= TARGETS["scratch_mean_accuracy"]
                                and n >= TARGETS["min_seeds"]),
                    "measured": "mean of the seeds' own accuracies " + _mean_over_seeds(spread, "accuracy")})
    cap = scratch_cap(metrics)
    if cap is not None and scratch.get("status", "ok") == "ok":
        out.append({"target": f"scratch CNN epoch cap ≥ {TARGETS['scratch_epoch_cap']}",
                    "met": bool(cap >= TARGETS["scratch_epoch_cap"]), "measured": f"cap {cap}"})
    stop = early_stopping(metrics)
    if stop is not None:
        out.append({"target": "scratch CNN early stopping acted (best epoch below the cap for ≥ 2 of 3 seeds)",
                    "met": bool(stop["acted"]),
                    "measured": f"{stop['below']} of {len(stop['best_epochs'])} seeds below the cap of {stop['cap']}; "
                                f"best epochs {', '.join(map(str, stop['best_epochs']))}"
                                + ("" if stop["acted"] else "; training was cut")})
    precision = _precision_verdict(metrics)
    if precision is not None:
        out.append(precision)
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
