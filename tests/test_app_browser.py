"""The web page in a real headless browser: Debian's Chromium driven by Playwright (no
``playwright install``: the system browser is used). Upload an image, see the prediction and
the Grad-CAM overlay; drag and drop; an example image in one click; a bad file's message; the
README screenshot's code path (scripts/app_screenshot.py), written to a temporary file only."""
from __future__ import annotations

import io
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from helpers import build_tiny_model
from PIL import Image

import app_screenshot  # scripts/app_screenshot.py: browser settings and the screenshot

REPO = Path(__file__).resolve().parent.parent

CHROMIUM, CHROMIUM_ARGS = app_screenshot.CHROMIUM, app_screenshot.CHROMIUM_ARGS
TIMEOUT_MS = 60_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"browser tests skipped: {CHROMIUM} not found; install Debian's chromium to run them "
           f"(sudo apt-get install -y chromium)")


def xray_png(width: int = 320, height: int = 280) -> bytes:
    """A smooth grayscale test picture (bright lungs-like blobs on dark), as PNG bytes."""
    yy, xx = np.mgrid[0:height, 0:width]
    blobs = sum(np.exp(-(((xx - cx) / 50.0) ** 2 + ((yy - height / 2) / 80.0) ** 2)) for cx in (width / 3, 2 * width / 3))
    buffer = io.BytesIO()
    Image.fromarray((blobs / blobs.max() * 230).astype(np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(base URL, examples folder): the app on Werkzeug's threaded server in this process."""
    from werkzeug.serving import make_server

    import pneumonia_cxr as pcx
    from app import create_app

    folder = tmp_path_factory.mktemp("browser")
    model_path = pcx.models.save_model_bundle(build_tiny_model("tiny_browser_cnn"), folder / "models", {"threshold": 0.5})
    application = create_app(model_path)
    examples = folder / "images"
    examples.mkdir()
    (examples / "example_xray.png").write_bytes(xray_png())
    application.config["EXAMPLES_DIR"] = examples
    server = make_server("127.0.0.1", 0, application, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", folder
    finally:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert errors == [], errors  # no JavaScript errors


image_loaded = app_screenshot.wait_for_image  # (naturalWidth, naturalHeight) once decoded


def assert_result_shown(page, size: tuple[int, int]) -> None:
    page.wait_for_selector("#result")
    assert page.inner_text("#label") in ("NORMAL", "PNEUMONIA")
    probability = float(page.inner_text("#probability"))
    assert 0.0 <= probability <= 1.0
    assert page.inner_text("#threshold") == "0.500"
    assert page.inner_text("#model-name") == "tiny_browser_cnn"
    assert image_loaded(page, "#overlay-image") == size
    assert image_loaded(page, "#original-image") == size


def test_upload_shows_prediction_and_overlay(page, site):
    url, folder = site
    upload = folder / "chest.png"
    upload.write_bytes(xray_png())
    page.goto(url)
    assert "not a diagnostic device" in page.inner_text("#notice")
    page.set_input_files("#file-input", str(upload))
    page.click("#submit-button")
    assert_result_shown(page, (320, 280))


def test_drag_and_drop_submits(page, site):
    url, _ = site
    page.goto(url)
    data = list(xray_png(300, 200))
    page.evaluate(
        """bytes => {
            const file = new File([new Uint8Array(bytes)], 'dropped.png', {type: 'image/png'});
            const transfer = new DataTransfer();
            transfer.items.add(file);
            const zone = document.getElementById('drop-zone');
            zone.dispatchEvent(new DragEvent('dragover', {dataTransfer: transfer, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""", data)
    assert_result_shown(page, (300, 200))


def test_example_in_one_click(page, site):
    url, _ = site
    page.goto(url)
    assert image_loaded(page, "#examples img") == (320, 280)
    page.click("#examples button")
    assert_result_shown(page, (320, 280))


def test_bad_file_shows_message(page, site):
    url, folder = site
    fake = folder / "notes.jpg"
    fake.write_text("this is a text file, not an X-ray")
    page.goto(url)
    page.set_input_files("#file-input", str(fake))
    page.click("#submit-button")
    page.wait_for_selector("#error")
    assert "not an image" in page.inner_text("#error")
    assert page.query_selector("#result") is None


def test_screenshot_after_upload_shows_result_and_overlay(page, site, tmp_path):
    url, folder = site
    upload = folder / "screenshot_upload.png"
    upload.write_bytes(xray_png(400, 300))
    page.set_viewport_size(app_screenshot.VIEWPORT)
    app_screenshot.upload_and_wait(page, url, upload)
    assert_result_shown(page, (400, 300))
    out = app_screenshot.save_result_screenshot(page, tmp_path / "shots" / "app.png")
    assert out == tmp_path / "shots" / "app.png"
    result_bottom = page.eval_on_selector("#result", "e => e.getBoundingClientRect().bottom + window.scrollY")
    overlay_bottom = page.eval_on_selector("#overlay-image", "e => e.getBoundingClientRect().bottom + window.scrollY")
    with Image.open(out) as shot:
        assert shot.format == "PNG"
        assert shot.width == app_screenshot.VIEWPORT["width"]
        # down to the end of the result, so the overlay is in the picture; the examples are not
        assert overlay_bottom < shot.height == pytest.approx(result_bottom + app_screenshot.MARGIN_PX, abs=1)
        assert np.unique(np.asarray(shot.convert("L"))).size > 16  # a rendered page, not a blank image


def test_screenshot_script_writes_only_where_it_is_told(site, tmp_path):
    import subprocess

    _, folder = site
    model = next((folder / "models").glob("*.keras"))
    upload = tmp_path / "upload.png"
    upload.write_bytes(xray_png(360, 240))
    committed = app_screenshot.DEFAULT_OUT
    before = committed.stat().st_mtime_ns if committed.exists() else None
    out = tmp_path / "app.png"
    # its own process: one thread cannot hold two Playwright sessions (the browser fixture has one)
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "app_screenshot.py"), "--model", str(model),
                          "--image", str(upload), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}" in run.stdout
    with Image.open(out) as shot:
        assert shot.format == "PNG" and shot.width == app_screenshot.VIEWPORT["width"]
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == before  # README's file untouched


def test_screenshot_script_names_a_missing_model(tmp_path, capsys):
    missing = tmp_path / "no_such_model.keras"
    assert app_screenshot.main(["--model", str(missing), "--image", str(tmp_path / "x.png"),
                                "--out", str(tmp_path / "app.png")]) == 1
    assert f"Model file not found: {missing}" in capsys.readouterr().err
    assert not (tmp_path / "app.png").exists()
