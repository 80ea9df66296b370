"""A Grad-CAM heatmap drawn over an image in matplotlib's "jet" colour map, with Pillow only (no
matplotlib, so the app can serve without it)."""
from __future__ import annotations

import numpy as np
from PIL import Image

# matplotlib's "jet" colour map (segment data of matplotlib._cm), the colours of gradcam.overlay_heatmap,
# without matplotlib (the serving image has none): {channel: ((x, value), ...)}, linear between the points.
JET_SEGMENTS = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


def jet_palette() -> list[list[int]]:
    """[red, green, blue] lookup tables (256 entries each, 0-255) of the "jet" colour map, as
    matplotlib's ``colormaps["jet"](i / 255, bytes=True)``."""
    levels = np.linspace(0.0, 1.0, 256)
    return [(np.interp(levels, *zip(*JET_SEGMENTS[channel])) * 255).astype(np.uint8).tolist()
            for channel in ("red", "green", "blue")]


JET_PALETTE = jet_palette()


def draw_overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """uint8 RGB (H, W, 3) = (1 - alpha) * ``image`` + alpha * jet(``heatmap``), the heatmap (h, w)
    in [0, 1] in the model's input frame (the whole upload squashed to 224 x 224) stretched
    bilinearly to the image's size; computed by Pillow in uint8, no full-size float copy."""
    base = Image.fromarray(image)
    levels = Image.fromarray(np.round(np.clip(heatmap, 0.0, 1.0) * 255).astype(np.uint8))
    levels = levels.resize(base.size, Image.Resampling.BILINEAR)
    coloured = Image.merge("RGB", [levels.point(table) for table in JET_PALETTE])
    return np.asarray(Image.blend(base, coloured, alpha))
