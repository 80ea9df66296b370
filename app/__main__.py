"""Serve the app with Flask's built-in server (never in debug mode).

    .venv/bin/python -m app --model models/scratch_cnn.keras --host 127.0.0.1 --port 5000

For several users use gunicorn instead: ``gunicorn -c app/gunicorn_conf.py "app:create_app()"``.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a bundle name of models/manifest.json or the path of a .keras model "
                        "(default: $MODEL_PATH, else the manifest's default bundle)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    args = parser.parse_args(argv)

    from app import ModelNotFoundError, create_app

    try:
        application = create_app(args.model)
    except (ModelNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    application.run(host=args.host, port=args.port, debug=False, use_reloader=False, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
