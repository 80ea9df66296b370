# The web app (app/) behind gunicorn. Build after model_deep_learning.ipynb has written models/:
#   docker build -t pneumonia-gradcam-app .
#   docker run -p 5001:5000 pneumonia-gradcam-app        # then open http://localhost:5001
# Research demo, not a diagnostic device.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    PORT=5000 \
    WEB_CONCURRENCY=2

WORKDIR /srv/pneumonia
COPY requirements.txt ./
RUN pip install -r requirements.txt \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin app

# Code, trained models (models/*.keras + their .json, from model_deep_learning.ipynb) and the
# example X-rays of the page (images/*example*.png, from the EDA notebook). The app serves
# $MODEL_PATH if set, else models/hed_vgg16_transfer.keras, else models/scratch_cnn.keras.
COPY functions_for_grad_cam.py ./
COPY pneumonia_cxr/ pneumonia_cxr/
COPY app/ app/
COPY models/ models/
COPY images/ images/

USER app
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=4)"
# 2 gthread workers x 4 threads, timeout 120 s; each worker loads the model once (app/gunicorn_conf.py).
CMD ["gunicorn", "-c", "app/gunicorn_conf.py", "app:create_app()"]
