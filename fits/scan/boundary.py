"""Fits along a line across a grain boundary, warm-started point to point (paper Fig. 3b,c, Fig. 4,
Table S3).

The scan points nearest to a straight line from ``(y0, x0)`` to ``(y1, x1)`` (um, scan positions
(slow, fast)) are fitted in order along the line; each fit starts from the previous point's
result (orientation, lattice constant, scales), the first from the template search
(`fits.scan.search`); the scan fit's result at the point (``xmodel fit``, with its neighbour passes)
is one more start where it is given. The rotation is reported relative to the domain's bulk
orientation: the misorientation angle under cubic symmetry
(`xmodel.orientation.misorientation_angle`) to the mean orientation of the bulk plateau, the
largest group of fitted points with the same orientation (`bulk_points`).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from fits.batch import covariance_at
from fits.scan import results as store
from fits.scan.angles import (
    ORIENTATION_PARAMETERS,
    lab_rotation_covariance,
    misorientation_vector,
    orientation_stderr_deg,
)
from fits.scan.frames import fit_frames
from fits.scan.search import ring_profiles, ring_significance
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup
from fits.scan.starts import (
    Candidate,
    Start,
    choose,
    frame_checks,
    params_from_row,
    refine_starts,
    stack_params,
)
from fits.status import FitStatus
from xmodel import orientation
from xmodel.parameters import FWHM_PER_SIGMA
from xmodel.reduced import ReducedScan, open_reduced


def line_points(positions_um: np.ndarray, start_um, end_um, step_um: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the scan points nearest to a line, in order, and their distance along it (um).

    Parameters
    ----------
    positions_um : (N, 2) scan positions (slow y, fast x) in um.
    start_um, end_um : (y, x) ends of the line (um).
    step_um : sampling step along the line (default: the median nearest-neighbour spacing).

    Returns
    -------
    index : (M,) distinct scan point indices in order along the line.
    distance_um : (M,) projection of each point onto the line, from ``start_um`` (um).
    """
    pos = np.asarray(positions_um, float)
    p0, p1 = np.asarray(start_um, float), np.asarray(end_um, float)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions have shape {pos.shape}; expected (N, 2) (slow y, fast x) in um "
                         f"(/entry/reduction/positions).")
    length = float(np.linalg.norm(p1 - p0))
    if length == 0:
        raise ValueError(f"--from {tuple(p0)} and --to {tuple(p1)} are the same point; give two "
                         f"different ends of the line (um, as y,x).")
    if step_um is None:
        d = np.diff(np.unique(pos[:, 1]))
        step_um = float(np.median(d)) if d.size else length / 10
    t = np.linspace(0.0, 1.0, max(2, int(np.ceil(length / step_um)) * 2 + 1))
    samples = p0[None, :] + t[:, None] * (p1 - p0)[None, :]
    near = np.argmin(np.linalg.norm(pos[None, :, :] - samples[:, None, :], axis=2), axis=1)
    _, first = np.unique(near, return_index=True)
    index = near[np.sort(first)]
    u = (p1 - p0) / length
    return index, (pos[index] - p0[None, :]) @ u


def scan_fit_rows(fits_path: str | Path, index: np.ndarray, n_frames: int | None = None) -> dict[str, np.ndarray]:
    """Rows ``index`` of ``/entry/fits`` of a scan fit (`fits.scan.driver.fit_scan`), for `fit_line`.

    Parameters
    ----------
    fits_path : HDF5 file with ``/entry/fits`` (``xmodel fit``; its neighbour passes included).
    index : (M,) scan point indices of the line (`line_points`).
    n_frames : frames of the reduction the line was taken from; the scan fit must have as many.

    Returns
    -------
    dict of arrays with leading axis M (`fits.scan.results.FIT_DATASETS` keys).
    """
    return store.read_rows(fits_path, index, n_frames)


def bulk_points(R: np.ndarray, tolerance_deg: float) -> np.ndarray:
    """Indices of the points that define the bulk orientation: the largest group of orientations
    within ``tolerance_deg`` (misorientation under cubic symmetry) of one of them.

    Parameters
    ----------
    R : (M, 3, 3) fitted SL orientations (crystal -> lab) of the points along the line.
    tolerance_deg : misorientation (deg) within which orientations belong to one plateau
        (`LineSettings.bulk_tolerance_deg`).

    Returns
    -------
    (K,) sorted indices into ``R``; the centre is the point with the most orientations within
    the tolerance, the earliest along the line on ties (the line's own domain when it crosses
    a grain boundary into an equally long run of another).

    Notes
    -----
    Across a domain boundary the SL rotates continuously by 8-14 deg over microns (paper,
    Fig. 3b,c) or by up to 90 deg (Fig. 4), while the bulk is a plateau of constant
    orientation; the densest plateau is therefore the bulk even where the first points of the
    line already lie in the boundary (then "the first points" would be a tilted reference).
    Validation: tests/fits/scan/test_boundary.py (a line starting at a tilted point).
    """
    R = np.asarray(R, float)
    if R.shape[0] == 0:
        return np.zeros(0, int)
    mis = np.degrees(np.stack([np.atleast_1d(orientation.misorientation_angle(R[j], R)) for j in range(R.shape[0])]))
    near = mis <= tolerance_deg
    centre = int(np.argmax(near.sum(axis=1)))          # argmax: the first of equal counts
    return np.flatnonzero(near[centre])


def scan_bulk_orientation(R_scan: np.ndarray, status: np.ndarray, R_line: np.ndarray,
                          tolerance_deg: float, share: float) -> np.ndarray | None:
    """The line's domain's bulk SL orientation from a whole scan fit.

    Parameters
    ----------
    R_scan : (N, 3, 3) ``/entry/fits/orientation_matrix`` of the scan (NaN where not fitted).
    status : (N,) ``/entry/fits/status`` codes; only `FitStatus.OK` frames count.
    R_line : (K, 3, 3) the line's clean fitted orientations, in order along the line.
    tolerance_deg : misorientation (deg) within which map frames share a line point's orientation.
    share : the first line point whose orientation at least this fraction of the best-supported
        one's count of map frames shares is the bulk (the line's own domain at a grain boundary).

    Returns
    -------
    (3, 3) chordal mean of the map frames within ``tolerance_deg`` of that line point, or None
    when no line point is shared by any ok map frame.

    Notes
    -----
    A line can start inside a boundary zone, or cross a domain too small for a plateau along the
    line itself (Fig. 4: a few microns); the rotation is wanted "relative to the
    domain's bulk orientation", which the whole map shows best: the bulk is the orientation that
    the most map frames share. The candidates are the line's own orientations, not every map
    frame, because under cubic symmetry orientations of other domains are often within 20-30 deg.
    """
    members = scan_bulk_members(R_scan, status, R_line, tolerance_deg, share)
    return None if members is None else orientation.mean_orientation(np.asarray(R_scan, float)[members])


def scan_bulk_members(R_scan: np.ndarray, status: np.ndarray, R_line: np.ndarray, tolerance_deg: float,
                      share: float) -> np.ndarray | None:
    """The map frames whose mean is `scan_bulk_orientation` (same arguments): a (N,) boolean
    mask, or None when no line point is shared by any ok map frame."""
    R_scan = np.asarray(R_scan, float)
    R_line = np.asarray(R_line, float).reshape(-1, 3, 3)
    ok = (np.asarray(status) == FitStatus.OK.code) & np.all(np.isfinite(R_scan), axis=(1, 2))
    if not ok.any() or R_line.shape[0] == 0:
        return None
    cand = R_scan[ok]
    near = np.stack([np.degrees(np.atleast_1d(orientation.misorientation_angle(r, cand))) <= tolerance_deg
                     for r in R_line])                                           # (K, N_ok)
    count = near.sum(axis=1)
    if count.max() == 0:
        return None
    k = int(np.flatnonzero(count >= share * count.max())[0])
    members = np.zeros(R_scan.shape[0], bool)
    members[np.flatnonzero(ok)[near[k]]] = True
    return members


def rotation_stderr_deg(R: np.ndarray, R_bulk: np.ndarray, cov_deg2: np.ndarray, cov_bulk_deg2: np.ndarray,
                        cross_deg2: np.ndarray | None = None) -> np.ndarray:
    """Standard error (deg) of the misorientation angle between orientations and a reference.

    Parameters
    ----------
    R : (M, 3, 3) SL crystal -> lab orientations of the points.
    R_bulk : (3, 3) the reference (bulk) orientation.
    cov_deg2 : (M, 3, 3) covariance (deg^2) of each point's lab rotation error
        (`fits.scan.angles.lab_rotation_covariance`).
    cov_bulk_deg2 : (3, 3) covariance (deg^2) of the reference's lab rotation error.
    cross_deg2 : (M, 3, 3) covariance between a point's error and the reference's (a point that
        is one of those the reference averages); None: independent.

    Returns
    -------
    (M,) ``sqrt(n^T (C_i + C_B - X_i - X_i^T) n)`` with ``n`` the unit lab axis of the
    misorientation (`fits.scan.angles.misorientation_vector`); where the angle is exactly 0,
    ``sqrt(trace(...))`` (the root mean square length of the error vector). NaN where a
    covariance or orientation is not finite.

    Notes
    -----
    First-order propagation, ``var f = g^T C g`` with ``g`` the gradient of ``f`` (JCGM 100:2008,
    Guide to the expression of uncertainty in measurement, eq. 13): the angle ``theta = |w|`` of
    ``D = R_i (R_B S)^T`` changes by ``n . (e_i - e_B)`` for small lab rotations ``e_i`` of the
    point and ``e_B`` of the reference (`misorientation_vector`). Valid where ``theta`` is well
    above its standard error; near 0 the angle is the length of a 3-vector error and its
    distribution is skewed (biased upwards, chi-like).
    """
    R = np.asarray(R, float).reshape(-1, 3, 3)
    c = np.asarray(cov_deg2, float).reshape(-1, 3, 3) + np.asarray(cov_bulk_deg2, float)[None]
    if cross_deg2 is not None:
        x = np.asarray(cross_deg2, float).reshape(-1, 3, 3)
        c = c - x - np.swapaxes(x, 1, 2)
    w = misorientation_vector(R, np.asarray(R_bulk, float))
    norm = np.linalg.norm(w, axis=1)
    n = w / np.where(norm > 0, norm, 1.0)[:, None]
    var = np.where(norm > 0, np.einsum("mi,mij,mj->m", n, c, n), np.trace(c, axis1=1, axis2=2))
    ok = np.isfinite(var) & (var >= 0)
    return np.where(ok, np.sqrt(np.where(ok, var, 0.0)), np.nan)


def compression_pct(a: np.ndarray, a_stderr: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compression ``100 (1 - a_i / a_bulk)`` (%) of each point and its standard error.

    Parameters
    ----------
    a, a_stderr : (M,) lattice constants (A) and their standard errors (A).
    members : (M,) boolean, the points whose mean is ``a_bulk``.

    Returns
    -------
    compression, stderr : (M,) % (positive: smaller than the bulk); NaN without bulk points or
        where ``a`` or its error is not finite.

    Notes
    -----
    First-order propagation (JCGM 100:2008, eq. 13) with independent frames:
    ``a_bulk = mean_K a_k``, ``var a_bulk = sum_K s_k^2 / K^2``, ``cov(a_i, a_bulk) = s_i^2 / K``
    when ``i`` is one of the ``K``, and
    ``var c_i = (100 / a_B)^2 (s_i^2 + (a_i / a_B)^2 var a_B - 2 (a_i / a_B) cov(a_i, a_B))``.
    """
    a = np.asarray(a, float)
    s = np.asarray(a_stderr, float)
    members = np.asarray(members, bool) & np.isfinite(a) & np.isfinite(s)
    out = np.full(a.shape, np.nan), np.full(a.shape, np.nan)
    k = int(members.sum())
    if k == 0:
        return out
    a_b = float(np.mean(a[members]))
    var_b = float(np.sum(s[members] ** 2)) / k ** 2
    cov_ib = np.where(members, s ** 2 / k, 0.0)
    r = a / a_b
    var = (100.0 / a_b) ** 2 * (s ** 2 + r ** 2 * var_b - 2.0 * r * cov_ib)
    return 100.0 * (1.0 - r), np.sqrt(np.maximum(var, 0.0))


def _line_covariances(polar: np.ndarray, setup: FitSetup, settings: FitSettings, params: dict[int, object]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per line point: the lattice constant's standard error (A), the lab rotation covariance
    (deg^2, `lab_rotation_covariance`) and `orientation_stderr_deg`, from the covariance of the
    scan refinement's parameters at the point's fitted ``params`` (`fits.batch.covariance_at`);
    NaN for points not in ``params``."""
    M = polar.shape[0]
    a_s, cov, o_s = np.full(M, np.nan), np.full((M, 3, 3), np.nan), np.full(M, np.nan)
    rows = sorted(params)
    vary = list(settings.refine.vary)
    if not rows or not all(n in vary for n in ORIENTATION_PARAMETERS + ("lattice_constant",)):
        return a_s, cov, o_s
    obs = polar.reshape(M, -1)[rows][:, setup.index]
    valid, bad = frame_checks(obs, setup.weight)
    w = np.where(valid & ~bad[:, None], setup.weight[None, :], 0.0)
    c = covariance_at(np.where(valid, obs, 0.0), w, setup.model, stack_params([params[i] for i in rows]), vary,
                      prior=settings.refine.prior(), clusters=setup.error_clusters(settings.refine))
    j = [vary.index(n) for n in ORIENTATION_PARAMETERS]
    t1 = np.degrees([float(params[i].tilt1) for i in rows])
    t2 = np.degrees([float(params[i].tilt2) for i in rows])
    a_s[rows] = c.stderr["lattice_constant"]
    cov[rows] = lab_rotation_covariance(c.covariance[:, j][:, :, j], t1, t2)
    o_s[rows] = orientation_stderr_deg(c.covariance[:, j][:, :, j], t1, t2)
    return a_s, cov, o_s


def status_rank(settings: FitSettings) -> dict[FitStatus, int]:
    """Rank of each usable status on a line (`LineSettings.line_preference`; lower is preferred)."""
    return {FitStatus[name.upper()]: g for g, names in enumerate(settings.line.line_preference) for name in names}


def fit_line(polar: np.ndarray, setup: FitSetup, settings: FitSettings = FitSettings(),
             scan_fit: dict[str, np.ndarray] | None = None, scan_bulk: dict[str, np.ndarray] | None = None
             ) -> dict[str, np.ndarray]:
    """Fit frames in order along a line with warm starts.

    Parameters
    ----------
    polar : (M, C, Q) polar images in order along the line (``/entry/reduction/polar`` rows).
    setup : model, template and template bank (`fits.scan.setup.setup_from_reduction`).
    settings : scan fit options (search, refinement, significance thresholds) and `LineSettings`
        (bulk tolerance, start significance, status preference, the same-orientation angle).
    scan_fit : the scan fit's results at the same M points (`scan_fit_rows`), each one more
        start; None: warm starts and the search only.
    scan_bulk : ``{"orientation_matrix": (N, 3, 3), "status": (N,)}`` of the whole scan fit, and
        optionally ``"orientation_stderr_deg": (N,)``: the rotation is then measured from the
        domain's bulk over the map (`scan_bulk_orientation`) instead of the densest plateau
        along the line.

    Returns
    -------
    dict of (M,) arrays: ``rotation_deg`` (misorientation to the bulk orientation, deg),
    ``lattice_constant`` (A), ``compression_pct`` (``100 (1 - a / a_bulk)``, %, ``a_bulk`` the
    mean over the line's bulk points), ``tilt_deg``, ``inplane_deg``, ``disorder_deg`` (FWHM,
    deg), their standard errors ``rotation_deg_stderr``, ``lattice_constant_stderr``,
    ``compression_pct_stderr`` and ``orientation_stderr_deg`` (one orientation uncertainty,
    `fits.scan.angles.orientation_stderr_deg`), ``objective`` (Poisson deviance), ``bulk``
    (bool: a point of the bulk plateau), ``status``, ``message``; ``orientation_matrix``
    (M, 3, 3) SL crystal -> lab; ``bulk_orientation`` (3, 3).

    Notes
    -----
    Each frame is refined (`fits.scan.starts.refine_starts`) from the previous fitted point (warm
    start) and from the scan fit's result at this point, and searched afresh
    (`fits.scan.frames.fit_frames`); the best-ranked status (``line_preference``) with the lowest
    Poisson deviance wins (`fits.scan.starts.choose`; the message says which), so a
    sharp rotation (Fig. 4g-j: 90 deg over 4 um) is not followed into a wrong minimum and a
    wrong scan fit is not copied. Frames whose SL ring significance is below
    ``min_significance`` are not searched, but refined from the starts down to
    ``min_start_significance`` (the refinement's likelihood-ratio test, `fits.batch.fit_batch`,
    decides whether there is SL signal: the weak rings at a domain edge, where the rotation is
    largest, are often below the search's threshold). Frames without SL signal are skipped (status no signal) and do not reset the
    warm start. At a mixed point (two grains in the beam) the lower deviance only says whose SL
    peaks are stronger, so the line keeps its own grain (the warm start) when that fits too. The
    rotation is the misorientation angle under cubic symmetry
    (`xmodel.orientation.misorientation_angle`) to the chordal mean (`mean_orientation`) of
    the bulk plateau (`bulk_points` of the points with status ok), i.e. relative to the
    domain's bulk orientation (paper Fig. 3b,c).

    Standard errors (points with status ok or at bound; NaN otherwise: a mixed pattern or a fit
    that did not converge has no error bar): the covariance of the refined parameters at the
    chosen fit (`fits.batch.covariance_at`, the dispersion-scaled inverse Fisher information
    that `fits.batch.fit_batch` reports), propagated to first order (`rotation_stderr_deg`,
    `compression_pct`). The reference's own error counts: the chordal mean of ``K`` orientations
    moves by the mean of their errors (first order), covariance ``sum C_k / K^2``, correlated
    with a point that is one of them (``C_i / K``). With ``scan_bulk`` the reference is the mean
    of ``K`` map frames, each taken as isotropic with its ``orientation_stderr_deg`` (the map
    stores no full covariance) when ``scan_bulk`` holds it, else as precise as the line's bulk
    points; the correlation of a line point with the same frame among the map's ``K`` (a
    ``1 / K`` term) is left out.
    Validation: synthetic rotation ramps (tests/fits/scan/test_boundary.py); the 31 x 31 digital
    twin's boundary lines against its truth (rotation within 1 deg where the SL is visible).
    """
    polar = np.asarray(polar, np.float64)
    M = polar.shape[0]
    line, min_sig = settings.line, settings.search.min_significance
    rank = status_rank(settings)
    out = {"orientation_matrix": np.full((M, 3, 3), np.nan), "lattice_constant": np.full(M, np.nan),
           "disorder_deg": np.full(M, np.nan), "objective": np.full(M, np.nan),
           "status": np.full(M, FitStatus.NO_SIGNAL.code, np.int32),
           "message": np.array([FitStatus.NO_SIGNAL.value] * M, dtype=object)}
    a0 = float(setup.template.lattice_constant)
    if scan_fit is not None and scan_fit["orientation_matrix"].shape[0] != M:
        raise ValueError(f"scan_fit has {scan_fit['orientation_matrix'].shape[0]} rows for {M} frames; "
                         f"take its rows at the line's points (scan_fit_rows(fits, index)).")
    prev = None
    chosen: dict[int, object] = {}
    for i in range(M):
        starts = [] if prev is None else [Start(0, prev, "warm start", (0, 0))]
        if scan_fit is not None and np.all(np.isfinite(scan_fit["orientation_matrix"][i])):
            starts.append(Start(0, params_from_row(scan_fit, i, setup, settings), "scan fit start", (0, 1)))
        a_ring = [float(s.params.lattice_constant) for s in starts] or [a0]
        prof, level = ring_profiles(polar[i:i + 1], setup.q, a_ring[:1], setup.bank.shells,
                                    settings.search.ring_sigma_q)
        significance = float(ring_significance(prof, level).max())
        floor = line.min_start_significance if starts else min_sig
        if not significance >= floor:
            out["message"][i] = (f"{FitStatus.NO_SIGNAL.value}: largest SL ring significance "
                                 f"{significance:.1f} < {floor:g}")
            continue
        tried: list[Candidate] = []
        refined = refine_starts(setup, polar[i].reshape(1, -1)[:, setup.index], starts, settings, min_rows=2)
        # a weak frame (not searched) counts only with a converged fit (ok or at a bound)
        weak_ok = (FitStatus.OK, FitStatus.AT_BOUND) if significance < min_sig else tuple(rank)
        for c in refined:
            if c.status in weak_ok and np.isfinite(c.objective):
                p1 = c.params.replace(base_orientation=c.orientation, inplane=0.0, tilt1=0.0, tilt2=0.0)
                tried.append(Candidate(i, c.objective, c.status, p1, c.source, c.order,
                                       message=f"{c.source}: {c.status.value}"))
        if significance >= min_sig:
            searched = fit_frames(polar[i:i + 1], setup, settings)
            s_st = FitStatus.from_code(searched["status"][0])
            if s_st in rank and np.isfinite(searched["objective"][0]):
                tried.append(Candidate(i, float(searched["objective"][0]), s_st,
                                       params_from_row(searched, 0, setup, settings), "search", (1,),
                                       result=searched, message=f"search: {searched['message'][0]}"))
            elif not tried:
                out["status"][i], out["message"][i] = searched["status"][0], searched["message"][0]
                continue
        if not tried:
            out["message"][i] = (f"{FitStatus.NO_SIGNAL.value}: no start explains SL peaks"
                                 + (f" ({refined[0].fit.messages[refined[0].row]})" if refined else ""))
            continue
        # ok / at bound first, then mixed, then not converged; the lower Poisson deviance among
        # equals. A search that finds a mixed pattern (two orientations in the beam) loses to a
        # clean refinement from the line's own orientation: the line follows its domain.
        c = choose(tried, rank=lambda c: rank[c.status])[i]
        obj, p, st, msg = c.objective, c.params, c.status, c.message
        # ... but a search that found this same orientation (within same_orientation_deg) with SL
        # peaks left over is evidence of a second grain; a mixed verdict on another orientation
        # is only a worse fit
        R_best = c.orientation
        if st.success and any(t.status is FitStatus.MIXED and np.degrees(orientation.misorientation_angle(
                R_best, t.orientation)) <= line.same_orientation_deg for t in tried):
            st, msg = FitStatus.MIXED, f"{msg}; the search found a second orientation (mixed pattern)"
        # a mixed pattern holds two grains, and the lower deviance only says whose SL peaks are
        # stronger: the line keeps following its own grain when the warm start also fits
        warm = [t for t in tried if t.source == "warm start" and t.status.success]
        away = np.degrees(orientation.misorientation_angle(R_best, warm[0].orientation)) if warm else 0.0
        if st is FitStatus.MIXED and away > line.same_orientation_deg:
            obj, p, wmsg = warm[0].objective, warm[0].params, warm[0].message
            msg = (f"{wmsg}; mixed pattern: the line's own grain kept (the {msg.split(':')[0]} fit, "
                   f"{away:.0f} deg away, has the lower deviance)")
        out["orientation_matrix"][i] = np.asarray(p.sl_orientation(), np.float64)
        out["lattice_constant"][i] = float(p.lattice_constant)
        out["disorder_deg"][i] = float(np.degrees(p.disorder) * FWHM_PER_SIGMA)
        out["objective"][i] = obj
        out["status"][i], out["message"][i] = st.code, msg
        if st in (FitStatus.OK, FitStatus.AT_BOUND):
            chosen[i] = p
        prev = p
    fitted = np.flatnonzero(np.all(np.isfinite(out["orientation_matrix"]), axis=(1, 2)))
    out["rotation_deg"] = np.full(M, np.nan)
    out["rotation_deg_stderr"] = np.full(M, np.nan)
    out["bulk"] = np.zeros(M, bool)
    out["bulk_orientation"] = np.full((3, 3), np.nan)
    out["lattice_constant_stderr"], cov, out["orientation_stderr_deg"] = _line_covariances(
        polar, setup, settings, chosen)
    members = None
    if fitted.size:
        # the bulk is taken from clean fits (status ok) where there are any: a mixed pattern or a
        # fit at a bound is no reference
        clean = fitted[out["status"][fitted] == FitStatus.OK.code]
        pool = clean if clean.size else fitted
        ref = pool[bulk_points(out["orientation_matrix"][pool], line.bulk_tolerance_deg)]
        bulk = None
        if scan_bulk is not None:       # the domain's plateau over the whole map
            members = scan_bulk_members(scan_bulk["orientation_matrix"], scan_bulk["status"],
                                        out["orientation_matrix"][pool], line.bulk_tolerance_deg, line.bulk_share)
            if members is not None:
                bulk = orientation.mean_orientation(np.asarray(scan_bulk["orientation_matrix"], float)[members])
        if bulk is not None:
            ref = pool[np.degrees(np.atleast_1d(orientation.misorientation_angle(
                bulk, out["orientation_matrix"][pool]))) <= line.bulk_tolerance_deg]
        else:
            bulk = orientation.mean_orientation(out["orientation_matrix"][ref])
        out["bulk"][ref] = True
        out["bulk_orientation"] = bulk
        out["rotation_deg"][fitted] = np.degrees(np.atleast_1d(
            orientation.misorientation_angle(bulk, out["orientation_matrix"][fitted])))
        # the reference's error: the mean of its members' errors (first order)
        own = out["bulk"] & np.all(np.isfinite(cov), axis=(1, 2))
        k = int(own.sum())
        cov_bulk = cov[own].sum(axis=0) / k ** 2 if k else np.full((3, 3), np.nan)
        cross = np.where(own[:, None, None], cov / max(k, 1), 0.0)
        if members is not None:
            cross = None
            if "orientation_stderr_deg" in scan_bulk:
                s_map = np.asarray(scan_bulk["orientation_stderr_deg"], float)[members]
                cov_bulk = np.eye(3) * np.sum(s_map ** 2) / 3.0 / s_map.size ** 2
        out["rotation_deg_stderr"][fitted] = rotation_stderr_deg(
            out["orientation_matrix"][fitted], bulk, cov[fitted], cov_bulk,
            None if cross is None else cross[fitted])
    out["compression_pct"], out["compression_pct_stderr"] = compression_pct(
        out["lattice_constant"], out["lattice_constant_stderr"], out["bulk"])
    ang = orientation.decompose_orientation(out["orientation_matrix"], list(settings.search.zones))
    out["tilt_deg"], out["inplane_deg"] = ang["tilt_deg"], ang["inplane_deg"]
    return out


#: the NeXus group of a line file ``<prefix>.h5`` (`write_line`)
LINE_GROUP = "/entry/boundary"
#: per-point fields of a line: name -> (unit string or None, description)
LINE_FIELDS: dict[str, tuple[str | None, str]] = {
    "distance_um": ("um", "distance along the line from its start"),
    "point": (None, "scan point (frame index) nearest to the line"),
    "y_um": ("um", "scan position, slow axis"),
    "x_um": ("um", "scan position, fast axis"),
    "rotation_deg": ("degree", "misorientation to the bulk orientation (cubic symmetry)"),
    "rotation_deg_stderr": ("degree", "standard error of rotation_deg, first-order propagation"),
    "lattice_constant": ("angstrom", "SL lattice constant"),
    "lattice_constant_stderr": ("angstrom", "standard error of the lattice constant"),
    "compression_pct": ("percent", "100 (1 - a / a_bulk), a_bulk the mean over the bulk points"),
    "compression_pct_stderr": ("percent", "standard error of compression_pct, first-order propagation"),
    "tilt_deg": ("degree", "out-of-plane tilt of the SL"),
    "inplane_deg": ("degree", "in-plane angle of the SL"),
    "orientation_stderr_deg": ("degree", "one orientation uncertainty, root mean square misorientation"),
    "disorder_deg": ("degree", "NC orientational disorder dPhi (FWHM)"),
    "bulk": (None, "1: a point of the bulk plateau that defines the reference (bulk_points)"),
    "status": (None, "outcome of the point's fit, see attribute status_codes"),
}


def write_line(result: dict, distance_um: np.ndarray, index: np.ndarray, positions_um: np.ndarray,
               out_prefix: str | Path, *, parameters: dict | None = None,
               configs: tuple[str | Path, ...] = ()) -> list[Path]:
    """Write ``<prefix>.csv``, ``<prefix>.json``, ``<prefix>.h5`` and ``<prefix>.png`` (rotation
    and a vs distance).

    Columns: distance_um, point, y_um, x_um, then the values of `LINE_FIELDS` that ``result``
    holds (rotation_deg to the bulk and its standard error, lattice_constant (A) and its
    standard error, compression_pct and its standard error, tilt_deg, inplane_deg,
    orientation_stderr_deg, disorder_deg), bulk (1: a point of the bulk plateau that defines
    the reference, `bulk_points`), status, message. The JSON also holds ``bulk_orientation`` (SL
    crystal -> lab, 3 x 3); the plot marks the bulk points (filled). The HDF5 file is NeXus:
    ``/entry/boundary`` (NXprocess with the settings ``parameters`` and the ``configs``) holds
    the columns (`LINE_FIELDS`) and the NXdata ``rotation`` (rotation, tilt and in-plane angle
    over the distance, the file's default plot) and ``lattice_constant``.
    """
    from xmodel.figures import save_figure

    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    per_point = ("distance_um", "point", "y_um", "x_um", "bulk", "status")
    keys = [k for k in LINE_FIELDS if k not in per_point and k in result]
    rows = []
    for j in range(len(index)):
        row = {"distance_um": float(distance_um[j]), "point": int(index[j]),
               "y_um": float(positions_um[index[j], 0]), "x_um": float(positions_um[index[j], 1])}
        row.update({k: (None if not np.isfinite(result[k][j]) else float(result[k][j])) for k in keys})
        row["bulk"] = int(bool(result["bulk"][j])) if "bulk" in result else 0
        row["status"] = int(result["status"][j])
        row["message"] = str(result["message"][j])
        rows.append(row)
    csv_path, json_path, h5_path, png_path = (prefix.with_suffix(s) for s in (".csv", ".json", ".h5", ".png"))
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["distance_um"])
        w.writeheader()
        w.writerows(rows)
    units = {"distance_um": "um"} | {k: f"{LINE_FIELDS[k][0]} ({LINE_FIELDS[k][1]})" for k in keys}
    bulk_R = np.asarray(result.get("bulk_orientation", np.full((3, 3), np.nan)), float)
    json_path.write_text(json.dumps({"units": units, "points": rows, "bulk_orientation": (
        None if not np.all(np.isfinite(bulk_R)) else bulk_R.tolist())}, indent=1))
    columns = {k: np.array([np.nan if r[k] is None else r[k] for r in rows], float)
               for k in ("distance_um", "y_um", "x_um", *keys)}
    columns.update({k: np.array([r[k] for r in rows], np.int32) for k in ("point", "bulk", "status")})
    _write_line_nexus(h5_path, columns, [r["message"] for r in rows], bulk_R, parameters or {}, configs)
    save_figure(_line_figure(distance_um, result), png_path, dpi=100)
    return [csv_path, json_path, h5_path, png_path]


def _write_line_nexus(path: Path, columns: dict[str, np.ndarray], messages: list[str], bulk_R: np.ndarray,
                      parameters: dict, configs) -> None:
    """``<prefix>.h5`` of `write_line`: ``/entry/boundary`` with the columns and two NXdata plots."""
    import h5py

    from fits.status import status_codes_attribute
    from xmodel import nexus

    with h5py.File(path, "w") as f:
        entry = nexus.create_entry(f, title="xmodel boundary: fits along a line")
        g = nexus.describe_process(entry.create_group(LINE_GROUP.rsplit("/", 1)[-1]), program="xmodel boundary",
                                   configs=configs, parameters=parameters)
        for key, (units, description) in LINE_FIELDS.items():
            if key in columns:
                nexus.write_field(g, key, columns[key], units=units, description=description)
        g["status"].attrs["status_codes"] = status_codes_attribute()
        nexus.write_field(g, "message", np.array(messages, dtype=h5py.string_dtype()), description="fit message")
        nexus.write_field(g, "bulk_orientation", bulk_R, description="bulk orientation, SL crystal -> lab (3 x 3)")
        distance = ("distance_um", columns["distance_um"], "um", "distance along the line (um)")
        rot = nexus.create_nxdata(
            g, "rotation", "rotation_deg", columns["rotation_deg"], axes=[distance], units="degree",
            long_name="rotation to the bulk (deg)", title="rotation along the line (Fig. 3b, 4)",
            auxiliary={"tilt_deg": (columns["tilt_deg"], "degree", "tilt (deg)"),
                       "inplane_deg": (columns["inplane_deg"], "degree", "in-plane angle (deg)")})
        nexus.create_nxdata(g, "lattice_constant", "lattice_constant", columns["lattice_constant"], axes=[distance],
                            units="angstrom", long_name="a (A)", title="lattice constant along the line (Fig. 3c)")
        nexus.set_default(rot)


def _line_figure(distance_um: np.ndarray, result: dict):
    """Rotation (bulk points filled) and lattice constant against the distance along the line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    axes[0].plot(distance_um, result["rotation_deg"], "o-", mfc="none")
    if "bulk" in result and np.any(result["bulk"]):
        b = np.asarray(result["bulk"], bool)
        axes[0].plot(np.asarray(distance_um)[b], np.asarray(result["rotation_deg"])[b], "o", color="C0",
                     label="bulk reference")
        axes[0].legend(loc="best", fontsize=8)
    axes[0].set_ylabel("rotation (deg)")
    axes[1].plot(distance_um, result["lattice_constant"], "s-", color="C1")
    axes[1].set_ylabel("a (Å)")
    axes[1].set_xlabel("distance along the line (µm)")
    return fig


def format_line(result: dict, distance_um: np.ndarray, index: np.ndarray) -> str:
    """A text table of a line: distance, point, rotation, lattice constant and compression, each
    ``value +- standard error`` (`fit_line`), bulk mark and status."""
    def pm(k: str, j: int, f: str) -> str:
        v = float(np.asarray(result[k])[j]) if k in result else np.nan
        e = float(np.asarray(result[k + "_stderr"])[j]) if k + "_stderr" in result else np.nan
        if not np.isfinite(v):
            return "-"
        return f.format(v) + (f" +- {f.format(e)}" if np.isfinite(e) else "")

    lines = ["distance_um  point  rotation_deg      a_angstrom          compression_pct  bulk  status"]
    for j in range(len(index)):
        st = FitStatus.from_code(int(result["status"][j])).value
        bulk = "*" if "bulk" in result and result["bulk"][j] else ""
        lines.append(f"{float(distance_um[j]):11.2f}  {int(index[j]):5d}  {pm('rotation_deg', j, '{:.2f}'):16s}  "
                     f"{pm('lattice_constant', j, '{:.2f}'):18s}  {pm('compression_pct', j, '{:.2f}'):15s}  "
                     f"{bulk:4s}  {st}")
    return "\n".join(lines)


def read_line(results, index: np.ndarray) -> np.ndarray:
    """Polar images of the points ``index`` (any order) of a reduced scan (`xmodel.reduced`)."""
    scan = results if isinstance(results, ReducedScan) else open_reduced(results)
    return scan.polar(index)
