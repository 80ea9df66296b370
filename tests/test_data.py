"""Data set location, layout checks, index, patient ids, split, class weights, decoding, tf.data."""
from __future__ import annotations

import io
import shutil
import struct
import warnings
import zlib
from pathlib import Path

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


def test_index_without_test_split_opens_no_test_file(fgc, make_kaggle_tree, monkeypatch):
    """A validation-only run indexes train and val only: no file under test/ is read."""
    root = make_kaggle_tree()
    opened = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: opened.append(self) or real_read_bytes(self))
    index = fgc.build_index(root, splits=("train", "val"))
    assert set(index["split"]) == {"train", "val"} and len(index) == 8
    assert opened and not [path for path in opened if "test" in path.relative_to(root).parts]
    split = fgc.patient_grouped_split(index, val_fraction=0.5, seed=0)
    assert "test" not in set(split["subset"])
    with pytest.raises(ValueError, match="tset"):
        fgc.build_index(root, splits=("train", "tset"))


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
        good = fgc.decodable(index)
    message = " ".join(str(w.message) for w in record)
    assert "IM-9998-0001.jpeg" in message and "notes.txt" in message and "2 file(s)" in message
    assert len(good) == 12
    assert not good["filename"].isin(["IM-9998-0001.jpeg", "notes.txt"]).any()
    assert list(good.index) == list(range(12))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(fgc.decodable(index, warn=False)) == 12


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
    again = fgc.patient_grouped_split(fgc.decodable(index_224, warn=False))
    assert (again["subset"] == split_224["subset"]).all()
    other = fgc.patient_grouped_split(fgc.decodable(index_224, warn=False), seed=7)
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


@pytest.mark.parametrize("dtype, fmt", [(np.uint16, "PNG"), (np.uint16, "TIFF"), (np.int32, "TIFF")])
def test_decode_16_and_32_bit_are_scaled_by_their_range(fgc, dtype, fmt):
    """12-bit content (100..4095) in a 16-bit (mode I;16) or 32-bit (mode I) image: min -> 0,
    max -> 255, linear between (not divided by 65535, which leaves it nearly black)."""
    array = np.full((30, 40), 100, dtype=dtype)
    array[:, 10:20] = 2048
    array[:, 20:] = 4095
    rgb = fgc.decode_image_bytes(_encode(Image.fromarray(array), fmt))
    assert rgb.dtype == np.uint8 and rgb.shape == (30, 40, 3)
    np.testing.assert_array_equal(rgb[0, [0, 15, 30]], [[0] * 3, [round(1948 * 255 / 3995)] * 3, [255] * 3])


def test_decode_constant_16_bit_image_is_black(fgc):
    rgb = fgc.decode_image_bytes(_encode(Image.fromarray(np.full((8, 8), 3000, np.uint16)), "PNG"))
    assert not rgb.any()


def test_decode_real_fullsize_jpeg(fgc, fullsize_dir):
    path = sorted((fullsize_dir / "train" / "PNEUMONIA").iterdir())[0]
    original, batch = fgc.load_image_for_model(path.read_bytes(), path.name)
    with Image.open(path) as image:
        assert original.shape == (image.height, image.width, 3)
    assert batch.shape == (1, 224, 224, 3) and batch.dtype == np.float32


@pytest.mark.parametrize("error", [struct.error("unpack requires a buffer of 2 bytes"), EOFError(),
                                   OSError("broken data stream"), NotImplementedError("Unknown pixel format")])
def test_decoder_failures_are_image_decode_errors(fgc, monkeypatch, error):
    """Whatever Pillow raises on malformed bytes (struct.error and EOFError included) is an
    ImageDecodeError naming the source and the exception."""
    from PIL import ImageFile

    def fail(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    with pytest.raises(fgc.ImageDecodeError, match=rf"scan.png: corrupt, truncated or unsupported image \({type(error).__name__}"):
        fgc.decode_image_bytes(jpeg_bytes(1), source="scan.png")


def test_decode_refuses_more_than_max_image_pixels_naming_the_limit(fgc):
    side = int(fgc.MAX_IMAGE_PIXELS ** 0.5) + 1
    with pytest.raises(fgc.ImageDecodeError, match=rf"{side}x{side}.*at most 16 megapixels"):
        fgc.decode_image_bytes(_encode(Image.new("L", (side, side)), "PNG"), source="big.png")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring width x height grey pixels and holding none (decoding it fails)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def test_decode_refuses_elongated_images_from_the_header(fgc):
    """1 x 16,000,000 is within the pixel cap, but resizing it would take ~43 GB: refused from the
    header (the PNG holds no pixels, so a check after decoding would report it corrupt instead)."""
    with pytest.raises(fgc.ImageDecodeError, match=r"thin.png: image too elongated \(1x16000000: long side / "
                                                   r"short side = 16,000,000.0; at most 8 is accepted"):
        fgc.decode_image_bytes(_png_header_only(1, 16_000_000), source="thin.png")


def test_decode_accepts_aspect_ratio_up_to_the_limit(fgc):
    assert fgc.MAX_ASPECT_RATIO == 8
    assert fgc.decode_image_bytes(_encode(Image.new("L", (80, 10)), "PNG")).shape == (10, 80, 3)
    assert fgc.decode_image_bytes(_encode(Image.new("L", (10, 80)), "PNG")).shape == (80, 10, 3)
    with pytest.raises(fgc.ImageDecodeError, match=r"81x10: long side / short side = 8.1; at most 8"):
        fgc.decode_image_bytes(_encode(Image.new("L", (81, 10)), "PNG"))


def test_decode_refuses_ico_holding_a_larger_image(fgc):
    """Pillow decodes an ICO's embedded PNG while opening it, whatever size the ICO states: only
    the formats of UPLOAD_FORMATS are opened at all."""
    png = _encode(Image.new("L", (640, 480)), "PNG")
    ico = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22) + png
    with pytest.raises(fgc.ImageDecodeError, match=r"icon: not an image of an accepted format .*"
                                                   r"accepted: PNG, JPEG, TIFF, BMP, GIF, WEBP"):
        fgc.decode_image_bytes(ico, source="icon")


def test_decode_rechecks_the_size_after_decoding(fgc, monkeypatch):
    """A decoder that finds more pixels than the header stated is caught after load()."""
    from PIL import ImageFile

    load = ImageFile.ImageFile.load

    def load_growing(self):
        pixels = load(self)
        self._size = (4001, 4000)
        return pixels

    monkeypatch.setattr(ImageFile.ImageFile, "load", load_growing)
    with pytest.raises(fgc.ImageDecodeError, match=r"4001x4000.*at most 16 megapixels"):
        fgc.decode_image_bytes(_encode(Image.new("L", (40, 30)), "PNG"))


def test_decode_changes_no_warning_filters(fgc, monkeypatch):
    """warnings.catch_warnings is not thread-safe (the app decodes in several threads): not used."""
    def refuse(*args, **kwargs):
        raise AssertionError("warnings.catch_warnings used while decoding")

    monkeypatch.setattr(warnings, "catch_warnings", refuse)
    assert fgc.decode_image_bytes(jpeg_bytes(4)).shape == (32, 40, 3)


def test_load_image_for_model_shrinks_only_the_shown_copy(fgc):
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (1000, 3000), dtype=np.uint8))
    data = _encode(image, "PNG")
    full, model_input = fgc.load_image_for_model(data)
    shown, same_input = fgc.load_image_for_model(data, display_max_side=1200)
    assert full.shape == (1000, 3000, 3) and shown.shape == (400, 1200, 3)
    np.testing.assert_array_equal(model_input, same_input)


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


# ----------------------------------------------------------------------------------------------
# Plain pipeline = preprocess_pixels; persistent decoded cache
# ----------------------------------------------------------------------------------------------
def _images(dataset) -> np.ndarray:
    """All images of a make_dataset (with or without targets), float32 (N, 224, 224, 3)."""
    batches = [b[0] if isinstance(b, tuple) else b for b in dataset.as_numpy_iterator()]
    return np.concatenate(batches)


def _reference(path) -> np.ndarray:
    """The pipeline's reference: preprocess_pixels of TensorFlow's RGB decode, float32 (224, 224, 3)."""
    import tensorflow as tf

    from pneumonia_cxr.images import preprocess_pixels

    image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
    return np.asarray(preprocess_pixels(image))


@pytest.fixture()
def mixed_files(tmp_path, sample_rows, fullsize_dir):
    """Copies in tmp of two 224 px X-rays (3-channel JPEGs of grey images), one full-size grey
    original, a colour PNG to be resized and a grey PNG of 224 x 224."""
    folder = tmp_path / "images"
    folder.mkdir()
    sources = sample_rows["path"].tolist()[:2] + [sorted((fullsize_dir / "test" / "NORMAL").iterdir())[0]]
    files = []
    for i, source in enumerate(sources):
        files.append(folder / f"xray{i}{Path(source).suffix}")
        shutil.copyfile(source, files[-1])
    colour = np.random.default_rng(5).integers(0, 256, (150, 260, 3), dtype=np.uint8)
    files.append(folder / "colour.png")
    files[-1].write_bytes(_encode(Image.fromarray(colour), "PNG"))
    files.append(folder / "grey224.png")
    files[-1].write_bytes(_encode(Image.fromarray(colour[:, :224, 0]).resize((224, 224)), "PNG"))
    return [str(f) for f in files]


def test_plain_pipeline_equals_preprocess_pixels(fgc, mixed_files):
    # skipping the identity resize of 224 px images and resizing grey images in one channel keep
    # every value bit for bit
    images = _images(fgc.make_dataset(mixed_files, batch_size=2, cache=False))
    for image, path in zip(images, mixed_files):
        np.testing.assert_array_equal(image, _reference(path))


def test_decoded_cache_equals_pipeline_without_it(fgc, mixed_files, tmp_path):
    targets = [0, 1, 0, 1, 1]
    plain = _images(fgc.make_dataset(mixed_files, targets, batch_size=2))
    for run in ("fills", "reads"):
        cached = fgc.make_dataset(mixed_files, targets, batch_size=2, decoded_cache_dir=tmp_path / "c")
        batches = list(cached.as_numpy_iterator())
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), np.float32(targets))
        images = np.concatenate([x for x, _ in batches])
        assert images.dtype == np.float32 and images.shape == (5, 224, 224, 3), run
        resized = [2, 3]  # the full-size X-ray and the colour PNG: rounded to uint8 once resized
        same = [i for i in range(5) if i not in resized]
        np.testing.assert_array_equal(images[same], plain[same])
        np.testing.assert_allclose(images[resized], plain[resized], atol=0.5 / 255 + 1e-6, rtol=0)


def test_decoded_cache_all_grey_same_as_without(fgc, sample_rows, tmp_path):
    # the 224 px set: every entry grey, so batches are made RGB batch by batch (also when shuffled)
    paths, targets = sample_rows["path"].tolist(), sample_rows["target"].tolist()
    for shuffle in (False, True):
        without = fgc.make_dataset(paths, targets, 3, shuffle=shuffle, seed=4)
        plain = [list(without.as_numpy_iterator()) for epoch in range(2)]  # reshuffled every epoch
        for run in ("fills", "reads"):
            dataset = fgc.make_dataset(paths, targets, 3, shuffle=shuffle, seed=4, decoded_cache_dir=tmp_path)
            for epoch in range(2):
                cached = list(dataset.as_numpy_iterator())
                for (x0, y0), (x1, y1) in zip(plain[epoch], cached, strict=True):
                    np.testing.assert_array_equal(x0, x1)
                    np.testing.assert_array_equal(y0, y1)


def test_decoded_cache_stores_grey_as_one_channel(fgc, mixed_files, tmp_path):
    entries = fgc.fill_decoded_cache(mixed_files, tmp_path)
    stored = [fgc.read_decoded_entry(entry) for entry in entries]
    assert [s.shape[2] for s in stored] == [1, 1, 1, 3, 1]
    assert all(s.dtype == np.uint8 and s.shape[:2] == (224, 224) for s in stored)
    for i in (0, 1, 4):  # images of 224 px: the stored grey expands to the fresh RGB decode exactly
        np.testing.assert_array_equal(np.repeat(stored[i], 3, axis=2) / np.float32(255), _reference(mixed_files[i]))
        assert entries[i].stat().st_size == 32 + 224 * 224


def test_decoded_cache_is_keyed_by_content(fgc, sample_rows, tmp_path):
    first, second = sample_rows["path"].tolist()[:2]
    copies = [tmp_path / "a.jpeg", tmp_path / "same_bytes_other_name.jpeg", tmp_path / "other.jpeg"]
    for copy, source in zip(copies, (first, first, second)):
        shutil.copyfile(source, copy)
    cache = tmp_path / "cache"
    entries = fgc.fill_decoded_cache([str(c) for c in copies], cache)
    assert entries[0] == entries[1] != entries[2]
    assert sorted(cache.rglob("*.u8")) == sorted({entries[0], entries[2]})
    assert fgc.decoded_cache_folder(cache).name.startswith(fgc.PIPELINE_VERSION)
    assert not list(cache.rglob("*.tmp"))  # written through temporary files, all renamed


def test_decoded_cache_changed_file_gets_a_new_entry(fgc, sample_rows, tmp_path):
    first, second = sample_rows["path"].tolist()[:2]
    path = tmp_path / "image.jpeg"
    shutil.copyfile(first, path)
    cache = tmp_path / "cache"
    before = _images(fgc.make_dataset([str(path)], decoded_cache_dir=cache))
    np.testing.assert_array_equal(before[0], _reference(first))
    shutil.copyfile(second, path)  # same name, new content
    after = _images(fgc.make_dataset([str(path)], decoded_cache_dir=cache))
    np.testing.assert_array_equal(after[0], _reference(second))
    assert len(list(cache.rglob("*.u8"))) == 2


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped_pixels", "wrong_header", "garbage"])
def test_decoded_cache_corrupt_entry_is_rebuilt(fgc, sample_rows, tmp_path, damage):
    paths = sample_rows["path"].tolist()[:3]
    entries = fgc.fill_decoded_cache(paths, tmp_path)
    good = entries[1].read_bytes()
    bad = {"truncated": good[: len(good) // 2], "empty": b"",
           "flipped_pixels": good[:1000] + bytes(255 - b for b in good[1000:1100]) + good[1100:],
           "wrong_header": good[:8] + b"\x00\x01" + good[10:],
           "garbage": np.random.default_rng(0).bytes(len(good))}[damage]
    assert len(bad) != len(good) or damage in ("flipped_pixels", "wrong_header", "garbage")
    entries[1].write_bytes(bad)
    assert fgc.read_decoded_entry(entries[1]) is None  # detected
    images = _images(fgc.make_dataset(paths, batch_size=2, cache=False, decoded_cache_dir=tmp_path))
    for image, path in zip(images, paths):  # never trusted: decoded again
        np.testing.assert_array_equal(image, _reference(path))
    assert entries[1].read_bytes() == good  # and rewritten


def test_decoded_cache_folder_from_environment(fgc, sample_rows, tmp_path, monkeypatch):
    paths = sample_rows["path"].tolist()[:2]
    monkeypatch.setenv(fgc.DECODED_CACHE_ENV_VAR, str(tmp_path / "env"))
    _images(fgc.make_dataset(paths, decoded_cache_dir=False))
    assert not (tmp_path / "env").exists()  # False turns it off
    _images(fgc.make_dataset(paths))
    assert len(list((tmp_path / "env").rglob("*.u8"))) == 2
    monkeypatch.delenv(fgc.DECODED_CACHE_ENV_VAR)
    _images(fgc.make_dataset(paths, decoded_cache_dir=tmp_path / "arg"))
    assert len(list((tmp_path / "arg").rglob("*.u8"))) == 2


def test_decoded_cache_names_missing_file(fgc, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jpeg"):
        fgc.make_dataset([str(tmp_path / "nowhere.jpeg")], decoded_cache_dir=tmp_path / "c")


def test_decoded_cache_corrupt_colour_entry_is_rebuilt(fgc, mixed_files, tmp_path):
    # mixed grey and colour entries take the per-image path: it checks and rebuilds too
    first = _images(fgc.make_dataset(mixed_files, batch_size=2, decoded_cache_dir=tmp_path))
    entries = fgc.decoded_cache_entries(mixed_files, tmp_path)
    good = entries[3].read_bytes()
    assert len(good) == 32 + 224 * 224 * 3
    entries[3].write_bytes(good[:5000] + bytes(255 - b for b in good[5000:5100]) + good[5100:])
    again = fgc.make_dataset(mixed_files, batch_size=2, decoded_cache_dir=tmp_path)
    assert again.element_spec.shape.as_list() == [None, 224, 224, 3]
    np.testing.assert_array_equal(_images(again), first)
    assert entries[3].read_bytes() == good


# ----------------------------------------------------------------------------------------------
# Pixel-space augmentation (one composed resampling) and the validation perturbations (perturb_images)
# ----------------------------------------------------------------------------------------------
PERTURBATION_KINDS = ("zoom", "low_contrast", "blur", "noise")


def _unit_batches(side: int = 64) -> list[np.ndarray]:
    """Two batches (3, side, side, 3) in [0, 1]: random pixels, with a half-white image and a half-black one."""
    rng = np.random.default_rng(0)
    first = rng.random((3, side, side, 3), dtype=np.float32)
    first[0, :, : side // 2] = 1.0
    first[1, : side // 2] = 0.0
    return [first, rng.random((3, side, side, 3), dtype=np.float32)]


@pytest.mark.parametrize("output_side", [128, 196])
def test_identity_resampling_is_the_models_centre_crop_and_resize(fgc, output_side):
    """The training views with no augmentation are exactly what the saved network's CenterCrop and
    Resizing layers compute, so training and serving see the same pixels."""
    import keras

    images = np.random.default_rng(1).random((2, 224, 224, 3)).astype(np.float32)
    layers = [keras.Input((224, 224, 3)), keras.layers.CenterCrop(196, 196)]
    if output_side != 196:
        layers.append(keras.layers.Resizing(output_side, output_side, interpolation="bilinear"))
    expected = keras.Sequential(layers)(images).numpy()
    got = fgc.augment_images(images, fgc.identity_augmentation(2), 196, output_side)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_scratch_cnn_crop_and_resize_layers_match_the_training_views(fgc):
    images = np.random.default_rng(2).random((3, 224, 224, 3)).astype(np.float32)
    model = fgc.build_scratch_cnn(input_size=128)
    preprocess = keras_prefix(model, "resize")
    np.testing.assert_allclose(preprocess(images), fgc.cropped_views(images, 128), atol=1e-5)


def keras_prefix(model, last_layer: str):
    import keras

    return lambda x: keras.Model(model.inputs[0], model.get_layer(last_layer).output)(x).numpy()


def test_augmentation_parameters_stay_in_their_declared_ranges(fgc):
    a = fgc.AUGMENTATION
    params = fgc.draw_augmentation(np.random.default_rng(0), 5000)
    zoom, shift, angle = params[:, :2], params[:, 2:4], params[:, 4]
    assert zoom.min() >= 1 - a["zoom"] and zoom.max() <= 1 and zoom.min() < 1 - a["zoom"] + 0.01
    assert np.abs(shift).max() <= a["translation"] and np.abs(angle).max() <= a["rotation"] * 2 * np.pi
    assert np.abs(params[:, 5]).max() <= a["brightness"]
    assert params[:, 6].min() >= 1 - a["contrast"] and params[:, 6].max() <= 1 + a["contrast"]
    assert params[:, 7].min() >= 1 / (1 + a["gamma"]) - 1e-9 and params[:, 7].max() <= 1 + a["gamma"] + 1e-9
    assert abs(np.corrcoef(zoom[:, 0], zoom[:, 1])[0, 1]) < 0.05  # the two axes are drawn independently


def test_augmentation_zooms_in_about_the_centre(fgc):
    """A zoom of 0.5 on both axes shows the central half of the window: a centred square of side 64 in a
    224 px image fills twice as many output pixels."""
    image = np.zeros((1, 224, 224, 1), np.float32)
    image[0, 80:144, 80:144] = 1.0
    params = fgc.identity_augmentation(1)
    plain = fgc.augment_images(image, params, 224, 224)[..., 0]
    params[0, :2] = 0.5
    zoomed = fgc.augment_images(image, params, 224, 224)[..., 0]
    assert plain.sum() == pytest.approx(64 * 64, rel=0.02) and zoomed.sum() == pytest.approx(4 * 64 * 64, rel=0.02)
    assert zoomed[0, 112, 112] == 1.0 and zoomed[0, 20, 20] == 0.0


def test_augmentation_colour_changes_and_grey_to_rgb(fgc):
    grey = np.full((1, 32, 32, 1), 128, np.uint8)
    params = fgc.identity_augmentation(1)
    params[0, 5], params[0, 7] = 0.1, 2.0  # brightness +0.1, then gamma 2 (contrast about the mean: no change here)
    out = fgc.augment_images(grey, params, 32, 32)
    assert out.shape == (1, 32, 32, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, (128 / 255 + 0.1) ** 2, rtol=1e-5)


def test_augmented_batches_are_seeded_per_epoch_and_batch(fgc):
    grey = (np.random.default_rng(3).random((10, 224, 224, 1)) * 255).astype(np.uint8)
    targets = np.arange(10) % 2
    first, again = (fgc.augmented_batches(grey, targets, 4, seed=0, input_size=64) for _ in range(2))
    x0, y0 = first[0]
    np.testing.assert_array_equal(x0, again[0][0])
    assert len(first) == 3 and x0.shape == (4, 64, 64, 3) and y0.dtype == np.float32
    first.on_epoch_end()
    assert not np.allclose(first[0][0], x0)  # a new epoch: a new order and new draws
    assert sorted(np.concatenate([first[i][1] for i in range(3)]).tolist()) == sorted(targets.astype(float).tolist())


def test_validation_perturbations_are_declared(fgc):
    assert set(fgc.VALIDATION_PERTURBATIONS) == set(PERTURBATION_KINDS)
    assert all(isinstance(text, str) and text for text in fgc.VALIDATION_PERTURBATIONS.values())


@pytest.mark.parametrize("kind", PERTURBATION_KINDS)
def test_perturb_images_is_deterministic_in_range_and_keeps_the_shape(fgc, kind):
    images = _unit_batches()[0]
    before = images.copy()
    out = fgc.perturb_images(images, kind, seed=5)
    assert out.shape == images.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, fgc.perturb_images(images, kind, seed=5))
    np.testing.assert_array_equal(images, before)  # the input is not modified
    assert not np.allclose(out[2], images[2], atol=0.01)  # a random image is changed
    other_seed = fgc.perturb_images(images, kind, seed=6)
    if kind == "noise":
        assert not np.array_equal(out, other_seed)
        grey = np.full((2, 64, 64, 3), 0.5, np.float32)
        noise = fgc.perturb_images(grey, kind) - 0.5
        assert noise.std() == pytest.approx(0.05, rel=0.1)
        np.testing.assert_array_equal(noise[..., 0], noise[..., 2])  # the same noise in every channel: still grey
    else:
        np.testing.assert_array_equal(out, other_seed)  # only the noise is drawn
    if kind == "low_contrast":
        np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), images.mean(axis=(1, 2, 3)), atol=1e-5)
        np.testing.assert_allclose(out.std(axis=(1, 2, 3)), images.std(axis=(1, 2, 3)) / 2, atol=1e-5)


def test_perturb_images_unknown_kind_names_the_kinds(fgc):
    with pytest.raises(ValueError) as info:
        fgc.perturb_images(np.zeros((1, 8, 8, 3), np.float32), "rotate")
    message = str(info.value)
    assert "'rotate'" in message and all(kind in message for kind in PERTURBATION_KINDS)
