"""Which reflections light up on the detector, and where.

For every SL and AL reciprocal lattice vector G (rotated into the lab frame) the table gives
the signed distance of G from the Ewald sphere, the point of the sphere closest to G, its
|q| and chi, where that point falls on the detector and the height of the reflection's peak
there in the simulated pattern.
"""
from __future__ import annotations

import numpy as np

from xmodel.experiment import Experiment
from xmodel.form_factor import sl_peak_factor
from xmodel.parameters import ModelParams, Structure
from xmodel.pattern import (
    across_sphere_profile,
    al_peak_height,
    ball_sigmas,
    chord_on_e1,
    has_tail,
    sl_across_profile,
    sl_peak_widths,
    sl_size_variance,
)
from xmodel.pixels import weight_at

TWO_PI = 2.0 * np.pi


def ewald_projection(g_lab: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of the Ewald sphere to each G, and the signed distance.

    Parameters
    ----------
    g_lab : (N, 3) reciprocal lattice vectors in the lab frame (1/A).
    k : wave number 2 pi / lambda (1/A).

    Returns
    -------
    q_star : (N, 3) points ``k (G + k_i)/|G + k_i| - k_i`` on the sphere ``|q + k_i| = k``.
    distance : (N,) ``|G + k_i| - k`` (1/A), positive outside the sphere.

    Notes
    -----
    Laue condition ``k_f = k_i + G`` with ``|k_f| = k`` (the Ewald construction); ``k_i = k e3``.
    """
    k_i = np.array([0.0, 0.0, k])
    v = g_lab + k_i
    norm = np.linalg.norm(v, axis=1)
    return k * v / norm[:, None] - k_i, norm - k


def peak_log_value(q_lab: np.ndarray, g_lab: np.ndarray, sigma_r, sigma_t, tail=0.0, sigma_a=None,
                   size_var=None) -> np.ndarray:
    """Logarithm of the unit-height peak of G at q (`xmodel.pattern.sl_peak`): ``-peak_exponent / 2``
    without a tail, else the Gaussian's part in the detector plane plus the log of
    `xmodel.pattern.across_sphere_profile` (the chord's part along ``e1 = e_beam x q_hat``,
    `xmodel.pattern.chord_on_e1`), of sigma ``sigma_a`` (default ``sigma_t``; the "grain" shape's,
    `xmodel.pattern.grain_across`). ``size_var``: the size part of ``sigma_t^2``, a ball about G
    (`xmodel.pattern.ball_sigmas`). Broadcasts over leading axes; finite where the peak underflows.
    """
    sigma_t, sigma_a = ball_sigmas(np.linalg.norm(q_lab, axis=-1), np.linalg.norm(g_lab, axis=-1), sigma_t,
                                   sigma_a, size_var)
    if not has_tail(tail):
        return -0.5 * peak_exponent(q_lab, g_lab, sigma_r, sigma_t)
    qa = np.linalg.norm(q_lab, axis=-1)
    ga = np.linalg.norm(g_lab, axis=-1)
    u = q_lab / np.maximum(qa, 1e-12)[..., None]
    chord = u * ga[..., None] - g_lab
    gn = g_lab / np.maximum(ga, 1e-12)[..., None]
    t1 = (ga * chord_on_e1(gn[..., 0], gn[..., 1], q_lab[..., 0], q_lab[..., 1])) ** 2
    across = np.maximum(np.sum(chord * chord, axis=-1) - t1, 0.0) / (sigma_t if sigma_a is None else sigma_a) ** 2
    return -0.5 * ((qa - ga) ** 2 / sigma_r ** 2 + t1 / sigma_t ** 2) + np.log(across_sphere_profile(across, tail))


def peak_exponent(q_lab: np.ndarray, g_lab: np.ndarray, sigma_r, sigma_t) -> np.ndarray:
    """``dq_r^2/sigma_r^2 + dq_t^2/sigma_t^2`` of the curved-cap peak (`xmodel.pattern.shell_sum`).

    Radial ``|q| - |G|``, tangential chord ``|G| |q_hat - G_hat|``; broadcasts over leading axes.
    """
    qa = np.linalg.norm(q_lab, axis=-1)
    ga = np.linalg.norm(g_lab, axis=-1)
    u = q_lab / np.maximum(qa, 1e-12)[..., None]
    chord = u * ga[..., None] - g_lab
    return (qa - ga) ** 2 / sigma_r ** 2 + np.sum(chord * chord, axis=-1) / sigma_t ** 2


def _brightest_on_sphere(geom, g_lab, q_near, sigma_r, sigma_t, n: int = 601, tail=0.0, sigma_a=None,
                         size_var=None) -> np.ndarray:
    """Point of the Ewald sphere where each reflection's peak is largest.

    The peak is symmetric about G and the sphere about e3, so the maximum lies in the
    plane spanned by G and e3: the points of the sphere at the azimuth chi of ``q_near`` (the
    Euclidean projection of G), searched over |q| within 6 sigma of |G|.
    """
    chi = np.degrees(np.arctan2(q_near[:, 0], q_near[:, 1]))
    gabs = np.linalg.norm(g_lab, axis=1)
    span = 6.0 * np.maximum(sigma_r, sigma_t)
    t = np.linspace(-1.0, 1.0, n)
    qs = np.clip(gabs[:, None] + span[:, None] * t[None, :], 1e-9, 2 * geom.k * (1 - 1e-9))
    pts = geom.q_lab_from_polar(qs, np.broadcast_to(chi[:, None], qs.shape))
    def col(x):          # per-reflection values against the searched points; scalars as they are
        return np.asarray(x)[:, None] if np.ndim(x) else x

    e = peak_log_value(pts, g_lab[:, None, :], sigma_r[:, None], sigma_t[:, None], col(tail),
                       None if sigma_a is None else col(sigma_a), size_var)
    best = np.argmax(e, axis=1)
    out = pts[np.arange(len(best)), best]
    # keep the Euclidean projection where it is at least as bright (e.g. G on the sphere)
    e0 = peak_log_value(q_near, g_lab, sigma_r, sigma_t, tail, sigma_a, size_var)
    take = e0 >= e[np.arange(len(best)), best]
    out[take] = q_near[take]
    return out


def reflection_table(experiment: Experiment, structure: Structure, params: ModelParams, *,
                     min_relative: float = 1e-2, include_all: bool = False) -> list[dict]:
    """Reflections that light up on the detector, brightest first within each lattice.

    Parameters
    ----------
    min_relative : keep reflections whose peak height is at least this fraction of the
        brightest reflection of the same lattice (SL or AL) on the detector.
    include_all : keep every reflection, on the detector or not (``on_detector`` says which).

    Returns
    -------
    list of dicts with keys ``lattice`` ("SL"/"AL"), ``hkl`` ([h, k, l]), ``q`` (1/A), ``chi``
    (deg, pyFAI), ``row``/``col`` (pixel), ``intensity`` (peak height in the pattern, counts,
    including solid angle and polarization), ``ewald_distance`` (1/A, signed, ``|G + k_i| - k``),
    ``on_detector`` (bool).
    """
    p = params.astype(np.float64)
    geom = experiment.geometry
    k = geom.k
    rows_out = []
    lattices = []
    r_sl = np.asarray(p.sl_orientation())
    a = float(p.lattice_constant)
    g_sl = (TWO_PI / a) * structure.sl_hkl @ r_sl.T
    lattices.append(("SL", structure.sl_hkl, g_sl))
    r_al = np.asarray(p.al_orientation())
    g_al = (TWO_PI / structure.al_lattice_constant) * structure.al_hkl @ r_al.T
    lattices.append(("AL", structure.al_hkl, g_al))
    for name, hkl, g in lattices:
        q_near, dist = ewald_projection(g, k)
        gabs = np.linalg.norm(g, axis=1)
        if name == "SL":
            sr, st, norm = sl_peak_widths(gabs, float(p.sl_radial_width), float(p.sl_mosaic),
                                          structure.sl_peak_shape, structure.sl_paracrystal, structure.sl_peak_tail)
            sr = np.broadcast_to(np.asarray(sr, float), gabs.shape)
            tail, sa = sl_across_profile(structure.sl_peak_shape, structure.sl_peak_tail, gabs,
                                         float(p.sl_radial_width), float(p.sl_mosaic))
            ball = sl_size_variance(structure.sl_peak_shape, float(p.sl_radial_width))
        else:
            tail, sa, ball = 0.0, None, None
            sr = np.full(gabs.shape, float(p.al_radial_width))
            st = np.sqrt(sr ** 2 + (gabs * float(p.disorder)) ** 2)
        q_star = _brightest_on_sphere(geom, g, q_near, sr, st, tail=tail, sigma_a=sa, size_var=ball)
        qs_abs = np.linalg.norm(q_star, axis=1)
        if name == "SL":
            ff = np.asarray(sl_peak_factor(qs_abs, float(p.radius), float(p.radius_sigma),
                                           structure.sl_peak_weighting, n_nodes=structure.form_factor_nodes,
                                           n_sigma=structure.form_factor_nsigma))
            amp = float(p.sl_scale) * norm * ff
        else:
            amp = float(p.al_scale) * structure.al_weight * np.asarray(al_peak_height(
                gabs, float(p.al_radial_width), float(p.disorder), structure.al_lattice_constant,
                structure.al_peak_intensity), float)
        height = amp * np.exp(peak_log_value(q_star, g, sr, st, tail, sa, ball))
        row, col = geom.pixel_from_q_lab(q_star)
        row = np.asarray(row, float).reshape(-1)
        col = np.asarray(col, float).reshape(-1)
        on = np.isfinite(row) & np.isfinite(col)
        on &= (row > -0.5) & (row < geom.shape[0] - 0.5) & (col > -0.5) & (col < geom.shape[1] - 0.5)
        ri = np.clip(np.rint(np.nan_to_num(row)).astype(int), 0, geom.shape[0] - 1)
        ci = np.clip(np.rint(np.nan_to_num(col)).astype(int), 0, geom.shape[1] - 1)
        on_valid = on & ~experiment.mask[ri, ci]
        weight = np.zeros(height.shape)
        if on.any():
            weight[on] = weight_at(geom, q_star[on], row[on], col[on], experiment.polarization_factor)
        height = height * weight
        ref = height[on_valid].max() if on_valid.any() else 0.0
        qabs = qs_abs
        chi = np.degrees(np.arctan2(q_star[:, 0], q_star[:, 1]))
        for i in np.argsort(-height, kind="stable"):
            lit = on_valid[i] and ref > 0 and height[i] >= min_relative * ref
            if not (lit or include_all):
                continue
            rows_out.append(dict(lattice=name, hkl=[int(v) for v in hkl[i]], q=float(qabs[i]),
                                 chi=float(chi[i]), row=float(row[i]), col=float(col[i]),
                                 intensity=float(height[i]), ewald_distance=float(dist[i]),
                                 on_detector=bool(on_valid[i])))
    return rows_out


def format_table(rows: list[dict]) -> str:
    """A fixed-width text table of `reflection_table` rows."""
    head = f"{'lattice':<7} {'hkl':>12} {'q (1/A)':>9} {'chi (deg)':>10} {'intensity':>11} {'ewald (1/A)':>12}"
    lines = [head, "-" * len(head)]
    for r in rows:
        hkl = " ".join(f"{v:d}" for v in r["hkl"])
        lines.append(f"{r['lattice']:<7} {hkl:>12} {r['q']:9.4f} {r['chi']:10.2f} "
                     f"{r['intensity']:11.4g} {r['ewald_distance']:12.5f}")
    return "\n".join(lines)
