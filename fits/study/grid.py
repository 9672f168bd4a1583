"""The points a parameter study evaluates the pattern on, and how many pixels each one holds.

A study point is either a detector pixel (``"full"``), a block of ``b x b`` pixels of a binned
detector (``"binned"``) or a (chi, q) bin of the polar grid a scan fit uses (``"polar"``). Each
point ``p`` carries the model's expected count per pixel ``m_p`` and ``w_p``, the number of
detector pixels it stands for; the counts summed over those pixels are Poisson with mean
``w_p m_p`` (the same convention as `fits.objective`: observations are mean counts per pixel).

Polar grid: 500 log-spaced q bins x 360 chi bins over the valid pixels (the reduction of the
demo and the twin, `xmodel.reduction.default_bins` with ``q_spacing="log"``), ``w_p`` the
pixels of each bin (`xmodel.reduction.build_bin_map`), restricted to the bins of the SL and AL
q-bands that a scan fit uses (`fits.study.scan_link.fit_point_index` over the scan fit's range
of lattice constants). The model is evaluated at the bin centres (the scan fit of a reduced scan
evaluates it at each bin's pixel centroid instead, `fits.scan.setup.bin_centroid_pixels`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xmodel.experiment import Experiment
from xmodel.pixels import PixelSet

#: grid kinds accepted by `build_grid` and ``xmodel study --grid``
GRIDS = ("full", "binned", "polar")
#: polar grid of the scan reduction (chi bins, q bins; q log-spaced)
POLAR_BINS = (360, 500)
#: binning factor of the "binned" grid when the config's ``detector.binning`` is 1
DEFAULT_BINNING = 4


@dataclass(frozen=True, eq=False)
class StudyGrid:
    """Points of a study.

    Attributes
    ----------
    kind : one of `GRIDS`.
    pixels : the `xmodel.pixels.PixelSet` of the study points (``P`` points).
    weight : (P,) detector pixels per point (1 on the full detector, ``b^2`` binned, the
        bin's pixel count on the polar grid); 0 where a point is masked.
    image_shape : shape of the image the points are drawn in (detector rows x cols, or
        (n_chi, n_q) for the polar grid).
    index : (P,) flat indices of the points in that image.
    q, chi_deg : polar bin centres (1/A, deg), None for detector grids.
    experiment : the `xmodel.experiment.Experiment` (detector geometry and mask).
    """

    kind: str
    pixels: PixelSet
    weight: np.ndarray
    image_shape: tuple[int, ...]
    index: np.ndarray
    q: np.ndarray | None
    chi_deg: np.ndarray | None
    experiment: Experiment

    @property
    def size(self) -> int:
        """Number of points P."""
        return int(self.weight.size)

    def image(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """(..., P) values per point placed in ``image_shape`` (``fill`` elsewhere)."""
        values = np.asarray(values)
        out = np.full(values.shape[:-1] + (int(np.prod(self.image_shape)),), fill, np.float64)
        out[..., self.index] = values
        return out.reshape(values.shape[:-1] + tuple(self.image_shape))


def check_grid(kind: str) -> str:
    """``kind`` after checking it is one of `GRIDS`."""
    if kind not in GRIDS:
        raise ValueError(f"unknown grid {kind!r}; valid grids are {list(GRIDS)} (full: every detector pixel, "
                         "binned: blocks of pixels, polar: the (chi, q) bins a scan fit uses)")
    return kind


def build_grid(cfg, kind: str = "polar", template=None, a_range: tuple[float, float] | None = None) -> StudyGrid:
    """The study points of ``kind`` for the experiment of ``cfg``.

    Parameters
    ----------
    cfg : loaded `xmodel.config.Config`.
    kind : "full", "binned" (the config's ``detector.binning``, or `DEFAULT_BINNING` when it is
        1) or "polar".
    template : `xmodel.parameters.ModelParams` of the sample (peak widths), needed for "polar".
    a_range : SL lattice constants (A) the polar bands must cover (default: the scan fit's
        range, ``fit.a_range_rel`` (`fits.scan.settings.SupportSettings`) times the template's a).

    Raises
    ------
    ValueError
        For an unknown ``kind`` or a polar grid without a valid bin in the SL and AL bands.
    """
    check_grid(kind)
    if kind == "full":
        exp = Experiment.from_config(cfg, binning=1)
        px = exp.pixels()
        return StudyGrid(kind, px, px.valid.astype(np.float64), tuple(px.shape), np.arange(px.size),
                         None, None, exp)
    if kind == "binned":
        b = cfg.detector.binning if cfg.detector.binning > 1 else DEFAULT_BINNING
        exp = Experiment.from_config(cfg, binning=b)
        px = exp.pixels()
        return StudyGrid(kind, px, px.valid * float(b * b), tuple(px.shape), np.arange(px.size), None, None, exp)
    from fits.study.scan_link import FitSettings, fit_point_index
    from xmodel.parameters import structure_from_config
    from xmodel.reduction import build_bin_map, default_bins

    if template is None:
        raise ValueError("build_grid(kind='polar') needs the sample template (its peak widths set the bands)")
    exp = Experiment.from_config(cfg, binning=1)
    geo = exp.geometry
    bins = default_bins(geo, exp.mask, n_q=POLAR_BINS[1], n_chi=POLAR_BINS[0], q_spacing="log")
    counts = build_bin_map(geo.q(), geo.chi(), exp.mask, bins).counts
    q, chi = bins.q_centres, bins.chi_centres
    full = exp.polar_pixels(q, chi)
    a0 = float(np.asarray(template.lattice_constant))
    support = FitSettings().support
    rel = support.a_range_rel
    a_range = a_range or (rel[0] * a0, rel[1] * a0)
    structure = structure_from_config(cfg, a_range)
    index = fit_point_index(full, structure, template, a_range, support.width_factor, counts,
                            support.band_nsigma)
    if index.size == 0:
        raise ValueError(f"no polar bin of the config's detector lies in the SL or AL q-bands (q {q.min():.3g} .. "
                         f"{q.max():.3g} 1/A); check detector.distance_m, detector.beam_center_px and the mask")
    px = full.subset(index)
    return StudyGrid(kind, px, counts.reshape(-1)[index].astype(np.float64), (chi.size, q.size), index, q, chi, exp)
