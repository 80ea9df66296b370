"""The Grad-CAM checks in words and figures: the notebook's findings, the README's verdict table, the
text of docs/gradcam.md and docs/gradcam_method.md, and the figures. Every rule is stated from the
constants of :mod:`pneumonia_cxr.gradcam_checks` and every number is read from the tables
:func:`pneumonia_cxr.gradcam_stats.summarise_checks` returns, so no copy of a rule is typed anywhere."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from . import gradcam_checks as gc
from .common import CLASS_NAMES, display_name

METHOD_NAMES: dict[str, str] = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}
ORDER_NAMES: dict[str, str] = {"morf": "MoRF", "lerf": "LeRF"}
COLUMN_NAMES: dict[str, str] = {  # results/gradcam_checks.csv's columns in words
    "n_images": "images", "n_curve_images": "images with curves", "curve_kind": "curves",
    "curve_score": "curve score", "curve_points": "curve points", "tie_tolerance": "tie tolerance (logit)",
    "road_noise": "imputation noise (SD)", "baseline_draws": "shifted copies per image",
    "baseline_draws_per_point": "shifted copies scored per curve point",
    "sanity_randomisation": "sanity randomisation", "sanity_seeds": "sanity seeds",
    "faithfulness_verdict": "faithfulness (MoRF / LeRF)", "sanity_verdict": "sanity (cascading randomisation)",
    "border_verdict": "borders"}
SETTINGS_COLUMNS = tuple(gc.CheckSettings().columns())
FINDINGS_PAGE = "docs/gradcam.md"
FIGURE_PREFIXES = ("gradcam_", "gradcam_sanity_", "gradcam_road_")


def method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def is_current(checks: pd.DataFrame) -> bool:
    """Whether ``checks`` has this version's columns (ROAD curves, cascading randomisation)."""
    return {"curve_kind", "morf_diff_mean", "faithfulness_verdict"} <= set(checks.columns)


def _all_rows(checks: pd.DataFrame) -> pd.DataFrame:
    return checks[checks["subset"] == "all"] if "subset" in checks else checks


def images_cell(row: Mapping) -> str:
    """``64``, ``64 (curves on 10)`` or ``64 (no curves)``: a summary row's images and, when fewer,
    those with curves."""
    n, curves = int(row["n_images"]), row.get("n_curve_images")
    if curves is None or pd.isna(curves) or int(curves) == n:
        return str(n)
    return f"{n} (no curves)" if int(curves) == 0 else f"{n} (curves on {int(curves)})"


def verdict_table(checks: pd.DataFrame) -> pd.DataFrame:
    """One row per model: images, then each verdict as ``Grad-CAM / Grad-CAM++`` (all predictions),
    copied from the table, never re-derived."""
    rows = _all_rows(checks)
    methods = list(dict.fromkeys(rows["method"]))
    out = []
    for model, group in rows.groupby("model", sort=False):
        by_method = group.set_index("method")
        row = {"model": display_name(model), "images": " / ".join(images_cell(by_method.loc[m]) for m in methods
                                                                  if m in by_method.index)}
        for column in ("faithfulness_verdict", "sanity_verdict", "border_verdict"):
            row[COLUMN_NAMES[column]] = " / ".join(str(by_method[column].get(m, "–")) for m in methods)
        out.append(row)
    return pd.DataFrame(out)


def untrusted(checks: pd.DataFrame) -> list[str]:
    """Readable names of the models none of whose methods' maps are faithful, pass the sanity check
    and stay interior (:func:`pneumonia_cxr.gradcam_stats.trust_problems` empty)."""
    from .gradcam_stats import trust_problems

    rows = _all_rows(checks)
    ok = rows.apply(lambda row: not trust_problems(row), axis=1)
    return [display_name(m) for m, fine in ok.groupby(rows["model"], sort=False).any().items() if not fine]


def _interval(mean: float, low: float, high: float) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:+.3f}" + ("" if pd.isna(low) else f" [{low:+.3f}, {high:+.3f}]")


def describe_row(row: Mapping) -> str:
    """One model and method in words: each verdict with the numbers behind it."""
    curves = [f"{ORDER_NAMES[o]} map - copies {_interval(row[f'{o}_diff_mean'], row[f'{o}_diff_ci_low'], row[f'{o}_diff_ci_high'])}"
              f" logit, better in {int(row[f'{o}_wins'])} / worse in {int(row[f'{o}_losses'])} / tied in "
              f"{int(row[f'{o}_ties'])}: {row[f'{o}_outcome']}" for o in gc.CURVE_ORDERS] \
        if row["n_curve_images"] else ["no curves"]
    return (f"**{display_name(row['model'])}, {method_name(row['method'])}** ({images_cell(row)} images): "
            f"faithfulness **{row['faithfulness_verdict']}** ({'; '.join(curves)}); sanity **{row['sanity_verdict']}** "
            f"(median rho with every layer randomised {_interval(row['rank_corr_median'], row['rank_corr_ci_low'], row['rank_corr_ci_high'])}, "
            f"|rho| < {gc.RANK_CORR_LIMIT} in {int(row['sanity_passes'])}, random map constant in "
            f"{int(row['random_maps_constant'])}); borders **{row['border_verdict']}** (border share "
            f"{row['border_share']:.3f} against a uniform map's {row['border_share_uniform']:.3f}, below it in "
            f"{int(row['border_passes'])}).")


def findings_markdown(checks: pd.DataFrame) -> str:
    """The notebook's findings: one bullet per model and method (:func:`describe_row`), then trust."""
    rows = _all_rows(checks)
    bullets = [f"- {describe_row(row)}" for _, row in rows.iterrows()]
    lost = untrusted(checks)
    bullets.append("- " + (f"No method's maps can be trusted (faithful, sane and interior) for {', '.join(lost)}."
                           if lost else "Every model has a method whose maps pass all three checks."))
    return "\n".join(bullets)


def findings(checks: pd.DataFrame, method: str = "gradcam") -> str | None:
    """The README's findings bullet on where the models look (``method``, all predictions); None for
    a table of an earlier version."""
    if not is_current(checks):
        return None
    rows = _all_rows(checks)
    rows = rows[rows["method"] == method]
    if rows.empty:
        return None
    parts = [f"{display_name(r['model'])}: faithfulness {r['faithfulness_verdict']}, sanity {r['sanity_verdict']}, "
             f"borders {r['border_verdict']}" for _, r in rows.iterrows()]
    lost = untrusted(checks)
    trust = (f" No method passes all three checks for {', '.join(lost)}." if lost
             else " Every model has a method whose maps pass all three checks.")
    return (f"**Where the models look** ({method_name(method)}, {int(rows['n_images'].iloc[0])} test images): "
            + "; ".join(parts) + "." + trust)


def verdicts_section(checks: pd.DataFrame) -> str:
    """The README's Grad-CAM section (between its ``gradcam-verdicts`` markers)."""
    from .evaluation import markdown_table

    if not is_current(checks):
        return ("*Out of date: `results/gradcam_checks.csv` comes from an earlier version of the checks; re-run "
                "`grad_cam.ipynb`.*")
    methods = " / ".join(method_name(m) for m in dict.fromkeys(_all_rows(checks)["method"]))
    return (markdown_table(verdict_table(checks)) + f"\n\nEach cell: {methods}; all predictions of a class-balanced "
            f"sample of test images. How each verdict is reached: [docs/gradcam_method.md](docs/gradcam_method.md); "
            f"the numbers: [{FINDINGS_PAGE}]({FINDINGS_PAGE}).")


def checks_table(checks: pd.DataFrame) -> pd.DataFrame:
    """docs/gradcam.md's table: per model, method and subset, each effect with its interval, the
    test counts, Holm-adjusted p-values and the verdicts."""
    out = []
    for _, r in checks.iterrows():
        row = {"model": display_name(r["model"]), "method": method_name(r["method"]), "predictions": r["subset"],
               "images": images_cell(r)}
        for o in gc.CURVE_ORDERS:
            name = ORDER_NAMES[o]
            row[f"{name}: map - copies [95% CI]"] = _interval(r[f"{o}_diff_mean"], r[f"{o}_diff_ci_low"], r[f"{o}_diff_ci_high"])
            row[f"{name}: better / worse / tied"] = f"{int(r[f'{o}_wins'])} / {int(r[f'{o}_losses'])} / {int(r[f'{o}_ties'])}"
            row[f"{name}: sign, Wilcoxon p (Holm)"] = " , ".join(
                "–" if pd.isna(r[f"{o}_{t}_p_holm"]) else f"{r[f'{o}_{t}_p_holm']:.3g}" for t in ("sign", "wilcoxon"))
        row["ROAD: map - copies [95% CI]"] = _interval(*(r.get(f"road_diff_{k}", np.nan) for k in ("mean", "ci_low", "ci_high")))
        row["rho, all layers random [95% CI]"] = _interval(r["rank_corr_median"], r["rank_corr_ci_low"], r["rank_corr_ci_high"])
        row["constant random maps"] = int(r["random_maps_constant"])
        row["border share (uniform)"] = f"{r['border_share']:.3f} ({r['border_share_uniform']:.3f})"
        for column in ("faithfulness_verdict", "sanity_verdict", "border_verdict"):
            row[COLUMN_NAMES[column]] = r[column]
        out.append(row)
    return pd.DataFrame(out)


def settings_text(checks: pd.DataFrame) -> str:
    """The settings the table records (one value each)."""
    return "; ".join(f"{COLUMN_NAMES.get(c, c)}: {checks[c].iloc[0]}" for c in SETTINGS_COLUMNS
                     if c in checks and checks[c].nunique(dropna=False) == 1) + "."


def _curve_scope(checks: pd.DataFrame | None) -> str:
    if checks is None or not is_current(checks):
        return "ROAD curves are computed for the methods the notebook's `curve_methods` names."
    rows = _all_rows(checks)
    with_curves = [method_name(m) for m, n in zip(rows["method"], rows["n_curve_images"]) if n > 0]
    without = [method_name(m) for m, n in zip(rows["method"], rows["n_curve_images"]) if n == 0]
    return (f"In this run ROAD curves were computed for {', '.join(dict.fromkeys(with_curves)) or 'no method'}"
            + (f"; {', '.join(dict.fromkeys(without))} got the sanity and border checks only (faithfulness \"not run\")"
               if without else "") + ", on every sampled image.")


def method_markdown(checks: pd.DataFrame | None = None) -> str:
    """docs/gradcam_method.md: how each check is computed and each verdict reached, from the constants."""
    from .gradcam_stats import FAITHFULNESS_TESTS

    percentiles = f"{gc.PERCENTILES[0]}, {gc.PERCENTILES[1]}, ..., {gc.PERCENTILES[-1]}"
    return f"""# How the Grad-CAM checks work

*Generated by `scripts/update_readme.py` from `pneumonia_cxr/gradcam_checks.py` and `gradcam_stats.py`; do not edit.*

## Sample
A seeded sample of the official test split, the same number of NORMAL and PNEUMONIA images (the notebook's
`per_class`, 32 by default: 64 images), every prediction kept; each map explains the class the model predicted.
Everything is measured inside the box the model sees (its centre crop), never on the border the crop drops.

## Faithfulness: ROAD curves (Rong et al. 2022)
- The pixels of the crop are ranked by the map (ties by a seeded random order). At each of the
  {len(gc.PERCENTILES)} percentiles {percentiles} % of the crop's pixels are removed, most relevant first (MoRF)
  or least relevant first (LeRF).
- **Fill:** ROAD's noisy linear imputation. Each removed pixel becomes the weighted mean of its 8 neighbours
  (1/6 edge, 1/12 diagonal), the solution of ROAD's sparse linear system, solved by batched cascadic conjugate
  gradients ({gc.SOLVER_ITERATIONS} iterations on the crop's grid, twice as many on each coarser grid); a test holds
  it within {gc.IMPUTATION_ERROR_LIMIT:g} (input units, [0, 1]) of scipy's exact sparse solve. Gaussian noise of
  standard deviation {gc.ROAD_NOISE:g} is then added to the removed pixels.
- **Score:** the logit of the explained class (its negative for NORMAL), not the saturating sigmoid; a curve's
  value is its mean over the percentiles.
- **Baseline:** the same map flipped and shifted by up to {gc.SHIFT_FRACTION:.0%} of the crop's side, without
  wrapping (what leaves the crop is dropped and the area it uncovers is 0, so a copy can hold less of the map's
  mass than the map, and its zero pixels are ranked by the random tie-break), `baseline_draws` times per image (10 by default); every copy is
  scored at every percentile and their curves averaged.
- Per image, the paired difference map - copies: MoRF lower is better, LeRF higher is better. ROAD's combined
  score (LeRF - MoRF) / 2 is reported too, without a test.
- {_curve_scope(checks)}

## Statistics and verdicts
- A difference with |d| <= {gc.TIE_TOLERANCE:g} logit is a tie and is dropped from both tests.
- Tests per order: the exact two-sided sign test and the Wilcoxon signed-rank test. Holm's correction over the
  family of the {len(FAITHFULNESS_TESTS)} tests ({', '.join(FAITHFULNESS_TESTS)}) of every model and method with
  curves, all predictions only; the correct and wrong subsets are descriptive.
- Interval: 95% BCa bootstrap ({gc.BOOTSTRAP_RESAMPLES} resamples) of the mean difference.
- An order is "better" (or "worse") when the interval excludes 0 on that side **and** both Holm-adjusted
  p-values are below {gc.ALPHA}; otherwise "no evidence either way".
- Faithfulness: "faithful" when both orders are better, "partly faithful (MoRF)" or "(LeRF)" when one is,
  "worse than its shifted copies" when any is worse, else "no evidence either way"; "too few images" when even a
  win on every image could not pass Holm's correction; "not run" without curves.

## Sanity: cascading randomisation (Adebayo et al. 2018)
- The layers with weights, grouped by stage (an Xception block, or conv*k* with bn*k*), are re-initialised
  cumulatively from the output down, for `sanity_seeds` seeds (3 by default), at up to `sanity_stages` depths.
- At each depth the map of the same class is compared with the trained map by Spearman's rho at the last
  convolution's resolution (`results/gradcam_sanity_per_layer.csv`).
- An image passes when |median rho| over seeds with every layer randomised is below {gc.RANK_CORR_LIMIT}.
  A constant random-weights map has no ranks: it is counted apart and is never a pass.
- The verdict "passes" needs the share of passing images to be significantly above one half: one-sided sign
  test, Holm over the sanity tests of the table.

## Borders
- The share of a map's mass in the outer {gc.BORDER_FRACTION:.0%} of each side of the crop the model sees,
  against a map uniform over that crop.
- "interior" when the share of images below the uniform map's is significantly above one half (one-sided sign
  test, Holm over the border tests); otherwise "not interior".

## Cost
The 15-minute target on 2 cores is not met by this design: the ROAD curves need
{len(gc.PERCENTILES) * 2} x (1 + `baseline_draws`) forward passes and imputations per image and method.
"""


def gradcam_markdown(checks: pd.DataFrame, figures: Iterable[str] = ()) -> str:
    """docs/gradcam.md: the verdicts, the numbers behind them, the settings and the figures
    (``figures``: file names under images_for_readme/)."""
    from .evaluation import markdown_table

    head = ("# Grad-CAM: where the models look, and how far the maps can be trusted\n\n*Generated by "
            "`scripts/update_readme.py` from `results/gradcam_checks.csv`; do not edit. How each number is computed: "
            "[gradcam_method.md](gradcam_method.md).*\n\n")
    if is_current(checks):
        text = (head + "## Verdicts\n\n" + findings_markdown(checks) + "\n\n## Every check\n\n"
                + markdown_table(checks_table(checks)) + f"\n\nSettings: {settings_text(checks)}\n")
    else:
        text = head + "*Out of date: the committed checks come from an earlier version; re-run `grad_cam.ipynb`.*\n"
    shown = sorted(figures)
    if shown:
        text += "\n## Figures\n\n" + "\n\n".join(f"![{f}](../images_for_readme/{f})" for f in shown) + "\n"
    return text


def write_gradcam_docs(checks: pd.DataFrame, docs_dir: Path, figures_dir: Path | None = None) -> list[Path]:
    """Write docs/gradcam.md and docs/gradcam_method.md; returns their paths."""
    docs_dir = Path(docs_dir)
    figures = ([p.name for p in Path(figures_dir).glob("gradcam*.png")]
               if figures_dir is not None and Path(figures_dir).is_dir() else [])
    pages = {docs_dir / "gradcam.md": gradcam_markdown(checks, figures),
             docs_dir / "gradcam_method.md": method_markdown(checks)}
    for path, text in pages.items():
        path.write_text(text)
    return list(pages)


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------
def remove_stale_figures(figures_dir: Path, models: Iterable[str]) -> list[Path]:
    """Delete the Grad-CAM figures (``gradcam*_<model>.png``) of models not in ``models``; returns them."""
    keep = set(models)
    stale = [p for p in Path(figures_dir).glob("gradcam*.png")
             if p.stem.startswith(FIGURE_PREFIXES) and p.stem != "gradcam_fullsize_example"
             and not any(p.stem.endswith(f"_{m}") for m in keep)]
    for path in stale:
        path.unlink()
    return stale


def plot_sanity_depth(cascade: pd.DataFrame, title: str):
    """Median rho (over images and seeds) against the number of layers randomised, per method."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for method, rows in cascade.groupby("method", sort=False):
        by_depth = rows.groupby("layers_randomised")["rank_corr"]
        ax.plot(by_depth.median().index, by_depth.median().to_numpy(), "o-", label=method_name(method))
        ax.fill_between(by_depth.median().index, by_depth.quantile(0.25), by_depth.quantile(0.75), alpha=0.2)
    ax.axhline(gc.RANK_CORR_LIMIT, color="grey", ls=":")
    ax.set(xlabel="layers randomised (from the output down)", ylabel="Spearman rho with the trained map",
           title=f"{title}: {cascade['image'].nunique()} images, {cascade['seed'].nunique()} seeds")
    ax.legend()
    return fig


def plot_road_curves(curves: Mapping[str, Mapping[str, np.ndarray]], explained: np.ndarray, title: str):
    """Mean ROAD curves of each method's maps (solid) and shifted copies (dashed), per explained class."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, label in zip(axes, (0, 1)):
        pick = np.asarray(explained) == label
        for method, kinds in curves.items():
            for order, colour in zip(gc.CURVE_ORDERS, ("C3", "C0")):
                ax.plot(gc.PERCENTILES, kinds[order][pick].mean(axis=0), "-", color=colour,
                        label=f"{method_name(method)} {ORDER_NAMES[order]} map")
                ax.plot(gc.PERCENTILES, kinds[f"{order}_shifted"][pick].mean(axis=(0, 1)), "--", color=colour,
                        label=f"{ORDER_NAMES[order]} shifted copies")
        ax.set(title=f"explains {CLASS_NAMES[label]} ({int(pick.sum())} images)", xlabel="% of the crop removed")
    axes[0].set_ylabel("logit of the explained class")
    axes[1].legend(fontsize=7)
    fig.suptitle(title)
    return fig


def plot_examples(pixels: np.ndarray, maps: Mapping[str, np.ndarray], titles: list[str], title: str):
    """One row per image: the X-ray, then each method's map over it."""
    import matplotlib.pyplot as plt

    from .gradcam import overlay_heatmap

    fig, axes = plt.subplots(len(pixels), 1 + len(maps), figsize=(3 * (1 + len(maps)), 3 * len(pixels)), squeeze=False)
    for row, image in enumerate(pixels):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title(titles[row], fontsize=8)
        for col, (method, m) in enumerate(maps.items(), start=1):
            axes[row, col].imshow(overlay_heatmap(image, m[row]))
            axes[row, col].set_title(method_name(method), fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"{title} ({len(pixels)} images)")
    fig.tight_layout()
    return fig
