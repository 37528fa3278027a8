"""DICOM out: Parametric Map, SEG, TID 1500 SR, summary page, and delivery to PACS."""
