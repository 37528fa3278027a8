"""Everything the node writes is patient data: files 0600, folders 0700, whatever umask it was given.

`sodium-node serve` and `sodium-node export` are started with the permissive umask 022 a shell or a
service manager commonly gives; the node receives one instance over the network, one through the
watched import folder and one it quarantines, logs to a file, and exports a result.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from dicom_out_helpers import build_results_folder
from node_helpers import free_port, query, wait_for, write_node_config
from pynetdicom import AE
from test_node_quarantine import MR_IMAGE_STORAGE
from test_node_recovery import serve_process

from simulator.session import SimulatedSession
from sodium_node.config import load_config

PERMISSIVE_UMASK = 0o022


def _not_private(*roots: Path) -> list[str]:
    """Every file not 0600 and folder not 0700 under (and including) ``roots``, with its mode."""
    found = []
    for root in roots:
        for path in (root, *root.rglob("*")):
            mode = stat.S_IMODE(path.lstat().st_mode)
            expected = 0o700 if path.is_dir() else 0o600
            if mode != expected:
                found.append(f"{path} {mode:04o}")
    return found


def test_patient_data_is_written_0600_in_0700_folders(
    tmp_path: Path, classic_session: SimulatedSession
) -> None:
    folder = tmp_path / "node"
    config_path = write_node_config(folder, port=free_port())
    log_file = folder / "log" / "sodium-node.log"
    commented = '# file = "var/sodium-node/sodium-node.log"'
    config_path.write_text(config_path.read_text().replace(commented, f'file = "{log_file}"', 1))
    config = load_config(config_path)
    assert config.logging.file == log_file
    good, imported = classic_session.series_files["t1_2d"][:2]
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    def states() -> dict[str, int]:
        rows = query(config, "SELECT state, COUNT(*) FROM instances GROUP BY state")
        return {str(state): int(str(count)) for state, count in rows}

    with serve_process(config_path, tmp_path / "serve.out", umask=PERMISSIVE_UMASK):
        ae = AE(ae_title="ACHIEVA_3T")
        ae.add_requested_context(MR_IMAGE_STORAGE)
        assoc = ae.associate("127.0.0.1", config.network.port, ae_title="SODIUM_NODE")
        assert assoc.is_established
        try:
            assert assoc.send_c_store(good).Status == 0x0000
            assert assoc.send_c_store(truncated).Status == 0x0000, "stored, then quarantined"
        finally:
            assoc.release()
        (config.storage.import_dir / imported.name).write_bytes(imported.read_bytes())
        wait_for(
            lambda: states() == {"ingested": 2, "quarantined": 1},
            what="two instances ingested (network, import folder) and one quarantined",
        )

    results_dir = build_results_folder(classic_session, tmp_path / "results")
    exports = folder / "exports"
    sodium_dir = classic_session.series_files["sodium"][0].parent
    command = [sys.executable, "-m", "sodium_node.cli", "export", str(results_dir), str(sodium_dir)]
    command += [str(exports / "session"), "--config", str(config_path)]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, check=False, umask=PERMISSIVE_UMASK
    )
    assert result.returncode == 0, result.stderr

    assert list(config.storage.quarantine_dir.glob("*.dcm")), "the quarantine was written"
    assert config.storage.index_database.is_file() and log_file.stat().st_size > 0
    assert list((exports / "session").rglob("*.dcm")), "the export was written"
    assert _not_private(config.storage.root, config.storage.import_dir, log_file.parent, exports) == []
