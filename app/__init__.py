"""Flask web app: upload a chest X-ray, get the prediction and its Grad-CAM overlay.

Research demo, not a diagnostic device. Routes and request handling live here; decoding, the
upload limits, preprocessing, the model bundle, its manifest, Grad-CAM and the overlay all come from
the package ``pneumonia_cxr`` so the app sees exactly what training and evaluation saw.

    create_app(model_path=None) -> Flask app (model and explainer built once, in the calling process)
    python -m app [--model BUNDLE_NAME_OR_PATH] --host 127.0.0.1 --port 5000
    gunicorn -c app/gunicorn_conf.py "app:create_app()"   (one model per worker)

Without a model given, the app serves the default bundle of ``models/manifest.json`` and refuses
to start when the manifest and the files disagree. The upload limits are those of
``pneumonia_cxr.images`` (``MAX_IMAGE_PIXELS``, ``MAX_ASPECT_RATIO``, ``UPLOAD_FORMATS``, and
``DEFAULT_MAX_UPLOAD_MB`` unless ``$MAX_UPLOAD_MB`` is set); larger originals are shown and drawn on
at most ``DISPLAY_MAX_SIDE`` pixels a side.

Routes: ``GET /`` upload page, ``POST /predict`` (form: field ``file``, or ``example`` = name of an
example image) result page, ``GET /examples/<name>`` example image, ``POST /api/predict``
(multipart field ``file``) JSON, ``GET /healthz`` JSON. API errors are JSON ``{"error": ...}``.
"""
from __future__ import annotations

import base64
import io
import os
import threading
from pathlib import Path

import numpy as np
from flask import Flask, Request, abort, jsonify, render_template, request, send_from_directory
from werkzeug.exceptions import HTTPException

import pneumonia_cxr as pcx

REPO_ROOT = Path(__file__).resolve().parent.parent

MODEL_ENV_VAR = "MODEL_PATH"
MODELS_DIR = REPO_ROOT / "models"  # bundles and manifest.json written by model_deep_learning.ipynb
MAX_UPLOAD_MB_ENV_VAR = "MAX_UPLOAD_MB"  # default pcx.images.DEFAULT_MAX_UPLOAD_MB
IMAGE_SLOTS_ENV_VAR = "IMAGE_SLOTS"
DEFAULT_IMAGE_SLOTS = 1  # per worker: requests decoding or drawing at once (the model step has its own lock)
# Larger uploads are shown and drawn on at most this many pixels a side (the model sees the full
# decode at 224). Bounds memory, and time: encoding the overlay as PNG costs about as much as the
# model step at 2 MP; Grad-CAM's map has 7 x 7 to 14 x 14 cells, so nothing of it is lost.
DISPLAY_MAX_SIDE = 1024
EXAMPLES_DIR = REPO_ROOT / "images"
EXAMPLES_PATTERN = "*example*.png"  # EDA notebook's example X-rays; other figures are not offered
MAX_EXAMPLES = 6
OVERLAY_ALPHA = 0.4
GRADCAM_METHOD = "gradcam"
PNG_COMPRESS_LEVEL = 1  # zlib level: level 6 (Pillow's default) takes ~5x longer on a full-size X-ray
DISCLAIMER = "Research demo, not a diagnostic device. Do not use it for clinical decisions."

class ModelNotFoundError(FileNotFoundError):
    """The model file or bundle name given (argument or $MODEL_PATH) does not exist."""


class InMemoryRequest(Request):
    """Request whose uploaded files stay in memory (Werkzeug spools > 500 KB to a temporary file).

    Safe because MAX_CONTENT_LENGTH bounds the body before it is read."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def resolve_model_path(model_path: str | os.PathLike | None = None) -> Path:
    """The ``.keras`` file to serve: ``model_path``, else ``$MODEL_PATH``, else the default bundle named
    by ``models/manifest.json`` (written by model_deep_learning.ipynb).

    ``model_path`` (or ``$MODEL_PATH``) is the path of a ``.keras`` file, or the name of a bundle of the
    manifest. Bundles in ``models/`` that the manifest does not list are never chosen.

    Raises:
        ModelNotFoundError: the file given does not exist.
        pcx.common.ManifestError: the manifest is missing or disagrees with the files it lists, or names no
            such bundle (one line saying how to fix it).
    """
    chosen = model_path or os.environ.get(MODEL_ENV_VAR)
    if not chosen:
        return pcx.manifest.bundle_path(MODELS_DIR, pcx.manifest.read_manifest(MODELS_DIR))
    path = Path(chosen).expanduser()
    if path.is_file():
        return path
    if pcx.manifest.is_plain_file_name(str(chosen)) and not path.suffix:  # a bundle name, e.g. "scratch_cnn"
        return pcx.manifest.bundle_path(MODELS_DIR, pcx.manifest.read_manifest(MODELS_DIR), str(chosen))
    raise ModelNotFoundError(f"Model file not found: {path} (from "
                             f"{'the model_path argument' if model_path else '$' + MODEL_ENV_VAR})")


def _env_number(name: str, default: float, unit: str, kind: type = float) -> float:
    """The positive number (of ``kind``: float or int) in environment variable ``name``, else ``default``."""
    value = os.environ.get(name, "")
    try:
        number = kind(value) if value else default
    except ValueError:
        number = 0
    if number <= 0:
        raise ValueError(f"${name} must be a positive {'whole ' if kind is int else ''}number of {unit}, got '{value}'")
    return number


class Predictor:
    """The served model bundle and its Grad-CAM explainer (``pcx.gradcam.GradCamExplainer``: the gradient
    model and its compiled function), both built once per worker process, at start-up;
    ``predict(bytes)`` runs decode -> Grad-CAM -> overlay.

    Memory per process is bounded: at most ``image_slots`` requests decode an upload or draw and
    encode images at once (decoding holds the full-size image; after it only a copy of at most
    ``DISPLAY_MAX_SIDE`` pixels a side is kept), and one at a time runs the model (on a CPU server
    parallel calls in one process would only compete for the same cores)."""

    def __init__(self, model_path: Path, image_slots: int = DEFAULT_IMAGE_SLOTS):
        self.path = Path(model_path)
        self.model, self.metadata = pcx.models.load_model_bundle(self.path)
        self.name = str(self.metadata.get("model_name", self.model.name))
        self.threshold = float(self.metadata.get("threshold", 0.5))
        self.last_conv_layer = self.metadata.get("last_conv_layer") or pcx.models.last_conv_layer_name(self.model)
        self._explainer = pcx.gradcam.GradCamExplainer(self.model, self.last_conv_layer, methods=(GRADCAM_METHOD,))
        self._explainer(np.zeros((1, *pcx.common.IMAGE_SHAPE), np.float32))  # traces its compiled function now
        self._model_lock = threading.Lock()
        self.image_slots = threading.BoundedSemaphore(image_slots)

    def predict(self, data: bytes, source: str = "upload") -> dict:
        """Label, probability, threshold, model name, and the upload and its Grad-CAM overlay as
        uint8 RGB arrays of at most ``DISPLAY_MAX_SIDE`` pixels a side.

        Raises:
            pcx.common.ImageDecodeError: a bad image (the message says what is wrong).
        """
        with self.image_slots:
            original, model_input = pcx.images.load_image_for_model(data, source, DISPLAY_MAX_SIDE)
        with self._model_lock:
            explained = self._explainer(model_input, threshold=self.threshold)
        probability = float(explained.probabilities[0])
        with self.image_slots:
            overlay = pcx.overlay.draw_overlay(original, explained.maps[GRADCAM_METHOD][0], OVERLAY_ALPHA)
        return {"label": pcx.common.CLASS_NAMES[int(probability >= self.threshold)], "probability": probability,
                "threshold": self.threshold, "model": self.name, "original": original, "overlay": overlay}

    def b64_png(self, image: np.ndarray) -> str:
        """Base64 of the PNG encoding of a uint8 image (in an image slot)."""
        with self.image_slots:
            return base64.b64encode(pcx.gradcam.png_bytes(image, compress_level=PNG_COMPRESS_LEVEL)).decode("ascii")


def list_examples(folder: str | os.PathLike) -> list[str]:
    """Names of the example X-rays in ``folder`` offered on the page (empty when there are none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.glob(EXAMPLES_PATTERN) if p.is_file())[:MAX_EXAMPLES]


def create_app(model_path: str | os.PathLike | None = None) -> Flask:
    """The Flask app with its model and Grad-CAM explainer built (once, here). See the module
    docstring for the routes; ``model_path`` as :func:`resolve_model_path`.

    Raises:
        ModelNotFoundError: the model file given does not exist; pcx.common.ManifestError (a ValueError):
        models/manifest.json is missing or disagrees with its files; ValueError: not a suitable
        model, or a bad $MAX_UPLOAD_MB / $IMAGE_SLOTS.
    """
    predictor = Predictor(resolve_model_path(model_path),
                          _env_number(IMAGE_SLOTS_ENV_VAR, DEFAULT_IMAGE_SLOTS, "requests", int))
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    max_upload_mb = _env_number(MAX_UPLOAD_MB_ENV_VAR, pcx.images.DEFAULT_MAX_UPLOAD_MB, "megabytes")
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 2 ** 20)
    app.config["EXAMPLES_DIR"] = EXAMPLES_DIR
    app.json.sort_keys = False
    app.extensions["predictor"] = predictor

    def upload_bytes() -> tuple[bytes, str]:
        """Bytes of the form field ``file`` (the client's file name is never used) or 400. The
        in-memory stream's own buffer, not a copy (``read()`` would copy up to MAX_UPLOAD_MB)."""
        if "file" not in request.files:
            abort(400, description="No file uploaded: send the image in the multipart form field 'file'.")
        data = request.files["file"].stream.getvalue()
        if not data:
            abort(400, description="upload: the file is empty")
        return data, "upload"

    def run(data: bytes, source: str) -> dict:
        try:
            return predictor.predict(data, source)
        except pcx.common.ImageDecodeError as error:
            abort(400, description=str(error))

    def page(status: int = 200, **context):
        return render_template("index.html", model=pcx.common.display_name(predictor.name), threshold=predictor.threshold,
                               examples=list_examples(app.config["EXAMPLES_DIR"]), disclaimer=DISCLAIMER,
                               max_upload_mb=app.config["MAX_CONTENT_LENGTH"] / 2 ** 20,
                               upload_formats=", ".join(pcx.images.UPLOAD_FORMATS), **context), status

    def wants_html() -> bool:
        return request.path == "/" or request.path == "/predict"

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        message = error.description or error.name
        if error.code == 413:
            message = (f"File too large: uploads are limited to "
                       f"{app.config['MAX_CONTENT_LENGTH'] / 2 ** 20:g} MB.")
        if wants_html() and error.code in (400, 413):
            return page(error.code, error=message)
        response = jsonify(error=message)
        response.status_code = error.code or 500
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def internal_error(error: Exception):
        app.logger.exception("Unhandled error")
        return jsonify(error="Internal server error."), 500

    @app.get("/")
    def index():
        return page()

    @app.post("/predict")
    def predict_page():
        example = request.form.get("example")
        if example:
            if example not in list_examples(app.config["EXAMPLES_DIR"]):
                abort(400, description=f"Unknown example image '{example}'.")
            data, source = (Path(app.config["EXAMPLES_DIR"]) / example).read_bytes(), f"example {example}"
        else:
            data, source = upload_bytes()
        result = run(data, source)
        return page(result={**result, "original": predictor.b64_png(result["original"]),
                            "overlay": predictor.b64_png(result["overlay"]),
                            "source": f"example {example}" if example else "your upload"})

    @app.get("/examples/<name>")
    def example_image(name: str):
        if name not in list_examples(app.config["EXAMPLES_DIR"]):
            abort(404, description=f"No example image '{name}'.")
        return send_from_directory(app.config["EXAMPLES_DIR"], name, mimetype="image/png")

    @app.post("/api/predict")
    def api_predict():
        result = run(*upload_bytes())
        return jsonify(label=result["label"], probability=result["probability"],
                       threshold=result["threshold"], model=result["model"],
                       heatmap_png=predictor.b64_png(result["overlay"]))

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", model=predictor.name, threshold=predictor.threshold)

    return app
