"""Mixed patterns: peaks a scan fit leaves unexplained (a second grain in the beam).

After a frame's fit, `residual_significance` subtracts the fitted SL peaks and looks for SL ring
peaks left over, and `al_residual` does the same for the NCs' AL peaks; `flag_mixed` marks a
frame `fits.status.FitStatus.MIXED` when either holds peaks of a second orientation (paper
Fig. 1a,b: the grey points).
"""
from __future__ import annotations

import numpy as np

from fits.scan.linear import COMPONENTS, component_images
from fits.scan.search import (
    estimate_lattice_constant,
    localised_significance,
    mask_spikes,
)
from fits.scan.settings import FitSettings, SearchSettings
from fits.scan.setup import FitSetup
from fits.status import FitStatus
from xmodel.parameters import ModelParams

TWO_PI = 2.0 * np.pi


def flag_mixed(out: dict[str, np.ndarray], frames: np.ndarray, polar: np.ndarray, setup: FitSetup,
               params: ModelParams, settings: FitSettings) -> None:
    """Set ``residual_significance`` and ``al_residual_significance`` of ``frames`` and mark MIXED
    those with SL or AL peaks left over.

    ``polar`` (len(frames), C, Q) and the stacked fitted ``params`` are in the order of
    ``frames``. A converged (or not converged) frame becomes `FitStatus.MIXED` when the SL ring
    significance left after its fit (`residual_significance`) reaches both
    ``settings.search.min_significance`` and ``settings.evidence.mixed_ratio`` of the frame's own, or, for a frame
    whose configuration was determined, when the AL excess left (`al_residual`) reaches
    ``settings.evidence.mixed_al_significance`` and ``settings.evidence.mixed_al_ratio`` of the fitted AL peaks
    (a second grain whose SL peaks are weak still shows its own NC orientation).
    """
    ss = settings.search
    if np.isfinite(ss.spike_sigma):            # hot pixels are no second grain (as in the search)
        polar = mask_spikes(polar, setup.q, sigma_q=ss.ring_sigma_q, n_sigma=ss.spike_sigma,
                            mosaic_deg=float(setup.bank.key.get("mosaic_deg", 1.0)))
    comps = component_images(setup.model, params) if len(frames) else None    # one pass for both tests
    left = residual_significance(polar, setup, params, setup.a_range, components=comps,
                                 sigma_q=settings.search.ring_sigma_q, n_grid=settings.search.lattice_grid_points)
    z_al, rel_al = al_residual(polar, setup, params, settings.evidence.mixed_al_band_sigma, components=comps)
    out["residual_significance"][frames] = left
    if "al_residual_significance" in out:
        out["al_residual_significance"][frames] = z_al
    for j, i in enumerate(frames):
        st = FitStatus.from_code(out["status"][i])
        if not (st.success or st is FitStatus.NOT_CONVERGED):
            continue
        sl_left = left[j] >= max(settings.search.min_significance,
                                 settings.evidence.mixed_ratio * out["significance"][i])
        al_left = bool(out["configuration"][i]) and z_al[j] >= settings.evidence.mixed_al_significance and \
            rel_al[j] >= settings.evidence.mixed_al_ratio
        if sl_left or al_left:
            what = (f"SL ring significance {left[j]:.1f} left after the fit (fitted pattern "
                    f"{out['significance'][i]:.1f})" if sl_left else
                    f"AL peaks of {z_al[j]:.0f} sigma ({rel_al[j]:.0%} of the fitted ones) left after the fit")
            out["status"][i] = FitStatus.MIXED.code
            out["message"][i] = (f"{FitStatus.MIXED.value}: {what}; the values are of the stronger orientation"
                                 + ("" if st.success else f" and did not converge ({out['message'][i]})"))


def footprint(mu: np.ndarray, term: np.ndarray) -> np.ndarray:
    """(B, P) bool: fit points where a fitted ``term`` (B, P) exceeds one Poisson sigma of the
    fitted model ``mu`` (B, P) (counts per pixel), ``term > sqrt(mu)``.

    Where a fitted peak stands above the noise a misfit of its shape or position leaves a residual
    of a fraction of its height; outside, the misfit is below one sigma per pixel. A bright peak's
    footprint is wider than a faint one's (to ``sqrt(2 ln(h / sqrt(b)))`` sigmas for height ``h``
    over a level ``b``), as its misfit residual is.
    """
    return np.asarray(term) > np.sqrt(np.clip(np.asarray(mu), 0.0, None))


def al_residual(polar: np.ndarray, setup: FitSetup, params: ModelParams, band_sigma: float,
                components: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Largest AL excess left by a fit per chi bin: significance (B,) and fraction (B,) of the fitted AL peaks.

    Parameters
    ----------
    polar : (B, C, Q) polar images (mean counts per pixel of each bin, NaN masked) on the grid of
        ``setup``.
    params : stacked fitted `ModelParams` of the B frames.
    band_sigma : half-width of the AL shells in radial sigmas (`EvidenceSettings.mixed_al_band_sigma`).
    components : (B, 4, P) their unit-scale terms (`fits.scan.linear.component_images`) if already computed.

    Notes
    -----
    On the fit points within ``band_sigma sigma_r`` (``al_radial_width``) of an AL shell ``2 pi |hkl| /
    a_AL``, the excess ``sum n (y - mu)`` per chi bin over its Poisson deviation ``sqrt(sum n
    mu)`` (``n`` pixels per point, ``mu`` the fitted model): the significance of unexplained AL
    intensity, which a second NC orientation (a mixed pattern) puts at other chi than the fitted
    one; the points where the fitted AL peaks stand above the noise (`footprint`) are left out, so
    that a fitted peak whose shape the model misses is not taken for a second one. The fraction
    is that excess over the largest per-bin sum of the fitted AL term.

    Validation: a second grain's AL peaks are seen, Poisson noise is not
    (tests/fits/scan/test_driver.py); the twin's figures at `fits.scan.settings.EvidenceSettings`.
    """
    polar = np.asarray(polar, np.float64)
    B = polar.shape[0]
    if B == 0:
        return np.zeros(0), np.zeros(0)
    C, Q = setup.chi_deg.size, setup.q.size
    chi_i = setup.index // Q
    qv = setup.q[setup.index % Q]
    st = setup.model.structure
    g = np.unique(np.round(TWO_PI * np.linalg.norm(np.asarray(st.al_hkl, float), axis=1) / st.al_lattice_constant, 9))
    band = np.min(np.abs(qv[:, None] - g[None, :]), axis=1) <= band_sigma * float(setup.template.al_radial_width)
    comps = component_images(setup.model, params) if components is None else components
    scales = np.stack([np.asarray(getattr(params, c), np.float64).reshape(-1) for c in COMPONENTS], 1)
    mu = np.einsum("bc,bcp->bp", scales, comps)
    y = polar.reshape(B, -1)[:, setup.index]
    al = scales[:, 2:3] * comps[:, 2]
    band_ok = np.isfinite(y) & band[None, :] & (setup.weight[None, :] > 0)
    n = setup.weight[None, :]

    def per_bin(v: np.ndarray, use: np.ndarray) -> np.ndarray:
        bins = (np.arange(B)[:, None] * C + chi_i[None, :])[use]              # (frame, chi) bin of each point
        return np.bincount(bins, (v * n)[use], minlength=B * C).reshape(B, C)

    outside = band_ok & ~footprint(mu, al)      # the excess: away from the fitted AL peaks
    acc = np.stack([per_bin(np.nan_to_num(y) - mu, outside), per_bin(mu, outside), per_bin(al, band_ok)])
    z = acc[0] / np.sqrt(np.maximum(acc[1], 1e-12))
    best = np.argmax(z, axis=1)
    excess = np.take_along_axis(acc[0], best[:, None], 1)[:, 0]
    return z.max(axis=1), excess / np.maximum(acc[2].max(axis=1), 1e-12)


def residual_significance(polar: np.ndarray, setup: FitSetup, params: ModelParams,
                          a_range: tuple[float, float], components: np.ndarray | None = None,
                          sigma_q: float = SearchSettings.ring_sigma_q,
                          n_grid: int = SearchSettings.lattice_grid_points) -> np.ndarray:
    """(B,) largest SL ring peak significance left when the fitted SL peaks are subtracted.

    Parameters
    ----------
    polar : (B, C, Q) polar images (mean counts per bin, NaN masked) on the grid of ``setup``.
    params : stacked fitted `ModelParams` of the B frames.
    a_range : SL lattice constants searched for a second orientation (A).
    components : (B, 4, P) unit-scale terms (`fits.scan.linear.component_images`) if already computed.
    sigma_q, n_grid : ring extraction width (1/A) and lattice-constant grid of the search
        (`SearchSettings.ring_sigma_q`, ``lattice_grid_points``).

    Notes
    -----
    ``polar - sl_scale * SL_component(params)`` on the fit points keeps the diffuse scattering and
    background (so the Poisson noise floor of `fits.scan.search.localised_significance` still holds) and
    removes the peaks the fit explains; the ring significance of what is left, at the lattice
    constant `fits.scan.search.estimate_lattice_constant` finds in it, measures peaks of a second
    orientation (a mixed pattern) or of a misfit. The fitted peaks' `footprint` is masked: a peak
    whose shape the model misses (paracrystal peaks are broader than Gaussian, with other tails)
    leaves a residual there, a second grain puts its peaks elsewhere. What a misfit leaves outside
    it is covered by the relative threshold of `EvidenceSettings.mixed_ratio`.
    """
    polar = np.array(polar, np.float64)
    B = polar.shape[0]
    if B == 0:
        return np.zeros(0)
    comps = component_images(setup.model, params) if components is None else components
    scales = np.stack([np.asarray(getattr(params, c), np.float64).reshape(-1) for c in COMPONENTS], 1)
    sl = scales[:, COMPONENTS.index("sl_scale"), None] * comps[:, COMPONENTS.index("sl_scale")]
    flat = polar.reshape(B, -1)
    sub = flat[:, setup.index] - sl
    sub[footprint(np.einsum("bc,bcp->bp", scales, comps), sl)] = np.nan
    flat[:, setup.index] = sub
    left = flat.reshape(polar.shape)
    shells = tuple(int(x) for x in setup.bank.shells)
    a = estimate_lattice_constant(left, setup.q, a_range, shells=shells, sigma_q=sigma_q, n_grid=n_grid)
    return localised_significance(left, setup.q, a[:, None], shells, sigma_q).max(axis=(1, 2))
