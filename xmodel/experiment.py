"""The experiment a config describes: detector geometry, mask, beam polarization.

Glue between `xmodel.config` (TOML edge, degrees, pixels) and the physics modules
(metres and radians, pyFAI's PONI convention).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmodel import detector
from xmodel.config import ConfigError
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
        """Build from a loaded `xmodel.config.Config` (``[beam]``, ``[detector]``, ``[mask]``).

        Parameters
        ----------
        cfg : xmodel.config.Config
            A loaded configuration.
        binning : int, optional
            Pixel binning (the CLI's ``--binning``); default ``detector.binning`` of ``cfg``.

        Raises
        ------
        ConfigError
            If ``binning`` is not an integer from 1 to half the smaller detector side, or the
            mask leaves no valid pixel (e.g. ``mask.beamstop_radius_px`` larger than the
            detector), naming the key and its value.
        """
        d, m = cfg.detector, cfg.mask
        if d.poni_file:
            geometry = Geometry.from_poni(d.poni_file, detector=d.name)
        else:
            geometry = Geometry.from_beam_center(
                d.distance_m, tuple(d.beam_center_px), cfg.beam.energy_kev, detector=d.name,
                rot1=np.radians(d.rot1_deg), rot2=np.radians(d.rot2_deg), rot3=np.radians(d.rot3_deg))
        b = checked_binning(binning if binning is not None else d.binning, geometry.shape,
                            "binning" if binning is not None else "detector.binning")
        mask = np.zeros(geometry.shape, bool)
        if m.module_gaps and d.name:
            mask |= detector.module_gap_mask(d.name)
        center = beam_center_px(geometry)
        if m.beamstop_radius_px > 0 or m.holder_width_px > 0:
            stop = detector.beamstop_mask(geometry.shape, center, m.beamstop_radius_px,
                                          m.holder_width_px, m.holder_angle_deg)
            if stop.all():
                raise ConfigError(
                    f"mask.beamstop_radius_px = {m.beamstop_radius_px:g} with mask.holder_width_px = "
                    f"{m.holder_width_px:g} masks every pixel of the {geometry.shape[0]} x "
                    f"{geometry.shape[1]} detector (beam centre at row {center[0]:.1f}, col "
                    f"{center[1]:.1f}): expected a beamstop smaller than the detector, typically "
                    f"5-50 pixels. Fix the value (read from {_sources(cfg)}) or override it with "
                    f"--set mask.beamstop_radius_px=12.")
            mask |= stop
        for path in m.files:
            mask |= detector.load_mask(path, shape=geometry.shape)
        if mask.all():
            raise ConfigError(
                f"The mask of {_sources(cfg)} leaves no valid pixel: module gaps "
                f"({m.module_gaps}), beamstop (mask.beamstop_radius_px = {m.beamstop_radius_px:g}, "
                f"mask.holder_width_px = {m.holder_width_px:g}) and mask.files "
                f"{[str(p) for p in m.files]} together cover all {mask.size} pixels. Check the mask "
                f"files (nonzero = masked, as pyFAI).")
        if b > 1:
            geometry = geometry.binned(b)
            mask = detector.bin_mask(mask, b)
            if mask.all():
                raise ConfigError(
                    f"binning = {b} leaves no valid binned pixel (a binned pixel is masked when any "
                    f"of its {b * b} pixels is): expected a smaller binning, e.g. 2, 4 or 8.")
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


def _sources(cfg) -> str:
    """The files and ``--set`` overrides a config came from, for messages."""
    return ", ".join(cfg.sources) if getattr(cfg, "sources", ()) else "the configuration"


def checked_binning(value, shape: tuple[int, int], name: str = "binning") -> int:
    """Validate a pixel binning factor for a detector of ``shape`` (rows, cols).

    Parameters
    ----------
    value
        The binning (the CLI's ``--binning``, the Python argument ``binning`` or the TOML key
        ``detector.binning``).
    shape
        Unbinned detector shape (pixels).
    name
        How the value was given, for the message.

    Returns
    -------
    int
        The factor, from 1 to half the smaller detector side (a binned detector keeps at least
        2 x 2 pixels).

    Raises
    ------
    ConfigError
        Quoting the value and the valid range.
    """
    top = max(1, min(int(n) for n in shape) // 2)
    ok = (isinstance(value, (int, np.integer)) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer())
    if not ok or not 1 <= int(value) <= top:
        raise ConfigError(
            f"{name} = {value!r}{' (the --binning option)' if name == 'binning' else ''}: expected "
            f"an integer from 1 (no binning) to {top} for the {shape[0]} x {shape[1]} detector, "
            f"e.g. 2, 4 or 8.")
    return int(value)
