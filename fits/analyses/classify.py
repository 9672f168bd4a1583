"""Domain classification of scan points from the angular positions of the ring peaks.

The paper's method (supplementary, "Resolving the domain structure"): for every pattern the
angular positions of the strongest peaks on the q_SL = 0.083 1/A (SAXS) and q_AL = 2.12 1/A
(WAXS) rings decide its class, SAXS and WAXS independently; patterns with peaks of several
classes are "mixed" (the paper's grey), patterns without peaks "empty" (white).

Here each ring profile (`fits.analyses.xcca.ring_profile`) is decomposed into non-negative multiples of
class templates plus a free constant (non-negative least squares). A template is the ring
profile of one class: given (the forward model of the five domains on the same polar grid,
`templates_from_model`) or found by clustering the profiles (`cluster_templates`). A class
counts when its amplitude is ``min_significance`` noise sigmas above zero; the label is the
class with the largest integrated share, "mixed" when a second class holds at least
``mixed_fraction`` of the fitted peak intensity, "empty" when no class counts. Labels: class
index >= 0, `EMPTY` = -1, `MIXED` = -2, `NO_DATA` = -3 (the ring is masked in that frame, or
holds too few valid chi bins to fit: nothing is claimed about it). Angles in degrees (pyFAI chi),
q in 1/A. The ring profiles come from `fits.analyses.xcca.ring_profile`, whose hot-pixel rejection
keeps isolated spikes from posing as peaks.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import h5py
import numpy as np
from scipy.optimize import nnls

from fits.analyses.arguments import finite_number
from fits.analyses.xcca import (
    HOT_NSIGMA,
    Ring,
    hot_band_bins,
    model_polar_image,
    ring_profile,
    spans_full_circle,
)
from xmodel.orientation import misorientation_angle

__all__ = [
    "EMPTY", "MIXED", "NO_DATA", "FIG1_COLORS", "RingClasses", "fit_templates", "cluster_templates",
    "templates_from_model", "combine_labels", "match_classes", "classify_orientations",
    "plot_label_maps", "tilted_params", "poisson_variance_factor", "fit_template_families",
    "combine_rings",
]

EMPTY = -1
MIXED = -2
#: the ring is masked in this frame (or too few valid chi bins to fit): flagged, not "empty"
NO_DATA = -3
#: colours of the paper's Fig. 1a,b (mixed grey, empty white)
FIG1_COLORS = {"red": "#d62728", "purple": "#8e44ad", "yellow": "#f1c40f", "green": "#27ae60",
               "orange": "#e67e22"}
_EXTRA_COLORS = ("#1f77b4", "#17becf", "#bcbd22", "#e377c2", "#8c564b", "#7f7f7f")


@dataclass(frozen=True)
class RingClasses:
    """Classes of the points of one ring.

    Attributes
    ----------
    label : (N,) int, class index, `EMPTY`, `MIXED` or `NO_DATA` (too few valid chi bins).
    confidence : (N,) in [0, 1]: the dominant class's share of the fitted peak intensity times
        the fit's R^2 (for empty points: 1 - best significance / threshold).
    fraction : (N, K) share of each class in the fitted peak intensity.
    significance : (N, K) amplitude of each class in noise sigmas.
    """

    label: np.ndarray
    confidence: np.ndarray
    fraction: np.ndarray
    significance: np.ndarray


def _check_rule(min_significance, mixed_fraction) -> None:
    """The classification rule's thresholds, named by their command-line options."""
    finite_number(min_significance, "min_significance", "--min-significance", gt=0.0, unit="noise sigmas",
                  example="6")
    finite_number(mixed_fraction, "mixed_fraction", "--mixed-fraction", gt=0.0, le=1.0, example="0.1")


def _baseline(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Profiles minus their 20th percentile over the valid bins (0 where masked)."""
    xm = np.where(w > 0, x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # rows without valid bins
        base = np.nanpercentile(xm, 20, axis=-1, keepdims=True)
    return np.where(w > 0, x - np.nan_to_num(base), 0.0)


def _groups(templates: np.ndarray, threshold: float) -> np.ndarray:
    """Group index of each template: templates correlating above ``threshold`` are one group."""
    k = templates.shape[0]
    t = templates - templates.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(t, axis=1)
    corr = (t @ t.T) / np.maximum(np.outer(norm, norm), 1e-300)
    group = np.arange(k)
    for i in range(k):
        for j in range(i):
            if corr[i, j] > threshold:
                group[group == group[i]] = group[j]
    return np.unique(group, return_inverse=True)[1]


def fit_templates(profiles: np.ndarray, weight: np.ndarray, templates: np.ndarray, *,
                  min_significance: float = 6.0, mixed_fraction: float = 0.1,
                  group_correlation: float = 0.9) -> RingClasses:
    """Classify ring profiles by non-negative decomposition onto class templates.

    Parameters
    ----------
    profiles : (N, n_chi) ring intensities (counts per pixel); weight : (N, n_chi) or (n_chi,)
        the ring mask W (1 valid, 0 masked).
    templates : (K, n_chi) ring profile of each class on the same chi grid (any scale).
    min_significance : a class counts when its amplitude exceeds this many noise sigmas (the
        noise is the fit's residual RMS).
    mixed_fraction : a point is mixed when a second counted class (or group) holds at least
        this share of the fitted peak intensity (the twin's rule: 10 % of the beam).
    group_correlation : templates correlating above this are one group for the mixed rule
        (e.g. WAXS patterns that two SAXS domains share, Fig. 1 yellow and green); the label
        is then the group's strongest member.

    Notes
    -----
    Non-negative least squares (Lawson & Hanson, "Solving Least Squares Problems", 1974,
    doi:10.1137/1.9781611971217) of ``x = sum_c a_c T_c + b`` with ``a_c >= 0`` and a free
    constant b (columns +1 and -1). Significance ``a_c ||T_c|| / sigma``.
    A profile with fewer than K + 3 valid chi bins is `NO_DATA` (confidence 0).
    Validation: tests/fits/analyses/test_classify.py (all labels right, empty and mixed points flagged).
    """
    _check_rule(min_significance, mixed_fraction)
    group_correlation = finite_number(group_correlation, "group_correlation", ge=-1.0, le=1.0, example="0.9")
    x = np.atleast_2d(np.asarray(profiles, float))
    w = np.broadcast_to(np.asarray(weight, float), x.shape)
    t_all = np.atleast_2d(np.asarray(templates, float))
    n, k = x.shape[0], t_all.shape[0]
    if t_all.shape[1] != x.shape[1]:
        raise ValueError(f"templates have {t_all.shape[1]} chi bins but the profiles {x.shape[1]}; "
                         "build them on the same polar grid.")
    group = _groups(_baseline(t_all, np.ones_like(t_all)), group_correlation)
    label = np.full(n, EMPTY, int)
    conf = np.zeros(n)
    frac = np.zeros((n, k))
    sig = np.zeros((n, k))
    for i in range(n):
        v = w[i] > 0
        if v.sum() < k + 3:
            label[i] = NO_DATA
            continue
        xi = x[i, v]
        t = t_all[:, v]
        t = t - t.min(axis=1, keepdims=True)
        scale = t.max(axis=1)
        ok = scale > 0
        t = np.where(ok[:, None], t / np.where(ok, scale, 1.0)[:, None], 0.0)
        a_mat = np.column_stack([t.T, np.ones(v.sum()), -np.ones(v.sum())])
        coef, rnorm = nnls(a_mat, xi, maxiter=50 * a_mat.shape[1])
        amp = coef[:k]
        dof = max(v.sum() - k - 1, 1)
        sigma = max(rnorm / np.sqrt(dof), 1e-9 * (np.abs(xi).max() + 1e-30))
        sig[i] = amp * np.linalg.norm(t, axis=1) / sigma
        share = amp * t.sum(axis=1)
        tss = np.sum((xi - xi.mean()) ** 2)
        r2 = 1.0 - rnorm ** 2 / tss if tss > 0 else 0.0
        counted = sig[i] >= min_significance
        if not counted.any():
            conf[i] = float(np.clip(1.0 - sig[i].max() / min_significance, 0, 1))
            continue
        total = share[counted].sum()
        frac[i] = np.where(counted, share / total, 0.0)
        gfrac = np.bincount(group, weights=frac[i], minlength=group.max() + 1)
        best = int(np.argmax(frac[i]))
        conf[i] = float(np.clip(gfrac.max() * r2, 0, 1))
        label[i] = MIXED if np.sum(gfrac >= mixed_fraction) >= 2 else best
    return RingClasses(label, conf, frac, sig)


def _smooth(x: np.ndarray, sigma_bins: float) -> tuple[np.ndarray, float]:
    """Circular Gaussian smoothing along the last axis; returns (smoothed, ||kernel||_2)."""
    n = x.shape[-1]
    d = np.minimum(np.arange(n), n - np.arange(n))
    ker = np.exp(-0.5 * (d / max(sigma_bins, 1e-6)) ** 2)
    ker /= ker.sum()
    out = np.fft.irfft(np.fft.rfft(x, axis=-1) * np.fft.rfft(ker), n=n, axis=-1)
    return out, float(np.linalg.norm(ker))


def peak_significance(profiles: np.ndarray, weight: np.ndarray, smooth_bins: float = 2.0) -> np.ndarray:
    """Height of the strongest (smoothed) peak of each profile in noise sigmas.

    The noise is 1.4826 MAD of the first differences / sqrt(2) (robust to the peaks), reduced by
    the smoothing kernel's norm.
    """
    x = _baseline(np.atleast_2d(profiles), np.broadcast_to(weight, np.shape(np.atleast_2d(profiles))))
    s, knorm = _smooth(x, smooth_bins)
    d = np.diff(np.where(np.broadcast_to(weight, x.shape) > 0, x, np.nan), axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # rows without valid bins
        noise = 1.4826 * np.nanmedian(np.abs(d - np.nanmedian(d, axis=-1, keepdims=True)), axis=-1) / np.sqrt(2)
    noise = np.maximum(np.nan_to_num(noise), 1e-9 * (np.abs(x).max(axis=-1) + 1e-30))
    return s.max(axis=-1) / (noise * knorm)


def cluster_templates(profiles: np.ndarray, weight: np.ndarray, *, n_classes: int | None = None,
                      min_similarity: float = 0.5, smooth_deg: float = 3.0, chi_step_deg: float = 1.0,
                      min_significance: float = 8.0, max_frames: int = 1500,
                      min_cluster_size: int = 2) -> np.ndarray:
    """Class templates found by clustering the ring profiles (no prior knowledge of the classes).

    Parameters
    ----------
    profiles, weight : (N, n_chi) ring profiles and masks.
    n_classes : number of classes; None cuts the tree where the mean cosine similarity between
        clusters drops below ``min_similarity``.
    smooth_deg : circular Gaussian smoothing (deg) before comparing: profiles whose peaks sit
        within a few degrees (small in-plane rotations, e.g. near boundaries) count as alike,
        while peaks tens of degrees apart (another in-plane angle) stay distinct. Profiles are
        compared on the circle, so in-plane angles equivalent under the ring's symmetry (e.g.
        90 deg for [001]_SL) give the same profile and the same class.
    min_significance : only profiles with a peak this many sigmas high are clustered.
    max_frames : at most this many profiles (evenly spaced) enter the hierarchical clustering.
    min_cluster_size : smaller clusters are dropped.

    Returns
    -------
    (K, n_chi) templates (median baseline-subtracted profile of each cluster), largest first;
    clusters whose median profile is a non-negative mixture of two others (R^2 >= 0.9, each
    >= 10 %) are dropped, so mixed points do not become classes.

    Notes
    -----
    Average-linkage agglomerative clustering on cosine distances (scipy.cluster.hierarchy;
    Mullner 2011, arXiv:1109.2378).
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    x = np.atleast_2d(np.asarray(profiles, float))
    w = np.broadcast_to(np.asarray(weight, float), x.shape)
    z = peak_significance(x, w)
    cand = np.flatnonzero(z >= min_significance)
    if cand.size < 2:
        raise ValueError(f"only {cand.size} pattern(s) hold a peak {min_significance:g} sigma above the "
                         "noise on this ring; clustering needs at least 2. Lower min_significance or "
                         "use the given templates (--templates five).")
    if cand.size > max_frames:
        cand = cand[np.linspace(0, cand.size - 1, max_frames).round().astype(int)]
    xb = _baseline(x[cand], w[cand])
    s, _ = _smooth(np.clip(xb, 0, None), smooth_deg / chi_step_deg)
    s /= np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-300)
    tree = linkage(s, method="average", metric="cosine")
    if n_classes is not None:
        if int(n_classes) < 1:
            raise ValueError(f"--n-classes {n_classes} must be a positive integer, e.g. 5.")
        cl = fcluster(tree, t=int(n_classes), criterion="maxclust")
    else:
        cl = fcluster(tree, t=1.0 - min_similarity, criterion="distance")
    ids, counts = np.unique(cl, return_counts=True)
    keep = ids[counts >= min_cluster_size][np.argsort(-counts[counts >= min_cluster_size], kind="stable")]
    temps = np.array([np.median(xb[cl == c], axis=0) for c in keep])
    if temps.shape[0] > 2:
        drop = []
        for i in range(temps.shape[0]):
            others = [j for j in range(temps.shape[0]) if j != i and j not in drop]
            a_mat = np.column_stack([temps[others].T, np.ones(temps.shape[1]), -np.ones(temps.shape[1])])
            coef, rnorm = nnls(a_mat, temps[i])
            tss = np.sum((temps[i] - temps[i].mean()) ** 2)
            share = coef[:len(others)] * temps[others].sum(axis=1)
            share = share / share.sum() if share.sum() > 0 else share
            if tss > 0 and 1 - rnorm ** 2 / tss >= 0.9 and np.sum(share >= 0.1) >= 2:
                drop.append(i)
        temps = np.delete(temps, drop, axis=0)
    return temps


def templates_from_model(params_list: list, experiment, structure, q_values: np.ndarray,
                         chi_deg: np.ndarray, q0: float, dq: float) -> np.ndarray:
    """Ring profiles (K, n_chi) of the forward model for each `ModelParams` in ``params_list``.

    One `xmodel.pattern.PatternModel` with an orientation-free support
    (``orientation_margin_deg=None``) on ``experiment.polar_pixels(q_values, chi_deg)`` is
    compiled once and evaluated for every class (same grid and mask as the data).
    """
    from xmodel.pattern import PatternModel

    a = [float(np.asarray(p.lattice_constant)) for p in params_list]
    model = PatternModel(experiment.polar_pixels(q_values, chi_deg), structure, params_list[0],
                         orientation_margin_deg=None, lattice_constant_range=(min(a), max(a)))
    return np.array([ring_profile(model_polar_image(model, p), q_values, chi_deg, q0, dq, hot_nsigma=None).intensity
                     for p in params_list])


def match_classes(src: np.ndarray, dst: np.ndarray) -> dict[int, int]:
    """Map each class of ``src`` to the ``dst`` class it co-occurs with most (labels >= 0)."""
    out = {}
    both = (src >= 0) & (dst >= 0)
    for c in np.unique(src[src >= 0]):
        d = dst[both & (src == c)]
        if d.size:
            out[int(c)] = int(np.bincount(d).argmax())
    return out


def combine_labels(saxs: RingClasses, waxs: RingClasses,
                   waxs_to_saxs: dict[int, int] | None = None,
                   saxs_similarity: np.ndarray | None = None,
                   similar: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Point labels from the SAXS and WAXS classes (SAXS first, as the paper's domains).

    The SAXS label where SAXS holds a class or is mixed; where SAXS is empty, the WAXS class
    (mapped by ``waxs_to_saxs``, identity for given templates; unmapped -> `MIXED`, signal
    without a known class) or `MIXED`/`EMPTY` from WAXS. Where the two rings name different
    classes whose SAXS templates look alike (``saxs_similarity[s, w] >= similar``, e.g. two
    zone axes whose 200_SL pairs fall at the same azimuth), the SAXS ring cannot tell them
    apart and the WAXS class decides. A ring that is `NO_DATA` counts as unseen: the other ring's
    class or mixed label stands; without one the point is `NO_DATA`, not `EMPTY`.
    """
    label = saxs.label.copy()
    conf = saxs.confidence.copy()
    if saxs_similarity is not None and waxs_to_saxs is None:
        both = np.flatnonzero((saxs.label >= 0) & (waxs.label >= 0) & (saxs.label != waxs.label))
        for i in both:
            s_, w_ = int(saxs.label[i]), int(waxs.label[i])
            if saxs_similarity[s_, w_] >= similar:
                label[i] = w_
                conf[i] = min(saxs.confidence[i], waxs.confidence[i])
    unseen = (saxs.label == NO_DATA) | (waxs.label == NO_DATA)
    no_class = np.isin(saxs.label, (EMPTY, NO_DATA)) & np.isin(waxs.label, (EMPTY, NO_DATA))
    only_waxs = np.isin(saxs.label, (EMPTY, NO_DATA)) & ~np.isin(waxs.label, (EMPTY, NO_DATA))
    for i in np.flatnonzero(only_waxs):
        wl = int(waxs.label[i])
        if wl == MIXED:
            label[i] = MIXED
        elif waxs_to_saxs is None:
            label[i] = wl
        else:
            label[i] = waxs_to_saxs.get(wl, MIXED)
        conf[i] = waxs.confidence[i]
    both_empty = (saxs.label == EMPTY) & (waxs.label == EMPTY)
    conf[both_empty] = np.minimum(saxs.confidence[both_empty], waxs.confidence[both_empty])
    label[no_class & unseen] = NO_DATA          # a masked ring and no class on the other: unknown
    conf[no_class & unseen] = 0.0
    return label, conf


def classify_orientations(matrices: np.ndarray, ok: np.ndarray, templates: np.ndarray | None = None, *,
                          tolerance_deg: float = 10.0, n_classes: int | None = None,
                          max_seeds: int = 500, min_cluster_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Classes of fitted SL orientations by symmetry-aware (cubic) misorientation.

    Parameters
    ----------
    matrices : (N, 3, 3) fitted SL crystal -> lab orientations; ok : (N,) fit succeeded.
    templates : (K, 3, 3) class orientations, or None to find them: greedy clustering of up to
        ``max_seeds`` orientations, the orientation with most neighbours within
        ``tolerance_deg`` first (``n_classes`` at most).
    tolerance_deg : a point joins the nearest class within this misorientation (deg), else it is
        `MIXED` (no class); failed fits are `EMPTY`.

    Returns
    -------
    label (N,), misorientation to the assigned class (deg, NaN where none).

    Notes
    -----
    `xmodel.orientation.misorientation_angle` (cubic disorientation angle, Heinz & Neumann,
    Acta Cryst. A47, 780 (1991), doi:10.1107/S0108767391006864).
    """
    r = np.asarray(matrices, float)
    ok = np.asarray(ok, bool) & np.all(np.isfinite(r), axis=(1, 2))
    good = np.flatnonzero(ok)
    label = np.full(r.shape[0], EMPTY, int)
    angle = np.full(r.shape[0], np.nan)
    if good.size == 0:
        return label, angle
    tol = np.radians(tolerance_deg)
    if templates is None:
        sub = good[np.linspace(0, good.size - 1, min(max_seeds, good.size)).round().astype(int)]
        d = misorientation_angle(r[sub][:, None], r[sub][None, :])
        free = np.ones(sub.size, bool)
        seeds = []
        while free.any() and (n_classes is None or len(seeds) < n_classes):
            near = (d < tol) & free[None, :] & free[:, None]
            count = near.sum(axis=1)
            best = int(np.argmax(count))
            if count[best] < min_cluster_size:
                break
            seeds.append(sub[best])
            free &= ~(d[best] < tol)
        templates = r[seeds]
    templates = np.asarray(templates, float)
    if templates.shape[0] == 0:
        label[good] = MIXED
        return label, angle
    d = np.stack([misorientation_angle(r[good], t[None]) for t in templates], axis=1)
    best = np.argmin(d, axis=1)
    dmin = d[np.arange(good.size), best]
    label[good] = np.where(dmin < tol, best, MIXED)
    angle[good] = np.where(dmin < tol, np.degrees(dmin), np.nan)
    return label, angle


def class_colors(names: list[str]) -> list[str]:
    """Fig. 1 colours for the domain names, other colours for other classes."""
    extra = iter(_EXTRA_COLORS * 4)
    return [FIG1_COLORS.get(n, None) or next(extra) for n in names]


def plot_label_maps(maps: dict[str, np.ndarray], names: list[str], shape: tuple[int, int], path,
                    extent=None):
    """Domain maps coloured like Fig. 1a,b: class colours, grey mixed, white empty, black no data.

    ``maps``: panel title -> (N,) labels (row-major over ``shape``); ``extent`` (um) for imshow.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colors = ["#000000", "#ffffff", "#9e9e9e"] + class_colors(names)   # no data black, empty white
    cmap = ListedColormap(colors)
    fig = Figure(figsize=(4.0 * len(maps) + 1.5, 4.0))  # no pyplot: the user's backend is kept
    axes = fig.subplots(1, len(maps), squeeze=False)
    for ax, (title, lab) in zip(axes[0], maps.items()):
        img = np.select([lab == NO_DATA, lab == EMPTY, lab == MIXED], [0, 1, 2], lab + 3).reshape(shape)
        ax.imshow(img, cmap=cmap, vmin=-0.5, vmax=len(colors) - 0.5, interpolation="nearest",
                  origin="upper", extent=extent)
        ax.set_title(title)
        ax.set_xlabel("x (um)" if extent is not None else "column")
        ax.set_ylabel("y (um)" if extent is not None else "row")
    handles = [Patch(color=c, label=n) for c, n in zip(colors, ["no data", "empty", "mixed"] + list(names))]
    fig.legend(handles=handles, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    fig.savefig(path, dpi=120)
    return path


def scaled_ring(path, q_nominal: float, *, search=(0.93, 1.18), half_width: float = 0.03,
                batch: int = 256):
    """SAXS ring profiles read at each frame's own peak position (compression-aware).

    A compressed superlattice (5-13 % near boundaries, paper Fig. 3) moves the 200_SL ring
    from 0.083 to up to 0.095 1/A, out of a fixed band. For each frame the ring centre is
    the maximum of its radial profile within ``search`` x ``q_nominal`` (after removing a
    straight background through the window's ends); the profile is then the mean over
    ``|q - q_peak| <= half_width q_peak``. Frames without a peak above the background keep
    ``q_nominal``.

    Returns
    -------
    ring : `fits.analyses.xcca.Ring` with (n_frames, n_chi) intensity and weight; ``q0`` is nominal.
    q_peak : (n_frames,) the ring centres used (1/A).
    """
    with h5py.File(path, "r") as f:
        grp = f["entry/reduction"]
        q = grp["q"][()]
        chi = grp["chi"][()]
        polar = grp["polar"]
        radial = grp["radial"]
        n = polar.shape[0]
        win = np.flatnonzero((q >= search[0] * q_nominal * (1 - half_width)) &
                             (q <= search[1] * q_nominal * (1 + half_width)))
        if win.size < 3:
            raise ValueError(f"{path}: the q grid has fewer than 3 bins around q = {q_nominal} 1/A; "
                             "reduce with finer q bins")
        lo, hi = win[0], win[-1] + 1
        qs = q[lo:hi]
        inner = (qs >= search[0] * q_nominal) & (qs <= search[1] * q_nominal)
        out = np.zeros((n, chi.size))
        wts = np.zeros((n, chi.size))
        q_peak = np.full(n, float(q_nominal))
        circular = spans_full_circle(chi)
        for s in range(0, n, batch):
            rad = np.nan_to_num(radial[s:s + batch, lo:hi])
            base = rad[:, :1] + (rad[:, -1:] - rad[:, :1]) * (qs - qs[0]) / (qs[-1] - qs[0])
            excess = np.where(inner[None, :], rad - base, -np.inf)
            best = np.argmax(excess, axis=1)
            has = excess[np.arange(rad.shape[0]), best] > 0
            q_peak[s:s + rad.shape[0]] = np.where(has, qs[best], q_nominal)
            block = polar[s:s + batch, :, lo:hi]
            for j in range(block.shape[0]):
                sel = np.abs(qs - q_peak[s + j]) <= half_width * q_peak[s + j]
                band = block[j][:, sel].astype(np.float64)
                band[hot_band_bins(band, circular, HOT_NSIGMA)] = np.nan
                fin = np.isfinite(band)
                cnt = fin.sum(axis=1)
                out[s + j] = np.where(cnt > 0, np.where(fin, band, 0).sum(axis=1) / np.maximum(cnt, 1), 0.0)
                wts[s + j] = cnt > 0
    return Ring(out, wts, chi, float(q_nominal), half_width * float(q_nominal)), q_peak


def template_similarity(templates: np.ndarray) -> np.ndarray:
    """(K, K) Pearson correlations of class templates (flattened angular profiles)."""
    t = np.asarray(templates, float).reshape(len(templates), -1)
    t = t - t.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(t, axis=1)
    norm[norm == 0] = 1.0
    return (t @ t.T) / np.outer(norm, norm)


def merge_classes(base: RingClasses, other: RingClasses, index: np.ndarray) -> RingClasses:
    """``base`` with the points ``index`` replaced by ``other`` (whose rows are those points)."""
    label, conf = base.label.copy(), base.confidence.copy()
    frac, sig = base.fraction.copy(), base.significance.copy()
    label[index], conf[index] = other.label, other.confidence
    frac[index], sig[index] = other.fraction, other.significance
    return RingClasses(label, conf, frac, sig)


# --------------------------------------------------------------------------- tilt families


def tilted_params(params_list: list, *, max_tilt_deg: float = 20.0, step_deg: float = 5.0) -> tuple[list, np.ndarray]:
    """Each class's `ModelParams` tilted out of plane on a grid: the class's template family.

    Boundary points tilt the SL (and the NCs with it) by 8-23 deg (paper Fig. 4, S10), which
    moves the broad 200_AL peaks along the ring; a family of templates over the tilts keeps
    such points in their class. Offsets ``(dt1, dt2)`` on a square grid of ``step_deg`` with
    ``hypot(dt1, dt2) <= max_tilt_deg + step_deg / 2`` are added to each class's own tilt1,
    tilt2 (about lab e1, e2).

    Returns
    -------
    params : the tilted `ModelParams`, class by class (offset (0, 0) included).
    classes : (M,) int, the class index of each.
    """
    if not (step_deg > 0 and max_tilt_deg >= 0):
        raise ValueError(f"tilt grid step_deg={step_deg} and max_tilt_deg={max_tilt_deg} must be "
                         "positive (e.g. 5 and 20 deg).")
    n = int(np.floor(max_tilt_deg / step_deg + 0.5))
    grid = np.arange(-n, n + 1) * step_deg
    offsets = [(a, b) for a in grid for b in grid if np.hypot(a, b) <= max_tilt_deg + step_deg / 2]
    out, classes = [], []
    for k, p in enumerate(params_list):
        for a, b in offsets:
            out.append(p.replace(tilt1=p.tilt1 + np.radians(a), tilt2=p.tilt2 + np.radians(b)))
            classes.append(k)
    return out, np.asarray(classes, int)


def poisson_variance_factor(pixel_counts: np.ndarray, q: np.ndarray, q0: float, dq: float) -> np.ndarray:
    """Factor f(chi) with Var[I(chi)] = I(chi) f(chi) for a band-mean ring profile of Poisson counts.

    Parameters
    ----------
    pixel_counts : (n_chi, n_q) valid pixels per polar bin (``/entry/reduction/counts``).
    q : (n_q,) bin centres (1/A); q0, dq : ring centre and half-width (1/A), as given to
        `fits.analyses.xcca.ring_profile`.

    Notes
    -----
    The ring profile is the mean over the m valid q bins of bin means of n_q Poisson pixels,
    so Var = sum_q mu_q / n_q / m^2 ~= I sum_q (1/n_q) / m^2 (Poisson variance equals the mean;
    e.g. Bevington & Robinson, "Data Reduction and Error Analysis", 3rd ed., 2003, ch. 3).
    Bins without pixels give f = 0 (they carry weight 0 in the ring).
    Validation: tests/fits/analyses/test_classify.py (scatter of simulated Poisson rings).
    """
    n = np.asarray(pixel_counts, float)[:, np.abs(np.asarray(q, float) - q0) <= dq]
    m = (n > 0).sum(axis=1)
    inv = np.where(n > 0, 1.0 / np.maximum(n, 1.0), 0.0).sum(axis=1)
    return np.where(m > 0, inv / np.maximum(m, 1) ** 2, 0.0)


def _nnls_family(x: np.ndarray, sw: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted NNLS of ``x ~ sum_j a_j t_j + b`` (a_j >= 0, b free); returns (a, chi^2)."""
    one = np.ones(x.size)
    a_mat = np.column_stack([t.T, one, -one]) * sw[:, None]
    coef, rnorm = nnls(a_mat, x * sw, maxiter=50 * a_mat.shape[1])
    return coef[:-2], float(rnorm ** 2)


def fit_template_families(profiles: np.ndarray, weight: np.ndarray, templates: np.ndarray,
                          classes: np.ndarray, *, variance_factor: np.ndarray | None = None,
                          min_significance: float = 6.0, mixed_fraction: float = 0.1,
                          alike: np.ndarray | None = None, similar: float = 0.9) -> RingClasses:
    """Classify ring profiles by template families, with a Poisson significance test per class.

    Parameters
    ----------
    profiles : (N, n_chi) ring intensities (counts per pixel); weight : (N, n_chi) or (n_chi,)
        the ring mask W (1 valid, 0 masked).
    templates : (M, n_chi) ring profiles of the family members (e.g. `templates_from_model` of
        `tilted_params`: each class at several out-of-plane tilts), any positive scale.
    classes : (M,) class index of each member (0..K-1).
    variance_factor : (n_chi,) `poisson_variance_factor` of the ring, or None when the pixel
        counts are unknown (the noise is then set by the fit's residuals alone).
    min_significance : a class counts when adding it improves chi^2 by ``min_significance^2``
        noise units (the sigmas of a likelihood-ratio test).
    mixed_fraction : a significant second class makes the point `MIXED` when it holds at least
        this share of the fitted ring intensity (the twin's rule: 10 % of the beam).
    alike : (K, K) similarity of the classes on this ring (e.g. `template_similarity` of the
        untilted templates); a second class with ``alike >= similar`` to the first cannot be
        told apart from it on this ring and never makes the point mixed.

    Returns
    -------
    RingClasses
        ``label``: `NO_DATA` where fewer than 4 chi bins are valid (the ring is masked in that
        frame). ``significance[:, k]``: for the best class its significance against a flat ring, for
        the others their significance as a second class; ``fraction``: shares of the fitted ring
        intensity (best class and each significant second class); ``confidence``: the best
        class's share times ``1 - 1 / z`` (z its significance).

    Notes
    -----
    Weighted non-negative least squares (Lawson & Hanson 1974, doi:10.1137/1.9781611971217) of
    ``x = sum_j a_j T_j + b`` over the members of one class (a non-negative mix of tilts absorbs
    tilts between grid points and tilt gradients in the beam), then of two classes. Poisson
    variances ``Var = max(I_smooth, floor) f(chi)``. Significance of a nested fit:
    ``z = sqrt(delta chi^2 / max(chi^2_nu, 1))`` (likelihood ratio, Wilks 1938,
    doi:10.1214/aoms/1177732360; the reduced chi^2 of the larger fit inflates the Poisson noise
    where the templates do not match the data exactly; without counts ``max(., 1)`` is dropped).
    Validation: tests/fits/analyses/test_classify.py (tilted, mixed and empty synthetic Poisson rings);
    the demo twin (README of the classify command: confusion table).
    """
    _check_rule(min_significance, mixed_fraction)
    x_all = np.atleast_2d(np.asarray(profiles, float))
    w_all = np.broadcast_to(np.asarray(weight, float), x_all.shape)
    t_all = np.atleast_2d(np.asarray(templates, float))
    classes = np.asarray(classes, int)
    if t_all.shape[1] != x_all.shape[1] or classes.shape != (t_all.shape[0],):
        raise ValueError(f"templates {t_all.shape} and classes {classes.shape} must be (M, n_chi) and "
                         f"(M,) with n_chi = {x_all.shape[1]} as the profiles; build them on the same "
                         "polar grid.")
    n, k = x_all.shape[0], int(classes.max()) + 1
    poisson = variance_factor is not None
    label = np.full(n, EMPTY, int)
    conf = np.zeros(n)
    frac = np.zeros((n, k))
    sig = np.zeros((n, k))
    for i in range(n):
        v = w_all[i] > 0
        dof = int(v.sum()) - 1
        if dof < 3:
            label[i] = NO_DATA
            continue
        x = x_all[i, v]
        if poisson:
            smooth, _ = _smooth(np.where(v, x_all[i], 0.0)[None], 2.0)
            floor = 1e-3 * max(float(np.mean(np.abs(x))), 1e-12)
            var = np.maximum(smooth[0, v], floor) * np.asarray(variance_factor, float)[v]
            sw = 1.0 / np.sqrt(np.maximum(var, 1e-300))
        else:
            sw = np.ones(v.sum())
        t = t_all[:, v]

        def z_of(chi_small: float, chi_big: float) -> float:
            s = chi_big / dof
            return float(np.sqrt(max(chi_small - chi_big, 0.0) / (max(s, 1.0) if poisson else max(s, 1e-300))))

        chi0 = float(np.sum(((x - np.sum(x * sw ** 2) / np.sum(sw ** 2)) * sw) ** 2))
        fits = [_nnls_family(x, sw, t[classes == c]) for c in range(k)]
        k1 = int(np.argmin([f[1] for f in fits]))
        a1, chi1 = fits[k1]
        z1 = z_of(chi0, chi1)
        sig[i, k1] = z1
        if z1 < min_significance:
            conf[i] = float(np.clip(1.0 - z1 / min_significance, 0, 1))
            continue
        t1 = t[classes == k1]
        shares = {}
        for c in range(k):
            if c == k1:
                continue
            tc = t[classes == c]
            a, chi2 = _nnls_family(x, sw, np.concatenate([t1, tc]))
            sig[i, c] = z_of(chi1, chi2)
            part1, partc = a[:t1.shape[0]] @ t1, a[t1.shape[0]:] @ tc
            total = part1.sum() + partc.sum()
            if sig[i, c] >= min_significance and total > 0 and (alike is None or alike[k1, c] < similar):
                shares[c] = float(partc.sum() / total)
        frac[i, list(shares)] = list(shares.values())
        frac[i, k1] = 1.0 - max(shares.values(), default=0.0)
        label[i] = MIXED if any(f >= mixed_fraction for f in shares.values()) else k1
        conf[i] = float(np.clip(frac[i, k1] * (1.0 - 1.0 / z1), 0, 1))
    return RingClasses(label, conf, frac, sig)


def combine_rings(saxs: RingClasses, waxs: RingClasses, saxs_alike: np.ndarray, waxs_alike: np.ndarray,
                  similar: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point labels from SAXS and WAXS classes of the same class list (given templates).

    Rules, in order: either ring `MIXED` -> `MIXED`; both rings name the same class -> it; they
    differ -> the ring that can tell the two apart decides (SAXS templates alike,
    ``saxs_alike[s, w] >= similar``: WAXS; WAXS alike: SAXS), and if both rings can, the
    point holds peaks of two classes -> `MIXED`; one ring empty -> the other's class (a tilted
    boundary point whose SL peaks left the Ewald sphere keeps its WAXS class); a `NO_DATA` ring
    (masked in that frame) is treated as unseen: the other ring's class stands, and without one
    the point is `NO_DATA`; both empty -> `EMPTY`.

    Returns
    -------
    label : (N,) point labels.
    confidence : (N,) the deciding ring's confidence (the smaller of the two where both agree).
    source : (N,) int, 3 both rings agree, 1 SAXS only, 2 WAXS only, 0 empty or no data, -1 the
        rings disagree (mixed or one ring overruled).
    """
    s, w = saxs.label, waxs.label
    label = np.full(s.shape, EMPTY, int)
    conf = np.minimum(saxs.confidence, waxs.confidence)
    source = np.zeros(s.shape, int)
    for i in range(s.size):
        si, wi = int(s[i]), int(w[i])
        if si == MIXED or wi == MIXED:
            label[i], source[i] = MIXED, -1
            conf[i] = saxs.confidence[i] if si == MIXED else waxs.confidence[i]
        elif si >= 0 and wi >= 0:
            if si == wi:
                label[i], source[i] = si, 3
            elif saxs_alike[si, wi] >= similar:
                label[i], conf[i], source[i] = wi, waxs.confidence[i], -1
            elif waxs_alike[si, wi] >= similar:
                label[i], conf[i], source[i] = si, saxs.confidence[i], -1
            else:
                label[i], source[i] = MIXED, -1
        elif si >= 0:
            label[i], conf[i], source[i] = si, saxs.confidence[i], 1
        elif wi >= 0:
            label[i], conf[i], source[i] = wi, waxs.confidence[i], 2
        elif NO_DATA in (si, wi):
            label[i], conf[i] = NO_DATA, 0.0
    return label, conf, source
