"""Global orientation search on polar images: the frame side of template matching.

Orientation fits are multi-modal, so every frame is first matched against a bank of templates
(`fits.scan.templates`: the angular signatures of the SL shells for each zone axis at zero in-plane
angle). A rotation by ``phi`` about the beam only shifts the ring profiles along chi, so the
in-plane angle of each template falls out of one FFT cross-correlation along chi (masked and
normalised, a cosine similarity).

The SL lattice constant comes first, from the chi-integrated anisotropic excess of the polar
image matched against the shell positions ``q_s = 2 pi sqrt(n2) / a`` over a grid of ``a``. fcc
shells alias (``a sqrt(s'/s)`` puts shell ``s'`` where shell ``s`` of ``a`` is), so the templates
are correlated at the best few distinct maxima of that score and the matches of all of them are
ranked together (`search_orientations`), then refined on finer cones of zone axes
(`refine_matches`). Frames whose ring profiles hold no peak above the noise get
``has_signal = False``.

Holds: lattice-constant scores and candidates, ring profiles and their significance,
`SearchResult`, `search_orientations` and `refine_matches`. The template side (`TemplateBank`,
`build_template_bank`, `zone_axis_grid`, `shell_signatures`, ...) lives in `fits.scan.templates` and
is re-exported here, so ``from fits.scan.search import TemplateBank`` keeps working.

Conventions: chi is pyFAI's azimuth (deg), ``chi = atan2(q1, q2)``; orientations are SL
crystal -> lab (docs/conventions.md). Everything here is numpy (float64 for geometry, float32
for the correlation arrays), vectorised over frames. Contractions are einsums, not matmuls: the
many small multi-threaded OpenBLAS GEMMs of a batched matmul stall for seconds on a loaded 2-core
machine (measured 2.9 s instead of 6 ms for the template correlation of 16 frames).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fits.scan.settings import SearchSettings
from fits.scan.templates import (
    DEFAULT_SHELLS,
    TWO_PI,
    TemplateBank,
    base_orientations,
    build_template_bank,
    check_chi_grid,
    ewald_angle,
    ring_directions,
    shell_members,
    shell_signatures,
    zone_axis_grid,
)
from xmodel import orientation

#: public names; the template side is re-exported so ``from fits.scan.search import TemplateBank`` works
__all__ = [
    # fits.scan.templates
    "DEFAULT_SHELLS", "TWO_PI", "TemplateBank", "base_orientations", "build_template_bank",
    "check_chi_grid", "ewald_angle", "ring_directions", "shell_members", "shell_signatures",
    "zone_axis_grid",
    # frames
    "SearchResult", "anisotropic_excess", "estimate_lattice_constant", "isolated_spikes",
    "lattice_constant_candidates", "lattice_constant_score", "localised_significance", "mask_spikes",
    "mask_spikes_on_points", "neighbour_excess", "next_bin_fraction", "radial_surroundings", "refine_matches",
    "ring_profiles", "ring_significance",
    "search_orientations", "spike_floor",
]


def _nan_median(x: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmedian(x, axis)`` (NaN where a slice is all NaN, silently), about 5x faster.

    One sort (NaN last) and the mean of the two middle valid values; numpy's nanmedian goes
    through masked arrays for axes shorter than 600. Validation: bit-identical to
    ``np.nanmedian`` on the demo twin's polar images (tests/fits/scan/test_search.py).
    """
    x = np.moveaxis(np.asarray(x, float), axis, -1)
    srt = np.sort(x, axis=-1)
    n = np.sum(~np.isnan(x), axis=-1)
    lo = np.take_along_axis(srt, np.maximum((n - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(srt, np.minimum(n // 2, x.shape[-1] - 1)[..., None], -1)[..., 0]
    return np.where(n > 0, (lo + hi) / 2, np.nan)


def neighbour_excess(e: np.ndarray, pixels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 8 neighbours of every bin of a polar grid (chi periodic, q not): their largest value,
    how many are measured, and the fewest pixels of a measured one.

    Parameters
    ----------
    e : (B, C, Q) values per bin, -inf where not measured.
    pixels : (C, Q) pixels per bin, or None.

    Returns
    -------
    nb : (B, C, Q) largest neighbour value (-inf if none is measured).
    n_fin : (B, C, Q) measured neighbours.
    n_min : (C, Q) fewest pixels of a neighbour holding any (inf if none; all inf without ``pixels``).
    """
    _, C, Q = e.shape
    e = np.asarray(e, float)
    # separable: the largest (and the count) of the two q neighbours, then the 3-wide rows above
    # and below in chi; the bin's own row adds its two q neighbours only
    side = _pair(e, 2, np.maximum, -np.inf)
    nb = np.maximum(_pair(np.maximum(side, e), 1, np.maximum, None), side)
    fin = (e > -np.inf).astype(np.int8)
    f_side = _pair(fin, 2, np.add, 0)
    n_fin = _pair(f_side + fin, 1, np.add, None) + f_side
    n_pad = np.pad(np.zeros((C, Q)) if pixels is None else np.asarray(pixels, float), ((0, 0), (1, 1)))
    n_pad = np.where(n_pad > 0, n_pad, np.inf)
    n_min = np.full((C, Q), np.inf)
    for dc in (-1, 0, 1):
        n_rolled = np.roll(n_pad, dc, axis=0)
        for dq in (-1, 0, 1):
            if dc or dq:
                n_min = np.minimum(n_min, n_rolled[:, 1 + dq:1 + dq + Q])
    return nb, n_fin, n_min


def _pair(x: np.ndarray, axis: int, op, edge) -> np.ndarray:
    """``op`` of the two neighbours of every element of ``x`` along ``axis``: periodic when
    ``edge`` is None (chi), else ``edge`` beyond the ends (q). Slices, no `np.roll` copies."""
    def at(i):
        return (slice(None),) * (axis % x.ndim) + (i,)

    out = np.empty_like(x)
    n = x.shape[axis]
    first, last = x[at(0)], x[at(n - 1)]
    if n == 1:
        out[...] = op(x, x) if edge is None else edge
        return out
    if n > 2:
        op(x[at(slice(None, -2))], x[at(slice(2, None))], out=out[at(slice(1, -1))])
    second, before_last = x[at(1)], x[at(n - 2)]
    out[at(0)] = op(second, last if edge is None else edge)
    out[at(n - 1)] = op(before_last, first if edge is None else edge)
    return out


def next_bin_fraction(q: np.ndarray, n_chi: int, sigma_q: float, mosaic_deg: float) -> np.ndarray:
    """(Q,) ``r = max(exp(-dq^2 / (2 sigma_q^2)), exp(-dchi^2 / (2 mosaic^2)))``: the fraction of
    its height a Gaussian peak (radial sigma ``sigma_q`` 1/A, angular sigma ``mosaic_deg``)
    centred on a bin puts on the next bin along its wider direction, with ``dq`` the local q step
    and ``dchi = 360 / n_chi`` deg (`isolated_spikes`)."""
    q = np.asarray(q, float)
    dq = np.gradient(q) if q.size > 1 else np.full(1, np.inf)
    return np.maximum(np.exp(-0.5 * (dq / max(sigma_q, 1e-12)) ** 2),
                      np.exp(-0.5 * ((360.0 / n_chi) / max(float(mosaic_deg), 1e-6)) ** 2))


def spike_floor(e: np.ndarray, level: np.ndarray, r: np.ndarray, n_centre: np.ndarray, n_neighbour: np.ndarray,
                n_sigma: float) -> np.ndarray:
    """The least excess the neighbours of a peak bin hold: ``r e - n_sigma s`` (same units as ``e``).

    A bin of excess ``e`` over the level ``level`` (mean counts per pixel) that lies on a peak
    puts at least ``r e`` on its brightest neighbour (`next_bin_fraction`), and the test
    statistic ``r e - n_e`` (``n_e`` the neighbour's excess) has variance
    ``s^2 = (r e + level + 1 / n_nb) / n_nb + r^2 (e + level + 1 / n_c) / n_c``: each bin is the
    mean of its ``n`` Poisson pixels, so its variance is its mean over ``n`` (the variance of a
    sample mean, ``Var(sum x_i / n) = lambda / n`` for ``n`` independent Poisson counts of mean
    ``lambda``), with one count added to each bin's total so that an empty bin keeps a noise of
    one count. ``n_nb`` is the fewest pixels of a measured neighbour (the noisiest), ``n_c`` the
    bin's own. With one pixel per bin this is the Poisson sigma of one pixel.

    Parameters
    ----------
    e, level : (B, C, Q) excess and level (counts per pixel).
    r : (Q,) or broadcastable, `next_bin_fraction`.
    n_centre, n_neighbour : (C, Q) pixels of the bin and fewest of a measured neighbour (>= 1).
    n_sigma : sigmas below ``r e`` (`SearchSettings.spike_sigma`).
    """
    n_c, n_nb = np.maximum(n_centre, 1.0)[None], np.maximum(n_neighbour, 1.0)[None]
    lv = np.clip(np.nan_to_num(level), 0.0, None)
    with np.errstate(invalid="ignore"):
        var = (np.clip(r * e + lv, 0.0, None) + 1.0 / n_nb) / n_nb + r ** 2 * (np.clip(e + lv, 0.0, None) + 1.0 / n_c) / n_c
        return r * e - n_sigma * np.sqrt(var)


def isolated_spikes(polar: np.ndarray, q: np.ndarray, *, sigma_q: float = SearchSettings.ring_sigma_q,
                    mosaic_deg: float = 1.0, n_sigma: float = SearchSettings.spike_sigma,
                    pixels: np.ndarray | None = None) -> np.ndarray:
    """(B, C, Q) bool: polar bins brighter than any SL peak could be next to its neighbours.

    A hot pixel (or a zinger) lies in one polar bin; an SL peak covers several, since its radial
    sigma ``sigma_q`` and its angular sigma ``mosaic_deg`` (on the ring, about the SL mosaic
    spread) are at least about one bin. A bin is a spike when its excess ``e = I - m`` over the
    ring median ``m`` (counts per pixel) and the largest excess ``n_e`` of its 8 neighbours (chi
    periodic) satisfy ``n_e < spike_floor(e, m, r, ...)``: the neighbours hold less than the least
    a peak of that height puts there, by more than ``n_sigma`` Poisson sigma of the difference
    of the two bin means (`spike_floor`: each bin is the mean of its ``pixels``, so its noise is
    ``sqrt(mean / n)``). A hot pixel of a few thousand counts in a wide-angle bin of hundreds of
    pixels raises the bin's mean by a few counts: many sigma of that mean, though below one
    pixel's noise. Only a bin with most of its 8 neighbours measured can be isolated: at small q
    most polar bins hold no pixel and a lone bin says nothing.

    ``r = max(exp(-dq^2 / (2 sigma_q^2)), exp(-dchi^2 / (2 mosaic^2)))`` with ``dq`` (1/A) the
    local q step and ``dchi`` the chi step: a Gaussian peak centred on a bin puts this fraction of
    its height on the next bin along its wider direction (off-centre, more on one side).
    Non-finite bins are never spikes (they are masked, or broken data that `fits.scan.starts`
    reports).

    Parameters
    ----------
    polar : (B, C, Q) mean counts per pixel of each bin (NaN where not measured).
    q : (Q,) bin centres (1/A).
    sigma_q, mosaic_deg : narrowest SL peak: radial sigma (1/A), angular sigma (deg).
    n_sigma : threshold in Poisson sigma (`SearchSettings.spike_sigma`).
    pixels : (C, Q) detector pixels per bin (``/entry/reduction/counts``); None: one per bin
        (the noise of one pixel, an upper bound).

    Validation: on the realistic 7 x 7 demo (5 hot pixels of 5000 counts) the hot pixel at
    q = 0.128 1/A is found in every frame; a hot pixel in a wide-angle bin of hundreds of pixels
    is found with the pixel counts and not without; on the Gaussian twin no SL peak bin is
    (tests/fits/scan/test_search.py).
    """
    polar = np.asarray(polar, np.float64)
    q = np.asarray(q, float)
    C, Q = polar.shape[1:]
    n_px = np.ones((C, Q)) if pixels is None else np.asarray(pixels, float).reshape(C, Q)
    med = _nan_median(polar, axis=1)[:, None, :]                         # (B, 1, Q)
    with np.errstate(invalid="ignore"):          # inf - inf in a broken frame: not finite, never a spike
        e = polar - med
    fin = np.isfinite(e)
    nb, n_fin, n_min = neighbour_excess(np.where(fin, e, -np.inf), n_px)
    r = next_bin_fraction(q, C, sigma_q, mosaic_deg)[None, None, :]
    floor = spike_floor(e, med, r, n_px, np.where(np.isfinite(n_min), n_min, 1.0), n_sigma)
    with np.errstate(invalid="ignore"):
        return fin & (e > 0) & (n_fin > 4) & (nb < floor)


def mask_spikes(polar: np.ndarray, q: np.ndarray, **kwargs) -> np.ndarray:
    """``polar`` (B, C, Q) with its `isolated_spikes` set to NaN (masked), float64; keywords as there."""
    polar = np.array(polar, np.float64)
    polar[isolated_spikes(polar, q, **kwargs)] = np.nan
    return polar


def mask_spikes_on_points(obs: np.ndarray, index: np.ndarray, shape: tuple[int, int], q: np.ndarray,
                          **kwargs) -> np.ndarray:
    """``obs`` (B, P), counts on the fit points ``index`` of a (C, Q) polar grid, with its
    `isolated_spikes` set to NaN (the other bins count as unmeasured); keywords as there."""
    obs = np.asarray(obs, np.float64)
    img = np.full((obs.shape[0], shape[0] * shape[1]), np.nan)
    img[:, index] = obs
    return mask_spikes(img.reshape(-1, *shape), q, **kwargs).reshape(obs.shape[0], -1)[:, index]


def anisotropic_excess(polar: np.ndarray) -> np.ndarray:
    """(B, Q) chi-summed positive excess over the ring median, relative to ``median + 1``.

    ``polar`` is (B, C, Q) mean counts per bin, NaN where a bin has no valid pixel.
    """
    med = _nan_median(polar, axis=1)
    ex = np.clip(np.nan_to_num(polar - med[:, None, :], nan=0.0), 0.0, None)
    return ex.sum(axis=1) / (np.nan_to_num(med, nan=0.0) + 1.0)


def lattice_constant_score(polar: np.ndarray, q: np.ndarray, a_range: tuple[float, float], *,
                           shells: tuple[int, ...] = DEFAULT_SHELLS, sigma_q: float = SearchSettings.ring_sigma_q,
                           n_grid: int = SearchSettings.lattice_grid_points) -> tuple[np.ndarray, np.ndarray]:
    """Shell-position score of the anisotropic radial profile on a grid of SL lattice constants.

    Parameters
    ----------
    polar : (B, C, Q) polar images (counts per bin, NaN masked).
    q : (Q,) bin centres (1/A), increasing, not necessarily regular.
    a_range : (a_min, a_max) searched (A).
    shells : SL shells ``h^2 + k^2 + l^2``.
    sigma_q : radial smoothing (1/A), about the SL radial peak sigma.
    n_grid : grid points over ``a_range``.

    Returns
    -------
    a : (A,) the grid (A); score : (B, A) the score of every frame at every grid point.

    Notes
    -----
    ``score(a) = sum_s sqrt(E_s(2 pi sqrt(s) / a))`` with ``E`` the chi-summed excess
    (`anisotropic_excess`) smoothed by a Gaussian of ``sigma_q``; shells outside the q range
    count 0. fcc shell positions: Table S1 indexing. The sqrt lets several lit shells outweigh a
    single bright one. fcc shells alias: ``a' = a sqrt(s'/s)`` puts shell ``s'`` of ``a'`` on
    shell ``s`` of ``a`` (111 of a = 132 A on 200 of a = 152 A), so the score has several
    comparable maxima (`lattice_constant_candidates`).
    """
    q = np.asarray(q, float)
    ex = anisotropic_excess(np.asarray(polar, np.float64))
    a = np.linspace(min(a_range), max(a_range), n_grid)
    score = np.zeros((ex.shape[0], a.size))
    dq = np.gradient(q) if q.size > 1 else np.ones(1)
    w_sig = np.maximum(sigma_q, 0.5 * dq)
    for s in shells:
        qs = TWO_PI * np.sqrt(s) / a                                      # (A,)
        inside = (qs >= q.min()) & (qs <= q.max())
        w = np.exp(-0.5 * ((q[None, :] - qs[:, None]) / w_sig[None, :]) ** 2)   # (A, Q)
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
        # einsum, not ex @ w.T: small multi-threaded GEMMs stall on a loaded machine (_cross_spectrum)
        score += np.sqrt(np.clip(np.einsum("bq,aq->ba", ex, w), 0.0, None)) * inside[None, :]
    return a, score


def _parabola_peak(a: np.ndarray, score: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Grid maxima ``best`` (B,) of ``score`` (B, A) refined by a parabola through 3 points (A)."""
    i = np.clip(best, 1, a.size - 2)
    y0, y1, y2 = (np.take_along_axis(score, (i + d)[:, None], 1)[:, 0] for d in (-1, 0, 1))
    den = y0 - 2 * y1 + y2
    off = np.where(np.abs(den) > 1e-12, 0.5 * (y0 - y2) / np.where(den == 0, 1, den), 0.0)
    off = np.where((best == i), np.clip(off, -1, 1), 0.0)
    return a[i] + off * (a[1] - a[0])


def estimate_lattice_constant(polar: np.ndarray, q: np.ndarray, a_range: tuple[float, float], *,
                              shells: tuple[int, ...] = DEFAULT_SHELLS, sigma_q: float = SearchSettings.ring_sigma_q,
                              n_grid: int = SearchSettings.lattice_grid_points) -> np.ndarray:
    """SL lattice constant (A) per frame: the global maximum of `lattice_constant_score`.

    Parameters
    ----------
    polar : (B, C, Q) polar images (counts per bin, NaN masked).
    q : (Q,) bin centres (1/A), increasing, not necessarily regular.
    a_range : (a_min, a_max) searched (A).
    sigma_q : radial smoothing (1/A), about the SL radial peak sigma.

    Notes
    -----
    The best grid point is refined by a parabola. On compressed, tilted boundary patterns the
    global maximum is often an alias (`lattice_constant_score`): `search_orientations`
    therefore correlates templates at several maxima (`lattice_constant_candidates`).

    Validation: recovers ``a`` of forward-model patterns of the five domains within 1 %
    (measured 0.8 % for orange; tests/fits/scan/test_search.py).
    """
    a, score = lattice_constant_score(polar, q, a_range, shells=shells, sigma_q=sigma_q, n_grid=n_grid)
    return _parabola_peak(a, score, np.argmax(score, axis=1))


def lattice_constant_candidates(polar: np.ndarray, q: np.ndarray, a_range: tuple[float, float], *,
                                n_candidates: int = SearchSettings.n_lattice,
                                min_separation: float = SearchSettings.lattice_separation,
                                shells: tuple[int, ...] = DEFAULT_SHELLS, sigma_q: float = SearchSettings.ring_sigma_q,
                                n_grid: int = SearchSettings.lattice_grid_points) -> tuple[np.ndarray, np.ndarray]:
    """The best distinct local maxima of `lattice_constant_score` per frame.

    Parameters
    ----------
    polar : (B, C, Q) polar images (counts per bin, NaN masked).
    q : (Q,) bin centres (1/A), increasing.
    a_range : (a_min, a_max) searched (A).
    n_candidates : maxima kept per frame (at least 1).
    min_separation : kept maxima differ by at least this fraction of ``a`` (0.02: 2 %).
    shells, sigma_q, n_grid : as `lattice_constant_score`.

    Returns
    -------
    a : (B, N) lattice constants (A), best score first, NaN where a frame has fewer than N
        maxima; ``a[:, 0]`` is `estimate_lattice_constant`.
    score : (B, N) their scores (`lattice_constant_score`, -inf where ``a`` is NaN).

    Notes
    -----
    Local maxima of the grid (the ends count when they beat their one neighbour), greedily kept
    from the highest, each refined by a parabola. Why several: fcc shells alias (``a sqrt(s'/s)``
    maps shell ``s`` onto ``s'``): on the 13 x 13 demo twin the true ``a`` (within 1 %) was a
    lower maximum than an alias in 17 of the 114 in-domain frames, 16 of them within 1 um of a
    domain boundary.

    Validation: the first candidate equals `estimate_lattice_constant`; for a green domain at
    a = 0.88 a0 tilted 10 deg the true a is the second candidate (tests/fits/scan/test_search.py).
    """
    n = int(n_candidates)
    if n < 1:
        raise ValueError(f"lattice_constant_candidates: n_candidates must be at least 1, got "
                         f"{n_candidates!r}; 3 covers the fcc shell aliases.")
    a, score = lattice_constant_score(polar, q, a_range, shells=shells, sigma_q=sigma_q, n_grid=n_grid)
    B = score.shape[0]
    left = np.concatenate([np.full((B, 1), -np.inf), score[:, :-1]], axis=1)
    right = np.concatenate([score[:, 1:], np.full((B, 1), -np.inf)], axis=1)
    peak = (score >= left) & (score >= right) & (score > 0)
    out_a = np.full((B, n), np.nan)
    out_s = np.full((B, n), -np.inf)
    best = np.argmax(score, axis=1)
    for b in range(B):
        idx = np.flatnonzero(peak[b])
        if best[b] not in idx:                     # a flat or all-zero score: the argmax still counts
            idx = np.append(idx, best[b])
        idx = idx[np.argsort(-score[b, idx], kind="stable")]
        kept: list[float] = []
        for i in idx:
            ai = float(_parabola_peak(a, score[b:b + 1], np.array([i]))[0])
            if all(abs(ai / aj - 1.0) >= min_separation for aj in kept):
                out_s[b, len(kept)] = score[b, i]
                kept.append(ai)
                if len(kept) == n:
                    break
        out_a[b, :len(kept)] = kept
    return out_a, out_s


def ring_profiles(polar: np.ndarray, q: np.ndarray, lattice_constant: np.ndarray,
                  shells: tuple[int, ...] | np.ndarray, sigma_q: float = SearchSettings.ring_sigma_q
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Ring intensity versus chi at each shell's ``|G|``, per frame.

    Returns
    -------
    profile : (B, S, C) Gaussian-weighted mean over q around ``q_s = 2 pi sqrt(s) / a`` (counts),
        NaN where no valid bin contributes or the ring is outside the q range.
    level : (B, S) the median of each ring over chi (counts).
    """
    a = np.asarray(lattice_constant, float).reshape(-1)
    return _ring_profiles_at(polar, q, TWO_PI * np.sqrt(np.asarray(shells, float))[None, :] / a[:, None],
                             sigma_q)


def _ring_profiles_at(polar: np.ndarray, q: np.ndarray, qs: np.ndarray, sigma_q: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """`ring_profiles` at the ring moduli ``qs`` (B, R) (1/A): profile (B, R, C), level (B, R)."""
    polar = np.asarray(polar, np.float64)
    q = np.asarray(q, float)
    dq = np.gradient(q) if q.size > 1 else np.ones(1)
    w_sig = np.maximum(sigma_q, 0.5 * dq)
    w = np.exp(-0.5 * ((q[None, None, :] - qs[:, :, None]) / w_sig) ** 2)      # (B, R, Q)
    w *= np.abs(q[None, None, :] - qs[:, :, None]) < 3.0 * w_sig
    cols = np.flatnonzero(w.any(axis=(0, 1)))              # the q bins any ring weights (a few %)
    sub, w = polar[:, :, cols], w[:, :, cols]
    valid = np.isfinite(sub)
    num = np.einsum("bcq,bsq->bsc", np.where(valid, sub, 0.0), w)
    den = np.einsum("bcq,bsq->bsc", valid.astype(np.float64), w)
    inside = (qs > q.min()) & (qs < q.max())
    ok = (den > 0.25 * np.maximum(w.sum(axis=2), 1e-12)[:, :, None]) & inside[:, :, None]
    profile = np.where(ok, num / np.where(den > 0, den, 1.0), np.nan)
    return profile, _nan_median(profile, axis=2)


def ring_significance(profile: np.ndarray, level: np.ndarray) -> np.ndarray:
    """(B, S) peak significance of each ring: ``(max - median) / noise``.

    ``noise = max(1.4826 MAD, sqrt(median + 1))`` over chi: the robust spread of the ring, at
    least the Poisson spread of a pixel at the ring's level (counts), so that rings of a few
    counts per pixel or of zeros are not called peaks.
    """
    dev = np.abs(profile - level[:, :, None])
    mad = 1.4826 * _nan_median(dev, axis=2)
    noise = np.maximum(np.nan_to_num(mad, nan=0.0), np.sqrt(np.clip(np.nan_to_num(level), 0, None) + 1.0))
    with np.errstate(all="ignore"):
        peak = np.nanmax(np.where(np.isfinite(profile), profile, -np.inf), axis=2) - level
    return np.nan_to_num(peak / noise, nan=0.0, neginf=0.0, posinf=0.0)


def radial_surroundings(polar: np.ndarray, q: np.ndarray, offset: float, half_width: float,
                        pixels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What a feature that runs along q at fixed chi puts at each point of a polar grid.

    The pixel-weighted mean of the measured values of ``polar`` (..., Q) (mean counts per pixel
    of each bin) within ``half_width`` of ``q - offset`` and of ``q + offset`` (1/A) on the same
    row (chi), both sides together: a parasitic streak or the edge of the beamstop arm's shadow
    lights them as it lights the point, a peak localised in q (radial sigma below about
    ``(offset - half_width) / 2.5``) does not. Bins without pixels (NaN: at small q many bins of a
    fine polar grid hold none) are skipped. The radial surroundings of
    `localised_significance`, per point.

    Parameters
    ----------
    polar : (..., Q) values, NaN where not measured.
    q : (Q,) bin centres (1/A), increasing.
    offset, half_width : distance of the two side bands from the point and their half width (1/A).
    pixels : (..., Q) broadcastable pixels per bin (None: one each).

    Returns
    -------
    mean : (..., Q) the side bands' mean (NaN where they hold no measured bin).
    n : (..., Q) the pixels it averages: its Poisson variance is ``mean / n``.
    """
    polar = np.asarray(polar, np.float64)
    q = np.asarray(q, float)
    w = np.broadcast_to(np.ones(1) if pixels is None else np.asarray(pixels, float), polar.shape)
    w = np.where(np.isfinite(polar), w, 0.0)
    zero = np.zeros(polar.shape[:-1] + (1,))
    csum = np.concatenate([zero, np.cumsum(np.where(w > 0, w * polar, 0.0), -1)], -1)
    cw = np.concatenate([zero, np.cumsum(w, -1)], -1)
    total, n = np.zeros(polar.shape), np.zeros(polar.shape)
    for d in (-float(offset), float(offset)):
        lo = np.searchsorted(q, q + d - half_width, side="left")
        hi = np.searchsorted(q, q + d + half_width, side="right")
        total += csum[..., hi] - csum[..., lo]
        n += cw[..., hi] - cw[..., lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan), n


def localised_significance(polar: np.ndarray, q: np.ndarray, lattice_constant: np.ndarray,
                           shells: tuple[int, ...] | np.ndarray,
                           sigma_q: float = SearchSettings.ring_sigma_q,
                           on_ring: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(B, T, S) peak significance of the SL rings against their radial surroundings.

    ``lattice_constant`` (B, T) (A), rings at ``2 pi sqrt(s) / a``. Like `ring_significance`, on
    the ring profile minus the mean of the profiles ``4 sigma_q`` inside and outside it at the same
    chi: an SL peak is localised in q (radial sigma about ``sigma_q``), so it stands above its
    surroundings; a streak, the shadow of the beamstop arm or any feature that runs along q at
    fixed chi lights the ring and its surroundings alike and cancels. A side within ``3 sigma_q``
    of another fcc shell of the same ``a`` (11/12, 19/20 are 3-4 sigma apart) is not used. The
    noise floor is the Poisson spread at the ring's own median level.

    Validation: a streak along q (one chi row of an empty frame + 30 counts) gives a
    `ring_significance` above 8 and a localised one below; the five domains' frames stay above 8
    (tests/fits/scan/test_search.py). Realistic 7 x 7 demo: empty frames 10-12 -> 2.8-5.2 (the
    parasitic streak); Gaussian 7 x 7: of 29 frames with SL peaks, 2 move from 8.0-8.1 to
    6.4-7.8, the others within 10 %.

    ``on_ring``: the rings' `_ring_profiles_at` (profile (B, T*S, C), level (B, T*S)) when the
    caller has them already.
    """
    a = np.asarray(lattice_constant, float)
    B, T = a.shape
    sh = np.asarray(shells, float)
    r = np.arange(-6, 7)
    hkl = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    fcc = np.all(hkl % 2 == hkl[:, :1] % 2, axis=1)                     # h, k, l all even or all odd
    n2 = np.sum(hkl[fcc] ** 2, axis=1)
    allowed = np.unique(n2[(n2 > 0) & (n2 <= sh.max() + 8)]).astype(float)
    qs = TWO_PI * np.sqrt(sh)[None, None, :] / a[:, :, None]                     # (B, T, S)
    qa = TWO_PI * np.sqrt(allowed)[None, None, :] / a[:, :, None]                 # (B, T, A)
    on, level = _ring_profiles_at(polar, q, qs.reshape(B, -1), sigma_q) if on_ring is None else on_ring
    sides = []
    for d in (-1.0, 1.0):
        qo = qs + d * 4.0 * sigma_q
        clear = np.all(np.abs(qo[..., None] - qa[:, :, None, :]) >= 3.0 * sigma_q, axis=-1)   # (B, T, S)
        prof = _ring_profiles_at(polar, q, qo.reshape(B, -1), sigma_q)[0]
        sides.append(np.where(clear.reshape(B, -1)[:, :, None], prof, np.nan))
    with np.errstate(all="ignore"):
        around = np.where(np.isfinite(sides[0]) & np.isfinite(sides[1]), 0.5 * (sides[0] + sides[1]),
                          np.where(np.isfinite(sides[0]), sides[0], sides[1]))
    contrast = on - around
    med = _nan_median(contrast, axis=2)
    mad = 1.4826 * _nan_median(np.abs(contrast - med[:, :, None]), axis=2)
    noise = np.maximum(np.nan_to_num(mad, nan=0.0), np.sqrt(np.clip(np.nan_to_num(level), 0, None) + 1.0))
    with np.errstate(all="ignore"):
        peak = np.nanmax(np.where(np.isfinite(contrast), contrast, -np.inf), axis=2) - med
    return np.nan_to_num(peak / noise, nan=0.0, neginf=0.0, posinf=0.0).reshape(B, T, -1)


@dataclass(frozen=True, eq=False)
class SearchResult:
    """Best template matches per frame.

    Attributes
    ----------
    has_signal : (B,) bool, some SL ring holds a peak above ``min_significance``.
    significance : (B,) the largest ring significance (`localised_significance`) over the candidate
        lattice constants.
    lattice_constant : (B,) SL lattice constant of the best match (A), ``match_lattice_constant[:, 0]``.
    orientation : (B, T) (3, 3) SL crystal -> lab of the T best matches, ``R_e3(phi) R0``.
    zone_axis : (B, T, 3) unit SL crystal direction of each match's template (along the beam).
    inplane_deg : (B, T) in-plane angle ``phi`` about the beam (deg).
    score : (B, T) cosine similarity of the match (0..1), best first.
    match_lattice_constant : (B, T) the SL lattice constant (A) each match was correlated at
        (None: ``lattice_constant`` for every match, as results built before it existed).
    """

    has_signal: np.ndarray
    significance: np.ndarray
    lattice_constant: np.ndarray
    orientation: np.ndarray
    zone_axis: np.ndarray
    inplane_deg: np.ndarray
    score: np.ndarray
    match_lattice_constant: np.ndarray | None = None

    def match_lattice_constants(self) -> np.ndarray:
        """(B, T) lattice constant of every match (A), filled from ``lattice_constant`` if unset."""
        if self.match_lattice_constant is not None:
            return np.asarray(self.match_lattice_constant, float)
        return np.repeat(np.asarray(self.lattice_constant, float).reshape(-1, 1), self.score.shape[1], axis=1)


def _ring_features(polar: np.ndarray, q: np.ndarray, lattice_constant: np.ndarray, shells: np.ndarray,
                   sigma_q: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compressed ring excess ``f`` (B, S, C), validity ``m`` (B, S, C) and significance (B,).

    ``f = sqrt(max(profile - median, 0) / (median + 1))`` (0 where masked) of `ring_profiles` at
    ``lattice_constant`` (B,) (A); significance is the largest `localised_significance` of the rings.
    A (B, T) ``lattice_constant`` gives (B, T, S, C) features, T lattice constants per frame.
    """
    a = np.asarray(lattice_constant, float)
    qs = TWO_PI * np.sqrt(np.asarray(shells, float)) / a[..., None]           # (B, [T,] S)
    prof, level = _ring_profiles_at(polar, q, qs.reshape(qs.shape[0], -1), sigma_q)
    significance = localised_significance(polar, q, a.reshape(a.shape[0], -1), shells, sigma_q,
                                          on_ring=(prof, level)).max(axis=(1, 2))
    f = np.sqrt(np.clip(np.nan_to_num(prof - level[:, :, None], nan=0.0), 0, None)
                / (np.nan_to_num(level, nan=0.0)[:, :, None] + 1.0))
    shape = qs.shape + (prof.shape[-1],)
    return f.reshape(shape), np.isfinite(prof).astype(np.float64).reshape(shape), significance


def _masked(polar: np.ndarray, q: np.ndarray, bank: TemplateBank, sigma_q: float, spike_sigma: float,
            pixels: np.ndarray | None = None) -> np.ndarray:
    """``polar`` with its `isolated_spikes` masked (peaks of the bank's mosaic and ``sigma_q``, bins
    of ``pixels`` pixels); as is for inf."""
    if not np.isfinite(spike_sigma):
        return polar
    return mask_spikes(polar, q, sigma_q=sigma_q, mosaic_deg=float(bank.key.get("mosaic_deg", 1.0)),
                       n_sigma=spike_sigma, pixels=pixels)


def _parabola_offset(y0: float, y1: float, y2: float) -> float:
    """Sub-bin offset (-0.5 .. 0.5) of the maximum of a parabola through three samples."""
    d2 = y0 - 2 * y1 + y2
    return float(np.clip(0.5 * (y0 - y2) / d2, -0.5, 0.5)) if d2 < -1e-12 else 0.0


def _real_pair(spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2S, F) float32 ``[re; im]`` and ``[im; re]`` of template spectra (K, S, F), for `_cross_spectrum`."""
    return (np.ascontiguousarray(np.concatenate([spec.real, spec.imag], 1), np.float32),
            np.ascontiguousarray(np.concatenate([spec.imag, spec.real], 1), np.float32))


def _cross_spectrum(x: np.ndarray, pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``sum_s conj(x[b, s, f]) T[k, s, f]`` (b, K, F) complex64 from `_real_pair` of ``T``.

    Two real float32 contractions over ``(re/im, s)`` (``conj(x) T = x_r T_r + x_i T_i + i (x_r T_i -
    x_i T_r)``): about twice as fast as one complex einsum, and no BLAS call (small multi-threaded
    GEMMs stall on a loaded 2-core machine).
    """
    xr, xi = x.real.astype(np.float32), x.imag.astype(np.float32)
    out = np.empty((x.shape[0], pair[0].shape[0], x.shape[-1]), np.complex64)
    out.real = np.einsum("bsf,ksf->bkf", np.concatenate([xr, xi], 1), pair[0])
    out.imag = np.einsum("bsf,ksf->bkf", np.concatenate([xr, -xi], 1), pair[1])
    return out


def _correlate(f: np.ndarray, m: np.ndarray, bank: TemplateBank, spec: tuple, spec2: tuple,
               n: int, sep_cos: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Template index (b, n), in-plane angle (deg, unwrapped) and score of the n distinct best.

    ``spec``, ``spec2``: `_real_pair` of `TemplateBank.spectra`.
    """
    C = bank.chi_deg.size
    num = np.fft.irfft(_cross_spectrum(np.fft.rfft(f, axis=-1), spec), n=C, axis=-1)
    den = np.fft.irfft(_cross_spectrum(np.fft.rfft(m, axis=-1), spec2), n=C, axis=-1)
    norm = np.sqrt(np.sum(f ** 2, axis=(1, 2)))[:, None, None]
    score = num / np.sqrt(np.maximum(den, 1e-6)) / np.maximum(norm, 1e-12)
    shift = np.argmax(score, axis=2)                                   # (b, K)
    best = np.take_along_axis(score, shift[..., None], 2)[..., 0]
    order = _distinct_best(best, bank.zone_axes, n, sep_cos)
    out_phi = np.zeros(order.shape)
    out_score = np.zeros(order.shape)
    for bi in range(order.shape[0]):
        for t, k in enumerate(order[bi]):
            s0 = shift[bi, k]
            y = score[bi, k, [(s0 - 1) % C, s0, (s0 + 1) % C]]
            out_phi[bi, t] = (s0 + _parabola_offset(*y)) * 360.0 / C
            out_score[bi, t] = y[1]
    return order, out_phi, out_score


def search_orientations(polar: np.ndarray, q: np.ndarray, bank: TemplateBank, *,
                        a_range: tuple[float, float], n_best: int = 3,
                        sigma_q: float = SearchSettings.ring_sigma_q,
                        min_significance: float = SearchSettings.min_significance, batch: int = 16,
                        min_separation_deg: float | None = None, n_lattice: int = SearchSettings.n_lattice,
                        lattice_separation: float = SearchSettings.lattice_separation,
                        lattice_constants: np.ndarray | None = None,
                        n_grid: int = SearchSettings.lattice_grid_points,
                        spike_sigma: float = SearchSettings.spike_sigma,
                        pixels: np.ndarray | None = None) -> SearchResult:
    """Match every frame against the template bank at several candidate lattice constants.

    Parameters
    ----------
    polar : (B, C, Q) polar images (mean counts per bin, NaN masked), chi rows as ``bank.chi_deg``.
    q : (Q,) q bin centres (1/A).
    bank : `build_template_bank` for the same chi grid.
    a_range : (a_min, a_max) of the SL lattice constant (A).
    n_best : matches kept per frame (distinct templates per lattice constant).
    sigma_q : SL radial peak sigma (1/A) for the ring extraction.
    min_significance : ring peak significance below which a frame has no signal.
    batch : frames correlated at once (memory ~ batch x K x C x 8 bytes).
    min_separation_deg : matches found at one lattice constant have zone axes at least this far
        apart (deg; default ``SearchSettings.match_separation_steps`` bank steps), so that the ``n_best`` candidates are distinct
        orientations and not the neighbours of one peak of the score (non-maximum suppression).
    n_lattice : candidate lattice constants per frame (`lattice_constant_candidates`); 1 gives
        the single estimate of `estimate_lattice_constant`.
    lattice_separation : candidate lattice constants differ by at least this fraction.
    lattice_constants : (B, N) lattice constants (A) to correlate at instead of the radial
        candidates (NaN: unused slot), e.g. those of a frame's fitted scan neighbours
        (`fits.scan.neighbours.neighbour_pass`); ``n_lattice`` and ``lattice_separation`` are then unused.
    n_grid : lattice constants of the radial score over ``a_range`` (`lattice_constant_score`).
    spike_sigma : bins that are `isolated_spikes` at this many Poisson sigma (hot pixels) are masked
        first (inf: none).
    pixels : (C, Q) detector pixels per bin for the spike mask (None: the noise of one pixel).

    Returns
    -------
    SearchResult
        The ``n_best`` best matches over all candidate lattice constants, ranked by score, each
        with the lattice constant it was correlated at (``match_lattice_constant``). A frame
        without signal (ring significance below ``min_significance`` at every candidate ``a``)
        is not correlated: its scores are NaN and its orientations meaningless.

    Notes
    -----
    Per frame, candidate ``a`` and template, ``c(s) = sum_{shell, chi} f(chi) t(chi + s) /
    sqrt(sum m(chi) t(chi + s)^2) / |f|`` with ``f = sqrt(max(profile - median, 0) / (median +
    1))`` of the rings at ``2 pi sqrt(n2) / a`` (0 where masked, ``m`` the validity), all three sums
    by FFT along chi (cross-correlation theorem). The best shift of each template is refined by a
    parabola; ``phi = s`` since ``R_e3(phi)`` maps the ring point at chi to chi - phi. The score is
    a cosine similarity for every ``a``, so matches at different ``a`` are ranked together.
    ``has_signal`` uses the largest ring significance against the radial surroundings
    (`localised_significance`) over the candidate ``a``.

    Validation: SL orientation within 5 deg (misorientation) for the five domains with Poisson
    noise on a 2 deg chi grid (measured 0.4-4.1 deg), and a within 1 % and orientation within
    3.5 deg for a compressed (a = 0.88 a0), 10 deg tilted green domain whose global radial
    maximum is the 111 -> 200 alias (measured 0.2 % and 2.6 deg; tests/fits/scan/test_search.py).
    Demo twin (13 x 13), the 82 in-domain, unmixed points that had signal before,
    best match after `refine_matches` with a within 1 % and orientation within 3 deg: interior
    (> 1 um from a boundary) 28 -> 29 of 37, boundary 18 -> 22 of 45 (single a -> 3 candidates);
    the right answer among the 4 matches: 33 -> 34 and 19 -> 27. A wrong a scored higher than
    the right one in 3 of 84 frames where both were candidates (near ties of the exact
    111/200 alias, at most 0.002 apart), so the cosine score is not biased towards a wrong a; multiplying it
    by the norm of the ring excess made that 6. ``has_signal``: 88 -> 96 frames, the 8 new ones
    in-domain boundary points.
    """
    if int(n_lattice) < 1:
        raise ValueError(f"search_orientations: n_lattice must be at least 1, got {n_lattice!r}; "
                         f"1 uses the single radial estimate, 3 (the default) covers the fcc shell "
                         f"aliases of compressed boundary points.")
    polar = np.asarray(polar, np.float64)
    if polar.ndim != 3 or polar.shape[1] != bank.chi_deg.size or polar.shape[2] != np.size(q):
        raise ValueError(f"polar images have shape {polar.shape}; expected (frames, {bank.chi_deg.size} "
                         f"chi, {np.size(q)} q) to match the template bank and q; build the bank "
                         f"on the chi grid of /entry/reduction/chi.")
    B = polar.shape[0]
    polar = _masked(polar, q, bank, sigma_q, spike_sigma, pixels)
    spec, spec2 = (_real_pair(x) for x in bank.spectra())
    if lattice_constants is None:
        a_cand, _ = lattice_constant_candidates(polar, q, a_range, n_candidates=n_lattice,
                                                min_separation=lattice_separation, shells=tuple(bank.shells),
                                                sigma_q=sigma_q, n_grid=n_grid)
    else:
        a_cand = np.asarray(lattice_constants, float)
        if a_cand.ndim != 2 or a_cand.shape[0] != B:
            raise ValueError(f"search_orientations: lattice_constants has shape {a_cand.shape}; expected "
                             f"({B}, N), N lattice constants (A, NaN for unused slots) per frame.")
    N = a_cand.shape[1]
    T = max(1, min(int(n_best), bank.size))
    sep = (SearchSettings.match_separation_steps * float(bank.key["step_deg"]) if min_separation_deg is None
           else float(min_separation_deg))
    sep_cos = np.cos(np.radians(sep))
    all_k = np.zeros((B, N, T), int)
    all_phi = np.zeros((B, N, T))
    all_score = np.full((B, N, T), -np.inf)
    significance = np.zeros(B)
    for start in range(0, B, batch):
        # the rings of every candidate a first: a frame without signal at any of them is not correlated
        feats = []
        for n in range(N):
            rows = start + np.flatnonzero(np.isfinite(a_cand[start:start + batch, n]))
            if rows.size:
                f, m, sig = _ring_features(polar[rows], q, a_cand[rows, n], bank.shells, sigma_q)
                significance[rows] = np.maximum(significance[rows], sig)
                feats.append((n, rows, f, m))
        for n, rows, f, m in feats:
            keep = significance[rows] >= min_significance
            if keep.any():
                r = rows[keep]
                all_k[r, n], all_phi[r, n], all_score[r, n] = _correlate(f[keep], m[keep], bank, spec, spec2, T,
                                                                         sep_cos)
    # merge the candidates of every a, best score first (stable: ties keep the order of a)
    flat = np.argsort(-all_score.reshape(B, N * T), axis=1, kind="stable")[:, :T]
    all_a = np.repeat(a_cand[:, :, None], T, axis=2)
    out_k, phi, out_score, a_match = (np.take_along_axis(x.reshape(B, N * T), flat, axis=1)
                                      for x in (all_k, all_phi, all_score, all_a))
    phi = (phi + 180.0) % 360.0 - 180.0
    out_score[significance < min_significance] = np.nan                # not correlated: no signal
    rot = orientation.rotation_about_beam(phi) @ bank.bases[out_k]
    return SearchResult(has_signal=significance >= min_significance, significance=significance,
                        lattice_constant=a_match[:, 0].copy(), orientation=rot,
                        zone_axis=bank.zone_axes[out_k], inplane_deg=phi, score=out_score,
                        match_lattice_constant=a_match)


def _distinct_best(best: np.ndarray, zone_axes: np.ndarray, n: int, sep_cos: float) -> np.ndarray:
    """(b, n) template indices, best score first, zone axes more than ``acos(sep_cos)`` apart.

    Greedy non-maximum suppression on the (b, K) scores; when fewer than ``n`` distinct maxima
    exist, the list is filled with the next best templates regardless of separation.
    """
    out = np.zeros((best.shape[0], n), int)
    ranked = np.argsort(-best, axis=1)
    for bi in range(best.shape[0]):
        kept: list[int] = []
        for k in ranked[bi]:
            if all(abs(float(zone_axes[k] @ zone_axes[j])) < sep_cos for j in kept):
                kept.append(int(k))
                if len(kept) == n:
                    break
        rest = [int(k) for k in ranked[bi] if int(k) not in kept][: n - len(kept)]
        out[bi] = (kept + rest)[:n]
    return out


def _cone_directions(center: np.ndarray, radius_deg: float, step_deg: float) -> np.ndarray:
    """Unit directions on a square grid of ``step_deg`` within ``radius_deg`` of ``center``."""
    c = center / np.linalg.norm(center)
    e1 = np.cross(c, [1.0, 0.0, 0.0] if abs(c[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(c, e1)
    n = int(np.ceil(radius_deg / step_deg))
    g = np.radians(np.arange(-n, n + 1) * step_deg)
    x, y = np.meshgrid(g, g, indexing="ij")
    keep = np.hypot(x, y) <= np.radians(radius_deg) + 1e-12
    d = c[None, :] + x[keep][:, None] * e1[None, :] + y[keep][:, None] * e2[None, :]
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def refine_matches(polar: np.ndarray, q: np.ndarray, result: SearchResult, bank: TemplateBank, *,
                   radius_deg: float | None = None, step_deg: float = SearchSettings.refine_step_deg,
                   mosaic_deg: float | None = None, sigma_q: float = SearchSettings.ring_sigma_q,
                   n_refine: int = 1, batch: int = 16, spike_sigma: float = SearchSettings.spike_sigma,
                   pixels: np.ndarray | None = None) -> SearchResult:
    """Refine the best ``n_refine`` matches of every frame on a finer cone of zone axes around each.

    Parameters
    ----------
    polar : (B, C, Q) polar images, as given to `search_orientations`.
    q : (Q,) q bin centres (1/A).
    result : `search_orientations` of the same frames.
    bank : the template bank of the search.
    radius_deg : cone radius around each match's zone axis (deg; default
        ``SearchSettings.refine_radius_steps`` bank steps).
    step_deg : spacing of the cone's directions (deg).
    mosaic_deg : angular sigma of the SL peaks (deg); default the bank's (``bank.key["mosaic_deg"]``).
    sigma_q : SL radial peak sigma (1/A) for the ring extraction.
    n_refine : matches refined per frame (the best ones).
    batch : frames whose ring profiles are extracted at once.
    spike_sigma, pixels : as `search_orientations`.

    Returns
    -------
    SearchResult
        ``result`` with every refined match that scores higher than its coarse match replaced,
        the first ``n_refine`` matches re-ordered by score and ``lattice_constant`` the best one's.

    Notes
    -----
    Templates are built on the fly for the cone's directions with the narrower angular sigma of
    the finer step, on the rings ``2 pi sqrt(n2) / a`` of each match's own lattice constant
    (``match_lattice_constant``), and the correlation of `search_orientations` is repeated. A
    refined match is kept only when its score beats the coarse one, so no score decreases.
    Frames without signal are left as they are. The cones of all matches of a frame are built in
    one `shell_signatures` call (only the chi bins near each member's ring crossing) and
    correlated in float64.

    Validation: keeps the orientation within 5 deg on the five domains, never lowers a score
    (tests/fits/scan/test_search.py). Demo twin (32 frames, 4 matches): the same
    matches as the direct evaluation over all members and chi bins (zone axis and in-plane angle
    within 1e-5 deg, score within 1e-7) at 11 instead of 160-260 ms per frame.
    """
    polar = _masked(np.asarray(polar, np.float64), q, bank, sigma_q, spike_sigma, pixels)
    C = bank.chi_deg.size
    radius = float(radius_deg if radius_deg is not None
                   else SearchSettings.refine_radius_steps * float(bank.key["step_deg"]))
    mosaic = float(bank.key.get("mosaic_deg", 1.0) if mosaic_deg is None else mosaic_deg)
    wavelength = float(bank.key["wavelength_A"])
    a_match = result.match_lattice_constants()
    sigma = np.radians(np.hypot(max(mosaic, 0.1), 0.5 * step_deg) + 0.5 * 360.0 / C)
    rot = result.orientation.copy()
    zone = result.zone_axis.copy()
    phi_out = result.inplane_deg.copy()
    score_out = result.score.copy()
    a_out = a_match.copy()
    n_ref = max(1, min(int(n_refine), rot.shape[1]))
    rows = np.flatnonzero(result.has_signal)
    for start in range(0, rows.size, batch):
        fr = rows[start:start + batch]
        f_all, m_all, _ = _ring_features(polar[fr], q, a_match[fr, :n_ref], bank.shells, sigma_q)  # (b, T, S, C)
        for i, b in enumerate(fr):
            dirs = np.stack([_cone_directions(result.zone_axis[b, t], radius, step_deg) for t in range(n_ref)])
            D = dirs.shape[1]                                              # the same cone for every t
            bases = base_orientations(dirs.reshape(-1, 3))
            alpha = ewald_angle(TWO_PI * np.sqrt(bank.shells.astype(float))[None, :] / a_match[b, :n_ref, None],
                                wavelength)                                 # (T, S)
            sig = shell_signatures(bases, np.repeat(alpha, D, axis=0), bank.chi_deg, sigma, bank.shells)
            sig = sig.reshape(n_ref, D, -1, C)
            F = np.conj(np.fft.rfft(f_all[i], axis=-1))
            M = np.conj(np.fft.rfft(m_all[i], axis=-1))
            num = np.fft.irfft(np.einsum("tsf,tksf->tkf", F, np.fft.rfft(sig, axis=-1)), n=C, axis=-1)
            den = np.fft.irfft(np.einsum("tsf,tksf->tkf", M, np.fft.rfft(sig ** 2, axis=-1)), n=C, axis=-1)
            norm = np.maximum(np.sqrt(np.sum(f_all[i] ** 2, axis=(1, 2))), 1e-12)[:, None, None]
            score = num / np.sqrt(np.maximum(den, 1e-6)) / norm                # (T, D, C)
            for t in range(n_ref):
                k, s0 = np.unravel_index(np.argmax(score[t]), score[t].shape)
                y1 = float(score[t, k, s0])
                if not y1 > score_out[b, t]:
                    continue                                    # keep the coarse match
                off = _parabola_offset(score[t, k, (s0 - 1) % C], y1, score[t, k, (s0 + 1) % C])
                phi = ((s0 + off) * 360.0 / C + 180.0) % 360.0 - 180.0
                rot[b, t] = orientation.rotation_about_beam(phi) @ bases[t * D + k]
                zone[b, t] = dirs[t, k]
                phi_out[b, t] = phi
                score_out[b, t] = y1
            order = np.argsort(-score_out[b, :n_ref], kind="stable")
            for arr in (rot, zone, phi_out, score_out, a_out):
                arr[b, :n_ref] = arr[b, :n_ref][order]
    return SearchResult(has_signal=result.has_signal, significance=result.significance,
                        lattice_constant=a_out[:, 0].copy(), orientation=rot, zone_axis=zone,
                        inplane_deg=phi_out, score=score_out, match_lattice_constant=a_out)
