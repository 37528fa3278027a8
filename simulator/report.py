"""A plain-text description of a simulated session, for the CLI and the demo."""

from __future__ import annotations

from simulator.session import SimulatedSession


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [_row(header, widths), _row(["-" * w for w in widths], widths), *(_row(r, widths) for r in rows)]


def describe_session(session: SimulatedSession) -> str:
    truth = session.ground_truth
    series = truth["series"]
    studies = sorted({s["study_instance_uid"] for s in series.values()})
    lines = [
        f"Session: patient {truth['patient']['name']} ({truth['patient']['id']}), group {truth['group']}, "
        f"seed {truth['seed']}, {len(studies)} stud{'y' if len(studies) == 1 else 'ies'}",
        "",
    ]
    rows = []
    for key, record in series.items():
        grid = record["grid"]
        rows.append(
            [
                str(record["series_number"]),
                record["series_description"],
                key,
                record["nucleus"],
                record["receive_coil"],
                "x".join(map(str, grid["shape_ijk"])),
                "x".join(f"{v:g}" for v in grid["voxel_size_mm"]),
                str(len(record["echo_times_ms"])),
                str(record["files"]),
            ]
        )
    if truth["lesion_seg"]["present"]:
        rows.append(
            [
                str(truth["lesion_seg"]["series_number"]),
                "WM lesion masks (SEG)",
                "lesion_seg",
                "-",
                "-",
                "T1 grid",
                "-",
                "-",
                "1",
            ]
        )
    lines += _table(
        ["#", "description", "key", "nucleus", "receive coil", "matrix", "voxel mm", "echoes", "files"], rows
    )
    lines.append("")
    tissue_rows = [
        [
            name,
            f"{t['tsc_true_mM']:.2f}",
            "-" if t["mean_psf_tsc_sodium_space_mM"] is None else f"{t['mean_psf_tsc_sodium_space_mM']:.2f}",
            f"{t['volume_t1_space_ml']:.1f}",
        ]
        for name, t in truth["tissues"].items()
    ]
    lines += _table(["tissue", "true TSC mM", "PSF-blurred mean mM", "volume ml"], tissue_rows)
    volumes = truth["volumes"]
    lesions = truth["lesions"]
    lines += [
        "",
        f"TIV {volumes['tiv_ml']:.0f} ml, BPF {volumes['bpf']:.3f}, GMF {volumes['gmf']:.3f}, "
        f"WMF {volumes['wmf']:.3f}; "
        f"T2 lesion volume {lesions['t2_volume_ml']:.2f} ml in {lesions['count']} lesions",
        "Phantoms: " + ", ".join(f"{p['concentration_mM']:g} mM" for p in truth["phantoms"]),
        f"DICOM files:  {session.dicom_folder}",
        f"Ground truth: {session.ground_truth_path}",
    ]
    return "\n".join(lines)
