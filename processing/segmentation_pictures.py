"""QC pictures of what was measured where: the tissue labels on the 3D T1, the PSF-scaled tissue masks
on the calibrated sodium map (axial, coronal, sagittal through the brain's centre), and the
calibration line through the two vials.

A reader judges the segmentation from the first (does cortical GM follow the cortex, are the deep
nuclei on the nuclei, is CSF in the ventricles and sulci), the sodium-space masks from the second
(do they sit on the brain of the sodium image), and the calibration from the third.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from processing.calibration import Calibration
from processing.qc_pictures import CYAN, GREEN, RED, YELLOW, BoolArray, Colour, overlay_outlines, save_panels
from processing.segmentation.tissue_maps import TissueMaps
from processing.volume import Volume

SEGMENTATION_T1_PICTURE = "segmentation_t1.png"
MASKS_SODIUM_PICTURE = "masks_sodium.png"
CALIBRATION_PLOT = "calibration_plot.png"
MAGENTA: Colour = (240, 60, 240)
TISSUE_COLOURS: dict[str, Colour] = {
    "cgm": YELLOW,
    "dgm": RED,
    "nawm": CYAN,
    "wm": CYAN,
    "csf": GREEN,
    "lesion": MAGENTA,
    "brain": GREEN,
}
LEGEND = "outlines: cortical GM yellow, deep GM red, WM cyan, CSF green, lesions magenta"
RECEIVE_FIELD_PICTURE = "receive_field.png"
FIELD_GREY_RANGE = (0.8, 1.2)
"""The receive-field picture's fixed grey scale: a +-20 % field spans it, a flat one is mid grey."""
MASK_THRESHOLD = 0.5
"""A voxel is drawn inside a tissue's outline where that tissue's share is above one half."""


def patient_ordered(data: npt.NDArray[Any], affine_lps: npt.NDArray[np.floating]) -> npt.NDArray[Any]:
    """``data`` with its axes turned and flipped to run towards the patient's left, posterior and
    superior (LPS), whatever the acquisition's orientation (a sagittal 3D T1, an axial sodium scan)."""
    linear = np.asarray(affine_lps)[:3, :3]
    axes = [int(np.argmax(np.abs(linear[patient_axis]))) for patient_axis in range(3)]
    if len(set(axes)) < 3:  # oblique beyond 45 degrees about two axes: leave it as stored
        return data
    ordered = np.transpose(data, axes)
    for patient_axis, array_axis in enumerate(axes):
        if linear[patient_axis, array_axis] < 0:
            ordered = np.flip(ordered, patient_axis)
    return ordered


def _planes(data: npt.NDArray[Any], centre: tuple[int, int, int]) -> list[npt.NDArray[Any]]:
    """Axial, coronal and sagittal slices of an LPS-ordered array, as ``overlay_outlines`` takes them:
    axial with anterior up and the patient's left on the right (radiological), coronal and sagittal
    with superior up, sagittal with anterior on the left."""
    i, j, k = centre
    return [data[:, :, k], data[:, j, ::-1], data[i, :, ::-1]]


def _centre(weights: npt.NDArray[np.floating]) -> tuple[int, int, int]:
    total = float(np.sum(weights))
    if total <= 0:
        return (weights.shape[0] // 2, weights.shape[1] // 2, weights.shape[2] // 2)
    centre = ndimage.center_of_mass(np.asarray(weights, dtype=np.float64))
    return (round(centre[0]), round(centre[1]), round(centre[2]))


def _labelled_panels(
    volume: Volume,
    masks: dict[str, BoolArray],
    weights: npt.NDArray[np.floating],
    *,
    grey_range: tuple[float, float] | None = None,
) -> list[npt.NDArray[np.uint8]]:
    """The volume in three planes through the centre of ``weights``, each mask outlined in its colour."""
    affine = volume.affine_lps
    centre = _centre(patient_ordered(weights, affine))
    planes = _planes(patient_ordered(np.asarray(volume.data, dtype=np.float64), affine), centre)
    mask_planes = {name: _planes(patient_ordered(mask, affine), centre) for name, mask in masks.items()}
    return [
        overlay_outlines(
            plane,
            [(mask_planes[name][index], TISSUE_COLOURS[name]) for name in masks],
            grey_range=grey_range,
        )
        for index, plane in enumerate(planes)
    ]


def segmentation_on_t1(t1: Volume, maps: TissueMaps, path: Path, *, lesions: Volume | None = None) -> Path:
    """Each T1 voxel labelled with its largest tissue share (above one half), outlined on the T1;
    the T2 lesion mask (on the T1 grid) drawn over them."""
    shares = {"cgm": maps.grey.data, "wm": maps.white.data, "csf": maps.csf.data}
    if maps.deep_grey is not None:
        shares["dgm"] = maps.deep_grey.data
    names = list(shares)
    stacked = np.stack([np.asarray(shares[name], dtype=np.float32) for name in names])
    largest = np.argmax(stacked, axis=0)
    confident = np.max(stacked, axis=0) > MASK_THRESHOLD
    masks = {name: np.asarray(confident & (largest == index)) for index, name in enumerate(names)}
    if lesions is not None:
        masks["lesion"] = np.asarray(lesions.data > MASK_THRESHOLD)
    brain = stacked[names.index("cgm")] + stacked[names.index("wm")]
    panels = _labelled_panels(t1, masks, brain)
    volumes = {name: float(np.sum(shares[name])) * float(np.prod(t1.voxel_size_mm)) / 1000 for name in names}
    lines = [LEGEND, "volumes (ml): " + ", ".join(f"{name} {ml:.0f}" for name, ml in volumes.items())]
    return save_panels(panels, path, title=f"segmentation on the 3D T1 ({maps.source})", lines=lines)


def masks_on_sodium(tsc: Volume, fractions: dict[str, Volume], path: Path) -> Path:
    """The PSF-scaled tissue masks (share above one half) outlined on the calibrated TSC map."""
    masks = {
        name: np.asarray(volume.data > MASK_THRESHOLD)
        for name, volume in fractions.items()
        if name in TISSUE_COLOURS
    }
    brain = sum((np.asarray(fractions[name].data) for name in ("cgm", "nawm") if name in fractions), 0.0)
    panels = _labelled_panels(tsc, masks, np.asarray(brain, dtype=np.float64) * np.ones(tsc.shape))
    return save_panels(
        panels, path, title="PSF-scaled tissue masks on the TSC map (sodium space)", lines=[LEGEND]
    )


def receive_field_picture(field: Volume, fractions: dict[str, Volume], path: Path) -> Path:
    """The receive field divided out of the sodium image (relative sensitivity, grey 0.7-1.3) with
    the brain's outline, in three planes: where the correction raised or lowered the signal."""
    parenchyma = [np.asarray(fractions[name].data) for name in ("cgm", "dgm", "nawm") if name in fractions]
    weights = np.asarray(sum(parenchyma, np.zeros(field.shape)), dtype=np.float64)
    brain = {"brain": np.asarray(weights > MASK_THRESHOLD)}
    panels = _labelled_panels(field, brain, weights, grey_range=FIELD_GREY_RANGE)
    inside = np.asarray(field.data)[weights > MASK_THRESHOLD]
    low, high = FIELD_GREY_RANGE
    lines = [f"relative sensitivity, black {low:g} to white {high:g}; green: the brain"]
    if inside.size:
        lines.append(f"over the brain: {float(np.min(inside)):.2f} to {float(np.max(inside)):.2f}")
    return save_panels(panels, path, title="receive field divided out of the sodium image", lines=lines)


def calibration_plot(calibration: Calibration, path: Path) -> Path:
    """Signal against concentration: both vials (model amplitude, +-2 SE) and the fitted line."""
    width, height, margin = 520, 380, 60
    top_mM = 1.25 * max(vial.concentration_mM for vial in calibration.vials)
    top_signal = 1.25 * max(vial.amplitude for vial in calibration.vials)
    bottom_signal = min(0.0, calibration.intercept)

    def xy(concentration: float, signal: float) -> tuple[float, float]:
        x = margin + (width - 2 * margin) * concentration / top_mM
        y = height - margin - (height - 2 * margin) * (signal - bottom_signal) / (top_signal - bottom_signal)
        return x, y

    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    draw.font = ImageFont.load_default(size=14)
    draw.line([xy(0, bottom_signal), xy(top_mM, bottom_signal)], fill=(0, 0, 0))
    draw.line([xy(0, bottom_signal), xy(0, top_signal)], fill=(0, 0, 0))
    for tick in range(0, int(top_mM) + 1, 20):
        x, y = xy(tick, bottom_signal)
        draw.line([(x, y), (x, y + 5)], fill=(0, 0, 0))
        draw.text((x - 8, y + 8), str(tick), fill=(0, 0, 0))
    draw.text((width / 2 - 40, height - 25), "concentration (mM)", fill=(0, 0, 0))
    draw.text((5, 5), "signal (model amplitude)", fill=(0, 0, 0))
    a, b = calibration.slope_per_mM, calibration.intercept
    draw.line([xy(0, b), xy(top_mM, a * top_mM + b)], fill=(40, 90, 220), width=2)
    for vial in calibration.vials:
        x, y = xy(vial.concentration_mM, vial.amplitude)
        _, low = xy(0, vial.amplitude - 2 * vial.amplitude_standard_error)
        _, high = xy(0, vial.amplitude + 2 * vial.amplitude_standard_error)
        draw.line([(x, low), (x, high)], fill=(200, 30, 30), width=2)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], outline=(200, 30, 30), width=2)
        draw.text((x + 8, y - 14), f"{vial.concentration_mM:g} mM: {vial.amplitude:.4g}", fill=(0, 0, 0))
    zero_mM = -b / a
    draw.text(
        (margin + 10, margin - 30),
        f"signal = {a:.4g} x TSC + {b:.4g}; zero signal at {zero_mM:.2f} mM",
        fill=(0, 0, 0),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


def write_measurement_pictures(
    *,
    t1: Volume,
    maps: TissueMaps,
    lesions: Volume | None,
    tsc: Volume,
    fractions: dict[str, Volume],
    calibration: Calibration,
    receive_field: Volume | None,
    qc_folder: Path,
) -> list[Path]:
    """The pictures, in ``qc_folder``; the receive field's only when one was divided out."""
    pictures = [
        segmentation_on_t1(t1, maps, qc_folder / SEGMENTATION_T1_PICTURE, lesions=lesions),
        masks_on_sodium(tsc, fractions, qc_folder / MASKS_SODIUM_PICTURE),
        calibration_plot(calibration, qc_folder / CALIBRATION_PLOT),
    ]
    if receive_field is not None:
        pictures.append(receive_field_picture(receive_field, fractions, qc_folder / RECEIVE_FIELD_PICTURE))
    return pictures
