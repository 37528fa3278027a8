"""sodium-node application shell: configuration, errors and the command line.

The pipeline packages (`node`, `processing`, `dicom_out`) and the virtual scanner (`simulator`)
sit beside this package at the top level; this package holds what they all share.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sodium-node")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
