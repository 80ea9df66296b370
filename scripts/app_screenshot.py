"""Screenshot of the web app after an upload: the page down to the result (prediction, probability,
threshold, model) with the uploaded X-ray and its Grad-CAM overlay, taken in headless Chromium.

    .venv/bin/python scripts/app_screenshot.py       # the app's default model, a full-size test X-ray
    .venv/bin/python scripts/app_screenshot.py --model models/scratch_cnn.keras --image X.jpeg --out app.png

Writes ``images_for_readme/app.png`` unless ``--out`` says otherwise; run by hand when the models
change (the README shows the file). tests/test_app_browser.py uses the same functions with a tiny
model and a temporary path, so the test suite never overwrites the committed screenshot.

Needs Playwright (Python package) and Debian's Chromium at ``/usr/bin/chromium`` (no
``playwright install``): ``apt-get install -y chromium``.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 120_000  # a full-size X-ray through a VGG16-sized model on 2 busy CPU cores
VIEWPORT = {"width": 1100, "height": 900}  # CSS pixels; the page's content is at most 1100 px wide
MARGIN_PX = 16  # below the result section in the picture
DEFAULT_OUT = ROOT / "images_for_readme" / "app.png"
DEFAULT_FULLSIZE_DIR = ROOT.parent / "shared" / "data" / "chest_xray_fullsize_sample"
FULLSIZE_ENV_VAR = "CHEST_XRAY_FULLSIZE_DIR"


class ChromiumMissingError(FileNotFoundError):
    """The system Chromium the screenshot needs is not installed."""


def pick_test_image(fullsize_dir: str | os.PathLike, label: str = "PNEUMONIA", seed: int = 0) -> Path:
    """One X-ray of class ``label`` from the official test split of ``fullsize_dir`` (Kaggle layout),
    drawn with ``seed`` among the readable files."""
    import pneumonia_cxr as pcx

    index = pcx.dataset.decodable(pcx.dataset.build_index(pcx.dataset.find_dataset_root(fullsize_dir)), warn=False)
    rows = index[(index["split"] == "test") & (index["label"] == label)]
    if rows.empty:
        raise ValueError(f"No readable {label} image in the test split of {fullsize_dir}")
    return Path(pcx.dataset.subsample_per_class(rows, 1, seed)["path"].iloc[0])


@contextmanager
def serve(application) -> Iterator[str]:
    """Serve a Flask app on a free local port in a background thread (no access log); yield its base URL."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *args, **kwargs) -> None:  # errors are still logged
            pass

    server = make_server("127.0.0.1", 0, application, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


@contextmanager
def chromium_browser():
    """Headless Debian Chromium driven by Playwright; yields the Browser.

    Raises:
        ChromiumMissingError: when ``/usr/bin/chromium`` is not installed.
    """
    if not CHROMIUM.is_file():
        raise ChromiumMissingError(f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def wait_for_image(page, selector: str) -> tuple[int, int]:
    """(naturalWidth, naturalHeight) of an <img> once the browser has decoded it."""
    page.wait_for_function(f"() => {{ const i = document.querySelector('{selector}'); "
                           f"return i && i.complete && i.naturalWidth > 0; }}")
    return tuple(page.eval_on_selector(selector, "i => [i.naturalWidth, i.naturalHeight]"))


def upload_and_wait(page, url: str, image: str | os.PathLike) -> None:
    """Open the app at ``url``, upload ``image`` with the form and wait until the result, the
    original and the Grad-CAM overlay are shown."""
    page.goto(url)
    page.set_input_files("#file-input", str(image))
    page.click("#submit-button")
    page.wait_for_selector("#result")
    wait_for_image(page, "#original-image")
    wait_for_image(page, "#overlay-image")


def save_result_screenshot(page, out: str | os.PathLike) -> Path:
    """PNG of the page from its top down to the end of the result section (plus MARGIN_PX)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    box = page.eval_on_selector("#result", "e => { const r = e.getBoundingClientRect(); "
                                           "return {bottom: r.bottom + window.scrollY}; }")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    page.screenshot(path=str(out), full_page=True,
                    clip={"x": 0, "y": 0, "width": width, "height": box["bottom"] + MARGIN_PX})
    return out


def take_screenshot(application, image: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Serve ``application``, upload ``image`` in headless Chromium and save the result's screenshot."""
    with serve(application) as url, chromium_browser() as browser:
        context = browser.new_context(viewport=VIEWPORT)
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        try:
            upload_and_wait(page, url, image)
            return save_result_screenshot(page, out)
        finally:
            context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a .keras bundle (default: the app's default model)")
    parser.add_argument("--image", help="X-ray to upload (default: a PNEUMONIA test image of --fullsize-dir)")
    parser.add_argument("--fullsize-dir", default=os.environ.get(FULLSIZE_ENV_VAR, str(DEFAULT_FULLSIZE_DIR)),
                        help=f"full-size originals, Kaggle layout (default: ${FULLSIZE_ENV_VAR} or {DEFAULT_FULLSIZE_DIR})")
    parser.add_argument("--label", default="PNEUMONIA", help="class of the default test image")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help=f"PNG to write (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    import pneumonia_cxr as pcx
    from app import ModelNotFoundError, create_app

    try:
        application = create_app(args.model)
        image = Path(args.image) if args.image else pick_test_image(args.fullsize_dir, args.label)
        out = take_screenshot(application, image, args.out)
    except (ModelNotFoundError, ChromiumMissingError, pcx.common.DatasetLayoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    predictor = application.extensions["predictor"]
    print(f"wrote {out} (model {predictor.name} from {predictor.path}, upload {image})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
