"""The TSC map as a DICOM Parametric Map: float32 mM on the sodium series' grid.

One frame per sodium frame, at the same positions, referencing the sodium series as its source.
Real World Value Mapping: identity (slope 1, intercept 0) in UCUM ``mmol/L``. One VOI window
(0-140 mM) with its explanation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_out.identity import (
    DEFAULT_OUTPUT,
    RESEARCH_USE_SHORT,
    ObjectIdentity,
    OutputIdentity,
    object_identity,
    set_dates,
    set_institution,
)
from dicom_out.results import Results
from dicom_out.versions import ResultVersion
from sodium_node.config_models import ObjectKind

log = logging.getLogger(__name__)

MMOL_PER_L = hd.sr.CodedConcept("mmol/L", "UCUM", "millimole per liter")
TSC_WINDOW_CENTER_MM = 70.0
TSC_WINDOW_WIDTH_MM = 140.0
"""0 to 140 mM: brain tissue (30-60 mM) in the lower half, CSF (~140 mM) white."""
TSC_WINDOW_EXPLANATION = "TSC 0-140 mM"
SERIES_DESCRIPTION = "TSC map (mM) Parametric Map"
BODY_PART = "BRAIN"


def sodium_grid_arguments(results: Results) -> dict[str, Any]:
    """highdicom's geometry arguments for an object on exactly the sodium series' grid."""
    sodium = results.sodium
    return {
        "pixel_measures": hd.PixelMeasuresSequence(
            pixel_spacing=sodium.pixel_spacing_mm,
            slice_thickness=sodium.slice_thickness_mm,
            spacing_between_slices=sodium.slice_spacing_mm,
        ),
        "plane_orientation": hd.PlaneOrientationSequence(
            hd.CoordinateSystemNames.PATIENT,
            [*sodium.row_direction.tolist(), *sodium.column_direction.tolist()],
        ),
        "plane_positions": plane_positions(results),
    }


def plane_positions(results: Results) -> list[hd.PlanePositionSequence]:
    return [
        hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, [float(v) for v in position])
        for position in results.sodium.frame_positions_lps
    ]


def set_dimension_organization_uid(dataset: Dataset, identity: ObjectIdentity) -> None:
    """highdicom draws a random Dimension Organization UID; ours is derived, so re-exports are identical."""
    uid = identity.uid("dimension-organization")
    for item in (*dataset.DimensionOrganizationSequence, *dataset.DimensionIndexSequence):
        item.DimensionOrganizationUID = uid


def write_parametric_map(
    results: Results, path: Path, *, version: ResultVersion, output: OutputIdentity = DEFAULT_OUTPUT
) -> Dataset:
    """Write the TSC map of ``results`` (``version``) as a Parametric Map to ``path``; returns the dataset."""
    identity = object_identity(results, ObjectKind.PARAMETRIC_MAP, output, version)
    tsc = results.tsc_mM.astype(np.float32)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="TSC_mM",
        lut_explanation="Total sodium concentration",
        unit=MMOL_PER_L,
        value_range=(float(tsc.min()), float(tsc.max())),
        slope=1.0,
        intercept=0.0,
        quantity_definition=codes.DCM.Concentration,
    )
    sodium = results.sodium
    parametric_map = hd.pm.ParametricMap(
        source_images=list(sodium.datasets),
        pixel_array=tsc,
        **identity.image_arguments(),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            # One window given as one-element lists: highdicom stores a plain str explanation
            # as list(str), one value per letter.
            hd.VOILUTTransformation(
                window_center=[TSC_WINDOW_CENTER_MM],
                window_width=[TSC_WINDOW_WIDTH_MM],
                window_explanation=[TSC_WINDOW_EXPLANATION],
            )
        ],
        content_label="TSC",
        content_description=f"Total sodium concentration (mM), {RESEARCH_USE_SHORT}",
        **sodium_grid_arguments(results),
        series_description=identity.series_description(SERIES_DESCRIPTION),
        content_date=identity.date,
        content_time=identity.time,
        series_date=identity.date,
        series_time=identity.time,
    )
    set_dates(parametric_map, identity)
    set_dimension_organization_uid(parametric_map, identity)
    set_institution(parametric_map, identity)
    parametric_map.BodyPartExamined = BODY_PART  # unpaired: no Laterality needed
    path.parent.mkdir(parents=True, exist_ok=True)
    parametric_map.save_as(path)
    log.info("%s: Parametric Map %s written", path, identity.sop_instance_uid)
    return parametric_map
