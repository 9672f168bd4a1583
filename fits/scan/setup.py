"""What a scan fit needs besides the frames: the model on the fit points, the template bank.

`FitSetup.build` is the one place where the lattice-constant range of a fit (the config's
``superlattice.lattice_constant`` times `fits.scan.settings.SupportSettings.a_range_rel`)
becomes the model's reflection list (`xmodel.parameters.structure_from_config`), its support
(`xmodel.pattern.PatternModel`) and its fit points (`fit_point_index`); everything downstream
reads the range from `FitSetup.a_range`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from xmodel.reduced import ReducedScan, open_reduced
from fits.scan.settings import FitSettings
from fits.scan.templates import TemplateBank, build_template_bank
from xmodel import orientation
from xmodel.experiment import Experiment
from xmodel.parameters import ModelParams, params_from_config, structure_from_config
from xmodel.pattern import PatternModel

TWO_PI = 2.0 * np.pi
#: NC orientation relationships tried for every frame (`xmodel.orientation.orientation_relationship`)
CONFIGURATIONS = ("conf1", "conf2")


def fit_point_index(pixels, structure, template: ModelParams, a_range: tuple[float, float],
                    width_factor: float, pixel_counts: np.ndarray | None, nsigma: float) -> np.ndarray:
    """Flat indices of the polar points that carry SL or AL peaks: the points a fit uses.

    Parameters
    ----------
    pixels : `xmodel.pixels.PixelSet` of the whole polar grid (``Experiment.polar_pixels``).
    structure : `xmodel.parameters.Structure` (SL and AL reflection lists).
    template : sample parameters (radial widths ``sl_radial_width``, ``al_radial_width``, 1/A).
    a_range : (a_min, a_max) SL lattice constants the fit may reach (A).
    width_factor : radial widths may grow by this factor (`SupportSettings.width_factor`).
    pixel_counts : (C, Q) detector pixels per bin; bins without pixels are left out (None: all).
    nsigma : half-width of each band in radial sigmas (`SupportSettings.band_nsigma`).

    Returns
    -------
    numpy.ndarray of int
        Valid points with ``|q|`` in the SL band (``2 pi |hkl|_min / a_max - n sigma_r`` to
        ``q_max_sl + n sigma_r``) or within ``n sigma_s`` of an AL shell ``2 pi |hkl| / a_AL``.

    Notes
    -----
    Points outside these bands hold background and the isotropic diffuse term only; leaving
    them out changes no peak parameter and cuts the cost of a fit by the ratio of the counts
    (the "pixels of the SL and AL q-bands" objective of the scan fit; Gaussian bands of the model,
    `xmodel.pattern`).

    Validation: every support point of an orientation-free `PatternModel` over ``a_range`` lies
    in the selection (tests/fits/scan/test_driver.py).
    """
    qa = np.linalg.norm(np.asarray(pixels.q_lab, np.float64), axis=-1).reshape(-1)
    wf = max(1.0, float(width_factor))
    sr = float(template.sl_radial_width) * wf * nsigma
    ss = float(template.al_radial_width) * wf * nsigma
    n_sl = np.sqrt(np.sum(np.asarray(structure.sl_hkl, float) ** 2, axis=1))
    lo = TWO_PI * n_sl.min() / max(a_range) - sr
    keep = (qa >= lo) & (qa <= structure.q_max_sl + sr)
    g_al = np.unique(np.round(TWO_PI * np.sqrt(np.sum(np.asarray(structure.al_hkl, float) ** 2, axis=1))
                              / structure.al_lattice_constant, 9))
    for g in g_al:
        keep |= np.abs(qa - g) <= ss
    keep &= np.asarray(pixels.valid, bool).reshape(-1)
    if pixel_counts is not None:
        keep &= np.asarray(pixel_counts).reshape(-1) > 0
    return np.flatnonzero(keep)


@dataclass(frozen=True, eq=False)
class FitSetup:
    """What a scan fit needs besides the frames.

    Attributes
    ----------
    model : orientation-free `PatternModel` on the fit points (``index`` of the polar grid).
    template : sample `ModelParams` (config values: widths, radius, disorder; internal units).
    bank : template bank on the chi grid (`fits.scan.templates.build_template_bank`).
    q : (Q,) q bin centres (1/A); chi_deg : (C,) chi bin centres (deg).
    index : (P,) flat indices (row-major, (chi, q)) of the model's points in the polar grid.
    weight : (P,) detector pixels per fit point (``/entry/reduction/counts``; 1 if unknown).
    a_range : (a_min, a_max) SL lattice constants (A) the model covers and the fits may reach.
    width_factor : radial widths may grow by this factor (the model's support).
    relationships : configuration name -> ``R_or`` (3, 3) tried for every frame.
    """

    model: PatternModel
    template: ModelParams
    bank: TemplateBank
    q: np.ndarray
    chi_deg: np.ndarray
    index: np.ndarray
    weight: np.ndarray
    a_range: tuple[float, float]
    width_factor: float
    relationships: dict = field(default_factory=lambda: {
        c: np.asarray(orientation.orientation_relationship(c), np.float64) for c in CONFIGURATIONS})

    @classmethod
    def build(cls, cfg, q: np.ndarray, chi_deg: np.ndarray, pixel_counts: np.ndarray | None = None,
              settings: FitSettings = FitSettings(), dtype=jnp.float32) -> FitSetup:
        """Model on the fit points of the polar grid ``(chi_deg, q)`` for the sample of ``cfg``.

        Parameters
        ----------
        cfg : loaded config (experiment geometry and mask, sample starting values).
        q : (Q,) q bin centres (1/A); chi_deg : (C,) regular chi bin centres over 360 deg (deg).
        pixel_counts : (C, Q) detector pixels per bin (``/entry/reduction/counts``).
        settings : `SupportSettings` (lattice-constant range, widths, bands) and
            `SearchSettings.step_deg` / `RunSettings.cache_dir` (template bank).

        Notes
        -----
        The polar points lie at the bin centres on the Ewald sphere with the geometry and mask of
        the config (`xmodel.experiment.Experiment`); the model is orientation-free, covers the
        lattice constants ``a_range_rel`` times the config's and ``width_factor`` wider peaks, and
        holds only the points of the SL and AL bands (`fit_point_index`).
        """
        q = np.asarray(q, float)
        chi = np.asarray(chi_deg, float)
        sup = settings.support
        exp = Experiment.from_config(cfg)
        template = params_from_config(cfg, dtype=dtype)
        a0 = float(template.lattice_constant)
        a_range = (sup.a_range_rel[0] * a0, sup.a_range_rel[1] * a0)
        structure = structure_from_config(cfg, a_range)
        pixels = exp.polar_pixels(q, chi)
        counts = None if pixel_counts is None else np.asarray(pixel_counts, float).reshape(chi.size, q.size)
        index = fit_point_index(pixels, structure, template, a_range, sup.width_factor, counts, sup.band_nsigma)
        if index.size == 0:
            raise ValueError(f"no valid polar bin lies in the SL or AL q-bands (q {q.min():.3g} .. "
                             f"{q.max():.3g} 1/A); check the config's geometry and mask against the "
                             f"reduction, or reduce over a q range that holds the peaks.")
        model = support_model(pixels.subset(index), structure, template, a_range, sup.width_factor, dtype)
        bank = build_template_bank(chi, wavelength_A=float(exp.geometry.wavelength) * 1e10,
                                   lattice_constant=a0, step_deg=settings.search.step_deg,
                                   mosaic_deg=float(np.degrees(template.sl_mosaic)),
                                   cache_dir=settings.run.cache_dir)
        weight = np.ones(index.size) if counts is None else counts.reshape(-1)[index]
        return cls(model=model, template=template, bank=bank, q=q, chi_deg=chi, index=index, weight=weight,
                   a_range=a_range, width_factor=sup.width_factor)

    def model_on(self, pixels) -> PatternModel:
        """The setup's model (structure, template, lattice-constant range, widths) on other ``pixels``."""
        return support_model(pixels, self.model.structure, self.template, self.a_range, self.width_factor,
                             self.model.arrays["weight"].dtype)


def support_model(pixels, structure, template: ModelParams, a_range: tuple[float, float], width_factor: float,
                  dtype=jnp.float32) -> PatternModel:
    """Orientation-free `PatternModel` on ``pixels`` covering ``a_range`` (A) and ``width_factor``
    wider peaks: the model of every scan fit."""
    return PatternModel(pixels, structure, template, dtype=dtype, orientation_margin_deg=None,
                        lattice_constant_range=a_range, width_factor=width_factor)


def setup_from_reduction(reduced: ReducedScan | str, cfg, settings: FitSettings = FitSettings(),
                         dtype=jnp.float32) -> FitSetup:
    """`FitSetup.build` on the polar grid of a reduced scan (`xmodel.reduced.open_reduced`)."""
    scan = reduced if isinstance(reduced, ReducedScan) else open_reduced(reduced)
    return FitSetup.build(cfg, scan.q, scan.chi, scan.pixel_counts, settings, dtype)
