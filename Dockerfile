# The web app (app/) behind gunicorn. Build after model_deep_learning.ipynb has written models/
# (or after scripts/fetch_models.py has unpacked a release archive into it):
#   docker build -t pneumonia-gradcam-app .
#   docker run -p 5001:5000 pneumonia-gradcam-app        # then open http://localhost:5001
# Research demo, not a diagnostic device. Needs BuildKit (RUN --mount), Docker's default since 23.0.
# The app serves the default bundle of models/manifest.json (bundles it does not list are never
# served; scripts/build_container.sh builds from a context holding only the default bundle).
#
# Build arguments (both optional; the defaults are what a user's plain `docker build` does):
#   BASE_IMAGE  any Debian bookworm image with Python 3.11 (`python3`, its venv module, useradd,
#               apt), default the official python:3.11-slim-bookworm.
#   WHEELHOUSE  folder of the build context holding the wheels (requirements-app.txt with
#               tensorflow-cpu for tensorflow, as scripts/build_container.sh downloads them):
#               installs with --no-index from there, for builds without access to the package
#               index. Empty (default): from the index.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# Stage 1: the virtual environment, trimmed. Only its /opt/venv is kept.
FROM ${BASE_IMAGE} AS venv
ARG WHEELHOUSE=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# requirements-app.txt with tensorflow-cpu for tensorflow (same version, without the CUDA kernels);
# installed without bytecode; then what serving never reads goes: TensorFlow's C++ headers, the
# packages' test suites, pip, libclang (61 MB: TensorFlow lists it for building ops; neither it nor
# Keras imports it), and the symbol tables of TensorFlow's two big libraries (about 220 MB;
# strip, from binutils, exists in this stage only; the other wheels' libraries are left alone:
# stripping their patchelf-edited copies breaks them). Bytecode is then written for just the
# modules serving imports.
# The build context is mounted for this step only, so a wheelhouse never ends up in a layer.
ARG SITE_PACKAGES=/opt/venv/lib/python3.11/site-packages
RUN --mount=type=bind,target=/tmp/context \
    apt-get update \
    && apt-get install -y --no-install-recommends binutils=2.40-2 \
    && python3 -m venv /opt/venv \
    && sed 's/^tensorflow==/tensorflow-cpu==/' /tmp/context/requirements-app.txt > /tmp/requirements-image.txt \
    && if [ -n "$WHEELHOUSE" ]; then \
           if [ ! -d "/tmp/context/$WHEELHOUSE" ]; then \
               echo "WHEELHOUSE=$WHEELHOUSE: no such folder in the build context" >&2; exit 1; \
           fi; \
           pip install --no-compile --no-index --find-links "/tmp/context/$WHEELHOUSE" -r /tmp/requirements-image.txt; \
       else \
           pip install --no-compile -r /tmp/requirements-image.txt; \
       fi \
    && pip uninstall --yes libclang pip \
    && rm -rf "$SITE_PACKAGES/tensorflow/include" \
    && find "$SITE_PACKAGES" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} + \
    && strip --strip-unneeded "$SITE_PACKAGES/tensorflow/libtensorflow_cc.so.2" \
        "$SITE_PACKAGES/tensorflow/libtensorflow_framework.so.2" \
    && PYTHONDONTWRITEBYTECODE='' TF_CPP_MIN_LOG_LEVEL=3 /opt/venv/bin/python -c \
        'import flask, gunicorn.app.wsgiapp, gunicorn.workers.gthread, keras, numpy, pandas, PIL.Image, scipy.special, tensorflow'

# Stage 2: the image: base, venv, app. No compilers, no package caches, not root.
FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MALLOC_ARENA_MAX=2 \
    PORT=5000 \
    WEB_CONCURRENCY=2
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=venv /opt/venv /opt/venv

WORKDIR /srv/pneumonia
# Code, models (models/manifest.json and the bundles it lists) and the example X-rays of the page
# (images/*example*.png, from the EDA notebook). requirements-app.txt records what is installed.
COPY requirements-app.txt ./
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
