"""A virtual Philips Achieva 3T: writes a ground-truth 1H + 23Na session as DICOM files.

Only the CLI, the tests and the benches import this package.
"""
