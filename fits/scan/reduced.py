"""The one reader of a reduced scan (``/entry/reduction``) in the scan fit.

Every read of the reduction file in `fits.scan` (polar images, q and chi grids, detector pixels
per bin, scan positions) goes through `open_reduced` and `ReducedScan`, so that the scan fit
follows the reduction's layout (`xmodel.reduction.reduce_scan`) in this one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

#: the reduction group (`xmodel.reduction.reduce_scan`)
REDUCTION = "entry/reduction"


@dataclass(frozen=True)
class ReducedScan:
    """Grids and scan geometry of a reduced scan; frames are read on demand (`polar`).

    Attributes
    ----------
    path : the HDF5 file.
    n_frames : number of frames (scan points).
    q : (Q,) q bin centres (1/A); chi_deg : (C,) chi bin centres (deg, pyFAI chi).
    pixel_counts : (C, Q) detector pixels per bin, or None when the file does not say.
    positions_um : (N, 2) scan positions (slow y, fast x) in um, or None.
    """

    path: Path
    n_frames: int
    q: np.ndarray
    chi_deg: np.ndarray
    pixel_counts: np.ndarray | None
    positions_um: np.ndarray | None

    def polar(self, rows) -> np.ndarray:
        """Polar images (float64, mean counts per bin, NaN where no valid pixel) of ``rows``:
        a slice, or indices in any order (returned in that order)."""
        with h5py.File(self.path, "r") as f:
            ds = f[f"{REDUCTION}/polar"]
            if isinstance(rows, slice):
                return np.asarray(ds[rows], np.float64)
            idx = np.asarray(rows, int).reshape(-1)
            order = np.argsort(idx, kind="stable")
            uniq, inv = np.unique(idx[order], return_inverse=True)
            data = np.asarray(ds[uniq.tolist()], np.float64) if uniq.size else np.zeros((0,) + ds.shape[1:])
            out = np.empty((idx.size,) + data.shape[1:], np.float64)
            out[order] = data[inv]
            return out


def is_reduced(path: str | Path) -> bool:
    """True when ``path`` is an HDF5 file with polar images under ``/entry/reduction``."""
    try:
        with h5py.File(path, "r") as f:
            return f"{REDUCTION}/polar" in f
    except OSError:
        return False


def open_reduced(path: str | Path) -> ReducedScan:
    """`ReducedScan` of ``path``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it holds no ``/entry/reduction/polar`` (not a reduced scan).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a results file written by xmodel reduce.")
    with h5py.File(path, "r") as f:
        if f"{REDUCTION}/polar" not in f:
            raise ValueError(f"{path} has no /entry/reduction/polar; reduce the scan first (xmodel reduce) "
                             f"or pass its Dectris master file to xmodel fit.")
        g = f[REDUCTION]
        return ReducedScan(
            path=path, n_frames=int(g["polar"].shape[0]), q=np.asarray(g["q"], float),
            chi_deg=np.asarray(g["chi"], float),
            pixel_counts=np.asarray(g["counts"], float) if "counts" in g else None,
            positions_um=np.asarray(g["positions"], float) if "positions" in g else None)
