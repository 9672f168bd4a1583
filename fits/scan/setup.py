"""What a scan fit needs besides the frames: the model on the fit points, the template bank.

`FitSetup.build` is the one place where the lattice-constant range of a fit (the config's
``superlattice.lattice_constant`` times `fits.scan.settings.SupportSettings.a_range_rel`)
becomes the model's reflection list (`xmodel.parameters.structure_from_config`), its support
(`xmodel.pattern.PatternModel`) and its fit points (`fit_point_index`); everything downstream
reads the range from `FitSetup.a_range`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np

from fits.parameters import spec
from fits.robust import ring_clusters, tile_clusters
from fits.scan.search import mask_spikes, mask_spikes_on_points
from fits.scan.settings import FitSettings, SearchSettings
from fits.scan.templates import TemplateBank, build_template_bank
from fits.scan.window import windowed_model
from xmodel import orientation
from xmodel.allocator import tune_allocator
from xmodel.experiment import Experiment
from xmodel.parameters import ModelParams, params_from_config, structure_from_config
from xmodel.pattern import SIZE_SHAPES, PatternModel, sl_peak_widths
from xmodel.pixels import PixelSet, weight_at
from xmodel.reduced import ReducedScan, open_reduced
from xmodel.reduction import PolarBins, build_bin_map

log = logging.getLogger(__name__)

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
    # the widest SL radial sigma, at q_max_sl (it grows with |G| with a paracrystal term)
    sr = float(sl_peak_widths(structure.q_max_sl, float(template.sl_radial_width), 0.0, structure.sl_peak_shape,
                              structure.sl_paracrystal)[0]) * wf * nsigma
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


def bin_centroid_pixels(exp: Experiment, q: np.ndarray, chi_deg: np.ndarray, q_edges: np.ndarray,
                        chi_edges: np.ndarray, mask: np.ndarray | None = None) -> PixelSet:
    """The polar grid ``(chi_deg, q)`` with each bin at the centroid of the pixels reduced into it.

    Parameters
    ----------
    exp : the experiment (geometry, mask, polarization) of the config.
    q : (Q,) q bin centres (1/A); chi_deg : (C,) chi bin centres (deg).
    q_edges : (Q + 1,) and chi_edges : (C + 1,) the reduction's bin edges (1/A, deg).
    mask : (rows, cols) the reduction's mask (True = masked); None: the config's.

    Returns
    -------
    PixelSet
        (C, Q) "polar" points on the Ewald sphere at the mean ``|q|`` and the circular mean chi
        of the valid pixel centres of each bin (`xmodel.reduction.build_bin_map`, the pixels
        the reduction averages), weight (solid angle x polarization, `xmodel.pixels.weight_at`)
        at that point, and ``spread`` the covariance of the bin's pixel q-vectors
        (`bin_q_covariance`); bins without pixels keep their centre and are invalid.

    Notes
    -----
    A reduced bin holds the mean of its pixels (histogram integration), so the model of that
    bin is the mean of the model over the pixels; to first order in the bin size that is the
    model at the pixels' centroid (midpoint rule about the mean), not at the nominal bin centre.
    The bins are about 1 % wide in q (log-spaced, more pixels at the larger-|q| side) and 1 deg
    in chi while the SL peaks are no wider, so the bin-centre model moves a noiseless fit by
    about 0.1 A in the lattice constant (8-12 Cramer-Rao bounds) and by several bounds in the
    in-plane angle, depending on where the peaks fall in the bins (docs/studies.md, "The
    bin-centre model biases the lattice constant"; `benchmarks/model_bias.py`). The centroid
    leaves about one bound in the in-plane angle; the second-order term, the peak averaged
    over the bin's width, is carried by each point's ``spread`` (`bin_q_covariance`), which
    the model turns into the bin mean of every SL and AL peak (`xmodel.pattern.binned_shell_sum`).
    """
    geo = exp.geometry
    mask = exp.mask if mask is None else np.asarray(mask, bool)
    q_pix, chi_pix = np.asarray(geo.q(), np.float64), np.asarray(geo.chi(), np.float64)
    bin_map = build_bin_map(q_pix, chi_pix, mask, PolarBins(q_edges=np.asarray(q_edges, float),
                                                            chi_edges=np.asarray(chi_edges, float)))
    m = bin_map.matrix.astype(np.float64)
    n = bin_map.counts.reshape(-1).astype(np.float64)
    has = n > 0
    chi_rad = np.radians(chi_pix.reshape(-1))
    qq, cc = (v.reshape(-1) for v in np.meshgrid(np.asarray(q, float), np.asarray(chi_deg, float)))
    q_c = np.where(has, (m @ q_pix.reshape(-1)) / np.maximum(n, 1.0), qq)
    chi_c = np.where(has, np.degrees(np.arctan2(m @ np.sin(chi_rad), m @ np.cos(chi_rad))), cc)
    q_lab = np.asarray(geo.q_lab_from_polar(q_c, chi_c), np.float64).reshape(-1, 3)
    rows, cols = geo.pixel_from_q_lab(q_lab)
    rows = np.where(has, rows, 0.0)
    cols = np.where(has, cols, 0.0)
    weight = weight_at(geo, q_lab, rows, cols, exp.polarization_factor)
    return PixelSet(q_lab=q_lab, weight=np.where(has, weight, 0.0), valid=has,
                    shape=(np.size(chi_deg), np.size(q)), kind="polar",
                    spread=bin_q_covariance(geo, bin_map.pixel_bin, n))


def bin_q_covariance(geo, pixel_bin: np.ndarray, counts: np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """Covariance of the q-vectors of the pixels in each bin (1/A^2, lab frame).

    Parameters
    ----------
    geo : `xmodel.geometry.Geometry` of the unbinned detector.
    pixel_bin : (rows * cols,) flat bin of every pixel, -1 where it is in no bin
        (`xmodel.reduction.BinMap.pixel_bin`).
    counts : (B,) pixels per bin.
    block : pixels handled at once (bounds the memory: a few arrays of ``block`` float64).

    Returns
    -------
    numpy.ndarray
        (B, 3, 3) ``sum_i (q_i - q_mean)(q_i - q_mean)^T / n`` over the bin's pixel centres (the
        population covariance, since a reduced bin is the plain mean of its pixels); zero for bins
        with fewer than 2 pixels. Two passes (means, then centred products), so the spread of a
        bin 1e-4 of its |q| keeps its digits.
    """
    nb = counts.size
    pixel_bin = np.asarray(pixel_bin).reshape(-1)
    n = np.maximum(np.asarray(counts, np.float64), 1.0)
    rows, cols = (v.reshape(-1) for v in np.indices(tuple(geo.shape)))

    def blocks():
        for start in range(0, pixel_bin.size, block):
            b = pixel_bin[start:start + block]
            keep = b >= 0
            if keep.any():
                yield b[keep], np.asarray(geo.q_lab(rows[start:start + block][keep],
                                                    cols[start:start + block][keep]), np.float64).reshape(-1, 3)

    mean = np.zeros((nb, 3))
    for b, qv in blocks():
        for k in range(3):
            mean[:, k] += np.bincount(b, weights=qv[:, k], minlength=nb)
    mean /= n[:, None]
    cov = np.zeros((nb, 3, 3))
    for b, qv in blocks():
        d = qv - mean[b]
        for i in range(3):
            for j in range(i, 3):
                cov[:, i, j] += np.bincount(b, weights=d[:, i] * d[:, j], minlength=nb)
    cov /= n[:, None, None]
    cov[np.asarray(counts) < 2] = 0.0
    iu = np.triu_indices(3, 1)
    cov[:, iu[1], iu[0]] = cov[:, iu[0], iu[1]]
    return cov


@dataclass(frozen=True, eq=False)
class FitSetup:
    """What a scan fit needs besides the frames.

    Attributes
    ----------
    model : orientation-free `PatternModel` on the fit points (``index`` of the polar grid), its SL
        peaks evaluated in windows around each reflection (`fits.scan.window.windowed_model`).
    template : sample `ModelParams` (config values: widths, radius, disorder; internal units).
    bank : template bank on the chi grid (`fits.scan.templates.build_template_bank`).
    q : (Q,) q bin centres (1/A); chi_deg : (C,) chi bin centres (deg).
    index : (P,) flat indices (row-major, (chi, q)) of the model's points in the polar grid.
    weight : (P,) detector pixels per fit point (``/entry/reduction/counts``; 1 if unknown).
    a_range : (a_min, a_max) SL lattice constants (A) the model covers and the fits may reach.
    width_factor : radial widths may grow by this factor (the model's support).
    relationships : configuration name -> ``R_or`` (3, 3) tried for every frame.
    pixel_counts : (C, Q) detector pixels per bin of the whole polar grid (None: unknown, the
        fit points' ``weight`` and one elsewhere; see `bin_pixels`).
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
    pixel_counts: np.ndarray | None = None

    def bounds(self, vary: Sequence[str]) -> dict[str, tuple[float, float]]:
        """``{name: (min, max)}`` (edge units) of the varying parameters the scan fit bounds itself.

        The lattice constant stays within ``a_range`` and each refined peak width
        (``sl_radial_width``, ``mosaic_deg``, ``al_radial_width``) between its floor in the table
        (`fits.parameters.PARAMETER_TABLE`) and ``width_factor`` times the template's: the fit
        points and the SL windows reach that far and no farther (`fit_point_index`,
        `fits.scan.window.windowed_model`), so a wider peak would be cut by the support. A fit
        that ends on such a ceiling is at a bound; raise ``fit.width_factor`` to let it go on.

        Raises
        ------
        ValueError
            If a width's ceiling falls on or below its floor (a template width at the floor).
        """
        out = {"lattice_constant": tuple(float(a) for a in self.a_range)} if "lattice_constant" in vary else {}
        wf = max(1.0, float(self.width_factor))
        widths = {"sl_radial_width": float(self.template.sl_radial_width),
                  "mosaic_deg": math.degrees(float(self.template.sl_mosaic)),
                  "al_radial_width": float(self.template.al_radial_width)}
        for name, value in widths.items():
            if name not in vary:
                continue
            lo, top = spec(name).min, spec(name).max
            hi = min(top, wf * value)
            if not hi > lo:
                raise ValueError(f"{name} = {value:g} {spec(name).units} of the config times fit.width_factor = "
                                 f"{wf:g} is not above its floor {lo:g}: give the config a wider starting width")
            out[name] = (lo, hi)
        return out

    def bin_pixels(self) -> np.ndarray:
        """(C, Q) detector pixels per polar bin: ``pixel_counts``, or without them the fit points'
        ``weight`` and one pixel elsewhere (the noise bound of one pixel, `fits.scan.search.spike_floor`)."""
        if self.pixel_counts is not None:
            return np.asarray(self.pixel_counts, float)
        n = np.ones(self.chi_deg.size * self.q.size)
        n[self.index] = self.weight
        return n.reshape(self.chi_deg.size, self.q.size)

    def mask_spikes(self, polar: np.ndarray, search: SearchSettings) -> np.ndarray:
        """(B, C, Q) float64 ``polar`` with its hot pixels and zingers set to NaN (masked).

        `fits.scan.search.isolated_spikes` at ``search.spike_sigma`` with the SL peak widths of the
        search (``search.ring_sigma_q``, the template bank's mosaic) and the bins' pixel counts
        (`bin_pixels`); a copy as is when ``spike_sigma`` is inf. A fit masks each frame once, on
        its whole polar image, and every later stage sees the same points.
        """
        if not np.isfinite(search.spike_sigma):
            return np.array(polar, np.float64)
        return mask_spikes(polar, self.q, **self._spike_options(search))

    def error_clusters(self, refine) -> np.ndarray | None:
        """(S, P) clusters of every fit point for the cluster-robust standard errors (`fits.robust`):
        tiles of ``refine.error_tile_chi_deg`` by ``refine.error_tile_q`` and, unless
        ``refine.error_ring_q`` is inf, whole rings of that width; None when ``refine``
        (`RefineSettings`) asks for the quasi-likelihood errors alone."""
        if not refine.robust_errors:
            return None
        rows = [tile_clusters(self.chi_deg, self.q, self.index, refine.error_tile_chi_deg, refine.error_tile_q)]
        if math.isfinite(refine.error_ring_q):
            rows.append(ring_clusters(self.q, self.index, refine.error_ring_q))
        return np.stack(rows)

    def mask_spikes_on_points(self, obs: np.ndarray, search: SearchSettings) -> np.ndarray:
        """(B, P) float64 counts on the fit points with their hot pixels NaN, as `mask_spikes` on the
        polar grid holding ``obs`` at the fit points (`fits.scan.search.mask_spikes_on_points`)."""
        if not np.isfinite(search.spike_sigma):
            return np.array(obs, np.float64)
        return mask_spikes_on_points(obs, self.index, (self.chi_deg.size, self.q.size), self.q,
                                     **self._spike_options(search))

    def _spike_options(self, search: SearchSettings) -> dict:
        """Keywords of `fits.scan.search.isolated_spikes` for this setup and ``search``."""
        return dict(sigma_q=search.ring_sigma_q, n_sigma=search.spike_sigma,
                    mosaic_deg=float(self.bank.key.get("mosaic_deg", 1.0)), pixels=self.bin_pixels())

    @classmethod
    def build(cls, cfg, q: np.ndarray, chi_deg: np.ndarray, pixel_counts: np.ndarray | None = None,
              settings: FitSettings = FitSettings(), dtype=jnp.float32, *, q_edges: np.ndarray | None = None,
              chi_edges: np.ndarray | None = None, mask: np.ndarray | None = None) -> FitSetup:
        """Model on the fit points of the polar grid ``(chi_deg, q)`` for the sample of ``cfg``.

        Parameters
        ----------
        cfg : loaded config (experiment geometry and mask, sample starting values).
        q : (Q,) q bin centres (1/A); chi_deg : (C,) regular chi bin centres over 360 deg (deg).
        pixel_counts : (C, Q) detector pixels per bin (``/entry/reduction/counts``).
        settings : `SupportSettings` (lattice-constant range, widths, bands) and
            `SearchSettings.step_deg` / `RunSettings.cache_dir` (template bank).
        q_edges, chi_edges : (Q + 1,), (C + 1,) the reduction's bin edges (1/A, deg), when the
            frames are reduced detector images; None for frames rendered on the polar grid.
        mask : (rows, cols) the reduction's mask (True = masked); None: the config's.

        Notes
        -----
        With the bin edges the polar points lie at the centroids of the unbinned detector's
        pixels each bin averages (`bin_centroid_pixels`: the bin-centre model biases the lattice
        constant of a reduced frame by about 0.1 A); without them at the bin centres on the Ewald
        sphere; both with the geometry and mask of the config (`xmodel.experiment.Experiment`;
        the reduction's mask where given). The model is orientation-free, covers the
        lattice constants ``a_range_rel`` times the config's and ``width_factor`` wider peaks, and
        holds only the points of the SL and AL bands (`fit_point_index`). The process's C allocator
        keeps freed buffers for reuse from here on (`xmodel.allocator.tune_allocator`).
        """
        tune_allocator()
        q = np.asarray(q, float)
        chi = np.asarray(chi_deg, float)
        sup = settings.support
        exp = Experiment.from_config(cfg)
        template = params_from_config(cfg, dtype=dtype)
        a0 = float(template.lattice_constant)
        a_range = (sup.a_range_rel[0] * a0, sup.a_range_rel[1] * a0)
        structure = structure_from_config(cfg, a_range)
        if q_edges is None or chi_edges is None:
            pixels = exp.polar_pixels(q, chi)
        else:
            # the reduction bins the pixels of the frames it read (xmodel.reduction.reduce_scan):
            # a real detector's, i.e. unbinned, unless its mask has the config's binned shape (a
            # scan synthesised on a binned detector)
            binned_frames = mask is not None and np.shape(mask) == tuple(exp.geometry.shape)
            full = exp if exp.binning == 1 or binned_frames else Experiment.from_config(cfg, binning=1)
            if mask is not None and np.shape(mask) != tuple(full.geometry.shape):
                log.warning("the reduction's mask %s does not match the config's detector %s; the bin "
                            "centroids use the config's mask", np.shape(mask), tuple(full.geometry.shape))
                mask = None
            pixels = bin_centroid_pixels(full, q, chi, q_edges, chi_edges, mask)
        counts = None if pixel_counts is None else np.asarray(pixel_counts, float).reshape(chi.size, q.size)
        index = fit_point_index(pixels, structure, template, a_range, sup.width_factor, counts, sup.band_nsigma)
        if index.size == 0:
            raise ValueError(f"no valid polar bin lies in the SL or AL q-bands (q {q.min():.3g} .. "
                             f"{q.max():.3g} 1/A); check the config's geometry and mask against the "
                             f"reduction, or reduce over a q range that holds the peaks.")
        model = windowed_model(support_model(pixels.subset(index), structure, template, a_range, sup.width_factor,
                                             dtype), index, chi, q, template, sup.width_factor, sup.sl_window_nsigma)
        bank = build_template_bank(chi, wavelength_A=float(exp.geometry.wavelength) * 1e10,
                                   lattice_constant=a0, step_deg=settings.search.step_deg,
                                   mosaic_deg=float(np.degrees(template.sl_mosaic)),
                                   size_sigma=(float(template.sl_radial_width)
                                               if structure.sl_peak_shape in SIZE_SHAPES else 0.0),
                                   cache_dir=settings.run.cache_dir)
        weight = np.ones(index.size) if counts is None else counts.reshape(-1)[index]
        return cls(model=model, template=template, bank=bank, q=q, chi_deg=chi, index=index, weight=weight,
                   a_range=a_range, width_factor=sup.width_factor, pixel_counts=counts)

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
    """`FitSetup.build` on the polar grid of a reduced scan (`xmodel.reduced.open_reduced`), the
    model at the centroids of the bins' pixels (`bin_centroid_pixels`; at the bin centres, with a
    logged note, for a reduction without bin edges)."""
    scan = reduced if isinstance(reduced, ReducedScan) else open_reduced(reduced)
    if scan.q_edges is None or scan.chi_edges is None:
        log.info("%s stores no bin edges (/entry/reduction/q_edges, chi_edges): the model is evaluated at "
                 "the bin centres, not at the centroids of the bins' pixels", scan.path)
        return FitSetup.build(cfg, scan.q, scan.chi, scan.pixel_counts, settings, dtype)
    return FitSetup.build(cfg, scan.q, scan.chi, scan.pixel_counts, settings, dtype,
                          q_edges=scan.q_edges, chi_edges=scan.chi_edges, mask=scan.mask)
