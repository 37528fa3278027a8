"""Volumes in, numbers and maps out: loading, calibration, registration, segmentation, TSC."""
