"""Keep the values of DICOM elements pydicom rejects out of the logs: they are patient data.

pydicom reports a value that does not fit its VR with the value itself ("Invalid value for VR DA:
'1970-01-31'."), both to the ``pydicom`` logger and as a Python warning (which a service manager
writes into its journal). ``withhold_dicom_values`` keeps the logger's line without the value and
drops the duplicate warning. The node's own messages name UIDs and files, never values.
"""

from __future__ import annotations

import logging
import re
import warnings

_VALUE_MESSAGES = (
    (re.compile(r"Invalid value for VR (\w+): .*", re.DOTALL), r"Invalid value for VR \1 (value withheld)"),
    (
        re.compile(r'Value ".*" is not valid for elements with a VR of (\w+)', re.DOTALL),
        r"A value is not valid for elements with a VR of \1 (value withheld)",
    ),
)
_WARNING_PATTERN = r'(Invalid value for VR |Value ".*" is not valid for elements with a VR of )'


class WithheldValues(logging.Filter):
    """Rewrites pydicom's invalid-value messages without the value (the record is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for pattern, replacement in _VALUE_MESSAGES:
            withheld = pattern.sub(replacement, message)
            if withheld != message:
                record.msg, record.args = withheld, None
                break
        return True


def withhold_dicom_values() -> None:
    """Install the filter on pydicom's logger and silence the warnings that repeat its lines (once)."""
    pydicom_logger = logging.getLogger("pydicom")
    if not any(isinstance(installed, WithheldValues) for installed in pydicom_logger.filters):
        pydicom_logger.addFilter(WithheldValues())
    warnings.filterwarnings("ignore", message=_WARNING_PATTERN)
