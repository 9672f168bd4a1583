"""Mixed patterns: peaks a scan fit leaves unexplained (a second grain in the beam).

After a frame's fit, `residual_significance` subtracts the fitted SL peaks and looks for SL ring
peaks left over, and `al_residual` does the same for the NCs' AL peaks; `flag_mixed` marks a
frame `fits.status.FitStatus.MIXED` when either holds peaks of a second orientation (paper
Fig. 1a,b: the grey points).

A model that misses the shape of its own peaks (finite crystals, a paracrystal) leaves a residual
too, but on the fitted reflections: each test leaves out the fitted peaks' `footprint` (where
they stand above the noise of a fit point) and weighs what is left elsewhere against the fit's
own residual scatter on its reflections, a quasi-likelihood dispersion ``phi`` (Pearson
``X^2`` per point, McCullagh & Nelder 1989, Generalized Linear Models, 2nd ed., ch. 9;
Wedderburn 1974, Biometrika 61, 439): under ``Var(y) = phi mu`` a significance in Poisson sigmas
is divided by ``sqrt(phi)``. ``phi`` is taken on the footprint, not over the frame, so that the
excess of a second orientation (off the footprint) does not hide itself by raising it. Points
whose residual over the fit stands alone (`residual_spikes`: hot pixels the search's spike mask
left, e.g. next to a fitted peak) are left out of both tests.
"""
from __future__ import annotations

import numpy as np

from fits.scan.linear import COMPONENTS, component_images
from fits.scan.search import (
    estimate_lattice_constant,
    localised_significance,
    neighbour_excess,
    next_bin_fraction,
    spike_floor,
)
from fits.scan.settings import FitSettings, SearchSettings
from fits.scan.setup import FitSetup
from fits.status import FitStatus
from xmodel.parameters import ModelParams

TWO_PI = 2.0 * np.pi


def flag_mixed(out: dict[str, np.ndarray], frames: np.ndarray, polar: np.ndarray, setup: FitSetup,
               params: ModelParams, settings: FitSettings, spikes_masked: bool = False) -> None:
    """Set ``residual_significance`` and ``al_residual_significance`` of ``frames`` and mark MIXED
    those with SL or AL peaks left over.

    ``polar`` (len(frames), C, Q) and the stacked fitted ``params`` are in the order of
    ``frames``. A converged (or not converged) frame becomes `FitStatus.MIXED` when the SL ring
    significance left after its fit (`residual_significance`) reaches
    ``settings.search.min_significance`` and, over the square root of the fit's dispersion on its
    SL peaks, ``settings.evidence.mixed_ratio`` of the frame's own, or, for a frame whose configuration was
    determined, when the AL excess left away from the fitted AL peaks, over the square root of the
    fit's dispersion on them (`al_residual`), reaches ``settings.evidence.mixed_al_significance``
    and ``settings.evidence.mixed_al_ratio`` of the fitted AL peaks (a second grain whose SL peaks
    are weak still shows its own NC orientation).

    ``spikes_masked``: ``polar`` holds no hot pixels any more (`FitSetup.mask_spikes`); otherwise
    they are masked here (hot pixels are no second grain, as in the search).
    """
    ss = settings.search
    if not spikes_masked:
        polar = setup.mask_spikes(polar, ss)
    comps = component_images(setup.model, params) if len(frames) else None
    fit = fitted_terms(polar, setup, params, comps, ss.spike_sigma) if len(frames) else None
    left, phi_sl = residual_significance(polar, setup, params, setup.a_range, sigma_q=ss.ring_sigma_q,
                                         n_grid=ss.lattice_grid_points, fitted=fit)
    z_al, rel_al = al_residual(polar, setup, params, settings.evidence.mixed_al_band_sigma, fitted=fit)
    out["residual_significance"][frames] = left
    if "al_residual_significance" in out:
        out["al_residual_significance"][frames] = z_al
    for j, i in enumerate(frames):
        st = FitStatus.from_code(out["status"][i])
        if not (st.success or st is FitStatus.NOT_CONVERGED):
            continue
        # detected as a ring peak (against the ring's own scatter), and more than the spill of the
        # fitted peaks' misfit: in units of the fit's dispersion on them, a fraction of the pattern
        sl_left = left[j] >= ss.min_significance and \
            left[j] / np.sqrt(phi_sl[j]) >= settings.evidence.mixed_ratio * out["significance"][i]
        al_left = bool(out["configuration"][i]) and z_al[j] >= settings.evidence.mixed_al_significance and \
            rel_al[j] >= settings.evidence.mixed_al_ratio
        if sl_left or al_left:
            what = (f"SL ring significance {left[j]:.1f} ({left[j] / np.sqrt(phi_sl[j]):.1f} over the fit's "
                    f"dispersion on its SL peaks) left after the fit (fitted pattern "
                    f"{out['significance'][i]:.1f})" if sl_left else
                    f"AL peaks of {z_al[j]:.0f} sigma (over the fit's dispersion; {rel_al[j]:.0%} of the fitted "
                    f"ones) left after the fit")
            out["status"][i] = FitStatus.MIXED.code
            out["message"][i] = (f"{FitStatus.MIXED.value}: {what}; the values are of the stronger orientation"
                                 + ("" if st.success else f" and did not converge ({out['message'][i]})"))


def footprint(mu: np.ndarray, term: np.ndarray, weight: np.ndarray | float = 1.0) -> np.ndarray:
    """(B, P) bool: fit points where a fitted ``term`` (B, P) exceeds one Poisson sigma of the
    fitted model ``mu`` (B, P) (mean counts per pixel) at the point, ``term > sqrt(mu / n)``
    with ``n`` = ``weight`` (P,) pixels per point.

    A fit point is the mean of ``n`` pixels, so its Poisson sigma is ``sqrt(mu / n)``. Where a
    fitted peak stands above that noise a misfit of its shape or position leaves a residual of a
    fraction of its height; outside, the misfit is below one sigma per point. A bright peak's
    footprint is wider than a faint one's (to ``sqrt(2 ln(h / sigma))`` peak sigmas for height
    ``h`` over the point noise ``sigma``), as its misfit residual is.
    """
    n = np.clip(np.asarray(weight, np.float64), 1e-12, None)
    return np.asarray(term) > np.sqrt(np.clip(np.asarray(mu), 0.0, None) / n)


def fitted_terms(polar: np.ndarray, setup: FitSetup, params: ModelParams, components: np.ndarray | None = None,
                 spike_sigma: float = SearchSettings.spike_sigma) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The data, the fitted model and its scaled terms on the fit points.

    Returns ``y`` (B, P) counts per pixel of the fit points (NaN where not measured or a
    `residual_spikes` point), ``mu`` (B, P) the fitted model and ``terms`` (B, 4, P) its
    ``COMPONENTS`` times their fitted scales.
    """
    comps = component_images(setup.model, params) if components is None else components
    B = np.asarray(polar).shape[0]
    scales = np.stack([np.asarray(getattr(params, c), np.float64).reshape(-1) for c in COMPONENTS], 1)
    terms = scales[:, :, None] * np.asarray(comps, np.float64)
    mu = terms.sum(axis=1)
    y = np.asarray(polar, np.float64).reshape(B, -1)[:, setup.index].copy()
    if np.isfinite(spike_sigma):
        y[residual_spikes(y, mu, setup, spike_sigma)] = np.nan
    return y, mu, terms


def residual_spikes(y: np.ndarray, mu: np.ndarray, setup: FitSetup,
                    n_sigma: float = SearchSettings.spike_sigma) -> np.ndarray:
    """(B, P) bool: fit points whose excess over the fitted model stands alone on the polar grid.

    `fits.scan.search.isolated_spikes` on the excess ``e = y - mu`` over the fit (so that the
    fitted peaks do not count), with the same Poisson noise of bin means
    (`fits.scan.search.spike_floor` with the level ``mu``): a point is a spike when the largest
    excess ``n_e`` of its 8 neighbours lies more than ``n_sigma`` sigma below ``r e``, ``r`` the
    fraction of a peak's height the narrowest peak of the model (radial sigma
    `SearchSettings.ring_sigma_q`, angular sigma of the SL mosaic) puts on the next bin. A hot
    pixel the search's mask left (one next to another spike, or in a bin whose neighbours are
    not fit points) would otherwise be read as a second grain's AL peak.
    """
    y = np.asarray(y, np.float64)
    B = y.shape[0]
    C, Q = setup.chi_deg.size, setup.q.size
    if B == 0:
        return np.zeros(y.shape, bool)
    e = np.full((B, C * Q), -np.inf)
    e[:, setup.index] = np.where(np.isfinite(y), y - mu, -np.inf)
    e = e.reshape(B, C, Q)
    n_px = np.zeros(C * Q)
    n_px[setup.index] = setup.weight
    n_px = n_px.reshape(C, Q)
    nb, n_fin, n_min = neighbour_excess(e, n_px)
    mosaic = np.degrees(float(np.asarray(setup.template.sl_mosaic)))
    r = next_bin_fraction(setup.q, C, SearchSettings.ring_sigma_q, mosaic)[None, None, :]
    mu_img = np.zeros((B, C * Q))
    mu_img[:, setup.index] = np.clip(mu, 0.0, None)
    floor = spike_floor(e, mu_img.reshape(B, C, Q), r, n_px, np.where(np.isfinite(n_min), n_min, 1.0), n_sigma)
    with np.errstate(invalid="ignore"):
        spikes = np.isfinite(e) & (e > 0) & (n_fin > 4) & (nb < floor)
    return spikes.reshape(B, -1)[:, setup.index]


def dispersion_on(y: np.ndarray, mu: np.ndarray, weight: np.ndarray, where: np.ndarray) -> np.ndarray:
    """(B,) ``max(phi, 1)``: the Pearson dispersion of the fit on the points ``where`` (B, P).

    ``phi = sum n (y - mu)^2 / mu / m`` over the ``m`` measured points of ``where`` (``n``
    pixels per point, ``y`` and ``mu`` mean counts per pixel; McCullagh & Nelder 1989, eq. 9.5,
    with the few fitted parameters not subtracted from the hundreds of points); 1 where
    ``where`` holds no point. Never below 1: a fit cannot be better than its counting noise.
    """
    use = where & np.isfinite(y) & (mu > 0)
    x2 = np.where(use, weight[None, :] * (np.nan_to_num(y) - mu) ** 2 / np.where(use, mu, 1.0), 0.0).sum(axis=1)
    m = use.sum(axis=1)
    return np.maximum(np.where(m > 0, x2 / np.maximum(m, 1), 1.0), 1.0)


def al_shells(setup: FitSetup, band_sigma: float) -> np.ndarray:
    """(P,) bool: fit points within ``band_sigma`` AL radial sigmas (``al_radial_width``, 1/A) of
    an AL shell ``2 pi |hkl| / a_AL``."""
    qv = setup.q[setup.index % setup.q.size]
    st = setup.model.structure
    g = np.unique(np.round(TWO_PI * np.linalg.norm(np.asarray(st.al_hkl, float), axis=1) / st.al_lattice_constant, 9))
    return np.min(np.abs(qv[:, None] - g[None, :]), axis=1) <= band_sigma * float(setup.template.al_radial_width)


def al_residual(polar: np.ndarray, setup: FitSetup, params: ModelParams, band_sigma: float,
                components: np.ndarray | None = None, spike_sigma: float = SearchSettings.spike_sigma,
                fitted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Largest AL excess left by a fit away from its AL peaks, per chi bin: significance over the
    fit's dispersion (B,) and fraction (B,) of the fitted AL peaks.

    Parameters
    ----------
    polar : (B, C, Q) polar images (mean counts per pixel of each bin, NaN masked) on the grid of
        ``setup``.
    params : stacked fitted `ModelParams` of the B frames.
    band_sigma : half-width of the AL shells in radial sigmas (`EvidenceSettings.mixed_al_band_sigma`).
    components : (B, 4, P) their unit-scale terms (`fits.scan.linear.component_images`) if already computed.
    spike_sigma : `residual_spikes` threshold (`SearchSettings.spike_sigma`; inf: none left out).
    fitted : `fitted_terms` of these frames if already computed (then ``components`` and
        ``spike_sigma`` are not used).

    Notes
    -----
    On the AL shells (`al_shells`), the excess ``sum n (y - mu)`` per chi bin over its Poisson
    deviation ``sqrt(sum n mu)`` (``n`` pixels per point, ``mu`` the fitted model), on the points
    off the fitted AL peaks' `footprint`: the significance of AL intensity where the fitted NC
    orientation puts none, which a second NC orientation (a mixed pattern) puts at other chi than
    the fitted one. It is divided by ``sqrt(phi)``, ``phi`` the Pearson dispersion of the fit on
    the footprint (`dispersion_on`): finite crystals are not the model's Gaussian arcs (lumpy
    arcs of a finite number of crystals, other tails), and what that misfit spills past the
    footprint is a fraction of its residual on it, so it stays below the threshold in these
    units; the excess of a second orientation does not scale with how well the first one's
    peaks are fitted. With the model's own peak shapes ``phi`` is about 1 and the significance
    is the Poisson one (McCullagh & Nelder 1989, ch. 9: quasi-likelihood statistics over the
    dispersion). The fraction is the excess over the largest per-bin sum of the fitted AL term.

    Validation: a second grain's AL peaks are seen, Poisson noise and reshaped peaks are not
    (tests/fits/scan/test_mixed.py, test_driver.py); the twins' figures at
    `fits.scan.settings.EvidenceSettings`.
    """
    polar = np.asarray(polar, np.float64)
    B = polar.shape[0]
    if B == 0:
        return np.zeros(0), np.zeros(0)
    C, Q = setup.chi_deg.size, setup.q.size
    chi_i = setup.index // Q
    y, mu, terms = fitted_terms(polar, setup, params, components, spike_sigma) if fitted is None else fitted
    al = terms[:, COMPONENTS.index("al_scale")]
    n = setup.weight[None, :]
    band_ok = np.isfinite(y) & al_shells(setup, band_sigma)[None, :] & (n > 0)
    on = footprint(mu, al, setup.weight)

    def per_bin(v: np.ndarray, use: np.ndarray) -> np.ndarray:
        bins = (np.arange(B)[:, None] * C + chi_i[None, :])[use]              # (frame, chi) bin of each point
        return np.bincount(bins, (v * n)[use], minlength=B * C).reshape(B, C)

    outside = band_ok & ~on                     # the excess: away from the fitted AL peaks
    acc = np.stack([per_bin(np.nan_to_num(y) - mu, outside), per_bin(mu, outside), per_bin(al, band_ok)])
    z = acc[0] / np.sqrt(np.maximum(acc[1], 1e-12))
    best = np.argmax(z, axis=1)
    excess = np.take_along_axis(acc[0], best[:, None], 1)[:, 0]
    phi = dispersion_on(y, mu, setup.weight, band_ok & on)
    return z.max(axis=1) / np.sqrt(phi), excess / np.maximum(acc[2].max(axis=1), 1e-12)


def residual_significance(polar: np.ndarray, setup: FitSetup, params: ModelParams,
                          a_range: tuple[float, float], components: np.ndarray | None = None,
                          sigma_q: float = SearchSettings.ring_sigma_q,
                          n_grid: int = SearchSettings.lattice_grid_points,
                          spike_sigma: float = SearchSettings.spike_sigma,
                          fitted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Largest SL ring peak significance left when the fitted SL peaks are subtracted (B,), and
    the fit's dispersion on its SL peaks (B,).

    Parameters
    ----------
    polar : (B, C, Q) polar images (mean counts per bin, NaN masked) on the grid of ``setup``.
    params : stacked fitted `ModelParams` of the B frames.
    a_range : SL lattice constants searched for a second orientation (A).
    components : (B, 4, P) unit-scale terms (`fits.scan.linear.component_images`) if already computed.
    sigma_q, n_grid : ring extraction width (1/A) and lattice-constant grid of the search
        (`SearchSettings.ring_sigma_q`, ``lattice_grid_points``).
    spike_sigma : `residual_spikes` threshold (`SearchSettings.spike_sigma`; inf: none left out).
    fitted : `fitted_terms` of these frames if already computed.

    Notes
    -----
    ``polar - sl_scale * SL_component(params)`` on the fit points keeps the diffuse scattering and
    background (so the Poisson noise floor of `fits.scan.search.localised_significance` still holds) and
    removes the peaks the fit explains; the ring significance of what is left, at the lattice
    constant `fits.scan.search.estimate_lattice_constant` finds in it, measures peaks of a second
    orientation (a mixed pattern) or of a misfit. The fitted peaks' `footprint` is masked: a peak
    whose shape the model misses (paracrystal peaks are broader than Gaussian, with other tails)
    leaves a residual there, a second grain puts its peaks elsewhere. The significance is against
    the ring's own robust noise (its scatter along chi), so a detection threshold applies to it
    as it stands; what the misfit spills past the footprint grows with the misfit's residual on
    it, so `flag_mixed` compares it with the fitted pattern's after dividing it by ``sqrt(phi)``,
    ``phi`` the Pearson dispersion of the fit on the SL footprint (`dispersion_on`;
    quasi-likelihood, McCullagh & Nelder 1989 ch. 9), about 1 where the model has the peaks' shape.
    """
    polar = np.array(polar, np.float64)
    B = polar.shape[0]
    if B == 0:
        return np.zeros(0), np.ones(0)
    y, mu, terms = fitted_terms(polar, setup, params, components, spike_sigma) if fitted is None else fitted
    sl = terms[:, COMPONENTS.index("sl_scale")]
    on = footprint(mu, sl, setup.weight)
    flat = polar.reshape(B, -1)
    sub = y - sl
    sub[on] = np.nan
    flat[:, setup.index] = sub
    left = flat.reshape(polar.shape)
    shells = tuple(int(x) for x in setup.bank.shells)
    a = estimate_lattice_constant(left, setup.q, a_range, shells=shells, sigma_q=sigma_q, n_grid=n_grid)
    sig = localised_significance(left, setup.q, a[:, None], shells, sigma_q).max(axis=(1, 2))
    return sig, dispersion_on(y, mu, setup.weight, on)
