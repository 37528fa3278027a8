"""Tissue segmentation of the 3D T1: tissue maps, lesion handling, volumes, external maps."""
