"""The README's first screen in plain words and its tables, from the results files: the question as this
run tested it, the answer (one accuracy per model, the seed-ensemble's, said once what that is), "how far to
trust this" (patient-id overlap, the size shortcut, test scorings, a cut training), the compact results table
and the published results. Every number comes from the files; the words about models come from ``findings``."""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import pandas as pd

from .common import PUBLISHED_RESULTS, display_name
from .findings import (FAMILIES_PRETRAINED_FOR, TARGETS, best_family, chosen_on_validation, comparison_text,
                       compared_with_scratch, early_stopping, pretrained_answer,
                       ensemble_status_text, families, not_run, number, seed_count, target_verdicts, verdict_word,
                       with_ci)
from .plots import readable_names

# ----------------------------------------------------------------------------------------------
# Tables of the README
# ----------------------------------------------------------------------------------------------
def compact_results_table(metrics: dict) -> pd.DataFrame:
    """The README's results table: model, accuracy [95% CI], ROC-AUC [95% CI], sensitivity,
    specificity (of the seed-ensemble), and the single seeds' accuracy as mean ± sd (number of seeds);
    one row per family and per cross-model ensemble, and a row per family that did not run, or
    ensemble that was not kept, saying why."""
    rows = []
    for name, entry in metrics.get("models", {}).items():
        test = entry.get("test", {})
        label = display_name(name)
        if entry.get("status", "ok") != "ok" or not test:
            status = ensemble_status_text(entry) if name == "ensemble" or "members" in entry else \
                readable_names(str(entry.get("status", "not scored")))
            rows.append({"model": f"{label} ({status})", "accuracy [95% CI]": "–",
                         "ROC-AUC [95% CI]": "–", "sensitivity": "–", "specificity": "–", SEEDS_COLUMN: "–"})
            continue
        rows.append({"model": label + (f" ({len(entry['members'])} models)" if "members" in entry else ""),
                     "accuracy [95% CI]": with_ci(test, "accuracy"), "ROC-AUC [95% CI]": with_ci(test, "roc_auc"),
                     "sensitivity": number(test.get("sensitivity")), "specificity": number(test.get("specificity")),
                     SEEDS_COLUMN: _seed_accuracy(entry)})
    return pd.DataFrame(rows, columns=["model", "accuracy [95% CI]", "ROC-AUC [95% CI]", "sensitivity",
                                       "specificity", SEEDS_COLUMN])


SEEDS_COLUMN = "single seeds: accuracy mean ± sd (n)"


def _seed_accuracy(entry: Mapping) -> str:
    """``0.869 ± 0.032 (3)``: the mean and sd of the family's single seeds' test accuracy and their number;
    one seed's accuracy alone; "–" for a cross-model ensemble or a record without seeds."""
    spread = entry.get("seed_spread") or {}
    n = int(spread.get("n_seeds") or len(entry.get("seeds", [])))
    if "members" in entry or not n or spread.get("accuracy_mean") is None:
        return "–"
    if n == 1 or spread.get("accuracy_sd") is None:
        return f"{spread['accuracy_mean']:.3f} ({n})"
    return f"{spread['accuracy_mean']:.3f} ± {spread['accuracy_sd']:.3f} ({n})"


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


# ----------------------------------------------------------------------------------------------
# The README's first screen, in plain words: the question as tested, the answer, how far to trust it
# ----------------------------------------------------------------------------------------------
def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


PLAIN_BASES = {  # the pretrained bases as the README's question names them
    "face_dlib_resnet": "dlib's face-recognition ResNet",
    "vggface_transfer": "the original study's VGG-Face, trained for face recognition",
    "hed_vgg16_transfer": "HED-VGG16, trained for edge detection",
    "xception_imagenet_transfer": "Xception, trained on ImageNet's everyday photos",
}


def readme_question(metrics: dict) -> str:
    """The question as this run tested it: the pretrained bases that ran (and what they were trained
    for), those that did not and why, and the test set it was scored on."""
    scored = families(metrics)
    transfer = [PLAIN_BASES.get(n, display_name(n)) for n in scored if n in FAMILIES_PRETRAINED_FOR]
    text = ("Does a network pretrained for another purpose (" + "; ".join(transfer) + "), given a small new "
            "classifier on top, tell pneumonia from normal chest X-rays of children better than a small network "
            "(CNN) trained from scratch on the X-rays alone?") if transfer else \
        "How well does a small network (CNN) trained from scratch tell pneumonia from normal chest X-rays of children?"
    missing = not_run(metrics)
    if missing:
        text += " Not run here: " + "; ".join(f"{PLAIN_BASES.get(n, display_name(n))} ({why.split(' (')[0]})"
                                              for n, why in missing.items()) + "."
    if "face_dlib_resnet" in scored and "vggface_transfer" in missing:
        text += (" The face-recognition base stands in for the original study's VGG-Face: it is dlib's ResNet face "
                 "embedding (128 numbers per image) rather than VGG-Face's convolutional features.")
    recipe = metrics.get("training", {}).get("scratch_recipe") or {}
    if recipe.get("input_size"):
        text += (f" The scratch CNN sees the X-rays at {recipe['input_size']} x {recipe['input_size']} px, to fit "
                 f"this machine's compute ([cost](docs/performance.md#scratch-cnn-input-size)).")
    data = metrics.get("dataset", {})
    if data.get("test_n"):
        text += (f" Every model is scored on the data set's official test set: {data['test_n']} X-rays "
                 f"({data.get('test_normal', '?')} normal, {data.get('test_pneumonia', '?')} pneumonia), used for no choice in this run.")
    if metrics.get("quick"):
        text = "*Quick run on a small subset: these numbers check the pipeline, they are not results.* " + text
    return text


def readme_answer(metrics: dict) -> str:
    """The answer in 3-5 plain sentences: what an accuracy is and what a seed-ensemble is (said once),
    one accuracy per model (its seed-ensemble's), the best family's ROC-AUC, sensitivity and
    specificity explained, and the project's targets met or missed with the figures."""
    scored = families(metrics)
    if not scored:
        return "No model was scored on the test set in this run."
    data = metrics.get("dataset", {})
    n_seeds = sorted({seed_count(e) for e in scored.values()})
    seeds = f"{n_seeds[0]} times" if len(n_seeds) == 1 else "several times"
    first = (f"Each model below was trained {seeds} from different random starts (seeds); the accuracy given is "
             f"that of its seed-ensemble, which averages the trained networks' raw scores (the mean logit) with a "
             f"cut-off set on validation images; accuracy is the share of the {data.get('test_n', 'official')} test "
             f"X-rays labelled correctly.")
    scratch = scored.get("scratch_cnn")
    comparisons = compared_with_scratch(metrics)
    if scratch and comparisons:
        answer = pretrained_answer(comparisons).capitalize()
        second = (f"{answer}, judged by McNemar's paired test on the same test X-rays against the scratch CNN's "
                  f"accuracy of {scratch['test']['accuracy']:.3f}: "
                  + "; ".join(comparison_text(row, purpose=False) for row in comparisons))
    else:
        second = "Test accuracy " + _and([f"{display_name(n)} {e['test']['accuracy']:.3f}" for n, e in scored.items()])
    published = [r for r in PUBLISHED_RESULTS if r[0].lower().startswith("original study")]
    if published:
        second += (" (the original study reported single networks, not seed-ensembles: "
                   + _and([f"{r[0].split(',', 1)[1].strip()} {r[1]:.2f}" for r in published]) + ")")
    sentences = [first, second + "."]
    set_after, revised_after = _judging_revisions(metrics)
    if scratch and comparisons and set_after:
        again = f", and the reporting revised again after the {revised_after}" if revised_after else ""
        sentences.append(f"This test was chosen after the {set_after} scoring had been seen{again} "
                         f"([protocol](docs/reproducibility.md#test-protocol)).")
    best = best_family(metrics)
    test = metrics["models"][best]["test"]
    how = "the family chosen on validation images" if chosen_on_validation(metrics) else "the best family"
    if {"roc_auc", "sensitivity", "specificity"} <= set(test):
        sentences.append(f"The seed-ensemble of {display_name(best)}, {how}, scores a pneumonia X-ray above a normal one with "
                         f"probability {test['roc_auc']:.3f} (its ROC-AUC), finds {test['sensitivity']:.1%} of "
                         f"pneumonia X-rays (sensitivity) and clears {test['specificity']:.1%} of normal ones "
                         f"(specificity).")
    verdicts = target_verdicts(metrics)
    best_targets = [v for v in verdicts if v["target"].startswith(("chosen family", "best family"))]
    if best_targets:
        def missed_words(verdict: Mapping) -> str:  # the accuracy is in the sentence before: not repeated
            target = verdict["target"].split(":")[-1].replace("best family", "").strip()
            return target if target.startswith("accuracy") else f"{target} ({verdict['measured'].split()[-1]})"

        missed = [missed_words(v) for v in best_targets if not v["met"]]
        text = (f"It meets {len(best_targets) - len(missed)} of the project's {len(best_targets)} targets for the "
                f"best model" + (f"; missed: {_and(missed)}" if missed else ""))
        scratch_target = next((v for v in verdicts if v["target"].startswith("scratch CNN mean")), None)
        stop = next((v for v in verdicts if v["target"].startswith("scratch CNN early")), None)
        if scratch_target:
            text += (f"; the scratch CNN's target (its seeds' mean accuracy ≥ {TARGETS['scratch_mean_accuracy']:g}) "
                     f"is {verdict_word(scratch_target, bold=False)}")
        if stop and not stop["met"]:
            text += ", and its training was cut before validation loss stopped improving"
        sentences.append(text + " ([targets](docs/reproducibility.md#targets)).")
    return " ".join(sentences)


def _judging_revisions(metrics: dict) -> tuple[str | None, str | None]:
    """(``"7th"``, ``"8th"``): the published scoring after which the pretrained-vs-scratch judgement became
    McNemar's test (the first published history entry whose ``reporting_changed_after`` names it), and the
    last published scoring after which the reporting was revised again (None where it was not, or no
    entry names the test)."""
    published, first, last = 0, None, None
    for entry in (metrics.get("protocol") or {}).get("history", []):
        if entry.get("published") and not entry.get("quick"):
            published += 1
            changed = entry.get("reporting_changed_after", "")
            if first is None and "McNemar" in changed:
                first = published
            elif first is not None and changed:
                last = published
    return (_ordinal(first) if first else None), (_ordinal(last) if last else None)


def _patient_overlap_bullet(overlap: Mapping) -> str | None:
    rows = {r["label"]: r for r in overlap.get("overlap", []) if r.get("reading") == "patient_id"}
    if "PNEUMONIA" not in rows:
        return None
    p, n = rows["PNEUMONIA"], rows.get("NORMAL")
    normal = (f"; {n['target_images_of_shared_ids']} of the {n['target_images']} normal ones do"
              if n else "")
    return (f"**The same patients may be in training and test.** {p['target_images_of_shared_ids']} of the "
            f"{p['target_images']} pneumonia test X-rays carry a patient id ({p['shared_ids']} of {p['target_ids']} "
            f"ids) that also appears in the training data{normal}. The file names cannot tell whether these are the "
            f"same children; if they are, the test figures flatter the models on pneumonia "
            f"([details](docs/data.md#patient-ids-three-readings-of-the-file-names)).")


def _shortcut_bullet(baseline: Mapping | None, sensitivity: Mapping | None, data: Mapping | None) -> str | None:
    lead = ("**Image size is a shortcut.** Every X-ray is squashed to a square for the networks (not letterboxed: "
            "shrunk with its shape kept, the rest padded), so the classes' different original shapes survive as a "
            "distortion.")
    if baseline:
        from .shortcut import shortcut_caveat_brief

        return f"{lead} {shortcut_caveat_brief(baseline, sensitivity)} ([details](docs/data.md#the-size-shortcut))"
    if data:
        from .eda import size_shortcut_sentence

        sentence = size_shortcut_sentence(dict(data))
        return f"{lead} {sentence}" if sentence else None
    return None


def _scorings_bullet(metrics: dict) -> str | None:
    protocol = metrics.get("protocol") or {}
    if "test_scorings" not in protocol:
        return None
    n = protocol["test_scorings"]
    if not n:
        return ("**The official test set was not scored for published results by this run** (a quick run scores a "
                "small subset) ([protocol](docs/reproducibility.md#test-protocol)).")
    return (f"**The official test set has been scored {n} time{'s' if n != 1 else ''}** for published results; "
            f"the figures here come from the {_ordinal(n)}. Earlier scorings shaped which models and recipes were tried, "
            f"so these are not the figures of a study planned in advance; every tuned choice in this run (epochs, "
            f"thresholds, saved seeds, ensemble, served network) was made on validation images; input size, seeds, "
            f"epoch caps and families were set by the compute at hand ([protocol](docs/reproducibility.md#test-protocol)).")


def trust_list(metrics: dict, overlap: Mapping | None = None, baseline: Mapping | None = None,
               sensitivity: Mapping | None = None, data: Mapping | None = None) -> str:
    """"How far to trust this" as Markdown bullets, with numbers from the results files: the patient-id
    overlap (``results/patient_overlap.json``), the size shortcut (``results/size_baseline.json`` and
    ``results/squash_sensitivity.json`` through :func:`pneumonia_cxr.shortcut.shortcut_caveat`; without
    them the size difference of ``results/data_summary.json``), how many times the official test set was
    scored (``protocol.test_scorings``), and each family whose training was cut by its epoch cap. Missing inputs are
    left out."""
    bullets = [_patient_overlap_bullet(overlap) if overlap else None, _shortcut_bullet(baseline, sensitivity, data),
               _scorings_bullet(metrics)]
    for name in families(metrics):
        stop = early_stopping(metrics, name)
        if stop is not None and not stop["acted"]:
            bullets.append(f"**{display_name(name)}'s training was cut:** its best epoch reached the cap of "
                           f"{stop['cap']} for {len(stop['best_epochs']) - stop['below']} of "
                           f"{len(stop['best_epochs'])} seeds, so it may be undertrained.")
    return "\n".join(f"- {b}" for b in bullets if b)
