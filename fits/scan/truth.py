"""Recovered versus true parameters of a scan fit on the digital twin (the acceptance tolerances of the scan fit).

`compare_to_truth` reads ``/entry/fits`` of a results file (`fits.scan.driver.fit_scan`) and
``/truth`` of the twin's ``truth.h5`` (`xmodel.synth`), and summarises the errors over the
*in-domain* points (a domain label, neither empty nor mixed):

* orientation: misorientation angle under cubic symmetry between the fitted and true SL
  orientation (`xmodel.orientation.misorientation_angle`), degrees; where the truth also holds
  the mean orientation of the grains in the beam (``/truth/grain_orientation_matrix``, the
  realistic twin), the misorientation against it as well (`grain_reference`);
* lattice constant: ``|a_fit - a_true| / a_true`` in percent; where the truth also holds the
  lattice constant the grains in the beam show (``/truth/grain_lattice_constant``, the realistic
  twin's paracrystal grains), the error against it as well (`grain_lattice_reference`);
* disorder: ``|dPhi_fit - dPhi_true|`` (FWHM) in degrees, over points where the fit determined it;
* configuration: fraction of in-domain points whose Conf1/Conf2 matches (undetermined counts as
  wrong), and the fraction undetermined;
* status: fraction of in-domain points whose status is not ok;
* empty and mixed points: how their statuses are distributed (flagged = not ok or no signal);
* when the truth says which points show SL peaks (``/truth/sl_visible``), the same errors again
  over the in-domain points with SL peaks (``with_sl_peaks``), beside the all-in-domain ones.

A point the fit left without a value counts as an infinite error (it fails every tolerance and
lifts the percentiles), so the table never looks better than the fit is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fits.scan.angles import misorientation_vector, rotation_jacobian
from fits.scan.results import read_fits
from fits.status import FitStatus
from xmodel import orientation
from xmodel.io import read_group

#: the acceptance tolerances: parameter -> (tolerance, units)
TOLERANCES = {"orientation": (0.5, "deg"), "lattice_constant": (0.5, "%"), "disorder": (1.5, "deg")}


def _strings(x) -> np.ndarray:
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(x).reshape(-1)])


def read_truth(path: str | Path) -> dict[str, np.ndarray]:
    """Every dataset of ``/truth`` of a twin's ``truth.h5`` (strings decoded).

    Raises
    ------
    FileNotFoundError, ValueError
        If the file is missing or has no ``/truth`` group.
    """
    return read_group(path, "/truth", "pass the truth.h5 that `xmodel synth` writes next to the master file")[0]


#: the truth dataset of the grains' mean orientation per point (`xmodel.realspace.engine`)
GRAIN_ORIENTATION = "grain_orientation_matrix"
#: orientation references of `bias_table`: the component's orientation, or its grains' mean
ORIENTATION_REFERENCES = ("auto", "domain", "grains")


#: the truth dataset of the grains' lattice constant in the plane normal to the beam
#: (`xmodel.realspace.engine.ComponentDraw.grain_lattice_constant`)
GRAIN_LATTICE = "grain_lattice_constant"


def grain_lattice_reference(tr: dict[str, np.ndarray]) -> np.ndarray | None:
    """(N,) the lattice constant (A) of the grains in the beam at every point, or None.

    The realistic twin's grains are finite paracrystals: their displacements leave each grain
    strained at random (a few tenths of a percent for its cumulative disorder), so the SL
    reflections of a frame lie where the grains' lattice constant in the plane normal to the beam
    puts them, not where ``/truth/lattice_constant`` does. Twins without grains have no such
    dataset (older realistic truth files neither).
    """
    a = tr.get(GRAIN_LATTICE)
    return None if a is None else np.asarray(a, float).reshape(-1)


def grain_reference(tr: dict[str, np.ndarray]) -> np.ndarray | None:
    """(N, 3, 3) mean SL orientation of the grains in the beam at every point, or None.

    The realistic twin (`xmodel.realspace.engine`) puts several coherent grains in the beam,
    each rotated about the domain's orientation by ``grains.mosaic_deg``; their NC-weighted mean
    (``/truth/grain_orientation_matrix``) is what a single-orientation fit of the frame can
    recover, and it differs from ``/truth/orientation_matrix`` by a random rotation of a few
    tenths of a degree. Twins without grains (the Gaussian twin) have no such dataset.
    """
    r = tr.get(GRAIN_ORIENTATION)
    return None if r is None else np.asarray(r, float)


def _misorientation_deg(R_t: np.ndarray, R_f: np.ndarray) -> np.ndarray:
    """Misorientation (deg, cubic symmetry) per point; inf where either is missing."""
    have = np.all(np.isfinite(R_f), axis=(1, 2)) & np.all(np.isfinite(R_t), axis=(1, 2))
    mis = np.full(R_t.shape[0], np.inf)
    if have.any():
        mis[have] = np.degrees(np.asarray(orientation.misorientation_angle(R_t[have], R_f[have]), float))
    return mis


def _stats(err: np.ndarray, tol: float) -> dict:
    e = np.where(np.isfinite(err), err, np.inf)
    n = int(e.size)
    if n == 0:
        return {"n": 0, "median": np.nan, "p95": np.nan, "within": np.nan, "tolerance": tol}
    return {"n": n, "median": float(np.median(e)), "p95": float(np.percentile(e, 95, method="higher")),
            "within": float(np.mean(e <= tol)), "tolerance": tol}


def _fits_and_truth(fits_h5, truth_h5) -> tuple[dict, dict, int]:
    """The fits and the truth of one scan, and its number of points (checked to agree)."""
    fit = read_fits(fits_h5)
    tr = read_truth(truth_h5)
    n = int(tr["label"].shape[0])
    if fit["status"].shape[0] != n:
        raise ValueError(f"{fits_h5} holds fits of {fit['status'].shape[0]} points but {truth_h5} describes "
                         f"{n}; compare a scan's fits with that scan's truth.h5.")
    return fit, tr, n


def compare_to_truth(fits_h5: str | Path, truth_h5: str | Path) -> dict:
    """Errors of a scan fit against the twin's truth, per parameter, over in-domain points.

    Parameters
    ----------
    fits_h5 : results file with ``/entry/fits`` (`fits.scan.driver.fit_scan`).
    truth_h5 : the twin's ``truth.h5`` (``/truth/label``, ``orientation_matrix`` (N, 3, 3, SL
        crystal -> lab), ``lattice_constant`` (A), ``disorder_deg`` (FWHM, deg),
        ``configuration``, ``empty``, ``mixed``; optionally ``sl_visible``, a boolean per point
        that is true where the frame shows SL peaks).

    Returns
    -------
    dict with
        ``n_points``, ``n_in_domain``, ``n_empty``, ``n_mixed``, ``frames_done``;
        ``orientation``, ``lattice_constant``, ``disorder``: ``{"n", "median", "p95", "within",
        "tolerance"}`` (deg, %, deg; ``within`` the fraction inside the tolerance);
        ``disorder_determined``: fraction of in-domain points with a disorder value;
        ``configuration_accuracy`` (undetermined counts as wrong), ``configuration_undetermined``;
        ``not_ok``: fraction of in-domain points whose status is not ok, ``in_domain_status``,
        ``empty_status``, ``mixed_status``: ``{status name: count}``; ``empty_flagged``,
        ``mixed_flagged``: fraction with a status other than ok (no signal, at bound, ...);
        ``per_domain``: ``{label name: {"n", "orientation_median", "orientation_p95",
        "lattice_median", "configuration_accuracy"}}``;
        ``with_sl_peaks``: None without ``/truth/sl_visible``, else the same summary over the
        in-domain points with SL peaks: ``n_in_domain``, ``orientation``, ``lattice_constant``,
        ``disorder``, ``disorder_determined``, ``configuration_accuracy``,
        ``configuration_undetermined``, ``not_ok``, ``in_domain_status`` (the all-in-domain
        numbers above are unchanged by it);
        in each summary, where the truth holds the grains' mean orientation (`grain_reference`):
        ``orientation_grains``, the orientation statistics against it, and ``grains_within``, the
        fraction of the points whose grains' mean lies within the orientation tolerance of
        ``orientation_matrix`` (the most a fit that recovered the grains exactly could score on
        ``orientation``); both None otherwise. Likewise, where the truth holds the grains'
        lattice constant (`grain_lattice_reference`): ``lattice_constant_grains`` and
        ``grains_lattice_within``.

    Raises
    ------
    ValueError
        If the two files describe different numbers of scan points, or ``/truth/sl_visible``
        has another length than ``/truth/label``.

    Notes
    -----
    Orientation error: ``acos((tr(R_t^T R_f S) - 1) / 2)`` minimised over the 24 cubic ``S``
    (`xmodel.orientation.misorientation_angle`). Percentiles by the "higher" method (an actual
    error of a point, never an interpolation).

    Validation: hand-made fits and truth files with known errors (orientations 0.3 and 1 deg off
    about known axes, symmetric copies, a off by 0.2 and 1 %, missing fits, wrong and undetermined
    configurations, empty and mixed points) reproduce every number of the summary
    (tests/fits/scan/test_truth.py); a scan fit of forward-model frames against their true parameters
    (tests/fits/scan/test_driver.py).
    """
    fit, tr, n = _fits_and_truth(fits_h5, truth_h5)
    label = np.asarray(tr["label"], int)
    empty = np.asarray(tr["empty"], bool)
    mixed = np.asarray(tr["mixed"], bool)
    inside = (label >= 0) & ~empty & ~mixed
    status = np.asarray(fit["status"], int)
    ok_code = FitStatus.OK.code

    R_f = np.asarray(fit["orientation_matrix"], float)
    R_t = np.asarray(tr["orientation_matrix"], float)
    mis = _misorientation_deg(R_t, R_f)
    R_g = grain_reference(tr)
    if R_g is not None:
        mis_g = _misorientation_deg(R_g, R_f)
        grains_off = _misorientation_deg(R_t, R_g)
    a_fit = np.asarray(fit["lattice_constant"], float)
    a_true = np.asarray(tr["lattice_constant"], float)
    a_err = 100.0 * np.abs(a_fit - a_true) / a_true
    a_g = grain_lattice_reference(tr)
    if a_g is not None:
        a_err_g = 100.0 * np.abs(a_fit - a_g) / a_g
        grains_a_off = 100.0 * np.abs(a_g - a_true) / a_true
    d_fit = np.asarray(fit["disorder_deg"], float)
    d_err = np.abs(d_fit - np.asarray(tr["disorder_deg"], float))
    conf_f = _strings(fit["configuration"])
    conf_t = _strings(tr["configuration"])

    def counts(sel):
        names = [FitStatus.from_code(c).name.lower() for c in status[sel]]
        return {k: names.count(k) for k in sorted(set(names))}

    def summary(sel):
        """Errors, accuracies and statuses over the points of the boolean mask ``sel``."""
        idx = np.flatnonzero(sel)
        det = np.isfinite(d_fit[idx])
        return {
            "n_in_domain": int(idx.size),
            "orientation": _stats(mis[idx], TOLERANCES["orientation"][0]),
            "lattice_constant": _stats(a_err[idx], TOLERANCES["lattice_constant"][0]),
            "disorder": _stats(d_err[idx][det], TOLERANCES["disorder"][0]),
            "disorder_determined": float(np.mean(det)) if idx.size else np.nan,
            "configuration_accuracy": float(np.mean(conf_f[idx] == conf_t[idx])) if idx.size else np.nan,
            "configuration_undetermined": float(np.mean(conf_f[idx] == "")) if idx.size else np.nan,
            "not_ok": float(np.mean(status[idx] != ok_code)) if idx.size else np.nan,
            "in_domain_status": counts(sel),
            "orientation_grains": None if R_g is None else _stats(mis_g[idx], TOLERANCES["orientation"][0]),
            "grains_within": (None if R_g is None or not idx.size
                              else float(np.mean(grains_off[idx] <= TOLERANCES["orientation"][0]))),
            "lattice_constant_grains": None if a_g is None else _stats(a_err_g[idx], TOLERANCES["lattice_constant"][0]),
            "grains_lattice_within": (None if a_g is None or not idx.size
                                      else float(np.mean(grains_a_off[idx] <= TOLERANCES["lattice_constant"][0]))),
        }

    table = {"n_points": n, "n_empty": int(empty.sum()), "n_mixed": int(mixed.sum()),
             "frames_done": int(fit.get("frames_done", n))}
    table.update(summary(inside))
    table.update({
        "empty_status": counts(empty),
        "mixed_status": counts(mixed),
        "empty_flagged": float(np.mean(status[empty] != ok_code)) if empty.any() else np.nan,
        "mixed_flagged": float(np.mean(status[mixed] != ok_code)) if mixed.any() else np.nan,
    })
    table["with_sl_peaks"] = None
    if "sl_visible" in tr:
        visible = np.asarray(tr["sl_visible"], bool).reshape(-1)
        if visible.shape[0] != n:
            raise ValueError(f"/truth/sl_visible of {truth_h5} has {visible.shape[0]} entries but /truth/label "
                             f"has {n}; rewrite the truth file with `xmodel synth` (one flag per scan point).")
        table["with_sl_peaks"] = summary(inside & visible)
    names = list(tr.get("label_names", []))
    per = {}
    for k in np.unique(label[inside]):
        sel = inside & (label == k)
        e = np.where(np.isfinite(mis[sel]), mis[sel], np.inf)
        per[names[k] if k < len(names) else str(k)] = {
            "n": int(sel.sum()), "orientation_median": float(np.median(e)),
            "orientation_p95": float(np.percentile(e, 95, method="higher")),
            "lattice_median": float(np.median(np.where(np.isfinite(a_err[sel]), a_err[sel], np.inf))),
            "configuration_accuracy": float(np.mean(conf_f[sel] == conf_t[sel]))}
    table["per_domain"] = per
    return table


def _pct(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f} %"


def _num(x, f: str = "{:.3g}") -> str:
    return "inf" if np.isinf(x) else ("n/a" if not np.isfinite(x) else f.format(x))


def _error_rows(part: dict) -> list[str]:
    """The parameter table (median, p95, within tolerance) of one `compare_to_truth` summary."""
    lines = ["| parameter | median error | 95th percentile | within tolerance | tolerance |",
             "|---|---|---|---|---|"]
    rows = (("orientation (misorientation)", "orientation", "deg"),
            ("lattice constant a", "lattice_constant", "%"),
            ("disorder dPhi (FWHM)", "disorder", "deg"))
    for title, key, unit in rows:
        s = part[key]
        lines.append(f"| {title} | {_num(s['median'])} {unit} | {_num(s['p95'])} {unit} | {_pct(s['within'])} "
                     f"(n = {s['n']}) | {s['tolerance']:g} {unit} |")
        g = part.get({"orientation": "orientation_grains", "lattice_constant": "lattice_constant_grains"}.get(key, ""))
        if g is not None:
            what = "orientation" if key == "orientation" else "lattice constant"
            lines.append(f"| {what} vs the grains in the beam | {_num(g['median'])} {unit} | {_num(g['p95'])} {unit} | "
                         f"{_pct(g['within'])} (n = {g['n']}) | {g['tolerance']:g} {unit} |")
    if part.get("grains_within") is not None:
        lines += ["", (f"The grains' mean orientation lies within {part['orientation']['tolerance']:g} deg of the "
                       f"domain's at {_pct(part['grains_within'])} of these points: the most a fit that recovers the "
                       "grains exactly can score on the first row.")]
    if part.get("grains_lattice_within") is not None:
        lines += ["", (f"The grains' lattice constant (in the plane normal to the beam) lies within "
                       f"{part['lattice_constant']['tolerance']:g} % of the domain's at "
                       f"{_pct(part['grains_lattice_within'])} of these points.")]
    return lines


def _status_text(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"


def format_truth_table(table: dict) -> str:
    """Markdown summary of `compare_to_truth` (errors, tolerances, accuracies, statuses).

    The tables over all in-domain points come first; when the truth file says which points show
    SL peaks (``table["with_sl_peaks"]``), a second parameter table and check table over the
    in-domain points with SL peaks follow (the all-in-domain numbers are never dropped).
    """
    lines = [(f"Recovered vs true over {table['n_in_domain']} in-domain points "
             f"({table['n_points']} points, {table['n_empty']} empty, {table['n_mixed']} mixed)."), ""]
    lines += _error_rows(table)
    lines += ["", "| check | value |", "|---|---|",
              (f"| configuration right | {_pct(table['configuration_accuracy'])} "
              f"(undetermined {_pct(table['configuration_undetermined'])}) |"),
              f"| disorder determined | {_pct(table['disorder_determined'])} |",
              (f"| in-domain status other than ok | {_pct(table['not_ok'])} "
              f"({_status_text(table['in_domain_status'])}) |"),
              f"| empty points flagged | {_pct(table['empty_flagged'])} ({_status_text(table['empty_status'])}) |",
              f"| mixed points flagged | {_pct(table['mixed_flagged'])} ({_status_text(table['mixed_status'])}) |"]
    vis = table.get("with_sl_peaks")
    if vis is not None:
        lines += ["", f"Over the {vis['n_in_domain']} in-domain points with SL peaks (/truth/sl_visible).", ""]
        lines += _error_rows(vis)
        lines += ["", "| check (with SL peaks) | value |", "|---|---|",
                  (f"| configuration right | {_pct(vis['configuration_accuracy'])} "
                  f"(undetermined {_pct(vis['configuration_undetermined'])}) |"),
                  f"| disorder determined | {_pct(vis['disorder_determined'])} |",
                  f"| status other than ok | {_pct(vis['not_ok'])} ({_status_text(vis['in_domain_status'])}) |"]
    if table.get("per_domain"):
        lines += ["", "| domain | points | orientation median / p95 (deg) | a median (%) | configuration right |",
                  "|---|---|---|---|---|"]
        for name, d in table["per_domain"].items():
            lines.append(f"| {name} | {d['n']} | {_num(d['orientation_median'])} / {_num(d['orientation_p95'])} | "
                         f"{_num(d['lattice_median'])} | {_pct(d['configuration_accuracy'])} |")
    return "\n".join(lines)


#: robust standard deviation of a normal sample from its median absolute deviation
MAD_TO_SIGMA = 1.4826
#: median of chi(3) / sqrt(3): |w| / orientation_stderr of isotropic normal errors (sqrt(2.3660 / 3))
_CHI3_MEDIAN = 0.88806


def orientation_errors(R_fit: np.ndarray, R_true: np.ndarray, tilt1_deg: np.ndarray,
                       tilt2_deg: np.ndarray) -> np.ndarray:
    """(N, 3) errors (deg) of (tilt1, tilt2, inplane): the disorientation between fit and truth
    as a lab rotation vector, resolved on the three rotation axes of the fit's decomposition.

    Parameters
    ----------
    R_fit, R_true : (N, 3, 3) SL crystal -> lab rotations.
    tilt1_deg, tilt2_deg : (N,) the fit's tilts (deg) that fix the decomposition's axes.

    Notes
    -----
    ``dR = R_fit (R_true S)^T`` with the cubic symmetry ``S`` of the smallest angle
    (`xmodel.orientation.misorientation_angle`); its rotation vector ``w`` (lab frame) solves
    ``w = M (dt1, dt2, dphi)`` with ``M`` of `fits.scan.angles.rotation_jacobian` (first order in the error, exact in
    the tilts). NaN where either matrix is missing.
    """
    w = np.degrees(misorientation_vector(R_fit, R_true))
    out = np.full(w.shape, np.nan)
    have = np.all(np.isfinite(w), axis=1) & np.isfinite(tilt1_deg) & np.isfinite(tilt2_deg)
    if not have.any():
        return out
    m = rotation_jacobian(np.asarray(tilt1_deg)[have], np.asarray(tilt2_deg)[have])
    out[have] = np.linalg.solve(m, w[have][..., None])[..., 0]
    return out


def _pull_stats(pull: np.ndarray) -> dict:
    p = pull[np.isfinite(pull)]
    if p.size < 2:
        return {"n": int(p.size), "mean": np.nan, "std": np.nan, "robust_std": np.nan}
    return {"n": int(p.size), "mean": float(np.mean(p)), "std": float(np.std(p, ddof=1)),
            "robust_std": float(MAD_TO_SIGMA * np.median(np.abs(p - np.median(p))))}


def pull_table(fits_h5: str | Path, truth_h5: str | Path, misfit_deg: float | None = None,
               stderr: dict[str, np.ndarray] | None = None, reference: str = "auto") -> dict[str, dict]:
    """Pulls ``(fitted - true) / stderr`` of a scan fit on the twin, over in-domain ok frames.

    Parameters
    ----------
    fits_h5 : results file with ``/entry/fits`` (`fits.scan.driver.fit_scan`).
    truth_h5 : the twin's ``truth.h5`` (`read_truth`).
    misfit_deg : if given, frames whose orientation is further than this (deg) from the truth
        are left out: a fit in another basin (a wrong orientation), which no standard error
        describes; their number is ``misfits`` of every entry.
    stderr : standard errors to use instead of the stored ones: a dict from ``<name>_stderr``
        or ``orientation_stderr_deg`` to an (N,) array (e.g. recomputed at the stored fits,
        benchmarks/pulls.py --recompute); frames where a given array is NaN are left out of that
        parameter.
    reference : what the fits are measured from (`references`): "auto" (the grains in the beam
        where the truth has them, the realistic twin; else the domain), "domain" or "grains".

    Returns
    -------
    ``{parameter: {"n", "mean", "std", "robust_std", "misfits"}}`` for ``lattice_constant``,
    ``disorder_deg``, ``tilt1_deg``, ``tilt2_deg``, ``inplane_deg`` and, where the fits hold
    ``orientation_stderr_deg``, ``orientation`` (the misorientation angle over that stderr: its
    root mean square is reported as ``std``, 1 when calibrated). Calibrated uncertainties give
    mean ~0 and both standard deviations ~1.

    Raises
    ------
    ValueError
        If the files describe different numbers of scan points.

    Notes
    -----
    ``std``: the sample standard deviation; ``robust_std``: ``1.4826 * MAD`` (the normal
    consistency constant; Huber & Ronchetti, Robust Statistics, 2nd ed., 2009, sec. 5.1). The
    orientation errors are resolved on the fit's rotation axes (`orientation_errors`). Frames:
    in-domain (a label, neither empty nor mixed) with status ok and a finite, positive stderr.
    Validation: a hand-made fit with errors drawn from the stored stderr gives std ~1
    (tests/fits/scan/test_truth.py).
    """
    fit, tr, _ = _fits_and_truth(fits_h5, truth_h5)
    return pull_table_of(fit, tr, misfit_deg, stderr, reference)


def pull_table_of(fit: dict[str, np.ndarray], tr: dict[str, np.ndarray], misfit_deg: float | None = None,
                  stderr: dict[str, np.ndarray] | None = None, reference: str = "auto") -> dict[str, dict]:
    """`pull_table` of per-frame arrays: ``fit`` in the ``/entry/fits`` layout (e.g.
    `fits.scan.frames.fit_frames` output) and ``tr`` the `read_truth` arrays of the same frames."""
    n = int(np.asarray(fit["status"]).shape[0])
    fit = dict(fit)
    for k, v in (stderr or {}).items():
        if np.shape(v) != (n,):
            raise ValueError(f"stderr[{k!r}] has shape {np.shape(v)}; give one value per scan point ({n},)")
        fit[k] = np.asarray(v, float)
    inside = (np.asarray(tr["label"], int) >= 0) & ~np.asarray(tr["empty"], bool) & ~np.asarray(tr["mixed"], bool)
    use = inside & (np.asarray(fit["status"], int) == FitStatus.OK.code)
    t1 = np.asarray(fit["tilt1_deg"], float)
    t2 = np.asarray(fit["tilt2_deg"], float)
    R_ref, a_ref = references(tr, reference)
    err = {"lattice_constant": np.asarray(fit["lattice_constant"], float) - a_ref,
           "disorder_deg": np.asarray(fit["disorder_deg"], float) - np.asarray(tr["disorder_deg"], float)}
    ang = orientation_errors(np.asarray(fit["orientation_matrix"], float), R_ref, t1, t2)
    for j, k in enumerate(("tilt1_deg", "tilt2_deg", "inplane_deg")):
        err[k] = ang[:, j]
    mis = np.linalg.norm(ang, axis=1)
    misfit = use & (mis > misfit_deg) if misfit_deg is not None else np.zeros(n, bool)
    use = use & ~misfit
    out = {}
    for k, e in err.items():
        s = np.asarray(fit[k + "_stderr"], float)
        ok = use & np.isfinite(e) & np.isfinite(s) & (s > 0)
        out[k] = _pull_stats(np.where(ok, e / np.where(ok, s, 1.0), np.nan)) | {"misfits": int(misfit.sum())}
    if "orientation_stderr_deg" in fit:
        s = np.asarray(fit["orientation_stderr_deg"], float)
        ok = use & np.isfinite(mis) & np.isfinite(s) & (s > 0)
        r = mis[ok] / s[ok]
        # E|w|^2 = trace(C) = orientation_stderr^2: the root mean square of r is 1 when calibrated;
        # for isotropic errors |w| / stderr is chi(3) / sqrt(3), median sqrt(chi2.median(3) / 3)
        out["orientation"] = {"n": int(r.size), "mean": float(np.mean(r)) if r.size else np.nan,
                              "std": float(np.sqrt(np.mean(r ** 2))) if r.size else np.nan,
                              "robust_std": float(np.median(r) / _CHI3_MEDIAN) if r.size else np.nan,
                              "misfits": int(misfit.sum())}
    return out


#: signed errors tabulated by `bias_table`: (key, unit, label)
BIAS_COLUMNS = (("lattice_constant_pct", "%", "lattice constant"), ("tilt1_deg", "deg", "tilt1"),
                ("tilt2_deg", "deg", "tilt2"), ("inplane_deg", "deg", "in-plane"),
                ("disorder_deg", "deg", "disorder dPhi"))


def bias_table(fits_h5: str | Path, truth_h5: str | Path, misfit_deg: float = 5.0,
               ok_only: bool = True, reference: str = "auto") -> dict[str, dict]:
    """Bias and scatter of a scan fit against the truth, per domain (bulk) and for boundary points.

    Parameters
    ----------
    fits_h5 : results file with ``/entry/fits`` (`fits.scan.driver.fit_scan`).
    truth_h5 : the twin's ``truth.h5`` (`read_truth`; ``boundary_s`` splits bulk from boundary).
    misfit_deg : frames whose orientation is further than this from the truth (deg) are counted
        as ``misfits`` and left out of the bias and scatter (a fit in another basin: an alias, not
        a bias of the model).
    ok_only : only frames with status ok count as fitted (False: every frame with a fitted
        orientation, whatever its status, e.g. also those flagged mixed).
    reference : the true orientation the angles are measured from: "domain"
        (``/truth/orientation_matrix``), "grains" (the grains' mean, `grain_reference`) or "auto"
        (the grains' mean where the truth holds it, else the domain's). Where it resolves to the
        grains and the truth holds their lattice constant (`grain_lattice_reference`), the
        lattice constant's error is against that too.

    Returns
    -------
    dict
        From group name to a row: ``points``, ``fitted``, ``misfits``, ``configuration_right``
        and, for each key of `BIAS_COLUMNS`, a dict of ``mean``, ``std`` and ``median``. Groups:
        ``<domain> bulk`` (in-domain points with ``boundary_s == 0``), ``boundary`` (in-domain
        points with ``boundary_s > 0``) and ``all``. Keys of `BIAS_COLUMNS`: the signed error of
        the lattice constant in % of the truth and of the angles in deg (tilts and in-plane: the
        disorientation resolved on the fit's rotation axes, `orientation_errors`). ``points``:
        in-domain points of the group with visible SL peaks (``/truth/sl_visible`` where
        present); ``fitted``: those with status ok (any fitted orientation if not ``ok_only``)
        and an orientation within ``misfit_deg``; ``configuration_right``: fraction of
        ``points`` with the true NC configuration.

    Notes
    -----
    A model approximation shows as a mean error that does not average out over a group (a bias);
    the scatter is the standard deviation over the group. Used for the out-of-model validation on
    the realistic twin (docs/validation.md).

    Validation: hand-made fits with known offsets reproduce the means (tests/fits/scan/test_truth.py).

    Raises
    ------
    ValueError
        For another ``reference``, or "grains" with a truth file that has no grains' mean.
    """
    fit, tr, n = _fits_and_truth(fits_h5, truth_h5)
    R_ref, a_ref = references(tr, reference, truth_h5)
    label = np.asarray(tr["label"], int)
    inside = (label >= 0) & ~np.asarray(tr["empty"], bool) & ~np.asarray(tr["mixed"], bool)
    if "sl_visible" in tr:
        inside &= np.asarray(tr["sl_visible"], bool).reshape(-1)
    ok = np.asarray(fit["status"], int) == FitStatus.OK.code
    if not ok_only:
        ok = np.all(np.isfinite(np.asarray(fit["orientation_matrix"], float)), axis=(1, 2))
    t1 = np.asarray(fit["tilt1_deg"], float)
    t2 = np.asarray(fit["tilt2_deg"], float)
    ang = orientation_errors(np.asarray(fit["orientation_matrix"], float), R_ref, t1, t2)
    mis = np.linalg.norm(ang, axis=1)
    err = {"lattice_constant_pct": 100.0 * (np.asarray(fit["lattice_constant"], float) - a_ref) / a_ref,
           "tilt1_deg": ang[:, 0], "tilt2_deg": ang[:, 1], "inplane_deg": ang[:, 2],
           "disorder_deg": np.asarray(fit["disorder_deg"], float) - np.asarray(tr["disorder_deg"], float)}
    right = _strings(fit["configuration"]) == _strings(tr["configuration"])
    bs = np.asarray(tr.get("boundary_s", np.zeros(n)), float)
    names = list(tr.get("label_names", []))
    groups = {}
    for k in np.unique(label[inside]):
        groups[f"{names[k] if k < len(names) else k} bulk"] = inside & (label == k) & ~(bs > 0)
    groups["boundary"] = inside & (bs > 0)
    groups["all"] = inside
    out = {}
    for g, sel in groups.items():
        good = sel & ok & np.isfinite(mis) & (mis <= misfit_deg)
        row = {"points": int(sel.sum()), "fitted": int(good.sum()),
               "misfits": int((sel & ok & ~(mis <= misfit_deg)).sum()),
               "configuration_right": float(np.mean(right[sel])) if sel.any() else np.nan}
        for key, _, _ in BIAS_COLUMNS:
            e = err[key][good]
            e = e[np.isfinite(e)]
            row[key] = {"mean": float(np.mean(e)) if e.size else np.nan,
                        "std": float(np.std(e, ddof=1)) if e.size > 1 else np.nan,
                        "median": float(np.median(e)) if e.size else np.nan}
        out[g] = row
    return out


def references(tr: dict[str, np.ndarray], reference: str = "auto", source="the truth file"
               ) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 3) true orientations and (N,) true lattice constants (A) to measure fits from: the
    grains' (`grain_reference`, `grain_lattice_reference`) where ``reference`` resolves to
    "grains" (`resolve_reference`) and the truth has them, else the domain's."""
    R_ref = orientation_reference(tr, reference, source)
    a_ref = grain_lattice_reference(tr)
    if a_ref is None or resolve_reference(tr, reference, source) != "grains":
        a_ref = np.asarray(tr["lattice_constant"], float)
    return R_ref, a_ref


def orientation_reference(tr: dict[str, np.ndarray], reference: str = "auto", source="the truth file") -> np.ndarray:
    """(N, 3, 3) true orientations to measure fits from (`bias_table`'s ``reference``).

    Raises
    ------
    ValueError
        For a reference not in `ORIENTATION_REFERENCES`, or "grains" where ``tr`` has no
        ``grain_orientation_matrix``.
    """
    if resolve_reference(tr, reference, source) == "domain":
        return np.asarray(tr["orientation_matrix"], float)
    return grain_reference(tr)


def resolve_reference(tr: dict[str, np.ndarray], reference: str = "auto", source="the truth file") -> str:
    """The true orientation that ``reference`` stands for in ``tr``: "domain" or "grains".

    "auto" is "grains" where ``tr`` holds the grains' mean orientation (`grain_reference`, the
    realistic twin), else "domain"; "domain" and "grains" stand for themselves.

    Raises
    ------
    ValueError
        For a reference not in `ORIENTATION_REFERENCES`, or "grains" where ``tr`` has no
        ``grain_orientation_matrix`` (``source`` names the truth in the message).
    """
    if reference not in ORIENTATION_REFERENCES:
        raise ValueError(f"orientation reference {reference!r}: expected one of {', '.join(ORIENTATION_REFERENCES)}.")
    if reference == "domain":
        return "domain"
    if grain_reference(tr) is not None:
        return "grains"
    if reference == "grains":
        raise ValueError(f"{source} has no /truth/{GRAIN_ORIENTATION} (only the realistic twin's truth has the "
                         "grains' mean orientation); use reference 'domain'.")
    return "domain"


def format_bias_table(table: dict[str, dict]) -> str:
    """Markdown table of `bias_table`: mean +- std of each signed error per group."""
    head = "| group | points | fitted | misfits | configuration right | " + " | ".join(
        f"{label} ({unit})" for _, unit, label in BIAS_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (5 + len(BIAS_COLUMNS))]
    for g, row in table.items():
        cells = [f"{_num(row[k]['mean'], '{:+.3f}')} +- {_num(row[k]['std'], '{:.3f}')}" for k, _, _ in BIAS_COLUMNS]
        lines.append(f"| {g} | {row['points']} | {row['fitted']} | {row['misfits']} | "
                     f"{_pct(row['configuration_right'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_pull_table(table: dict[str, dict]) -> str:
    """Markdown table of `pull_table`."""
    lines = ["| parameter | frames | mean pull | std | robust std (1.4826 MAD) |", "|---|---|---|---|---|"]
    for k, s in table.items():
        lines.append(f"| {k} | {s['n']} | {_num(s['mean'], '{:.2f}')} | {_num(s['std'], '{:.2f}')} | "
                     f"{_num(s['robust_std'], '{:.2f}')} |")
    return "\n".join(lines)
