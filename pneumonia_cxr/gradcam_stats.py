"""Statistics and verdicts of the Grad-CAM checks: per-image paired differences, BCa intervals,
exact sign and Wilcoxon signed-rank tests without ties, Holm's adjustment over stated families, and
the rules that turn them into verdicts (constants in :mod:`pneumonia_cxr.gradcam_checks`)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .common import CLASS_NAMES
from .gradcam_checks import (ALPHA, BETTER_SIGN, BOOTSTRAP_RESAMPLES, CURVE_ORDERS, SUBSETS, TIE_TOLERANCE,
                             CheckSettings)


def bca_interval(values: Sequence[float], statistic=np.mean, seed: int = 0) -> tuple[float, float, float]:
    """(statistic, 95% low, 95% high) over images: BCa bootstrap (scipy.stats.bootstrap,
    ``BOOTSTRAP_RESAMPLES``); NaN values left out; no interval (NaN) under 3 values; a point
    interval when every value is the same."""
    from scipy.stats import bootstrap

    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if len(values) < 3:
        return (float(statistic(values)) if len(values) else np.nan), np.nan, np.nan
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0]), float(values[0])
    interval = bootstrap((values,), statistic, n_resamples=BOOTSTRAP_RESAMPLES, method="BCa",
                         rng=np.random.default_rng(seed)).confidence_interval
    return float(statistic(values)), float(interval.low), float(interval.high)


def paired_tests(differences: Sequence[float], better_sign: int) -> dict[str, float]:
    """Sign and Wilcoxon signed-rank tests of paired differences (map - baseline) without ties.

    A difference with |d| <= TIE_TOLERANCE is a tie and is dropped from both tests. Returns wins
    (the map better: the sign of ``better_sign``), losses, ties, sign_p (exact two-sided binomial
    test of wins among wins + losses, scipy.stats.binomtest) and wilcoxon_p (two-sided,
    scipy.stats.wilcoxon); p NaN when no difference is left."""
    from scipy.stats import binomtest, wilcoxon

    d = np.asarray(differences, np.float64)
    d = d[~np.isnan(d)]
    untied = d[np.abs(d) > TIE_TOLERANCE]
    wins = int((better_sign * untied > 0).sum())
    stats = {"wins": wins, "losses": len(untied) - wins, "ties": len(d) - len(untied), "sign_p": np.nan,
             "wilcoxon_p": np.nan}
    if len(untied):
        stats["sign_p"] = float(binomtest(wins, len(untied), 0.5).pvalue)
        stats["wilcoxon_p"] = float(wilcoxon(untied).pvalue)
    return stats


def one_sided_sign_p(successes: int, n: int) -> float:
    """P(X >= successes), X ~ Binomial(n, 1/2) (scipy.stats.binomtest); NaN for n = 0."""
    from scipy.stats import binomtest

    return float(binomtest(successes, n, 0.5, alternative="greater").pvalue) if n > 0 else np.nan


def holm_adjusted(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaN (a test not run) stays NaN, outside the family."""
    p = np.asarray(p_values, np.float64)
    run = np.flatnonzero(~np.isnan(p))
    order = run[np.argsort(p[run], kind="stable")]
    adjusted = np.full_like(p, np.nan)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((len(order) - np.arange(len(order))) * p[order]))
    return adjusted


def curve_outcome(low: float, high: float, sign_p_holm: float, wilcoxon_p_holm: float, better_sign: int) -> str:
    """One curve order's outcome: "better" or "worse" than the shifted copies when the 95% interval
    of the mean difference excludes 0 on that side and both Holm-adjusted p-values are below ALPHA;
    otherwise "no evidence either way"."""
    significant = sign_p_holm < ALPHA and wilcoxon_p_holm < ALPHA  # NaN compares False
    if not significant or not (low > 0 or high < 0):
        return "no evidence either way"
    return "better" if better_sign * (low if low > 0 else high) > 0 else "worse"


def faithfulness_verdict(morf: str, lerf: str) -> str:
    """"faithful" (both orders better), "partly faithful (MoRF)" / "(LeRF)" (one better, the other no
    evidence), "worse than its shifted copies (...)" (any order worse), else "no evidence either way"."""
    worse = [name for name, outcome in (("MoRF", morf), ("LeRF", lerf)) if outcome == "worse"]
    if worse:
        return f"worse than its shifted copies ({', '.join(worse)})"
    if morf == lerf == "better":
        return "faithful"
    if "better" in (morf, lerf):
        return f"partly faithful ({'MoRF' if morf == 'better' else 'LeRF'})"
    return "no evidence either way"


def _group_stats(rows: pd.DataFrame, seed: int) -> dict:
    """Counts, means with BCa intervals, and raw p-values of one group of per-image rows."""
    stats = {"n_images": len(rows), "n_normal": int((rows["true_class"] == CLASS_NAMES[0]).sum()),
             "n_pneumonia": int((rows["true_class"] == CLASS_NAMES[1]).sum()),
             "n_correct": int(rows["correct"].sum()), "n_wrong": int((~rows["correct"]).sum()),
             "empty_maps": int(rows["empty_map"].sum())}
    curves = rows.dropna(subset=["morf_diff"]) if "morf_diff" in rows else rows.iloc[:0]
    stats["n_curve_images"] = len(curves)
    for order in CURVE_ORDERS:
        for column in ("map", "shifted"):
            stats[f"{order}_{column}"] = float(curves[f"{order}_{column}"].mean()) if len(curves) else np.nan
        stats[f"{order}_diff_mean"], stats[f"{order}_diff_ci_low"], stats[f"{order}_diff_ci_high"] = \
            bca_interval(curves[f"{order}_diff"] if len(curves) else [], seed=seed)
        stats.update({f"{order}_{k}": v for k, v in paired_tests(
            curves[f"{order}_diff"] if len(curves) else [], BETTER_SIGN[order]).items()})
    if len(curves):
        stats["road_diff_mean"], stats["road_diff_ci_low"], stats["road_diff_ci_high"] = \
            bca_interval(curves["road_map"] - curves["road_shifted"], seed=seed)
    stats["rank_corr_median"], stats["rank_corr_ci_low"], stats["rank_corr_ci_high"] = \
        bca_interval(rows["rank_corr_random_weights"], np.median, seed=seed)
    stats.update(sanity_passes=int(rows["sanity_pass"].sum()), random_maps_constant=int(rows["random_map_constant"].sum()),
                 sanity_p=one_sided_sign_p(int(rows["sanity_pass"].sum()), len(rows)),
                 border_share=float(rows["border_share"].mean()),
                 border_share_uniform=float(rows["border_share_uniform"].iloc[0]),
                 border_passes=int(rows["border_pass"].sum()),
                 border_p=one_sided_sign_p(int(rows["border_pass"].sum()), len(rows)))
    return stats


def enough_images(n: int, tests: int, smallest_p=lambda n: 2 * 0.5 ** n) -> bool:
    """Whether a test over n images can pass at all once Holm-adjusted over ``tests`` tests: its
    smallest p-value (two-sided sign test: 2 x 0.5 ** n) times ``tests`` is below ALPHA."""
    return tests * smallest_p(n) < ALPHA


FAITHFULNESS_TESTS = tuple(f"{order}_{test}_p" for order in CURVE_ORDERS for test in ("sign", "wilcoxon"))


def summarise_checks(per_image: pd.DataFrame, settings: CheckSettings = CheckSettings()) -> pd.DataFrame:
    """One row per (model if present, method, subset of predictions: all, correct, wrong; empty
    subsets left out), with the settings as columns, and the verdicts.

    Holm families (the "all" rows only; the subsets are descriptive, verdict "descriptive (subset)"):
    faithfulness, the sign and Wilcoxon tests of MoRF and LeRF of every (model, method) with curves;
    sanity, the sanity sign tests; borders, the border sign tests. Verdicts: faithfulness by
    :func:`curve_outcome` and :func:`faithfulness_verdict` ("not run" without curves, "too few images"
    when a win on every image could not pass, :func:`enough_images`); sanity "passes" when the share
    of sanity_pass images is significantly above one half (one-sided sign test, Holm), else "fails";
    borders "interior" likewise for border_pass, else "not interior"."""
    keys = [c for c in ("model", "method") if c in per_image.columns]
    rows = []
    for values, group in per_image.groupby(keys, sort=False):
        labels = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        for subset, part in zip(SUBSETS, (group, group[group["correct"]], group[~group["correct"]])):
            if len(part):
                rows.append({**labels, "subset": subset, **settings.columns(), **_group_stats(part, settings.seed)})
    table = pd.DataFrame(rows)
    tested = (table["subset"] == "all").to_numpy()
    family = table.loc[tested, list(FAITHFULNESS_TESTS)].to_numpy().ravel()
    adjusted = {f"{c}_holm": np.full(len(table), np.nan) for c in (*FAITHFULNESS_TESTS, "sanity_p", "border_p")}
    for column, values in zip(FAITHFULNESS_TESTS, holm_adjusted(family).reshape(-1, len(FAITHFULNESS_TESTS)).T):
        adjusted[f"{column}_holm"][tested] = values
    for column in ("sanity_p", "border_p"):
        adjusted[f"{column}_holm"][tested] = holm_adjusted(table.loc[tested, column])
    table = table.assign(**adjusted)
    faithfulness_family = int(np.sum(~np.isnan(family)))
    checks_family = int(tested.sum())
    verdicts = {"morf_outcome": [], "lerf_outcome": [], "faithfulness_verdict": [], "sanity_verdict": [],
                "border_verdict": []}
    for _, row in table.iterrows():
        outcomes = {order: curve_outcome(row[f"{order}_diff_ci_low"], row[f"{order}_diff_ci_high"],
                                         row[f"{order}_sign_p_holm"], row[f"{order}_wilcoxon_p_holm"],
                                         BETTER_SIGN[order]) for order in CURVE_ORDERS}
        few = not enough_images(row["n_curve_images"], max(faithfulness_family, 1))
        faithful = ("not run" if row["n_curve_images"] == 0 else "too few images" if few else
                    faithfulness_verdict(outcomes["morf"], outcomes["lerf"]))
        few_checks = not enough_images(row["n_images"], checks_family, lambda n: 0.5 ** n)
        sanity = "too few images" if few_checks else "passes" if row["sanity_p_holm"] < ALPHA else "fails"
        border = "too few images" if few_checks else "interior" if row["border_p_holm"] < ALPHA else "not interior"
        if row["subset"] != "all":
            outcomes = {order: "descriptive (subset)" for order in CURVE_ORDERS}
            faithful = sanity = border = "descriptive (subset)"
        for key, value in (("morf_outcome", outcomes["morf"]), ("lerf_outcome", outcomes["lerf"]),
                           ("faithfulness_verdict", faithful), ("sanity_verdict", sanity), ("border_verdict", border)):
            verdicts[key].append(value)
    return table.assign(**verdicts)


def trust_problems(row: pd.Series) -> list[str]:
    """What keeps one summary row's maps from being trusted; empty when faithful, passing the sanity
    check and interior."""
    problems = []
    if row["faithfulness_verdict"] != "faithful":
        problems.append(f"faithfulness: {row['faithfulness_verdict']}")
    if row["sanity_verdict"] != "passes":
        problems.append(f"sanity: {row['sanity_verdict']}")
    if row["border_verdict"] != "interior":
        problems.append(f"borders: {row['border_verdict']}")
    return problems
