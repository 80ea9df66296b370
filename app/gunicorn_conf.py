"""gunicorn settings for the app (Docker image, server test and benchmark).

    gunicorn -c app/gunicorn_conf.py "app:create_app()"

Each worker imports the app and calls create_app() itself, so every worker holds one model,
loaded once (no --preload: TensorFlow must not be initialised before the fork). Command-line
options override these values; environment: PORT (default 5000), WEB_CONCURRENCY (workers,
default 2), GUNICORN_THREADS (default 4), GUNICORN_TIMEOUT (seconds, default 120), and the app's
MODEL_PATH, MAX_UPLOAD_MB and IMAGE_SLOTS (requests per worker decoding or drawing at once,
default 1). The Dockerfile also sets MALLOC_ARENA_MAX=2: glibc then keeps two heaps per process
instead of one per thread, which bounds what the threads' large short-lived image buffers leave behind.
"""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"  # threads answer /healthz while a request computes Grad-CAM
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))  # model loading + first call on a slow CPU
graceful_timeout = 30
preload_app = False
accesslog = "-"
errorlog = "-"
loglevel = "info"
limit_request_line = 8190
