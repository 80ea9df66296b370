# The web app (app/) behind gunicorn. Build after model_deep_learning.ipynb has written models/:
#   docker build -t pneumonia-gradcam-app .
#   docker run -p 5001:5000 pneumonia-gradcam-app        # then open http://localhost:5001
# Research demo, not a diagnostic device. Needs BuildKit (RUN --mount), Docker's default since 23.0.
#
# Build arguments (both optional; the defaults are what a user's plain `docker build` does):
#   BASE_IMAGE  any image with Python 3.11 (`python3`, its venv module, useradd), default the
#               official python:3.11-slim.
#   WHEELHOUSE  folder of the build context holding the wheels of requirements-app.txt
#               (`pip download -r requirements-app.txt -d wheels`): installs with --no-index from
#               there, for builds without access to the package index. Empty (default): from the index.
# scripts/build_container.sh builds it with podman from a Debian base and a wheelhouse.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG WHEELHOUSE=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PORT=5000 \
    WEB_CONCURRENCY=2

WORKDIR /srv/pneumonia
# Only the app's packages (requirements-app.txt), in a venv (works on Debian's own Python too,
# which refuses system-wide pip installs). The build context is mounted for this step only, so a
# wheelhouse never ends up in a layer of the image. TensorFlow's C++ headers (tensorflow/include,
# about 430 MB, for compiling custom ops) are not needed to serve and are removed.
COPY requirements-app.txt ./
RUN --mount=type=bind,target=/tmp/context \
    python3 -m venv "$VIRTUAL_ENV" \
    && if [ -n "$WHEELHOUSE" ]; then \
           if [ ! -d "/tmp/context/$WHEELHOUSE" ]; then \
               echo "WHEELHOUSE=$WHEELHOUSE: no such folder in the build context" >&2; exit 1; \
           fi; \
           pip install --no-index --find-links "/tmp/context/$WHEELHOUSE" -r requirements-app.txt; \
       else \
           pip install -r requirements-app.txt; \
       fi \
    && rm -rf "$VIRTUAL_ENV"/lib/python3*/site-packages/tensorflow/include \
    && groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin app

# Code, trained models (models/*.keras + their .json, from model_deep_learning.ipynb) and the
# example X-rays of the page (images/*example*.png, from the EDA notebook). The app serves
# $MODEL_PATH if set, else the bundle of models/ whose .json records the best validation ROC-AUC.
COPY functions_for_grad_cam.py ./
COPY pneumonia_cxr/ pneumonia_cxr/
COPY app/ app/
COPY models/ models/
COPY images/ images/

USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '5000') + '/healthz', timeout=4)"]
# 2 gthread workers x 4 threads, timeout 120 s; each worker loads the model once (app/gunicorn_conf.py).
CMD ["gunicorn", "-c", "app/gunicorn_conf.py", "app:create_app()"]
