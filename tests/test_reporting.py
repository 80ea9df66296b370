"""pneumonia_cxr.reporting: readable tables and findings in words, built from the numbers given
(results/metrics.json, results/gradcam_checks.csv, results/data_summary.json) and never typed."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pneumonia_cxr import reporting  # its private finding builders
from pneumonia_cxr.augmentation import VALIDATION_PERTURBATIONS

REPO_ROOT = Path(__file__).resolve().parents[1]


def _test(accuracy, auc, sensitivity=0.97, specificity=0.7, width=0.03):
    return {"accuracy": accuracy, "accuracy_ci95": [accuracy - width, accuracy + width], "roc_auc": auc,
            "roc_auc_ci95": [auc - 0.02, auc + 0.01], "sensitivity": sensitivity, "specificity": specificity}


def _family(accuracy, auc, seeds=3, **test):
    return {"status": "ok", "val": {"roc_auc": 0.99},
            "seeds": [{"seed": s, "val": {"roc_auc": 0.99 - s / 100}, "test": _test(accuracy, auc)} for s in range(seeds)],
            "test": _test(accuracy, auc, **test),
            "seed_spread": {"accuracy_mean": accuracy - 0.02, "accuracy_sd": 0.01, "n_seeds": seeds}}


@pytest.fixture()
def metrics():
    return {"quick": False, "app_default": "hed_vgg16_transfer",
            "models": {"scratch_cnn": _family(0.84, 0.925),
                       "vggface_transfer": {"status": "not run: weights unavailable"},
                       "hed_vgg16_transfer": _family(0.79, 0.942, sensitivity=1.0, specificity=0.43),
                       "xception_imagenet_transfer": _family(0.886, 0.959, sensitivity=0.979, specificity=0.731),
                       "ensemble": {"status": "ok", "members": ["scratch_cnn", "xception_imagenet_transfer"],
                                    "test": _test(0.81, 0.96, width=0.01)}}}


def test_display_names_cover_every_model_and_are_exported(fgc):
    assert set(fgc.DISPLAY_NAMES) == {"scratch_cnn", "vggface_transfer", "face_dlib_resnet", "hed_vgg16_transfer",
                                      "xception_imagenet_transfer", "ensemble"}
    assert fgc.display_name("scratch_cnn") == "Scratch CNN" and fgc.display_name("other") == "other"
    assert fgc.readable_names("scratch_cnn, seed 0; xception_imagenet_transfer") == \
        "Scratch CNN, seed 0; ImageNet Xception transfer"
    assert fgc.readable_names("ensemble_members") == "ensemble_members"  # whole names only


def test_published_results_are_the_cited_numbers(fgc):
    by_label = {r.label: r for r in fgc.PUBLISHED_RESULTS}
    assert [(r.accuracy, r.roc_auc) for r in fgc.PUBLISHED_RESULTS] == [
        (0.82, None), (0.88, None), (0.928, 0.968), (0.911, 0.980), (0.916, 0.989)]
    assert all(r.url.startswith("https://") and r.citation for r in by_label.values())
    assert fgc.PUBLISHED_RESULTS[0][:3] == ("Original study, scratch CNN", 0.82, None)  # (label, accuracy, auc) first


def test_readable_table_renames_rounds_and_shows_whole_numbers_as_integers(fgc):
    frame = pd.DataFrame({"model": ["scratch_cnn", "ensemble"], "n_seeds": [3.0, 3.0],
                          "accuracy_mean": [0.837123, 0.5], "roc_auc": [0.9, np.nan], "train_seconds": [59.068715, 1.0],
                          "correct": [True, False]}).set_index("model")
    table = fgc.readable_table(frame)
    assert list(table.columns) == ["seeds", "accuracy mean", "ROC-AUC", "training (s)", "correct"]
    assert list(table.index) == ["Scratch CNN", "Cross-model ensemble"] and table.index.name == "model"
    assert table["seeds"].tolist() == [3, 3] and str(table["seeds"].dtype) == "Int64"
    assert table["accuracy mean"].tolist() == [0.837, 0.5] and table["training (s)"].tolist() == [59.069, 1.0]
    assert table["correct"].tolist() == [True, False]
    assert frame.columns[0] == "n_seeds"  # the input is left as it was
    multi = fgc.readable_table(pd.DataFrame({"images": [1, 2]},
                                            index=pd.MultiIndex.from_tuples([("train", "NORMAL"), ("val", "NORMAL")],
                                                                            names=["split", "label"])))
    assert list(multi.index.names) == ["split", "label"] and multi["images"].tolist() == [1, 2]


def test_model_findings_answer_from_the_numbers(fgc, metrics):
    text = fgc.model_findings(metrics)
    lines = text.splitlines()
    assert lines[0].startswith("- **Pretrained for another purpose vs from scratch: partly.**")
    assert "ImageNet Xception transfer (object photos) 0.886 and HED-VGG16 transfer (edge detection) 0.790" in lines[0]
    assert "against the scratch CNN's 0.840" in lines[0] and lines[0].endswith("Not run: VGG-Face transfer, weights unavailable.")
    reference = next(line for line in lines if line.startswith("- **Best model"))
    assert reference == (  # 0.820 under our interval [0.856, 0.916]; 0.880, 0.911, 0.916 inside; 0.928 over it
"- **Best model: ImageNet Xception transfer**, test accuracy 0.886 [0.856, 0.916], ROC-AUC 0.959: "
        "accuracy above the original study (scratch CNN 0.820); not distinguishable from the original study "
        "(VGG-Face transfer 0.880) and MedMNIST+ (0.911, 0.916) (inside our 95% interval); below Kermany et "
        "al. 2018 (0.928); ROC-AUC below MedMNIST+ (0.980, 0.989) (protocols differ).")
    assert len(reference) <= 400
    assert "finds 97.9% of test pneumonia" in text and "clears 73.1% of normal" in text
    assert "accuracy 0.810, ROC-AUC 0.960, below its best member, ImageNet Xception transfer (0.886; 95% intervals apart)" in text
    assert "**Served by the app:** HED-VGG16 transfer, seed 0" in text  # app_default, best validation seed
    assert "- **Targets:** 2 of 7 met." in text
    assert "  - best family specificity ≥ 0.85: **not met** (ImageNet Xception transfer 0.731)" in lines


def test_model_findings_follow_the_numbers_when_they_change(fgc, metrics):
    changed = copy.deepcopy(metrics)
    changed["models"]["hed_vgg16_transfer"]["test"]["accuracy"] = 0.95
    changed["models"]["xception_imagenet_transfer"]["test"] = _test(0.93, 0.98, 0.96, 0.86)
    changed["models"]["ensemble"] = {"status": "dropped by the validation rule (one family)"}
    changed["served"] = {"name": "xception_imagenet_transfer", "seed": 2,
                         "test": {"accuracy": 0.91, "roc_auc": 0.975, "sensitivity": 0.95, "specificity": 0.84}}
    unserved = fgc.model_findings({key: value for key, value in changed.items() if key != "served"})
    assert "**Best model: HED-VGG16 transfer**, test accuracy 0.950" in unserved  # highest test accuracy
    text = fgc.model_findings(changed)  # served: the validation rule's choice, never the test set's
    assert "vs from scratch: yes.**" in text and "Best model" not in text and "best family" not in text
    reference = next(line for line in text.splitlines() if "Served network's family" in line)
    assert reference == (  # served: the family's seed-ensemble; all of 0.911-0.928 inside [0.900, 0.960]
"- **Served network's family (seed-ensemble): ImageNet Xception transfer**, test accuracy 0.930 "
        "[0.900, 0.960], ROC-AUC 0.980: accuracy above the original study (scratch CNN 0.820, VGG-Face "
        "transfer 0.880); not distinguishable from Kermany et al. 2018 (InceptionV3 0.928) and MedMNIST+ "
        "(ResNet-18 0.911, DINO ViT-B/16 0.916) (inside our 95% interval) (published protocols differ; see "
        "the table below).")  # too long with the ROC-AUC interval
    assert len(reference) <= 400
    assert "**Errors.** At its validation threshold, ImageNet Xception transfer finds 96.0%" in text
    assert "**Cross-model ensemble:** dropped by the validation rule (one family)." in text
    assert "**Served by the app:** ImageNet Xception transfer, seed 2" in text and "specificity 0.840" in text
    assert "  - chosen family's seed-ensemble: accuracy ≥ 0.92: met (ImageNet Xception transfer 0.930)" in text
    assert "  - chosen family's seed-ensemble: specificity ≥ 0.85: met (ImageNet Xception transfer 0.860)" in text
    assert "or dropped: met (dropped by the validation rule (one family))" in text
    quick = fgc.model_findings(changed | {"quick": True})
    assert quick.startswith("- *Quick run")
    assert fgc.model_findings({"models": {}}) == "- No model was scored on the test set in this run."


def test_target_verdicts_judge_each_target_on_its_figure(fgc, metrics):
    verdicts = {v["target"].split(" ≥")[0]: v for v in fgc.target_verdicts(metrics)}
    assert not verdicts["best family accuracy"]["met"] and verdicts["best family sensitivity"]["met"]
    assert not verdicts["scratch CNN mean accuracy over seeds"]["met"]
    assert verdicts["scratch CNN mean accuracy over seeds"]["measured"] == "0.820 ± 0.010 over 3 seeds"
    ensemble = next(v for v in fgc.target_verdicts(metrics) if v["target"].startswith("cross-model"))
    assert not ensemble["met"]
    level = copy.deepcopy(metrics)
    level["models"]["ensemble"]["test"] = _test(0.886, 0.959)  # equal to the best member: at least as good
    assert next(v for v in fgc.target_verdicts(level) if v["target"].startswith("cross-model"))["met"]
    two_seeds = copy.deepcopy(metrics)
    two_seeds["models"]["scratch_cnn"]["seeds"] = two_seeds["models"]["scratch_cnn"]["seeds"][:2]
    assert not next(v for v in fgc.target_verdicts(two_seeds) if "seeds per family" in v["target"])["met"]


def test_errors_finding_reads_the_validation_test_gap_from_the_numbers(fgc, metrics):
    gap = copy.deepcopy(metrics)
    gap["models"]["xception_imagenet_transfer"]["val"] = {"roc_auc": 0.993, "specificity": 0.985, "sensitivity": 0.95}
    text = fgc.model_findings(gap)  # test: sensitivity 0.979 (higher), specificity 0.731 (-25.4 points)
    assert ("most of its errors are NORMAL X-rays called PNEUMONIA. On validation: sensitivity 95.0%, specificity "
            "98.5%, ROC-AUC 0.993; on test 97.9%, 73.1%, 0.959 (specificity 25.4 points lower).") in text
    assert "collection" not in text  # nothing in the repository says where the test set comes from
    assert "On validation: ROC-AUC 0.990; on test 0.959." in fgc.model_findings(metrics)  # no rates: no verdict
    served = fgc.model_findings(gap | {"served": {"name": "xception_imagenet_transfer", "seed": 1}})
    errors = next(line for line in served.splitlines() if line.startswith("- **Errors.**"))
    assert errors.endswith(  # chosen on pooled validation: said so
        "most of its errors are NORMAL X-rays called PNEUMONIA. On validation pooled with 4 perturbed copies: "
        "sensitivity 95.0%, specificity 98.5%, ROC-AUC 0.993; on test 97.9%, 73.1%, 0.959 (specificity 25.4 points "
        "lower).") and len(errors) <= 400
    assert f"{len(VALIDATION_PERTURBATIONS)} perturbed copies" in errors  # counted, not typed
    carried = copy.deepcopy(gap)
    carried["models"]["xception_imagenet_transfer"]["val"].update(sensitivity=0.99, specificity=0.74)
    assert "0.959 (both rates within 2 points)." in fgc.model_findings(carried)
    fell = copy.deepcopy(gap)
    fell["models"]["xception_imagenet_transfer"]["val"].update(sensitivity=1.0, specificity=0.80)
    assert "(sensitivity 2.1 points lower and specificity 6.9 points lower)." in fgc.model_findings(fell)
    no_gap = copy.deepcopy(gap)
    no_gap["models"]["xception_imagenet_transfer"]["val"] = {"roc_auc": 0.993}
    short = reporting._errors_finding(no_gap | {"served": {"name": "xception_imagenet_transfer"}})
    assert short.endswith(" On validation pooled with 4 perturbed copies: ROC-AUC 0.993; on test 0.959.")


def test_reference_finding_places_each_published_result_against_our_interval(fgc, metrics):
    """Each published accuracy below our 95% interval reads "above", inside it "level with", above it
    "below"; each source's models named (short names) while the bullet stays within 400 characters."""
    assert reporting._grouped(fgc.PUBLISHED_RESULTS[:3]) == (
        "the original study (scratch CNN 0.820, VGG-Face transfer 0.880) and Kermany et al. 2018 (InceptionV3 0.928)")
    assert reporting._grouped(fgc.PUBLISHED_RESULTS[:3], names="original") == (
        "the original study (scratch CNN 0.820, VGG-Face transfer 0.880) and Kermany et al. 2018 (0.928)")
    narrow = copy.deepcopy(metrics)
    narrow["models"]["xception_imagenet_transfer"]["test"] = test = {
        "accuracy": 0.90, "accuracy_ci95": [0.885, 0.915], "roc_auc": 0.96, "roc_auc_ci95": [0.95, 0.97]}
    text = reporting._reference_finding(narrow)
    assert text == ("**Best model: ImageNet Xception transfer**, test accuracy 0.900 [0.885, 0.915], ROC-AUC 0.960: "
                    "accuracy above the original study (scratch CNN 0.820, VGG-Face transfer 0.880); not distinguishable "
                    "from MedMNIST+ (0.911) (inside our 95% interval); below Kermany et al. 2018 (0.928) and MedMNIST+ "
                    "(0.916); ROC-AUC below MedMNIST+ (0.980, 0.989) (published protocols differ; see the table below).")
    test["accuracy_ci95"] = [0.80, 0.95]  # every published result inside
    assert ": accuracy not distinguishable from the original study (scratch CNN 0.820, VGG-Face transfer 0.880) and Kermany" in \
        reporting._reference_finding(narrow)
    assert "above" not in reporting._reference_finding(narrow).split(": ", 1)[1]
    served = reporting._reference_finding(metrics | {"served": {"name": "xception_imagenet_transfer", "seed": 0}})
    assert served == (  # the longest wording: only the original study's models named, no ROC-AUC interval
"**Served network's family (seed-ensemble): ImageNet Xception transfer**, test accuracy 0.886 "
        "[0.856, 0.916], ROC-AUC 0.959: accuracy above the original study (scratch CNN 0.820); not "
        "distinguishable from the original study (VGG-Face transfer 0.880) and MedMNIST+ (0.911, 0.916) "
        "(inside our 95% interval); below Kermany et al. 2018 (0.928); ROC-AUC below MedMNIST+ (0.980, "
        "0.989) (protocols differ).")
    assert len(f"- {served}") <= 400
    unserved = reporting._reference_finding(metrics | {"served": {"name": "not_a_family"}})  # not a scored family
    assert unserved.startswith("**Best model: ImageNet Xception transfer**")


def test_pretrained_finding_compares_single_networks_when_seed_counts_differ(fgc, metrics):
    uneven = copy.deepcopy(metrics)
    uneven["models"]["xception_imagenet_transfer"]["seeds"] = [
        {"seed": s, "test": {"accuracy": a}} for s, a in enumerate((0.86, 0.88))]  # 2 seeds against 3
    uneven["models"]["scratch_cnn"]["seeds"] = [{"seed": s, "test": {"accuracy": a}} for s, a in
                                                enumerate((0.80, 0.83, 0.86))]
    uneven["models"]["hed_vgg16_transfer"]["seeds"] = [{"seed": s, "test": {"accuracy": a}} for s, a in
                                                       enumerate((0.75, 0.78, 0.81))]
    line = fgc.model_findings(uneven).splitlines()[0]
    assert line == (
        "- **Pretrained for another purpose vs from scratch: partly, single networks compared.** Test accuracy "
        "ImageNet Xception transfer (object photos) 0.870 (mean of 2 seeds) and HED-VGG16 transfer (edge detection) "
        "0.780 (mean of 3 seeds), against the scratch CNN's 0.830 (3 seeds). Not run: VGG-Face transfer, weights "
        "unavailable.")
    uneven["models"]["hed_vgg16_transfer"]["seeds"] = [{"seed": 0, "test": {"accuracy": 0.84}}]
    assert fgc.model_findings(uneven).startswith("- **Pretrained for another purpose vs from scratch: yes, single "
                                                 "networks compared.**")
    assert ("Test accuracy ImageNet Xception transfer (object photos) 0.870 (mean of 2 seeds) and HED-VGG16 transfer "
            "(edge detection) 0.840 (mean of 1 seed), against the scratch CNN's 0.830 (3 seeds).") in \
        fgc.model_findings(uneven)
    assert "(mean of" not in fgc.model_findings(metrics)  # same seed counts: the seed-ensembles compared


def test_an_ensemble_the_validation_rule_did_not_keep_reads_as_dropped(fgc, metrics):
    dropped = copy.deepcopy(metrics)
    dropped["models"]["ensemble"] = {
        "status": "not kept: the validation rule chose one family (xception_imagenet_transfer)"}
    expected = "dropped by the validation rule, which chose one family: ImageNet Xception transfer"
    assert fgc.ensemble_dropped(dropped["models"]["ensemble"]) and fgc.ensemble_status_text(
        dropped["models"]["ensemble"]) == expected
    table = fgc.compact_results_table(dropped).set_index("model")
    assert table.loc[f"Cross-model ensemble ({expected})"].tolist() == ["–"] * 5
    text = fgc.model_findings(dropped)
    assert f"- **Cross-model ensemble:** {expected}." in text.splitlines()
    assert "xception_imagenet_transfer" not in text
    verdict = next(v for v in fgc.target_verdicts(dropped) if v["target"].startswith("cross-model"))
    assert verdict == {"target": "cross-model ensemble at least as good as its best member (accuracy and ROC-AUC), "
                                 "or dropped", "met": True, "measured": expected}
    assert "- **Targets:** 3 of 7 met." in text  # the ensemble target counts as met (2 of 7 with the kept one)
    failed = copy.deepcopy(metrics)
    failed["models"]["ensemble"] = {"status": "failed: out of memory"}  # not dropped by the rule: not judged
    assert not fgc.ensemble_dropped(failed["models"]["ensemble"])
    assert not any(v["target"].startswith("cross-model") for v in fgc.target_verdicts(failed))


def test_readme_findings_are_four_to_six_bullets_under_400_characters(fgc):
    metrics = json.loads((REPO_ROOT / "results" / "metrics.json").read_text())
    checks = pd.read_csv(REPO_ROOT / "results" / "gradcam_checks.csv")
    data = json.loads((REPO_ROOT / "results" / "data_summary.json").read_text())
    bullets = fgc.readme_findings(metrics, checks, data).splitlines()
    assert 4 <= len(bullets) <= 6 and all(b.startswith("- **") for b in bullets)
    assert all(len(b) <= 400 for b in bullets), max(map(len, bullets))
    assert any("Caveat, a shortcut" in b for b in bullets)
    import pneumonia_cxr as pcx  # the Grad-CAM bullet only once the checks file is of the current format

    assert any("Where the models look" in b for b in bullets) == pcx.gradcam_report.is_current(checks)


def test_compact_results_and_published_tables(fgc, metrics):
    table = fgc.compact_results_table(metrics).set_index("model")
    assert table.loc["Scratch CNN", "accuracy [95% CI]"] == "0.840 [0.810, 0.870]"
    assert table.loc["Scratch CNN", "seeds"] == "3"
    assert table.loc["Cross-model ensemble (2 models)", "seeds"] == "–"
    assert "VGG-Face transfer (not run: weights unavailable)" in table.index
    published = fgc.published_table()
    assert published["source"].str.startswith("[").all() and len(published) == len(fgc.PUBLISHED_RESULTS)


def test_errors_finding_counts_errors_not_rates():
    """Specificity 0.885 < sensitivity 0.926, yet with 234 NORMAL and 390 PNEUMONIA test images the
    misses (29) and the false alarms (27) are about as many: said so, with the counts; a lopsided
    split names the class behind most errors."""
    from pneumonia_cxr.reporting import _errors_finding

    metrics = {"dataset": {"test_normal": 234, "test_pneumonia": 390},
               "models": {"xception_imagenet_transfer": {"status": "ok", "seeds": [],
                                                         "test": {"accuracy": 0.91, "sensitivity": 0.9256,
                                                                  "specificity": 0.8846}}}}
    assert "its errors split about evenly (29 missed pneumonia, 27 false alarms)." in _errors_finding(metrics)
    metrics["models"]["xception_imagenet_transfer"]["test"]["specificity"] = 0.70  # 70 false alarms against 29
    assert "most of its errors are NORMAL X-rays called PNEUMONIA." in _errors_finding(metrics)
    metrics["dataset"] = {"test_normal": 50, "test_pneumonia": 390}  # 15 false alarms against 29 misses
    assert "most of its errors are PNEUMONIA X-rays called NORMAL." in _errors_finding(metrics)