"""Data set location, layout checks, index, patient ids, split, class weights, decoding, tf.data."""
from __future__ import annotations

import io
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes


# ----------------------------------------------------------------------------------------------
# Layout
# ----------------------------------------------------------------------------------------------
def test_valid_tree_is_accepted(fgc, make_kaggle_tree):
    root = make_kaggle_tree()
    assert fgc.find_dataset_root(root) == root
    fgc.validate_layout(root)  # no error


def test_missing_split_folder_is_named(fgc, make_kaggle_tree):
    root = make_kaggle_tree()
    shutil.rmtree(root / "test")
    with pytest.raises(fgc.DatasetLayoutError, match="test") as info:
        fgc.find_dataset_root(root)
    assert str(root) in str(info.value)
    with pytest.raises(fgc.DatasetLayoutError) as info:
        fgc.validate_layout(root)
    assert str(root / "test" / "NORMAL") in str(info.value)


def test_missing_class_folder_is_named(fgc, make_kaggle_tree):
    root = make_kaggle_tree()
    shutil.rmtree(root / "val" / "PNEUMONIA")
    with pytest.raises(fgc.DatasetLayoutError) as info:
        fgc.find_dataset_root(root)
    assert str(root / "val" / "PNEUMONIA") in str(info.value)
    assert "Missing" in str(info.value)


def test_empty_class_is_named(fgc, make_kaggle_tree):
    root = make_kaggle_tree()
    folder = root / "train" / "NORMAL"
    for path in folder.iterdir():
        path.unlink()
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # junk does not count as an image
    (folder / "._IM-0001-0001.jpeg").write_bytes(jpeg_bytes(1))  # AppleDouble junk either
    with pytest.raises(fgc.DatasetLayoutError, match="Empty class") as info:
        fgc.validate_layout(root)
    assert str(folder) in str(info.value)


def test_missing_data_folder(fgc, tmp_path):
    with pytest.raises(fgc.DatasetLayoutError, match="not found"):
        fgc.find_dataset_root(tmp_path / "nowhere")


def test_nested_kaggle_archive_with_junk_is_accepted(fgc, make_kaggle_tree):
    outer = make_kaggle_tree(nested=True)
    inner = outer / "chest_xray" / "chest_xray"
    # __MACOSX sorts before chest_xray and holds a split-like tree of AppleDouble files: it must be skipped
    for split in ("train", "val", "test"):
        for label in ("NORMAL", "PNEUMONIA"):
            junk = outer / "chest_xray" / "__MACOSX" / split / label
            junk.mkdir(parents=True)
            (junk / "._IM-0001-0001.jpeg").write_bytes(b"\0\5\26\7junk")
            (inner / split / label / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (outer / "chest_xray" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    assert fgc.find_dataset_root(outer) == inner
    assert fgc.find_dataset_root(outer / "chest_xray") == inner
    index = fgc.build_index(outer)
    assert len(index) == 12
    assert not index["filename"].str.startswith(".").any()
    assert (index["problem"] == "").all()


# ----------------------------------------------------------------------------------------------
# Index: unreadable and non-image files
# ----------------------------------------------------------------------------------------------
def test_unreadable_and_non_image_files_are_reported(fgc, make_kaggle_tree):
    root = make_kaggle_tree()
    folder = root / "train" / "NORMAL"
    (folder / "IM-9998-0001.jpeg").write_bytes(np.random.default_rng(0).bytes(500))
    (folder / "notes.txt").write_text("not an image")
    index = fgc.build_index(root)
    assert len(index) == 14  # 12 images + 2 bad files: counts keep them
    assert (index.groupby(["split", "label"]).size().drop(("train", "NORMAL")) == 2).all()
    assert (index.query("split == 'train' and label == 'NORMAL'").shape[0]) == 4
    bad = index.set_index("filename")["problem"]
    assert "unreadable" in bad["IM-9998-0001.jpeg"]
    assert "not an image" in bad["notes.txt"]
    assert (index[~index["filename"].isin(["IM-9998-0001.jpeg", "notes.txt"])]["problem"] == "").all()
    assert set(index.columns) >= {"path", "split", "label", "target", "filename", "patient_id", "width",
                                  "height", "channels", "file_bytes", "sha256", "problem"}

    with pytest.warns(UserWarning) as record:
        good = fgc.readable(index)
    message = " ".join(str(w.message) for w in record)
    assert "IM-9998-0001.jpeg" in message and "notes.txt" in message and "2 file(s)" in message
    assert len(good) == 12
    assert not good["filename"].isin(["IM-9998-0001.jpeg", "notes.txt"]).any()
    assert list(good.index) == list(range(12))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(fgc.readable(index, warn=False)) == 12


def test_index_of_224_set(index_224):
    counts = index_224.groupby(["split", "label"]).size().to_dict()
    assert counts == {("train", "NORMAL"): 1341, ("train", "PNEUMONIA"): 3875, ("val", "NORMAL"): 8,
                      ("val", "PNEUMONIA"): 8, ("test", "NORMAL"): 234, ("test", "PNEUMONIA"): 390}
    assert (index_224["problem"] == "").all()
    assert (index_224["width"] == 224).all() and (index_224["height"] == 224).all()
    assert ((index_224["label"] == "PNEUMONIA") == (index_224["target"] == 1)).all()
    for _, group in index_224.groupby(["split", "label"], sort=False):
        assert group["path"].tolist() == sorted(group["path"])


# ----------------------------------------------------------------------------------------------
# Patient ids
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("filename, expected", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person1000_virus_1681.jpeg", "person1000"),
    ("person1_bacteria_1.jpeg", "person1"),
    ("person1946_bacteria_4875.jpeg", "person1946"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("IM-0001-0001.jpeg", "IM-0001"),
    ("NORMAL2-IM-0383-0001.jpeg", "NORMAL2-IM-0383"),
    ("NORMAL2-IM-1427-0001.jpeg", "NORMAL2-IM-1427"),
    ("unknown_name.png", "unknown_name"),
])
def test_parse_patient_id(fgc, filename, expected):
    assert fgc.parse_patient_id(filename) == expected


def test_normal2_and_im_ids_are_distinct(fgc):
    assert fgc.parse_patient_id("NORMAL2-IM-0383-0001.jpeg") != fgc.parse_patient_id("IM-0383-0001.jpeg")


def test_every_file_of_224_set_parses(fgc, index_224):
    ids = index_224["patient_id"]
    assert ids.str.len().gt(0).all()
    stems = index_224["filename"].str.rsplit(".", n=1).str[0]
    assert (ids != stems).all(), "every official file name follows a known pattern"
    assert ids.nunique() < len(index_224)  # many patients have several images
    assert index_224.loc[index_224["target"] == 1, "patient_id"].str.match(r"^person\d+$").all()


# ----------------------------------------------------------------------------------------------
# Patient-grouped split
# ----------------------------------------------------------------------------------------------
def test_split_has_no_patient_overlap(split_224):
    subsets = {name: set(group["patient_id"]) for name, group in split_224.groupby("subset")}
    assert set(subsets) == {"train", "val", "test"}
    assert not subsets["train"] & subsets["val"]
    # The official test split is kept as it is (its person numbers recur in the official train
    # split, so train/val vs test cannot be checked by id); no file is in two subsets:
    assert split_224["path"].is_unique
    hashes = {name: set(group["sha256"]) for name, group in split_224.groupby("subset")}
    assert not hashes["test"] & (hashes["train"] | hashes["val"])


def test_split_has_no_duplicate_content_across_train_and_val(split_224):
    train = set(split_224.loc[split_224["subset"] == "train", "sha256"])
    val = set(split_224.loc[split_224["subset"] == "val", "sha256"])
    assert not train & val


def test_split_keeps_class_ratios_and_size(split_224):
    train = split_224[split_224["subset"] == "train"]
    val = split_224[split_224["subset"] == "val"]
    assert abs(val["target"].mean() - train["target"].mean()) < 0.03
    share = len(val) / (len(train) + len(val))
    assert 0.08 <= share <= 0.12
    assert val["target"].nunique() == 2


def test_split_is_reproducible(fgc, index_224, split_224):
    again = fgc.patient_grouped_split(fgc.readable(index_224, warn=False))
    assert (again["subset"] == split_224["subset"]).all()
    other = fgc.patient_grouped_split(fgc.readable(index_224, warn=False), seed=7)
    assert not (other["subset"] == split_224["subset"]).all()  # the seed matters


def test_split_keeps_official_test(split_224, index_224):
    assert ((split_224["split"] == "test") == (split_224["subset"] == "test")).all()
    assert (split_224.loc[split_224["subset"] == "test", "path"].tolist()
            == index_224.loc[index_224["split"] == "test", "path"].tolist())
    # official val images join the pool
    assert set(split_224.loc[split_224["split"] == "val", "subset"]) <= {"train", "val"}


# ----------------------------------------------------------------------------------------------
# Class weights
# ----------------------------------------------------------------------------------------------
def test_class_weights_known_vector(fgc):
    weights = fgc.compute_class_weights([0, 0, 0, 1])
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})
    weights = fgc.compute_class_weights([0] * 10 + [1] * 30)
    assert weights == pytest.approx({0: 2.0, 1: 40 / 60})
    assert set(weights) == {0, 1} and all(isinstance(v, float) for v in weights.values())


def test_class_weights_balance_totals(fgc, split_224):
    targets = split_224.loc[split_224["subset"] == "train", "target"].to_numpy()
    weights = fgc.compute_class_weights(targets)
    n0, n1 = np.sum(targets == 0), np.sum(targets == 1)
    assert weights[0] * n0 == pytest.approx(weights[1] * n1)
    assert weights[0] * n0 + weights[1] * n1 == pytest.approx(len(targets))
    assert weights[0] > 1 > weights[1]  # NORMAL is the minority class


# ----------------------------------------------------------------------------------------------
# tf.data pipeline
# ----------------------------------------------------------------------------------------------
def test_make_dataset_shapes_dtype_order(fgc, sample_rows):
    paths = sample_rows["path"].tolist()[:6]
    targets = sample_rows["target"].tolist()[:6]
    batches = list(fgc.make_dataset(paths, targets, batch_size=4).as_numpy_iterator())
    assert [b[0].shape for b in batches] == [(4, 224, 224, 3), (2, 224, 224, 3)]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.float32 and labels.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.max() > 0.5
    np.testing.assert_array_equal(labels, np.asarray(targets, np.float32))
    # order = paths: each element matches its own file decoded alone and with PIL
    for i, path in enumerate(paths):
        alone = fgc.load_images([path])
        np.testing.assert_allclose(images[i], alone[0], atol=1e-6)
        reference = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        assert np.abs(images[i] - reference).mean() < 0.02
        others = [j for j in range(len(paths)) if j != i]
        assert all(np.abs(images[j] - reference).mean() > 0.03 for j in others)


def test_make_dataset_is_deterministic_without_shuffle(fgc, sample_rows):
    paths = sample_rows["path"].tolist()
    first = np.concatenate(list(fgc.make_dataset(paths, batch_size=3, cache=False).as_numpy_iterator()))
    second = fgc.load_images(paths)
    assert first.shape == (8, 224, 224, 3)
    np.testing.assert_array_equal(first, second)


def test_load_images_fullsize_resized(fgc, fullsize_dir):
    paths = sorted(str(p) for p in (fullsize_dir / "test" / "NORMAL").iterdir())[:2]
    images = fgc.load_images(paths)
    assert images.shape == (2, 224, 224, 3) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0


# ----------------------------------------------------------------------------------------------
# Decoding of any image mode
# ----------------------------------------------------------------------------------------------
def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _check_model_input(fgc, data: bytes) -> np.ndarray:
    rgb = fgc.decode_image_bytes(data, "upload.png")
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    pixels = np.asarray(fgc.preprocess_pixels(rgb))
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.float32
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    return pixels


def test_decode_grayscale(fgc):
    pixels = _check_model_input(fgc, _encode(Image.new("L", (300, 200), 128), "PNG"))
    np.testing.assert_allclose(pixels, 128 / 255, atol=1e-5)


def test_decode_rgba_alpha_onto_black(fgc):
    image = Image.new("RGBA", (64, 48), (200, 100, 50, 255))
    image.paste((255, 255, 255, 0), (0, 0, 32, 48))  # left half fully transparent
    pixels = _check_model_input(fgc, _encode(image, "PNG"))
    np.testing.assert_allclose(pixels[:, :100], 0.0, atol=1e-6)
    assert np.abs(pixels[:, 130:] - np.array([200, 100, 50]) / 255).max() < 1e-5


def test_decode_palette(fgc):
    image = Image.new("P", (50, 50), 1)
    image.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pixels = _check_model_input(fgc, _encode(image, "PNG"))
    np.testing.assert_allclose(pixels[100, 100], np.array([10, 200, 30]) / 255, atol=1e-5)


def test_decode_cmyk(fgc):
    pixels = _check_model_input(fgc, _encode(Image.new("CMYK", (40, 40), (0, 0, 0, 0)), "JPEG"))
    assert pixels.mean() > 0.9  # no ink is white


def test_decode_16_bit(fgc):
    array = np.full((30, 40), 32768, dtype=np.uint16)
    array[:, 20:] = 65535
    pixels = _check_model_input(fgc, _encode(Image.fromarray(array), "PNG"))
    np.testing.assert_allclose(pixels[:, :100], 0.5, atol=0.01)
    np.testing.assert_allclose(pixels[:, 130:], 1.0, atol=1e-5)


def test_decode_real_fullsize_jpeg(fgc, fullsize_dir):
    path = sorted((fullsize_dir / "train" / "PNEUMONIA").iterdir())[0]
    original, batch = fgc.load_image_for_model(path.read_bytes(), path.name)
    with Image.open(path) as image:
        assert original.shape == (image.height, image.width, 3)
    assert batch.shape == (1, 224, 224, 3) and batch.dtype == np.float32


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "text"])
def test_decode_errors_name_the_source(fgc, kind):
    good = jpeg_bytes(3, (120, 100))
    data = {"empty": b"", "truncated": good[: len(good) // 2],
            "random": np.random.default_rng(1).bytes(2000),
            "text": b"Hello, this is a text file, not an X-ray.\n" * 10}[kind]
    with pytest.raises(fgc.ImageDecodeError) as info:
        fgc.decode_image_bytes(data, source="patient_upload.jpeg")
    assert "patient_upload.jpeg" in str(info.value)


# ----------------------------------------------------------------------------------------------
# Locating the data set when nothing is given
# ----------------------------------------------------------------------------------------------
def test_download_failure_says_how_to_provide_data(fgc, monkeypatch):
    import kagglehub

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    monkeypatch.delenv(fgc.DATA_ENV_VAR, raising=False)
    for call in (fgc.download_dataset, fgc.resolve_data_dir):
        with pytest.raises(RuntimeError) as info:
            call()
        assert "CHEST_XRAY_DIR" in str(info.value)
        assert "kaggle.com" in str(info.value)


def test_resolve_data_dir_prefers_argument_then_env(fgc, make_kaggle_tree, monkeypatch):
    import kagglehub

    monkeypatch.setattr(kagglehub, "dataset_download",
                        lambda *a, **k: pytest.fail("must not download when a folder is given"))
    root = make_kaggle_tree()
    other = make_kaggle_tree(nested=True)
    monkeypatch.setenv(fgc.DATA_ENV_VAR, str(other))
    assert fgc.resolve_data_dir() == other / "chest_xray" / "chest_xray"
    assert fgc.resolve_data_dir(root) == root
