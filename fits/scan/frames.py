"""One batch of frames: template search, linear stage, refinement (`fit_frames`).

Per batch of reduced polar images (``/entry/reduction/polar``):

1. `fits.scan.search.search_orientations` + `refine_matches`: SL lattice constant, zone axis and
   in-plane angle; frames without SL peaks get `FitStatus.NO_SIGNAL` and no fit.
2. `fits.scan.linear.linear_scales`: with the orientation fixed the model is linear in
   (sl_scale, diffuse_scale, al_scale, background); a non-negative weighted least squares gives
   the starting scales. The ``n_candidates`` distinct search matches are ranked by the Poisson
   deviance (`fits.objective.poisson_deviance`) of the fit without the AL term (the SL peaks
   decide the SL orientation); for the best ones every symmetric variant of the Conf1 and Conf2
   relationships (`xmodel.orientation.relationship_variants`: the search knows the SL orientation
   only up to a cubic symmetry, which changes the NC orientation) is tried with the AL term, and
   the WAXS part decides the configuration and the variant.
3. `fits.scan.starts.refine_starts`: refinement of in-plane angle, tilts, a, scales, background
   and disorder from each (frame, candidate, configuration) start; the lowest final deviance
   wins per frame (`fits.scan.starts.choose_lowest`).
4. `fits.scan.mixed.flag_mixed` and the reported angles (`fits.scan.angles`).

Every number that steers these stages is a field of `fits.scan.settings.FitSettings`.
"""
from __future__ import annotations

import re
import time

import jax
import numpy as np
from scipy.spatial.transform import Rotation

from fits.batch import effective_dispersion, pearson_statistic
from fits.parameters import edge_value, floor_note
from fits.scan.angles import (
    COVARIANCE_KEY,
    ORIENTATION_PARAMETERS,
    lab_rotation_covariance,
    orientation_stderr_deg,
    report_angles,
)
from fits.scan.linear import component_images, linear_scales, variant_scales
from fits.scan.mixed import flag_mixed
from fits.scan.results import STDERR_OF, WIDTHS, empty_results
from fits.scan.search import refine_matches, search_orientations
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup
from fits.scan.starts import (
    Start,
    bad_data_messages,
    choose,
    frame_checks,
    refine_starts,
    stack_params,
)
from fits.status import FitStatus
from xmodel import orientation
from xmodel.parameters import FWHM_PER_SIGMA, ModelParams


def fit_frames(polar: np.ndarray, setup: FitSetup, settings: FitSettings = FitSettings(),
               timings: dict | None = None, lattice_constants: np.ndarray | None = None,
               signal_threshold: float | None = None, spikes_masked: bool = False) -> dict[str, np.ndarray]:
    """Search, choose the configuration and refine a batch of polar frames; never raises per frame.

    Parameters
    ----------
    polar : (B, C, Q) polar images (mean counts per bin, NaN where no valid pixel) on the
        grid of ``setup`` (``/entry/reduction/polar``).
    setup : model on the fit points, sample template, template bank, lattice-constant range
        (`fits.scan.setup.FitSetup`).
    settings : `SearchSettings`, `RefineSettings`, `EvidenceSettings` of the fit.
    timings : if given, seconds spent per stage are added to it (``search``, ``refine_search``,
        ``linear``, ``refine``).
    lattice_constants : (B, N) or (N,) SL lattice constants (A) the template search correlates at
        instead of the maxima of the radial profile (`fits.scan.search.search_orientations`), e.g. a
        grid over the allowed range (`fits.scan.neighbours.lattice_grid`, the neighbour passes' re-search).
    signal_threshold : SL ring significance below which a frame has no signal (default
        ``settings.search.min_significance``; the mixed-pattern test keeps ``settings.search.min_significance``).
    spikes_masked : ``polar`` holds no hot pixels any more (`FitSetup.mask_spikes` with
        ``settings.search``, as the neighbour passes do once per frame); otherwise they are masked
        here, once, and every stage sees the same points.

    Returns
    -------
    dict of per-frame arrays, the datasets of `fits.scan.results` (``FIT_DATASETS`` and
    ``<name>_stderr``).

    Notes
    -----
    Stages: template search on the whole polar image (`fits.scan.search`, distinct matches, each
    refined on a finer cone); candidate matches ranked by the Poisson deviance of their
    non-negative linear-scale fit without the AL term, then every `relationship_variants` of
    Conf1/Conf2 for the best ``settings.refine.n_refine`` matches by the same fit with it
    (`linear_scales`); batched Levenberg-Marquardt (`fits.scan.starts.refine_starts`) on the fit
    points (`fits.scan.setup.fit_point_index`) under the
    configurations whose linear deviance is within ``settings.refine.conf_margin`` of the best, the lower
    final deviance deciding (the WAXS part decides, since only the AL term differs between them;
    with ``n_refine > 1`` the lowest final deviance over the refined matches decides too).
    """
    tm = timings if timings is not None else {}
    clock = time.perf_counter
    # hot pixels: out of the search, the linear stage, the fit and the mixed test (masked once)
    polar = np.asarray(polar, np.float64) if spikes_masked else setup.mask_spikes(polar, settings.search)
    B = polar.shape[0]
    model, template, bank = setup.model, setup.template, setup.bank
    a_range = setup.a_range
    obs = polar.reshape(B, -1)[:, setup.index]
    valid, bad = frame_checks(obs, setup.weight)
    out = empty_results(B)
    t = clock()
    clean = np.where(bad[:, None, None], np.nan, polar)
    if lattice_constants is not None:
        lc = np.asarray(lattice_constants, float)
        lattice_constants = np.broadcast_to(lc if lc.ndim == 2 else lc[None, :], (B, lc.shape[-1]))
    threshold = settings.search.min_significance if signal_threshold is None else signal_threshold
    ss = settings.search
    res = search_orientations(clean, setup.q, bank, a_range=a_range, n_best=max(1, ss.n_candidates),
                              min_significance=threshold, lattice_constants=lattice_constants,
                              sigma_q=ss.ring_sigma_q, n_lattice=ss.n_lattice, lattice_separation=ss.lattice_separation,
                              min_separation_deg=ss.match_separation_steps * ss.step_deg, n_grid=ss.lattice_grid_points,
                              spike_sigma=np.inf)
    tm["search"] = tm.get("search", 0.0) + clock() - t
    t = clock()
    res = refine_matches(clean, setup.q, res, bank, n_refine=max(1, ss.n_candidates), step_deg=ss.refine_step_deg,
                         radius_deg=ss.refine_radius_steps * ss.step_deg, sigma_q=ss.ring_sigma_q,
                         spike_sigma=np.inf)
    tm["refine_search"] = tm.get("refine_search", 0.0) + clock() - t
    out["search_score"][:] = res.score[:, 0]
    out["significance"][:] = res.significance
    out["status"][:] = FitStatus.NO_SIGNAL.code
    out["message"][:] = [f"{FitStatus.NO_SIGNAL.value}: largest SL ring significance {s:.1f} < {threshold:g}"
                         for s in res.significance]
    out["status"][bad] = FitStatus.BAD_DATA.code
    why = bad_data_messages(obs, setup.weight)
    out["message"][bad] = [f"{FitStatus.BAD_DATA.value}: {why[i]}" for i in np.flatnonzero(bad)]
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
    # every candidate of every frame in one evaluation (rows: candidate, frame)
    p_all = stack_params([template.replace(base_orientation=res.orientation[todo[j], ti], inplane=0.0, tilt1=0.0,
                                           tilt2=0.0, lattice_constant=a_est[j, ti], relationship=rels[names[0]])
                          for ti in range(n_t) for j in range(todo.size)])
    comps_all = component_images(model, p_all, ("sl_scale", "diffuse_scale", "background"))
    sc_all, d_all = linear_scales(comps_all, np.tile(y, (n_t, 1)), np.tile(v, (n_t, 1)), np.tile(w, (n_t, 1)))
    dev_sl[:] = d_all.reshape(n_t, todo.size).T
    comps_all = comps_all.reshape(n_t, todo.size, 3, -1)
    sc_all = sc_all.reshape(n_t, todo.size, -1)
    stacked = jax.tree_util.tree_map(lambda x: np.asarray(x).reshape((n_t, todo.size) + np.shape(x)[1:]), p_all)
    n_ref = max(1, min(int(settings.refine.n_refine), n_t))
    # the n_refine best by linear deviance, and every candidate the linear stage cannot tell from the
    # best: within refine_margin of it after division by the best linear fit's dispersion (a repeated
    # column is refined once)
    ranked = np.argsort(dev_sl, axis=1, kind="stable")                    # (n, T)
    lead = np.take_along_axis(dev_sl, ranked, axis=1)
    phi_lin = linear_dispersion(comps_all, sc_all, ranked[:, 0], y, v, w)
    close = lead - lead[:, :1] <= settings.refine.refine_margin * phi_lin[:, None]
    close[:, :n_ref] = True
    order = np.where(close, ranked, ranked[:, :1])                         # (n, T) candidates to refine
    if n_ref > 1:
        # and the best template score (match 0), which the linear deviance sometimes ranks below an
        # aliased a's match on strongly tilted boundary frames (a repeated column is refined once)
        order = np.concatenate([order, np.where((order == 0).any(axis=1), order[:, 0], 0)[:, None]], axis=1)
    n_ref = order.shape[1]
    # 2. configuration and its symmetric variant (`relationship_variants`) by the WAXS part: the AL
    #    term of every variant in one evaluation, their linear fits sharing the other terms
    variants = [(ci, R_v) for ci, name in enumerate(names) for R_v in orientation.relationship_variants(rels[name])]
    for r_i in range(n_ref):
        # the frames whose candidate in this column is new (a repeated one is not tried twice)
        sel = np.flatnonzero(~np.any(order[:, :r_i] == order[:, r_i:r_i + 1], axis=1))
        if sel.size == 0:
            continue
        tr = order[sel, r_i]
        pn = jax.tree_util.tree_map(lambda x, tr=tr, sel=sel: x[tr, sel], stacked)
        for k, (j, ti) in enumerate(zip(sel, tr)):
            lin[ti, -1, j] = (jax.tree_util.tree_map(lambda x, k=k: x[k], pn), np.insert(sc_all[ti, j], 2, 0.0))
        pv = jax.tree_util.tree_map(lambda *x: np.concatenate(x), *[
            pn.replace(relationship=np.broadcast_to(R_v, (sel.size, 3, 3))) for _, R_v in variants])
        al = component_images(model, pv, ("al_scale",))[:, 0].reshape(len(variants), sel.size, -1)
        sc, d = variant_scales(comps_all[tr, sel], al, y[sel], v[sel], w[sel])
        for vi, (ci, R_v) in enumerate(variants):
            better = d[vi] < dev[sel, tr, ci]
            dev[sel[better], tr[better], ci] = d[vi][better]
            for k in np.flatnonzero(better):
                lin[tr[k], ci, sel[k]] = (jax.tree_util.tree_map(lambda x, k=k: x[k], pn).replace(relationship=R_v),
                                          sc[vi, k])
    dev_best = dev.min(axis=2)                                   # (n, T): inf where not refined
    al_gain_t = dev_sl - dev_best                                # (n, T)
    has_al_t = al_gain_t >= settings.evidence.al_min_gain
    tm["linear"] = tm.get("linear", 0.0) + clock() - t
    t = clock()
    # one batched refinement of every (frame, candidate, configuration) to try; candidates without
    # AL signal once (their al_scale starts at 0 and disorder is not reported). Rows are padded
    # to a power of two so that few shapes are ever compiled.
    pairs = []
    for j in range(todo.size):
        for ti in dict.fromkeys(order[j].tolist()):
            if not has_al_t[j, ti]:
                pairs.append((j, int(ti), -1))
                continue
            pairs += [(j, int(ti), ci) for ci in range(len(names))
                      if dev[j, ti, ci] <= dev_best[j, ti] + settings.refine.conf_margin]
    fl, bg = settings.refine.scale_floor, settings.refine.background_floor
    starts = []
    for j, ti, ci in pairs:
        p, sc = lin[ti, ci, j]
        s_ = np.maximum(sc, [fl, fl, 0.0 if ci < 0 else fl, bg])
        starts.append(Start(frame=j, params=p.replace(sl_scale=s_[0], diffuse_scale=s_[1], al_scale=s_[2],
                                                      background=s_[3]), order=(ti, ci)))
    cands = refine_starts(setup, obs[todo], starts, settings, min_rows=4, power_of_two=True,
                          spikes_masked=True)
    obj = {key: c.objective for key, c in zip(pairs, cands)}
    tm["refine"] = tm.get("refine", 0.0) + clock() - t
    rot = np.full((todo.size, 3, 3), np.nan)
    chosen = []
    # the lowest final deviance over the refined candidates and configurations; a candidate
    # without AL signal was refined once (configuration undetermined)
    best = choose(cands)
    for j in range(todo.size):
        c = best[j]
        ti, ci = c.order
        i = todo[j]
        # the AL evidence as a quasi-likelihood ratio: the linear-stage gain over the refined fit's
        # dispersion max(phi, 1) (McCullagh & Nelder 1989, sec. 9.2); equal to the gain when phi <= 1
        al_ratio = al_gain_t[j, ti] / c.dispersion
        if ci >= 0 and al_ratio < settings.evidence.al_min_gain:
            ci = -1
        rot[j], p = store_fit(out, i, c.fit, c.row, names[ci] if ci >= 0 else None)
        chosen.append(p)
        out["al_gain"][i] = al_gain_t[j, ti]
        if ci >= 0:
            other = [obj[j, ti, co] for co in range(len(names))
                     if co != ci and np.isfinite(obj.get((j, ti, co), np.inf))]
            lin_other = [dev[j, ti, co] - dev[j, ti, ci] for co in range(len(names)) if co != ci]
            out["configuration_margin"][i] = (min(other) - obj[j, ti, ci]) if other else (
                min(lin_other) if lin_other else np.inf)
        elif FitStatus.from_code(out["status"][i]).success:
            out["message"][i] += (f"; no AL peaks above noise (linear deviance gain over the dispersion "
                                  f"{al_ratio:.1f} < "
                                  f"{settings.evidence.al_min_gain:g}): configuration and disorder not determined")
    t = clock()
    flag_mixed(out, todo, clean[todo], setup, stack_params(chosen), settings, spikes_masked=True)
    tm["mixed"] = tm.get("mixed", 0.0) + clock() - t
    report_angles(out, todo, settings.search.zones)
    return out


def linear_dispersion(comps_all: np.ndarray, sc_all: np.ndarray, best: np.ndarray, y: np.ndarray,
                      valid: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """(n,) ``max(phi, 1)`` of each frame's linear-scale fit of candidate ``best`` (n,).

    ``comps_all`` (T, n, k, P) unit-scale components and ``sc_all`` (T, n, k) linear scales of
    candidate ``t`` for frame ``j`` (the linear stage of `fit_frames`); ``y``, ``valid``,
    ``weight`` (n, P). ``phi = X^2 / (n_points - k)`` with the Pearson ``X^2`` of
    `fits.batch.pearson_statistic` (McCullagh & Nelder 1989, sec. 9.2): the factor by which the
    frame's deviance differences exceed those of Poisson noise, when the model misses the frame's
    peak shapes.
    """
    out = np.ones(best.size)
    for j, t in enumerate(best):
        comps, sc = comps_all[t, j], sc_all[t, j]
        mu = np.asarray(sc, np.float64) @ np.asarray(comps, np.float64)
        w = np.where(valid[j], weight[j], 0.0)
        x2 = float(pearson_statistic(mu, y[j], w))
        dof = max(int(np.sum(w > 0)) - len(sc), 1)
        out[j] = float(effective_dispersion(x2 / dof))
    return out


#: what a frame without AL signal does not measure: its bounds do not count, its errors are NaN
NOT_MEASURED_WITHOUT_AL = {"al_scale", "disorder_deg", "al_radial_width"}


def fitted_relationship(p: ModelParams) -> np.ndarray:
    """AL crystal -> SL crystal (3, 3) of fitted parameters ``p``: ``R_or R_mis``.

    ``R_or`` is the relationship variant the fit used and ``R_mis = exp([w]_x)`` its NC
    misorientation (``p.misorientation``, a rotation vector in the AL crystal frame, refined where
    ``mis1_deg``..``mis3_deg`` are in ``fit.vary``; `xmodel.orientation.al_orientation`); without
    a misorientation ``R_or`` as it is.
    """
    rel = np.asarray(p.relationship, np.float64)
    mis = np.asarray(p.misorientation, np.float64)
    if not np.any(mis != 0.0):
        return rel
    return rel @ Rotation.from_rotvec(mis).as_matrix()


def store_fit(out: dict[str, np.ndarray], i: int, f, k: int, configuration: str | None
              ) -> tuple[np.ndarray, ModelParams]:
    """Write row ``k`` of a `fits.batch.BatchFit` into frame ``i`` of the per-frame arrays ``out``.

    ``configuration`` is the Conf1/Conf2 name the row was fitted with, or None when the frame
    has no AL signal (configuration, relationship and disorder are then not determined, and
    ``al_scale``/``disorder_deg``/``al_radial_width`` at a bound do not count). Returns the SL
    orientation (3, 3) and the fitted `ModelParams` of the row.
    """
    p = jax.tree_util.tree_map(lambda x: x[k], f.params)
    st = f.status[k]
    rot = np.asarray(p.sl_orientation(), np.float64)
    out["orientation_matrix"][i] = rot
    out["lattice_constant"][i] = float(p.lattice_constant)
    for name in ("sl_scale", "diffuse_scale", "al_scale", "background"):
        out[name][i] = float(getattr(p, name))
    for name in WIDTHS:                       # absent from the rows of a file written before they were stored
        if name in out:
            out[name][i] = float(edge_value(p, name))
    if configuration is not None:
        out["disorder_deg"][i] = float(np.degrees(p.disorder)) * FWHM_PER_SIGMA
        out["configuration"][i] = configuration
        out["relationship"][i] = fitted_relationship(p)
    else:
        out["disorder_deg"][i] = np.nan
        out["configuration"][i] = ""
        out["relationship"][i] = np.nan
    out["objective"][i] = float(f.objective[k])
    msg = re.sub(r"^frame \d+: ", "", f.messages[k]) if f.messages[k] else st.value
    names = np.asarray(f.names)
    limits = set(names[f.limits[k]]) if len(f.limits) else set()
    if configuration is None and st is FitStatus.AT_BOUND and limits and limits <= NOT_MEASURED_WITHOUT_AL:
        st, msg = FitStatus.OK, f"converged in {f.n_iter[k]} iterations" + floor_note(names[f.floors[k]])
    if st is FitStatus.AT_BOUND and limits & set(WIDTHS):
        msg += " (a width at fit.width_factor times the config's, the reach of the fit points: raise it)"
    out["status"][i] = st.code
    out["message"][i] = msg
    for name in STDERR_OF:
        if name + "_stderr" not in out:
            continue
        undetermined = configuration is None and name in NOT_MEASURED_WITHOUT_AL
        out[name + "_stderr"][i] = float(f.stderr[name][k]) if name in f.stderr and not undetermined else np.nan
    out["dispersion"][i] = float(f.dispersion[k]) if len(f.dispersion) else np.nan
    out["orientation_stderr_deg"][i] = np.nan
    lab = np.full((3, 3), np.nan)
    if all(n in f.names for n in ORIENTATION_PARAMETERS):
        j = [f.names.index(n) for n in ORIENTATION_PARAMETERS]
        # the angles of the fit's own parametrisation (about its base orientation) -> lab rotation;
        # `report_angles` puts the errors of the reported angles on their own axes
        t1, t2 = np.degrees(float(p.tilt1)), np.degrees(float(p.tilt2))
        lab = lab_rotation_covariance(f.covariance[k][np.ix_(j, j)], t1, t2)[0]
        out["orientation_stderr_deg"][i] = orientation_stderr_deg(f.covariance[k][np.ix_(j, j)], t1, t2)[0]
    if COVARIANCE_KEY in out:       # absent from the rows of a file written before it was stored
        out[COVARIANCE_KEY][i] = lab
    return rot, p
