"""Tables and sentences the model notebook shows about its runs: per seed, on validation, on test."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .common import display_name
from .evaluation import log_loss_of_logits, mean_logit


def seed_runs_table(runs: Sequence[dict]) -> pd.DataFrame:
    """One row per seed: best epoch, epochs run, lowest validation loss and the validation ROC-AUC
    (Keras' running estimate) at the best epoch, training minutes, and whether the run came from the cache."""
    rows = {}
    for run in runs:
        history, best = run["result"].history, run["result"].best_epoch
        rows[run["seed"]] = {"best epoch": best, "epochs run": len(history["loss"]),
                             "min validation loss": min(history["val_loss"]),
                             "validation ROC-AUC": history["val_auc"][best - 1] if "val_auc" in history else np.nan,
                             "minutes": run["result"].seconds / 60, "from cache": run["loaded"]}
    return pd.DataFrame(rows).T.rename_axis("seed")


def early_stopping_sentence(runs: Sequence[dict], cap: int) -> str:
    """Whether early stopping acted: how many seeds stopped before the epoch cap (the best epoch below
    ``cap``), and plainly that training was cut when fewer than 2 of 3 (two thirds) did."""
    below = sum(run["result"].best_epoch < cap for run in runs)
    verdict = ("training ran until the validation loss stopped improving" if below * 3 >= 2 * len(runs)
               else "training was **cut by the epoch cap**: the validation loss was still improving")
    epochs = ", ".join(str(run["result"].best_epoch) for run in runs)
    return f"Best epochs {epochs} (cap {cap}): {below} of {len(runs)} seeds below the cap, so {verdict}."


def validation_table(entries: dict[str, dict], val_logits: dict[str, np.ndarray], y_pool: np.ndarray) -> pd.DataFrame:
    """Validation metrics of each family's seed-ensemble (and the cross-model ensemble, when kept) at its
    threshold, with the pooled log loss of the mean logit."""
    rows = {}
    for name, entry in entries.items():
        logits = val_logits.get(name)
        if logits is None:  # the cross-model ensemble: the mean of its members' logits
            logits = mean_logit([val_logits[m] for m in entry["members"]])
        rows[display_name(name)] = entry["val"] | {"log loss": log_loss_of_logits(y_pool, logits)}
    return pd.DataFrame(rows).T


def test_table(entries: dict[str, dict]) -> pd.DataFrame:
    """Test metrics of each family's seed-ensemble, with the mean and sd over seeds where there are seeds."""
    columns = ("accuracy", "roc_auc", "sensitivity", "specificity", "f1")
    return pd.DataFrame({display_name(name): {k: entry["test"][k] for k in columns} | entry.get("seed_spread", {})
                         for name, entry in entries.items()}).T
