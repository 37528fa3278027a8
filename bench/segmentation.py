"""Builtin segmenter accuracy against the simulator's truth: tissue volumes and TSC, per subject.

Simulates each subject once (sodium receive field off), runs the pipeline's steps up to the tissue
maps (load, calibrate, register, segment) and caches them, then segments the cached inputs with the
builtin segmenter and measures: CSF, cortical GM, deep GM and WM volumes against the truth's T1-space
maps, and the GTM TSC of CGM, DGM and NAWM against the truth (receive-field correction off, so the
segmentation is the only error besides noise), and the CGM error's correlation with the true BPF.

    .venv/bin/python bench/segmentation.py --work DIR [--seeds 7000-7019] [--seed 9173:SPMS ...]

Seeds of a range get the groups HC, CIS, RRMS, SPMS in turn (as ``bench/accuracy.py``). Rows are
written as JSON lines to ``WORK/segmentation.jsonl``; ``--before`` also measures the tissue maps
cached when the subject was prepared (the segmenter of that time).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import json
import logging
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from processing.measurements import PvcMethod
from processing.pipeline import SessionAnalysis, StepTimer, analyse_session, psf_fwhm_mm, sodium_space_inputs
from processing.resample import resample_onto
from processing.segmentation.builtin import segment_builtin
from processing.segmentation.tissue_maps import TissueMaps, compartments
from processing.settings import ProcessingSettings, ReceiveFieldSource, settings_from_config
from processing.tissue_tsc import measure_tissues
from processing.volume import Volume
from simulator.population import Group
from simulator.session import SimulationOptions, simulate_session
from sodium_node.config import default_config_path, load_config
from sodium_node.process_command import files_by_role, session_series_from_roles

sys.path.insert(0, str(Path(__file__).parent))
from accuracy import GROUPS, true_tsc, truth_map_in_t1_space

TISSUES = ("cgm", "dgm", "nawm")
log = logging.getLogger("bench")


@dataclasses.dataclass
class Prepared:
    analysis: SessionAnalysis
    t2_lesions: Volume | None
    t2_on_t1: Volume | None
    pd_on_t1: Volume | None
    truth_tsc: dict[str, float]
    truth_ml: dict[str, float]
    bpf: float


def _prepare(seed: int, group: Group, work: Path, settings: ProcessingSettings, rules: Any) -> Prepared:
    cache = work / f"subject-{seed}.pickle"
    if cache.is_file():
        with cache.open("rb") as handle:
            prepared: Prepared = pickle.load(handle)
        return prepared
    folder = work / f"subject-{seed}"
    session = simulate_session(
        folder / "session", SimulationOptions(seed=seed, group=group, sodium_receive_field_amplitude=0.0)
    )
    series = session_series_from_roles(
        files_by_role(session.dicom_folder, rules), where=str(session.dicom_folder)
    )
    (folder / "qc").mkdir(exist_ok=True)
    analysis = analyse_session(
        series, settings, qc_folder=folder / "qc", timer=StepTimer({}, tqdm(disable=True))
    )
    t1 = analysis.loaded["t1_3d"].echo(1)
    head = analysis.loaded["head_coil_pdt2"]
    t1_to_head = analysis.chain.steps[2].transform.inverse()
    truth_folder = session.ground_truth_path.parent / "t1_space"
    voxel_ml = float(np.prod(t1.voxel_size_mm)) / 1000.0

    def ml(*names: str) -> float:
        total = truth_map_in_t1_space(truth_folder, *names)
        return 0.0 if total is None else float(np.sum(total.data, dtype=np.float64)) * voxel_ml

    truth_ml = {
        "csf": ml("csf"),
        "cgm": ml("cgm"),
        "dgm": ml("dgm"),
        "white": ml("nawm", "lesion_t1_iso", "lesion_t1_hypo"),
    }
    lesions = None if analysis.lesion_masks is None else analysis.lesion_masks.t2_hyperintense
    prepared = Prepared(
        analysis=analysis,
        t2_lesions=lesions,
        t2_on_t1=resample_onto(head.echo(2), t1, t1_to_head),
        pd_on_t1=resample_onto(head.echo(1), t1, t1_to_head),
        truth_tsc=true_tsc(session.ground_truth),
        truth_ml=truth_ml,
        bpf=float(session.ground_truth["volumes"]["bpf"]),
    )
    with cache.open("wb") as handle:
        pickle.dump(prepared, handle)
    return prepared


def _measure(prepared: Prepared, maps: TissueMaps, settings: ProcessingSettings) -> dict[str, Any]:
    model = compartments(maps, t2_lesions=prepared.t2_lesions, lesion_dilation_mm=settings.lesion_dilation_mm)
    analysis = dataclasses.replace(prepared.analysis, maps=maps, model=model)
    inputs = sodium_space_inputs(
        analysis, settings, psf_fwhm_mm=psf_fwhm_mm(analysis, settings), qc_folder=None
    )
    measured = measure_tissues(
        inputs.calibration.tsc_mM, inputs.fractions, method=PvcMethod.GTM, csf_tsc_mM=settings.csf_tsc_mM
    )
    voxel_ml = float(np.prod(maps.grey.voxel_size_mm)) / 1000.0
    deep = 0.0 if maps.deep_grey is None else float(np.sum(maps.deep_grey.data, dtype=np.float64)) * voxel_ml
    grey = float(np.sum(maps.grey.data, dtype=np.float64)) * voxel_ml
    return {
        "ml": {
            "csf": float(np.sum(maps.csf.data, dtype=np.float64)) * voxel_ml,
            "cgm": grey - deep,
            "dgm": deep,
            "white": float(np.sum(maps.white.data, dtype=np.float64)) * voxel_ml,
        },
        "tsc": {m.tissue.value: m.mean_mM for m in measured},
    }


def _subjects(ranges: list[str], extra: list[str]) -> list[tuple[int, Group]]:
    chosen = []
    for text in ranges:
        first, _, last = text.partition("-")
        for index, seed in enumerate(range(int(first), int(last or first) + 1)):
            chosen.append((seed, GROUPS[index % len(GROUPS)]))
    for text in extra:
        seed, _, group = text.partition(":")
        chosen.append((int(seed), Group(group)))
    return chosen


def _summary(rows: list[dict[str, Any]], label: str) -> None:
    chosen = [r for r in rows if r["segmenter"] == label]
    if not chosen:
        return
    print(f"\n{label}: n = {len(chosen)}")
    for group in ("all", *[g.value for g in GROUPS]):
        members = [r for r in chosen if group == "all" or r["group"] == group]
        if not members:
            continue
        cells = []
        for tissue in ("csf", "cgm", "dgm", "white"):
            error = [r["ml"][tissue] - r["truth_ml"][tissue] for r in members]
            cells.append(f"{tissue} {np.mean(error):+6.1f}/{np.mean(np.abs(error)):5.1f} ml")
        for tissue in TISSUES:
            error = [r["tsc"][tissue] - r["truth_tsc"][tissue] for r in members]
            cells.append(f"{tissue} {np.mean(error):+5.2f}/{np.mean(np.abs(error)):4.2f} mM")
        print(f"  {group:5s} n{len(members):<2d} " + "  ".join(cells))
    if len(chosen) > 2:
        cgm = [r["tsc"]["cgm"] - r["truth_tsc"]["cgm"] for r in chosen]
        r_bpf = float(np.corrcoef([r["bpf"] for r in chosen], cgm)[0, 1])
        print(
            f"  CGM error vs BPF: r = {r_bpf:+.2f}; "
            f"fitted CSF {np.mean([r['tsc']['csf'] for r in chosen]):.1f} mM"
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", type=Path, required=True, help="cached subjects and rows")
    parser.add_argument("--seeds", action="append", default=[], help="a range FIRST-LAST, groups in turn")
    parser.add_argument("--seed", action="append", default=[], help="SEED:GROUP, e.g. 9173:SPMS")
    parser.add_argument("--before", action="store_true", help="also measure the maps cached at preparation")
    parser.add_argument("--label", default="builtin", help="name of this segmenter's rows")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="MODULE.NAME=VALUE, a constant to vary")
    args = parser.parse_args()
    for assignment in args.set:
        target, _, value = assignment.partition("=")
        module, _, name = target.rpartition(".")
        setattr(importlib.import_module(f"processing.segmentation.{module}"), name, ast.literal_eval(value))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)
    config = load_config(default_config_path())
    settings = dataclasses.replace(
        settings_from_config(config.processing), receive_field_correction=ReceiveFieldSource.NONE
    )
    args.work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with (args.work / "segmentation.jsonl").open("a") as out:
        for seed, group in _subjects(args.seeds, args.seed):
            prepared = _prepare(seed, group, args.work, settings, config.classification.rules)
            if args.prepare_only:
                continue
            results = {}
            if args.before:
                results["before"] = _measure(prepared, prepared.analysis.maps, settings)
            t1 = prepared.analysis.loaded["t1_3d"].echo(1)
            started = time.perf_counter()
            maps = segment_builtin(t1, t2_lesions=prepared.t2_lesions, t2_on_t1=prepared.t2_on_t1)
            seconds = time.perf_counter() - started
            results[args.label] = _measure(prepared, maps, settings)
            for label, result in results.items():
                row = {
                    "seed": seed,
                    "group": group.value,
                    "segmenter": label,
                    "bpf": prepared.bpf,
                    "truth_ml": prepared.truth_ml,
                    "truth_tsc": prepared.truth_tsc,
                    "seconds": seconds,
                    **result,
                }
                out.write(json.dumps(row) + "\n")
                out.flush()
                rows.append(row)
                errors = " ".join(
                    f"{t} {row['ml'][t] - row['truth_ml'][t]:+5.0f}" for t in ("csf", "cgm", "dgm", "white")
                )
                tsc = " ".join(f"{t} {row['tsc'][t] - row['truth_tsc'][t]:+5.2f}" for t in TISSUES)
                log.info(
                    "%d %s %s: ml %s | mM %s | csf %.0f mM | %.0f s",
                    seed,
                    group.value,
                    label,
                    errors,
                    tsc,
                    row["tsc"]["csf"],
                    seconds,
                )
    for label in ("before", args.label):
        _summary(rows, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
