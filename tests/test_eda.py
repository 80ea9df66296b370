"""Exploratory-analysis helpers: counts, duplicates, patients, Canny, sizes, intensities, figures,
example images. Mostly on a tiny synthetic Kaggle-layout folder; a few checks on the real data
(root from ``CHEST_XRAY_DATA_ROOT``, default ``<repo>/../shared/data``)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import pneumonia_cxr as pcx

REPO_ROOT = Path(__file__).resolve().parents[1]

SPLITS = ("train", "val", "test")
CLASSES = ("NORMAL", "PNEUMONIA")


def _write_jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    """A grayscale noise JPEG of ``size`` (width, height) pixels."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path, format="JPEG")


@pytest.fixture()
def tiny_tree(tmp_path) -> Path:
    """Kaggle layout with known content.

    Per split: NORMAL files are 300x200 px (landscape), PNEUMONIA 200x300 (portrait).
    train: NORMAL IM-0001-0001, IM-0002-0001, IM-0003-0001; PNEUMONIA person1_bacteria_1,
    person1_bacteria_2 (same patient), person2_virus_3. val: NORMAL IM-0004-0001, PNEUMONIA
    person3_bacteria_4. test: NORMAL IM-0005-0001, IM-0006-0001; PNEUMONIA person1_virus_5
    (an id also in train), person4_bacteria_6.
    Known copies: train/NORMAL/IM-0002 == IM-0003 (within split); test/PNEUMONIA/person4_bacteria_6
    == train/PNEUMONIA/person2_virus_3 (across splits).
    """
    files = {
        ("train", "NORMAL"): ["IM-0001-0001.jpeg", "IM-0002-0001.jpeg"],
        ("train", "PNEUMONIA"): ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person2_virus_3.jpeg"],
        ("val", "NORMAL"): ["IM-0004-0001.jpeg"],
        ("val", "PNEUMONIA"): ["person3_bacteria_4.jpeg"],
        ("test", "NORMAL"): ["IM-0005-0001.jpeg", "IM-0006-0001.jpeg"],
        ("test", "PNEUMONIA"): ["person1_virus_5.jpeg"],
    }
    seed = 0
    for (split, label), names in files.items():
        for name in names:
            seed += 1
            _write_jpeg(tmp_path / split / label / name, (300, 200) if label == "NORMAL" else (200, 300), seed)
    shutil.copyfile(tmp_path / "train/NORMAL/IM-0002-0001.jpeg", tmp_path / "train/NORMAL/IM-0003-0001.jpeg")
    shutil.copyfile(tmp_path / "train/PNEUMONIA/person2_virus_3.jpeg", tmp_path / "test/PNEUMONIA/person4_bacteria_6.jpeg")
    return tmp_path


@pytest.fixture()
def tiny_index(tiny_tree) -> pd.DataFrame:
    return pcx.dataset.build_index(tiny_tree)


# ----------------------------------------------------------------------------------------------
# Counts and class weights
# ----------------------------------------------------------------------------------------------
def test_class_counts_match_the_files_on_disk(tiny_tree, tiny_index):
    table = pcx.eda.class_counts(tiny_index)
    assert list(table.index) == [*SPLITS, "all"]
    for split in SPLITS:
        for label in CLASSES:
            assert table.loc[split, label] == len(list((tiny_tree / split / label).glob("*.jpeg")))
    assert table.loc["all", "total"] == len(tiny_index) == 12
    assert (table["total"] == table["NORMAL"] + table["PNEUMONIA"]).all()
    assert table.loc["test", "pneumonia_share"] == pytest.approx(2 / 4)


def test_class_counts_of_the_patient_grouped_subsets(tiny_index):
    # four patients per class are too few for ten folds; two folds still keep train + val intact
    grouped = pcx.dataset.patient_grouped_split(tiny_index, val_fraction=0.5)
    official, resplit = pcx.eda.class_counts(grouped, "split"), pcx.eda.class_counts(grouped, "subset")
    assert resplit.index.name == "subset"
    assert resplit.loc["test"].equals(official.loc["test"])
    pooled = official.loc["train", ["NORMAL", "PNEUMONIA"]] + official.loc["val", ["NORMAL", "PNEUMONIA"]]
    assert (resplit.loc["train", ["NORMAL", "PNEUMONIA"]] + resplit.loc["val", ["NORMAL", "PNEUMONIA"]]).equals(pooled)


def test_class_counts_of_the_real_224_set_match_build_index_and_the_folders(data_root):
    root = data_root / "chest_xray_224"
    index = pcx.dataset.build_index(root)
    table = pcx.eda.class_counts(index)
    assert table.loc["all", "total"] == len(index)
    for split in SPLITS:
        for label in CLASSES:
            on_disk = sum(1 for p in (root / split / label).iterdir() if p.is_file() and not p.name.startswith("."))
            assert table.loc[split, label] == on_disk == ((index["split"] == split) & (index["label"] == label)).sum()
    # the published layout (data README)
    assert table.loc["train", ["NORMAL", "PNEUMONIA"]].tolist() == [1341, 3875]
    assert table.loc["test", ["NORMAL", "PNEUMONIA"]].tolist() == [234, 390]


def test_normalised_class_weights_reproduce_the_original_study():
    targets = np.array([0] * 1341 + [1] * 3875)  # official training labels
    share = pcx.dataset.normalised_class_weights(pcx.dataset.compute_class_weights(targets))
    assert sum(share.values()) == pytest.approx(1.0)
    assert share[0] == pytest.approx(0.74, abs=0.005) and share[1] == pytest.approx(0.26, abs=0.005)


def test_subsample_per_class_keeps_every_column_and_caps_each_split_class(tiny_index):
    subset = pcx.dataset.subsample_per_class(tiny_index, 1, seed=0)
    assert list(subset.columns) == list(tiny_index.columns)
    assert subset.groupby(["split", "label"]).size().max() == 1
    assert len(subset) == 6
    assert pcx.dataset.subsample_per_class(tiny_index, None).equals(tiny_index.reset_index(drop=True))


# ----------------------------------------------------------------------------------------------
# Duplicates and patients
# ----------------------------------------------------------------------------------------------
def test_find_duplicates_reports_the_known_copies(tiny_index):
    duplicates = pcx.eda.find_duplicates(tiny_index)
    assert len(duplicates) == 2
    assert duplicates["n_files"].tolist() == [2, 2]
    by_scope = duplicates.set_index("scope")
    assert by_scope.loc["across splits", "filenames"] == "person2_virus_3.jpeg; person4_bacteria_6.jpeg"
    assert by_scope.loc["across splits", "splits"] == "train,test"
    assert by_scope.loc["within one split", "filenames"] == "IM-0002-0001.jpeg; IM-0003-0001.jpeg"
    assert by_scope.loc["within one split", "patients"] == "IM-0002,IM-0003"
    assert not duplicates["label_conflict"].any()


def test_find_duplicates_flags_copies_with_different_labels(tiny_tree):
    shutil.copyfile(tiny_tree / "val/NORMAL/IM-0004-0001.jpeg", tiny_tree / "val/PNEUMONIA/person9_virus_9.jpeg")
    duplicates = pcx.eda.find_duplicates(pcx.dataset.build_index(tiny_tree))
    conflict = duplicates[duplicates["label_conflict"]]
    assert len(conflict) == 1
    assert conflict.iloc[0]["labels"] == "NORMAL,PNEUMONIA" and conflict.iloc[0]["scope"] == "within one split"


def test_find_duplicates_of_distinct_files_is_empty(tiny_index):
    unique = tiny_index.drop_duplicates("sha256")
    duplicates = pcx.eda.find_duplicates(unique)
    assert duplicates.empty and "scope" in duplicates.columns


def test_patient_counts_group_images_and_find_ids_shared_between_splits(tiny_index):
    table = pcx.eda.patient_counts(tiny_index)
    train_pneumonia = table.loc[("train", "PNEUMONIA")]
    assert train_pneumonia["images"] == 3 and train_pneumonia["patients"] == 2  # person1 twice, person2
    assert train_pneumonia["images_per_patient_max"] == 2
    assert train_pneumonia["ids_in_other_splits"] == 1  # person1 is also in test
    assert table.loc[("test", "PNEUMONIA"), "ids_in_other_splits"] == 1
    assert table.loc[("train", "NORMAL"), "ids_in_other_splits"] == 0
    assert table["images"].sum() == len(tiny_index)


# Synthetic index with a known answer. PNEUMONIA: test person1 (virus) is in train as bacteria,
# test person3 (bacteria) is in val as bacteria, test person4 nowhere else. NORMAL: test IM-0002
# shares only its number with train's NORMAL2-IM-0002; IM-0004 has two images.
OVERLAP_FILES = {
    ("train", "PNEUMONIA"): ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person2_virus_3.jpeg",
                             "person5_bacteria_9.jpeg"],
    ("val", "PNEUMONIA"): ["person3_bacteria_4.jpeg"],
    ("test", "PNEUMONIA"): ["person1_virus_5.jpeg", "person1_virus_6.jpeg", "person3_bacteria_7.jpeg",
                            "person4_bacteria_8.jpeg"],
    ("train", "NORMAL"): ["IM-0001-0001.jpeg", "NORMAL2-IM-0002-0001.jpeg"],
    ("val", "NORMAL"): ["IM-0003-0001.jpeg"],
    ("test", "NORMAL"): ["IM-0002-0001.jpeg", "IM-0004-0001.jpeg", "IM-0004-0002.jpeg"],
}


@pytest.fixture()
def overlap_index() -> pd.DataFrame:
    rows = [{"split": split, "label": label, "filename": name, "patient_id": pcx.dataset.parse_patient_id(name)}
            for (split, label), names in OVERLAP_FILES.items() for name in names]
    return pd.DataFrame(rows)


def test_name_series_and_number_read_the_three_naming_schemes():
    assert pcx.eda.name_series_and_number("person12_virus_40.jpeg") == ("virus", "12")
    assert pcx.eda.name_series_and_number("person447_virus_921_1.jpeg") == ("virus", "447")
    assert pcx.eda.name_series_and_number("PERSON3_Bacteria_4.jpeg") == ("bacteria", "3")
    assert pcx.eda.name_series_and_number("IM-0115-0001.jpeg") == ("IM", "115")
    assert pcx.eda.name_series_and_number("NORMAL2-IM-0007-0001.jpeg") == ("NORMAL2-IM", "7")
    assert pcx.eda.name_series_and_number("scan.png") == ("", "scan")


@pytest.mark.parametrize("reading, expected", [
    # label: (test ids, train+val ids, shared, shared with train, shared with val, test images of shared ids)
    ("patient_id", {"PNEUMONIA": (3, 4, 2, 1, 1, 3), "NORMAL": (2, 3, 0, 0, 0, 0)}),
    ("series_id", {"PNEUMONIA": (3, 4, 1, 0, 1, 1), "NORMAL": (2, 3, 0, 0, 0, 0)}),
    ("number", {"PNEUMONIA": (3, 4, 2, 1, 1, 3), "NORMAL": (2, 3, 1, 1, 0, 1)}),
])
def test_patient_id_overlap_counts_the_known_shared_ids(overlap_index, reading, expected):
    table = pcx.eda.patient_id_overlap(pcx.eda.patient_id_readings(overlap_index), id_column=reading)
    assert list(table.index) == ["NORMAL", "PNEUMONIA"]
    columns = ["target_ids", "reference_ids", "shared_ids", "shared_with_train", "shared_with_val",
               "target_images_of_shared_ids"]
    for label, values in expected.items():
        assert tuple(table.loc[label, columns]) == values, (reading, label)
    assert table.loc["PNEUMONIA", "target_images"] == 4 and table.loc["NORMAL", "target_images"] == 3
    assert table.loc["PNEUMONIA", "shared_share"] == pytest.approx(expected["PNEUMONIA"][2] / 3, abs=1e-3)


def test_patient_overlap_report_is_json_ready_and_counts_ids_per_split_and_subset(overlap_index, tmp_path):
    subsets = {"train": "val", "val": "train", "test": "test"}  # any re-split: val and train swapped
    report = pcx.eda.patient_overlap_report(overlap_index.assign(subset=overlap_index["split"].map(subsets)))
    path = pcx.eda.save_patient_overlap(report, tmp_path / "results" / "patient_overlap.json")
    assert json.loads(path.read_text()) == report
    counts = pd.DataFrame(report["counts"]).set_index(["by", "group", "label"])
    assert counts.loc[("split", "train", "PNEUMONIA"), "ids"] == 3  # person1, person2, person5
    assert counts.loc[("split", "train", "PNEUMONIA"), "images"] == 4
    assert counts.loc[("split", "test", "NORMAL"), "ids"] == 2
    assert counts.loc[("subset", "val", "PNEUMONIA"), "ids"] == 3  # the official train rows
    assert counts.xs("split")["images"].sum() == len(overlap_index)
    assert {row["reading"] for row in report["overlap"]} == set(pcx.eda.ID_READINGS)
    summary = pcx.eda.patient_overlap_summary(report)
    assert "PNEUMONIA: 2 of 3 test patient ids also occur in train+val (3 of 4 test images)" in summary
    assert "read within the naming series, 1 of 3" in summary
    assert "NORMAL: 0 of 2 test patient ids" in summary


def test_patient_overlap_table_and_readme_section(overlap_index, tmp_path, update_readme):
    report = pcx.eda.patient_overlap_report(overlap_index)
    table = pcx.eda.patient_overlap_table(report)
    assert table["class"].tolist() == ["NORMAL"] * 3 + ["PNEUMONIA"] * 3
    assert table["id read as"].tolist() == ["patient_id", "series_id", "number"] * 2
    assert table.loc[5, "test ids also in train+val"] == 2 and table.loc[2, "test ids also in train+val"] == 1
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- patient-overlap:start -->\nold\n<!-- patient-overlap:end -->\nafter\n")
    update_readme.replace_marked_section(readme, "patient-overlap", update_readme.patient_overlap_section(report))
    text = readme.read_text()
    assert "old" not in text and text.startswith("before") and text.endswith("after\n")
    assert "| PNEUMONIA | series_id | 3 | 4 | 1 |" in text


def test_patient_id_overlap_on_the_real_224_set_agrees_with_patient_counts(index_224):
    readable = pcx.dataset.decodable(index_224, warn=False)
    overlap = pcx.eda.patient_id_overlap(readable)
    counts = pcx.eda.patient_counts(readable)
    for label in CLASSES:  # two computations of one thing: test ids also found in train or val
        assert overlap.loc[label, "shared_ids"] == counts.loc[("test", label), "ids_in_other_splits"]
        assert overlap.loc[label, "target_ids"] == counts.loc[("test", label), "patients"]
    assert overlap.loc["PNEUMONIA", "shared_ids"] > 0


# ----------------------------------------------------------------------------------------------
# Canny, sizes, intensities
# ----------------------------------------------------------------------------------------------
def test_canny_edges_are_binary_full_size_and_on_the_step():
    image = np.zeros((60, 80), np.uint8)
    image[:, 40:] = 200  # a vertical step between columns 39 and 40
    edges = pcx.eda.canny_edges(image, 30, 90)
    assert edges.shape == (60, 80) and edges.dtype == np.uint8
    assert set(np.unique(edges)) == {0, 255}
    assert set(np.flatnonzero(edges.any(axis=0))) <= {39, 40}
    assert not pcx.eda.canny_edges(np.full((60, 80), 128, np.uint8)).any()
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    assert np.array_equal(pcx.eda.canny_edges(rgb, 30, 90), edges)


def test_higher_canny_thresholds_never_find_more_edges(data_root):
    index = pcx.dataset.build_index(data_root / "chest_xray_fullsize_sample")
    path = index[index["split"] == "val"]["path"].iloc[0]
    gray = pcx.eda.load_gray(path)
    low, high = pcx.eda.canny_edges(gray, 30, 90), pcx.eda.canny_edges(gray, 100, 200)
    assert low.shape == high.shape == gray.shape  # full resolution, not resized
    assert (high > 0).sum() <= (low > 0).sum()


def test_size_summary_gives_each_class_its_aspect_ratio(tiny_index):
    table = pcx.eda.size_summary(tiny_index)
    assert list(table.index) == ["NORMAL", "PNEUMONIA"]
    assert table.loc["NORMAL", "aspect_median"] == pytest.approx(1.5)
    assert table.loc["PNEUMONIA", "aspect_median"] == pytest.approx(200 / 300, abs=1e-3)
    assert table.loc["NORMAL", "grayscale_share"] == 1.0
    assert table["images"].sum() == len(tiny_index)


def test_intensity_histograms_are_shares_and_representatives_are_closest(tmp_path):
    paths = []
    for i, level in enumerate((10, 130, 250)):
        path = tmp_path / f"flat{i}.png"
        Image.fromarray(np.full((20, 30), level, np.uint8)).save(path)
        paths.append(path)
    histograms = pcx.eda.intensity_histograms(paths, bins=16)
    assert histograms.shape == (3, 16)
    assert np.allclose(histograms.sum(axis=1), 1.0)
    assert [int(np.argmax(h)) for h in histograms] == [10 * 16 // 256, 130 * 16 // 256, 250 * 16 // 256]
    fake = np.array([[1.0, 0.0], [0.6, 0.4], [0.0, 1.0], [0.5, 0.5]])
    chosen = pcx.eda.representative_rows(["NORMAL", "NORMAL", "NORMAL", "PNEUMONIA"], fake)
    assert chosen == {"NORMAL": 1, "PNEUMONIA": 3}


# ----------------------------------------------------------------------------------------------
# Figures and example images
# ----------------------------------------------------------------------------------------------
def _check_figure(figure, path: Path) -> None:
    from matplotlib.figure import Figure

    assert isinstance(figure, Figure)
    assert path.is_file() and path.stat().st_size > 0
    drawn = [ax for ax in figure.axes if ax.get_visible()]
    assert drawn and all(ax.get_title() for ax in drawn)


@pytest.mark.parametrize("name", ["counts", "grid", "canny", "sizes", "intensity", "patients"])
def test_plot_functions_return_labelled_figures_and_save_them(tiny_index, tmp_path, name):
    path = tmp_path / "figures" / f"{name}.png"
    if name == "counts":
        grouped = pcx.dataset.patient_grouped_split(tiny_index, val_fraction=0.5)
        figure = pcx.eda.plot_class_counts(grouped, ("split", "subset"), path=path)
        assert len(figure.axes) == 2
    elif name == "grid":
        figure = pcx.eda.plot_sample_grid(tiny_index, per_class=2, path=path)
    elif name == "canny":
        figure = pcx.eda.plot_canny(tiny_index["path"].iloc[:2].tolist(), thresholds=((100, 200), (30, 90)), path=path)
        assert "low=30, high=90" in figure.axes[2].get_title()
    elif name == "sizes":
        figure = pcx.eda.plot_size_distribution(tiny_index, path=path)
    elif name == "intensity":
        figure = pcx.eda.plot_intensity_histograms(tiny_index, pcx.eda.intensity_histograms(tiny_index["path"]), path=path)
    else:
        figure = pcx.eda.plot_images_per_patient(tiny_index, path=path)
    _check_figure(figure, path)
    plots = [ax for ax in figure.axes if ax.get_xlabel() and ax.get_ylabel() and ax.get_legend() is not None]
    if name in ("counts", "sizes", "intensity", "patients"):
        assert plots, "a plot needs axis labels and a legend"


def test_images_per_patient_log_axis_has_plain_labels(tiny_index):
    figure = pcx.eda.plot_images_per_patient(tiny_index)
    axis = figure.axes[0]
    figure.canvas.draw()
    labels = [t.get_text() for t in axis.get_yticklabels() if t.get_text()]
    assert axis.get_yscale() == "log" and labels
    assert not any("$" in label for label in labels)  # no mathtext: no STIX font lookup, no findfont warnings


# ----------------------------------------------------------------------------------------------
# Findings
# ----------------------------------------------------------------------------------------------
def test_data_summary_and_findings_come_from_the_numbers(tiny_index, tmp_path):
    grouped = pcx.dataset.patient_grouped_split(tiny_index, val_fraction=0.5)
    duplicates = pcx.eda.find_duplicates(grouped)
    overlap = pcx.eda.patient_overlap_report(grouped)
    mean_gray = pd.Series(np.where(grouped["label"] == "NORMAL", 100.0, 140.0), index=grouped.index)
    summary = pcx.eda.data_summary(grouped, grouped, duplicates, overlap, mean_gray)
    path = pcx.eda.save_data_summary(summary, tmp_path / "results" / "data_summary.json")
    assert json.loads(path.read_text()) == summary  # JSON-ready
    assert summary["official"]["train"] == {"NORMAL": 3, "PNEUMONIA": 3}
    assert summary["sizes"]["NORMAL"]["width_median"] == 300 and summary["sizes"]["PNEUMONIA"]["aspect_median"] == pytest.approx(2 / 3, abs=1e-3)
    assert summary["duplicates"] == {"groups": 2, "files": 4, "across_splits": 1, "label_conflicts": 0}
    assert summary["overlap"]["PNEUMONIA"]["shared_ids"] == 1
    text = pcx.eda.data_findings(summary)
    lines = text.splitlines()
    assert all(line.startswith("- **") for line in lines)
    assert "3 PNEUMONIA and 3 NORMAL images (50% PNEUMONIA)" in text
    assert "NORMAL originals are median 300 x 200 px (aspect 1.50), PNEUMONIA 200 x 300 (aspect 0.67)" in text
    assert "1.0 times larger by area" in text and f"(a sample of {len(grouped)} full-size originals)" in text
    assert "NORMAL 100 (sd 0), PNEUMONIA 140 (sd 0): a different brightness on average" in text
    assert "2 groups of byte-identical files (4 files), 1 of them across splits" in text
    assert "1 of 2 PNEUMONIA test ids" in text
    no_gray = pcx.eda.data_findings(pcx.eda.data_summary(grouped, grouped, duplicates, overlap))
    assert "Grey levels" not in no_gray and "Copies" in no_gray


def test_example_images_are_small_pngs_one_per_split_and_class(data_root, tmp_path):
    fullsize = pcx.dataset.build_index(data_root / "chest_xray_fullsize_sample")
    written = pcx.eda.save_example_images(fullsize, tmp_path / "images", max_side=256)
    expected = [f"example_{s}_{c.lower()}.png" for s in SPLITS for c in CLASSES]
    assert [p.name for p in written] == expected
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(expected)
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert max(image.size) <= 256
            assert max(image.size) == 256  # originals are larger: shrunk, not padded
            assert image.mode == "L"


def test_example_images_keep_the_aspect_ratio(tiny_index, tmp_path):
    written = pcx.eda.save_example_images(tiny_index, tmp_path, max_side=100)
    assert len(written) == 6
    for path in written:
        with Image.open(path) as image:
            assert sorted(image.size) == [67, 100]  # 300x200 or 200x300 shrunk to a 100 px side


# ----------------------------------------------------------------------------------------------
# scripts/reproduce.sh without data: the reason alone, no traceback
# ----------------------------------------------------------------------------------------------
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, so every download fails at once


def test_print_data_dir_prints_the_folder_or_only_the_reason(tiny_tree, tmp_path, capsys):
    assert pcx.dataset.print_data_dir(tiny_tree) == 0
    assert capsys.readouterr().out.strip() == str(tiny_tree)
    assert pcx.dataset.print_data_dir(tmp_path / "nowhere") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"error: Data folder not found: {tmp_path / 'nowhere'}"


def test_reproduce_offline_without_data_ends_with_the_message_alone(tmp_path):
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("CHEST_XRAY_DIR", "NO_PROXY", "no_proxy")}
    env.update({name: DEAD_PROXY for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")})
    env.update(PIP_NO_INDEX="1",  # the venv is already set up: pip checks it without the network
               KAGGLEHUB_CACHE=str(tmp_path / "kagglehub"))  # no cached copy of the data set either
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "reproduce.sh")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Could not download the Kaggle data set"), output
    assert "CHEST_XRAY_DIR" in last and "kaggle.com/datasets" in last  # says how to provide the data
    assert "== data_visualization" not in result.stdout  # stopped before the notebooks


def _tf_noise_pattern(script: Path) -> str:
    """The TF_NOISE filter pattern a script builds, as bash builds it."""
    import subprocess

    lines = [line for line in script.read_text().splitlines() if line.startswith("TF_NOISE")]
    assert lines, f"{script} defines no TF_NOISE"
    return subprocess.run(["bash", "-c", "\n".join(lines) + '\nprintf %s "$TF_NOISE"'],
                          capture_output=True, text=True, check=True).stdout


def test_console_filter_drops_the_tensorflow_start_up_lines_and_keeps_real_errors():
    import subprocess

    pattern = _tf_noise_pattern(REPO_ROOT / "scripts" / "tf_noise.sh")
    for script in ("reproduce.sh", "test.sh"):  # both use the one definition
        assert "source scripts/tf_noise.sh" in (REPO_ROOT / "scripts" / script).read_text(), script
    noise = [  # as TensorFlow 2.21 and ipykernel print them on a CPU-only machine
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1795954795.590945   16444 port.cc:153] oneDNN custom operations are on. You may see "
        "slightly different numerical results due to floating-point round-off errors.",
        "I0000 00:00:1795954795.591236   16444 cudart_stub.cc:31] Could not find cuda drivers on your machine, "
        "GPU will not be used.",
        "E0000 00:00:1795954801.058101   16444 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
        "Failed call to cuInit: UNKNOWN ERROR (303)",
        "\rExecuting:   0%|          | 0/32 [00:00<?, ?cell/s][IPKernelApp] WARNING | Kernel is running over "
        "TCP without encryption. All communication is sent in plain text.",
        "E0000 00:00:1796704229.247648   19075 node_def_util.cc:682] NodeDef mentions attribute "
        "use_unbounded_threadpool which is not in the op definition: Op<name=MapDataset; signature=...> This may "
        "be expected if your graph generating binary is newer  than this binary. Unknown attributes will be ignored.",
    ]
    kept = [
        "Traceback (most recent call last):",
        "RuntimeError: Could not find the data",
        "E0000 00:00:1795954801.058101   16444 cuda_dnn.cc:8579] Unable to register cuDNN factory",
        "E0000 00:00:1796704229.247648   19075 node_def_util.cc:682] NodeDef mentions attribute other_attr which",
        "W0000 00:00:1795954801.058101   16444 some_op.cc:1] a real warning",
        "UserWarning: oneDNN custom operations are on (a Python warning quoting the text)",
    ]
    filtered = subprocess.run(["grep", "-v", "-E", pattern], input="\n".join(noise + kept) + "\n",
                              capture_output=True, text=True).stdout
    assert filtered.splitlines() == kept


def test_committed_data_notebook_renders_without_noise_and_ends_with_generated_findings():
    path = REPO_ROOT / "data_visualization.ipynb"
    assert path.stat().st_size <= 2.5e6, f"{path.name} is {path.stat().st_size / 1e6:.1f} MB"
    notebook = json.loads(path.read_text())
    streams = [output for cell in notebook["cells"] for output in cell.get("outputs", [])
               if output.get("output_type") == "stream" and output.get("name") == "stderr"]
    assert not streams, "".join("".join(s["text"]) for s in streams)[:500]  # no font fallbacks, no logs
    markdown_cells = [i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "markdown"]
    findings = next(i for i in markdown_cells if "".join(notebook["cells"][i]["source"]).startswith("## Findings"))
    last = notebook["cells"][-1]
    assert findings == len(notebook["cells"]) - 2 and last["cell_type"] == "code"
    assert "data_findings" in "".join(last["source"])
    shown = "".join(last["outputs"][0]["data"]["text/markdown"]) if last.get("outputs") else ""
    assert shown.startswith("- **Imbalance.**")  # executed: the findings are generated, not typed
