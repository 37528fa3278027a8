"""Grouping series into sessions, completeness and the monitor's decisions.

Real peers for the interleaving case (two storescu processes at once, two patients); the grouping
rules and the forced-timeout actions are checked directly on the index with synthetic headers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from node_helpers import DCMTK_ENV, dcmtk, query, running_node, storescu, wait_for, write_node_config
from test_node_receive import ManifestRunner, all_files

from node.headers import InstanceHeader
from node.index import Announced, Index, Origin, Source
from node.jobs import JobQueue
from node.service import SessionMonitor, open_index
from node.sessions import (
    Decision,
    SessionState,
    decide,
    evaluate_session,
    record_ingested,
    series_completeness,
)
from simulator.population import Group
from simulator.session import SimulatedSession, SimulationOptions, simulate_session
from sodium_node.config import NodeConfig, Role, TimeoutAction, load_config

SECOND_PATIENT_SEED = 21


@pytest.fixture(scope="module")
def second_patient(tmp_path_factory: pytest.TempPathFactory) -> SimulatedSession:
    """A healthy control, classic storage, sodium exam in the same study."""
    return simulate_session(
        tmp_path_factory.mktemp("second-patient") / "session",
        SimulationOptions(seed=SECOND_PATIENT_SEED, group=Group.HC, new_study_for_sodium=False),
    )


def test_two_patients_interleaved_on_parallel_associations_make_two_sessions(
    tmp_path: Path, classic_session: SimulatedSession, second_patient: SimulatedSession
) -> None:
    with running_node(tmp_path, ManifestRunner()) as node:
        sessions = {"A_SCANNER": classic_session, "B_SCANNER": second_patient}
        failures: list[str] = []

        def send(calling_ae: str, session: SimulatedSession) -> None:
            command = [dcmtk("storescu"), "-R", "-aet", calling_ae, "-aec", "SODIUM_NODE", "127.0.0.1"]
            command += [str(node.port), *map(str, all_files(session))]
            result = subprocess.run(command, capture_output=True, text=True, env=DCMTK_ENV, check=False)
            if result.returncode != 0:
                failures.append(f"{calling_ae}: {result.stderr}")

        threads = [threading.Thread(target=send, args=item) for item in sessions.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures
        total = sum(len(all_files(s)) for s in sessions.values())
        wait_for(lambda: node.index.counts().get("ingested", 0) == total, what="both sessions ingested")
        rows = query(node.config, "SELECT session_id, patient_id FROM sessions ORDER BY patient_id")
        assert sorted(str(r[1]) for r in rows) == sorted(
            s.ground_truth["patient"]["id"] for s in sessions.values()
        )
        for session_id, patient_id in rows:
            session = next(s for s in sessions.values() if s.ground_truth["patient"]["id"] == patient_id)
            report = evaluate_session(node.index, str(session_id), node.config)
            assert report.required_complete, report.describe_missing()
            expected = {str(s["series_instance_uid"]) for s in session.ground_truth["series"].values()}
            got = {status.series_instance_uid for status in report.series}
            assert expected <= got and len(got - expected) <= 1  # + the lesion SEG, if any
            calling = {
                str(r[0])
                for r in query(
                    node.config,
                    "SELECT DISTINCT i.calling_ae_title FROM instances i JOIN series s "
                    "ON i.series_instance_uid = s.series_instance_uid WHERE s.session_id = ?",
                    (str(session_id),),
                )
            }
            assert len(calling) == 1
        wait_for(
            lambda: len(query(node.config, "SELECT 1 FROM jobs WHERE state = 'done'")) == 2, what="two jobs"
        )


# --- grouping rules on synthetic headers ----------------------------------------------------------


def header(
    series: str, *, patient: str = "P1", at: dt.datetime, description: str = "T1W_3D_TFE"
) -> InstanceHeader:
    return InstanceHeader(
        sop_instance_uid=f"{series}.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
        study_instance_uid="1.2.3",
        series_instance_uid=series,
        patient_id=patient,
        issuer_of_patient_id="HOSPITAL",
        modality="MR",
        series_number=1,
        series_description=description,
        protocol_name=description,
        imaged_nucleus="1H",
        imaging_frequency_mhz=127.7,
        receive_coil_name="SENSE-Head-32",
        transmit_coil_name="B",
        mr_acquisition_type="3D",
        acquired_at=at,
        instance_number=1,
        images_in_acquisition=1,
        number_of_frames=None,
        echo_keys=("1",),
        position_key="0.00,0.00,0.00",
        frames_consistent=True,
    )


@pytest.fixture()
def config(tmp_path: Path) -> NodeConfig:
    return load_config(write_node_config(tmp_path, port=11112))


@pytest.fixture()
def index(config: NodeConfig) -> Iterator[Index]:
    opened = open_index(config)
    try:
        yield opened
    finally:
        opened.close()


def ingest(index: Index, config: NodeConfig, item: InstanceHeader) -> str:
    path = config.storage.spool_dir / f"{item.sop_instance_uid}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    outcome = index.record_instance(
        announced=Announced(item.sop_instance_uid, item.sop_class_uid, "1.2.840.10008.1.2.1"),
        sha256=item.sop_instance_uid,
        size_bytes=0,
        path=path,
        origin=Origin(Source.NETWORK, "TEST", "127.0.0.1:1"),
    )
    return record_ingested(index, index.instance(outcome.instance_id), item, config.sessions).session_id


def test_grouping_by_patient_and_window(index: Index, config: NodeConfig) -> None:
    morning = dt.datetime(2026, 3, 2, 9, 0)
    first = ingest(index, config, header("1.1", at=morning))
    # The sodium exam 35 min later in another study: same session.
    assert (
        ingest(
            index,
            config,
            dataclasses.replace(
                header("1.2", at=morning + dt.timedelta(minutes=35)), study_instance_uid="9.9"
            ),
        )
        == first
    )
    # Another patient at the same time: never merged.
    other = ingest(index, config, header("2.1", patient="P2", at=morning))
    assert other != first
    # Same patient ID from another issuer: another patient.
    assert (
        ingest(index, config, dataclasses.replace(header("3.1", at=morning), issuer_of_patient_id="X"))
        != first
    )
    # Same patient the next day: a second session.
    assert ingest(index, config, header("1.3", at=morning + dt.timedelta(days=1))) not in (first, other)
    # A series acquired before the first one, within the window, joins it.
    assert ingest(index, config, header("1.4", at=morning - dt.timedelta(minutes=20))) == first
    assert len(query(config, "SELECT 1 FROM sessions")) == 4


def test_series_completeness_from_its_own_content() -> None:
    mr = "1.2.840.10008.5.1.4.1.1.4"
    assert (
        series_completeness(
            sop_class_uid=mr,
            images_in_acquisition=4,
            instance_numbers=[1, 2, 3],
            position_keys=["a"] * 3,
            frames=[],
        )[0]
        is False
    )
    assert (
        series_completeness(
            sop_class_uid=mr,
            images_in_acquisition=4,
            instance_numbers=[1, 2, 3, 4],
            position_keys=["a"] * 4,
            frames=[],
        )[0]
        is True
    )
    # No Images in Acquisition: contiguous instance numbers and as many echoes at each position.
    assert (
        series_completeness(
            sop_class_uid=mr,
            images_in_acquisition=None,
            instance_numbers=[1, 2, 4],
            position_keys=["a", "a", "b"],
            frames=[],
        )[0]
        is False
    )
    assert (
        series_completeness(
            sop_class_uid=mr,
            images_in_acquisition=None,
            instance_numbers=[1, 2, 3, 4],
            position_keys=["a", "a", "b", "b"],
            frames=[],
        )[0]
        is True
    )
    # Enhanced: one instance whose frames cover every position x echo.
    enhanced = "1.2.840.10008.5.1.4.1.1.4.1"
    assert (
        series_completeness(
            sop_class_uid=enhanced,
            images_in_acquisition=None,
            instance_numbers=[1],
            position_keys=[None],
            frames=[(104, True)],
        )[0]
        is True
    )
    assert (
        series_completeness(
            sop_class_uid=enhanced,
            images_in_acquisition=None,
            instance_numbers=[1],
            position_keys=[None],
            frames=[(103, False)],
        )[0]
        is False
    )


def test_forced_timeout_processes_with_the_minimum_or_marks_incomplete(
    index: Index, config: NodeConfig
) -> None:
    morning = dt.datetime(2026, 3, 2, 9, 0)
    session_id = ingest(index, config, header("1.1", at=morning))  # a 3D T1 only
    report = evaluate_session(index, session_id, config)
    assert report.chosen[Role.T1_3D].complete and Role.SODIUM in report.missing_roles
    sessions = config.sessions
    later = report.last_received_at + 5.0
    assert decide(report, now=later, config=sessions, has_active_job=False) is Decision.WAIT
    timed_out = report.last_received_at + sessions.forced_timeout_minutes * 60 + 1
    assert decide(report, now=timed_out, config=sessions, has_active_job=False) is Decision.MARK_INCOMPLETE

    queue = JobQueue(config.storage.jobs_dir, index, max_attempts=3)
    SessionMonitor(config, index, queue).check(now=timed_out)
    assert evaluate_session(index, session_id, config).state is SessionState.INCOMPLETE
    assert "missing sodium" in str(query(config, "SELECT report FROM sessions")[0][0])

    # With only the minimum roles present (no 2D T1), process_if_minimum queues a partial job.
    minimum_only = dataclasses.replace(
        report, missing_roles=(Role.T1_2D,), missing_minimum_roles=(), state=SessionState.OPEN
    )
    assert sessions.timeout_action is TimeoutAction.PROCESS_IF_MINIMUM
    assert (
        decide(minimum_only, now=timed_out, config=sessions, has_active_job=False) is Decision.QUEUE_PARTIAL
    )
    assert decide(minimum_only, now=timed_out, config=sessions, has_active_job=True) is Decision.WAIT
    mark_only = sessions.model_copy(update={"timeout_action": TimeoutAction.MARK_INCOMPLETE})
    assert (
        decide(minimum_only, now=timed_out, config=mark_only, has_active_job=False)
        is Decision.MARK_INCOMPLETE
    )
    # New data reopens an incomplete session.
    ingest(index, config, header("1.2", at=morning + dt.timedelta(minutes=5)))
    assert evaluate_session(index, session_id, config).state is SessionState.OPEN


def test_a_session_without_the_unused_2d_t1_is_processed_without_waiting_for_the_timeout(
    tmp_path: Path, classic_session: SimulatedSession
) -> None:
    files = [path for key, paths in classic_session.series_files.items() if key != "t1_2d" for path in paths]
    with running_node(tmp_path, ManifestRunner()) as node:
        assert node.config.sessions.forced_timeout_minutes == 10.0
        storescu(node.port, files)
        done = node.config.storage.jobs_dir / "done"
        wait_for(lambda: done.is_dir() and any(done.iterdir()), what="the job", timeout_s=120)
        (job,) = done.iterdir()
        document = json.loads((job / "job.json").read_text())
        assert document["partial"] is False, "complete: processing reads no 2D T1"
