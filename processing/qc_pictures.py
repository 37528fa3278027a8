"""Quality-control pictures (PNG, written with Pillow): slices with outlines, checkerboards, edges.

Slices are shown in radiological habit for axial views of ``[i, j, k]`` arrays whose first axis
runs to patient left: rows of the picture are ``j``, columns are ``i``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Colour = tuple[int, int, int]

RED: Colour = (230, 40, 40)
GREEN: Colour = (40, 210, 60)
YELLOW: Colour = (250, 220, 0)
CYAN: Colour = (0, 220, 230)
UPSCALE = 4


def to_grey(
    values: npt.NDArray[np.floating],
    *,
    low_percentile: float = 1.0,
    high_percentile: float = 99.5,
    grey_range: tuple[float, float] | None = None,
) -> npt.NDArray[np.uint8]:
    """Black to white between the percentiles of ``values``, or over ``grey_range`` when given."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = grey_range or np.percentile(finite, [low_percentile, high_percentile])
    scaled = (np.nan_to_num(values, nan=low) - low) / max(float(high - low), 1e-12)
    return np.asarray(np.clip(scaled * 255.0, 0, 255), dtype=np.uint8)


def _rgb(grey: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.repeat(grey[..., None], 3, axis=-1)


def _outline(mask: BoolArray) -> BoolArray:
    return np.asarray(mask & ~ndimage.binary_erosion(mask))


def overlay_outlines(
    slice_ij: npt.NDArray[np.floating],
    outlines: Sequence[tuple[BoolArray, Colour]],
    *,
    grey_range: tuple[float, float] | None = None,
) -> npt.NDArray[np.uint8]:
    """An RGB picture ``[row, column, 3]`` of a 2D ``[i, j]`` slice with coloured mask outlines."""
    picture = _rgb(to_grey(slice_ij, grey_range=grey_range)).copy()
    for mask, colour in outlines:
        picture[_outline(mask)] = colour
    return np.ascontiguousarray(picture.transpose(1, 0, 2))


def checkerboard(
    fixed_ij: npt.NDArray[np.floating], moving_ij: npt.NDArray[np.floating], *, squares: int = 8
) -> npt.NDArray[np.uint8]:
    """Alternate squares of two slices of one grid, each scaled to its own grey range."""
    a, b = to_grey(fixed_ij), to_grey(moving_ij)
    i, j = np.indices(a.shape)
    size = max(1, max(a.shape) // squares)
    pick = ((i // size) + (j // size)) % 2 == 0
    return np.ascontiguousarray(_rgb(np.where(pick, a, b)).transpose(1, 0, 2))


def edge_overlay(
    fixed_ij: npt.NDArray[np.floating], moving_ij: npt.NDArray[np.floating], *, colour: Colour = YELLOW
) -> npt.NDArray[np.uint8]:
    """The fixed slice in grey with the strongest edges of the moving slice in colour."""
    magnitude = ndimage.gaussian_gradient_magnitude(np.asarray(moving_ij, dtype=np.float64), 1.0)
    strong = magnitude > np.percentile(magnitude, 90.0)
    picture = _rgb(to_grey(fixed_ij)).copy()
    picture[strong] = colour
    return np.ascontiguousarray(picture.transpose(1, 0, 2))


def wrap_text(
    text: str,
    draw: ImageDraw.ImageDraw,
    width_px: float,
    *,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont | None = None,
    indent: str = "",
) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width_px`` in ``font`` (Pillow's default
    if None); continuation lines start with ``indent``."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if current and draw.textlength(candidate, font=font) > width_px:
            lines.append(current)
            current = indent + word
        else:
            current = candidate
    return [*lines, current]


def save_panels(
    panels: Sequence[npt.NDArray[np.uint8]], path: Path, *, title: str, lines: Sequence[str] = ()
) -> Path:
    """Panels side by side (upscaled, nearest neighbour), a title and text lines below; PNG."""
    images = [
        Image.fromarray(panel).resize(
            (panel.shape[1] * UPSCALE, panel.shape[0] * UPSCALE), Image.Resampling.NEAREST
        )
        for panel in panels
    ]
    width = max(sum(image.width for image in images) + 10 * (len(images) + 1), 400)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines = [part for line in lines for part in wrap_text(line, draw, width - 20, indent="    ")]
    text_height = 16 * (len(lines) + 2)
    height = max(image.height for image in images) + text_height + 20
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 5), title, fill=(255, 255, 255))
    x = 10
    for image in images:
        canvas.paste(image, (x, 25))
        x += image.width + 10
    y = 25 + max(image.height for image in images) + 8
    for line in lines:
        draw.text((10, y), line, fill=(255, 255, 255))
        y += 16
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path
