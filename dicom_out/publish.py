"""After processing: write the DICOM objects of a results folder and queue them for every destination."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from dicom_out.export import export_results
from dicom_out.identity import output_identity
from dicom_out.outbox import OutboxItem, enqueue
from sodium_node.config_models import NodeConfig

log = logging.getLogger(__name__)


class Publisher:
    """Exports ``results_dir`` into ``export_dir`` (the kinds ``[output.produce]`` asks for) and queues
    the objects in the durable outbox; the node's delivery thread sends them."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config

    def __call__(self, results_dir: Path, sodium_files: Sequence[Path], export_dir: Path) -> list[OutboxItem]:
        exported = export_results(
            results_dir,
            sodium_files,
            export_dir,
            kinds=self.config.output.produce.kinds(),
            output=output_identity(self.config.output),
            versions_dir=self.config.storage.result_versions_dir,
        )
        queued = enqueue(export_dir, self.config, objects=exported)
        log.info("%s: %d objects exported, %d outbox items queued", export_dir, len(exported), len(queued))
        return queued
