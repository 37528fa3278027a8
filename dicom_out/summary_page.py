"""A one-page summary a person reads in any PACS: a Secondary Capture (RGB) rendered with Pillow.

The page holds the TSC table beside the healthy controls of the paper (Brownlee et al., Table 2;
a value more than 2 SD from their mean is flagged), the brain volumes, every QC verdict (failures
first) with thumbnails of ``qc/*.png``, and a montage of the TSC map (0-140 mM) with a colour bar,
each slice marked with its position and the patient's left and right. The patient's name and ID
are drawn on the page, so Burned In Annotation is YES; the page, its Series Description and its
Image Comments say research use only, and the page says which result version it shows and which it
replaces.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM

from dicom_out.identity import (
    DEFAULT_OUTPUT,
    MANUFACTURER,
    RESEARCH_USE,
    OutputIdentity,
    object_identity,
    set_dates,
    set_institution,
)
from dicom_out.parametric_map import BODY_PART, TSC_WINDOW_CENTER_MM, TSC_WINDOW_WIDTH_MM
from dicom_out.results import Results
from dicom_out.versions import ResultVersion
from processing.measurements import Tissue, Verdict
from processing.qc_pictures import wrap_text
from sodium_node.config_models import ObjectKind

log = logging.getLogger(__name__)

PAGE_SIZE = (1240, 1754)
"""A4 at 150 dpi."""
SERIES_DESCRIPTION = "TSC summary page"
HEALTHY_CONTROLS_MM = {
    Tissue.CORTICAL_GM: (40.63, 2.33),
    Tissue.DEEP_GM: (34.83, 2.79),
    Tissue.NAWM: (32.03, 3.44),
}
"""Mean (SD) TSC of the paper's healthy controls, Table 2."""
HEALTHY_CONTROLS_REFERENCE = (
    "Healthy controls: Brownlee et al., Table 2 (34 subjects, 3T Philips Achieva). Flagged: more than "
    "2 SD from their mean (a research reference, not a clinical range)."
)
FLAG_SD = 2.0
LPS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
"""Patient directions of the DICOM axes (LPS), (negative, positive)."""
TISSUE_NAMES = {
    Tissue.CORTICAL_GM: "Cortical grey matter",
    Tissue.DEEP_GM: "Deep grey matter",
    Tissue.NAWM: "Normal-appearing WM",
    Tissue.LESION: "Lesions",
    Tissue.CSF: "CSF (check, ~140)",
}
MONTAGE_SLICES = 12
WHITE = (255, 255, 255)
GREY = (160, 160, 160)
BACKGROUND = (0, 0, 0)


VERDICT_COLOURS = {Verdict.PASS: (80, 220, 80), Verdict.WARN: (250, 190, 40), Verdict.FAIL: (240, 60, 60)}


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def colour_map(values: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """A perceptual-ish black-blue-red-yellow-white ramp over the TSC window (0-140 mM)."""
    low = TSC_WINDOW_CENTER_MM - TSC_WINDOW_WIDTH_MM / 2
    t = np.clip((values - low) / TSC_WINDOW_WIDTH_MM, 0.0, 1.0)
    stops = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    colours = np.array([[0, 0, 0], [40, 40, 200], [200, 40, 60], [250, 200, 40], [255, 255, 255]], float)
    rgb = np.stack([np.interp(t, stops, colours[:, c]) for c in range(3)], axis=-1)
    return np.asarray(rgb, dtype=np.uint8)


def direction_letter(direction: npt.NDArray[np.floating]) -> str:
    """The patient direction a unit vector points to most (LPS), e.g. ``L`` for (0.99, 0.1, 0)."""
    axis = int(np.argmax(np.abs(direction)))
    return LPS_LETTERS[axis][int(direction[axis] > 0)]


def slice_label(position: npt.NDArray[np.floating], normal: npt.NDArray[np.floating]) -> str:
    """Where a slice lies along the axis its normal follows: ``S 12 mm``, ``I 30 mm``."""
    axis = int(np.argmax(np.abs(normal)))
    value = float(position[axis])
    return f"{LPS_LETTERS[axis][int(value >= 0)]} {abs(value):.0f} mm"


def _montage(results: Results, width: int) -> Image.Image:
    tsc = results.tsc_mM
    brain = sum(
        (mask for tissue, mask in results.masks.items() if tissue is not Tissue.CSF), np.zeros_like(tsc)
    )
    occupied = np.flatnonzero(brain.reshape(brain.shape[0], -1).sum(axis=1) > 0)
    first, last = (occupied[0], occupied[-1]) if occupied.size else (0, tsc.shape[0] - 1)
    frames = np.linspace(first, last, MONTAGE_SLICES + 2).round().astype(int)[1:-1]
    columns = 4
    tile = width // columns
    rows = (len(frames) + columns - 1) // columns
    montage = Image.new("RGB", (tile * columns, tile * rows), BACKGROUND)
    draw, font = ImageDraw.Draw(montage), _font(20)
    sodium = results.sodium
    normal = np.cross(sodium.row_direction, sodium.column_direction)
    # Pixels of a row run along the row direction: that is the tile's right side.
    right, left = direction_letter(sodium.row_direction), direction_letter(-sodium.row_direction)
    for index, frame in enumerate(frames):
        picture = Image.fromarray(colour_map(tsc[frame])).resize((tile, tile), Image.Resampling.BILINEAR)
        x, y = (index % columns) * tile, (index // columns) * tile
        montage.paste(picture, (x, y))
        draw.text(
            (x + 6, y + 4), slice_label(sodium.frame_positions_lps[frame], normal), fill=WHITE, font=font
        )
        draw.text((x + 4, y + tile // 2 - 10), left, fill=WHITE, font=font)
        draw.text((x + tile - 18, y + tile // 2 - 10), right, fill=WHITE, font=font)
    return montage


def _colour_bar(height: int) -> Image.Image:
    low = TSC_WINDOW_CENTER_MM - TSC_WINDOW_WIDTH_MM / 2
    values = np.linspace(low + TSC_WINDOW_WIDTH_MM, low, height)[:, None].repeat(30, axis=1)
    bar = Image.new("RGB", (110, height), BACKGROUND)
    bar.paste(Image.fromarray(colour_map(values)), (0, 0))
    draw = ImageDraw.Draw(bar)
    font = _font(20)
    for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = int(fraction * (height - 1))
        draw.text(
            (36, max(0, min(height - 22, y - 10))),
            f"{low + TSC_WINDOW_WIDTH_MM * (1 - fraction):.0f}",
            fill=WHITE,
            font=font,
        )
    return bar


def render_summary(results: Results, *, version: ResultVersion) -> Image.Image:
    """The summary page of ``version`` of ``results`` as an RGB image."""
    page = Image.new("RGB", PAGE_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(page)
    title, text, small = _font(40), _font(24), _font(20)
    m = results.measurements
    source = results.sodium.first
    draw.text((50, 40), "Total sodium concentration (TSC)", fill=WHITE, font=title)
    draw.text(
        (50, 100),
        f"Patient {source.get('PatientName', '')}  ID {m.session.patient_id}  "
        f"Study {source.get('StudyDate', '')}  "
        f"Series {source.get('SeriesNumber', '')} {source.get('SeriesDescription', '')}",
        fill=GREY,
        font=small,
    )
    replaces = f" (replaces v{version.replaces})" if version.replaces else ""
    draw.text(
        (50, 130),
        f"Result v{version.number}{replaces}, sodium-node {m.pipeline_version}, PVC {m.pvc_method.value}, "
        f"PSF FWHM {m.psf_fwhm_mm:.1f} mm",
        fill=GREY,
        font=small,
    )
    draw.text((50, 154), RESEARCH_USE, fill=VERDICT_COLOURS[Verdict.WARN], font=small)
    failed, warned = m.checks_with(Verdict.FAIL), m.checks_with(Verdict.WARN)
    if failed or warned:
        # The outcome before any number: a failed result is marked at the top of the page.
        banner = (
            f"QC FAILED ({', '.join(c.step for c in failed)}): review before use"
            if failed
            else f"QC warnings ({', '.join(c.step for c in warned)})"
        )
        verdict = Verdict.FAIL if failed else Verdict.WARN
        draw.text(
            (50, 178),
            wrap_text(banner, draw, PAGE_SIZE[0] - 100, font=small)[0],
            fill=VERDICT_COLOURS[verdict],
            font=small,
        )
    y = 214
    header = ("Tissue", "Mean (SD) mM", "Median", "Volume ml", "Healthy controls", "vs HC")
    columns_x = (50, 400, 610, 740, 880, 1120)
    for x, label in zip(columns_x, header, strict=True):
        draw.text((x, y), label, fill=GREY, font=text)
    y += 40
    for measurement in m.tissues:
        control = HEALTHY_CONTROLS_MM.get(measurement.tissue)
        z = None if control is None else (measurement.mean_mM - control[0]) / control[1]
        cells = (
            TISSUE_NAMES[measurement.tissue],
            f"{measurement.mean_mM:.2f} ({measurement.sd_mM:.2f})",
            f"{measurement.median_mM:.2f}",
            f"{measurement.volume_ml:.1f}",
            f"{control[0]:.2f} ({control[1]:.2f})" if control else "-",
            "" if z is None else f"{z:+.1f} SD",
        )
        flagged = z is not None and abs(z) > FLAG_SD
        for x, cell in zip(columns_x, cells, strict=True):
            colour = (
                VERDICT_COLOURS[Verdict.WARN] if flagged and x in (columns_x[1], columns_x[-1]) else WHITE
            )
            draw.text((x, y), cell, fill=colour, font=text)
        y += 36
    for line in wrap_text(HEALTHY_CONTROLS_REFERENCE, draw, PAGE_SIZE[0] - 100, font=small):
        draw.text((50, y), line, fill=GREY, font=small)
        y += 24
    v = m.volumes
    y += 10
    draw.text(
        (50, y),
        f"TIV {v.tiv_ml:.0f} ml   BPF {v.bpf:.3f}   GMF {v.gmf:.3f}   WMF {v.wmf:.3f}   "
        f"T2LV {v.t2_lesion_ml:.1f} ml",
        fill=WHITE,
        font=text,
    )
    y += 60
    montage = _montage(results, 1000)
    page.paste(montage, (50, y))
    page.paste(_colour_bar(montage.height), (1070, y))
    draw.text((1070, y + montage.height + 5), "mM", fill=WHITE, font=small)
    y += montage.height + 40
    draw.text((50, y), "Quality control", fill=WHITE, font=text)
    y += 36
    # Every check on its own line, failures first, then warnings, with what they mean; then the pictures.
    for check in m.checks_worst_first():
        draw.text(
            (50, y), f"{check.verdict.value.upper():5s}", fill=VERDICT_COLOURS[check.verdict], font=small
        )
        draw.text(
            (130, y),
            f"{check.step}: {check.metric_name} {check.metric_value:.3g} (limit {check.limit:.3g})",
            fill=WHITE,
            font=small,
        )
        y += 26
        for line in wrap_text(check.note, draw, PAGE_SIZE[0] - 180, font=small) if check.note else ():
            draw.text((150, y), line, fill=GREY, font=small)
            y += 24
    y += 10
    thumbnails = {path.name: path for path in results.qc_pictures}
    pictures = [
        thumbnails[Path(check.picture).name]
        for check in m.quality
        if check.picture and Path(check.picture).name in thumbnails
    ]
    x = 50
    for picture_path in pictures:
        if y + 60 > PAGE_SIZE[1] or x + 270 > PAGE_SIZE[0]:
            break
        with Image.open(picture_path) as picture:
            thumbnail = picture.convert("RGB")
            thumbnail.thumbnail((270, PAGE_SIZE[1] - y - 10))
            page.paste(thumbnail, (x, y))
        x += 285
    return page


def write_summary_page(
    results: Results, path: Path, *, version: ResultVersion, output: OutputIdentity = DEFAULT_OUTPUT
) -> Dataset:
    """Render the summary page of ``results`` (``version``); write it as a Secondary Capture to ``path``."""
    identity = object_identity(results, ObjectKind.SUMMARY, output, version)
    pixels = np.asarray(render_summary(results, version=version), dtype=np.uint8)
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=results.sodium.first,
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        patient_orientation=("L", "P"),
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        series_description=identity.series_description(SERIES_DESCRIPTION),
        content_date=identity.date,
        content_time=identity.time,
        series_date=identity.date,
        series_time=identity.time,
    )
    set_dates(image, identity)
    image.DateOfSecondaryCapture = DA(identity.date)
    image.TimeOfSecondaryCapture = TM(identity.time)
    image.BurnedInAnnotation = "YES"  # the patient's name and ID are on the page
    image.ImageComments = RESEARCH_USE
    image.ConversionType = "WSD"
    image.BodyPartExamined = BODY_PART
    image.PatientOrientation = []  # a page has no orientation (Type 2: present, empty)
    set_institution(image, identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(path)
    log.info("%s: summary page %s written", path, identity.sop_instance_uid)
    return image
