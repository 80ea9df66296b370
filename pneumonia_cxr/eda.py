"""Exploratory data analysis: counts, sample grids, Canny edges, sizes, intensities, patients, duplicates."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from .common import CLASS_NAMES, SPLITS
from .dataset import subsample_per_class
from .images import decode_image_bytes
from .plots import _new_figure, _plain_log_axis, _save_figure

# ----------------------------------------------------------------------------------------------
# Exploratory data analysis
# ----------------------------------------------------------------------------------------------
EXAMPLE_MAX_SIDE = 256  # pixels: example X-rays written for the app and the README are at most this
SUBSET_TITLES = {"split": "official split", "subset": "patient-grouped re-split"}


def _ordered(values: Iterable[str], order: Sequence[str]) -> list[str]:
    """``order`` restricted to the values present, then any others sorted."""
    present = set(values)
    return [v for v in order if v in present] + sorted(present - set(order))


def load_gray(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file into uint8 grayscale (H, W) at its full resolution."""
    import cv2

    rgb = decode_image_bytes(Path(path).read_bytes(), source=str(path))
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def class_counts(index: pd.DataFrame, by: str = "split") -> pd.DataFrame:
    """Images per split and class.

    Args:
        by: ``"split"`` (official split) or ``"subset"`` (from :func:`patient_grouped_split`).

    Returns:
        Rows train, val, test (those present) and ``all``; columns NORMAL, PNEUMONIA, total
        (image counts) and pneumonia_share (PNEUMONIA / total, in [0, 1]).
    """
    table = (pd.crosstab(index[by], index["label"])
             .reindex(index=_ordered(index[by], SPLITS), columns=list(CLASS_NAMES), fill_value=0))
    table.loc["all"] = table.sum()
    table["total"] = table[list(CLASS_NAMES)].sum(axis=1)
    table["pneumonia_share"] = (table["PNEUMONIA"] / table["total"].where(table["total"] > 0)).round(3)
    table.index.name, table.columns.name = by, None
    return table




def plot_class_counts(index: pd.DataFrame, by: Sequence[str] = ("split",),
                      path: str | os.PathLike | None = None):
    """Bar plot of images per class in each split, one panel per column of ``by``
    (e.g. ``("split", "subset")``: official split and patient-grouped re-split). Returns the Figure."""
    figure = _new_figure(5.5 * len(by), 4.2)
    axes = figure.subplots(1, len(by), squeeze=False)[0]
    colours = {"NORMAL": "tab:blue", "PNEUMONIA": "tab:orange"}
    for ax, column in zip(axes, by):
        table = class_counts(index, column).drop(index="all")
        positions = np.arange(len(table))
        for offset, label in zip((-0.2, 0.2), CLASS_NAMES):
            bars = ax.bar(positions + offset, table[label], width=0.4, label=label, color=colours[label])
            ax.bar_label(bars, fontsize=8)
        ax.set_xticks(positions, table.index)
        ax.set_xlabel(SUBSET_TITLES.get(column, column))
        ax.set_ylabel("images")
        ax.set_title(f"Images per class, {SUBSET_TITLES.get(column, column)}")
        ax.legend(title="class")
    _save_figure(figure, path)
    return figure


def plot_sample_grid(index: pd.DataFrame, per_class: int = 4, seed: int = 0,
                     path: str | os.PathLike | None = None):
    """Grid of random X-rays: one row per class, ``per_class`` columns, titled with file name,
    split and size in pixels. Returns the Figure."""
    rows = subsample_per_class(index, per_class, seed, by=["label"])
    labels = _ordered(rows["label"], CLASS_NAMES)
    figure = _new_figure(2.6 * per_class, 2.9 * len(labels))
    axes = figure.subplots(len(labels), per_class, squeeze=False)
    for r, label in enumerate(labels):
        chosen = rows[rows["label"] == label]
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(chosen):
                ax.set_visible(False)
                continue
            row = chosen.iloc[c]
            image = load_gray(row["path"])
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            ax.set_title(f"{row['filename']}\n{row['split']}, {image.shape[1]}x{image.shape[0]} px", fontsize=8)
            if c == 0:
                ax.set_ylabel(label, fontsize=12)
    figure.suptitle("Random chest X-rays per class")
    _save_figure(figure, path)
    return figure


def canny_edges(image: np.ndarray, low: float = 30, high: float = 90) -> np.ndarray:
    """Canny edge map (cv2.Canny, hysteresis thresholds ``low`` < ``high`` on the gradient
    magnitude) of a uint8 grayscale (H, W) or RGB (H, W, 3) image: uint8 (H, W), 255 on edges, 0 elsewhere."""
    import cv2

    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.Canny(image, low, high)


def plot_canny(paths: Sequence[str | os.PathLike],
               thresholds: Sequence[tuple[float, float]] = ((100, 200), (30, 90)),
               path: str | os.PathLike | None = None):
    """Each image at its full resolution beside its Canny edges for each (low, high) threshold
    pair (thresholds in the titles): one row per image, columns original then one per pair.
    Returns the Figure."""
    figure = _new_figure(4.5 * (1 + len(thresholds)), 4.0 * len(paths))
    axes = figure.subplots(len(paths), 1 + len(thresholds), squeeze=False)
    for row_axes, image_path in zip(axes, paths):
        image = load_gray(image_path)
        name, size = Path(image_path).name, f"{image.shape[1]}x{image.shape[0]} px"
        row_axes[0].imshow(image, cmap="gray", vmin=0, vmax=255)
        row_axes[0].set_title(f"{Path(image_path).parent.name}: {name}\noriginal, {size}", fontsize=9)
        for ax, (low, high) in zip(row_axes[1:], thresholds):
            edges = canny_edges(image, low, high)
            ax.imshow(edges, cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
            ax.set_title(f"Canny edges, low={low:g}, high={high:g}\n"
                         f"{(edges > 0).mean():.2%} of pixels are edges", fontsize=9)
        for ax in row_axes:
            ax.set_xlabel("x (pixels)")
            ax.set_ylabel("y (pixels)")
    figure.suptitle("Canny edge detection on full-resolution originals")
    _save_figure(figure, path)
    return figure


def size_summary(index: pd.DataFrame) -> pd.DataFrame:
    """Image geometry per class (use an index of full-size originals): images, median width and
    height (pixels), median and quartiles of the aspect ratio width / height, median megapixels,
    share of 1-channel (grayscale) files."""
    geometry = index.assign(aspect=index["width"] / index["height"],
                            megapixels=index["width"] * index["height"] / 1e6)
    grouped = geometry.groupby("label")
    table = pd.DataFrame({
        "images": grouped.size(),
        "width_median": grouped["width"].median(),
        "height_median": grouped["height"].median(),
        "aspect_q25": grouped["aspect"].quantile(0.25),
        "aspect_median": grouped["aspect"].median(),
        "aspect_q75": grouped["aspect"].quantile(0.75),
        "megapixels_median": grouped["megapixels"].median(),
        "grayscale_share": grouped["channels"].apply(lambda c: (c == 1).mean()),
    })
    return table.reindex(_ordered(table.index, CLASS_NAMES)).round(3)


def plot_size_distribution(index: pd.DataFrame, path: str | os.PathLike | None = None):
    """Width against height (pixels) and the aspect ratio width / height, per class. Returns the Figure."""
    figure = _new_figure(11, 4.3)
    scatter, histogram = figure.subplots(1, 2)
    aspect = index["width"] / index["height"]
    bins = np.linspace(aspect.min(), aspect.max(), 31)
    for label in _ordered(index["label"], CLASS_NAMES):
        rows = index["label"] == label
        scatter.scatter(index.loc[rows, "width"], index.loc[rows, "height"], s=10, alpha=0.6,
                        label=f"{label} (n={rows.sum()})")
        histogram.hist(aspect[rows], bins=bins, density=True, alpha=0.55, label=label)
    top = float(index[["width", "height"]].max().max())
    scatter.plot([0, top], [0, top], color="grey", linestyle=":", label="square (width = height)")
    scatter.set(xlabel="width (pixels)", ylabel="height (pixels)", title="Original image sizes per class")
    histogram.axvline(1.0, color="grey", linestyle=":", label="square, as the 224 x 224 input")
    histogram.set(xlabel="aspect ratio width / height", ylabel="density",
                  title="Aspect ratio per class (squashed to 1 at 224 x 224)")
    scatter.legend()
    histogram.legend()
    _save_figure(figure, path)
    return figure


def intensity_histograms(paths: Sequence[str | os.PathLike], bins: int = 64) -> np.ndarray:
    """Gray-level histograms at full resolution: float64 (N, bins), each row the share of an
    image's pixels per bin of equal width over 0..255 (rows sum to 1)."""
    edges = np.linspace(0, 256, bins + 1)
    rows = [np.histogram(load_gray(p), bins=edges)[0] for p in paths]
    counts = np.asarray(rows, dtype=np.float64).reshape(len(rows), bins)
    return counts / counts.sum(axis=1, keepdims=True)


def representative_rows(labels: Sequence[str], histograms: np.ndarray) -> dict[str, int]:
    """Per class, the row position of the image whose histogram is closest (L1) to its class mean."""
    labels = np.asarray(labels)
    chosen = {}
    for label in _ordered(labels, CLASS_NAMES):
        rows = np.flatnonzero(labels == label)
        distance = np.abs(histograms[rows] - histograms[rows].mean(axis=0)).sum(axis=1)
        chosen[label] = int(rows[np.argmin(distance)])
    return chosen


def plot_intensity_histograms(index: pd.DataFrame, histograms: np.ndarray,
                              path: str | os.PathLike | None = None):
    """Mean gray-level histogram per class (band: 25th-75th percentile over images) with the
    histograms of two representative images, and those two images. ``histograms`` (N, bins) come
    from :func:`intensity_histograms` of ``index["path"]``. Returns the Figure."""
    figure = _new_figure(15, 4.5)
    plot, *image_axes = figure.subplots(1, 3, width_ratios=[1.4, 1, 1])
    bins = histograms.shape[1]
    centres = (np.arange(bins) + 0.5) * 256 / bins
    representatives = representative_rows(index["label"], histograms)
    for (label, row), ax, colour in zip(representatives.items(), image_axes, ("tab:blue", "tab:orange")):
        rows = (index["label"] == label).to_numpy()
        low, high = np.percentile(histograms[rows], [25, 75], axis=0)
        plot.fill_between(centres, low, high, color=colour, alpha=0.2)
        plot.plot(centres, histograms[rows].mean(axis=0), color=colour, label=f"{label} mean (n={rows.sum()})")
        name = index["filename"].iloc[row]
        plot.plot(centres, histograms[row], color=colour, linestyle="--", label=f"{label} example {name}")
        image = load_gray(index["path"].iloc[row])
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{label} example: {name}\n{image.shape[1]}x{image.shape[0]} px, mean gray {image.mean():.0f}",
                     fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    plot.set(xlabel="gray level (0 = black, 255 = white)", ylabel="share of pixels per bin",
             title="Pixel intensity histograms per class")
    plot.legend(fontsize=8)
    _save_figure(figure, path)
    return figure


def find_duplicates(index: pd.DataFrame) -> pd.DataFrame:
    """Groups of byte-identical files (same sha256), one row per group.

    Columns: sha256, n_files, filenames ("; "-joined), splits and labels (distinct values,
    ","-joined), patients (distinct patient ids), scope ("within one split" / "across splits"),
    label_conflict (True when the copies carry different classes). Empty when there are none.
    """
    columns = ["sha256", "n_files", "filenames", "splits", "labels", "patients", "scope", "label_conflict"]
    copies = index[index["sha256"].duplicated(keep=False)]
    if copies.empty:
        return pd.DataFrame(columns=columns)
    table = copies.groupby("sha256").agg(
        n_files=("path", "size"), filenames=("filename", lambda s: "; ".join(sorted(s))),
        splits=("split", lambda s: ",".join(_ordered(s, SPLITS))),
        labels=("label", lambda s: ",".join(_ordered(s, CLASS_NAMES))),
        patients=("patient_id", lambda s: ",".join(sorted(set(s)))),
        n_splits=("split", "nunique"), n_labels=("label", "nunique")).reset_index()
    table["scope"] = np.where(table["n_splits"] > 1, "across splits", "within one split")
    table["label_conflict"] = table["n_labels"] > 1
    return table.sort_values(["scope", "filenames"]).reset_index(drop=True)[columns]


def patient_counts(index: pd.DataFrame, by: str = "split") -> pd.DataFrame:
    """Patients (ids from file names, :func:`parse_patient_id`) per split and class.

    Returns rows (``by``, label); columns images, patients, images_per_patient_mean,
    images_per_patient_max, and ids_in_other_splits: patient ids of this row also found in another
    split (same id in two splits: a possible leak, or the same number reused for another patient).
    """
    splits_per_id = index.groupby("patient_id")[by].nunique()
    grouped = index.groupby([by, "label"])
    per_patient = index.groupby([by, "label", "patient_id"]).size()
    table = pd.DataFrame({
        "images": grouped.size(),
        "patients": grouped["patient_id"].nunique(),
        "images_per_patient_mean": per_patient.groupby(level=[0, 1]).mean().round(2),
        "images_per_patient_max": per_patient.groupby(level=[0, 1]).max(),
        "ids_in_other_splits": grouped["patient_id"].apply(lambda ids: int((splits_per_id[ids.unique()] > 1).sum())),
    })
    order = [(s, c) for s in _ordered(index[by], SPLITS) for c in CLASS_NAMES if (s, c) in table.index]
    return table.reindex(order)


# File names carry a naming series and a number: ``person<N>_<bacteria|virus>_<image>`` (PNEUMONIA),
# ``IM-<study>-<image>`` and ``NORMAL2-IM-<study>-<image>`` (NORMAL).
_NAME_SERIES_PATTERNS = (
    re.compile(r"^person(?P<number>\d+)_(?P<series>bacteria|virus)_\d+", re.IGNORECASE),
    re.compile(r"^(?P<series>NORMAL2-IM|IM)-(?P<number>\d+)-\d+", re.IGNORECASE),
)
ID_READINGS = {  # in the order the tables show them
    "patient_id": "the id the split groups by (parse_patient_id): personNNN; IM-XXXX or NORMAL2-IM-XXXX",
    "series_id": "the number within its naming series: personNNN_bacteria or personNNN_virus; "
                 "IM-XXXX or NORMAL2-IM-XXXX",
    "number": "the number alone (personNNN -> NNN, IM-XXXX and NORMAL2-IM-XXXX -> XXXX)",
}
PNEUMONIA_SERIES = ("bacteria", "virus")
OVERLAP_TARGET, OVERLAP_REFERENCE = "test", ("train", "val")


def name_series_and_number(filename: str) -> tuple[str, str]:
    """(naming series, number) of a data set file name, the number without leading zeros.

    ``person12_virus_40.jpeg`` -> ``("virus", "12")``; ``IM-0115-0001.jpeg`` -> ``("IM", "115")``;
    ``NORMAL2-IM-0007-0001.jpeg`` -> ``("NORMAL2-IM", "7")``. A name of no known pattern gives
    ``("", stem)``, so it never shares an id with another file.
    """
    stem = Path(filename).stem
    for pattern in _NAME_SERIES_PATTERNS:
        match = pattern.match(stem)
        if match:
            series = match.group("series")
            series = series.lower() if series.lower() in PNEUMONIA_SERIES else series.upper()
            return series, str(int(match.group("number")))
    return "", stem


def patient_id_readings(index: pd.DataFrame) -> pd.DataFrame:
    """``index`` with one column per reading of the file-name id (see ``ID_READINGS``):
    ``number``, ``patient_id`` (already there) and ``series_id`` (``<series>:<number>``), plus
    ``naming_series`` (bacteria, virus, IM, NORMAL2-IM; empty for unknown names)."""
    parts = [name_series_and_number(name) for name in index["filename"]]
    return index.assign(number=[n for _, n in parts], naming_series=[s for s, _ in parts],
                        series_id=[f"{s}:{n}" if s else n for s, n in parts])


def patient_id_counts(index: pd.DataFrame, by: str = "split", id_column: str = "patient_id") -> pd.DataFrame:
    """Images and distinct ids (``id_column``) per ``by`` (``"split"`` or ``"subset"``) and class.

    Returns rows (``by``, label) in split then class order; columns images, ids.
    """
    grouped = index.groupby([by, "label"])
    table = pd.DataFrame({"images": grouped.size(), "ids": grouped[id_column].nunique()})
    order = [(s, c) for s in _ordered(index[by], SPLITS) for c in CLASS_NAMES if (s, c) in table.index]
    return table.reindex(order)


def patient_id_overlap(index: pd.DataFrame, id_column: str = "patient_id", by: str = "split",
                       target: str = OVERLAP_TARGET,
                       reference: Sequence[str] = OVERLAP_REFERENCE) -> pd.DataFrame:
    """Per class, how many ids (``id_column``) of the ``target`` split also occur in ``reference``.

    Returns one row per class (index: label) with columns target_ids, reference_ids, shared_ids,
    shared_share (shared_ids / target_ids), target_images, target_images_of_shared_ids, and
    ``shared_with_<split>`` for each reference split. Ids are compared within a class only.
    """
    rows = {}
    for label in _ordered(index["label"], CLASS_NAMES):
        of_class = index[index["label"] == label]
        target_rows = of_class[of_class[by] == target]
        target_ids = set(target_rows[id_column])
        reference_ids = {split: set(of_class.loc[of_class[by] == split, id_column]) for split in reference}
        pooled = set().union(*reference_ids.values())
        shared = target_ids & pooled
        rows[label] = {
            "target_ids": len(target_ids), "reference_ids": len(pooled), "shared_ids": len(shared),
            "shared_share": round(len(shared) / len(target_ids), 3) if target_ids else None,
            "target_images": len(target_rows),
            "target_images_of_shared_ids": int(target_rows[id_column].isin(shared).sum()),
            **{f"shared_with_{split}": len(target_ids & ids) for split, ids in reference_ids.items()},
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "label"
    return table


def patient_overlap_report(index: pd.DataFrame, target: str = OVERLAP_TARGET,
                           reference: Sequence[str] = OVERLAP_REFERENCE) -> dict:
    """Patient-id counts and test/train overlap as plain data (JSON-ready).

    Keys: ``readings`` (``ID_READINGS``), ``target`` and ``reference`` (split names),
    ``counts`` (records of :func:`patient_id_counts` with column ``by``, for ``split`` and, when
    ``index`` has it, ``subset`` of :func:`patient_grouped_split`), ``overlap`` (records of
    :func:`patient_id_overlap` for each reading, with columns ``label`` and ``reading``).
    """
    readings = patient_id_readings(index)
    counts = [patient_id_counts(readings, by).rename_axis(["group", "label"]).reset_index().assign(by=by)
              for by in ("split", "subset") if by in readings.columns]
    overlap = [patient_id_overlap(readings, reading, "split", target, reference).reset_index().assign(reading=reading)
               for reading in ID_READINGS]
    return {"readings": dict(ID_READINGS), "target": target, "reference": list(reference),
            "counts": pd.concat(counts, ignore_index=True).to_dict(orient="records"),
            "overlap": pd.concat(overlap, ignore_index=True).to_dict(orient="records")}


def patient_overlap_table(report: dict) -> pd.DataFrame:
    """The overlap part of :func:`patient_overlap_report` as a readable table: one row per class and
    id reading (``patient_id`` first), columns class, id read as, test ids, train+val ids, shared
    ids, shared share, test images, test images of shared ids (named after the report's splits)."""
    target, reference = report["target"], "+".join(report["reference"])
    order = {reading: rank for rank, reading in enumerate(report["readings"])}
    table = pd.DataFrame(report["overlap"])
    table = table.sort_values(["label", "reading"], key=lambda c: c.map(order) if c.name == "reading" else c)
    return pd.DataFrame({
        "class": table["label"], "id read as": table["reading"],
        f"{target} ids": table["target_ids"], f"{reference} ids": table["reference_ids"],
        f"{target} ids also in {reference}": table["shared_ids"], "share": table["shared_share"],
        f"{target} images": table["target_images"],
        f"{target} images of those ids": table["target_images_of_shared_ids"],
    }).reset_index(drop=True)


def patient_overlap_summary(report: dict) -> str:
    """One sentence per class from :func:`patient_overlap_report`: how many target ids (and their
    images) also occur in the reference splits, by ``patient_id`` and within the naming series."""
    target, reference = report["target"], "+".join(report["reference"])
    overlap = pd.DataFrame(report["overlap"]).set_index(["label", "reading"])
    sentences = []
    for label in _ordered(overlap.index.get_level_values("label"), CLASS_NAMES):
        counts = ["shared_ids", "target_ids", "target_images_of_shared_ids", "target_images"]
        grouped = overlap.loc[(label, "patient_id"), counts].astype(int)
        series = overlap.loc[(label, "series_id"), counts].astype(int)
        sentences.append(
            f"{label}: {grouped['shared_ids']} of {grouped['target_ids']} {target} patient ids also occur in "
            f"{reference} ({grouped['target_images_of_shared_ids']} of {grouped['target_images']} {target} "
            f"images); read within the naming series, {series['shared_ids']} of {series['target_ids']}.")
    return " ".join(sentences)


def save_patient_overlap(report: dict, path: str | os.PathLike) -> Path:
    """Write :func:`patient_overlap_report`'s ``report`` as indented JSON; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=int) + "\n")
    return path


def plot_images_per_patient(index: pd.DataFrame, path: str | os.PathLike | None = None):
    """Bar plot: how many patient ids (all splits of ``index`` pooled) have 1, 2, 3, ... images,
    per class. Returns the Figure."""
    figure = _new_figure(8, 4.2)
    ax = figure.subplots()
    counts = index.groupby(["label", "patient_id"]).size()
    top = int(counts.max())
    positions = np.arange(1, top + 1)
    for offset, label in zip((-0.2, 0.2), _ordered(counts.index.get_level_values(0), CLASS_NAMES)):
        patients = counts.loc[label].value_counts().reindex(positions, fill_value=0)
        ax.bar(positions + offset, patients.to_numpy(), width=0.4, label=f"{label} ({len(counts.loc[label])} ids)")
    _plain_log_axis(ax, "y")  # plain tick labels: no mathtext, so no font fallback warnings
    ax.set_xticks(positions)
    ax.set(xlabel="images per patient id", ylabel="patients (log scale)",
           title="Images per patient id (parsed from file names, all splits pooled)")
    ax.legend(title="class")
    _save_figure(figure, path)
    return figure


def save_example_images(index: pd.DataFrame, out_dir: str | os.PathLike,
                        max_side: int = EXAMPLE_MAX_SIDE, seed: int = 0) -> list[Path]:
    """Write one random X-ray per split and class as ``example_<split>_<class>.png`` in ``out_dir``:
    decoded from the data, grayscale, shrunk (aspect kept) to at most ``max_side`` pixels a side
    and re-encoded as PNG. Returns the paths written, in split then class order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    picks = subsample_per_class(index, 1, seed).set_index(["split", "label"])
    written = []
    for split, label in ((s, c) for s in SPLITS for c in CLASS_NAMES if (s, c) in picks.index):
        image = Image.fromarray(load_gray(picks.loc[(split, label), "path"]))
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        target = out_dir / f"example_{split}_{label.lower()}.png"
        image.save(target, format="PNG")
        written.append(target)
    return written


# ----------------------------------------------------------------------------------------------
# What the notebook found, in numbers and in words
# ----------------------------------------------------------------------------------------------
def data_summary(index: pd.DataFrame, fullsize: pd.DataFrame, duplicates: pd.DataFrame, overlap: dict,
                 mean_gray: pd.Series | None = None) -> dict:
    """The numbers ``data_visualization.ipynb`` computed, as plain data (JSON-ready) for
    :func:`data_findings` and the README.

    Args:
        index: the whole data set with ``split`` and, from :func:`patient_grouped_split`, ``subset``.
        fullsize: index of the full-size originals (sizes and channels mean something there only).
        duplicates: :func:`find_duplicates` of ``index``.
        overlap: :func:`patient_overlap_report` of ``index``.
        mean_gray: mean grey level (0-255) per image of ``fullsize`` (same index), or None.
    """
    def per_class(frame: pd.DataFrame, column: str) -> dict[str, int]:
        counts = frame[column].value_counts()
        return {label: int(counts.get(label, 0)) for label in CLASS_NAMES}

    train = index[index["split"] == "train"]
    sizes = size_summary(fullsize)
    per_patient = index.groupby(["label", "patient_id"]).size()
    summary = {
        "images": int(len(index)),
        "official": {split: per_class(index[index["split"] == split], "label") for split in SPLITS},
        "resplit": ({subset: per_class(index[index["subset"] == subset], "label")
                     for subset in _ordered(index["subset"], SPLITS)} if "subset" in index else None),
        "train_pneumonia_share": round(float((train["label"] == "PNEUMONIA").mean()), 3) if len(train) else None,
        "fullsize_images": int(len(fullsize)),
        "sizes": {label: {"images": int(row["images"]), "width_median": float(row["width_median"]),
                          "height_median": float(row["height_median"]),
                          "aspect_median": float(row["aspect_median"]),
                          "megapixels_median": float(row["megapixels_median"]),
                          "grayscale_share": float(row["grayscale_share"])}
                  for label, row in sizes.iterrows()},
        "mean_gray": ({label: {"mean": round(float(values.mean()), 1), "sd": round(float(values.std()), 1)}
                       for label, values in mean_gray.groupby(fullsize["label"])}
                      if mean_gray is not None else None),
        "duplicates": {"groups": int(len(duplicates)),
                       "files": int(duplicates["n_files"].sum()) if len(duplicates) else 0,
                       "across_splits": int((duplicates["scope"] == "across splits").sum()) if len(duplicates) else 0,
                       "label_conflicts": int(duplicates["label_conflict"].sum()) if len(duplicates) else 0},
        "images_per_patient": {label: {"mean": round(float(per_patient.loc[label].mean()), 2),
                                       "max": int(per_patient.loc[label].max())}
                               for label in _ordered(per_patient.index.get_level_values(0), CLASS_NAMES)},
        "overlap": {row["label"]: {"reading": row["reading"], "shared_ids": int(row["shared_ids"]),
                                   "target_ids": int(row["target_ids"]),
                                   "target_images_of_shared_ids": int(row["target_images_of_shared_ids"]),
                                   "target_images": int(row["target_images"])}
                    for row in overlap["overlap"] if row["reading"] == "patient_id"},
        "overlap_within_series": {row["label"]: int(row["shared_ids"]) for row in overlap["overlap"]
                                  if row["reading"] == "series_id"},
    }
    return summary


def save_data_summary(summary: dict, path: str | os.PathLike) -> Path:
    """Write :func:`data_summary`'s dict as indented JSON; return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def size_shortcut_sentence(summary: dict) -> str:
    """One sentence on how the classes' full-size originals differ in size, aspect ratio and
    colour mode (from :func:`data_summary`), or "" when the summary lacks a class."""
    sizes = summary.get("sizes", {})
    if not all(label in sizes for label in CLASS_NAMES):
        return ""
    normal, pneumonia = sizes["NORMAL"], sizes["PNEUMONIA"]
    ratio = normal["megapixels_median"] / pneumonia["megapixels_median"] if pneumonia["megapixels_median"] else float("nan")
    bigger = "larger" if ratio >= 1 else "smaller"
    factor = ratio if ratio >= 1 else 1 / ratio
    colour = ""
    if normal["grayscale_share"] != pneumonia["grayscale_share"]:
        def share(row: dict) -> str:
            return "none" if row["grayscale_share"] == 1 else f"{round(1 - row['grayscale_share'], 9):.0%}"  # round first: 1 - 0.925 is 0.07499... in floats

        colour = f"; in colour: {share(normal)} of NORMAL and {share(pneumonia)} of PNEUMONIA files"
    return (f"NORMAL originals are median {normal['width_median']:.0f} x {normal['height_median']:.0f} px (aspect "
            f"{normal['aspect_median']:.2f}), PNEUMONIA {pneumonia['width_median']:.0f} x "
            f"{pneumonia['height_median']:.0f} (aspect {pneumonia['aspect_median']:.2f}), {factor:.1f} times "
            f"{bigger} by area{colour} (a sample of {summary['fullsize_images']} full-size originals). Squashed to 224 x 224, this "
            f"survives as a class-specific distortion of the chest that a model can learn.")


def data_findings(summary: dict) -> str:
    """The findings of ``data_visualization.ipynb`` as Markdown bullets, every number taken from
    :func:`data_summary`'s dict (nothing typed)."""
    lines = []
    train = summary["official"]["train"]
    total = sum(train.values())
    if total:
        weights = {label: total / (2 * n) if n else float("nan") for label, n in train.items()}
        lines.append(f"- **Imbalance.** The official training split holds {train['PNEUMONIA']:,} PNEUMONIA and "
                     f"{train['NORMAL']:,} NORMAL images ({train['PNEUMONIA'] / total:.0%} PNEUMONIA), so training "
                     f"weighs each class equally (balanced weights NORMAL {weights['NORMAL']:.2f}, "
                     f"PNEUMONIA {weights['PNEUMONIA']:.2f}).")
    val, resplit = summary["official"]["val"], summary.get("resplit")
    if resplit and "val" in resplit:
        lines.append(f"- **Validation.** The official validation split has {sum(val.values())} images, too few to "
                     f"choose an epoch or a threshold; the patient-grouped re-split of train + val gives "
                     f"{sum(resplit['val'].values())} validation and {sum(resplit.get('train', {}).values()):,} "
                     f"training images, each patient id in one of them.")
    shortcut = size_shortcut_sentence(summary)
    if shortcut:
        lines.append(f"- **Size shortcut.** {shortcut}")
    gray = summary.get("mean_gray")
    if gray and all(label in gray for label in CLASS_NAMES):
        gap = abs(gray["NORMAL"]["mean"] - gray["PNEUMONIA"]["mean"])
        pooled_sd = max(gray["NORMAL"]["sd"], gray["PNEUMONIA"]["sd"])
        verdict = ("about the same brightness on average" if gap < 0.25 * pooled_sd
                   else "a different brightness on average")
        lines.append(f"- **Grey levels.** Mean grey level per image: NORMAL {gray['NORMAL']['mean']:.0f} "
                     f"(sd {gray['NORMAL']['sd']:.0f}), PNEUMONIA {gray['PNEUMONIA']['mean']:.0f} "
                     f"(sd {gray['PNEUMONIA']['sd']:.0f}): {verdict}, with PNEUMONIA images "
                     f"{'more' if gray['PNEUMONIA']['sd'] > gray['NORMAL']['sd'] else 'less'} varied.")
    dup = summary["duplicates"]
    lines.append(f"- **Copies.** {dup['groups']} groups of byte-identical files ({dup['files']} files), "
                 f"{dup['across_splits']} of them across splits, {dup['label_conflicts']} with conflicting labels; "
                 f"the re-split keeps each group in one subset.")
    per_patient = summary.get("images_per_patient", {})
    overlap = summary.get("overlap", {}).get("PNEUMONIA")
    if overlap and "PNEUMONIA" in per_patient:
        within = summary.get("overlap_within_series", {}).get("PNEUMONIA")
        lines.append(f"- **Patients.** A PNEUMONIA patient id has {per_patient['PNEUMONIA']['mean']:.1f} images on "
                     f"average over all splits (up to {per_patient['PNEUMONIA']['max']}). {overlap['shared_ids']} of "
                     f"{overlap['target_ids']} PNEUMONIA test ids ({overlap['target_images_of_shared_ids']} of "
                     f"{overlap['target_images']} test images) recur in train + val read as `personNNN`"
                     + (f", {within} read within the bacteria / virus naming series" if within is not None else "")
                     + "; the file names cannot tell whether they are the same children.")
    return "\n".join(lines)
