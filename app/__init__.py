"""Flask web app: upload a chest X-ray, get the prediction and its Grad-CAM overlay.

Research demo, not a diagnostic device. Routes and request validation live here; decoding,
preprocessing, the model bundle and Grad-CAM all come from ``functions_for_grad_cam`` so the app
sees exactly what training and evaluation saw.

    create_app(model_path=None) -> Flask app (model loaded once, in the process calling it)
    python -m app --model models/scratch_cnn.keras --host 127.0.0.1 --port 5000
    gunicorn -c app/gunicorn_conf.py "app:create_app()"   (one model per worker)

Routes: ``GET /`` upload page, ``POST /predict`` (form: field ``file``, or ``example`` = name of an
example image) result page, ``GET /examples/<name>`` example image, ``POST /api/predict``
(multipart field ``file``) JSON, ``GET /healthz`` JSON. API errors are JSON ``{"error": ...}``.
"""
from __future__ import annotations

import base64
import io
import json
import os
import sys
import threading
from pathlib import Path

from flask import Flask, Request, abort, jsonify, render_template, request, send_from_directory
from werkzeug.exceptions import HTTPException

REPO_ROOT = Path(__file__).resolve().parent.parent
try:
    import functions_for_grad_cam as fgc
except ImportError:  # started from another folder: the module sits at the repo root
    sys.path.insert(0, str(REPO_ROOT))
    import functions_for_grad_cam as fgc

MODEL_ENV_VAR = "MODEL_PATH"
MODELS_DIR = "models"  # bundles written by model_deep_learning.ipynb: <name>.keras + <name>.json
MAX_UPLOAD_MB_ENV_VAR = "MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_MB = 20  # the largest original of the data set is about 3 MB
EXAMPLES_DIR = REPO_ROOT / "images"
EXAMPLES_PATTERN = "*example*.png"  # EDA notebook's example X-rays; other figures are not offered
MAX_EXAMPLES = 6
OVERLAY_ALPHA = 0.4
PNG_COMPRESS_LEVEL = 1  # zlib level: level 6 (Pillow's default) takes ~5x longer on a full-size X-ray
DISCLAIMER = "Research demo, not a diagnostic device. Do not use it for clinical decisions."


class ModelNotFoundError(FileNotFoundError):
    """No model file given, in $MODEL_PATH or at a default location."""


class InMemoryRequest(Request):
    """Request whose uploaded files stay in memory (Werkzeug spools > 500 KB to a temporary file).

    Safe because MAX_CONTENT_LENGTH bounds the body before it is read."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def resolve_model_path(model_path: str | os.PathLike | None = None) -> Path:
    """``model_path``, else ``$MODEL_PATH``, else the default bundle in ``models/``.

    The default is the bundle whose metadata (``<name>.json``) says ``"app_default": true`` (written by
    model_deep_learning.ipynb, which chose it on validation data only: the highest validation ROC-AUC);
    without one, the bundle recording the highest ``val_roc_auc``; bundles with neither come last, in
    name order.

    Raises:
        ModelNotFoundError: naming what was tried and how to provide a model.
    """
    chosen = model_path or os.environ.get(MODEL_ENV_VAR)
    if chosen:
        path = Path(chosen).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"Model file not found: {path} (from "
                                     f"{'the model_path argument' if model_path else '$' + MODEL_ENV_VAR})")
        return path
    candidates = sorted((REPO_ROOT / MODELS_DIR).glob("*.keras"))
    if not candidates:
        raise ModelNotFoundError(
            f"No model found: no .keras file in {REPO_ROOT / MODELS_DIR}. Train one with "
            f"model_deep_learning.ipynb, or pass a .keras file (--model PATH, create_app(model_path) or "
            f"${MODEL_ENV_VAR}).")
    return max(candidates, key=lambda path: (*_default_rank(path), -candidates.index(path)))


def _default_rank(model_path: Path) -> tuple[bool, float]:
    """(``app_default`` flag, ``val_roc_auc``) from the bundle's metadata; (False, -1) when absent
    or unreadable."""
    try:
        metadata = json.loads(model_path.with_suffix(".json").read_text())
        return bool(metadata.get("app_default", False)), float(metadata.get("val_roc_auc", -1.0))
    except (OSError, ValueError, TypeError, AttributeError):
        return False, -1.0


def _max_upload_bytes() -> int:
    value = os.environ.get(MAX_UPLOAD_MB_ENV_VAR, "")
    try:
        megabytes = float(value) if value else DEFAULT_MAX_UPLOAD_MB
    except ValueError:
        raise ValueError(f"${MAX_UPLOAD_MB_ENV_VAR} must be a number of megabytes, got '{value}'") from None
    return int(megabytes * 1024 * 1024)


class Predictor:
    """One loaded model bundle; ``predict(bytes)`` runs decode -> preprocess -> Grad-CAM (one pass).

    Calls are serialised with a lock: Grad-CAM builds a sub-model per call, and on a CPU server
    parallel calls in one process would only compete for the same cores."""

    def __init__(self, model_path: Path):
        self.path = Path(model_path)
        self.model, self.metadata = fgc.load_model_bundle(self.path)
        self.name = str(self.metadata.get("model_name", self.model.name))
        self.threshold = float(self.metadata.get("threshold", 0.5))
        self.last_conv_layer = self.metadata.get("last_conv_layer") or fgc.last_conv_layer_name(self.model)
        self._lock = threading.Lock()

    def predict(self, data: bytes, source: str = "upload") -> dict:
        """Raises fgc.ImageDecodeError (message says what is wrong) for a bad image."""
        original, model_input = fgc.load_image_for_model(data, source)
        with self._lock:
            heatmaps, probabilities = fgc.make_gradcam_heatmaps(
                model_input, self.model, self.last_conv_layer, class_index=None, threshold=self.threshold)
        probability = float(probabilities[0])
        overlay = fgc.overlay_heatmap(original, heatmaps[0], OVERLAY_ALPHA)
        return {"label": fgc.CLASS_NAMES[int(probability >= self.threshold)], "probability": probability,
                "threshold": self.threshold, "model": self.name, "original": original, "overlay": overlay}


def list_examples(folder: str | os.PathLike) -> list[str]:
    """Names of the example X-rays in ``folder`` offered on the page (empty when there are none)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.glob(EXAMPLES_PATTERN) if p.is_file())[:MAX_EXAMPLES]


def _b64_png(image) -> str:
    return base64.b64encode(fgc.png_bytes(image, compress_level=PNG_COMPRESS_LEVEL)).decode("ascii")


def create_app(model_path: str | os.PathLike | None = None) -> Flask:
    """The Flask app with its model loaded (once, here). See the module docstring for the routes.

    Raises:
        ModelNotFoundError: when no model file is found; ValueError: when it is not a suitable model.
    """
    predictor = Predictor(resolve_model_path(model_path))
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.config["MAX_CONTENT_LENGTH"] = _max_upload_bytes()
    app.config["EXAMPLES_DIR"] = EXAMPLES_DIR
    app.json.sort_keys = False
    app.extensions["predictor"] = predictor

    def upload_bytes() -> tuple[bytes, str]:
        """Bytes of the form field ``file`` (the client's file name is never used) or 400."""
        if "file" not in request.files:
            abort(400, description="No file uploaded: send the image in the multipart form field 'file'.")
        data = request.files["file"].read()
        if not data:
            abort(400, description="upload: the file is empty")
        return data, "upload"

    def run(data: bytes, source: str) -> dict:
        try:
            return predictor.predict(data, source)
        except fgc.ImageDecodeError as error:
            abort(400, description=str(error))

    def page(status: int = 200, **context):
        return render_template("index.html", model=predictor.name, threshold=predictor.threshold,
                               examples=list_examples(app.config["EXAMPLES_DIR"]), disclaimer=DISCLAIMER,
                               max_upload_mb=app.config["MAX_CONTENT_LENGTH"] / 2 ** 20, **context), status

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
        return page(result={**result, "original": _b64_png(result["original"]),
                            "overlay": _b64_png(result["overlay"]),
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
                       heatmap_png=_b64_png(result["overlay"]))

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", model=predictor.name, threshold=predictor.threshold)

    return app
