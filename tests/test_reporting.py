"""pneumonia_cxr.reporting and pneumonia_cxr.findings: readable tables and the model findings in words,
built from the numbers given (hand-made metrics dicts here) and never typed. Expected words are written
out by hand, never rebuilt from the code's own mappings."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pneumonia_cxr import findings  # its private finding builders
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
        (0.82, None), (0.88, None), (0.928, 0.968), (0.911, 0.980), (0.899, 0.979), (0.893, 0.987), (0.916, 0.989)]
    assert by_label["MedMNIST+, ResNet-18, end to end (128 px)"].roc_auc == 0.979
    assert by_label["MedMNIST+, VGG16, end to end (64 px)"].accuracy == 0.893
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


def _new_format(metrics: dict, best_epochs=(5, 9, 12)) -> dict:
    """The fixture in the record's new format: the face-recognition family, HED-VGG16 not run, the
    scratch CNN's recipe (128 px, cap 12) and best epochs, a served network, 7 published scorings."""
    new = copy.deepcopy(metrics)
    new["models"]["hed_vgg16_transfer"] = {"status": "not run: compute budget (run_hed=False)"}
    new["models"]["face_dlib_resnet"] = _family(0.70, 0.80)
    for record, epoch in zip(new["models"]["scratch_cnn"]["seeds"], best_epochs):
        record["best_epoch"] = epoch
    new["models"]["ensemble"] = {"status": "not kept: the validation rule chose one family (xception_imagenet_transfer)"}
    new["training"] = {"scratch_recipe": {"input_size": 128, "max_epochs": 12, "patience": 3}}
    new["served"] = {"name": "xception_imagenet_transfer", "seed": 1,
                     "test": {"accuracy": 0.88, "sensitivity": 0.97, "specificity": 0.73}}  # no ROC-AUC recorded
    new["dataset"] = {"test_n": 624, "test_normal": 234, "test_pneumonia": 390}
    new["protocol"] = {"test_scorings": 7}
    return new


def test_model_findings_answer_from_the_numbers(fgc, metrics):
    text = fgc.model_findings(metrics)
    lines = text.splitlines()
    assert lines[0] == (  # no paired tests in this record: judged by the 95% intervals, which overlap
        "- **Pretrained for another purpose vs from scratch: not shown.** Test accuracy of each family's seed-ensemble "
        "(the mean logit of its 3 seeds), against the scratch CNN's 0.840 on the same test images: ImageNet "
        "Xception transfer (pretrained for recognising objects in photos) 0.886, not distinguishable (95% intervals); "
        "HED-VGG16 transfer (pretrained for edge detection) 0.790, not distinguishable (95% intervals). Not run: "
        "VGG-Face transfer, weights unavailable.")
    reference = next(line for line in lines if line.startswith("- **Best model"))
    assert reference.startswith("- **Best model: ImageNet Xception transfer**, test accuracy 0.886 [0.856, 0.916]")
    assert "accuracy above the original study (scratch CNN 0.820)" in reference
    assert "finds 97.9% of test pneumonia" in text and "clears 73.1% of normal" in text
    assert ("accuracy 0.810, ROC-AUC 0.960, below its best member, ImageNet Xception transfer (0.886; 95% intervals "
            "apart).") in text
    assert "**Served by the app:** HED-VGG16 transfer, seed 0, chosen on validation. It is one network" in text
    assert "- **Targets:** 2 of 7 met." in text
    assert "  - best family specificity ≥ 0.85: **missed** (ImageNet Xception transfer 0.731)" in lines
    assert "nan" not in text.lower()


def test_pretrained_vs_scratch_is_judged_by_the_paired_test_not_the_point_estimates(fgc, metrics):
    record = _new_format(metrics)
    record["paired_tests"] = [{"a": "scratch_cnn", "b": "xception_imagenet_transfer", "p_value": 0.0004},
                              {"a": "face_dlib_resnet", "b": "scratch_cnn", "p_value": 0.2}]
    rows = {row["name"]: row for row in fgc.compared_with_scratch(record)}
    assert rows["xception_imagenet_transfer"]["relation"] == "higher"  # 0.886 > 0.840, p 0.0004
    assert rows["face_dlib_resnet"]["relation"] == "not distinguishable"  # lower point estimate, but p 0.2
    assert fgc.pretrained_answer(list(rows.values())) == "partly"
    lower = [{**row, "relation": "lower"} for row in rows.values()]
    assert fgc.pretrained_answer(lower) == "no"
    assert fgc.pretrained_answer(lower[:1] + [{**lower[1], "relation": "not distinguishable"}]) == "not shown"
    line = fgc.model_findings(record).splitlines()[0]
    assert "0.886, higher (McNemar p < 0.001)" in line and "0.700, not distinguishable (McNemar p 0.200)" in line


def test_model_findings_of_the_new_record_name_the_face_family_and_judge_every_target(fgc, metrics):
    text = fgc.model_findings(_new_format(metrics))
    lines = text.splitlines()
    assert lines[0].startswith("- **Pretrained for another purpose vs from scratch: not shown.**")
    assert ("Face-recognition base (dlib ResNet) (pretrained for face recognition) 0.700, lower (95% intervals)"
            in lines[0])  # [0.670, 0.730] lies below the scratch CNN's interval
    assert lines[0].endswith("Not run: VGG-Face transfer, weights unavailable; HED-VGG16 transfer, compute budget "
                             "(run_hed=False).")
    assert lines[1] == (
        "- **Face-recognition base (dlib ResNet)**, pretrained for face recognition: test accuracy 0.700 [0.670, 0.730] "
        "(seed-ensemble of 3 seeds), beside the original study's VGG-Face transfer 0.880. It differs from the original "
        "study's base: dlib's ResNet face embedding (a 128-number descriptor per image) instead of VGG-Face's "
        "convolutional features, which cannot be downloaded here.")
    assert lines[2].startswith("- **Family chosen on validation (its seed-ensemble): ImageNet Xception transfer**")
    assert ("- **Scratch CNN training at 128 px input:** early stopping acted: the best epoch (lowest validation loss) "
            "fell below the cap of 12 for 2 of 3 seeds (best epochs 5, 9, 12).") in lines
    assert ("- **Served by the app:** ImageNet Xception transfer, seed 1, chosen on validation. It is one network, not "
            "the family's seed-ensemble, so its figures differ: test accuracy 0.880, ROC-AUC –, sensitivity 0.970, "
            "specificity 0.730.") in lines
    assert "- **Targets:** 5 of 9 met." in lines
    for line in ("  - chosen family's seed-ensemble: accuracy ≥ 0.92: **missed** (ImageNet Xception transfer 0.886)",
                 "  - chosen family's seed-ensemble: ROC-AUC ≥ 0.975: **missed** (ImageNet Xception transfer 0.959)",
                 "  - chosen family's seed-ensemble: specificity ≥ 0.85: **missed** (ImageNet Xception transfer 0.731)",
                 "  - chosen family's seed-ensemble: sensitivity ≥ 0.95: met (ImageNet Xception transfer 0.979)",
                 "  - scratch CNN mean accuracy over ≥ 3 seeds ≥ 0.85: **missed** (mean of the seeds' own accuracies "
                 "0.820 ± 0.010 over 3 seeds)",
                 "  - scratch CNN epoch cap ≥ 12: met (cap 12)",
                 "  - scratch CNN early stopping acted (best epoch below the cap for ≥ 2 of 3 seeds): met (2 of 3 seeds "
                 "below the cap of 12; best epochs 5, 9, 12)",
                 "  - ≥ 3 seeds per family that runs: met (Scratch CNN 3, ImageNet Xception transfer 3, Face-recognition "
                 "base (dlib ResNet) 3)"):
        assert line in lines, line
    assert "nan" not in text.lower() and "± nan" not in text


def test_scratch_cnn_training_cut_is_said_plainly(fgc, metrics):
    cut = _new_format(metrics, best_epochs=(12, 12, 9))
    text = fgc.model_findings(cut)
    assert ("- **Scratch CNN training at 128 px input: training was cut.** The best epoch (lowest validation loss) fell "
            "below the cap of 12 for only 1 of 3 seeds (best epochs 12, 12, 9)") in text
    assert ("early stopping acted (best epoch below the cap for ≥ 2 of 3 seeds): **missed** (1 of 3 seeds below the "
            "cap of 12; best epochs 12, 12, 9; training was cut)") in text
    assert fgc.early_stopping(cut) == {"cap": 12, "best_epochs": [12, 12, 9], "below": 1, "acted": False}
    trust = fgc.trust_list(cut)
    assert ("- **Scratch CNN's training was cut:** its best epoch reached the cap of 12 for 2 of 3 seeds, so it may "
            "be undertrained.") in trust.splitlines()
    capped = copy.deepcopy(cut)  # any family whose best epoch sits at its cap gets the bullet, not only the scratch CNN
    capped["training"]["epoch_caps"] = {"xception_imagenet_transfer": 3}
    for record, epoch in zip(capped["models"]["xception_imagenet_transfer"]["seeds"], (3, 3, 2)):
        record["best_epoch"] = epoch
    assert ("- **ImageNet Xception transfer's training was cut:** its best epoch reached the cap of 3 for 2 of 3 seeds, "
            "so it may be undertrained.") in fgc.trust_list(capped).splitlines()
    short = copy.deepcopy(cut)
    short["training"]["scratch_recipe"]["max_epochs"] = 2
    assert "- scratch CNN epoch cap ≥ 12: **missed** (cap 2)" in fgc.model_findings(short).replace("  - ", "- ")


def test_scratch_target_needs_three_seeds_and_a_missing_spread_is_no_nan(fgc, metrics):
    few = _new_format(metrics)
    few["models"]["scratch_cnn"]["seed_spread"] = {"accuracy_mean": 0.86, "accuracy_sd": None, "n_seeds": 1}
    verdict = next(v for v in fgc.target_verdicts(few) if v["target"].startswith("scratch CNN mean"))
    assert verdict == {"target": "scratch CNN mean accuracy over ≥ 3 seeds ≥ 0.85", "met": False,
                       "measured": "mean of the seeds' own accuracies 0.860, 1 seed: no spread"}
    few["models"]["scratch_cnn"]["seed_spread"] = {"accuracy_mean": 0.86, "accuracy_sd": 0.01, "n_seeds": 3}
    assert next(v for v in fgc.target_verdicts(few) if v["target"].startswith("scratch CNN mean"))["met"]


def test_numbers_and_p_values_print_for_reading(fgc, metrics):
    assert fgc.number(None) == "–" and fgc.number(float("nan")) == "–" and fgc.number(0.12345) == "0.123"
    assert fgc.p_text(0.0) == "< 0.001" and fgc.p_text(0.0312) == "0.031" and fgc.p_text(None) == "–"
    kept = copy.deepcopy(metrics)
    kept["models"]["ensemble"]["mcnemar_vs_members"] = {"xception_imagenet_transfer": {"p_value": 0.0}}
    assert "(0.886; 95% intervals apart; McNemar p < 0.001)." in fgc.model_findings(kept)


def test_target_verdicts_judge_each_target_on_its_figure(fgc, metrics):
    verdicts = {v["target"].split(" ≥")[0]: v for v in fgc.target_verdicts(metrics)}
    assert not verdicts["best family accuracy"]["met"] and verdicts["best family sensitivity"]["met"]
    assert not verdicts["scratch CNN mean accuracy over"]["met"]
    assert verdicts["scratch CNN mean accuracy over"]["measured"] == \
        "mean of the seeds' own accuracies 0.820 ± 0.010 over 3 seeds"
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
    assert "On validation: ROC-AUC 0.990; on test 0.959." in fgc.model_findings(metrics)  # no rates: no verdict
    served = fgc.model_findings(gap | {"served": {"name": "xception_imagenet_transfer", "seed": 1}})
    errors = next(line for line in served.splitlines() if line.startswith("- **Errors.**"))
    assert errors.endswith(  # chosen on pooled validation: said so
        "most of its errors are NORMAL X-rays called PNEUMONIA. On validation pooled with 4 perturbed copies: "
        "sensitivity 95.0%, specificity 98.5%, ROC-AUC 0.993; on test 97.9%, 73.1%, 0.959 (specificity 25.4 points "
        "lower).")
    assert f"{len(VALIDATION_PERTURBATIONS)} perturbed copies" in errors  # counted, not typed
    carried = copy.deepcopy(gap)
    carried["models"]["xception_imagenet_transfer"]["val"].update(sensitivity=0.99, specificity=0.74)
    assert "0.959 (both rates within 2 points)." in fgc.model_findings(carried)
    fell = copy.deepcopy(gap)
    fell["models"]["xception_imagenet_transfer"]["val"].update(sensitivity=1.0, specificity=0.80)
    assert "(sensitivity 2.1 points lower and specificity 6.9 points lower)." in fgc.model_findings(fell)


def test_reference_finding_places_each_published_result_against_our_interval(fgc, metrics):
    """Each published accuracy below our 95% interval reads "above", inside it "not distinguishable",
    above it "below"."""
    assert findings._grouped(fgc.PUBLISHED_RESULTS[:3]) == (
        "the original study (scratch CNN 0.820, VGG-Face transfer 0.880) and Kermany et al. 2018 (InceptionV3 0.928)")
    narrow = copy.deepcopy(metrics)
    narrow["models"]["xception_imagenet_transfer"]["test"] = test = {
        "accuracy": 0.90, "accuracy_ci95": [0.885, 0.915], "roc_auc": 0.96, "roc_auc_ci95": [0.95, 0.97]}
    text = findings._reference_finding(narrow)
    assert text.startswith("**Best model: ImageNet Xception transfer**, test accuracy 0.900 [0.885, 0.915], ROC-AUC")
    assert text == (
        "**Best model: ImageNet Xception transfer**, test accuracy 0.900 [0.885, 0.915], ROC-AUC 0.960 [0.950, 0.970]: "
        "accuracy above the original study (scratch CNN 0.820, VGG-Face transfer 0.880); within our 95% interval "
        "MedMNIST+ (ResNet-18 224 px 0.911, ResNet-18 128 px 0.899, VGG16 64 px 0.893); below "
        "Kermany et al. 2018 (InceptionV3 0.928) and MedMNIST+ (DINO ViT-B/16 224 px 0.916); ROC-AUC below MedMNIST+ "
        "(ResNet-18 224 px 0.980, ResNet-18 128 px 0.979, VGG16 64 px 0.987, DINO ViT-B/16 224 px 0.989) (published "
        "protocols differ from ours; see the README's table of published results).")
    test["accuracy_ci95"] = [0.80, 0.95]  # every published result inside
    assert "above" not in findings._reference_finding(narrow).split(": ", 1)[1]
    served = findings._reference_finding(metrics | {"served": {"name": "xception_imagenet_transfer", "seed": 0}})
    assert served.startswith("**Family chosen on validation (its seed-ensemble): ImageNet Xception transfer**")
    unserved = findings._reference_finding(metrics | {"served": {"name": "not_a_family"}})  # not a scored family
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
        "ImageNet Xception transfer (pretrained for recognising objects in photos) 0.870 (mean of 2 seeds) and "
        "HED-VGG16 transfer (pretrained for edge detection) 0.780 (mean of 3 seeds), against the scratch CNN's 0.830 "
        "(3 seeds). Not run: VGG-Face transfer, weights unavailable.")
    uneven["models"]["hed_vgg16_transfer"]["seeds"] = [{"seed": 0, "test": {"accuracy": 0.84}}]
    assert fgc.model_findings(uneven).startswith("- **Pretrained for another purpose vs from scratch: yes, single "
                                                 "networks compared.**")


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
    assert "- **Targets:** 3 of 7 met." in text
    failed = copy.deepcopy(metrics)
    failed["models"]["ensemble"] = {"status": "failed: out of memory"}  # not dropped by the rule: not judged
    assert not fgc.ensemble_dropped(failed["models"]["ensemble"])
    assert not any(v["target"].startswith("cross-model") for v in fgc.target_verdicts(failed))


OVERLAP = {"overlap": [  # results/patient_overlap.json's rows, by hand
    {"label": "NORMAL", "reading": "patient_id", "target_ids": 225, "shared_ids": 0, "target_images": 234,
     "target_images_of_shared_ids": 0},
    {"label": "PNEUMONIA", "reading": "patient_id", "target_ids": 202, "shared_ids": 170, "target_images": 390,
     "target_images_of_shared_ids": 320},
    {"label": "PNEUMONIA", "reading": "series_id", "target_ids": 203, "shared_ids": 0, "target_images": 390,
     "target_images_of_shared_ids": 0}]}
BASELINE = {"name": "image size only (no pixels)", "kind": "cross-validated on the full-size sample", "n": 435,
            "metrics": {"roc_auc": 0.929, "roc_auc_ci95": [0.904, 0.952], "accuracy": 0.839,
                        "accuracy_ci95": [0.805, 0.871], "balanced_accuracy": 0.85,
                        "balanced_accuracy_ci95": [0.82, 0.88]}}


def test_readme_question_and_answer_are_plain_and_give_one_accuracy_per_model(fgc, metrics):
    new = _new_format(metrics)
    question = fgc.readme_question(new)
    assert question.startswith("Does a network pretrained for another purpose (Xception, trained on ImageNet's "
                               "everyday photos; dlib's face-recognition ResNet), given a small new classifier on top")
    assert "Not run here: the original study's VGG-Face, trained for face recognition (weights unavailable); " \
           "HED-VGG16, trained for edge detection (compute budget)." in question
    assert "dlib's ResNet face embedding (128 numbers per image) rather than VGG-Face's convolutional features" in question
    assert "at 128 x 128 px" in question and "624 X-rays (234 normal, 390 pneumonia)" in question
    answer = fgc.readme_answer(new)
    assert answer.startswith("Each model below was trained 3 times from different random starts (seeds); the accuracy "
                             "given is that of its seed-ensemble, which averages the trained networks' raw scores (the "
                             "mean logit)")
    assert ("Not shown, judged by McNemar's paired test on the same test X-rays against the scratch CNN's accuracy of "
            "0.840: ImageNet Xception transfer 0.886, not "
            "distinguishable (95% intervals); Face-recognition base (dlib ResNet) "
            "0.700, lower (95% intervals) (the original study reported single networks, not seed-ensembles: scratch CNN "
            "0.82 and VGG-Face transfer 0.88).") in answer
    assert "chosen after" not in answer  # no protocol entry says the judging rule changed
    assert "with probability 0.959 (its ROC-AUC), finds 97.9% of pneumonia X-rays (sensitivity) and clears 73.1%" in answer
    assert ("It meets 1 of the project's 4 targets for the best model; missed: accuracy ≥ 0.92, ROC-AUC "
            "≥ 0.975 (0.959) and specificity ≥ 0.85 (0.731); the scratch CNN's target (its seeds' mean accuracy "
            "≥ 0.85) is missed") in answer
    for figure in ("0.886", "0.700", "0.840"):  # one accuracy per model: the seed-ensemble's, once
        assert answer.count(figure) == 1, figure
    assert "0.820" not in answer and "0.880," not in answer  # neither the seed mean nor the served seed
    assert 3 <= answer.count(". ") + 1 <= 6
    assert answer.index("seed-ensemble") < answer.index("logit") < answer.index("ROC-AUC")


def test_single_network_tests_pair_every_seed_with_every_scratch_seed_at_its_own_threshold(fgc):
    y = np.array([0, 0, 1, 1, 1, 0])
    entries = {"scratch_cnn": {"seeds": [{"seed": 0, "threshold": 0.0}, {"seed": 1, "threshold": 10.0}]},
               "xception_imagenet_transfer": {"seeds": [{"seed": 0, "threshold": 0.0}]}}
    logits = {"scratch_cnn": [np.array([-1, -1, 1, 1, -1, -1.]), np.array([-1, -1, 1, 1, 1, -1.])],
              "xception_imagenet_transfer": [np.array([-1, -1, 1, 1, 1, -1.])]}
    rows = fgc.single_network_tests(y, logits, entries)
    assert [(r["a"], r["seed_a"], r["b"], r["seed_b"]) for r in rows] == [
        ("xception_imagenet_transfer", 0, "scratch_cnn", 0), ("xception_imagenet_transfer", 0, "scratch_cnn", 1)]
    assert rows[0]["accuracy_a"] == 1.0 and rows[0]["accuracy_b"] == pytest.approx(5 / 6)
    assert (rows[0]["a_right_b_wrong"], rows[0]["a_wrong_b_right"]) == (1, 0)
    assert rows[1]["accuracy_b"] == 0.5  # seed 1's own threshold (10) calls every image normal
    assert fgc.single_network_tests(y, {"xception_imagenet_transfer": logits["xception_imagenet_transfer"]}, entries) == []


def test_answer_counts_single_network_pairs_and_says_when_the_judging_rule_was_set(fgc, metrics):
    new = _new_format(metrics)
    new["paired_tests"] = [{"a": "scratch_cnn", "b": "xception_imagenet_transfer", "p_value": 0.7},
                           {"a": "scratch_cnn", "b": "face_dlib_resnet", "p_value": 1e-6}]
    new["single_network_tests"] = (
        [{"a": "xception_imagenet_transfer", "b": "scratch_cnn", "p_value": p, "accuracy_a": 0.9, "accuracy_b": b}
         for p, b in ((0.01, 0.85), (0.2, 0.88), (0.03, 0.95))]
        + [{"a": "face_dlib_resnet", "b": "scratch_cnn", "p_value": 1e-5, "accuracy_a": 0.7, "accuracy_b": 0.85}])
    new["protocol"]["history"] = [{"published": True}, {"published": True, "quick": True},
                                  {"published": True, "reporting_changed_after": "judged by McNemar's paired test"}]
    answer = fgc.readme_answer(new)
    assert ("ImageNet Xception transfer 0.886, not distinguishable "
            "(McNemar p 0.700; seed against seed, uncorrected: higher in 1 of 3 pairs, lower in 1)") in answer
    assert "(McNemar p < 0.001; seed against seed, uncorrected: higher in 0 of 1 pairs, lower in 1)" in answer
    assert "This test was chosen after the 2nd scoring had been seen (" in answer  # the quick entry is not counted
    new["protocol"]["history"].append({"published": True, "reporting_changed_after": "wording"})
    assert ("This test was chosen after the 2nd scoring had been seen, and the reporting revised again after the 3rd "
            "(") in fgc.readme_answer(new)
    assert fgc.single_network_counts(metrics, "xception_imagenet_transfer") is None


def test_trust_list_gives_the_overlap_the_shortcut_and_the_scorings_with_numbers(fgc, metrics):
    new = _new_format(metrics)
    lines = fgc.trust_list(new, OVERLAP, BASELINE).splitlines()
    assert lines[0].startswith("- **The same patients may be in training and test.** 320 of the 390 pneumonia test "
                               "X-rays carry a patient id (170 of 202 ids) that also appears in the training data; 0 of "
                               "the 234 normal ones do.")
    assert lines[1].startswith("- **Image size is a shortcut.**")
    assert "ROC-AUC 0.93 [0.90, 0.95] (cross-validated on 435 full-size originals)" in lines[1]  # the brief form
    assert lines[2].startswith("- **The official test set has been scored 7 times** for published results; the "
                               "figures here come from the 7th.")
    assert len(lines) == 3  # early stopping acted: no fourth bullet
    once = copy.deepcopy(new)
    once["protocol"]["test_scorings"] = 1
    assert "scored 1 time** for published results; the figures here come from the 1st." in fgc.trust_list(once)
    quick = copy.deepcopy(new)
    quick["protocol"]["test_scorings"] = 0
    assert "**The official test set was not scored for published results by this run**" in fgc.trust_list(quick)
    data = {"sizes": {"NORMAL": {"width_median": 1600, "height_median": 1300, "aspect_median": 1.23,
                                 "megapixels_median": 2.08, "grayscale_share": 1.0},
                      "PNEUMONIA": {"width_median": 1200, "height_median": 800, "aspect_median": 1.5,
                                    "megapixels_median": 0.96, "grayscale_share": 0.9}}, "fullsize_images": 435}
    fallback = fgc.trust_list(new, None, None, None, data)  # no baseline yet: the size difference of the EDA
    assert "NORMAL originals are median 1600 x 1300 px" in fallback and "patients" not in fallback


def test_compact_results_and_published_tables(fgc, metrics):
    table = fgc.compact_results_table(metrics).set_index("model")
    assert table.loc["Scratch CNN", "accuracy [95% CI]"] == "0.840 [0.810, 0.870]"
    assert table.loc["Scratch CNN", "single seeds: accuracy mean ± sd (n)"] == "0.820 ± 0.010 (3)"
    assert table.loc["Cross-model ensemble (2 models)", "single seeds: accuracy mean ± sd (n)"] == "–"
    assert "VGG-Face transfer (not run: weights unavailable)" in table.index
    face = fgc.compact_results_table(_new_format(metrics)).set_index("model")
    assert face.loc["Face-recognition base (dlib ResNet)", "accuracy [95% CI]"] == "0.700 [0.670, 0.730]"
    published = fgc.published_table()
    assert published["source"].str.startswith("[").all() and len(published) == len(fgc.PUBLISHED_RESULTS)


def test_errors_finding_counts_errors_not_rates():
    """Specificity 0.885 < sensitivity 0.926, yet with 234 NORMAL and 390 PNEUMONIA test images the
    misses (29) and the false alarms (27) are about as many: said so, with the counts; a lopsided
    split names the class behind most errors."""
    from pneumonia_cxr.findings import _errors_finding

    metrics = {"dataset": {"test_normal": 234, "test_pneumonia": 390},
               "models": {"xception_imagenet_transfer": {"status": "ok", "seeds": [],
                                                         "test": {"accuracy": 0.91, "sensitivity": 0.9256,
                                                                  "specificity": 0.8846}}}}
    assert "its errors split about evenly (29 missed pneumonia, 27 false alarms)." in _errors_finding(metrics)
    metrics["models"]["xception_imagenet_transfer"]["test"]["specificity"] = 0.70  # 70 false alarms against 29
    assert "most of its errors are NORMAL X-rays called PNEUMONIA." in _errors_finding(metrics)
    metrics["dataset"] = {"test_normal": 50, "test_pneumonia": 390}  # 15 false alarms against 29 misses
    assert "most of its errors are PNEUMONIA X-rays called NORMAL." in _errors_finding(metrics)

def test_float32_target_is_judged_on_the_recipe_every_seed_and_the_frozen_passes(fgc, metrics):
    assert not any(v["target"].startswith("float32") for v in fgc.target_verdicts(metrics))  # no recipe precision
    unrecorded = _new_format(metrics)
    unrecorded["training"]["scratch_recipe"]["precision"] = "float32"  # no seed or frozen-pass precision recorded
    assert not next(v for v in fgc.target_verdicts(unrecorded) if v["target"].startswith("float32"))["met"]
    run = _new_format(metrics)
    run["training"].update({"frozen_pass_precision": "float32"})
    run["training"]["scratch_recipe"]["precision"] = "float32"
    run["cpu"] = {"model": "AMD EPYC", "native_bfloat16": True}
    for entry in fgc.families(run).values():
        for record in entry["seeds"]:
            record["training_precision"] = "float32"
    verdict = next(v for v in fgc.target_verdicts(run) if v["target"].startswith("float32"))
    assert verdict["met"] and verdict["measured"] == ("recipe default float32; seeds trained in float32; frozen passes "
                                                      "in float32, on AMD EPYC with native bfloat16")
    run["models"]["scratch_cnn"]["seeds"][0]["training_precision"] = "mixed_bfloat16"  # one seed followed the CPU
    assert not next(v for v in fgc.target_verdicts(run) if v["target"].startswith("float32"))["met"]
