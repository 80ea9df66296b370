"""The Flask app through Flask's test client: every route, every kind of bad input, image modes,
full-size vs 224 px uploads, in-memory processing. One tiny Keras model serves the whole file."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import build_tiny_model
from PIL import Image, ImageOps

import app as app_package
import pneumonia_cxr as pcx
from app import ModelNotFoundError, create_app

REPO = Path(__file__).resolve().parent.parent

DATA_ROOT = Path(os.environ.get("CHEST_XRAY_DATA_ROOT", REPO.parent / "shared" / "data"))
FULLSIZE = DATA_ROOT / "chest_xray_fullsize_sample"
SMALL = DATA_ROOT / "chest_xray_224"
RESULT_KEYS = {"label", "probability", "threshold", "model", "heatmap_png"}


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------
def fullsize_pairs(split: str = "test", limit: int | None = None) -> list[tuple[Path, Path]]:
    """(full-size original, its 224 px copy) pairs of one split, both classes, sorted."""
    pairs = pcx.evaluation.fullsize_copy_pairs(FULLSIZE, SMALL, splits=(split,))
    return pairs[:limit] if limit else pairs


def reference_input(copy: Path) -> np.ndarray:
    """Model input (1, 224, 224, 3) of a 224 px copy computed without the app's or the package's
    decoding and resizing: the copy is already 224 x 224, so it is its pixels / 255."""
    with Image.open(copy) as image:
        return np.asarray(image.convert("RGB"), np.float32)[None] / 255.0


def calibrate(model, copies: list[Path]) -> None:
    """Spread the tiny model's outputs over both classes on real X-rays (else every probability is
    about 0.5): scale its output layer so that the logits of ``copies`` have std 2 around a decision
    boundary at their median, as a trained model separates cases. Called with train-split copies;
    the tests check test-split pairs, so the boundary is not placed to suit the pairs checked."""
    import keras

    features = keras.Model(model.inputs, model.get_layer("pool").output)
    pooled = np.concatenate([np.asarray(features(reference_input(copy))) for copy in copies])
    kernel, _ = model.get_layer("output").get_weights()
    logits = (pooled @ kernel).ravel()
    scale = 2.0 / max(float(logits.std()), 1e-6)
    model.get_layer("output").set_weights([kernel * scale, np.array([-np.median(logits) * scale], np.float32)])


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    model = build_tiny_model("tiny_test_cnn")
    calibration = fullsize_pairs("train", limit=60)
    if len(calibration) >= 20:
        calibrate(model, [copy for _, copy in calibration])
    return pcx.models.save_model_bundle(model, tmp_path_factory.mktemp("models"), {"threshold": 0.5})


@pytest.fixture(scope="module")
def app(model_path):
    application = create_app(model_path)
    application.config["TESTING"] = True
    return application


@pytest.fixture()
def client(app):
    return app.test_client()


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def xray() -> Image.Image:
    """A grayscale X-ray (real when the data is at hand, else a synthetic gradient), 300 x 260."""
    pairs = fullsize_pairs()
    if pairs:
        return Image.open(pairs[0][0]).convert("L").resize((300, 260))
    ramp = np.linspace(0, 255, 300, dtype=np.float32)[None, :] * np.ones((260, 1), np.float32)
    return Image.fromarray(ramp.astype(np.uint8), "L")


@pytest.fixture(scope="module")
def jpeg_bytes(xray) -> bytes:
    return encode(xray.convert("RGB"), "JPEG", quality=90)


def post(client, data: bytes | None, filename: str = "upload.jpg", path: str = "/api/predict", field="file"):
    form = {} if data is None else {field: (io.BytesIO(data), filename)}
    return client.post(path, data=form, content_type="multipart/form-data")


def assert_error(response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.data[:300]
    assert response.is_json, response.data[:300]
    body = response.get_json()
    assert set(body) == {"error"}
    for fragment in fragments:
        assert fragment.lower() in body["error"].lower(), body["error"]
    return body["error"]


def assert_prediction(response, size: tuple[int, int] | None = None) -> dict:
    assert response.status_code == 200, response.data[:300]
    body = response.get_json()
    assert set(body) == RESULT_KEYS
    assert body["label"] in ("NORMAL", "PNEUMONIA")
    assert 0.0 <= body["probability"] <= 1.0
    assert body["label"] == ("PNEUMONIA" if body["probability"] >= body["threshold"] else "NORMAL")
    assert body["threshold"] == 0.5 and body["model"] == "tiny_test_cnn"
    overlay = Image.open(io.BytesIO(base64.b64decode(body["heatmap_png"], validate=True)))
    assert overlay.format == "PNG" and overlay.mode == "RGB"
    if size is not None:
        assert overlay.size == size  # the overlay is drawn at the upload's own resolution
    return body


# ----------------------------------------------------------------------------------------------
# Routes
# ----------------------------------------------------------------------------------------------
def test_healthz_names_the_model(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "model": "tiny_test_cnn", "threshold": 0.5}


def test_index_page_has_form_notice_and_no_cdn(client):
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in page and 'name="file"' in page
    assert "not a diagnostic device" in page and "tiny_test_cnn" in page
    assert "http://" not in page and "https://" not in page  # everything is served locally
    for asset in ("/static/style.css", "/static/app.js"):
        assert client.get(asset).status_code == 200


def test_api_predict_returns_label_probability_threshold_model_overlay(client, jpeg_bytes):
    assert_prediction(post(client, jpeg_bytes), size=(300, 260))


def test_prediction_is_deterministic_and_matches_module(client, app, jpeg_bytes):
    first = post(client, jpeg_bytes).get_json()
    second = post(client, jpeg_bytes).get_json()
    assert first == second
    predictor = app.extensions["predictor"]
    _, model_input = pcx.images.load_image_for_model(jpeg_bytes)
    expected = float(np.asarray(predictor.model(model_input, training=False))[0, 0])
    assert first["probability"] == pytest.approx(expected, abs=1e-5)


def test_result_page_shows_images_label_probability_threshold_model(client, jpeg_bytes):
    response = post(client, jpeg_bytes, path="/predict")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    for element in ('id="original-image"', 'id="overlay-image"', 'id="label"', 'id="probability"',
                    'id="threshold"', 'id="model-name"'):
        assert element in page
    assert page.count("data:image/png;base64,") == 2
    assert "Probability of PNEUMONIA" in page and "0.500" in page and "tiny_test_cnn" in page
    assert "not a diagnostic device" in page


def test_result_page_bad_upload_shows_message_with_400(client):
    response = post(client, b"hello, I am text", filename="scan.jpg", path="/predict")
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert "not an image" in response.get_data(as_text=True)


def test_unknown_routes_and_methods_are_json(client):
    assert_error(client.get("/api/predict"), 405)
    assert client.get("/api/predict").headers["Allow"]
    assert_error(client.get("/api/nothing"), 404)
    assert_error(client.get("/nothing"), 404)
    assert_error(client.delete("/healthz"), 405)
    assert_error(client.get("/examples/secret.png"), 404)


# ----------------------------------------------------------------------------------------------
# Bad inputs: status and message, and the app keeps serving
# ----------------------------------------------------------------------------------------------
def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG whose header declares width x height RGB pixels, followed by ``idat``."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def zlib_bomb_png(side: int) -> bytes:
    """A valid all-black side x side RGB PNG: side**2 * 3 bytes once decoded, a few hundred KB."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * side)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return png_declaring(side, side, idat)


BAD_INPUTS = {
    "empty file": (b"", 400, ("empty",)),
    "text file named .jpg": (b"patient: anonymous\nthis is not an image\n" * 20, 400, ("not an image",)),
    "random bytes": (np.random.default_rng(0).bytes(5000), 400, ("not an image",)),
    "JPEG header then garbage": (b"\xff\xd8\xff\xe0" + b"\x13" * 4000, 400, ("upload:",)),
    "PNG declaring 100000 x 100000 pixels": (png_declaring(100_000, 100_000), 400, ("too large",)),
    "PNG declaring 8000 x 8000 pixels": (png_declaring(8000, 8000), 400, ("too large",)),
}


def ico_holding_png(stated_side: int, png: bytes) -> bytes:
    """An ICO whose one entry states stated_side x stated_side pixels and holds ``png``, whatever its size."""
    entry = struct.pack("<BBBBHHII", stated_side, stated_side, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


OTHER_FORMAT = ("not an image of an accepted format", "PNG, JPEG, TIFF, BMP, GIF, WEBP")
BAD_INPUTS = {
    **BAD_INPUTS,
    "PNG declaring 4001 x 4000 pixels (just over the limit)": (png_declaring(4001, 4000), 400, ("too large", "16 megapixels")),
    "DDS": (encode(Image.new("RGB", (8, 8)), "DDS"), 400, OTHER_FORMAT),
    "ICO": (encode(Image.new("RGB", (32, 32)), "ICO"), 400, OTHER_FORMAT),
    "ICO stating 16 x 16 pixels, holding a 640 x 480 PNG": (
        ico_holding_png(16, encode(Image.new("L", (640, 480)))), 400, OTHER_FORMAT),
    "PNG of 20000 x 1 pixels (too elongated)": (
        encode(Image.new("L", (20_000, 1))), 400, ("too elongated", "20000x1", "20,000.0", "at most 8")),
    "PNG declaring 1 x 16000000 pixels, no pixel data (refused from the header)": (
        png_declaring(1, 16_000_000), 400, ("too elongated", "1x16000000", "at most 8")),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_upload_is_400_with_message(client, name):
    data, status, fragments = BAD_INPUTS[name]
    assert_error(post(client, data), status, *fragments)


def test_truncated_jpeg_is_400(client, jpeg_bytes):
    assert_error(post(client, jpeg_bytes[: len(jpeg_bytes) // 2]), 400, "truncated")


def test_decompression_bomb_is_400(client):
    assert_error(post(client, zlib_bomb_png(8000)), 400, "too large", "8000x8000")


def test_decompression_bomb_is_refused_before_decoding():
    """The pixel-count check runs before the pixels are decoded: refusing a 192 MB bomb must
    not raise the peak memory of a fresh process by more than a few tens of MB."""
    code = f"""
import resource, sys
import pneumonia_cxr as pcx
data = open(sys.argv[1], 'rb').read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    pcx.images.decode_image_bytes(data, 'bomb')
    print('DECODED')
except pcx.common.ImageDecodeError as error:
    print('REFUSED', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, error)
"""
    with tempfile.TemporaryDirectory() as folder:
        bomb = Path(folder) / "bomb.png"
        bomb.write_bytes(zlib_bomb_png(8000))
        output = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True,
                                text=True, timeout=120).stdout
    assert output.startswith("REFUSED"), output
    grown_kb = int(output.split()[1])
    assert grown_kb < 50_000, output


@pytest.mark.parametrize("error", [struct.error("unpack requires a buffer of 4 bytes"), EOFError(),
                                   OSError("broken data stream"), ValueError("tile cannot extend outside image"),
                                   IndexError("index out of range"), SyntaxError("not a TIFF file"),
                                   NotImplementedError("Unknown pixel format")])
def test_any_decoder_failure_is_400_never_500(client, jpeg_bytes, monkeypatch, error):
    """Whatever Pillow raises while decoding the upload's bytes is a 400 naming the problem."""
    from PIL import ImageFile

    def fail(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    message = assert_error(post(client, jpeg_bytes), 400, "upload:", "corrupt, truncated or unsupported")
    assert type(error).__name__ in message


def test_missing_file_field_is_400(client, jpeg_bytes):
    assert_error(post(client, None), 400, "field 'file'")
    assert_error(post(client, jpeg_bytes, field="image"), 400, "field 'file'")
    assert_error(client.post("/api/predict", data=jpeg_bytes, content_type="image/jpeg"), 400, "field 'file'")


def test_oversized_upload_is_413(app, client):
    limit = app.config["MAX_CONTENT_LENGTH"]
    assert limit == 20 * 2 ** 20
    assert_error(post(client, b"\xff\xd8" + b"\x00" * limit), 413, "too large", "20 MB")
    response = post(client, b"\xff\xd8" + b"\x00" * limit, path="/predict")
    assert response.status_code == 413 and "too large" in response.get_data(as_text=True)


def test_keeps_serving_after_bad_requests(client, jpeg_bytes):
    for data, _, _ in BAD_INPUTS.values():
        post(client, data)
    post(client, jpeg_bytes[:100])
    assert_prediction(post(client, jpeg_bytes))
    assert client.get("/healthz").status_code == 200


# ----------------------------------------------------------------------------------------------
# Image kinds: all decoded from content, whatever the name says
# ----------------------------------------------------------------------------------------------
def image_kinds(xray: Image.Image) -> dict[str, bytes]:
    rgb = xray.convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    palette_transparent = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette_transparent.info["transparency"] = 0
    sixteen = Image.fromarray(twelve_bit_content(xray))
    thirty_two = Image.fromarray(twelve_bit_content(xray).astype(np.int32))  # mode "I"
    rotated = encode(rgb, "JPEG", exif=_exif_rotation(6))
    return {
        "grayscale PNG": encode(xray),
        "grayscale JPEG": encode(xray, "JPEG"),
        "RGB PNG": encode(rgb),
        "RGBA PNG": encode(rgba),
        "grayscale+alpha PNG": encode(xray.convert("LA")),
        "palette PNG": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)),
        "palette PNG with transparency": encode(palette_transparent, transparency=0),
        "CMYK JPEG": encode(rgb.convert("CMYK"), "JPEG"),
        "16-bit grayscale PNG": encode(sixteen),
        "16-bit TIFF": encode(sixteen, "TIFF"),
        "32-bit integer TIFF": encode(thirty_two, "TIFF"),
        "1-bit PNG": encode(xray.convert("1")),
        "BMP": encode(rgb, "BMP"),
        "GIF": encode(rgb, "GIF"),
        "WebP": encode(rgb, "WEBP"),
        "EXIF-rotated JPEG": rotated,
    }


def twelve_bit_content(xray: Image.Image) -> np.ndarray:
    """uint16 (H, W) with 12-bit content (1000..3040), as many X-ray detectors give: the X-ray's grey
    levels stretched to 0..255 (autocontrast), times 8, plus 1000. Only scaling by the actual range
    (min -> 0, max -> 255) gives back the 8-bit image; dividing by the maximum does not."""
    return np.asarray(ImageOps.autocontrast(xray), np.uint16) * 8 + 1000


def _exif_rotation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def test_every_image_kind_is_accepted(client, xray):
    kinds = image_kinds(xray)
    for name, data in kinds.items():
        # the client's file name and type are ignored: everything is sent as "scan.txt"
        size = (260, 300) if name == "EXIF-rotated JPEG" else (300, 260)
        assert_prediction(post(client, data, filename="scan.txt"), size=size)
    # 16- and 32-bit images are scaled by their actual range: 1000..3040 content is the 8-bit image
    eight_bit = post(client, encode(ImageOps.autocontrast(xray))).get_json()
    for name in ("16-bit grayscale PNG", "16-bit TIFF", "32-bit integer TIFF"):
        assert post(client, kinds[name]).get_json()["probability"] == eight_bit["probability"], name


def test_large_upload_is_shown_smaller_and_scored_at_full_resolution(client, app, xray):
    """A 4000 x 3000 upload (12 MP, allowed): the overlay is DISPLAY_MAX_SIDE px on its long side,
    aspect ratio kept; the probability is the model's on the full-resolution decode resized to 224,
    as for any upload."""
    large = xray.resize((4000, 3000), Image.Resampling.BICUBIC)
    data = encode(large, "JPEG", quality=90)
    side = app_package.DISPLAY_MAX_SIDE
    body = assert_prediction(post(client, data), size=(side, side * 3 // 4))
    expected = np.asarray(app.extensions["predictor"].model(pcx.images.load_image_for_model(data)[1], training=False))
    assert body["probability"] == pytest.approx(float(expected[0, 0]), abs=1e-5)


def test_overlay_colours_are_matplotlibs_jet():
    from matplotlib import colormaps

    expected = colormaps["jet"](np.linspace(0, 1, 256), bytes=True)[:, :3]
    np.testing.assert_array_equal(np.array(pcx.overlay.JET_PALETTE).T, expected)


def test_overlay_blends_in_uint8_at_the_images_size():
    image = np.full((30, 50, 3), 200, np.uint8)
    heatmap = np.zeros((7, 7), np.float32)
    heatmap[:, 4:] = 1.0
    np.testing.assert_array_equal(pcx.overlay.draw_overlay(image, heatmap, alpha=0.0), image)
    coloured = pcx.overlay.draw_overlay(image, heatmap, alpha=1.0)
    assert coloured.dtype == np.uint8 and coloured.shape == image.shape
    palette = np.array(pcx.overlay.JET_PALETTE).T  # (256, 3)
    assert (coloured[:, 0] == palette[0]).all() and (coloured[:, -1] == palette[255]).all()
    blended = pcx.overlay.draw_overlay(image, heatmap, alpha=0.4)
    assert np.abs(blended[:, 0] - (0.6 * 200 + 0.4 * palette[0])).max() <= 1


def test_model_and_explainer_are_built_once_per_process(model_path, jpeg_bytes, monkeypatch):
    built = []
    original = pcx.gradcam.GradCamExplainer

    def counting(*args, **kwargs):
        built.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(pcx.gradcam, "GradCamExplainer", counting)
    client = create_app(model_path).test_client()
    for _ in range(3):
        assert post(client, jpeg_bytes).status_code == 200
    assert len(built) == 1


@pytest.mark.parametrize("variable, value", [("IMAGE_SLOTS", "0"), ("IMAGE_SLOTS", "0.5"), ("IMAGE_SLOTS", "many"),
                                             ("MAX_UPLOAD_MB", "-5"), ("MAX_UPLOAD_MB", "lots")])
def test_bad_settings_are_clear_errors(model_path, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=rf"\${variable} must be a positive .*number of .*got '{value}'"):
        create_app(model_path)


def test_client_file_name_is_never_used(client, jpeg_bytes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    response = post(client, jpeg_bytes, filename="../../../../tmp/evil<script>.png")
    body = assert_prediction(response)
    assert "evil" not in json.dumps({key: value for key, value in body.items() if key != "heatmap_png"})
    page = post(client, jpeg_bytes, filename="evil<script>.png", path="/predict").get_data(as_text=True)
    assert "evil&lt;script" not in page and "evil<script" not in page  # never in base64 either
    assert list(tmp_path.iterdir()) == []


def test_uploads_stay_in_memory(client, xray, monkeypatch):
    """A 2 MB upload (Werkzeug spools > 500 KB to a temporary file by default) touches no file."""
    def refuse(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    import werkzeug.formparser

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, refuse)
        if hasattr(werkzeug.formparser, name):
            monkeypatch.setattr(werkzeug.formparser, name, refuse)
    noisy = np.random.default_rng(1).integers(0, 256, (900, 800, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noisy))
    assert len(data) > 2 * 2 ** 20
    assert_prediction(post(client, data), size=(800, 900))


def test_upload_reaches_the_decoder_without_a_copy(app, client, xray, monkeypatch):
    """The bytes decoded are the in-memory stream's own buffer, not a copy of it (``read()`` makes
    one: up to MAX_UPLOAD_MB more per request, outside the image slots)."""
    streams, same_buffer = [], []

    def stream(self, *args, **kwargs):
        streams.append(io.BytesIO())
        return streams[-1]

    predictor = app.extensions["predictor"]
    predict = predictor.predict

    def checked_predict(data, source="upload"):
        same_buffer.append(data is streams[-1].getvalue())
        return predict(data, source)

    monkeypatch.setattr(app_package.InMemoryRequest, "_get_file_stream", stream)
    monkeypatch.setattr(predictor, "predict", checked_predict)
    assert_prediction(post(client, encode(xray)))
    assert same_buffer == [True]


# ----------------------------------------------------------------------------------------------
# Same preprocessing as training: full-size original and its 224 px copy
# ----------------------------------------------------------------------------------------------
def compare_fullsize_and_224(client, pairs, max_gap: float, model=None) -> list[str]:
    """Labels of each pair agree; probabilities differ by at most max_gap. With ``model``, the 224
    px upload must also give exactly the probability of :func:`reference_input` (independent of
    the app's decoding) and the full-size upload one within max_gap of it. Returns the labels."""
    labels = []
    for original, copy in pairs:
        full = assert_prediction_any(post(client, original.read_bytes()))
        small = assert_prediction_any(post(client, copy.read_bytes()))
        assert abs(full["probability"] - small["probability"]) <= max_gap, (original.name, full, small)
        assert full["label"] == small["label"], (original.name, full["probability"], small["probability"])
        if model is not None:
            reference = float(np.asarray(model(reference_input(copy), training=False))[0, 0])
            assert small["probability"] == pytest.approx(reference, abs=1e-5), (copy.name, small, reference)
            assert abs(full["probability"] - reference) <= max_gap, (original.name, full, reference)
        labels.append(full["label"])
    return labels


def assert_prediction_any(response) -> dict:
    assert response.status_code == 200, response.data[:300]
    body = response.get_json()
    return {key: body[key] for key in ("label", "probability", "threshold")}


@pytest.mark.skipif(not FULLSIZE.is_dir() or not SMALL.is_dir(), reason=f"data not found in {DATA_ROOT}")
def test_fullsize_and_224_copy_give_the_same_label(client, app):
    pairs = fullsize_pairs()
    assert len(pairs) >= 4, f"too few full-size/224 pairs in {FULLSIZE}"
    labels = compare_fullsize_and_224(client, pairs, max_gap=0.15, model=app.extensions["predictor"].model)
    assert set(labels) == {"NORMAL", "PNEUMONIA"}  # the calibrated tiny model predicts both classes
    original = Image.open(pairs[0][0])
    assert max(original.size) > 400  # really full size


def trained_model() -> Path | None:
    """The app's default bundle in models/, when the model notebook has written its manifest."""
    try:
        return app_package.resolve_model_path()
    except (ModelNotFoundError, pcx.common.ManifestError):
        return None


@pytest.mark.skipif(trained_model() is None, reason="no trained model in models/ yet")
@pytest.mark.skipif(not FULLSIZE.is_dir() or not SMALL.is_dir(), reason=f"data not found in {DATA_ROOT}")
def test_trained_model_gives_the_same_label_for_fullsize_and_224():
    client = create_app(trained_model()).test_client()
    compare_fullsize_and_224(client, fullsize_pairs(limit=6), max_gap=0.15)  # measured: results/train_serve_consistency.json


# ----------------------------------------------------------------------------------------------
# Example images, model resolution, command line
# ----------------------------------------------------------------------------------------------
def test_examples_section_hidden_without_examples(app, client, tmp_path):
    app.config["EXAMPLES_DIR"] = tmp_path
    try:
        (tmp_path / "class_balance.png").write_bytes(encode(Image.new("RGB", (10, 10))))  # a plot
        assert 'id="examples"' not in client.get("/").get_data(as_text=True)
    finally:
        app.config["EXAMPLES_DIR"] = app_package.EXAMPLES_DIR


def test_examples_are_listed_served_and_analysed_in_one_click(app, client, tmp_path, xray):
    app.config["EXAMPLES_DIR"] = tmp_path
    try:
        (tmp_path / "example_normal.png").write_bytes(encode(xray))
        (tmp_path / "example_pneumonia.png").write_bytes(encode(xray.convert("RGB")))
        page = client.get("/").get_data(as_text=True)
        assert 'id="examples"' in page and "example_normal.png" in page and "example_pneumonia.png" in page
        served = client.get("/examples/example_normal.png")
        assert served.status_code == 200 and served.mimetype == "image/png"
        result = client.post("/predict", data={"example": "example_normal.png"})
        assert result.status_code == 200 and 'id="overlay-image"' in result.get_data(as_text=True)
        refused = client.post("/predict", data={"example": "../functions_for_grad_cam.py"})
        assert refused.status_code == 400 and "Unknown example" in refused.get_data(as_text=True)
        assert client.get("/examples/..%2Ffunctions_for_grad_cam.py").status_code == 404
    finally:
        app.config["EXAMPLES_DIR"] = app_package.EXAMPLES_DIR


def copy_bundle(model_path: Path, folder: Path, name: str, **metadata) -> Path:
    """A copy of the bundle ``model_path`` as ``folder/<name>.keras`` whose metadata names it
    ``name`` (plus ``metadata``)."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{name}.keras"
    shutil.copy(model_path, copy)
    sidecar = json.loads(model_path.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(json.dumps({**sidecar, "model_name": name, **metadata}))
    return copy


@pytest.fixture()
def manifest_models(model_path, tmp_path, monkeypatch) -> Path:
    """The app's models folder, patched to a temporary one: bundles ``first`` and ``second`` in the
    manifest (default ``second``), and a ``stray`` bundle left by an earlier run, which its
    metadata flags as the app's default with the best validation ROC-AUC."""
    models = tmp_path / "models"
    bundles = {name: copy_bundle(model_path, models, name) for name in ("first", "second")}
    copy_bundle(model_path, models, "stray", app_default=True, val_roc_auc=0.999)
    pcx.manifest.write_manifest(models, bundles, default="second", default_rule="test rule", run={"test": True})
    monkeypatch.setattr(app_package, "MODELS_DIR", models)
    monkeypatch.delenv("MODEL_PATH", raising=False)
    return models


def test_default_model_is_the_manifests(manifest_models, model_path, monkeypatch, tmp_path):
    resolve = app_package.resolve_model_path
    assert resolve() == manifest_models / "second.keras"
    assert create_app().extensions["predictor"].name == "second"
    assert resolve("first") == manifest_models / "first.keras"  # a bundle of the manifest, by name
    assert resolve(model_path) == model_path  # or any .keras path
    monkeypatch.setenv("MODEL_PATH", "first")
    assert resolve() == manifest_models / "first.keras"
    monkeypatch.setenv("MODEL_PATH", str(model_path))
    assert resolve() == model_path
    with pytest.raises(pcx.common.ManifestError, match="no bundle 'stray'"):
        resolve("stray")  # never a bundle the manifest does not list
    with pytest.raises(ModelNotFoundError, match="nowhere.keras"):
        resolve(tmp_path / "nowhere.keras")
    monkeypatch.setenv("MODEL_PATH", str(tmp_path / "gone.keras"))
    with pytest.raises(ModelNotFoundError, match=r"gone.keras.*MODEL_PATH"):
        create_app()


@pytest.mark.parametrize("damage, fragments", [
    (lambda models: (models / "second.keras").write_bytes(b"not the trained weights"), ("second.keras", "SHA-256")),
    (lambda models: (models / "first.json").unlink(), ("first.json", "missing")),
    (lambda models: (models / "manifest.json").unlink(), ("manifest.json", "not found")),
])
def test_app_refuses_to_start_when_manifest_and_files_disagree(manifest_models, damage, fragments):
    damage(manifest_models)
    with pytest.raises(pcx.common.ManifestError) as info:
        create_app()
    for fragment in (*fragments, "model_deep_learning.ipynb", "fetch_models.py"):
        assert fragment in str(info.value)


def test_not_a_model_is_a_clear_error(tmp_path):
    fake = tmp_path / "fake.keras"
    fake.write_text("not a model")
    with pytest.raises(ValueError, match="not a loadable Keras model"):
        create_app(fake)


def test_command_line_reports_a_missing_model(tmp_path):
    result = subprocess.run([sys.executable, "-m", "app", "--model", str(tmp_path / "missing.keras")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Model file not found" in result.stderr and "missing.keras" in result.stderr


def test_command_line_reports_an_unknown_bundle_name():
    result = subprocess.run([sys.executable, "-m", "app", "--model", "no_such_bundle"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "manifest.json" in result.stderr and result.stderr.count("\n") == 1, result.stderr


def test_metadata_threshold_is_used(tmp_path, model_path, client):
    """Two uploads with different probabilities; thresholds below, between and above them, from
    the bundle's metadata, must give labels (P, P), (N, P) and (N, N): no fixed threshold can."""
    uploads = {post(client, data).get_json()["probability"]: data
               for data in (original.read_bytes() for original, _ in fullsize_pairs()[:6])}
    probabilities = sorted(uploads)
    gap = int(np.argmax(np.diff(probabilities)))
    low, high = probabilities[gap], probabilities[gap + 1]
    assert high - low > 0.02, probabilities
    thresholds = {"below": low / 2, "between": (low + high) / 2, "above": (high + 1) / 2}
    expected = {"below": ["PNEUMONIA", "PNEUMONIA"], "between": ["NORMAL", "PNEUMONIA"], "above": ["NORMAL", "NORMAL"]}
    for where, threshold in thresholds.items():
        bundle = copy_bundle(model_path, tmp_path / where, "renamed_model", threshold=threshold)
        renamed = create_app(bundle).test_client()
        bodies = [post(renamed, uploads[probability]).get_json() for probability in (low, high)]
        assert [body["label"] for body in bodies] == expected[where], (where, threshold, bodies)
        assert all(body["threshold"] == threshold and body["model"] == "renamed_model" for body in bodies)
