"""The Grad-CAM checks in words (pneumonia_cxr.gradcam_report) on a table whose verdicts are known by
construction: the words must say each verdict of the table, and the method text each rule's constant."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pneumonia_cxr import gradcam_checks as gc
from pneumonia_cxr import gradcam_report as gr
from pneumonia_cxr import gradcam_stats as gs

N = 64
GOOD_MORF, GOOD_LERF = np.linspace(-0.6, -0.4, N), np.linspace(0.4, 0.6, N)  # means -0.5 and +0.5
ROUNDING = np.linspace(1e-9, 1e-5, N)  # below the tie tolerance: ties
SPECS = {  # (model, method): MoRF and LeRF differences, rho with every layer random, border share
    ("hed_vgg16_transfer", "gradcam"): (ROUNDING, ROUNDING, 0.1, 0.1),  # no evidence, passes, interior
    ("hed_vgg16_transfer", "gradcam++"): (GOOD_MORF, GOOD_LERF, 0.1, 0.1),  # trusted
    ("scratch_cnn", "gradcam"): (GOOD_MORF, GOOD_LERF, 0.9, 0.4),  # faithful, fails, not interior
    ("scratch_cnn", "gradcam++"): (ROUNDING, ROUNDING, 0.9, 0.4),  # no evidence, fails, not interior
}


def per_image_rows() -> pd.DataFrame:
    """Per-image rows (the columns run_checks writes that the verdicts use), 64 images per model and method."""
    frames = []
    for (model, method), (morf, lerf, rho, border) in SPECS.items():
        frame = pd.DataFrame({"model": model, "method": method, "image": np.arange(N),
                              "true_class": np.where(np.arange(N) % 2, "PNEUMONIA", "NORMAL"), "correct": True,
                              "empty_map": False, "morf_map": 1.0 + morf, "morf_shifted": 1.0, "morf_diff": morf,
                              "lerf_map": 3.0 + lerf, "lerf_shifted": 3.0, "lerf_diff": lerf,
                              "rank_corr_random_weights": rho, "random_map_constant": False,
                              "sanity_pass": abs(rho) < gc.RANK_CORR_LIMIT, "border_share": border,
                              "border_share_uniform": 0.36, "border_pass": border < 0.36})
        frame["road_map"], frame["road_shifted"] = (frame["lerf_map"] - frame["morf_map"]) / 2, 1.0
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def gradcam_checks_table(fgc, folder: Path) -> pd.DataFrame:
    """summarise_checks of :func:`per_image_rows`, written to ``folder/gradcam_checks.csv`` and read back."""
    path = Path(folder) / "gradcam_checks.csv"
    gs.summarise_checks(per_image_rows()).to_csv(path, index=False)
    return pd.read_csv(path)


@pytest.fixture()
def checks(fgc, tmp_path) -> pd.DataFrame:
    return gradcam_checks_table(fgc, tmp_path)


def test_verdict_table_says_each_verdict(checks):
    table = gr.verdict_table(checks).set_index("model")
    assert table.loc["HED-VGG16 transfer"].tolist() == [
        "64 / 64", "no evidence either way / faithful", "passes / passes", "interior / interior"]
    assert table.loc["Scratch CNN"].tolist() == [
        "64 / 64", "faithful / no evidence either way", "fails / fails", "not interior / not interior"]
    assert gr.untrusted(checks) == ["Scratch CNN"]
    trusted = checks.assign(faithfulness_verdict="faithful", sanity_verdict="passes", border_verdict="interior")
    assert gr.untrusted(trusted) == []


def test_findings_give_the_numbers_behind_each_verdict(checks):
    text = gr.findings_markdown(checks)
    assert ("**Scratch CNN, Grad-CAM** (64 images): faithfulness **faithful** (MoRF map - copies -0.500 [" in text)
    assert "better in 64 / worse in 0 / tied in 0: better" in text
    assert "better in 0 / worse in 0 / tied in 64: no evidence either way" in text  # rounding: ties, not wins
    assert "sanity **fails** (median rho with every layer randomised +0.900" in text
    assert text.endswith("No method's maps can be trusted (faithful, sane and interior) for Scratch CNN.")
    bullet = gr.findings(checks, method="gradcam++")
    assert bullet.startswith("**Where the models look** (Grad-CAM++, 64 test images): HED-VGG16 transfer: "
                             "faithfulness faithful, sanity passes, borders interior; Scratch CNN: faithfulness no")


def test_earlier_tables_are_said_to_be_out_of_date():
    old = pd.DataFrame({"model": ["scratch_cnn"], "method": ["gradcam"], "subset": ["all"], "n_images": [32],
                        "faithfulness_verdict": ["faithful"]})
    assert gr.findings(old) is None and gr.verdicts_section(old).startswith("*Out of date")
    assert "Out of date" in gr.gradcam_markdown(old)


def test_method_text_states_the_constants_in_force(checks):
    text = gr.method_markdown(checks)
    for stated in (f"|d| <= {gc.TIE_TOLERANCE:g} logit", f"{gc.SOLVER_ITERATIONS} iterations",
                   f"within {gc.IMPUTATION_ERROR_LIMIT:g}", f"deviation {gc.ROAD_NOISE:g}",
                   f"below {gc.RANK_CORR_LIMIT}", f"below {gc.ALPHA}", f"{gc.BOOTSTRAP_RESAMPLES} resamples",
                   "family of the 4 tests", "is not met", "computed for Grad-CAM, Grad-CAM++"):
        assert stated in text, stated
    only_gradcam = checks.assign(n_curve_images=np.where(checks["method"] == "gradcam++", 0, 64))
    assert "Grad-CAM++ got the sanity and border checks only" in gr.method_markdown(only_gradcam)


def test_docs_are_written_with_the_figures_present(checks, tmp_path):
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "gradcam_road_scratch_cnn.png").write_bytes(b"")
    written = gr.write_gradcam_docs(checks, tmp_path, tmp_path / "figures")
    assert [p.name for p in written] == ["gradcam.md", "gradcam_method.md"]
    page = (tmp_path / "gradcam.md").read_text()
    assert "![gradcam_road_scratch_cnn.png](../images_for_readme/gradcam_road_scratch_cnn.png)" in page
    assert "| Scratch CNN | Grad-CAM | all | 64 | -0.500 [" in page


def test_stale_figures_are_removed(tmp_path):
    names = ["gradcam_scratch_cnn.png", "gradcam_road_scratch_cnn.png", "gradcam_hed_vgg16_transfer.png",
             "gradcam_sanity_hed_vgg16_transfer.png", "gradcam_fullsize_example.png", "other.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    removed = gr.remove_stale_figures(tmp_path, ["scratch_cnn"])
    assert sorted(p.name for p in removed) == ["gradcam_hed_vgg16_transfer.png", "gradcam_sanity_hed_vgg16_transfer.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(names) - {p.name for p in removed})


def test_figure_titles_count_the_images_shown():
    rng = np.random.default_rng(0)
    curves = {"gradcam": {"morf": rng.random((5, 9)), "lerf": rng.random((5, 9)),
                          "morf_shifted": rng.random((5, 2, 9)), "lerf_shifted": rng.random((5, 2, 9))}}
    fig = gr.plot_road_curves(curves, np.array([0, 0, 1, 1, 1]), "m")
    assert [ax.get_title() for ax in fig.axes] == ["explains NORMAL (2 images)", "explains PNEUMONIA (3 images)"]
    cascade = pd.DataFrame({"seed": [0, 1] * 6, "layers_randomised": np.repeat([1, 2, 3], 4), "method": "gradcam",
                            "image": [0, 0, 1, 1] * 3, "rank_corr": rng.random(12)})
    assert gr.plot_sanity_depth(cascade, "m").axes[0].get_title() == "m: 2 images, 2 seeds"
    grid = gr.plot_examples(np.zeros((3, 8, 8, 3), np.uint8), {"gradcam": np.zeros((3, 8, 8))}, ["a", "b", "c"], "m")
    assert grid._suptitle.get_text() == "m (3 images)"
