"""scripts/update_readme.py (README.md, docs/*.md and app/README.md from results/ and bench/) and
scripts/compare_runs.py: the sections render from today's files and from files with the keys a
later run adds, the README stays short, prose lines stay readable, and runs compare only with others."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_gradcam_report import gradcam_checks_table  # a results/gradcam_checks.csv of the current format

REPO_ROOT = Path(__file__).resolve().parents[1]
GENERATED = ["README.md", "app/README.md", "docs/reproducibility.md", "docs/performance.md", "docs/data.md",
             "docs/gradcam.md", "docs/gradcam_method.md", "docs/app_verification.md"]
INPUTS = ["results", "bench", "images_for_readme"]  # docs/gradcam.md lists the Grad-CAM figures present
MARKER = re.compile(r"<!-- ([a-z-]+):start -->")
# metrics["models"]["ensemble"]["status"] when the validation rule keeps one family
NOT_KEPT = "not kept: the validation rule chose one family (xception_imagenet_transfer)"


def _test(accuracy: float, auc: float, sensitivity: float = 0.97, specificity: float = 0.7) -> dict:
    return {"accuracy": accuracy, "accuracy_ci95": [accuracy - 0.03, accuracy + 0.03], "roc_auc": auc,
            "roc_auc_ci95": [auc - 0.02, auc + 0.01], "sensitivity": sensitivity, "specificity": specificity}


def _family(accuracy: float, auc: float, seeds: int = 3, **test) -> dict:
    per_seed = [{"seed": s, "best_epoch": 3, "threshold": 0.1, "val": {"roc_auc": 0.99 - s / 100},
                 "test": _test(accuracy - 0.01 * s, auc)} for s in range(seeds)]
    return {"status": "ok", "seeds": per_seed, "threshold": 0.2, "val": {"roc_auc": 0.99},
            "test": _test(accuracy, auc, **test),
            "seed_spread": {"accuracy_mean": accuracy - 0.02, "accuracy_sd": 0.01, "roc_auc_mean": auc,
                            "roc_auc_sd": 0.01, "n_seeds": seeds}}


@pytest.fixture()
def metrics() -> dict:
    """A metrics.json of today's shape: three families that ran, one not run, a cross-model ensemble."""
    return {"dataset": {"test_n": 624, "test_normal": 234, "test_pneumonia": 390, "train_n": 4709, "val_n": 523,
                        "split": "patient-grouped"},
            "machine": "x86_64 CPU, 2 cores, no GPU", "quick": False, "app_default": "hed_vgg16_transfer",
            "models": {"scratch_cnn": _family(0.84, 0.925),
                       "vggface_transfer": {"status": "not run: weights unavailable"},
                       "hed_vgg16_transfer": _family(0.79, 0.942),
                       "xception_imagenet_transfer": _family(0.886, 0.959, specificity=0.731),
                       "ensemble": {"status": "ok", "members": ["scratch_cnn", "hed_vgg16_transfer"],
                                    "threshold": 0.8, "val": {"roc_auc": 0.997}, "test": _test(0.81, 0.96)}},
            "protocol": {"chosen_on_validation": ["epochs: early stopping"], "test_scorings": 1,
                         "history": [{"scored_at": "t1", "code_commit": "abc1234", "published": True,
                                      "what_changed": "first run", "results": {"scratch_cnn": {"accuracy": 0.8,
                                                                                               "roc_auc": 0.9}}}]}}


@pytest.fixture()
def later_metrics(metrics) -> dict:
    """The keys a later run adds: selection rule, served network, training recipe, run start."""
    later = copy.deepcopy(metrics)
    later["protocol"]["selection_rule"] = ["Validation signal: pooled log loss.", "Served: lowest log loss."]
    later["protocol"]["run_started_describe"] = "v1.0-3-gabc1234-dirty"
    later["served"] = {"name": "xception_imagenet_transfer", "seed": 1,
                       "test": {"accuracy": 0.9, "roc_auc": 0.97, "sensitivity": 0.96, "specificity": 0.81}}
    later["training"] = {"crop": "centre crop, 90% of each side", "augmentation": "random resized crops"}
    return later


@pytest.fixture()
def repo_copy(tmp_path) -> Path:
    """The generated files and their inputs, copied, so the script can run without touching the checkout."""
    for name in GENERATED:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / name, target)
    for name in INPUTS:
        shutil.copytree(REPO_ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("*.py", "*.sh"))
    return tmp_path


def _prose_lines(text: str) -> list[str]:
    """Lines that are neither table rows nor inside a code block."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and not line.lstrip().startswith("|"):
            lines.append(line)
    return lines


def _check_front_page(readme: str) -> None:
    lines = readme.splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines"
    first_figure = next(i for i, line in enumerate(lines) if line.startswith("!["))
    assert first_figure < 80
    first_40, first_60 = "\n".join(lines[:40]), "\n".join(lines[:60])
    # the first screen: what it is, the question as tested, the answer; then how far to trust it
    assert lines[0].startswith("# ") and "## The question" in first_40 and "<!-- answer:end -->" in first_40
    assert "seed-ensemble" in first_40 and "<!-- trust:end -->" in first_60
    assert "patient id" in first_60 and "scored" in first_60.split("## How far to trust this")[1]
    assert "findings:start" not in readme  # the old jargon bullets are gone
    for line in _prose_lines(readme):
        assert len(line) <= 400, line[:80]
    assert not re.search(r"\bissue \d+|\bissues? \d+", readme, re.IGNORECASE)  # no tracker numbers
    assert "../shared" not in readme and "/work/" not in readme  # no paths outside the repository
    prose = "\n".join(_prose_lines(readme))
    assert not re.search(r"\bcommit [0-9a-f]{7,}\b|`[0-9a-f]{7,40}`", prose)  # no commit hashes in prose
    assert "bash scripts/reproduce.sh" in readme and "bash scripts/test.sh" in readme
    for image in ("confusion_matrices.png", "app.png", "model_comparison.png"):
        assert f"(images_for_readme/{image})" in readme
    for doc in ("reproducibility", "performance", "data", "gradcam"):
        assert f"docs/{doc}.md" in readme
    assert "github.com/Silvano315/Pneumonia_Detection" in readme and "LICENSE" in readme


def test_every_marker_in_the_generated_files_is_filled_from_the_committed_results(update_readme, repo_copy):
    update_readme.main(repo_copy)
    written = {path for path, _, _ in update_readme.sections(repo_copy)}
    for name in GENERATED:
        text = (repo_copy / name).read_text()
        for marker in MARKER.findall(text):
            body = text.split(f"<!-- {marker}:start -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0]
            assert body.strip(), f"{name}: section {marker} left empty"
        assert (repo_copy / name) in written or not MARKER.search(text)
    _check_front_page((repo_copy / "README.md").read_text())
    again = {name: (repo_copy / name).read_text() for name in GENERATED}
    update_readme.main(repo_copy)  # a second run changes nothing
    assert again == {name: (repo_copy / name).read_text() for name in GENERATED}


def test_the_committed_readme_is_what_the_script_writes(update_readme, repo_copy):
    update_readme.main(repo_copy)
    for name in GENERATED:
        assert (repo_copy / name).read_text() == (REPO_ROOT / name).read_text(), \
            f"{name} is stale: run .venv/bin/python scripts/update_readme.py"


def test_a_later_run_with_the_new_keys_renders_and_keeps_the_front_page_short(update_readme, repo_copy,
                                                                              later_metrics):
    (repo_copy / "results" / "metrics.json").write_text(json.dumps(later_metrics))
    update_readme.main(repo_copy)
    readme = (repo_copy / "README.md").read_text()
    _check_front_page(readme)
    assert "serves ImageNet Xception transfer (seed 1)" in readme and "specificity 0.810" in readme.replace("\n", " ")
    docs = (repo_copy / "docs" / "reproducibility.md").read_text()
    assert "- Validation signal: pooled log loss." in docs and "`v1.0-3-gabc1234-dirty`" in docs
    assert "**Crop:** centre crop, 90% of each side" in docs and "**Augmentation:** random resized crops" in docs


def test_results_table_is_compact_and_readable(update_readme, metrics):
    section = update_readme.results_section(metrics)
    header = section.splitlines()[0]
    assert header == ("| model | accuracy [95% CI] | ROC-AUC [95% CI] | sensitivity | specificity | single seeds: "
                      "accuracy mean ± sd (n) |")
    assert ("| ImageNet Xception transfer | 0.886 [0.856, 0.916] | 0.959 [0.939, 0.969] | 0.970 | 0.731 | "
            "0.866 ± 0.010 (3) |") in section
    assert "| VGG-Face transfer (not run: weights unavailable) | – |" in section
    assert "xception_imagenet_transfer" not in section  # readable names only


def test_published_results_carry_their_citations(update_readme, fgc):
    section = update_readme.published_section()
    for reference in fgc.PUBLISHED_RESULTS:
        assert reference.label in section and reference.url in section
    assert "0.928 | 0.968" in section and "0.911 | 0.980" in section and "0.916 | 0.989" in section


def test_served_section_uses_the_served_key_else_the_app_default(update_readme, metrics, later_metrics):
    assert "serves ImageNet Xception transfer (seed 1)" in update_readme.served_section(later_metrics)
    fallback = update_readme.served_section(metrics).replace("\n", " ")
    assert "serves HED-VGG16 transfer (seed 0)" in fallback  # app_default's seed with the best validation ROC-AUC
    assert "accuracy 0.790" in fallback


def test_targets_are_judged_from_the_numbers(update_readme, metrics):
    text = update_readme.targets_section(metrics).replace("\n  ", " ")
    assert "best family accuracy ≥ 0.92: **missed** (ImageNet Xception transfer 0.886)" in text
    assert "best family specificity ≥ 0.85: **missed** (ImageNet Xception transfer 0.731)" in text
    assert "best family sensitivity ≥ 0.95: **met**" in text
    assert "scratch CNN mean accuracy over ≥ 3 seeds ≥ 0.85: **missed** (mean of the seeds' own accuracies 0.820" in text
    assert "not met" not in text
    assert "or dropped: **missed**" in text and "≥ 3 seeds per family that runs: **met**" in text
    assert "Not run, so not judged: VGG-Face transfer, weights unavailable." in text
    better = copy.deepcopy(metrics)
    better["models"]["xception_imagenet_transfer"]["test"] = _test(0.93, 0.98, 0.96, 0.86)
    better["models"]["ensemble"] = {"status": "dropped: one family won on validation"}
    text = update_readme.targets_section(better).replace("\n  ", " ")
    assert "best family accuracy ≥ 0.92: **met** (ImageNet Xception transfer 0.930)" in text
    assert "best family ROC-AUC ≥ 0.975: **met**" in text and "specificity ≥ 0.85: **met**" in text
    assert "or dropped: **met** (dropped: one family won on validation)" in text


def test_targets_name_the_model_chosen_on_validation_and_a_dropped_ensemble(update_readme, later_metrics):
    later = copy.deepcopy(later_metrics)  # served: ImageNet Xception transfer, chosen on validation
    later["models"]["hed_vgg16_transfer"]["test"] = _test(0.95, 0.99, 0.99, 0.9)  # the best test figures
    later["models"]["ensemble"] = {"status": NOT_KEPT}
    text = update_readme.targets_section(later).replace("\n  ", " ").replace("\n", " ")
    assert ("the targets for the best family are judged on the seed-ensemble of the family chosen on validation "
            "(ImageNet Xception transfer, the served network's family), not on the family with the highest test score") in text
    assert "- chosen family's seed-ensemble: accuracy ≥ 0.92: **missed** (ImageNet Xception transfer 0.886)" in text
    assert "HED-VGG16" not in text.split("Not run")[0].split("seeds per family")[0]  # never judged on the test's best
    assert ("- cross-model ensemble at least as good as its best member (accuracy and ROC-AUC), or dropped: **met** "
            "(dropped by the validation rule, which chose one family: ImageNet Xception transfer).") in text
    results = update_readme.results_section(later)
    assert ("| Cross-model ensemble (dropped by the validation rule, which chose one family: ImageNet Xception "
            "transfer) | – | – | – | – | – |") in results
    assert "The cross-model ensemble averages" not in results


def test_budget_verdicts_count_only_an_empty_cache_reproduction(update_readme):
    machine = {"cpu": "test CPU", "cores": 2}
    entry = {"ours": 4000.0, "measured_at": "2026-01-01T00:00:00Z", "machine": machine}
    quick = {"ours": 400.0, "measured_at": "2026-01-01T00:00:00Z", "machine": machine}

    def lines(bench: dict) -> list[str]:
        return update_readme.budget_section(bench).replace("\n  ", " ").splitlines()

    found = lines({"reproduction_wall_time": entry | {"caches": "partly filled"}, "reproduction_quick_wall_time": quick})
    assert "not measured" in found[2] and "not met** (6.7 min" in found[3]  # 400 s > 5 min
    partly = lines({"reproduction_quick_wall_time": quick | {"ours": 200.0, "caches": "partly filled"}})
    assert "Quick mode ≤ 5 min: **not measured**" in partly[3]  # 3.3 min, but from partly filled caches
    found = lines({"reproduction_wall_time": entry | {"caches": "empty", "conditions": ["one family not run"]}})
    assert "≤ 90 min (aim 75): **met**, under the conditions listed (66.7 min," in found[2] and "not measured" in found[3]
    assert found[2].endswith("Conditions: caches empty; one family not run.")
    over_aim = " ".join(lines({"reproduction_wall_time": entry | {"ours": 4600.0, "caches": "empty"}}))
    assert "**met**, under the conditions listed (76.7 min, above the 75-min aim" in over_aim
    over = " ".join(lines({"reproduction_wall_time": entry | {"ours": 5500.0, "caches": "empty"}}))
    assert "**not met**, under the conditions listed (91.7 min," in over
    scoped = " ".join(lines({"reproduction_wall_time": entry | {"caches": "empty", "scope": "3 of 4"}}))
    assert "**met** for 3 of 4, under the conditions listed" in scoped


def test_protocol_section_tolerates_old_and_new_keys(update_readme, metrics, later_metrics):
    old = update_readme.protocol_section(metrics)  # no selection_rule recorded: the package's rule, as written
    assert old.startswith("Selection rule (`pneumonia_cxr.evaluation.SELECTION_RULE`)")
    assert "- Validation signal: every trained network" in old and "Chosen on validation data only" in old
    assert "| t1 | abc1234 | yes | first run | Scratch CNN 0.800 / 0.900 |" in old
    new = update_readme.protocol_section(later_metrics)
    assert new.index("Selection rule") < new.index("Chosen on validation") < new.index("| t1 |")
    text_rule = copy.deepcopy(later_metrics)
    text_rule["protocol"]["selection_rule"] = "lowest pooled validation log loss"
    del text_rule["protocol"]["chosen_on_validation"]
    assert "scored: lowest pooled validation log loss" in update_readme.protocol_section(text_rule).replace("\n", " ")


def test_rerun_section_says_what_differs(fgc, update_readme):
    before = {"models": {"scratch_cnn": {"threshold": 0.2, "val": {"roc_auc": 0.99},
                                         "test": {"accuracy": 0.84, "roc_auc": 0.93},
                                         "seeds": [{"seed": 0, "best_epoch": 3, "threshold": 0.4,
                                                    "val": {"roc_auc": 0.99}, "test": {"accuracy": 0.8, "roc_auc": 0.9}}]}}}
    after = {"models": {"scratch_cnn": dict(before["models"]["scratch_cnn"], test={"accuracy": 0.85, "roc_auc": 0.93})}}
    rows = fgc.rerun_agreement(before, after)
    side = {"scored_at": "t", "code_commit": "c", "machine": "m"}
    text = update_readme.rerun_section({"before": side, "after": side, "rows": rows.to_dict(orient="records")})
    assert "| Scratch CNN | 0 | 3 (same) | 0.800 (same) |" in text
    assert "| Scratch CNN | ensemble | – | 0.840 → 0.850 |" in text and "1 of 2 rows identical" in text


def _table(section: str, title: str = "") -> list[str]:
    """The Markdown table lines that follow ``title`` (default: the first table) in a generated section."""
    lines = (section.split(title, 1)[1] if title else section).strip().split("\n\n", 1)[0].splitlines()
    assert all(line.startswith("|") for line in lines)
    return lines


def test_gradcam_section_renders_the_committed_checks_file(update_readme):
    """Whichever format results/gradcam_checks.csv has: an earlier one says it is out of date."""
    checks = pd.read_csv(REPO_ROOT / "results" / "gradcam_checks.csv")
    section = update_readme.gradcam_checks_section(checks)
    assert section.startswith("| model |") or section.startswith("*Out of date")


def test_a_run_with_the_new_gradcam_table_and_no_ensemble_renders_every_file(update_readme, fgc, repo_copy,
                                                                            later_metrics):
    later = copy.deepcopy(later_metrics)
    later["models"]["ensemble"] = {"status": NOT_KEPT}
    (repo_copy / "results" / "metrics.json").write_text(json.dumps(later))
    gradcam_checks_table(fgc, repo_copy / "results")
    update_readme.main(repo_copy)
    readme = (repo_copy / "README.md").read_text()
    _check_front_page(readme)
    flat = readme.replace("\n  ", " ").replace("\n", " ")
    assert ("The seed-ensemble of ImageNet Xception transfer, the family chosen on validation images, scores a "
            "pneumonia X-ray above a normal one with probability 0.959 (its ROC-AUC)") in flat  # the served family, never the test's best (HED 0.79)
    models = (repo_copy / "docs" / "reproducibility.md").read_text().replace("\n  ", " ").replace("\n", " ")
    assert ("- **Family chosen on validation (its seed-ensemble): ImageNet Xception transfer**, test accuracy 0.886 "
            "[0.856, 0.916], ROC-AUC 0.959 [0.939, 0.969]: accuracy above the original study (") in models  # findings
    assert "On validation pooled with 4 perturbed copies: ROC-AUC 0.990; on test 0.959." in models
    assert "Best model" not in readme + models
    assert "| Cross-model ensemble (dropped by the validation rule, which chose one family: ImageNet Xception" in readme
    assert "| Scratch CNN | 64 / 64 | faithful / no evidence either way | fails / fails | not interior / not interior |" \
        in readme
    assert "another collection" not in readme
    gradcam = (repo_copy / "docs" / "gradcam.md").read_text()
    assert "| Scratch CNN | Grad-CAM | all | 64 | -0.500 [" in gradcam and "do not edit" in gradcam
    method = (repo_copy / "docs" / "gradcam_method.md").read_text()
    assert "ROAD curves were computed for Grad-CAM, Grad-CAM++" in method
    targets = (repo_copy / "docs" / "reproducibility.md").read_text().replace("\n  ", " ")
    assert "or dropped: **met** (dropped by the validation rule, which chose one family: ImageNet Xception" in targets


def test_app_readme_states_the_limits_the_code_sets(repo_root):
    """app/README.md's hand-written numbers against the constants of the code that sets them."""
    import ast

    def constants(path: Path) -> dict:
        tree = ast.parse(path.read_text())
        return {target.id: node.value.value for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant)}

    from pneumonia_cxr import images  # the one module that sets the upload limits

    app = constants(repo_root / "app" / "__init__.py")
    text = re.sub(r"\s+", " ", (repo_root / "app" / "README.md").read_text())
    formats = [name.replace("WEBP", "WebP") for name in images.UPLOAD_FORMATS]
    assert f"Accepted formats: {', '.join(formats[:-1])} and {formats[-1]} (`UPLOAD_FORMATS`)" in text
    assert f"Images over {images.MAX_IMAGE_PIXELS / 1e6:g} megapixels ({images.MAX_IMAGE_PIXELS:,} pixels" in text
    assert f"more than {images.MAX_ASPECT_RATIO} times the short side (`MAX_ASPECT_RATIO`" in text
    assert f"`MAX_UPLOAD_MB` (default {images.DEFAULT_MAX_UPLOAD_MB})" in text
    assert f"at most {app['DISPLAY_MAX_SIDE']} px on the long side" in text
    assert f"`IMAGE_SLOTS` (default {app['DEFAULT_IMAGE_SLOTS']})" in text
    base = re.search(r"^ARG BASE_IMAGE=(\S+)", (repo_root / "Dockerfile").read_text(), re.MULTILINE).group(1)
    assert f"base `{base}` by default" in text
    for command in (".venv/bin/python scripts/fetch_models.py URL_OR_FILE", ".venv/bin/python -m app",
                    ".venv/bin/python scripts/pack_models.py"):
        assert command in text and command in (repo_root / "README.md").read_text()


def test_container_section_tolerates_missing_keys(update_readme):
    report = json.loads((REPO_ROOT / "bench" / "container.json").read_text())
    full = update_readme.container_section(report).replace("\n", " ")
    assert "HTTP 200" in full and "warm median" in full
    assert update_readme.container_section({"measured_at_utc": "t", "image": "img"}) == "Last run (t): image `img`."


def test_compare_runs_script_writes_the_report_and_refuses_what_is_not_comparable(repo_root, tmp_path):
    record = {"seed": 0, "best_epoch": 3, "threshold": 0.4, "val": {"roc_auc": 0.99},
              "test": {"accuracy": 0.8, "roc_auc": 0.9}, "train_seconds": 10.0}
    metrics = {"dataset": {"test_n": 624, "images_sha256": "ab" * 32}, "quick": False, "machine": "m",
               "protocol": {"history": [{"scored_at": "t0", "code_commit": "no-such-commit"}]},
               "models": {"scratch_cnn": {"threshold": 0.2, "test": {"accuracy": 0.84, "roc_auc": 0.93},
                                          "seeds": [record]}}}
    rerun = json.loads(json.dumps(metrics))
    rerun["protocol"]["history"][0]["scored_at"] = "t1"  # another run of the same code
    rerun["models"]["scratch_cnn"]["seeds"][0]["train_seconds"] = 99.0  # wall time: not a difference
    paths = {}
    for name, content in {"a": metrics, "b": rerun, "copy_of_a": metrics, "quick": rerun | {"quick": True},
                          "other_data": rerun | {"dataset": {"test_n": 624, "images_sha256": "cd" * 32}},
                          "no_digest": rerun | {"dataset": {"test_n": 624}}}.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(content))
    (tmp_path / "broken.json").write_text("{not json")
    script = str(repo_root / "scripts" / "compare_runs.py")

    def run(*args):
        return subprocess.run([sys.executable, script, *map(str, args), "--output", str(tmp_path / "out.json")],
                              capture_output=True, text=True)

    done = run(paths["a"], paths["b"])
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    assert [row["identical"] for row in report["rows"]] == [True, True] and report["code_changes"] is None
    assert (report["before"]["scored_at"], report["after"]["scored_at"]) == ("t0", "t1")
    (tmp_path / "out.json").unlink()
    for bad, message in [(paths["a"], "the same file twice"),
                         (tmp_path / "." / "a.json", "the same file twice"),
                         (paths["copy_of_a"], "two copies of one run (both scored t0 at commit no-such-commit)"),
                         (paths["quick"], "quick run"), (paths["other_data"], "different images"),
                         (paths["no_digest"], "has no 'dataset.images_sha256'"),
                         (tmp_path / "broken.json", "not JSON"), ("nosuchrev:results/metrics.json", "git show failed"),
                         (tmp_path / "missing.json", "No such file")]:
        failed = run(paths["a"], bad)
        assert failed.returncode == 1 and message in failed.stderr and "Traceback" not in failed.stderr, failed.stderr
        assert not (tmp_path / "out.json").exists()  # nothing written for a refused comparison


def test_same_run_needs_a_recorded_identity_to_call_two_files_one_run(repo_root):
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_runs", repo_root / "scripts" / "compare_runs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    unknown = {"file": "a.json", "scored_at": None, "code_commit": None}
    assert module.same_run(unknown, unknown | {"file": "b.json"}) is None  # nothing recorded: cannot tell
    assert module.same_run(unknown | {"file": "HEAD:results/metrics.json"},
                           unknown | {"file": "HEAD:results/metrics.json"}).startswith("the same file")
    known = {"file": "a.json", "scored_at": "t", "code_commit": "c"}
    assert module.same_run(known, known | {"file": "b.json", "code_commit": "d"}) is None  # same time, other code
    assert module.same_run(known, known | {"file": "b.json"}).startswith("two copies of one run")


def test_wrap_keeps_tables_and_indents_bullets(update_readme):
    long = "word " * 60
    wrapped = update_readme.bullets(f"- {long}\n  - {long}")
    assert all(len(line) <= update_readme.WIDTH for line in wrapped.splitlines())
    assert wrapped.splitlines()[1].startswith("  ") and "\n  - " in wrapped
    table = "| a | b |\n|---|---|\n| " + "x" * 300 + " | y |"
    assert update_readme.wrap(table) == table
    assert np.all([len(line) <= update_readme.WIDTH for line in update_readme.wrap(long).splitlines()])


def test_every_figure_in_images_for_readme_is_shown_in_the_readme_or_the_docs(repo_root):
    """A figure written to images_for_readme/ and shown nowhere is either stale or lost: each must be linked
    from README.md, app/README.md or a page of docs/ (those pages link it as ../images_for_readme/NAME)."""
    pages = [repo_root / "README.md", repo_root / "app" / "README.md", *sorted((repo_root / "docs").glob("*.md"))]
    text = "\n".join(page.read_text() for page in pages)
    unseen = [png.name for png in sorted((repo_root / "images_for_readme").glob("*.png"))
              if f"images_for_readme/{png.name})" not in text]
    assert not unseen, f"shown nowhere: {unseen}"


def test_first_screen_sections_of_the_new_record(update_readme, metrics, tmp_path):
    """The README's question, answer and trust list from a record of the new format (a face-recognition
    family, the scratch CNN's recipe) with hand-made overlap and baseline files; words written by hand."""
    new = copy.deepcopy(metrics)
    new["models"]["hed_vgg16_transfer"] = {"status": "not run: compute budget"}
    new["models"]["face_dlib_resnet"] = _family(0.75, 0.85)
    new["training"] = {"scratch_recipe": {"input_size": 128, "max_epochs": 12}}
    for record, epoch in zip(new["models"]["scratch_cnn"]["seeds"], (6, 8, 12)):
        record["best_epoch"] = epoch
    question = update_readme.question_section(new).replace("\n", " ")
    assert "(Xception, trained on ImageNet's everyday photos; dlib's face-recognition ResNet)" in question
    assert "dlib's ResNet face embedding (128 numbers per image) rather than VGG-Face's convolutional features" in question
    answer = update_readme.answer_section(new).replace("\n", " ")
    assert ("Not shown, judged by McNemar's paired test on the same test X-rays against the scratch CNN's accuracy of "
            "0.840: ImageNet Xception transfer 0.886, not "
            "distinguishable (95% intervals)") in answer
    overlap = {"overlap": [{"label": "PNEUMONIA", "reading": "patient_id", "target_ids": 202, "shared_ids": 170,
                            "target_images": 390, "target_images_of_shared_ids": 320}]}
    trust = update_readme.trust_section(new, overlap).replace("\n  ", " ")
    assert trust.splitlines()[0].startswith("- **The same patients may be in training and test.** 320 of the 390 "
                                            "pneumonia test X-rays carry a patient id")
    assert "- **The official test set has been scored 1 time** for published results" in trust
    assert "training was cut" not in trust  # best epochs 6 and 8 below the cap of 12
    curves = update_readme.training_curves_section(new)
    assert "(../images_for_readme/curves_face_dlib_resnet.png)" in curves
    assert "curves_hed_vgg16_transfer" not in curves  # not run: no figure
    example = update_readme.api_example_section({"default": "xception_imagenet_transfer"}, {"threshold": 0.7771})
    assert '"threshold": 0.777, "model": "xception_imagenet_transfer"' in example
    assert "0.41" not in update_readme.api_example_section(None, None)
