"""Strict JSON (pneumonia_cxr.jsonio): missing values are written as null, and the committed
results and benchmark files hold no bare NaN or Infinity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pneumonia_cxr import jsonio

REPO = Path(__file__).resolve().parents[1]


def test_nan_and_infinity_become_null_and_numpy_values_plain():
    record = {"sd": float("nan"), "p": np.float32(np.inf), "n": np.int64(3), "ok": np.bool_(True),
              "pair": (np.float64(0.5), -np.inf), "rows": np.array([1.0, np.nan]), 7: "key"}
    text = jsonio.dumps(record)
    assert json.loads(text) == {"sd": None, "p": None, "n": 3, "ok": True, "pair": [0.5, None],
                                "rows": [1.0, None], "7": "key"}
    assert "NaN" not in text and "Infinity" not in text


def test_write_json_is_strict_indented_and_makes_its_folder(tmp_path):
    path = jsonio.write_json({"accuracy_sd": np.nan, "accuracy_mean": 0.82}, tmp_path / "results" / "m.json")
    assert path.read_text() == '{\n  "accuracy_sd": null,\n  "accuracy_mean": 0.82\n}\n'


def test_plain_json_would_have_written_nan():
    """What the helper prevents: json.dumps's default output, which strict readers refuse."""
    assert json.dumps({"sd": float("nan")}) == '{"sd": NaN}'
    with pytest.raises(ValueError):
        json.dumps({"sd": float("nan")}, allow_nan=False)


@pytest.mark.parametrize("path", sorted(REPO.glob("results/*.json")) + sorted(REPO.glob("bench/*.json")),
                         ids=lambda path: str(path.relative_to(REPO)))
def test_committed_json_files_are_strict(path):
    def refuse(constant: str):
        raise ValueError(f"{path.relative_to(REPO)} holds {constant}: write null for a missing value")

    json.loads(path.read_text(), parse_constant=refuse)
