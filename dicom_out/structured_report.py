"""TSC per tissue, brain volumes and QC verdicts as a Comprehensive 3D SR (TID 1500 Measurement Report).

One TID 1411 volumetric group per tissue: mean, SD and median TSC in UCUM ``mmol/L`` (concept DCM
122093 "Concentration" with the SCT statistic as derivation) and the tissue's volume in ``mL``,
referencing the tissue's segment of our SEG and, as source of the measurement, our Parametric Map.
One TID 1501 group holds the brain volumes and fractions (TIV, GM, WM, T2LV, BPF, GMF, WMF) and the
QC verdicts. Concepts without a standard code use the private scheme ``99SDN`` (sodium-node).
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dicom_out.identity import DEFAULT_OUTPUT, MANUFACTURER, ObjectIdentity, OutputIdentity, object_identity
from dicom_out.parametric_map import MMOL_PER_L
from dicom_out.results import Results
from dicom_out.segmentation import TISSUE_CODING, segment_numbers
from processing.measurements import TissueMeasurement, Verdict
from sodium_node.config_models import ObjectKind

log = logging.getLogger(__name__)

SERIES_DESCRIPTION = "TSC measurements SR"
PRIVATE_SCHEME = "99SDN"
MILLILITRE = hd.sr.CodedConcept("mL", "UCUM", "milliliter")
NO_UNITS = hd.sr.CodedConcept("1", "UCUM", "no units")
PROCEDURE = codes.SCT.ImagingProcedure


def private_code(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value, PRIVATE_SCHEME, meaning)


VERDICT_CODES = {
    Verdict.PASS: private_code("qc-pass", "Quality check passed"),
    Verdict.WARN: private_code("qc-warn", "Quality check passed with a warning"),
    Verdict.FAIL: private_code("qc-fail", "Quality check failed"),
}


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
            uid=identity.uid("tracking", tissue.value), identifier=f"TSC {tissue.value}"
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=segmentation.SOPClassUID,
            sop_instance_uid=segmentation.SOPInstanceUID,
            segment_number=segment_number,
            source_series=hd.sr.SourceSeriesForSegmentation(results.sodium.series_instance_uid),
        ),
        finding_type=TISSUE_CODING[tissue].property_type,
        method=method,
        algorithm_id=algorithm_id,
        measurements=[
            concentration(measurement.mean_mM, codes.SCT.Mean),
            concentration(measurement.sd_mM, codes.SCT.StandardDeviation),
            concentration(measurement.median_mM, codes.SCT.Median),
            hd.sr.Measurement(name=codes.SCT.Volume, value=measurement.volume_ml, unit=MILLILITRE),
        ],
    )


def _volumes_and_quality(
    results: Results, identity: ObjectIdentity
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    volumes = results.measurements.volumes
    quantities: list[tuple[str, str, float, hd.sr.CodedConcept]] = [
        ("tiv", "Total intracranial volume", volumes.tiv_ml, MILLILITRE),
        ("gm-volume", "Grey matter volume", volumes.grey_matter_ml, MILLILITRE),
        ("wm-volume", "White matter volume", volumes.white_matter_ml, MILLILITRE),
        ("cgm-volume", "Cortical grey matter volume", volumes.cortical_gm_ml, MILLILITRE),
        ("dgm-volume", "Deep grey matter volume", volumes.deep_gm_ml, MILLILITRE),
        ("t2lv", "T2 lesion volume", volumes.t2_lesion_ml, MILLILITRE),
        ("bpf", "Brain parenchymal fraction", volumes.bpf, NO_UNITS),
        ("gmf", "Grey matter fraction", volumes.gmf, NO_UNITS),
        ("wmf", "White matter fraction", volumes.wmf, NO_UNITS),
    ]
    if volumes.t1_lesion_ml is not None:
        quantities.append(("t1lv", "T1 hypointense lesion volume", volumes.t1_lesion_ml, MILLILITRE))
    quantities.append(("csf-tsc", "TSC assumed for CSF (mM)", results.measurements.csf_tsc_mM, MMOL_PER_L))
    measurements = [
        hd.sr.Measurement(name=private_code(code, meaning), value=value, unit=unit)
        for code, meaning, value, unit in quantities
    ]
    measurements += [
        hd.sr.Measurement(
            name=private_code(
                f"qc-{check.step}-{check.metric_name}", f"QC {check.step}: {check.metric_name}"
            ),
            value=check.metric_value,
            unit=NO_UNITS,
        )
        for check in results.measurements.quality
    ]
    evaluations = [
        hd.sr.QualitativeEvaluation(
            name=private_code("qc-overall", "QC of the whole result"),
            value=VERDICT_CODES[results.measurements.qc_verdict],
        )
    ] + [
        hd.sr.QualitativeEvaluation(
            name=private_code(f"qc-{check.step}", f"QC {check.step}"), value=VERDICT_CODES[check.verdict]
        )
        for check in results.measurements.quality
    ]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=identity.uid("tracking", "volumes-and-qc"), identifier="Brain volumes and QC"
        ),
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def write_structured_report(
    results: Results,
    path: Path,
    *,
    parametric_map: Dataset,
    segmentation: Dataset,
    output: OutputIdentity = DEFAULT_OUTPUT,
) -> hd.sr.Comprehensive3DSR:
    """Write the TID 1500 report of ``results``, referencing our ``parametric_map`` and ``segmentation``."""
    identity = object_identity(results, ObjectKind.SR, output)
    numbers = segment_numbers(results)
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for measurement in results.measurements.tissues:
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
    groups.append(_volumes_and_quality(results, identity))
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
        series_description=SERIES_DESCRIPTION,
    )
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "sodium-node local codes"
    scheme.CodingSchemeResponsibleOrganization = "sodium-node project"
    document.CodingSchemeIdentificationSequence = [scheme]
    path.parent.mkdir(parents=True, exist_ok=True)
    document.save_as(path)
    log.info("%s: SR %s written (%d groups)", path, identity.sop_instance_uid, len(groups))
    return document
