"""Sets of detector points at which the forward model is evaluated.

A `PixelSet` is the static input of the pattern model: scattering vectors on the Ewald
sphere, the per-point intensity weight (solid angle x polarization) and the mask. It is
built once, outside `jit`, for the full detector, a binned detector, a list of pixels or a
polar (q, chi) grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmodel.geometry import Geometry


@dataclass(frozen=True, eq=False)
class PixelSet:
    """Points at which a pattern is evaluated.

    Attributes
    ----------
    q_lab : (P, 3) scattering vectors in the lab frame (1/A), float64.
    weight : (P,) solid angle (relative, pyFAI's) times polarization factor.
    valid : (P,) True where the point is not masked.
    shape : shape of the output image the P points fill, row-major (e.g. detector shape or
        (n_chi, n_q)).
    kind : "detector", "binned", "list" or "polar".
    spread : (P, 3, 3) covariance of the q-vectors of the detector pixels each point stands for
        (1/A^2, lab frame), or None for points that are single pixels. A point with a spread is
        a reduced bin: the model there is the mean of the pattern over the bin's pixels, to
        second order (`xmodel.pattern.binned_shell_sum`); `fits.scan.setup.bin_centroid_pixels`
        sets it.
    """

    q_lab: np.ndarray
    weight: np.ndarray
    valid: np.ndarray
    shape: tuple[int, ...]
    kind: str = "detector"
    spread: np.ndarray | None = None

    def __post_init__(self):
        if self.spread is not None and np.shape(self.spread) != (np.shape(self.q_lab)[0], 3, 3):
            raise ValueError(f"PixelSet spread has shape {np.shape(self.spread)}; expected "
                             f"({np.shape(self.q_lab)[0]}, 3, 3), one q covariance per point")

    @property
    def q_abs(self) -> np.ndarray:
        """|q| (1/A) per point."""
        return np.linalg.norm(self.q_lab, axis=-1)

    @property
    def size(self) -> int:
        return int(self.q_lab.shape[0])

    @classmethod
    def from_geometry(cls, geometry: Geometry, mask: np.ndarray | None = None,
                      polarization_factor: float | None = 0.99, kind: str = "detector") -> "PixelSet":
        """Every pixel of ``geometry``'s detector (use ``geometry.binned(f)`` for a binned one).

        ``mask`` is True where a pixel is invalid (pyFAI convention); ``None`` masks nothing.
        """
        shape = tuple(geometry.shape)
        if mask is None:
            mask = np.zeros(shape, bool)
        mask = np.asarray(mask, bool)
        if mask.shape != shape:
            raise ValueError(f"mask has shape {mask.shape} but the detector has shape {shape}; "
                             "bin the mask with xmodel.detector.bin_mask for a binned detector")
        q_lab = geometry.q_lab().reshape(-1, 3)
        weight = geometry.solid_angle().reshape(-1)
        if polarization_factor is not None:
            weight = weight * geometry.polarization(polarization_factor).reshape(-1)
        return cls(q_lab=q_lab, weight=weight, valid=~mask.reshape(-1), shape=shape, kind=kind)

    @classmethod
    def from_pixels(cls, geometry: Geometry, rows: np.ndarray, cols: np.ndarray,
                    mask: np.ndarray | None = None, polarization_factor: float | None = 0.99) -> "PixelSet":
        """A list of pixels (integer or fractional pixel-index coordinates, pixel centres at (i, j))."""
        rows = np.asarray(rows, float).reshape(-1)
        cols = np.asarray(cols, float).reshape(-1)
        if rows.shape != cols.shape:
            raise ValueError(f"rows ({rows.shape}) and cols ({cols.shape}) must have the same length")
        q_lab = geometry.q_lab(rows, cols).reshape(-1, 3)
        weight = weight_at(geometry, q_lab, rows, cols, polarization_factor)
        valid = np.ones(rows.shape, bool)
        if mask is not None:
            r = np.clip(np.rint(rows).astype(int), 0, geometry.shape[0] - 1)
            c = np.clip(np.rint(cols).astype(int), 0, geometry.shape[1] - 1)
            valid = ~np.asarray(mask, bool)[r, c]
        return cls(q_lab=q_lab, weight=weight, valid=valid, shape=(rows.size,), kind="list")

    @classmethod
    def from_polar(cls, geometry: Geometry, q: np.ndarray, chi_deg: np.ndarray,
                   mask: np.ndarray | None = None, polarization_factor: float | None = 0.99) -> "PixelSet":
        """A polar grid: rows are ``chi_deg`` (deg, pyFAI chi), columns ``q`` (1/A).

        Points lie on the Ewald sphere. The weight is solid angle x polarization at the spot
        where the point falls on the detector; points off the detector, or on masked pixels
        when ``mask`` is given, are invalid.
        """
        q = np.asarray(q, float)
        chi_deg = np.asarray(chi_deg, float)
        qq, cc = np.meshgrid(q, chi_deg)
        q_lab = geometry.q_lab_from_polar(qq, cc).reshape(-1, 3)
        rows, cols = geometry.pixel_from_q_lab(q_lab)
        on = np.isfinite(rows) & np.isfinite(cols)
        on &= (rows > -0.5) & (rows < geometry.shape[0] - 0.5) & (cols > -0.5) & (cols < geometry.shape[1] - 0.5)
        rr = np.where(on, rows, 0.0)
        cc_ = np.where(on, cols, 0.0)
        weight = weight_at(geometry, q_lab, rr, cc_, polarization_factor)
        valid = on.copy()
        if mask is not None:
            ri = np.clip(np.rint(rr).astype(int), 0, geometry.shape[0] - 1)
            ci = np.clip(np.rint(cc_).astype(int), 0, geometry.shape[1] - 1)
            valid &= ~np.asarray(mask, bool)[ri, ci]
        return cls(q_lab=q_lab, weight=np.where(on, weight, 0.0), valid=valid,
                   shape=(chi_deg.size, q.size), kind="polar")

    def subset(self, index: np.ndarray) -> "PixelSet":
        """The points ``index`` (a flat index array) as a list-kind set (with their spreads)."""
        index = np.asarray(index)
        spread = None if self.spread is None else self.spread[index]
        return PixelSet(self.q_lab[index], self.weight[index], self.valid[index], (index.size,), "list", spread)


def weight_at(geometry: Geometry, q_lab: np.ndarray, rows: np.ndarray, cols: np.ndarray,
               polarization_factor: float | None) -> np.ndarray:
    """Solid angle x polarization at fractional pixel positions.

    Notes
    -----
    Solid angle relative to the PONI, ``(dist / |t|)^3`` (pyFAI's ``solidAngleArray``);
    polarization ``0.5 (1 + cos^2 2theta - f cos(2 chi) sin^2 2theta)`` (pyFAI's
    ``polarization`` with axis_offset 0).
    Validation: equals the full-detector arrays of `Geometry` at integer pixels (tests).
    """
    t = geometry.positions(rows, cols).reshape(-1, 3)
    r = np.linalg.norm(t, axis=-1)
    weight = (geometry.dist / r) ** 3
    if polarization_factor is not None:
        cos2t = t[:, 2] / r
        sin2t2 = 1.0 - cos2t ** 2
        chi = np.arctan2(t[:, 0], t[:, 1])
        weight = weight * 0.5 * (1.0 + cos2t ** 2 - polarization_factor * np.cos(2 * chi) * sin2t2)
    return weight
