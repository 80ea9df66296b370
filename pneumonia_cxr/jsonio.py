"""Strict JSON for the files the project writes (results/*.json, bench/*.json, bundle sidecars):
a missing value is ``null``, never the bare ``NaN`` or ``Infinity`` that Python's ``json`` writes by
default and that other JSON readers refuse."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def json_ready(value):
    """``value`` with numpy scalars and arrays as Python values, tuples as lists, and every NaN or
    infinity as None, recursively through mappings and sequences; other values unchanged."""
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def dumps(value, **kwargs) -> str:
    """``json.dumps`` of :func:`json_ready` ``(value)`` with ``allow_nan=False`` (keyword arguments
    such as ``indent`` and ``sort_keys`` pass through)."""
    return json.dumps(json_ready(value), allow_nan=False, **kwargs)


def write_json(value, path: str | os.PathLike, indent: int = 2, **kwargs) -> Path:
    """Write ``value`` to ``path`` as indented strict JSON with a final newline (its folder made if
    missing); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(value, indent=indent, **kwargs) + "\n")
    return path
