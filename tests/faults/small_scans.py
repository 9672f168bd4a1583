"""Small Eiger scans for the fault-injection modules of the files and reduction stages.

A 24 x 20 detector (75 um pixels, 5 cm), Poisson frames written by `xmodel.dectris.write_scan`
in data files of 3 frames, with a `.poni` and a `.fio` (positions and monitor) beside them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from xmodel.dectris import write_scan
from xmodel.geometry import Geometry

SHAPE = (24, 20)


def geometry(shape: tuple[int, int] = SHAPE) -> Geometry:
    """An untilted detector of ``shape`` with the beam near its centre."""
    return Geometry(dist=0.05, poni1=12.3 * 75e-6, poni2=10.6 * 75e-6, rot1=0.0, rot2=0.0, rot3=0.0,
                    wavelength=0.898e-10, pixel1=75e-6, pixel2=75e-6, shape=shape, detector_name="")


def write_small_scan(folder: Path, positions_um: np.ndarray, monitor: np.ndarray,
                     dummies: tuple[tuple[int, int, int], ...] = ()) -> Path:
    """``len(monitor)`` frames as ``folder/s_master.h5``; ``dummies`` (frame, row, col) hold 2**32 - 1."""
    n = len(monitor)
    frames = np.random.default_rng(0).poisson(20.0, (n, *SHAPE)).astype(np.uint32)
    for i, r, c in dummies:
        frames[i, r, c] = 2**32 - 1
    return write_scan(folder, "s", iter(frames), n, geometry(), positions_um=positions_um, pixel_mask=None,
                      monitor=monitor, frames_per_file=3)


def fresh_copy(template: Path, tmp_path: Path) -> Path:
    """A copy of the scan folder ``template`` in ``tmp_path``; its master file."""
    folder = tmp_path / "scan"
    shutil.copytree(template, folder)
    return folder / "s_master.h5"
