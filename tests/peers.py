"""Real peers from Debian used by the tests: dciodvfy (dicom3tools) and dcm2niix.

A missing tool fails the test with the package to install: the README's test command installs
them, so in CI nothing is skipped.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import pytest


def require_tool(command: str, *, package: str) -> str:
    path = shutil.which(command)
    if path is None:
        pytest.fail(f"{command} is not on PATH: install the Debian package {package} (make tools)")
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dciodvfy reports as errors for one file (warnings are not errors)."""
    dciodvfy = require_tool("dciodvfy", package="dicom3tools")
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def run_dcm2niix(dicom_folder: Path, output_folder: Path) -> str:
    """Convert a folder (recursively) with file names ``<series number>_<echo>``; returns the log."""
    dcm2niix = require_tool("dcm2niix", package="dcm2niix")
    output_folder.mkdir(parents=True, exist_ok=True)
    command = [dcm2niix, "-o", str(output_folder), "-f", "%s_%e", str(dicom_folder)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"dcm2niix failed on {dicom_folder}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def load_nifti(path: Path) -> nib.Nifti1Image:
    image = nib.load(path)
    assert isinstance(image, nib.Nifti1Image), f"{path} is not a NIfTI-1 image"
    return image


def canonical(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """Voxel axes reordered/flipped to closest RAS, so images of one grid compare element-wise."""
    reoriented = nib.as_closest_canonical(image)
    assert isinstance(reoriented, nib.Nifti1Image)
    return reoriented
