"""pneumonia_cxr.reporting: readable tables and findings in words, built from the numbers given
(results/metrics.json, results/gradcam_checks.csv, results/data_summary.json) and never typed."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
    assert set(fgc.DISPLAY_NAMES) == {"scratch_cnn", "vggface_transfer", "hed_vgg16_transfer",
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
    assert "against the scratch CNN's 0.840" in lines[0] and "VGG-Face transfer not run (weights unavailable)" in lines[0]
    assert "**Best model: ImageNet Xception transfer**, test accuracy 0.886 [0.856, 0.916]" in text
    assert "above the original study (0.820, 0.880); below Kermany et al. 2018 (0.928) and MedMNIST+ (0.911, 0.916)" in text
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
    text = fgc.model_findings(changed)
    assert "vs from scratch: yes.**" in text and "**Best model: HED-VGG16 transfer**" in text
    assert "above the original study (0.820, 0.880) and Kermany et al. 2018 (0.928) and MedMNIST+" in text
    assert "**Cross-model ensemble:** dropped by the validation rule (one family)." in text
    assert "**Served by the app:** ImageNet Xception transfer, seed 2" in text and "specificity 0.840" in text
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


def test_gradcam_findings_and_verdict_table_read_the_checks_file(fgc):
    checks = pd.read_csv(REPO_ROOT / "results" / "gradcam_checks.csv")
    table = fgc.gradcam_verdict_table(checks)
    assert list(table.columns) == ["model", "method", "images", "faithfulness (deletion / insertion)",
                                   "sanity (random weights)", "borders"]
    assert set(table["method"]) == {"Grad-CAM", "Grad-CAM++"} and "scratch_cnn" not in set(table["model"])
    text = fgc.gradcam_findings(checks)
    for _, row in checks[(checks["method"] == "gradcam") & (checks["subset"] == "all")].iterrows():
        assert f"{fgc.display_name(row['model'])}: {row['faithfulness_verdict']}, sanity {row['sanity_verdict']}" in text
    assert fgc.gradcam_findings(checks[["model", "method"]]) is None


def test_readme_findings_are_four_to_six_bullets_under_400_characters(fgc):
    metrics = json.loads((REPO_ROOT / "results" / "metrics.json").read_text())
    checks = pd.read_csv(REPO_ROOT / "results" / "gradcam_checks.csv")
    data = json.loads((REPO_ROOT / "results" / "data_summary.json").read_text())
    bullets = fgc.readme_findings(metrics, checks, data).splitlines()
    assert 4 <= len(bullets) <= 6 and all(b.startswith("- **") for b in bullets)
    assert all(len(b) <= 400 for b in bullets), max(map(len, bullets))
    assert any("Caveat, a shortcut" in b for b in bullets) and any("Where the models look" in b for b in bullets)


def test_compact_results_and_published_tables(fgc, metrics):
    table = fgc.compact_results_table(metrics).set_index("model")
    assert table.loc["Scratch CNN", "accuracy [95% CI]"] == "0.840 [0.810, 0.870]"
    assert table.loc["Scratch CNN", "seeds"] == "3"
    assert table.loc["Cross-model ensemble (2 models)", "seeds"] == "–"
    assert "VGG-Face transfer (not run: weights unavailable)" in table.index
    published = fgc.published_table()
    assert published["source"].str.startswith("[").all() and len(published) == len(fgc.PUBLISHED_RESULTS)
