"""The exception hierarchy: one base, one subclass per stage.

Messages name the file, series or UID concerned, what was wrong, and what to do about it.
"""


class SodiumNodeError(Exception):
    """Base of every error sodium-node raises on purpose."""


class ConfigError(SodiumNodeError):
    """The configuration file is missing, unreadable or invalid.

    The message is one line (the first problem, and how many more); ``problems`` holds every one,
    each a full line naming the file, for `sodium-node check-config`.
    """

    def __init__(self, message: str, *, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems or (message,)


class SimulationError(SodiumNodeError):
    """The virtual scanner could not produce the requested session."""


class ReceiveError(SodiumNodeError):
    """An instance could not be received or stored."""


class SessionError(SodiumNodeError):
    """Series could not be grouped into a session or a session is inconsistent."""


class LoadError(SodiumNodeError):
    """A DICOM series could not be turned into a volume."""


class CalibrationError(SodiumNodeError):
    """The phantom calibration failed or its quality control did not pass."""


class RegistrationError(SodiumNodeError):
    """A registration step failed or its quality control did not pass."""


class SegmentationError(SodiumNodeError):
    """Tissue segmentation failed or its inputs are unusable."""


class ExportError(SodiumNodeError):
    """A DICOM output object could not be written."""


class DeliveryError(SodiumNodeError):
    """An output object could not be delivered to a destination."""
