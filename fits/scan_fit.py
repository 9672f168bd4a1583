"""Fit every frame of a scan: template search, configuration, gradient refinement; resumable.

Per batch of reduced polar images (``/entry/reduction/polar``):

1. `fits.search.search_orientations` + `refine_matches`: SL lattice constant, zone axis and
   in-plane angle; frames without SL peaks get `FitStatus.NO_SIGNAL` and no fit.
2. `linear_scales`: with the orientation fixed the model is linear in (sl_scale, diffuse_scale,
   al_scale, background); a non-negative weighted least squares gives the starting scales. The
   ``n_candidates`` distinct search matches are ranked by the Poisson deviance
   (`fits.objective.poisson_deviance`) of the fit without the AL term (the SL peaks decide the SL
   orientation); for the best one every symmetric variant of the Conf1 and Conf2 relationships
   (`relationship_variants`: the search knows the SL orientation only up to a cubic symmetry,
   which changes the NC orientation) is tried with the AL term, and the WAXS part decides the
   configuration and the variant.
3. `fits.batch.fit_batch`: refinement of in-plane angle, tilts, a, scales, background and
   disorder around the search orientation (``base_orientation`` = the search result).

Reported angles (`decompose_orientation`): the fitted SL orientation ``R`` is written as
``R S = R_e1(tilt1) R_e2(tilt2) R_e3(inplane) base_orientation(b, r)`` for the cubic symmetry
operator ``S`` and zone ``b`` (from the configured zone axes) that put ``b`` closest to the
beam; ``tilt_deg = hypot(tilt1, tilt2)``, which for small tilts is the angle between the zone
axis and the beam, and ``inplane_deg`` is the rotation about the beam, taken with the smallest
magnitude among the symmetric equivalents. This is the convention of the twin's truth.h5
(`xmodel.twin.point_truth`), so recovered and true values compare directly.
"""
from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np

from fits.search import (TemplateBank, build_template_bank, refine_matches,
                         search_orientations)
from fits.linear import component_images, linear_scales, relationship_variants
from fits.mixed import flag_mixed
from fits.status import FitStatus
from xmodel import orientation
from xmodel.parameters import FWHM_PER_SIGMA, ModelParams
from xmodel.pattern import PatternModel

TWO_PI = 2.0 * np.pi

#: parameters refined per frame (edge names of fits.parameters.PARAMETER_TABLE)
DEFAULT_VARY = ("inplane_deg", "tilt1_deg", "tilt2_deg", "lattice_constant", "sl_scale",
                "diffuse_scale", "al_scale", "background", "disorder_deg")
CONFIGURATIONS = ("conf1", "conf2")

#: datasets written under /entry/fits: name -> (units, description)
FIT_DATASETS = {
    "orientation_matrix": ("", "SL crystal -> lab rotation (N, 3, 3), docs/conventions.md"),
    "zone_axis": ("", "SL crystal direction b (unit) that the reported tilt and in-plane angle refer to"),
    "lattice_constant": ("angstrom", "SL cubic lattice constant a"),
    "tilt_deg": ("degree", "out-of-plane rotation hypot(tilt1, tilt2) of the zone axis away from the beam"),
    "tilt1_deg": ("degree", "tilt about lab e1 in R S = R_e1(tilt1) R_e2(tilt2) R_e3(inplane) R_base(zone)"),
    "tilt2_deg": ("degree", "tilt about lab e2 (same decomposition)"),
    "inplane_deg": ("degree", "rotation about the beam e3 relative to base_orientation(zone, reference)"),
    "disorder_deg": ("degree", "NC orientational disorder dPhi (FWHM, Eq. 7)"),
    "configuration": ("", "NC orientation relationship conf1 / conf2 ('' without a fit)"),
    "relationship": ("", "AL crystal -> SL crystal (N, 3, 3) of the fit: the symmetric variant S R_or of the "
                         "configuration that matches the WAXS peaks (fits.linear.relationship_variants)"),
    "sl_scale": ("counts", "SL peak height at P(q) = 1 per pixel at unit solid angle"),
    "diffuse_scale": ("counts", "isotropic diffuse SAXS scale"),
    "al_scale": ("counts", "200 AL peak height per pixel at unit solid angle"),
    "background": ("counts", "constant background per pixel at unit solid angle"),
    "objective": ("", "Poisson deviance of the fit (sum over the fitted bins, weighted by their pixels)"),
    "al_gain": ("", "Poisson deviance gain of the AL term (AL signal strength): in the linear-scale fit, or of "
                    "the fitted AL term for frames refitted in a neighbour pass"),
    "configuration_margin": ("", "deviance of the other configuration's fit minus that of the chosen one "
                                 "(> 0; small values mean Conf1/Conf2 is barely decided)"),
    "search_score": ("", "cosine similarity of the best template match (0..1)"),
    "significance": ("", "largest SL ring peak significance (peak over robust noise)"),
    "residual_significance": ("", "largest SL ring peak significance left after subtracting the fitted SL "
                                  "peaks (a second orientation: mixed pattern)"),
    "al_residual_significance": ("", "largest AL ring excess left after the fit, in Poisson standard deviations "
                                     "of one chi bin (a second NC orientation: mixed pattern)"),
    "status": ("", "fits.status.FitStatus code: 0 ok, 1 no signal, 2 not converged, 3 bad data, "
                   "4 at bound, 5 failed, 6 mixed"),
    "message": ("", "status message"),
}
STDERR_OF = ("lattice_constant", "tilt1_deg", "tilt2_deg", "inplane_deg", "disorder_deg", "sl_scale",
             "diffuse_scale", "al_scale", "background")


# --------------------------------------------------------------------------- orientation angles


def decompose_orientation(R: np.ndarray, zones: list[tuple[np.ndarray, np.ndarray | None]]
                          ) -> dict[str, np.ndarray]:
    """Zone axis, tilts and in-plane angle of SL orientations (numpy).

    Parameters
    ----------
    R : (N, 3, 3) SL crystal -> lab.
    zones : candidate (zone axis ``b``, in-plane reference ``r`` or None) pairs in SL crystal
        coordinates, as ``beam_direction`` / ``inplane_reference`` of the domain TOML files.

    Returns
    -------
    dict with ``zone_axis`` (N, 3), ``tilt1_deg``, ``tilt2_deg``, ``tilt_deg``, ``inplane_deg``
    (N,), NaN where ``R`` is not finite.

    Notes
    -----
    For each symmetric copy ``R S`` (24 cubic S) and zone, ``v = R S b`` (unit) is the lab
    direction of the zone; ``R_e1(t1) R_e2(t2) e3 = (sin t2, -sin t1 cos t2, cos t1 cos t2)`` gives
    ``t2 = asin(v1)``, ``t1 = atan2(-v2, v3)``, and ``R_e3(inplane) = (R_e1 R_e2)^T R S R_base^T``.
    The copy with the smallest ``hypot(t1, t2)`` wins, ties (zone symmetry) by the smallest
    ``|inplane|``. docs/conventions.md; the twin's truth (`xmodel.twin.point_truth`).

    Validation: recovers tilt1, tilt2, inplane of `xmodel.orientation.sl_orientation`
    (tests/fits/test_scan_fit.py).
    """
    R = np.asarray(R, np.float64).reshape(-1, 3, 3)
    ops = orientation.cubic_symmetry_operators()
    n = R.shape[0]
    out = {"zone_axis": np.full((n, 3), np.nan), "tilt1_deg": np.full(n, np.nan),
           "tilt2_deg": np.full(n, np.nan), "tilt_deg": np.full(n, np.nan), "inplane_deg": np.full(n, np.nan)}
    ok = np.all(np.isfinite(R), axis=(1, 2))
    if not ok.any():
        return out
    Rs = np.einsum("nij,sjk->nsik", R[ok], ops)                        # (n, 24, 3, 3)
    best_key = np.full(Rs.shape[0], np.inf)
    for b, r in zones:
        b = np.asarray(b, float) / np.linalg.norm(b)
        base = orientation.base_orientation(b, r)
        v = np.einsum("nsij,j->nsi", Rs, b)
        t2 = np.arcsin(np.clip(v[..., 0], -1, 1))
        t1 = np.arctan2(-v[..., 1], v[..., 2])
        c1, s1, c2, s2 = np.cos(t1), np.sin(t1), np.cos(t2), np.sin(t2)
        # (R_e1(t1) R_e2(t2))^T applied to R S R_base^T; only the first column's e1, e2 parts needed
        M = np.einsum("nsij,kj->nsik", Rs, base)                       # R S R_base^T
        T = np.zeros(t1.shape + (3, 3))
        T[..., 0, 0], T[..., 0, 1], T[..., 0, 2] = c2, 0.0, s2
        T[..., 1, 0], T[..., 1, 1], T[..., 1, 2] = s1 * s2, c1, -s1 * c2
        T[..., 2, 0], T[..., 2, 1], T[..., 2, 2] = -c1 * s2, s1, c1 * c2
        E = np.einsum("nsji,nsjk->nsik", T, M)                         # R_e3(inplane)
        inplane = np.arctan2(E[..., 1, 0], E[..., 0, 0])
        tilt = np.hypot(t1, t2)
        key = np.round(tilt, 6) * 1e3 + np.abs(inplane)                # tilt first, then |inplane|
        j = np.argmin(key, axis=1)
        take = lambda x: np.take_along_axis(x, j[:, None], 1)[:, 0]  # noqa: E731
        kbest = take(key)
        better = kbest < best_key
        best_key = np.where(better, kbest, best_key)
        idx = np.flatnonzero(ok)[better]
        out["zone_axis"][idx] = b
        out["tilt1_deg"][idx] = np.degrees(take(t1))[better]
        out["tilt2_deg"][idx] = np.degrees(take(t2))[better]
        out["tilt_deg"][idx] = np.degrees(take(tilt))[better]
        out["inplane_deg"][idx] = np.degrees(take(inplane))[better]
    return out


#: zone axes tried by `decompose_orientation` when no domain config names one (paper: Fig. 1, S4)
DEFAULT_ZONES = (((0, 0, -1), (1, 0, 0)), ((-1, 1, 0), (0, 0, 1)), ((3, 0, -1), (0, 1, 0)),
                 ((1, 1, 1), None), ((1, 1, 2), None))


# --------------------------------------------------------------------------- linear scales


@dataclass(frozen=True)
class FitSettings:
    """Options of the scan fit (edge units).

    Attributes
    ----------
    step_deg : zone-axis spacing of the template bank (deg).
    a_range_rel : allowed SL lattice constant relative to the config's a.
    vary : refined parameters (``fits.parameters`` edge names).
    batch : frames per batch (one checkpoint per batch).
    max_iter : iterations of the batched least squares.
    tol : relative decrease of the Poisson deviance below which a frame's refinement has
        converged (`fits.batch.fit_batch`); the deviance of a fit is about the number of fit
        points (~5e4), so 2e-5 stops at changes of about one deviance unit (one standard error).
    min_significance : SL ring peak significance below which a frame has no signal.
    n_candidates : best distinct template matches (zone axes at least 3 bank steps apart, each
        refined on a finer cone) ranked by the deviance of their linear-scale fit.
    n_refine : best candidates (by that deviance) refined by least squares per frame, plus the
        best-scoring template when more than 1; the lowest final deviance wins. The main pass
        refines 1; the neighbour passes' re-search of doubtful frames (`fits.neighbours`) 2.
    conf_margin : a configuration is refined when the deviance of its linear-scale fit is within
        this of the best one (``inf``: always refine both and keep the lower final deviance;
        the default refines only the clearly better one, which halves the refinement cost).
    al_min_gain : Poisson deviance gain of the AL term (linear-scale fits with and without it)
        below which a frame has no AL signal: configuration and disorder are then left
        undetermined ('' and NaN) and not refined.
    mixed_ratio : a converged frame is MIXED when the SL ring significance left after its fit
        (`residual_significance`) reaches both ``min_significance`` and this fraction of the
        frame's own significance.
    mixed_al_significance, mixed_al_ratio : a converged frame with a configuration is also MIXED
        when the AL peaks left after its fit (`al_residual`, a second NC orientation) reach this
        many standard deviations and this fraction of the fitted AL peak height. On the 31 x 31
        twin the 15 mixed frames leave 19-113 sigma, the single-grain fits at most 3.7 (99th
        percentile, 5.9 at most) apart from a wrong fit (35).
    neighbour_passes : passes of `neighbour_pass` after the last batch (doubtful frames refitted
        from their scan neighbours' orientations; 0 = none).
    neighbour_min_significance : SL ring significance from which a frame without a fit is tried
        from its neighbours' orientations (below ``min_significance``: ``sl_min_gain`` decides
        whether there is SL signal). On the twin, empty frames reach 1.6 and in-domain frames
        with weak SL peaks 1.8-3.
    sl_min_gain : Poisson deviance gain of the fitted SL term (the model without it fits worse by
        this much) that a frame without a fit of its own needs before a neighbour pass gives it
        one (`fits.neighbours.neighbour_pass`); a likelihood-ratio test far beyond the chi2 tail
        of the five SL parameters (chi2.isf(1e-6, 5) = 36), for the look-elsewhere effect of
        trying many orientations.
    cache_dir : template bank cache folder (None: no cache).
    """

    step_deg: float = 1.5
    a_range_rel: tuple[float, float] = (0.85, 1.05)
    vary: tuple[str, ...] = DEFAULT_VARY
    batch: int = 16
    max_iter: int = 15
    tol: float = 2e-5
    min_significance: float = 8.0
    n_candidates: int = 4
    n_refine: int = 1
    conf_margin: float = 50.0
    al_min_gain: float = 25.0
    mixed_ratio: float = 0.2
    mixed_al_significance: float = 12.0
    mixed_al_ratio: float = 0.1
    neighbour_passes: int = 4
    neighbour_min_significance: float = 1.75
    sl_min_gain: float = 100.0
    cache_dir: str | None = None
    zones: tuple = field(default=DEFAULT_ZONES)


# --------------------------------------------------------------------------- one batch


def _stack(params: list[ModelParams]) -> ModelParams:
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *params)


def _frame_checks(obs: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Valid points (B, P) and broken frames (B,): negative or infinite counts, or nothing valid."""
    finite = np.isfinite(obs)
    valid = finite & (weight[None, :] > 0)
    neg = np.any(np.where(valid, obs, 0.0) < 0, axis=1)
    inf = np.any(np.isinf(obs) & (weight[None, :] > 0), axis=1)
    return valid, neg | inf | (valid.sum(axis=1) == 0)


def fit_frames(polar: np.ndarray, setup: "FitSetup", settings: FitSettings = FitSettings(),
               timings: dict | None = None, lattice_constants: np.ndarray | None = None,
               signal_threshold: float | None = None) -> dict[str, np.ndarray]:
    """Search, choose the configuration and refine a batch of polar frames; never raises per frame.

    Parameters
    ----------
    polar : (B, C, Q) polar images (mean counts per bin, NaN where no valid pixel) on the
        grid of ``setup`` (``/entry/reduction/polar``).
    setup : model on the fit points, sample template, template bank (`setup_from_reduction`,
        `FitSetup.build`).
    settings : options.
    timings : if given, seconds spent per stage are added to it (``search``, ``refine_search``,
        ``linear``, ``refine``).
    lattice_constants : (B, N) or (N,) SL lattice constants (A) the template search correlates at
        instead of the maxima of the radial profile (`fits.search.search_orientations`), e.g. a
        grid over the allowed range (`fits.neighbours.lattice_grid`, the neighbour passes' re-search).
    signal_threshold : SL ring significance below which a frame has no signal (default
        ``settings.min_significance``; the mixed-pattern test keeps ``settings.min_significance``).

    Returns
    -------
    dict of per-frame arrays, keys of `FIT_DATASETS` plus ``<name>_stderr``.

    Notes
    -----
    Stages: template search on the whole polar image (`fits.search`, distinct matches, each
    refined on a finer cone); candidate matches ranked by the Poisson deviance of their
    non-negative linear-scale fit without the AL term, then every `relationship_variants` of
    Conf1/Conf2 for the best ``settings.n_refine`` matches by the same fit with it
    (`linear_scales`); batched
    Levenberg-Marquardt (`fits.batch.fit_batch`) on the fit points (`fit_point_index`) under the
    configurations whose linear deviance is within ``settings.conf_margin`` of the best, the lower
    final deviance deciding (the WAXS part decides, since only the AL term differs between them;
    with ``n_refine > 1`` the lowest final deviance over the refined matches decides too).
    """
    from fits.batch import fit_batch

    tm = timings if timings is not None else {}
    clock = time.perf_counter
    polar = np.asarray(polar, np.float64)
    B = polar.shape[0]
    model, template, bank = setup.model, setup.template, setup.bank
    a0 = float(template.lattice_constant)
    a_range = (settings.a_range_rel[0] * a0, settings.a_range_rel[1] * a0)
    obs = polar.reshape(B, -1)[:, setup.index]
    valid, bad = _frame_checks(obs, setup.weight)
    out = _empty_results(B)
    t = clock()
    clean = np.where(bad[:, None, None], np.nan, polar)
    if lattice_constants is not None:
        lc = np.asarray(lattice_constants, float)
        lattice_constants = np.broadcast_to(lc if lc.ndim == 2 else lc[None, :], (B, lc.shape[-1]))
    threshold = settings.min_significance if signal_threshold is None else signal_threshold
    res = search_orientations(clean, setup.q, bank, a_range=a_range, n_best=max(1, settings.n_candidates),
                              min_significance=threshold, lattice_constants=lattice_constants)
    tm["search"] = tm.get("search", 0.0) + clock() - t
    t = clock()
    res = refine_matches(clean, setup.q, res, bank, n_refine=max(1, settings.n_candidates))
    tm["refine_search"] = tm.get("refine_search", 0.0) + clock() - t
    out["search_score"][:] = res.score[:, 0]
    out["significance"][:] = res.significance
    out["status"][:] = FitStatus.NO_SIGNAL.code
    out["message"][:] = [f"{FitStatus.NO_SIGNAL.value}: largest SL ring significance {s:.1f} < {threshold:g}"
                         for s in res.significance]
    out["status"][bad] = FitStatus.BAD_DATA.code
    out["message"][bad] = FitStatus.BAD_DATA.value
    todo = np.flatnonzero(res.has_signal & ~bad)
    if todo.size == 0:
        return out
    rels = setup.relationships
    names = list(rels)
    y = np.where(valid, obs, 0.0)[todo]
    v = valid[todo]
    w = np.where(v, setup.weight[None, :], 0.0)
    # the lattice constant each match was found at (the search tries several: fcc shells alias)
    a_match = getattr(res, "match_lattice_constant", None)
    a_match = np.broadcast_to(res.lattice_constant[:, None], res.score.shape) if a_match is None else a_match
    a_est = np.clip(np.asarray(a_match, float)[todo], *a_range)               # (n, T)
    t = clock()
    # every (candidate, configuration) pair ranked by the deviance of its linear-scale fit
    n_t = res.orientation.shape[1]
    dev = np.full((todo.size, n_t, len(names)), np.inf)
    dev_sl = np.full((todo.size, n_t), np.inf)
    lin = {}
    # 1. candidates ranked by the linear fit without AL (SL peaks, diffuse, background: these
    #    do not depend on the configuration; the AL term would favour any SL orientation whose
    #    NC copy matches the WAXS peaks)
    comps_t = []
    for ti in range(n_t):
        p = _stack([template.replace(base_orientation=res.orientation[todo[j], ti], inplane=0.0, tilt1=0.0,
                                     tilt2=0.0, lattice_constant=a_est[j, ti], relationship=rels[names[0]])
                    for j in range(todo.size)])
        comps = component_images(model, p, ("sl_scale", "diffuse_scale", "background"))
        sc0, d0 = linear_scales(comps, y, v, w)
        dev_sl[:, ti] = d0
        comps_t.append((jax.tree_util.tree_map(np.asarray, p), comps, sc0))
    n_ref = max(1, min(int(settings.n_refine), n_t))
    order = np.argsort(dev_sl, axis=1, kind="stable")[:, :n_ref]          # (n, R) candidates to refine
    if n_ref > 1:
        # and the best template score (match 0), which the linear deviance sometimes ranks below an
        # aliased a's match on strongly tilted boundary frames (a repeated column is refined once)
        order = np.concatenate([order, np.where((order == 0).any(axis=1), order[:, 0], 0)[:, None]], axis=1)
        n_ref += 1
    stacked = jax.tree_util.tree_map(lambda *x: np.stack(x), *[c[0] for c in comps_t])   # (T, n, ...)
    for r_i in range(n_ref):
        # the frames whose candidate in this column is new (a repeated one is not tried twice)
        sel = np.flatnonzero(~np.any(order[:, :r_i] == order[:, r_i:r_i + 1], axis=1))
        if sel.size == 0:
            continue
        tr = order[sel, r_i]
        pn = jax.tree_util.tree_map(lambda x: x[tr, sel], stacked)
        base = np.stack([np.insert(comps_t[ti][1][j], 2, 0.0, axis=0) for j, ti in zip(sel, tr)])
        for k, (j, ti) in enumerate(zip(sel, tr)):
            lin[ti, -1, j] = (jax.tree_util.tree_map(lambda x: x[k], pn), np.insert(comps_t[ti][2][j], 2, 0.0))
        # 2. configuration and its symmetric variant (`relationship_variants`) by the WAXS part
        for ci, name in enumerate(names):
            for R_v in relationship_variants(rels[name]):
                p = pn.replace(relationship=np.broadcast_to(R_v, (sel.size, 3, 3)))
                comps = base.copy()
                comps[:, 2] = component_images(model, jax.tree_util.tree_map(jnp.asarray, p), ("al_scale",))[:, 0]
                sc, d = linear_scales(comps, y[sel], v[sel], w[sel])
                better = d < dev[sel, tr, ci]
                dev[sel[better], tr[better], ci] = d[better]
                for k in np.flatnonzero(better):
                    lin[tr[k], ci, sel[k]] = (jax.tree_util.tree_map(lambda x: x[k], p), sc[k])
    dev_best = dev.min(axis=2)                                   # (n, T): inf where not refined
    al_gain_t = dev_sl - dev_best                                # (n, T)
    has_al_t = al_gain_t >= settings.al_min_gain
    tm["linear"] = tm.get("linear", 0.0) + clock() - t
    t = clock()
    # one batched refinement of every (frame, candidate, configuration) to try; candidates without
    # AL signal once (their al_scale starts at 0 and disorder is not reported). Rows are padded
    # with empty frames to a power of two so that few shapes are ever compiled.
    pairs = []
    for j in range(todo.size):
        for ti in dict.fromkeys(order[j].tolist()):
            if not has_al_t[j, ti]:
                pairs.append((j, int(ti), -1))
                continue
            pairs += [(j, int(ti), ci) for ci in range(len(names))
                      if dev[j, ti, ci] <= dev_best[j, ti] + settings.conf_margin]
    obj = {}
    fitted = {}
    n_rows = max(4, 1 << (len(pairs) - 1).bit_length())
    pad = [pairs[0]] * (n_rows - len(pairs))
    rows = np.array([j for j, _, _ in pairs + pad])
    p0 = _stack([lin[ti, ci, j][0] for j, ti, ci in pairs + pad])
    sc = np.stack([lin[ti, ci, j][1] for j, ti, ci in pairs + pad])
    floor = np.where(np.array([ci for _, _, ci in pairs + pad])[:, None] < 0, [1e-3, 1e-3, 0.0, 1e-4],
                     [1e-3, 1e-3, 1e-3, 1e-4])
    s_ = np.maximum(sc, floor)
    init = p0.replace(sl_scale=jnp.asarray(s_[:, 0]), diffuse_scale=jnp.asarray(s_[:, 1]),
                      al_scale=jnp.asarray(s_[:, 2]), background=jnp.asarray(s_[:, 3]))
    w_rows = w[rows].copy()
    w_rows[len(pairs):] = 0.0                                     # padding: not fitted (bad data)
    f = fit_batch(y[rows], w_rows, model, init, list(settings.vary), bounds={"lattice_constant": a_range},
                  max_iter=settings.max_iter, tol=settings.tol)
    for k, key in enumerate(pairs):
        obj[key] = f.objective[k] if np.isfinite(f.objective[k]) else np.inf
        fitted[key] = k
    tm["refine"] = tm.get("refine", 0.0) + clock() - t
    rot = np.full((todo.size, 3, 3), np.nan)
    chosen = []
    for j in range(todo.size):
        mine = [key for key in pairs if key[0] == j]
        # the lowest final deviance over the refined candidates and configurations; a candidate
        # without AL signal was refined once (configuration undetermined)
        _, ti, ci = min(mine, key=lambda key: (obj[key], key[1], key[2]))
        i = todo[j]
        rot[j], p = store_fit(out, i, f, fitted[j, ti, ci], names[ci] if ci >= 0 else None)
        chosen.append(p)
        out["al_gain"][i] = al_gain_t[j, ti]
        if ci >= 0:
            other = [obj[j, ti, c] for c in range(len(names)) if c != ci and np.isfinite(obj.get((j, ti, c), np.inf))]
            lin_other = [dev[j, ti, c] - dev[j, ti, ci] for c in range(len(names)) if c != ci]
            out["configuration_margin"][i] = (min(other) - obj[j, ti, ci]) if other else (
                min(lin_other) if lin_other else np.inf)
        elif FitStatus.from_code(out["status"][i]).success:
            out["message"][i] += (f"; no AL peaks above noise (linear deviance gain {al_gain_t[j, ti]:.1f} < "
                                  f"{settings.al_min_gain:g}): configuration and disorder not determined")
    t = clock()
    flag_mixed(out, todo, clean[todo], setup, _stack(chosen), a_range, settings)
    tm["mixed"] = tm.get("mixed", 0.0) + clock() - t
    ang = decompose_orientation(rot, list(settings.zones))
    for k in ("zone_axis", "tilt_deg", "tilt1_deg", "tilt2_deg", "inplane_deg"):
        out[k][todo] = ang[k]
    return out


def store_fit(out: dict[str, np.ndarray], i: int, f, k: int, configuration: str | None
              ) -> tuple[np.ndarray, ModelParams]:
    """Write row ``k`` of a `fits.batch.BatchFit` into frame ``i`` of the per-frame arrays ``out``.

    ``configuration`` is the Conf1/Conf2 name the row was fitted with, or None when the frame
    has no AL signal (configuration, relationship and disorder are then not determined, and
    ``al_scale``/``disorder_deg`` at a bound do not count). Returns the SL orientation (3, 3) and
    the fitted `ModelParams` of the row.
    """
    p = jax.tree_util.tree_map(lambda x: x[k], f.params)
    st = f.status[k]
    rot = np.asarray(p.sl_orientation(), np.float64)
    out["orientation_matrix"][i] = rot
    out["lattice_constant"][i] = float(p.lattice_constant)
    for name in ("sl_scale", "diffuse_scale", "al_scale", "background"):
        out[name][i] = float(getattr(p, name))
    if configuration is not None:
        out["disorder_deg"][i] = float(np.degrees(p.disorder)) * FWHM_PER_SIGMA
        out["configuration"][i] = configuration
        out["relationship"][i] = np.asarray(p.relationship, np.float64)
    else:
        out["disorder_deg"][i] = np.nan
        out["configuration"][i] = ""
        out["relationship"][i] = np.nan
    out["objective"][i] = float(f.objective[k])
    msg = re.sub(r"^frame \d+: ", "", f.messages[k]) if f.messages[k] else st.value
    if configuration is None and st is FitStatus.AT_BOUND:
        held = set(msg.split("at a bound:")[-1].replace(" ", "").split(","))
        if held <= {"al_scale", "disorder_deg"}:     # no AL signal: these are not measured
            st, msg = FitStatus.OK, f"converged in {f.n_iter[k]} iterations"
    out["status"][i] = st.code
    out["message"][i] = msg
    for name in STDERR_OF:
        undetermined = configuration is None and name in ("al_scale", "disorder_deg")
        out[name + "_stderr"][i] = float(f.stderr[name][k]) if name in f.stderr and not undetermined else np.nan
    return rot, p


def params_from_row(r: dict, k: int, template: ModelParams, a_range: tuple[float, float]) -> ModelParams:
    """`ModelParams` to start a refinement from row ``k`` of a fit result (`fit_frames` output or
    `read_fits` rows): its SL orientation, lattice constant (clipped to ``a_range``, A), scales
    (floored away from 0, so that none starts at its bound), disorder and NC relationship (the
    template's where the fit left them undetermined)."""
    dis, rel = r["disorder_deg"][k], r["relationship"][k]
    return template.replace(
        base_orientation=r["orientation_matrix"][k], inplane=0.0, tilt1=0.0, tilt2=0.0,
        lattice_constant=float(np.clip(r["lattice_constant"][k], *a_range)),
        sl_scale=max(float(np.nan_to_num(r["sl_scale"][k])), 1e-3),
        diffuse_scale=max(float(np.nan_to_num(r["diffuse_scale"][k])), 1e-3),
        al_scale=max(float(np.nan_to_num(r["al_scale"][k])), 1e-3),
        background=max(float(np.nan_to_num(r["background"][k])), 1e-4),
        disorder=np.radians(dis) / FWHM_PER_SIGMA if np.isfinite(dis) else template.disorder,
        relationship=rel if np.all(np.isfinite(rel)) else template.relationship)


def _empty_results(n: int) -> dict[str, np.ndarray]:
    out = {k: np.full(n, np.nan) for k in FIT_DATASETS}
    out["configuration_margin"] = np.full(n, np.nan)
    out["al_gain"] = np.full(n, np.nan)
    out["orientation_matrix"] = np.full((n, 3, 3), np.nan)
    out["relationship"] = np.full((n, 3, 3), np.nan)
    out["zone_axis"] = np.full((n, 3), np.nan)
    out["configuration"] = np.array([""] * n, dtype=object)
    out["message"] = np.array([""] * n, dtype=object)
    out["status"] = np.full(n, FitStatus.FAILED.code, np.int32)
    for k in STDERR_OF:
        out[k + "_stderr"] = np.full(n, np.nan)
    return out



def fit_point_index(pixels, structure, template: ModelParams, a_range: tuple[float, float],
                    width_factor: float = 1.5, pixel_counts: np.ndarray | None = None,
                    nsigma: float = 4.0) -> np.ndarray:
    """Flat indices of the polar points that carry SL or AL peaks: the points a fit uses.

    Parameters
    ----------
    pixels : `xmodel.pixels.PixelSet` of the whole polar grid (``Experiment.polar_pixels``).
    structure : `xmodel.parameters.Structure` (SL and AL reflection lists).
    template : sample parameters (radial widths ``sl_radial_width``, ``al_radial_width``, 1/A).
    a_range : (a_min, a_max) SL lattice constants the fit may reach (A).
    width_factor : radial widths may grow by this factor.
    pixel_counts : (C, Q) detector pixels per bin; bins without pixels are left out.
    nsigma : half-width of each band in radial sigmas.

    Returns
    -------
    numpy.ndarray of int
        Valid points with ``|q|`` in the SL band (``2 pi |hkl|_min / a_max - n sigma_r`` to
        ``q_max_sl + n sigma_r``) or within ``n sigma_s`` of an AL shell ``2 pi |hkl| / a_AL``.

    Notes
    -----
    Points outside these bands hold background and the isotropic diffuse term only; leaving
    them out changes no peak parameter and cuts the cost of a fit by the ratio of the counts
    (the "pixels of the SL and AL q-bands" objective of issue 4; Gaussian bands of the model,
    `xmodel.pattern`).

    Validation: every support point of an orientation-free `PatternModel` over ``a_range`` lies
    in the selection (tests/fits/test_scan_fit.py).
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


# --------------------------------------------------------------------------- scans


@dataclass(frozen=True, eq=False)
class FitSetup:
    """What a scan fit needs besides the frames.

    Attributes
    ----------
    model : orientation-free `PatternModel` on the fit points (``index`` of the polar grid).
    template : sample `ModelParams` (config values: widths, radius, disorder; internal units).
    bank : template bank on the chi grid (`fits.search.build_template_bank`).
    q : (Q,) q bin centres (1/A); chi_deg : (C,) chi bin centres (deg).
    index : (P,) flat indices (row-major, (chi, q)) of the model's points in the polar grid.
    weight : (P,) detector pixels per fit point (``/entry/reduction/counts``; 1 if unknown).
    relationships : configuration name -> ``R_or`` (3, 3) tried for every frame.
    """

    model: PatternModel
    template: ModelParams
    bank: TemplateBank
    q: np.ndarray
    chi_deg: np.ndarray
    index: np.ndarray
    weight: np.ndarray
    relationships: dict = field(default_factory=lambda: {
        c: np.asarray(orientation.orientation_relationship(c), np.float64) for c in CONFIGURATIONS})

    @classmethod
    def build(cls, cfg, q: np.ndarray, chi_deg: np.ndarray, pixel_counts: np.ndarray | None = None,
              settings: FitSettings = FitSettings(), dtype=jnp.float32) -> "FitSetup":
        """Model on the fit points of the polar grid ``(chi_deg, q)`` for the sample of ``cfg``.

        Parameters
        ----------
        cfg : loaded config (experiment geometry and mask, sample starting values).
        q : (Q,) q bin centres (1/A); chi_deg : (C,) regular chi bin centres over 360 deg (deg).
        pixel_counts : (C, Q) detector pixels per bin (``/entry/reduction/counts``).

        Notes
        -----
        The polar points lie at the bin centres on the Ewald sphere with the geometry and mask of
        the config (`xmodel.experiment.Experiment`); the model is orientation-free, covers the
        allowed lattice constants and 1.5x wider peaks, and holds only the points of the SL and
        AL bands (`fit_point_index`).
        """
        from xmodel.experiment import Experiment
        from xmodel.parameters import params_from_config, structure_from_config

        q = np.asarray(q, float)
        chi = np.asarray(chi_deg, float)
        exp = Experiment.from_config(cfg)
        template = params_from_config(cfg, dtype=dtype)
        a0 = float(template.lattice_constant)
        a_range = (settings.a_range_rel[0] * a0, settings.a_range_rel[1] * a0)
        structure = structure_from_config(cfg, a_range)
        pixels = exp.polar_pixels(q, chi)
        counts = None if pixel_counts is None else np.asarray(pixel_counts, float).reshape(chi.size, q.size)
        index = fit_point_index(pixels, structure, template, a_range, 1.5, counts)
        if index.size == 0:
            raise ValueError(f"no valid polar bin lies in the SL or AL q-bands (q {q.min():.3g} .. "
                             f"{q.max():.3g} 1/A); check the config's geometry and mask against the "
                             f"reduction, or reduce over a q range that holds the peaks.")
        model = PatternModel(pixels.subset(index), structure, template, dtype=dtype,
                             orientation_margin_deg=None, lattice_constant_range=a_range, width_factor=1.5)
        bank = build_template_bank(chi, wavelength_A=float(exp.geometry.wavelength) * 1e10,
                                   lattice_constant=a0, step_deg=settings.step_deg,
                                   mosaic_deg=float(np.degrees(template.sl_mosaic)),
                                   cache_dir=settings.cache_dir)
        weight = np.ones(index.size) if counts is None else counts.reshape(-1)[index]
        return cls(model=model, template=template, bank=bank, q=q, chi_deg=chi, index=index, weight=weight)


def setup_from_reduction(path: str | Path, cfg, settings: FitSettings = FitSettings(),
                         dtype=jnp.float32) -> FitSetup:
    """`FitSetup.build` on the polar grid of ``/entry/reduction`` of ``path``."""
    with h5py.File(path, "r") as f:
        if "entry/reduction/polar" not in f:
            raise ValueError(f"{path} has no /entry/reduction/polar; pass a Dectris master file (it is "
                             f"reduced first) or a file written by xmodel reduce.")
        q = np.asarray(f["entry/reduction/q"], float)
        chi = np.asarray(f["entry/reduction/chi"], float)
        counts = np.asarray(f["entry/reduction/counts"], float) if "entry/reduction/counts" in f else None
    return FitSetup.build(cfg, q, chi, counts, settings, dtype)


def _prepare(out: Path, n: int, source: Path, settings: FitSettings) -> int:
    """Create ``/entry/fits`` in ``out`` (or check it) and return the frames already done."""
    fingerprint = f"{source.resolve()}|{settings.step_deg}|{settings.a_range_rel}|{settings.vary}"
    with h5py.File(out, "a") as f:
        g = f.require_group("entry/fits")
        if g.attrs.get("fingerprint", None) is not None:
            if g.attrs["fingerprint"] != fingerprint or g["status"].shape[0] != n:
                raise ValueError(f"{out} already holds /entry/fits of another run ({g.attrs['fingerprint']}); "
                                 f"delete /entry/fits or choose another --out.")
            return int(g.attrs["frames_done"])
        str_dt = h5py.string_dtype()
        for k, (units, desc) in FIT_DATASETS.items():
            shape = (n, 3, 3) if k in ("orientation_matrix", "relationship") else (n, 3) if k == "zone_axis" else (n,)
            dt = str_dt if k in ("configuration", "message") else np.int32 if k == "status" else np.float64
            ds = g.create_dataset(k, shape=shape, dtype=dt, fillvalue=None if dt is str_dt else (
                FitStatus.FAILED.code if k == "status" else np.nan))
            ds.attrs["units"] = units
            ds.attrs["description"] = desc
        for k in STDERR_OF:
            ds = g.create_dataset(k + "_stderr", shape=(n,), dtype=np.float64, fillvalue=np.nan)
            ds.attrs["units"] = FIT_DATASETS[k][0]
            ds.attrs["description"] = f"standard error of {k} (from the fit's Jacobian)"
        g.attrs["fingerprint"] = fingerprint
        g.attrs["frames_done"] = 0
        g.attrs["status_codes"] = "; ".join(f"{s.code}: {s.value}" for s in FitStatus)
        g.attrs["vary"] = ",".join(settings.vary)
        g.attrs["description"] = ("Per scan point fits of the xmodel forward model (fits.scan_fit): template "
                                  "search, Conf1/Conf2 by the WAXS part, batched refinement.")
        return 0


def fit_scan(results: str | Path, cfg, out: str | Path | None = None, settings: FitSettings = FitSettings(),
             progress: bool = True, stop_after: int | None = None, setup: FitSetup | None = None) -> Path:
    """Fit every frame of ``/entry/reduction/polar`` and write ``/entry/fits`` (resumable).

    Parameters
    ----------
    results : HDF5 file with ``/entry/reduction`` (`xmodel.reduction.reduce_scan`).
    cfg : loaded config of the experiment and the sample (starting values, widths, geometry).
    out : output file (default: ``results`` itself); ``/entry/reduction`` is linked in when it
        is another file.
    stop_after : stop after this many batches (tests of the resume path).

    Notes
    -----
    Each batch's results are written and flushed before ``frames_done`` advances, so a killed run
    resumes at the first unfinished batch.
    """
    results = Path(results)
    out = Path(out) if out is not None else results
    with h5py.File(results, "r") as f:
        if "entry/reduction/polar" not in f:
            raise ValueError(f"{results} has no /entry/reduction/polar; reduce the scan first "
                             f"(xmodel reduce) or pass its Dectris master file.")
        n = int(f["entry/reduction/polar"].shape[0])
    if out.resolve() != results.resolve():
        with h5py.File(out, "a") as f:
            if "entry/reduction" not in f:
                f.require_group("entry")["reduction"] = h5py.ExternalLink(str(results.resolve()), "/entry/reduction")
    done = _prepare(out, n, results, settings)
    if done >= n:
        with h5py.File(out, "r") as f:
            if int(f["entry/fits"].attrs.get("neighbour_passes_done", 0)) >= settings.neighbour_passes:
                return out
    setup = setup or setup_from_reduction(results, cfg, settings)
    t0, batches = time.perf_counter(), 0
    for start in range(done, n, settings.batch):
        stop = min(start + settings.batch, n)
        with h5py.File(results, "r") as f:
            polar = np.asarray(f["entry/reduction/polar"][start:stop], np.float64)
        try:
            r = fit_frames(polar, setup, settings)
        except Exception as exc:  # one bad batch never stops the scan
            r = _empty_results(stop - start)
            r["message"][:] = f"{FitStatus.FAILED.value}: {type(exc).__name__}: {exc}"
        with h5py.File(out, "a") as f:
            g = f["entry/fits"]
            for k, v in r.items():
                if k in g:                       # files begun by an older version lack new datasets
                    g[k][start:stop] = v
            g.attrs["frames_done"] = stop
            f.flush()
        batches += 1
        if progress:
            el = time.perf_counter() - t0
            print(f"\rxmodel fit: {stop}/{n} frames, {el / max(stop - done, 1):.2f} s per frame",
                  end="", file=sys.stderr, flush=True)
        if stop_after is not None and batches >= stop_after:
            break
    if progress:
        print(file=sys.stderr)
    from fits.neighbours import neighbour_passes

    neighbour_passes(out, results, setup, settings, progress, n)
    return out


def read_fits(path: str | Path) -> dict[str, np.ndarray]:
    """Every dataset of ``/entry/fits`` as numpy arrays (strings decoded), and ``frames_done``."""
    from xmodel.io import read_group

    out, attrs = read_group(path, "/entry/fits", "run xmodel fit first")
    out["frames_done"] = int(attrs["frames_done"])
    return out
