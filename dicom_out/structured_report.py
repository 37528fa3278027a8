"""TSC per tissue, brain volumes and QC as a Comprehensive 3D SR (TID 1500 Measurement Report).

- One TID 1411 volumetric group per measured tissue (cortical GM, deep GM, NAWM, lesions): the
  tissue as its Finding Site; mean, SD and median TSC in UCUM ``mmol/L`` (concept DCM 122093
  "Concentration" with the SCT statistic as derivation, the partial-volume method as method) with
  our Parametric Map as source; the tissue's volume in ``mL`` with the method "volume in sodium
  space" (PSF-scaled probabilities summed on the sodium grid). The group references the tissue's
  segment of our SEG and carries the tissue's Tracking UID, the same as that segment's.
- One TID 1501 group "Brain volumes (3D-T1 space)": TIV, GM, WM, cGM, dGM, T2LV, T1LV (``mL``, method
  "volume in 3D-T1 space") and BPF, GMF, WMF (``1``).
- One TID 1501 group "Quality control": every check's metric in its unit (from the metric name's
  suffix, ``metric_unit``) and its verdict; the CSF TSC measured (a check: it should read ~140 mM,
  it is not a tissue result) and the CSF TSC assumed, in ``mmol/L``; and the intended use (research
  only).

A version that replaces an earlier result names that result's SR in the Predecessor Documents
Sequence. Concepts without a standard code use the private scheme ``99SDN`` (sodium-node).
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_out.identity import (
    DEFAULT_OUTPUT,
    MANUFACTURER,
    ObjectIdentity,
    OutputIdentity,
    object_identity,
    set_dates,
    tissue_tracking_uid,
)
from dicom_out.parametric_map import MMOL_PER_L
from dicom_out.results import Results
from dicom_out.segmentation import TISSUE_CODING, segment_numbers
from dicom_out.versions import ReportReference, ResultVersion
from processing.measurements import Tissue, TissueMeasurement, Verdict
from sodium_node.config_models import ObjectKind

log = logging.getLogger(__name__)

SERIES_DESCRIPTION = "TSC measurements SR"
PRIVATE_SCHEME = "99SDN"
MILLILITRE = hd.sr.CodedConcept("mL", "UCUM", "milliliter")
MILLIMETRE = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
DEGREE = hd.sr.CodedConcept("deg", "UCUM", "degree")
PERCENT = hd.sr.CodedConcept("%", "UCUM", "percent")
NATS = hd.sr.CodedConcept("{nats}", "UCUM", "nats")
"""Mutual information: dimensionless, in natural units of information (a UCUM annotation of 1)."""
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
UNIT_BY_SUFFIX = (
    ("_mM", MMOL_PER_L),
    ("_mm", MILLIMETRE),
    ("_deg", DEGREE),
    ("_ml", MILLILITRE),
    ("_percent", PERCENT),
    ("_nats", NATS),
)
"""A QC metric's unit from its name (``zero_offset_mM``, ``translation_mm``, ...); anything else is a
ratio or a count, unit ``1``."""
PROCEDURE = codes.SCT.ImagingProcedure
NOT_TISSUE_RESULTS = (Tissue.CSF,)
"""Measured, but reported as a quality check: CSF's TSC is known (~140 mM)."""


def private_code(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, PRIVATE_SCHEME, meaning)


VERDICT_CODES = {
    Verdict.PASS: private_code("qc-pass", "Quality check passed"),
    Verdict.WARN: private_code("qc-warn", "Quality check passed with a warning"),
    Verdict.FAIL: private_code("qc-fail", "Quality check failed"),
}
VOLUME_IN_SODIUM_SPACE = private_code("volume-sodium-space", "Volume in sodium space (PSF-scaled masks)")
VOLUME_IN_T1_SPACE = private_code("volume-t1-space", "Volume in 3D-T1 space (segmentation)")
INTENDED_USE = private_code("intended-use", "Intended use")
RESEARCH_ONLY = private_code("research-only", "For research use only, not for diagnostic use")


def metric_unit(metric_name: str) -> hd.sr.CodedConcept:
    """The UCUM unit of a QC metric, from its name's suffix (see ``UNIT_BY_SUFFIX``)."""
    return next((unit for suffix, unit in UNIT_BY_SUFFIX if metric_name.endswith(suffix)), NO_UNITS)


def _tissue_group(
    measurement: TissueMeasurement,
    *,
    identity: ObjectIdentity,
    segment_number: int,
    segmentation: Dataset,
    parametric_map: Dataset,
    results: Results,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    tissue = measurement.tissue
    source = [
        hd.sr.SourceImageForMeasurement(
            referenced_sop_class_uid=parametric_map.SOPClassUID,
            referenced_sop_instance_uid=parametric_map.SOPInstanceUID,
        )
    ]
    method = private_code(
        f"pvc-{measurement.method.value}", f"Partial volume correction: {measurement.method.value}"
    )
    algorithm_id = hd.sr.AlgorithmIdentification(name="sodium-node", version=identity.pipeline_version)

    def concentration(value: float, statistic: hd.sr.CodedConcept) -> hd.sr.Measurement:
        return hd.sr.Measurement(
            name=codes.DCM.Concentration,
            value=value,
            unit=MMOL_PER_L,
            derivation=statistic,
            method=method,
            algorithm_id=algorithm_id,
            referenced_images=source,
        )

    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tissue_tracking_uid(results, tissue), identifier=f"TSC {tissue.value}"
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=segmentation.SOPClassUID,
            sop_instance_uid=segmentation.SOPInstanceUID,
            segment_number=segment_number,
            source_series=hd.sr.SourceSeriesForSegmentation(results.sodium.series_instance_uid),
        ),
        finding_sites=[hd.sr.FindingSite(TISSUE_CODING[tissue].property_type)],
        method=method,
        algorithm_id=algorithm_id,
        measurements=[
            concentration(measurement.mean_mM, codes.SCT.Mean),
            concentration(measurement.sd_mM, codes.SCT.StandardDeviation),
            concentration(measurement.median_mM, codes.SCT.Median),
            hd.sr.Measurement(
                name=codes.SCT.Volume,
                value=measurement.volume_ml,
                unit=MILLILITRE,
                method=VOLUME_IN_SODIUM_SPACE,
            ),
        ],
    )


def _brain_volumes(results: Results, identity: ObjectIdentity) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    volumes = results.measurements.volumes
    in_t1_space: list[tuple[str, str, float]] = [
        ("tiv", "Total intracranial volume", volumes.tiv_ml),
        ("gm-volume", "Grey matter volume", volumes.grey_matter_ml),
        ("wm-volume", "White matter volume", volumes.white_matter_ml),
        ("cgm-volume", "Cortical grey matter volume", volumes.cortical_gm_ml),
        ("dgm-volume", "Deep grey matter volume", volumes.deep_gm_ml),
        ("t2lv", "T2 lesion volume", volumes.t2_lesion_ml),
    ]
    if volumes.t1_lesion_ml is not None:
        in_t1_space.append(("t1lv", "T1 hypointense lesion volume", volumes.t1_lesion_ml))
    fractions = [
        ("bpf", "Brain parenchymal fraction", volumes.bpf),
        ("gmf", "Grey matter fraction", volumes.gmf),
        ("wmf", "White matter fraction", volumes.wmf),
    ]
    measurements = [
        hd.sr.Measurement(
            name=private_code(code, meaning), value=value, unit=MILLILITRE, method=VOLUME_IN_T1_SPACE
        )
        for code, meaning, value in in_t1_space
    ]
    measurements += [
        hd.sr.Measurement(name=private_code(code, meaning), value=value, unit=NO_UNITS)
        for code, meaning, value in fractions
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.uid("tracking", "brain-volumes"), identifier="Brain volumes (3D-T1 space)"
        ),
        measurements=measurements,
    )


def _quality_control(
    results: Results, identity: ObjectIdentity
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    m = results.measurements
    measurements = [
        hd.sr.Measurement(
            name=private_code(
                f"qc-{check.step}-{check.metric_name}", f"QC {check.step}: {check.metric_name}"
            ),
            value=check.metric_value,
            unit=metric_unit(check.metric_name),
        )
        for check in m.quality
    ]
    csf = m.tissue(Tissue.CSF)
    if csf is not None:
        measurements.append(
            hd.sr.Measurement(
                name=private_code("qc-csf-tsc", "QC: TSC of CSF (expected ~140 mM)"),
                value=csf.mean_mM,
                unit=MMOL_PER_L,
                derivation=codes.SCT.Mean,
            )
        )
    measurements.append(
        hd.sr.Measurement(
            name=private_code("csf-tsc-assumed", "TSC assumed for CSF"), value=m.csf_tsc_mM, unit=MMOL_PER_L
        )
    )
    evaluations = [
        hd.sr.QualitativeEvaluation(
            name=private_code("qc-overall", "QC of the whole result"),
            value=VERDICT_CODES[results.measurements.qc_verdict],
        )
    ] + [
        hd.sr.QualitativeEvaluation(
            name=private_code(f"qc-{check.step}", f"QC {check.step}"), value=VERDICT_CODES[check.verdict]
        )
        for check in m.quality
    ]
    evaluations.append(hd.sr.QualitativeEvaluation(name=INTENDED_USE, value=RESEARCH_ONLY))
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.uid("tracking", "quality-control"), identifier="Quality control"
        ),
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def _predecessor(report: ReportReference) -> Dataset:
    """The replaced SR, as much of it as the Predecessor Documents Sequence names."""
    dataset = Dataset()
    dataset.StudyInstanceUID = report.study_instance_uid
    dataset.SeriesInstanceUID = report.series_instance_uid
    dataset.SOPClassUID = report.sop_class_uid
    dataset.SOPInstanceUID = report.sop_instance_uid
    return dataset


def write_structured_report(
    results: Results,
    path: Path,
    *,
    version: ResultVersion,
    parametric_map: Dataset,
    segmentation: Dataset,
    output: OutputIdentity = DEFAULT_OUTPUT,
) -> hd.sr.Comprehensive3DSR:
    """Write the TID 1500 report of ``results`` (``version``), referencing our ``parametric_map`` and
    ``segmentation`` and, if ``version`` replaces an earlier result, that result's SR."""
    identity = object_identity(results, ObjectKind.SR, output, version)
    numbers = segment_numbers(results)
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for measurement in results.measurements.tissues:
        if measurement.tissue in NOT_TISSUE_RESULTS:
            continue
        if measurement.tissue not in numbers:
            log.warning(
                "%s: no mask for %s: its TSC is not in the SR", results.folder, measurement.tissue.value
            )
            continue
        groups.append(
            _tissue_group(
                measurement,
                identity=identity,
                segment_number=numbers[measurement.tissue],
                segmentation=segmentation,
                parametric_map=parametric_map,
                results=results,
            )
        )
    groups += [_brain_volumes(results, identity), _quality_control(results, identity)]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=identity.uid("device"), name="sodium-node", manufacturer_name=MANUFACTURER
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=PROCEDURE,
        imaging_measurements=groups,
    )
    replaced = version.replaced_report
    document = hd.sr.Comprehensive3DSR(
        evidence=[parametric_map, segmentation],
        content=report,
        series_instance_uid=identity.series_instance_uid,
        series_number=identity.series_number,
        sop_instance_uid=identity.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        institution_name=identity.institution_name or None,
        institutional_department_name=identity.institution_department_name or None,
        previous_versions=None if replaced is None else [_predecessor(replaced)],
        series_description=identity.series_description(SERIES_DESCRIPTION),
        content_date=identity.date,
        content_time=identity.time,
        series_date=identity.date,
        series_time=identity.time,
    )
    set_dates(document, identity)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "sodium-node local codes"
    scheme.CodingSchemeResponsibleOrganization = "sodium-node project"
    document.CodingSchemeIdentificationSequence = [scheme]
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save_as(path)
    log.info(
        "%s: SR %s written (%d groups)%s",
        path,
        identity.sop_instance_uid,
        len(groups),
        "" if replaced is None else f", replaces SR {replaced.sop_instance_uid} (v{version.replaces})",
    )
    return document


def report_reference(document: Dataset) -> ReportReference:
    """How a later version's SR names this one."""
    return ReportReference(
        study_instance_uid=str(document.StudyInstanceUID),
        series_instance_uid=str(document.SeriesInstanceUID),
        sop_class_uid=str(document.SOPClassUID),
        sop_instance_uid=str(document.SOPInstanceUID),
    )
