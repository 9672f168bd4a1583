"""X-ray cross-correlation analysis (XCCA): angular correlations between two rings.

The two-point cross-correlation function of the paper's supplementary, Eq. 3,

``C(q1, q2, Delta) = int I(q1, phi) W(q1, phi) I(q2, phi + Delta) W(q2, phi + Delta) dphi``,

is computed for every pattern on a polar (chi, q) grid as a circular correlation along chi by
FFT, averaged over the patterns of a domain and scaled to 0..1. Simulated CCFs come from
Gaussian angular peaks (Eqs. 4-6, with the WAXS window of Eq. 5) or from the full forward model
on the same grid and mask. Angles: ``chi`` is pyFAI's azimuth in degrees (the polar images'
rows), ``Delta`` in degrees in [-180, 180).

Rings. ``I(q0, phi)`` is the mean of the polar image over the q bins with ``|q - q0| <= dq``;
``W(q0, phi) = 0`` where none of those bins holds a finite value (NaN = no valid pixel, the
reduction's convention) or a per-frame validity mask says so, 1 elsewhere. Before the mean, bins
that a hot pixel lifts are rejected per frame (`hot_bins`: a robust median/MAD test along chi
that spares peaks, which are wider than one chi bin), so a few hot pixels do not turn the CCF
into a copy of the other ring's noise.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from fits.analyses.arguments import finite_number, positive_int

log = logging.getLogger(__name__)

__all__ = [
    "Ring", "CCF", "default_dq", "ring_profile", "cross_correlation", "normalise_ccf",
    "domain_ccf", "read_rings", "gaussian_ring", "angular_window", "gaussian_ccf",
    "ring_peaks", "model_polar_image", "ccf_score", "ccf_maxima", "plot_ccfs", "hot_bins",
    "check_dq", "spans_full_circle", "HOT_NSIGMA", "hot_band_bins",
]

#: robust standard deviations (1.4826 MAD) above a ring's median from which a bin may be hot
HOT_NSIGMA = 8.0
#: a hot bin's chi neighbours stay below this fraction of its excess over the median; a Gaussian
#: peak of angular sigma >= 0.6 chi bins has both neighbours above it (exp(-1 / (2 0.6^2)) = 0.25)
HOT_NEIGHBOUR_FRACTION = 0.25
#: ... by at least this many robust sigmas (so that noise on a weak peak does not mimic a spike)
HOT_NEIGHBOUR_MARGIN = 3.0

#: chi grids must be uniform to this fraction of their step
_UNIFORM_RTOL = 1e-4


def default_dq(q0: float) -> float:
    """Default half-width (1/A) of the q band of a ring at ``q0`` (1/A).

    ``max(0.002, 0.02 q0)``: 0.002 1/A around the SL rings (about 1.3 radial sigmas of the SL
    peaks), 0.042 1/A around 200_AL, whose radial sigma is ~0.04 1/A and whose maximum moves
    off |G| on the Ewald sphere.
    """
    return max(0.002, 0.02 * float(q0))


@dataclass(frozen=True)
class Ring:
    """Angular profile of one ring.

    Attributes
    ----------
    intensity : (..., n_chi) mean intensity per chi bin (counts per pixel); 0 where ``weight``
        is 0.
    weight : (n_chi,) or (..., n_chi) the mask function W of Eq. 2 (1 valid, 0 masked).
    chi_deg : (n_chi,) bin centres (deg).
    q0, dq : ring centre and half-width (1/A).
    hot_bins : (...,) polar bins of the band rejected as hot pixels in each frame (`hot_bins`),
        or None when no rejection was run.
    """

    intensity: np.ndarray
    weight: np.ndarray
    chi_deg: np.ndarray
    q0: float
    dq: float
    hot_bins: np.ndarray | None = None


@dataclass(frozen=True)
class CCF:
    """A cross-correlation function C(q1, q2, Delta).

    Attributes
    ----------
    delta_deg : (n,) Delta (deg), increasing, in [-180, 180).
    ccf : (n,) C scaled to 0..1 (Eq. 3 then "scaled ... between 0 and 1").
    raw : (n,) C before scaling (counts^2 rad, frame-averaged).
    q1, q2 : the ring centres (1/A); n_frames : patterns averaged.
    """

    delta_deg: np.ndarray
    ccf: np.ndarray
    raw: np.ndarray
    q1: float
    q2: float
    n_frames: int = 1
    extra: dict = field(default_factory=dict)


def check_dq(dq, q0: float, name: str = "dq") -> float:
    """Validate the half-width (1/A) of a ring's q band: finite, > 0 and at most the ring's q.

    Raises
    ------
    ValueError
        Quoting the value, the ring and the valid range, naming ``name`` and the CLI's ``--dq``.
    """
    try:
        value = float(dq)
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and 0.0 < value <= float(q0)):
        raise ValueError(f"{name} (--dq) = {dq!r} 1/A for the ring at q = {q0:g} 1/A: expected the half-width "
                         f"of the ring's q band, a number in (0, {q0:g}] 1/A, e.g. {default_dq(q0):g} "
                         "(the default max(0.002, 0.02 q)).")
    return value


def _checked_q0(q0) -> float:
    try:
        value = float(q0)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"ring q = {q0!r} 1/A must be a positive number, e.g. 0.083 (200_SL) or 2.12 (200_AL).")
    return value


def _band(q: np.ndarray, q0: float, dq: float) -> np.ndarray:
    q = np.asarray(q, float)
    q0 = _checked_q0(q0)
    dq = check_dq(dq, q0)
    sel = np.flatnonzero(np.abs(q - q0) <= dq)
    if sel.size == 0:
        step = np.median(np.diff(q)) if q.size > 1 else np.inf
        nearest = int(np.argmin(np.abs(q - q0)))
        if abs(q[nearest] - q0) > max(dq, step):
            raise ValueError(f"ring q = {q0:g} 1/A (+- {dq:g}) lies outside the polar grid's q range "
                             f"[{q.min():.4g}, {q.max():.4g}] 1/A; choose a q inside it or reduce the "
                             "scan with a q range that covers the ring.")
        sel = np.array([nearest])
    return sel


def hot_band_bins(band: np.ndarray, circular: bool, nsigma: float = HOT_NSIGMA,
                  neighbour_fraction: float = HOT_NEIGHBOUR_FRACTION) -> np.ndarray:
    """Bins of a ring's polar band ``(..., n_chi, n_q)`` that a hot pixel lifts.

    A bin is hot when `hot_bins` flags it along chi and it is isolated along q as well: both
    q neighbours (same chi) stay below ``neighbour_fraction`` of its excess over the chi median
    of their own q row, by `HOT_NEIGHBOUR_MARGIN` robust sigmas.

    Notes
    -----
    Without pixel splitting a pixel lands in exactly one polar bin, so a hot pixel lifts one
    bin; a Bragg spot spreads over its radial width, several q bins of the band (the SL peaks'
    radial sigma of about 0.0015 1/A against bins of 1 % of q), even where its angular width is
    below one chi bin (small spots near the beam). The q test keeps such narrow spots. A band of
    one q bin has no q neighbours and falls back to the chi test alone.
    Validation: tests/faults/test_analyses_faults.py, tests/fits/analyses/test_xcca.py.
    """
    x = np.asarray(band, np.float64)
    along_chi = np.swapaxes(hot_bins(np.swapaxes(x, -1, -2), circular, nsigma, neighbour_fraction), -1, -2)
    if x.shape[-1] < 2 or not along_chi.any():
        return along_chi
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(x, axis=-2, keepdims=True)
        scale = 1.4826 * np.nanmedian(np.abs(x - med), axis=-2, keepdims=True)
    scale = np.where(np.isfinite(scale), scale, np.inf)
    lower = np.concatenate([np.full(x.shape[:-1] + (1,), np.nan), x[..., :-1] - med[..., :-1]], axis=-1)
    upper = np.concatenate([x[..., 1:] - med[..., 1:], np.full(x.shape[:-1] + (1,), np.nan)], axis=-1)
    nb = np.fmax(lower, upper)                  # NaN only when both q neighbours are invalid
    with np.errstate(invalid="ignore"):
        # no valid q neighbour: nothing tells a spike from a spot, so the bin is kept
        peak_like = ~(nb < neighbour_fraction * (x - med) - HOT_NEIGHBOUR_MARGIN * scale)
    return along_chi & ~peak_like


def hot_bins(profiles: np.ndarray, circular: bool, nsigma: float = HOT_NSIGMA,
             neighbour_fraction: float = HOT_NEIGHBOUR_FRACTION) -> np.ndarray:
    """Bins of angular profiles that a hot pixel lifts: isolated, far-above-median spikes along chi.

    Parameters
    ----------
    profiles : (..., n_chi) intensities along chi (NaN where invalid), e.g. one q bin of a
        ring's band per row.
    circular : the chi grid spans the full circle (the first and last bins are neighbours).
    nsigma : a bin may be hot when it lies this many robust sigmas above the profile's median.
    neighbour_fraction : ... and both chi neighbours (the valid ones) stay below this fraction of
        its excess over the median, by more than `HOT_NEIGHBOUR_MARGIN` robust sigmas.

    Returns
    -------
    (..., n_chi) bool, True = hot.

    Notes
    -----
    Robust location and scale: the median and ``1.4826 MAD`` of the valid bins of the profile
    (Hampel 1974, doi:10.1080/01621459.1974.10482962; Leys et al. 2013,
    doi:10.1016/j.jesp.2013.03.013), so that the peaks and the spike itself do not inflate the
    scale. A bin is hot when ``x - m > nsigma s`` and both neighbours satisfy
    ``x_nb - m < f (x - m) - 3 s`` (m median, s robust sigma, f `HOT_NEIGHBOUR_FRACTION`): the
    neighbours lie 3 sigma below the least a peak would give them.
    The scale has a Poisson floor ``sqrt(m + 1)`` (counts per pixel, one pixel per bin: the
    most a bin fluctuates), so that sparse counts, whose MAD is 0, are not taken for spikes. A hot pixel lights one polar
    bin; a diffraction peak spreads over neighbouring chi bins (its angular sigma, mosaic 1 deg
    and more, spans at least one bin of the 1 deg grid). Peaks of
    angular sigma below ~0.6 chi bins cannot be told from hot pixels by this test: reduce with
    finer chi bins. Validation: tests/faults/test_analyses_faults.py (hot pixels removed, every
    peak of a noisy ring kept).
    """
    x = np.asarray(profiles, np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)     # all-NaN rows: fully masked
        med = np.nanmedian(x, axis=-1, keepdims=True)
        scale = 1.4826 * np.nanmedian(np.abs(x - med), axis=-1, keepdims=True)
    scale = np.where(np.isfinite(scale), scale, np.inf)
    # Poisson floor: the bins hold counts per pixel, and a bin of one pixel at mean m fluctuates
    # by sqrt(m) counts; with sparse counts (SAXS rings near the beam, one pixel per bin, mostly
    # zeros) the MAD is 0 and any single count would otherwise pass for a hot pixel
    scale = np.maximum(scale, np.sqrt(np.maximum(np.nan_to_num(med), 0.0) + 1.0))
    left = np.roll(x, 1, axis=-1)
    right = np.roll(x, -1, axis=-1)
    if not circular:
        left[..., 0] = np.nan
        right[..., -1] = np.nan
    neighbour = np.fmax(left, right)            # NaN only when both neighbours are invalid
    excess = x - med
    with np.errstate(invalid="ignore"):
        return (excess > nsigma * scale) & (
            neighbour - med < neighbour_fraction * excess - HOT_NEIGHBOUR_MARGIN * scale)


def ring_profile(polar: np.ndarray, q: np.ndarray, chi_deg: np.ndarray, q0: float,
                 dq: float | None = None, *, valid: np.ndarray | None = None,
                 hot_nsigma: float | None = HOT_NSIGMA) -> Ring:
    """Angular profile I(q0, phi) and mask W(q0, phi) of polar image(s).

    Parameters
    ----------
    polar : (..., n_chi, n_q) mean intensity per (chi, q) bin (counts per pixel), NaN where a
        bin holds no valid pixel.
    q : (n_q,) bin centres (1/A); chi_deg : (n_chi,) bin centres (deg).
    q0 : ring centre (1/A); dq : half-width of the band (1/A), default `default_dq`.
    valid : optional per-frame validity of the bins, broadcastable to ``polar`` (True = valid;
        e.g. False where a frame lost pixels to dummy or saturated values).
    hot_nsigma : reject bins that hot pixels lift (`hot_bins` with this threshold) in each
        frame before the band mean; None keeps every finite bin (model images).

    Returns
    -------
    Ring
        ``weight`` has the shape of ``intensity`` when ``polar`` holds several frames;
        ``hot_bins`` counts the rejected bins per frame.

    Notes
    -----
    ``W`` is Eq. 2 of the supplementary (0 for gaps, beamstop, outside the detector).
    Validation: tests/fits/analyses/test_xcca.py (masked bins give W = 0, band mean by hand).
    """
    polar = np.asarray(polar, np.float64)
    q0 = _checked_q0(q0)
    dq = default_dq(q0) if dq is None else check_dq(dq, q0)
    sel = _band(q, q0, dq)
    band = polar[..., sel]
    if valid is not None:
        keep = np.broadcast_to(np.asarray(valid, bool), polar.shape)[..., sel]
        band = np.where(keep, band, np.nan)
    n_hot = None
    if hot_nsigma is not None:
        circular = spans_full_circle(chi_deg)
        hot = hot_band_bins(band, circular, hot_nsigma)
        band = np.where(hot, np.nan, band)
        n_hot = hot.sum(axis=(-2, -1))
        if np.any(n_hot):
            log.warning("ring q = %g 1/A: %d polar bin(s) in %d frame(s) rejected as hot pixels "
                        "(isolated spikes > %g robust sigma)", q0, int(n_hot.sum()),
                        int(np.count_nonzero(n_hot)), hot_nsigma)
    finite = np.isfinite(band)
    n = finite.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.where(finite, band, 0.0).sum(axis=-1) / np.maximum(n, 1), 0.0)
    weight = (n > 0).astype(np.float64)
    return Ring(intensity=mean, weight=weight, chi_deg=np.asarray(chi_deg, float), q0=float(q0), dq=dq,
                hot_bins=n_hot)


def spans_full_circle(chi_deg: np.ndarray) -> bool:
    """True when a uniform chi grid covers the full circle (first and last bins adjacent)."""
    chi = np.asarray(chi_deg, float)
    if chi.size < 2:
        return False
    step = float(np.mean(np.diff(chi)))
    return step > 0 and abs(chi.size * step - 360.0) <= 1e-3 * step


def _full_circle(chi_deg: np.ndarray) -> tuple[float, int]:
    """Step (deg) and number of bins of the full circle that a uniform chi grid lives on."""
    chi = np.asarray(chi_deg, float)
    if chi.ndim != 1 or chi.size < 2:
        raise ValueError(f"chi must be a 1D grid of at least 2 bin centres (deg); got shape {chi.shape}.")
    steps = np.diff(chi)
    step = float(np.mean(steps))
    if step <= 0 or np.max(np.abs(steps - step)) > _UNIFORM_RTOL * step:
        raise ValueError(f"chi must be uniform and increasing for the FFT correlation; its steps range "
                         f"from {steps.min():.6g} to {steps.max():.6g} deg. Reduce with regular chi bins.")
    n_full = int(round(360.0 / step))
    if abs(n_full * step - 360.0) > 1e-3 * step or n_full < chi.size:
        raise ValueError(f"chi step {step:.6g} deg does not divide 360 deg; use e.g. 1, 0.5 or 2 deg bins.")
    return step, n_full


def cross_correlation(i1: np.ndarray, w1: np.ndarray, i2: np.ndarray, w2: np.ndarray,
                      chi_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masked two-ring cross-correlation C(Delta) of Eq. 3 by FFT along chi.

    Parameters
    ----------
    i1, i2 : (..., n_chi) ring intensities I(q1, phi), I(q2, phi) (counts per pixel).
    w1, w2 : masks W (1 valid, 0 masked), broadcastable to ``i1`` / ``i2``.
    chi_deg : (n_chi,) uniform chi bin centres (deg). A grid shorter than 360 deg is padded
        with W = 0 to the full circle.

    Returns
    -------
    delta_deg : (n_full,) Delta in [-180, 180) (deg), increasing.
    c : (..., n_full) ``sum_j a_j b_(j+k) dphi`` with ``a = I1 W1``, ``b = I2 W2``, dphi in rad.

    Notes
    -----
    Eq. 3 of the supplementary as a Riemann sum on the chi grid; the circular correlation
    ``C_k = sum_j a_j b_(j+k)`` equals ``IFFT(conj(FFT(a)) FFT(b))`` (correlation theorem).
    Validation: equals the direct double sum of Eq. 3 with gapped masks (tests/fits/analyses/test_xcca.py).
    """
    step, n_full = _full_circle(chi_deg)
    a = np.asarray(i1, np.float64) * np.asarray(w1, np.float64)
    b = np.asarray(i2, np.float64) * np.asarray(w2, np.float64)
    fa = np.fft.rfft(a, n=n_full, axis=-1)
    fb = np.fft.rfft(b, n=n_full, axis=-1)
    c = np.fft.irfft(np.conj(fa) * fb, n=n_full, axis=-1) * np.radians(step)
    k = np.arange(n_full)
    delta = np.where(k < (n_full + 1) // 2, k, k - n_full) * step
    order = np.argsort(delta)
    return delta[order], c[..., order]


def normalise_ccf(c: np.ndarray, what: str = "CCF") -> np.ndarray:
    """Scale a CCF to 0..1: ``(C - min C) / (max C - min C)``.

    Raises when C is constant (e.g. an empty ring: all zeros), which has no angular structure
    to scale; ``what`` names the CCF in the message.

    Notes
    -----
    "scaled in such a way that its value lies between 0 and 1" (supplementary, after Eq. 3).
    """
    c = np.asarray(c, np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{what} holds non-finite values; check the polar images for inf.")
    span = float(c.max() - c.min())
    if span <= 1e-12 * max(float(np.abs(c).max()), 1e-300):
        raise ValueError(f"{what} is constant (value {float(c.max()):.4g}): the rings carry no angular "
                         "structure (an empty ring gives all zeros), so it cannot be scaled to 0..1. "
                         "Check that the patterns hold peaks at q1 and q2, or choose other frames.")
    return (c - c.min()) / span


def _check_ring_has_pixels(ring: Ring) -> None:
    if not np.any(ring.weight > 0):
        raise ValueError(f"the ring at q = {ring.q0:g} 1/A (+- {ring.dq:g}) is fully masked: no valid "
                         "pixel in any chi bin. Choose a q on the detector, widen --dq, or check the mask.")


def domain_ccf(polar: np.ndarray, q: np.ndarray, chi_deg: np.ndarray, q1: float, q2: float, *,
               dq1: float | None = None, dq2: float | None = None,
               frames: np.ndarray | None = None) -> CCF:
    """Domain-averaged, 0..1-scaled CCF of polar images.

    Parameters
    ----------
    polar : (n_chi, n_q) one pattern or (n_frames, n_chi, n_q) several (counts per pixel,
        NaN where masked).
    q, chi_deg : bin centres (1/A, deg). q1, q2 : ring centres (1/A); dq1, dq2 their band
        half-widths (1/A, default `default_dq`).
    frames : indices of the frames to average (default all).

    Notes
    -----
    Eq. 3 per pattern, averaged over the patterns "to obtain statistically meaningful data",
    then scaled to 0..1 (supplementary, "X-ray cross-correlation analysis").
    Validation: tests/fits/analyses/test_xcca.py (FFT vs direct sum; zone-axis positions of the maxima).
    """
    polar = np.asarray(polar)
    if polar.ndim == 2:
        polar = polar[None]
    if polar.ndim != 3:
        raise ValueError(f"polar images must be (n_chi, n_q) or (n_frames, n_chi, n_q); got shape {polar.shape}.")
    if frames is not None:
        frames = np.asarray(frames)
        if frames.size == 0:
            raise ValueError("no frames selected for the CCF; the domain holds no scan point.")
        if not np.issubdtype(frames.dtype, np.integer) or frames.min() < 0 or frames.max() >= polar.shape[0]:
            raise ValueError(f"frames must be indices in 0..{polar.shape[0] - 1} of the {polar.shape[0]} "
                             f"patterns; got {frames.tolist()[:10]}.")
        polar = polar[frames]
    r1 = ring_profile(polar, q, chi_deg, q1, dq1)
    r2 = ring_profile(polar, q, chi_deg, q2, dq2)
    return ccf_of_rings(r1, r2)


def ccf_of_rings(r1: Ring, r2: Ring) -> CCF:
    """Frame-averaged, scaled CCF of two `Ring` (intensity (n_chi,) or (n_frames, n_chi)).

    Frames in which either ring has no valid bin carry no correlation; they are left out of the
    average and listed in ``extra["empty_frames"]`` (positions in the rings' frame axis);
    ``extra["hot_bins"]`` holds the hot-pixel bins rejected per frame and ring, when counted.

    Raises
    ------
    ValueError
        If a ring is masked in every frame, naming its q.
    """
    _check_ring_has_pixels(r1)
    _check_ring_has_pixels(r2)
    delta, c = cross_correlation(r1.intensity, r1.weight, r2.intensity, r2.weight, r1.chi_deg)
    c = c.reshape(-1, c.shape[-1])
    w1 = np.broadcast_to(r1.weight, np.shape(r1.intensity)).reshape(-1, r1.chi_deg.size)
    w2 = np.broadcast_to(r2.weight, np.shape(r2.intensity)).reshape(-1, r2.chi_deg.size)
    seen = np.broadcast_to((w1 > 0).any(axis=1) & (w2 > 0).any(axis=1), (c.shape[0],))
    if not seen.any():
        raise ValueError(f"no frame holds valid pixels on both rings q1 = {r1.q0:g} and q2 = {r2.q0:g} 1/A; "
                         "choose other frames or rings.")
    raw = c[seen].mean(axis=0)
    what = f"the CCF of q1 = {r1.q0:g} and q2 = {r2.q0:g} 1/A"
    extra = {"empty_frames": np.flatnonzero(~seen)}
    if r1.hot_bins is not None and r2.hot_bins is not None:
        extra["hot_bins"] = np.stack([np.reshape(r1.hot_bins, -1), np.reshape(r2.hot_bins, -1)], axis=1)
    return CCF(delta, normalise_ccf(raw, what), raw, r1.q0, r2.q0, n_frames=int(seen.sum()), extra=extra)


def read_rings(path: str | Path, rings: list[tuple[float, float | None]], frames=None,
               batch: int = 256) -> tuple[list[Ring], int]:
    """Ring profiles of a reduced scan (``/entry/reduction/polar``, ``q``, ``chi``), streamed.

    Parameters
    ----------
    path : reduction file of `xmodel.reduction.reduce_scan`.
    rings : list of (q0, dq) in 1/A (dq None: `default_dq`).
    frames : indices of the frames to read (default all), any order.
    batch : frames read at once.

    Returns
    -------
    rings : one `Ring` per request, intensity and weight (n_frames, n_chi).
    n_frames : frames in the file.
    """
    path = Path(path)
    batch = positive_int(batch, "batch", example="256")
    if not path.exists():
        raise FileNotFoundError(f"reduced scan {path} does not exist; run `xmodel reduce` first.")
    with h5py.File(path, "r") as f:
        if "entry/reduction/polar" not in f:
            raise ValueError(f"{path} has no /entry/reduction/polar; pass a file written by "
                             "`xmodel reduce` (or a single pattern of `xmodel simulate`).")
        grp = f["entry/reduction"]
        q = grp["q"][()]
        chi = grp["chi"][()]
        polar = grp["polar"]
        n_total = polar.shape[0]
        idx = np.arange(n_total) if frames is None else np.asarray(frames, int)
        if idx.size and (idx.min() < 0 or idx.max() >= n_total):
            raise ValueError(f"frame indices must lie in 0..{n_total - 1} for {path}; got "
                             f"{idx.min()}..{idx.max()}.")
        rings = [(_checked_q0(q0), default_dq(q0) if dq is None else check_dq(dq, q0)) for q0, dq in rings]
        bands = [_band(q, q0, dq) for q0, dq in rings]
        lo = min(b.min() for b in bands)
        hi = max(b.max() for b in bands) + 1
        order = np.argsort(idx)
        sorted_idx = idx[order]
        out = [np.empty((idx.size, chi.size)) for _ in rings]
        wts = [np.empty((idx.size, chi.size)) for _ in rings]
        hot = [np.zeros(idx.size, np.int64) for _ in rings]
        for start in range(0, idx.size, batch):
            sel = sorted_idx[start:start + batch]
            block = polar[sel, :, lo:hi] if np.all(np.diff(sel) > 0) else polar[np.unique(sel), :, lo:hi][
                np.searchsorted(np.unique(sel), sel)]
            for k, (q0, dq) in enumerate(rings):
                r = ring_profile(block, q[lo:hi], chi, q0, dq)
                out[k][order[start:start + batch]] = r.intensity
                wts[k][order[start:start + batch]] = r.weight
                hot[k][order[start:start + batch]] = r.hot_bins
    res = [Ring(out[k], wts[k], chi, float(q0), float(dq), hot_bins=hot[k]) for k, (q0, dq) in enumerate(rings)]
    return res, n_total


# --------------------------------------------------------------------------- simulation


def gaussian_ring(chi_deg: np.ndarray, centres_deg, amplitudes, sigma_deg) -> np.ndarray:
    """Ring of Gaussian angular peaks, Eq. 4: ``sum_i A_i exp(-(phi - phi_i)^2 / (2 sigma^2))``.

    Parameters
    ----------
    chi_deg : (n,) azimuths (deg); centres_deg, amplitudes, sigma_deg : per peak (deg, counts,
        deg; sigma may be one value). Distances are taken on the circle (wrapped to +-180).
    """
    for s_ in np.atleast_1d(np.asarray(sigma_deg, float)):
        finite_number(float(s_), "sigma_deg", gt=0.0, unit="deg", example="1.0")
    chi = np.asarray(chi_deg, float)[:, None]
    c = np.atleast_1d(np.asarray(centres_deg, float))[None, :]
    a = np.broadcast_to(np.asarray(amplitudes, float), c.shape[1:])
    s = np.broadcast_to(np.asarray(sigma_deg, float), c.shape[1:])
    d = (chi - c + 180.0) % 360.0 - 180.0
    return np.sum(a * np.exp(-0.5 * (d / s) ** 2), axis=1)


def angular_window(chi_deg: np.ndarray, phi1_deg: float, phi2_deg: float) -> np.ndarray:
    """The WAXS window of Eq. 5: 1 for ``phi1 < phi < phi2`` (deg, going counter-clockwise
    from phi1, so a window may cross +-180), 0 otherwise."""
    phi1_deg = finite_number(phi1_deg, "phi1_deg", unit="deg", example="-90")
    phi2_deg = finite_number(phi2_deg, "phi2_deg", unit="deg", example="0")
    chi = np.asarray(chi_deg, float)
    span = (phi2_deg - phi1_deg) % 360.0
    return (((chi - phi1_deg) % 360.0) < span).astype(np.float64)


def gaussian_ccf(chi_deg: np.ndarray, saxs: tuple, waxs: tuple, *, w_saxs: np.ndarray | None = None,
                 w_waxs: np.ndarray | None = None, q1: float = np.nan, q2: float = np.nan) -> CCF:
    """Simulated CCF of Gaussian angular peaks, Eq. 6.

    Parameters
    ----------
    chi_deg : (n_chi,) uniform azimuth grid (deg).
    saxs, waxs : (centres_deg, amplitudes, sigma_deg) of the peaks on the q1 and q2 rings
        (e.g. from `ring_peaks`).
    w_saxs : mask of the q1 ring (default 1 everywhere, the SAXS ring is whole);
    w_waxs : window W of Eq. 5 on the q2 ring (default 1); pass `angular_window` or the
        measured ring's ``weight`` ("gaps, beamstop") for the detector coverage.

    Notes
    -----
    ``C_sim(Delta) = int I_SAXS(q1, phi) I_WAXS(q2, phi + Delta) W(phi + Delta) dphi`` (Eq. 6)
    with I from Eq. 4, then scaled to 0..1.
    Validation: correlates >= 0.95 with the forward-model CCF for the yellow and purple
    domains (tests/fits/analyses/test_xcca.py).
    """
    i1 = gaussian_ring(chi_deg, *saxs)
    i2 = gaussian_ring(chi_deg, *waxs)
    w1 = np.ones_like(i1) if w_saxs is None else np.asarray(w_saxs, float)
    w2 = np.ones_like(i2) if w_waxs is None else np.asarray(w_waxs, float)
    delta, c = cross_correlation(i1, w1, i2, w2, chi_deg)
    return CCF(delta, normalise_ccf(c, f"the Gaussian-peak CCF of q1 = {q1:g}, q2 = {q2:g} 1/A"), c, q1, q2)


def ring_peaks(rows: list[dict], lattice: str, q0: float, dq: float, params,
               chi_step_deg: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peaks of one ring from `xmodel.peaks.reflection_table`: (chi, amplitude, sigma).

    Parameters
    ----------
    rows : the reflection table (rows with ``on_detector`` False are skipped).
    lattice : "SL" or "AL"; q0, dq : ring centre and half-width (1/A).
    params : the `ModelParams` the table was made from (for the angular widths).
    chi_step_deg : chi bin width (deg); its box smoothing is added in quadrature.

    Returns
    -------
    centres (deg), amplitudes (counts, the peak heights of the table), sigma (deg).

    Notes
    -----
    Angular sigma of a peak at radius |G|: the tangential sigma over |G|, i.e. ``sl_mosaic`` for
    the SL and ``sqrt(sigma_s^2 + (|G| sigma_Phi)^2) / |G|`` for the AL (docs/conventions.md,
    "Peaks"), plus ``step / sqrt(12)`` for the binning.
    """
    p = params.astype(np.float64)
    sel = [r for r in rows if r["lattice"] == lattice and r["on_detector"] and abs(r["q"] - q0) <= dq]
    if not sel:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    chi = np.array([r["chi"] for r in sel])
    amp = np.array([r["intensity"] for r in sel])
    g = np.array([r["q"] for r in sel])
    if lattice == "SL":
        sig = np.full(g.shape, float(p.sl_mosaic))
    else:
        ss = float(p.al_radial_width)
        sig = np.sqrt(ss ** 2 + (g * float(p.disorder)) ** 2) / g
    sig = np.sqrt(np.degrees(sig) ** 2 + chi_step_deg ** 2 / 12.0)
    return chi, amp, sig


def model_polar_image(model, params) -> np.ndarray:
    """Forward-model polar image (n_chi, n_q) with NaN where the grid point is invalid.

    ``model`` is a `xmodel.pattern.PatternModel` on ``PixelSet.from_polar(..., mask)``, so the
    simulated rings see the same mask and grid as the measured ones.
    """
    img = np.asarray(model.image(params), np.float64)
    valid = np.asarray(model.pixels.valid).reshape(model.pixels.shape)
    return np.where(valid, img, np.nan)


def ccf_score(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two CCFs on the same Delta grid (1 = same shape).

    Notes
    -----
    Pearson's r is invariant to the affine 0..1 scaling, so it compares shapes only.
    """
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"CCFs of shapes {a.shape} and {b.shape} cannot be compared; compute both on "
                         "the same chi grid.")
    if np.std(a) == 0 or np.std(b) == 0:
        raise ValueError("a constant CCF has no correlation with another; check both rings hold peaks.")
    return float(np.corrcoef(a, b)[0, 1])


def ccf_maxima(delta_deg: np.ndarray, ccf: np.ndarray, min_height: float = 0.2,
               min_prominence: float = 0.05) -> np.ndarray:
    """Positions (deg) of the local maxima of a 0..1 CCF on the circle, parabola-refined."""
    from scipy.signal import find_peaks

    min_height = finite_number(min_height, "min_height", ge=0.0, le=1.0, unit="of the 0..1 CCF", example="0.2")
    min_prominence = finite_number(min_prominence, "min_prominence", ge=0.0, le=1.0, example="0.05")
    c = np.asarray(ccf, float)
    n = c.size
    step = float(np.mean(np.diff(delta_deg)))
    ext = np.concatenate([c, c, c])
    idx, _ = find_peaks(ext, height=min_height, prominence=min_prominence)
    idx = idx[(idx >= n) & (idx < 2 * n)]
    out = []
    for i in idx:
        y0, y1, y2 = ext[i - 1], ext[i], ext[i + 1]
        den = y0 - 2 * y1 + y2
        off = 0.5 * (y0 - y2) / den if den != 0 else 0.0
        out.append(delta_deg[i - n] + off * step)
    return np.array(sorted(((np.array(out) + 180.0) % 360.0) - 180.0)) if out else np.zeros(0)


def maxima_offset(measured_deg: np.ndarray, expected_deg: np.ndarray) -> float:
    """Largest circular distance (deg) from an expected CCF maximum to the nearest measured one.

    Each maximum the zone-axis geometry predicts (e.g. `ccf_maxima` of the Gaussian-peak CCF of
    Eqs. 4-6) must have a measured maximum nearby (the acceptance target is 1 deg); inf if none
    was measured.
    """
    m = np.asarray(measured_deg, float).reshape(-1)
    e = np.asarray(expected_deg, float).reshape(-1)
    if e.size == 0:
        return 0.0
    if m.size == 0:
        return float("inf")
    d = np.abs((e[:, None] - m[None, :] + 180.0) % 360.0 - 180.0)
    return float(d.min(axis=1).max())


def plot_ccfs(panels: list[dict], path: str | Path) -> Path:
    """CCF figure like the paper's Fig. 2a-e: experiment solid red, simulation dashed blue.

    ``panels``: dicts with ``title``, ``delta_deg``, ``ccf`` and optionally ``ccf_simulated``.
    """
    from matplotlib.figure import Figure

    n = len(panels)
    fig = Figure(figsize=(3.2 * n, 2.8))  # no pyplot: the user's backend is kept
    axes = fig.subplots(1, n, squeeze=False)
    for ax, p in zip(axes[0], panels):
        ax.plot(p["delta_deg"], p["ccf"], "r-", lw=1.5, label="experiment")
        if p.get("ccf_simulated") is not None:
            ax.plot(p["delta_deg"], p["ccf_simulated"], "b--", lw=1.2, label="simulation")
        ax.set_xlim(-180, 180)
        ax.set_xticks([-180, -90, 0, 90, 180])
        ax.set_ylim(-0.02, 1.05)
        ax.set_xlabel(r"$\Delta$ (deg)")
        ax.set_title(p.get("title", ""), fontsize=9)
    axes[0][0].set_ylabel("C (normalised)")
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def simulate_ccfs(experiment, structure, params, r1: Ring, r2: Ring, dq1: float, dq2: float) -> dict:
    """Forward-model and Gaussian-peak (Eqs. 4-6) CCFs of ``params`` on the chi grid of ``r1``.

    The forward model is evaluated on a polar grid through both rings under the
    experiment's mask; the Gaussian-peak CCF places the lit reflections of
    `xmodel.peaks.reflection_table` on the rings with the WAXS window of ``r2``'s mask (Eq. 5).
    Returns ``{"model": CCF, "gaussian": CCF}``.
    """
    from xmodel.pattern import PatternModel
    from xmodel.peaks import reflection_table

    chi = r1.chi_deg
    q = np.concatenate([np.linspace(r1.q0 - dq1, r1.q0 + dq1, 5), np.linspace(r2.q0 - dq2, r2.q0 + dq2, 7)])
    model = PatternModel(experiment.polar_pixels(q, chi), structure, params)
    polar = model_polar_image(model, params)
    s1 = ring_profile(polar, q, chi, r1.q0, dq1, hot_nsigma=None)
    s2 = ring_profile(polar, q, chi, r2.q0, dq2, hot_nsigma=None)
    model_ccf = ccf_of_rings(s1, s2)
    rows = reflection_table(experiment, structure, params)
    step = float(np.mean(np.diff(chi)))
    saxs = ring_peaks(rows, "SL", r1.q0, dq1 + 0.001, params, chi_step_deg=step)
    waxs = ring_peaks(rows, "AL", r2.q0, dq2, params, chi_step_deg=step)
    if saxs[0].size == 0 or waxs[0].size == 0:
        raise ValueError(f"the simulated pattern has no peak on the ring at q1 = {r1.q0:g} or "
                         f"q2 = {r2.q0:g} 1/A; check q1, q2 and the domain config.")
    w2 = np.asarray(r2.weight).reshape(-1, chi.size).max(axis=0)
    gauss = gaussian_ccf(chi, saxs, waxs, w_waxs=w2, q1=r1.q0, q2=r2.q0)
    return {"model": model_ccf, "gaussian": gauss}
