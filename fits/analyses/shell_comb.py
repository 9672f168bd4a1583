"""Which fcc shell a superlattice ring is: the comb of all shells and the angles between spots.

Contract
--------
* `fcc_shells` lists the shells ``N = h^2 + k^2 + l^2`` (111, 200, 220, 311, 222, ...).
* `spot_profiles` turns polar images into the radial profile of their Bragg spots (Friedel
  pairs only, noise units); `radial_spot_profiles` does the same from radial profiles alone.
* `friedel_axes` lists the Friedel pairs of a polar image as axes: ``q``, the pair's azimuth
  modulo 180 degrees and its significance.
* `shell_zone_axes` and `axis_misfit` hold the geometry of one shell seen along a zone axis:
  the in-plane angles of the members lying in the zone, and how far a set of measured axes
  is from any rotation of them.
* `fit_lattice_comb` gives one lattice constant per point from all shells at once and
  "ambiguous" (NaN) when another indexing explains the spots as well; with the Friedel axes
  it decides such points when the angles between the pairs fit exactly one of the indexings
  (a lone 111 ring shows pairs 70.5 degrees apart, a 200 ring 90 degrees), and keeps
  "ambiguous" when one pair, parallel pairs or angles both indexings allow leave it open.

Units: q in 1/A, lattice constants in Angstrom, angles in radians inside (degrees only in the
``*_deg`` arguments); chi is pyFAI's azimuth (``docs/conventions.md``).
"""
from __future__ import annotations

import functools
import itertools
import warnings

import numpy as np

from fits.analyses.arguments import finite_number, positive_int
from fits.analyses.peak_profile import fit_profiles
from fits.status import FitStatus
from xmodel.lattice import fcc_reflections

__all__ = [
    "axis_misfit",
    "fcc_shells",
    "fit_lattice_comb",
    "friedel_axes",
    "friedel_spots",
    "radial_spot_profiles",
    "shell_zone_axes",
    "spot_profiles",
]

_OK, _NO_PEAK, _AMBIGUOUS = FitStatus.OK.code, FitStatus.NO_PEAK.code, FitStatus.AMBIGUOUS.code


#: largest ``q a / 2 pi`` of `fcc_shells` (q = 1.2 1/A at a = 156 A, far beyond any SL ring)
FCC_SHELLS_MAX = 30.0


def fcc_shells(q_max_times_a: float) -> tuple[np.ndarray, list[str]]:
    """The fcc shells ``N = h^2 + k^2 + l^2`` (h, k, l all even or all odd) up to ``q a / 2 pi``.

    Parameters
    ----------
    q_max_times_a
        Largest ``q a / (2 pi)`` kept (dimensionless; ``q`` in 1/A, ``a`` in A).

    Returns
    -------
    (N, names)
        ``N`` (int array, ascending) and one representative ``"hkl"`` name per shell.

    Notes
    -----
    fcc extinction rule (Table S1). Validation: 3, 4, 8, 11, 12, 16, 19, 20 (111 ... 420).
    """
    q_max_times_a = finite_number(q_max_times_a, "q_max_times_a", gt=0.0, le=FCC_SHELLS_MAX,
                                  unit="q a / 2 pi, dimensionless", example="0.2 * 150 / (2 pi) = 4.8")
    hmax = int(np.ceil(q_max_times_a)) + 1
    found: dict[int, str] = {}
    for h in range(hmax, -1, -1):
        for k in range(h, -1, -1):
            for m in range(k, -1, -1):
                n = h * h + k * k + m * m
                if n == 0 or np.sqrt(n) > q_max_times_a or len({h % 2, k % 2, m % 2}) != 1:
                    continue
                found.setdefault(n, f"{h}{k}{m}")
    keys = sorted(found)
    return np.array(keys, int), [found[n] for n in keys]


def _friedel_significance(polar: np.ndarray, npix: np.ndarray):
    """Excess counts, variance and 3 x 3-bin significance of the spots of polar images."""
    from scipy.ndimage import uniform_filter

    pol = np.asarray(polar, float)
    npix = np.asarray(npix, float)
    valid = (npix > 0)[None] & np.isfinite(pol)
    p = np.where(valid, pol, np.nan)
    # the 90th percentile over chi of the valid bins (numpy's linear rule, as nanpercentile, but
    # by one sort: nanpercentile loops over the (frame, q) slices)
    srt = np.sort(np.where(valid, pol, np.inf), axis=1)
    n_valid = valid.sum(axis=1, keepdims=True)
    pos = 0.9 * np.maximum(n_valid - 1, 0)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, np.maximum(n_valid - 1, 0))
    v0, v1 = np.take_along_axis(srt, i0, axis=1), np.take_along_axis(srt, i1, axis=1)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p90 = np.where(n_valid > 0, v0 + (pos - i0) * (v1 - v0), np.nan)
        bg = np.nanmean(np.where(p <= p90, p, np.nan), axis=1)
    bg = np.where(np.isfinite(bg), bg, 0.0)
    exc = np.where(valid, npix * (np.nan_to_num(pol) - bg[:, None, :]), 0.0)
    var = np.where(valid, npix * np.maximum(bg[:, None, :], 0.0), 0.0)
    box = lambda x: uniform_filter(x, size=(1, 3, 3), mode=("nearest", "wrap", "nearest")) * 9
    # a floor of one count per 3 x 3 box keeps empty rings from giving infinite significance
    z = box(exc) / np.sqrt(np.maximum(box(var), 1.0))
    half = z.shape[1] // 2
    z_pair = np.minimum(z, np.roll(z, half, axis=1))
    return exc, var, z_pair


def spot_profiles(polar: np.ndarray, npix: np.ndarray, *, z_min: float = 5.0) -> np.ndarray:
    """The Bragg-spot part of polar images as a radial profile in noise units.

    Parameters
    ----------
    polar
        Mean counts per pixel of each (chi, q) bin, shape ``(N, n_chi, n_q)``
        (``/entry/reduction/polar``), chi spanning 360 degrees in equal bins.
    npix
        Pixels per bin, shape ``(n_chi, n_q)`` (``/entry/reduction/counts``); 0 = no data.
    z_min
        Significance (Poisson sigma, 3 x 3 bins summed) a spot and its Friedel mate at
        ``chi + 180 deg`` must both reach.

    Returns
    -------
    numpy.ndarray
        Shape ``(N, n_q)``: per q the excess counts of the accepted spots summed over chi,
        divided by the Poisson sigma of the ring's total counts (dimensionless, 0 = no spot).

    Notes
    -----
    The isotropic part of each ring (form factor, diffuse SL term) is the mean over chi of the
    bins below the ring's 90th percentile; spots are 3 x 3-bin excesses above it of at least
    ``z_min`` Poisson sigma, kept only when the Friedel mate (``-G`` at ``chi + 180 deg``, which
    the flat small-angle Ewald sphere shows together with ``G``) is also seen. Validation: the
    synthetic demo twin (empty points give no spot) and tests/fits/analyses/test_shell_comb.py.
    """
    return _profiles_of(*_friedel_significance(polar, npix), z_min)


def _profiles_of(exc: np.ndarray, var: np.ndarray, z_pair: np.ndarray, z_min: float) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    mask = binary_dilation(z_pair > z_min, structure=np.ones((1, 3, 3), bool))
    ring_sigma = np.sqrt(np.maximum(var.sum(axis=1), 1.0))
    return np.where(mask, exc, 0.0).sum(axis=1) / ring_sigma


def friedel_axes(polar: np.ndarray, npix: np.ndarray, q: np.ndarray, chi_deg: np.ndarray, *,
                 z_min: float = 5.0) -> list[np.ndarray]:
    """The Friedel pairs of polar images as axes on their rings.

    Parameters
    ----------
    polar, npix, z_min
        As `spot_profiles` (``polar`` shape ``(N, n_chi, n_q)``).
    q
        Bin centres, 1/A, shape ``(n_q,)``.
    chi_deg
        Azimuth bin centres, degrees, shape ``(n_chi,)`` (``/entry/reduction/chi``), equal
        bins over 360 degrees.

    Returns
    -------
    list of numpy.ndarray
        One array per frame, shape ``(n_pairs, 3)``: ``q`` (1/A), the axis azimuth
        ``chi mod pi`` (rad, in ``[0, pi)``) and the pair's significance (the weaker spot's,
        Poisson sigma), strongest first; an empty ``(0, 3)`` array where no pair is seen.

    Notes
    -----
    ``G`` and ``-G`` lie at ``chi`` and ``chi + pi`` on the flat small-angle Ewald sphere, so a
    pair is one axis. Pairs are the local maxima (5 x 5 bins) of the pair significance
    ``min(z(chi), z(chi + pi))`` above ``z_min``; position by the vertex of the parabola
    through the maximum and its two neighbours, in chi and in q. Validation: synthetic polar images with
    pairs at known azimuths (tests/fits/analyses/test_shell_comb.py).
    """
    return _axes_of(_friedel_significance(polar, npix)[2], q, chi_deg, z_min)


def friedel_spots(polar: np.ndarray, npix: np.ndarray, q: np.ndarray, chi_deg: np.ndarray, *,
                  z_min: float = 5.0) -> tuple[np.ndarray, list[np.ndarray]]:
    """`spot_profiles` and `friedel_axes` of the same polar images, computing the spots once.

    Parameters and Returns as those two functions: ``(profiles (N, n_q), axes list)``.
    Notes and Validation there.
    """
    exc, var, z_pair = _friedel_significance(polar, npix)
    return _profiles_of(exc, var, z_pair, z_min), _axes_of(z_pair, q, chi_deg, z_min)


def _vertex(y: np.ndarray) -> float:
    """Offset (bins, within +-0.5) of the parabola's vertex through three samples about a maximum."""
    den = y[0] - 2 * y[1] + y[2]
    return float(np.clip(0.5 * (y[0] - y[2]) / den, -0.5, 0.5)) if den < 0 else 0.0


def _axes_of(z_pair: np.ndarray, q: np.ndarray, chi_deg: np.ndarray, z_min: float) -> list[np.ndarray]:
    from scipy.ndimage import maximum_filter

    q = np.asarray(q, float)
    chi = np.radians(np.asarray(chi_deg, float))
    n_chi = z_pair.shape[1]
    if n_chi % 2 or q.size != z_pair.shape[2]:
        raise ValueError(f"polar images of shape {z_pair.shape[1:]} (chi, q) need an even number of chi "
                         f"bins over 360 degrees and one q per column (got {chi.size} chi, {q.size} q); "
                         f"pass /entry/reduction/chi and q with the polar images.")
    half = z_pair[:, :n_chi // 2]         # z_pair repeats after pi: one half holds every axis
    peak = (half == maximum_filter(half, size=(1, 5, 5), mode=("nearest", "wrap", "nearest"))) & (half > z_min)
    dchi = 2 * np.pi / n_chi
    out = []
    for i in range(half.shape[0]):
        rows = []
        for ic, iq in zip(*np.nonzero(peak[i])):
            c = chi[ic] + dchi * _vertex(half[i, (ic + np.arange(-1, 2)) % half.shape[1], iq])
            if 0 < iq < q.size - 1:
                qq = q[iq] + 0.5 * (q[iq + 1] - q[iq - 1]) * _vertex(half[i, ic, iq - 1:iq + 2])
            else:
                qq = q[iq]
            rows.append((float(qq), float(c % np.pi), float(half[i, ic, iq])))
        arr = np.array(sorted(rows, key=lambda r: -r[2]), float).reshape(-1, 3)
        out.append(arr)
    return out


def radial_spot_profiles(radial: np.ndarray, *, width_bins: int = 15) -> np.ndarray:
    """Peak part of radial profiles in noise units, for scans reduced without polar images.

    Parameters
    ----------
    radial
        Radial profiles, shape ``(N, n_q)`` (any intensity unit).
    width_bins
        Running-median window (q bins) that estimates the smooth background.

    Returns
    -------
    numpy.ndarray
        ``(radial - running median)`` divided by its median absolute deviation (x 1.4826),
        negative values set to 0, shape ``(N, n_q)``.

    Notes
    -----
    Robust scale (Rousseeuw & Croux 1993, doi:10.1080/01621459.1993.10476408).
    Validation: synthetic profiles in tests/fits/analyses/test_qmap.py.
    """
    from scipy.ndimage import median_filter

    width_bins = positive_int(width_bins, "width_bins", example="15")
    y = np.nan_to_num(np.atleast_2d(np.asarray(radial, float)))
    r = y - median_filter(y, size=(1, width_bins), mode="nearest")
    mad = 1.4826 * np.median(np.abs(r - np.median(r, axis=1, keepdims=True)), axis=1, keepdims=True)
    return np.maximum(r, 0.0) / np.maximum(mad, 1e-30)


def _shell_members(n_shell: int) -> np.ndarray:
    """One member ``hkl`` per axis (``+-G``) of the fcc shell ``N``, shape ``(M, 3)``."""
    n_shell = int(n_shell)
    members = fcc_reflections(2 * np.pi, np.sqrt(n_shell) * (1 + 1e-9)) if n_shell > 0 else np.zeros((0, 3), int)
    members = members[np.sum(members ** 2, axis=1) == n_shell]
    if members.size == 0:
        raise ValueError(f"no fcc reflection has h^2 + k^2 + l^2 = {n_shell!r}; valid shells are "
                         f"{fcc_shells(5.0)[0].tolist()} ... (h, k, l all even or all odd).")
    return np.array(sorted({max(tuple(g), tuple(-g)) for g in members}))


@functools.lru_cache(maxsize=256)
def _zones(shells: tuple[int, ...]) -> tuple[tuple[tuple[int, int, int], tuple[np.ndarray, ...]], ...]:
    """Zones holding two non-parallel axes of the given shells, with each shell's in-plane axis angles."""
    members = [_shell_members(nn) for nn in shells]
    every = np.concatenate(members)
    zones = set()
    for g1, g2 in itertools.combinations(every, 2):
        z = np.cross(g1, g2)
        if not np.any(z):
            continue
        z = z // np.gcd.reduce(np.abs(z))
        zones.add(max(tuple(int(x) for x in z), tuple(int(-x) for x in z)))
    out = []
    for zone in sorted(zones, key=lambda z: (sum(x * x for x in z), z)):
        zv = np.asarray(zone, float) / np.linalg.norm(zone)
        ref = np.eye(3)[np.argmin(np.abs(zv))]
        e1 = ref - zv * (ref @ zv)
        e1 /= np.linalg.norm(e1)
        e2 = np.cross(zv, e1)
        per = []
        for m in members:
            inz = m[m @ np.asarray(zone) == 0].astype(float)
            per.append(np.sort(np.arctan2(inz @ e2, inz @ e1) % np.pi))
        if all(t.size for t in per):
            out.append((zone, tuple(per)))
    return tuple(out)


def shell_zone_axes(n_shell: int) -> tuple[tuple[tuple[int, int, int], np.ndarray], ...]:
    """The zones holding two or more axes of an fcc shell, with the axes' in-plane angles.

    Parameters
    ----------
    n_shell
        ``N = h^2 + k^2 + l^2`` of an fcc shell (3 = 111, 4 = 200, 8 = 220, 11 = 311, ...).

    Returns
    -------
    tuple of (zone, angles)
        ``zone`` the axis ``[u, v, w]`` (smallest integers) and ``angles`` the in-plane
        azimuths (rad, in ``[0, pi)``, in a fixed right-handed basis of the plane normal to
        the zone) of the members ``+-hkl`` of the shell with ``hkl . uvw = 0``.

    Raises
    ------
    ValueError
        If no fcc reflection has ``h^2 + k^2 + l^2 = n_shell``.

    Notes
    -----
    A zone seen along the beam shows the members perpendicular to it (Weiss zone law
    ``h u + k v + l w = 0``, e.g. Cullity, Elements of X-ray Diffraction, 2.6); every zone with
    two members is the cross product of two of them. Validation: the axis angles of 111 are
    70.53 deg, of 200 90 deg, of 220 60 and 90 deg, of 311 35.10, 50.48, 62.96 and 84.78 deg
    (``arccos`` of the members' dot products; tests/fits/analyses/test_shell_comb.py).
    """
    return tuple((zone, per[0]) for zone, per in _zones((int(n_shell),)))


def _wrap_pi(x):
    """Axis difference wrapped to ``[-pi/2, pi/2)``."""
    return (x + np.pi / 2) % np.pi - np.pi / 2


def axis_misfit(shells: int | np.ndarray, axes_rad: np.ndarray) -> float:
    """How far measured Friedel axes are from the members of fcc shells in one zone (rad).

    Parameters
    ----------
    shells
        The shell ``N = h^2 + k^2 + l^2`` of every axis, shape ``(n,)``, or one ``N`` for all
        (axes on one ring).
    axes_rad
        Azimuths of the Friedel pairs, rad (any branch; an axis is taken modulo pi), shape
        ``(n,)``, ``n >= 2``, distinct (shell, axis) entries.

    Returns
    -------
    float
        The smallest, over the zones holding members of every shell, in-plane rotations and
        both handednesses, of the largest angle between a measured axis and the nearest member
        axis of its shell (rad); 0 = a perfect fit. ``inf`` for fewer than two axes (nothing to
        compare) or when no zone holds all the shells.

    Notes
    -----
    The reflections visible at once lie in the plane normal to the beam, so they belong to the
    zone along the beam (zone law, Cullity 2.6) and their azimuths are the members' in-plane
    angles up to a rotation and a mirror. One rotation anchors the first axis on each member
    of its shell in turn; then it is shifted to the middle of the residual range (the minimax
    fit for that assignment). Validation: exact member azimuths give 0; a 111 pair (70.53 deg)
    misses 200 by 9.7 deg (tests/fits/analyses/test_shell_comb.py).
    """
    x = np.asarray(axes_rad, float).ravel() % np.pi
    nn = np.broadcast_to(np.asarray(shells, int), x.shape)
    if x.size < 2:
        return float("inf")
    kinds = tuple(sorted({int(v) for v in nn}))
    idx = np.array([kinds.index(int(v)) for v in nn])
    best = np.inf
    sign = np.array([1.0, -1.0])[:, None]
    for _, per in _zones(kinds):
        phi0 = x[0] - sign * per[idx[0]][None, :]                         # (handedness, anchor)
        r = np.empty((x.size,) + phi0.shape)
        for i in range(x.size):
            d = _wrap_pi(x[i] - phi0[..., None] - sign[..., None] * per[idx[i]][None, None, :])
            r[i] = np.take_along_axis(d, np.argmin(np.abs(d), axis=-1)[..., None], axis=-1)[..., 0]
        half_range = 0.5 * (r.max(axis=0) - r.min(axis=0))                 # minimax after the shift
        best = min(best, float(half_range.min()))
    return best


@functools.lru_cache(maxsize=256)
def _chance_fit(shells: tuple[int, ...], tol: float, chance_max: float, parallel: float, n_draw: int = 200) -> bool:
    """Whether non-parallel random azimuths (same shells) pass `axis_misfit` within ``tol`` at most
    ``chance_max`` of the time: exactly for two axes, by ``n_draw`` seeded draws for more."""
    if len(shells) == 2:
        kinds = tuple(sorted(set(shells)))
        i0, i1 = kinds.index(shells[0]), kinds.index(shells[1])
        alpha = np.concatenate([np.abs(_wrap_pi(per[i0][:, None] - per[i1][None, :])).ravel()
                                for _, per in _zones(kinds)])                # pair angles, [0, pi/2]
        grid = np.linspace(parallel, np.pi / 2, 2001)                       # uniform folded angle
        hit = np.min(np.abs(grid[:, None] - np.unique(np.round(alpha, 9))[None, :]), axis=1) <= 2 * tol
        return float(hit.mean()) <= chance_max
    rng = np.random.default_rng(len(shells) * 1000 + sum(shells))
    hits = n = 0
    while n < n_draw:
        x = rng.uniform(0.0, np.pi, len(shells))
        if np.max(np.abs(_wrap_pi(x - x[0]))) <= parallel:
            continue
        n += 1
        hits += axis_misfit(np.array(shells), x) <= tol
        if hits > chance_max * n_draw:      # already too common: stop early
            return False
    return True


def _angle_verdict(q_spots: np.ndarray, axes: np.ndarray, a: float, n_shell_all: np.ndarray, q_tol: float,
                   tol: float, refute: float, merge: float, chance_max: float) -> int:
    """+1 when the pairs' angles confirm lattice ``a``, -1 when they refute it, 0 undecided.

    Confirmation needs every pair indexed by a shell of ``a``, two non-parallel axes, a misfit
    within ``tol`` and angles that random azimuths would fit at most ``chance_max`` of the time.
    """
    if q_spots.size == 0:
        return 0
    qn = 2 * np.pi * np.sqrt(n_shell_all) / a
    dist = np.abs(np.log(q_spots[:, None] / qn[None, :]))
    j = np.argmin(dist, axis=1)
    near = dist[np.arange(q_spots.size), j] < q_tol
    shells, kept = [], []
    for nj in np.unique(j[near]):
        x = np.sort(axes[near & (j == nj)] % np.pi)
        keep = [x[0]]   # merge the maxima of one elongated spot (members of a zone are >= 25 deg apart)
        for v in x[1:]:
            if abs(_wrap_pi(v - keep[-1])) > merge:
                keep.append(v)
        if len(keep) > 1 and abs(_wrap_pi(keep[-1] - keep[0])) <= merge:
            keep.pop()
        shells += [int(n_shell_all[nj])] * len(keep)
        kept += keep
    if len(kept) < 2:
        return 0
    m = axis_misfit(np.array(shells), np.array(kept))
    if m > refute:
        return -1
    spread = np.max(np.abs(_wrap_pi(np.array(kept) - kept[0])))
    if m <= tol and np.all(near) and spread > merge and _chance_fit(tuple(shells), tol, chance_max, merge):
        return 1
    return 0


def _refine(q: np.ndarray, S: np.ndarray, a0: np.ndarray, N: np.ndarray, sigma_rel: float, shell_window: float):
    """Fit every shell the comb at ``a0`` predicts; inverse-variance mean of the shells' ``a``."""

    n = S.shape[0]
    ok_q = np.isfinite(q) & (q > 0)
    q_lo, q_hi = float(q[ok_q].min()), float(q[ok_q].max())
    u = np.log(q[ok_q])
    du = float(np.median(np.diff(u)))
    ugrid = np.arange(-2 * shell_window, 2 * shell_window + du / 2, du / 2)
    shell_c = np.full((n, N.size), np.nan)
    shell_e = np.full((n, N.size), np.nan)
    for j, nj in enumerate(N):
        qj = 2 * np.pi * np.sqrt(nj) / a0
        use = (qj * (1 - shell_window) > q_lo) & (qj * (1 + shell_window) < q_hi)
        if not np.any(use):
            continue
        rows = np.nonzero(use)[0]
        prof = np.array([np.interp(np.log(qj[r]) + ugrid, u, np.nan_to_num(S[r, ok_q])) for r in rows])
        res = fit_profiles(ugrid, prof, (-shell_window, shell_window), background="constant",
                           min_points=6, snr_min=3.0)
        good = (res["status"] == _OK) & (np.abs(res["center"]) < sigma_rel)
        shell_c[rows[good], j] = qj[rows[good]] * np.exp(res["center"][good])
        shell_e[rows[good], j] = shell_c[rows[good], j] * res["center_err"][good]
    a_shell = 2 * np.pi * np.sqrt(N)[None, :] / shell_c
    a_err = np.hypot(a_shell * shell_e / shell_c, 1e-3 * a_shell)   # 0.1 % floor per shell
    w = np.where(np.isfinite(a_shell) & (a_err > 0), 1.0 / np.where(a_err > 0, a_err, 1.0) ** 2, 0.0)
    n_shells = np.count_nonzero(w > 0, axis=1)
    with np.errstate(all="ignore"):
        a_mean = np.sum(w * np.nan_to_num(a_shell), axis=1) / np.sum(w, axis=1)
        chi2 = np.sum(w * (np.nan_to_num(a_shell) - a_mean[:, None]) ** 2, axis=1)
        a_sd = np.sqrt(1.0 / np.sum(w, axis=1) * np.maximum(1.0, chi2 / np.maximum(n_shells - 1, 1)))
    a_fin = np.where(n_shells > 0, a_mean, a0)
    a_sd = np.where(n_shells > 0, a_sd, a0 * 1e-3)
    return a_fin, a_sd, n_shells, shell_c, shell_e


def fit_lattice_comb(q: np.ndarray, spots: np.ndarray, *, a_range: tuple[float, float] = (127.5, 156.0),
                     sigma_rel: float = 0.011, score_min: float = 50.0, evidence_min: float = 25.0,
                     alias_separation: float = 0.03, shell_window: float = 0.025,
                     axes: list[np.ndarray] | None = None, angle_tolerance_deg: float = 1.0,
                     angle_refute_deg: float = 3.0, chance_max: float = 0.25,
                     prior_lattice_constant: np.ndarray | None = None, prior_tolerance: float = 0.015
                     ) -> dict[str, np.ndarray]:
    """One lattice constant per profile from all fcc shells at once (111, 200, 220, 311, 222, ...).

    Parameters
    ----------
    q
        Bin centres, 1/A, shape ``(n_q,)``.
    spots
        Spot profiles in noise units (`spot_profiles`, `radial_spot_profiles`), ``(N, n_q)``.
    a_range
        Lattice constants searched, Angstrom (default -15 % .. +4 % of 150 A: compressed
        boundaries down to 13 % and the domains of Table S1).
    sigma_rel
        Relative Gaussian width of a shell in the comb (``sigma_q / q``).
    score_min
        Smallest comb score (sum of the shells' squared matched-filter significances) taken as
        an SL signal; below -> status NO_PEAK.
    evidence_min
        If an ``a`` more than ``alias_separation`` (relative) away scores within this of the
        best (a chi-square difference, 25 = 5 sigma), the comb does not decide between them
        (e.g. one shell at 0.0823 1/A: 111 of a = 132 A or 200 of a = 152 A).
    alias_separation
        Relative distance beyond which a second maximum counts as another indexing.
    shell_window
        Half width (relative q) of the per-shell Gaussian fits that refine ``a``.
    axes
        Friedel pairs per profile (`friedel_axes`: ``q`` 1/A, axis azimuth rad, significance),
        or None. With them, points the comb leaves open are decided by the angles between the
        pairs (on one ring and across rings: all visible reflections lie in the zone along the beam).
    angle_tolerance_deg
        An indexing is confirmed when it indexes every pair (``q`` within ``2 sigma_rel`` of one
        of its shells), two pairs are more than 5 degrees apart, and all pairs fit one zone of
        their shells within this (`axis_misfit`, degrees; the demo twin's single domains fit
        within 0.52).
    angle_refute_deg
        ... and refuted when the pairs miss every zone by more than this. The point is decided
        only when exactly one indexing is confirmed and every other one refuted; otherwise it
        stays "ambiguous" (one pair, parallel pairs such as 111 || 222 = 200 || 400, or angles
        both shells have, e.g. 90 deg for 200 and 220).
    chance_max
        Largest fraction of random (non-parallel) azimuths that the confirmed shells would
        also fit: shells with many zone angles (331 with 420, ...) confirm anything, so they
        decide nothing (a 111 pair: 0.05, a 311 pair: 0.19, 331 and 311 together: 0.29).
    prior_lattice_constant
        ``(N,)`` lattice constants from an independent measurement (A; NaN = none), e.g. the
        model fits of `fits.scan.driver` (``/entry/fits/lattice_constant``), which see the whole 2D
        pattern. A point the comb and the angles leave open is decided by it when exactly one
        candidate indexing lies within ``prior_tolerance`` (relative) of it and every other one
        more than ``alias_separation`` away; its ``a`` still comes from the spots.
    prior_tolerance
        See ``prior_lattice_constant``.

    Returns
    -------
    dict of numpy.ndarray
        ``lattice_constant``, ``lattice_constant_err`` (A), ``alias_lattice_constant`` (A, the
        best other indexing of an ambiguous point), ``comb_lattice_constant`` (A, the comb's
        best), ``score``, ``alias_ratio``, ``evidence`` (score minus the alias's score),
        ``n_shells`` (shells fitted with status ok), ``status`` (int8 `fits.status.FitStatus`
        codes: OK, NO_PEAK or AMBIGUOUS),
        ``decided_by_angles`` (bool), ``decided_by_prior`` (bool), ``shell_N`` (``(n_shell,)``) and ``shell_center``,
        ``shell_center_err`` (1/A, ``(N, n_shell)``, NaN = not seen). ``lattice_constant`` is
        NaN unless the status is OK.

    Raises
    ------
    ValueError
        If ``a_range`` is not increasing and positive, or ``axes`` has another length than
        ``spots``.

    Notes
    -----
    Matched filter of the fcc comb ``q_N = 2 pi sqrt(N) / a`` (Table S1) with non-negative
    shell amplitudes on a 0.1 % grid of ``a``; then each shell the best comb predicts is fitted
    by ``fits.analyses.peak_profile.fit_profiles`` (Gaussian + constant) in ``ln q`` and ``a`` is the
    inverse-variance mean of ``2 pi sqrt(N) / q_N`` (each with a 0.1 % error floor) over the
    shells found within ``sigma_rel`` of the prediction, its error scaled by ``sqrt(chi2/dof)``
    when the shells disagree. The candidates of an open point are the comb's local maxima
    within ``evidence_min`` of the best; each assigns the pairs to its shells (within
    ``2 sigma_rel``) and is judged by `axis_misfit` (zone law, Cullity 2.6).

    Validation
    ----------
    Synthetic profiles with the 111/200 alias, and synthetic pair sets decided by their angles
    (tests/fits/analyses/test_qmap.py, tests/fits/analyses/test_shell_comb.py); the demo twin: see the report in
    `fits.analyses.qmap.qmap_scan`.
    """
    q = np.asarray(q, float)
    S = np.atleast_2d(np.asarray(spots, float))
    lo, hi = float(a_range[0]), float(a_range[1])
    if not (0 < lo < hi):
        raise ValueError(f"a_range must be (a_lo, a_hi) in Angstrom with 0 < a_lo < a_hi, got {a_range!r}.")
    n = S.shape[0]
    prior = None
    if prior_lattice_constant is not None:
        prior = np.asarray(prior_lattice_constant, float).reshape(-1)
        if prior.size != n:
            raise ValueError(f"prior_lattice_constant has {prior.size} values but spots has {n} profiles; "
                             f"pass one lattice constant (A, NaN = none) per frame, in the same order.")
    if axes is not None and len(axes) != n:
        raise ValueError(f"axes has {len(axes)} entries but spots has {n} profiles; pass one `friedel_axes` "
                         f"array per frame, in the same order.")
    ok_q = np.isfinite(q) & (q > 0)
    q_lo, q_hi = float(q[ok_q].min()), float(q[ok_q].max())
    N, _ = fcc_shells(q_hi * hi / (2 * np.pi))
    agrid = np.exp(np.arange(np.log(lo), np.log(hi) + 5e-4, 1e-3))
    qc = 2 * np.pi * np.sqrt(N)[None, :] / agrid[:, None]                      # (n_a, n_shell)
    inside = (qc * (1 - 2 * sigma_rel) > q_lo) & (qc * (1 + 2 * sigma_rel) < q_hi)
    G = np.exp(-0.5 * ((q[None, None, :] - qc[..., None]) / (sigma_rel * qc[..., None])) ** 2)
    G *= inside[..., None]
    norm = np.sqrt(np.maximum(np.einsum("asq,asq->as", G, G), 1e-30))
    c = np.einsum("pq,asq->pas", np.nan_to_num(S), G) / norm[None]
    score_a = np.sum(np.maximum(c, 0.0) ** 2, axis=-1)                         # (N, n_a)
    best = np.argmax(score_a, axis=1)
    a0 = agrid[best]
    score = score_a[np.arange(n), best]
    far = np.abs(np.log(agrid[None, :] / a0[:, None])) > alias_separation
    alt_score = np.where(far, score_a, -np.inf)
    alt = np.argmax(alt_score, axis=1)
    ratio = np.where(score > 0, alt_score[np.arange(n), alt] / np.maximum(score, 1e-300), 0.0)
    evidence = score - alt_score[np.arange(n), alt]
    status = np.where(score < score_min, _NO_PEAK, np.where(evidence < evidence_min, _AMBIGUOUS, _OK))
    status = np.where(np.all(S == 0, axis=1) & (score <= 0), _NO_PEAK, status).astype(np.int8)
    decided = np.zeros(n, bool)
    a_pick = a0.copy()
    if axes is not None:
        tol, refute = np.radians(angle_tolerance_deg), np.radians(angle_refute_deg)
        # the comb's local maxima: one per indexing
        is_max = np.zeros_like(score_a, bool)
        is_max[:, 1:-1] = (score_a[:, 1:-1] >= score_a[:, :-2]) & (score_a[:, 1:-1] > score_a[:, 2:])
        for r in np.nonzero(status == _AMBIGUOUS)[0]:
            ax = np.asarray(axes[r], float).reshape(-1, 3)
            if ax.shape[0] < 2:
                continue
            cand = np.nonzero(is_max[r] & (score_a[r] >= score[r] - evidence_min))[0]
            cand = [i for i in cand[np.argsort(-score_a[r, cand])]]
            picked: list[int] = []
            for i in cand:                   # one candidate per indexing (maxima 3 % apart)
                if all(abs(np.log(agrid[i] / agrid[k])) > alias_separation for k in picked):
                    picked.append(i)
            verdict = [_angle_verdict(ax[:, 0], ax[:, 1], agrid[i], N, 2 * sigma_rel, tol, refute,
                                      merge=np.radians(5.0), chance_max=chance_max) for i in picked]
            if verdict.count(1) == 1 and verdict.count(-1) == len(verdict) - 1:
                a_pick[r] = agrid[picked[verdict.index(1)]]
                decided[r] = True
    status = np.where(decided, _OK, status).astype(np.int8)
    by_prior = np.zeros(n, bool)
    if prior is not None:
        is_max = np.zeros_like(score_a, bool)
        is_max[:, 1:-1] = (score_a[:, 1:-1] >= score_a[:, :-2]) & (score_a[:, 1:-1] > score_a[:, 2:])
        for r in np.nonzero((status == _AMBIGUOUS) & np.isfinite(prior))[0]:
            cand = np.nonzero(is_max[r] & (score_a[r] >= score[r] - evidence_min))[0]
            if cand.size == 0:
                continue
            d = np.abs(np.log(agrid[cand] / prior[r]))
            near = d <= prior_tolerance
            if np.count_nonzero(near) >= 1 and np.all(d[~near] > alias_separation) and \
                    np.ptp(agrid[cand[near]]) / agrid[cand[near]].mean() <= alias_separation:
                a_pick[r] = agrid[cand[near][np.argmax(score_a[r, cand[near]])]]
                by_prior[r] = True
    status = np.where(by_prior, _OK, status).astype(np.int8)
    a_fin, a_sd, n_shells, shell_c, shell_e = _refine(q, S, a_pick, N, sigma_rel, shell_window)
    okm = status == _OK
    return {"lattice_constant": np.where(okm, a_fin, np.nan), "lattice_constant_err": np.where(okm, a_sd, np.nan),
            "alias_lattice_constant": np.where(status == _AMBIGUOUS, agrid[alt], np.nan),
            "comb_lattice_constant": a0, "score": score, "alias_ratio": ratio, "evidence": evidence,
            "n_shells": n_shells, "status": status, "decided_by_angles": decided, "decided_by_prior": by_prior, "shell_N": N,
            "shell_center": shell_c, "shell_center_err": shell_e}
