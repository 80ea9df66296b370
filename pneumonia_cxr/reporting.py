"""Readable tables: names in words, numbers rounded for reading, p-values and missing values as a reader
expects them. The model findings in words live in ``findings``, the README's first screen in
``front_page``, the Grad-CAM verdicts in ``gradcam_report``."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .common import DISPLAY_NAMES

# ----------------------------------------------------------------------------------------------
# Readable tables
# ----------------------------------------------------------------------------------------------
READABLE_COLUMNS: dict[str, str] = {  # column names that the generic rule would get wrong
    "roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "val_roc_auc": "validation ROC-AUC",
    "roc_auc_ci95": "ROC-AUC 95% CI", "accuracy_ci95": "accuracy 95% CI",
    "n_seeds": "seeds", "n_images": "images", "n_normal": "NORMAL images", "n_pneumonia": "PNEUMONIA images",
    "n_correct": "correct", "n_wrong": "wrong", "n_files": "files",
    "pneumonia_share": "PNEUMONIA share", "grayscale_share": "greyscale share",
    "train_seconds": "training (s)", "train_minutes": "training (min)", "feature_seconds": "feature pass (s)",
    "seconds": "seconds", "best_epoch": "best epoch", "epochs_run": "epochs run",
    "threshold": "threshold (logit)", "threshold_probability": "threshold (probability)",
    "f1": "F1", "p_value": "p-value", "ids_in_other_splits": "ids in other splits",
    "images_per_patient_mean": "images per patient (mean)", "images_per_patient_max": "images per patient (max)",
    "width_median": "median width (px)", "height_median": "median height (px)",
    "aspect_q25": "aspect ratio (25th pct.)", "aspect_median": "aspect ratio (median)",
    "aspect_q75": "aspect ratio (75th pct.)", "megapixels_median": "median megapixels",
    "true_class": "true class", "predicted_class": "predicted class", "probability": "probability of PNEUMONIA",
}
_WORDS = {"sd": "SD", "ci95": "95% CI", "auc": "AUC", "roc": "ROC", "val": "validation", "mean": "mean",
          "n": "number of", "id": "id", "ids": "ids", "gradcam": "Grad-CAM"}


def readable_column(name) -> str:
    """A column name in words: ``READABLE_COLUMNS`` first, model code names by ``DISPLAY_NAMES``,
    else underscores become spaces and a few abbreviations are spelt out (``accuracy_sd`` ->
    ``accuracy SD``). Names that are not strings (ints, tuples) come back unchanged."""
    if not isinstance(name, str):
        return name
    if name in READABLE_COLUMNS:
        return READABLE_COLUMNS[name]
    if name in DISPLAY_NAMES:
        return DISPLAY_NAMES[name]
    if "_" not in name:
        return name
    return " ".join(_WORDS.get(word, word) for word in name.split("_"))


def _readable_value(value):
    if isinstance(value, str):
        return DISPLAY_NAMES.get(value, value)
    return value


def _is_text(index: pd.Index) -> bool:
    return index.dtype == object or pd.api.types.is_string_dtype(index)


MISSING = "–"  # what a table or sentence shows for a value the record does not have


def p_text(value) -> str:
    """A p-value: "< 0.001" below that, else 3 decimals; "–" when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _is_p_value(column) -> bool:
    return str(column).replace("_", "-").replace(" ", "-").lower() in ("p-value", "p", "p-holm")


def readable_table(frame: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """``frame`` as a reader should see it: column and index names in words
    (:func:`readable_column`), model code names in cells and index as their readable names,
    floats rounded to ``digits`` decimals and float columns that hold only whole numbers shown as
    integers (``3.000`` -> ``3``), p-values as "< 0.001" below that, and missing values as "–". Returns a
    new DataFrame; ``frame`` is left as it is. Columns of Python objects (e.g. after a transpose) are first
    given the dtype their values share."""
    table = frame.infer_objects()
    for column in table.columns:
        values = table[column]
        if pd.api.types.is_bool_dtype(values):
            continue
        if _is_p_value(column) and pd.api.types.is_numeric_dtype(values):
            table[column] = values.map(p_text)
        elif pd.api.types.is_float_dtype(values):
            finite = values.dropna()
            if len(finite) and np.isfinite(finite).all() and (finite == np.round(finite)).all():
                rounded = values.round().astype("Int64")
            else:
                rounded = values.round(digits)
            table[column] = rounded.astype(object).where(rounded.notna(), MISSING) if rounded.isna().any() else rounded
        elif values.dtype == object or pd.api.types.is_string_dtype(values):
            table[column] = values.map(_readable_value)
    table = table.rename(columns=readable_column)
    if isinstance(table.index, pd.MultiIndex):
        table.index = table.index.set_levels([level.map(_readable_value) if _is_text(level) else level
                                              for level in table.index.levels])
    elif _is_text(table.index):
        table.index = table.index.map(_readable_value)
    table.index = table.index.set_names([readable_column(n) if n is not None else None for n in table.index.names])
    if isinstance(table.columns, pd.Index) and table.columns.name is not None:
        table.columns.name = readable_column(table.columns.name)
    return table

