"""DICOM in: receive, store, group series into sessions, decide completeness, queue jobs."""
