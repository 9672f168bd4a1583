"""Fits along a line across a grain boundary, warm-started point to point (paper Fig. 3b,c, Fig. 4,
Table S3).

The scan points nearest to a straight line from ``(y0, x0)`` to ``(y1, x1)`` (um, scan positions
(slow, fast)) are fitted in order along the line; each fit starts from the previous point's
result (orientation, lattice constant, scales), the first from the template search
(`fits.search`); the scan fit's result at the point (``xmodel fit``, with its neighbour passes)
is one more start where it is given. The rotation is reported relative to the domain's bulk
orientation: the misorientation angle under cubic symmetry
(`xmodel.orientation.misorientation_angle`) to the mean orientation of the bulk plateau, the
largest group of fitted points with the same orientation (`bulk_points`).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import jax
import numpy as np

from fits.scan_fit import (FitSettings, FitSetup, decompose_orientation, fit_frames, params_from_row,
                           read_fits)
from fits.status import FitStatus
from xmodel import orientation
from xmodel.parameters import FWHM_PER_SIGMA


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


def _mean_orientation(R: np.ndarray) -> np.ndarray:
    """Chordal mean of orientations close to each other under cubic symmetry.

    Each orientation is replaced by its symmetric copy ``R S`` nearest the first one, the
    matrices are averaged and projected back onto SO(3) by SVD (Moakher, SIAM J. Matrix Anal.
    Appl. 24, 1 (2002), doi:10.1137/S0895479801383877).
    """
    ops = orientation.cubic_symmetry_operators()
    ref = R[0]
    aligned = [r @ ops[int(np.argmax(np.trace(ref.T @ r @ ops, axis1=1, axis2=2)))] for r in R]
    u, _, vt = np.linalg.svd(np.mean(aligned, axis=0))
    return u @ np.diag([1.0, 1.0, np.linalg.det(u @ vt)]) @ vt


def scan_fit_rows(fits_path: str | Path, index: np.ndarray, n_frames: int | None = None) -> dict[str, np.ndarray]:
    """Rows ``index`` of ``/entry/fits`` of a scan fit (`fits.scan_fit.fit_scan`), for `fit_line`.

    Parameters
    ----------
    fits_path : HDF5 file with ``/entry/fits`` (``xmodel fit``; its neighbour passes included).
    index : (M,) scan point indices of the line (`line_points`).
    n_frames : frames of the reduction the line was taken from; the scan fit must have as many.

    Returns
    -------
    dict of arrays with leading axis M (`fits.scan_fit.FIT_DATASETS` keys).
    """
    r = read_fits(fits_path)
    n = int(r["status"].shape[0])
    if n_frames is not None and n != int(n_frames):
        raise ValueError(f"{fits_path} holds fits of {n} frames but the reduction has {n_frames}; "
                         f"pass the scan fit of the same scan (--fits), or leave --fits out.")
    index = np.asarray(index, int)
    return {k: v[index] for k, v in r.items() if isinstance(v, np.ndarray) and v.shape[:1] == (n,)}


def bulk_points(R: np.ndarray, tolerance_deg: float = 1.0) -> np.ndarray:
    """Indices of the points that define the bulk orientation: the largest group of orientations
    within ``tolerance_deg`` (misorientation under cubic symmetry) of one of them.

    Parameters
    ----------
    R : (M, 3, 3) fitted SL orientations (crystal -> lab) of the points along the line.
    tolerance_deg : misorientation (deg) within which orientations belong to one plateau.

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
    Validation: tests/fits/test_boundary.py (a line starting at a tilted point).
    """
    R = np.asarray(R, float)
    if R.shape[0] == 0:
        return np.zeros(0, int)
    mis = np.degrees(np.stack([np.atleast_1d(orientation.misorientation_angle(R[j], R)) for j in range(R.shape[0])]))
    near = mis <= tolerance_deg
    centre = int(np.argmax(near.sum(axis=1)))          # argmax: the first of equal counts
    return np.flatnonzero(near[centre])


def scan_bulk_orientation(R_scan: np.ndarray, status: np.ndarray, R_line: np.ndarray,
                          tolerance_deg: float = 1.0, share: float = 0.5) -> np.ndarray | None:
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
    line itself (Fig. 4: a few microns); the issue asks for the rotation "relative to the
    domain's bulk orientation", which the whole map shows best: the bulk is the orientation that
    the most map frames share. The candidates are the line's own orientations, not every map
    frame, because under cubic symmetry orientations of other domains are often within 20-30 deg.
    """
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
    return _mean_orientation(cand[near[k]])


RANK = {FitStatus.OK: 0, FitStatus.AT_BOUND: 0, FitStatus.MIXED: 1, FitStatus.NOT_CONVERGED: 2}
USABLE = tuple(RANK)


def fit_line(polar: np.ndarray, setup: FitSetup, settings: FitSettings = FitSettings(),
             scan_fit: dict[str, np.ndarray] | None = None, bulk_tolerance_deg: float = 1.0,
             min_start_significance: float = 0.0, scan_bulk: dict[str, np.ndarray] | None = None
             ) -> dict[str, np.ndarray]:
    """Fit frames in order along a line with warm starts.

    Parameters
    ----------
    polar : (M, C, Q) polar images in order along the line (``/entry/reduction/polar`` rows).
    setup : model, template and template bank (`fits.scan_fit.setup_from_reduction`).
    settings : scan fit options (search, refinement, significance thresholds).
    scan_fit : the scan fit's results at the same M points (`scan_fit_rows`), each one more
        start; None: warm starts and the search only.
    bulk_tolerance_deg : misorientation (deg) within which fitted points form the bulk
        plateau (`bulk_points`).
    min_start_significance : SL ring significance from which a frame is refined from its starts
        (warm, scan fit); below ``settings.min_significance`` it is not searched.
    scan_bulk : ``{"orientation_matrix": (N, 3, 3), "status": (N,)}`` of the whole scan fit: the
        rotation is then measured from the domain's bulk over the map (`scan_bulk_orientation`)
        instead of the densest plateau along the line.

    Returns
    -------
    dict of (M,) arrays: ``rotation_deg`` (misorientation to the bulk orientation, deg),
    ``lattice_constant`` (A), ``tilt_deg``, ``inplane_deg``, ``disorder_deg`` (FWHM, deg),
    ``objective`` (Poisson deviance), ``bulk`` (bool: a point of the bulk plateau), ``status``,
    ``message``; ``orientation_matrix`` (M, 3, 3) SL crystal -> lab; ``bulk_orientation`` (3, 3).

    Notes
    -----
    Each frame is refined (`fits.batch.fit_batch`) from the previous fitted point (warm start)
    and from the scan fit's result at this point, and searched afresh
    (`fits.scan_fit.fit_frames`); the lowest Poisson deviance wins (the message says which), so a
    sharp rotation (Fig. 4g-j: 90 deg over 4 um) is not followed into a wrong minimum and a
    wrong scan fit is not copied. Frames whose SL ring significance is below
    ``settings.min_significance`` are not searched, but refined from the starts down to
    ``min_start_significance`` (the refinement's likelihood-ratio test, `fits.batch.fit_batch`,
    decides whether there is SL signal: the weak rings at a domain edge, where the rotation is
    largest, are often below the search's threshold). Frames without SL signal are skipped (status no signal) and do not reset the
    warm start. At a mixed point (two grains in the beam) the lower deviance only says whose SL
    peaks are stronger, so the line keeps its own grain (the warm start) when that fits too. The
    rotation is the misorientation angle under cubic symmetry
    (`xmodel.orientation.misorientation_angle`) to the chordal mean (`_mean_orientation`) of
    the bulk plateau (`bulk_points` of the points with status ok), i.e. relative to the
    domain's bulk orientation (issue 4, paper Fig. 3b,c).
    Validation: synthetic rotation ramps (tests/fits/test_boundary.py); the 31 x 31 digital
    twin's boundary lines against its truth (rotation within 1 deg where the SL is visible).
    """
    from fits.batch import fit_batch
    from fits.search import ring_profiles, ring_significance

    polar = np.asarray(polar, np.float64)
    M = polar.shape[0]
    out = {"orientation_matrix": np.full((M, 3, 3), np.nan), "lattice_constant": np.full(M, np.nan),
           "disorder_deg": np.full(M, np.nan), "objective": np.full(M, np.nan),
           "status": np.full(M, FitStatus.NO_SIGNAL.code, np.int32),
           "message": np.array([FitStatus.NO_SIGNAL.value] * M, dtype=object)}
    a0 = float(setup.template.lattice_constant)
    a_range = (settings.a_range_rel[0] * a0, settings.a_range_rel[1] * a0)
    if scan_fit is not None and scan_fit["orientation_matrix"].shape[0] != M:
        raise ValueError(f"scan_fit has {scan_fit['orientation_matrix'].shape[0]} rows for {M} frames; "
                         f"take its rows at the line's points (scan_fit_rows(fits, index)).")
    prev = None
    valid_model = np.asarray(setup.model.pixels.valid)
    for i in range(M):
        starts = [] if prev is None else [("warm start", prev)]
        if scan_fit is not None and np.all(np.isfinite(scan_fit["orientation_matrix"][i])):
            starts.append(("scan fit start", params_from_row(scan_fit, i, setup.template, a_range)))
        a_ring = [float(s[1].lattice_constant) for s in starts] or [a0]
        prof, level = ring_profiles(polar[i:i + 1], setup.q, a_ring[:1], setup.bank.shells)
        significance = float(ring_significance(prof, level).max())
        floor = min_start_significance if starts else settings.min_significance
        if not significance >= floor:
            out["message"][i] = (f"{FitStatus.NO_SIGNAL.value}: largest SL ring significance "
                                 f"{significance:.1f} < {floor:g}")
            continue
        tried = []                                   # (objective, params, status, message)
        if starts:
            obs = polar[i].reshape(-1)[setup.index]
            v = np.isfinite(obs) & valid_model & (setup.weight > 0)
            rows = [p for _, p in starts] + [starts[0][1]] * (2 - len(starts))   # two rows: one compile
            w = np.where(v, setup.weight, 0.0)[None].repeat(2, 0)
            w[len(starts):] = 0.0
            init = jax.tree_util.tree_map(lambda *x: np.stack([np.asarray(a) for a in x]), *rows)
            fit = fit_batch(np.where(v, obs, 0.0)[None].repeat(2, 0), w, setup.model, init,
                            list(settings.vary), bounds={"lattice_constant": a_range},
                            max_iter=settings.max_iter, tol=settings.tol)
            # a weak frame (not searched) counts only with a converged fit (ok or at a bound)
            weak_ok = (FitStatus.OK, FitStatus.AT_BOUND) if significance < settings.min_significance else USABLE
            for k, (name, _) in enumerate(starts):
                if fit.status[k] in weak_ok and np.isfinite(fit.objective[k]):
                    p1 = jax.tree_util.tree_map(lambda x: x[k], fit.params)
                    p1 = p1.replace(base_orientation=np.asarray(p1.sl_orientation(), np.float64),
                                    inplane=0.0, tilt1=0.0, tilt2=0.0)
                    tried.append((float(fit.objective[k]), p1, fit.status[k], f"{name}: {fit.status[k].value}"))
        if significance >= settings.min_significance:
            searched = fit_frames(polar[i:i + 1], setup, settings)
            s_st = FitStatus.from_code(searched["status"][0])
            if s_st in USABLE and np.isfinite(searched["objective"][0]):
                tried.append((float(searched["objective"][0]), params_from_row(searched, 0, setup.template, a_range),
                              s_st, f"search: {searched['message'][0]}"))
            elif not tried:
                out["status"][i], out["message"][i] = searched["status"][0], searched["message"][0]
                continue
        if not tried:
            k = 0 if starts else None
            out["message"][i] = (f"{FitStatus.NO_SIGNAL.value}: no start explains SL peaks"
                                 + (f" ({fit.messages[k]})" if k is not None else ""))
            continue
        # ok / at bound first, then mixed, then not converged; the lower Poisson deviance among
        # equals. A search that finds a mixed pattern (two orientations in the beam) loses to a
        # clean refinement from the line's own orientation: the line follows its domain.
        obj, p, st, msg = min(tried, key=lambda c: (RANK[c[2]], c[0]))
        # ... but a search that found this same orientation (within 2 deg) with SL peaks left over
        # is evidence of a second grain; a mixed verdict on another orientation is only a worse fit
        R_best = np.asarray(p.sl_orientation(), np.float64)
        if st.success and any(c[2] is FitStatus.MIXED and np.degrees(orientation.misorientation_angle(
                R_best, np.asarray(c[1].sl_orientation(), np.float64))) <= 2.0 for c in tried):
            st, msg = FitStatus.MIXED, f"{msg}; the search found a second orientation (mixed pattern)"
        # a mixed pattern holds two grains, and the lower deviance only says whose SL peaks are
        # stronger: the line keeps following its own grain when the warm start also fits
        warm = [c for c in tried if c[3].startswith("warm start") and c[2].success]
        away = np.degrees(orientation.misorientation_angle(
            R_best, np.asarray(warm[0][1].sl_orientation(), np.float64))) if warm else 0.0
        if st is FitStatus.MIXED and away > 2.0:
            obj, p, _, wmsg = warm[0]
            msg = (f"{wmsg}; mixed pattern: the line's own grain kept (the {msg.split(':')[0]} fit, "
                   f"{away:.0f} deg away, has the lower deviance)")
        out["orientation_matrix"][i] = np.asarray(p.sl_orientation(), np.float64)
        out["lattice_constant"][i] = float(p.lattice_constant)
        out["disorder_deg"][i] = float(np.degrees(p.disorder) * FWHM_PER_SIGMA)
        out["objective"][i] = obj
        out["status"][i], out["message"][i] = st.code, msg
        prev = p
    fitted = np.flatnonzero(np.all(np.isfinite(out["orientation_matrix"]), axis=(1, 2)))
    out["rotation_deg"] = np.full(M, np.nan)
    out["bulk"] = np.zeros(M, bool)
    out["bulk_orientation"] = np.full((3, 3), np.nan)
    if fitted.size:
        # the bulk is taken from clean fits (status ok) where there are any: a mixed pattern or a
        # fit at a bound is no reference
        clean = fitted[out["status"][fitted] == FitStatus.OK.code]
        pool = clean if clean.size else fitted
        ref = pool[bulk_points(out["orientation_matrix"][pool], bulk_tolerance_deg)]
        bulk = None
        if scan_bulk is not None:       # the domain's plateau over the whole map
            bulk = scan_bulk_orientation(scan_bulk["orientation_matrix"], scan_bulk["status"],
                                         out["orientation_matrix"][pool], tolerance_deg=bulk_tolerance_deg)
        if bulk is not None:
            ref = pool[np.degrees(np.atleast_1d(orientation.misorientation_angle(
                bulk, out["orientation_matrix"][pool]))) <= bulk_tolerance_deg]
        else:
            bulk = _mean_orientation(out["orientation_matrix"][ref])
        out["bulk"][ref] = True
        out["bulk_orientation"] = bulk
        out["rotation_deg"][fitted] = np.degrees(np.atleast_1d(
            orientation.misorientation_angle(bulk, out["orientation_matrix"][fitted])))
    ang = decompose_orientation(out["orientation_matrix"], list(settings.zones))
    out["tilt_deg"], out["inplane_deg"] = ang["tilt_deg"], ang["inplane_deg"]
    return out


def write_line(result: dict, distance_um: np.ndarray, index: np.ndarray, positions_um: np.ndarray,
               out_prefix: str | Path) -> list[Path]:
    """Write ``<prefix>.csv``, ``<prefix>.json`` and ``<prefix>.png`` (rotation and a vs distance).

    Columns: distance_um, point, y_um, x_um, rotation_deg (to the bulk), lattice_constant (A),
    tilt_deg, inplane_deg, disorder_deg, bulk (1: a point of the bulk plateau that defines the
    reference, `bulk_points`), status, message. The JSON also holds ``bulk_orientation`` (SL
    crystal -> lab, 3 x 3); the plot marks the bulk points (filled).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    keys = ("rotation_deg", "lattice_constant", "tilt_deg", "inplane_deg", "disorder_deg")
    rows = []
    for j in range(len(index)):
        row = {"distance_um": float(distance_um[j]), "point": int(index[j]),
               "y_um": float(positions_um[index[j], 0]), "x_um": float(positions_um[index[j], 1])}
        row.update({k: (None if not np.isfinite(result[k][j]) else float(result[k][j])) for k in keys})
        row["bulk"] = int(bool(result["bulk"][j])) if "bulk" in result else 0
        row["status"] = int(result["status"][j])
        row["message"] = str(result["message"][j])
        rows.append(row)
    csv_path, json_path, png_path = (prefix.with_suffix(s) for s in (".csv", ".json", ".png"))
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["distance_um"])
        w.writeheader()
        w.writerows(rows)
    units = {"distance_um": "um", "rotation_deg": "degree (misorientation to the bulk orientation, cubic symmetry)",
             "lattice_constant": "angstrom", "tilt_deg": "degree", "inplane_deg": "degree",
             "disorder_deg": "degree (FWHM)"}
    bulk_R = np.asarray(result.get("bulk_orientation", np.full((3, 3), np.nan)), float)
    json_path.write_text(json.dumps({"units": units, "points": rows, "bulk_orientation": (
        None if not np.all(np.isfinite(bulk_R)) else bulk_R.tolist())}, indent=1))
    fig, axes = plt.subplots(2, 1, figsize=(5, 5), sharex=True)
    axes[0].plot(distance_um, result["rotation_deg"], "o-", mfc="none")
    if "bulk" in result and np.any(result["bulk"]):
        b = np.asarray(result["bulk"], bool)
        axes[0].plot(np.asarray(distance_um)[b], np.asarray(result["rotation_deg"])[b], "o", color="C0",
                     label="bulk reference")
        axes[0].legend(loc="best", fontsize=8)
    axes[0].set_ylabel("rotation (deg)")
    axes[1].plot(distance_um, result["lattice_constant"], "s-", color="C1")
    axes[1].set_ylabel("a (A)")
    axes[1].set_xlabel("distance along the line (um)")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return [csv_path, json_path, png_path]


def read_line(results: str | Path, index: np.ndarray) -> np.ndarray:
    """Polar images ``/entry/reduction/polar`` of the points ``index`` (any order)."""
    with h5py.File(results, "r") as f:
        if "entry/reduction/polar" not in f:
            raise ValueError(f"{results} has no /entry/reduction/polar; reduce the scan first (xmodel reduce).")
        ds = f["entry/reduction/polar"]
        order = np.argsort(index)
        data = ds[np.asarray(index)[order].tolist()]
    out = np.empty_like(data)
    out[order] = data
    return out
