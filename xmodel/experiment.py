"""The experiment a config describes: detector geometry, mask, beam polarization.

Glue between `xmodel.config` (TOML edge, degrees, pixels) and the physics modules
(metres and radians, pyFAI's PONI convention).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmodel import detector
from xmodel.geometry import Geometry
from xmodel.pixels import PixelSet


@dataclass(frozen=True, eq=False)
class Experiment:
    """Geometry and mask of one detector setting.

    Attributes
    ----------
    geometry : the detector geometry (binned when ``binning > 1``).
    mask : bool, True where a pixel is invalid, same shape as ``geometry.shape``.
    polarization_factor : pyFAI's polarization factor (horizontal linear polarization ~ 1).
    binning : the binning factor applied to the full detector.
    """

    geometry: Geometry
    mask: np.ndarray
    polarization_factor: float = 0.99
    binning: int = 1

    @classmethod
    def from_config(cls, cfg, binning: int | None = None) -> "Experiment":
        """Build from a loaded `xmodel.config.Config` (``[beam]``, ``[detector]``, ``[mask]``)."""
        d, m = cfg.detector, cfg.mask
        if d.poni_file:
            geometry = Geometry.from_poni(d.poni_file, detector=d.name)
        else:
            geometry = Geometry.from_beam_center(
                d.distance_m, tuple(d.beam_center_px), cfg.beam.energy_kev, detector=d.name,
                rot1=np.radians(d.rot1_deg), rot2=np.radians(d.rot2_deg), rot3=np.radians(d.rot3_deg))
        mask = np.zeros(geometry.shape, bool)
        if m.module_gaps and d.name:
            mask |= detector.module_gap_mask(d.name)
        center = beam_center_px(geometry)
        if m.beamstop_radius_px > 0 or m.holder_width_px > 0:
            mask |= detector.beamstop_mask(geometry.shape, center, m.beamstop_radius_px,
                                           m.holder_width_px, m.holder_angle_deg)
        for path in m.files:
            mask |= detector.load_mask(path, shape=geometry.shape)
        b = int(binning if binning is not None else d.binning)
        if b > 1:
            geometry = geometry.binned(b)
            mask = detector.bin_mask(mask, b)
        return cls(geometry=geometry, mask=mask, polarization_factor=cfg.beam.polarization_factor, binning=b)

    def pixels(self) -> PixelSet:
        """Every pixel of the (binned) detector."""
        return PixelSet.from_geometry(self.geometry, self.mask, self.polarization_factor,
                                      kind="binned" if self.binning > 1 else "detector")

    def polar_pixels(self, q: np.ndarray, chi_deg: np.ndarray) -> PixelSet:
        """A polar (chi rows, q columns) grid on this detector, masked where the mask is."""
        return PixelSet.from_polar(self.geometry, q, chi_deg, self.mask, self.polarization_factor)


def beam_center_px(geometry: Geometry) -> tuple[float, float]:
    """(row, col) where the direct beam meets the detector plane (pixel centres at (i, j))."""
    r, c = geometry.pixel_from_q_lab(np.zeros((1, 3)))
    return float(np.asarray(r).reshape(-1)[0]), float(np.asarray(c).reshape(-1)[0])
