"""Fits along a line across a grain boundary, warm-started point to point (paper Fig. 3b,c, Fig. 4,
Table S3).

The scan points nearest to a straight line from ``(y0, x0)`` to ``(y1, x1)`` (um, scan positions
(slow, fast)) are fitted in order along the line; each fit starts from the previous point's
result (orientation, lattice constant, scales), the first from the template search
(`fits.search`). The rotation is reported relative to the domain's bulk orientation: the
misorientation angle under cubic symmetry (`xmodel.orientation.misorientation_angle`) to the
mean orientation of the first ``n_reference`` fitted points.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import jax
import numpy as np

from fits.scan_fit import (FitSettings, FitSetup, decompose_orientation, fit_frames)
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


def _params_from_result(r: dict, setup: FitSetup):
    """`ModelParams` of frame 0 of a `fits.scan_fit.fit_frames` result (for warm starts)."""
    return setup.template.replace(
        base_orientation=r["orientation_matrix"][0], inplane=0.0, tilt1=0.0, tilt2=0.0,
        lattice_constant=r["lattice_constant"][0], sl_scale=r["sl_scale"][0],
        diffuse_scale=r["diffuse_scale"][0], al_scale=r["al_scale"][0], background=r["background"][0],
        disorder=(np.radians(r["disorder_deg"][0]) / FWHM_PER_SIGMA if np.isfinite(r["disorder_deg"][0])
                  else setup.template.disorder),
        relationship=(r["relationship"][0] if np.all(np.isfinite(r["relationship"][0]))
                      else setup.template.relationship))


def fit_line(polar: np.ndarray, setup: FitSetup, settings: FitSettings = FitSettings(),
             n_reference: int = 3) -> dict[str, np.ndarray]:
    """Fit frames in order along a line with warm starts.

    Parameters
    ----------
    polar : (M, C, Q) polar images in order along the line.
    setup : model, template and template bank (`fits.scan_fit.setup_from_reduction`).
    n_reference : the bulk orientation is the mean of the first this many fitted points.

    Returns
    -------
    dict of (M,) arrays: ``rotation_deg`` (misorientation to the bulk), ``lattice_constant``,
    ``tilt_deg``, ``inplane_deg``, ``disorder_deg``, ``status``, ``message``,
    ``orientation_matrix`` (M, 3, 3).

    Notes
    -----
    The first frame with signal is fitted by the full search (`fits.scan_fit.fit_frames`); every
    later one is fitted twice, from the previous fitted parameters (`fits.batch.fit_batch`) and
    by the full search, and the fit with the lower Poisson deviance is kept (the message says
    which), so a sharp rotation (Fig. 4g-j: 90 deg over 4 um) is not followed into a wrong
    minimum. Frames without SL signal are skipped (status no signal) and do not reset the warm
    start.
    """
    from fits.batch import fit_batch
    from fits.search import ring_profiles, ring_significance

    polar = np.asarray(polar, np.float64)
    M = polar.shape[0]
    out = {"orientation_matrix": np.full((M, 3, 3), np.nan), "lattice_constant": np.full(M, np.nan),
           "disorder_deg": np.full(M, np.nan), "status": np.full(M, FitStatus.NO_SIGNAL.code, np.int32),
           "message": np.array([FitStatus.NO_SIGNAL.value] * M, dtype=object)}
    a0 = float(setup.template.lattice_constant)
    a_range = (settings.a_range_rel[0] * a0, settings.a_range_rel[1] * a0)
    prev = None
    valid_model = np.asarray(setup.model.pixels.valid)
    for i in range(M):
        searched = None
        if prev is None:
            searched = fit_frames(polar[i:i + 1], setup, settings)
            if not FitStatus.from_code(searched["status"][0]).success:
                out["status"][i], out["message"][i] = searched["status"][0], searched["message"][0]
                continue
            p, st, msg = _params_from_result(searched, setup), FitStatus.from_code(searched["status"][0]), \
                searched["message"][0]
        else:
            obs = polar[i].reshape(-1)[setup.index]
            v = np.isfinite(obs) & valid_model & (setup.weight > 0)
            prof, level = ring_profiles(polar[i:i + 1], setup.q, [float(prev.lattice_constant)], setup.bank.shells)
            if ring_significance(prof, level).max() < settings.min_significance:
                continue
            init = jax.tree_util.tree_map(lambda x: x[None], prev)
            fit = fit_batch(np.where(v, obs, 0.0)[None], np.where(v, setup.weight, 0.0)[None],
                            setup.model, init, list(settings.vary), bounds={"lattice_constant": a_range},
                            max_iter=settings.max_iter, tol=settings.tol)
            p1 = jax.tree_util.tree_map(lambda x: x[0], fit.params)
            st, msg = fit.status[0], f"warm start: {fit.status[0].value}"
            warm_ok = st.success or st is FitStatus.NOT_CONVERGED
            # the warm start can follow a wrong minimum across a sharp rotation: the fresh search
            # (`fits.scan_fit.fit_frames`) is tried too and the lower Poisson deviance wins
            searched = fit_frames(polar[i:i + 1], setup, settings)
            s_st = FitStatus.from_code(searched["status"][0])
            if s_st.success and (not warm_ok or searched["objective"][0] < fit.objective[0]):
                p, st, msg = _params_from_result(searched, setup), s_st, f"search: {searched['message'][0]}"
            elif warm_ok:
                R = np.asarray(p1.sl_orientation(), np.float64)
                p = p1.replace(base_orientation=R, inplane=0.0, tilt1=0.0, tilt2=0.0)
            else:
                out["status"][i], out["message"][i] = st.code, msg
                continue
        out["orientation_matrix"][i] = np.asarray(p.sl_orientation(), np.float64)
        out["lattice_constant"][i] = float(p.lattice_constant)
        out["disorder_deg"][i] = float(np.degrees(p.disorder) * FWHM_PER_SIGMA)
        out["status"][i], out["message"][i] = st.code, msg
        prev = p
    fitted = np.flatnonzero(np.all(np.isfinite(out["orientation_matrix"]), axis=(1, 2)))
    out["rotation_deg"] = np.full(M, np.nan)
    if fitted.size:
        bulk = _mean_orientation(out["orientation_matrix"][fitted[:n_reference]])
        out["rotation_deg"][fitted] = np.degrees(orientation.misorientation_angle(bulk, out["orientation_matrix"][fitted]))
    ang = decompose_orientation(out["orientation_matrix"], list(settings.zones))
    out["tilt_deg"], out["inplane_deg"] = ang["tilt_deg"], ang["inplane_deg"]
    return out


def write_line(result: dict, distance_um: np.ndarray, index: np.ndarray, positions_um: np.ndarray,
               out_prefix: str | Path) -> list[Path]:
    """Write ``<prefix>.csv``, ``<prefix>.json`` and ``<prefix>.png`` (rotation and a vs distance).

    Columns: distance_um, point, y_um, x_um, rotation_deg, lattice_constant (A), tilt_deg,
    inplane_deg, disorder_deg, status, message.
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
        row["status"] = int(result["status"][j])
        row["message"] = str(result["message"][j])
        rows.append(row)
    csv_path, json_path, png_path = (prefix.with_suffix(s) for s in (".csv", ".json", ".png"))
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["distance_um"])
        w.writeheader()
        w.writerows(rows)
    units = {"distance_um": "um", "rotation_deg": "degree (misorientation to the bulk, cubic symmetry)",
             "lattice_constant": "angstrom", "tilt_deg": "degree", "inplane_deg": "degree",
             "disorder_deg": "degree (FWHM)"}
    json_path.write_text(json.dumps({"units": units, "points": rows}, indent=1))
    fig, axes = plt.subplots(2, 1, figsize=(5, 5), sharex=True)
    axes[0].plot(distance_um, result["rotation_deg"], "o-")
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
