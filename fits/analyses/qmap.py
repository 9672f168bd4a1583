"""Peak-position maps of a superlattice family from radial profiles (Fig. 3, S7).

Contract
--------
* `family_window` gives the q window (1/A) of a family for a nominal lattice constant.
* `fit_profiles` (from `fits.analyses.peak_profile`, re-exported here) fits ``Gaussian + linear
  background`` to many radial profiles at once by a vectorised Levenberg-Marquardt and never
  raises for one bad profile: each gets a status (`fits.status.FitStatus`); `fit_profile` is the interactive
  path for one profile with lmfit's ``GaussianModel + LinearModel``.
* The lattice constant per point comes from `fits.analyses.shell_comb` (re-exported here:
  `fit_lattice_comb`, `spot_profiles`, `radial_spot_profiles`, `fcc_shells`):
  the comb of all fcc shells matched to the Friedel-paired spots of the polar image (or the
  peaks of the radial profile), "ambiguous" (NaN) when another indexing explains the spots as
  well, unless the angles between the pairs on the rings decide it.
* `line_profile` samples a map along a segment between two scan positions.
* `qmap_scan` runs a whole reduced scan, writes ``/entry/qmap/<family>/`` and the figures.

Units: q, widths in 1/A; amplitudes as lmfit's ``GaussianModel`` (area, intensity x 1/A);
lattice constants and d-spacings in Angstrom; positions in micrometres (column 0 slow y,
column 1 fast x, as ``/entry/reduction/positions``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from fits.analyses.arguments import finite_number, interval, positive_int, q_interval
from fits.analyses.peak_profile import fit_profile, fit_profiles
from fits.analyses.qmap_file import PER_FRAME, write_qmap
from fits.analyses.shell_comb import (
    fcc_shells,
    fit_lattice_comb,
    friedel_spots,
    radial_spot_profiles,
    spot_profiles,
)
from fits.status import FitStatus, read_status
from xmodel.lattice import q_of
from xmodel.reduced import NotReducedError, open_reduced

__all__ = [
    "FAMILIES",
    "LineProfile",
    "family_window",
    "fcc_shells",
    "fit_lattice_comb",
    "fit_profile",
    "fit_profiles",
    "line_profile",
    "qmap_scan",
    "radial_spot_profiles",
    "spot_profiles",
]

#: family -> (hkl, window low, window high) with the window relative to q_hkl(a_nominal).
#: 311: 0.936..1.152 gives the paper's 0.130..0.160 1/A at a = 150 A (Fig. S7); 200:
#: 0.90..1.20 gives 0.0754..0.1005 1/A (the paper's "0.083 rising to 0.10" in Fig. 3),
#: starting above the 111 peak at 0.0726.
FAMILIES = {"200": ((2, 0, 0), 0.90, 1.20), "311": ((3, 1, 1), 0.936, 1.152)}

def family_window(family: str, a_nominal: float = 150.0,
                  window: tuple[float, float] | None = None) -> tuple[tuple[int, int, int], float, float]:
    """The Miller indices and the q window (1/A) of a family.

    Parameters
    ----------
    family
        ``"200"`` or ``"311"``.
    a_nominal
        Nominal SL lattice constant, Angstrom; the window follows ``q_hkl(a_nominal)``.
    window
        Explicit ``(q_lo, q_hi)`` in 1/A, overriding the relative default.

    Returns
    -------
    (hkl, q_lo, q_hi)

    Notes
    -----
    ``q_hkl = 2 pi sqrt(h^2+k^2+l^2) / a`` (Table S1). Validation: 311 at 150 A gives
    0.130..0.160 1/A (paper, S7).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; valid are {sorted(FAMILIES)} (--family 200 or 311).")
    a_nominal = finite_number(a_nominal, "a_nominal", "--a-nominal", gt=0.0, unit="A", example="150")
    hkl, lo, hi = FAMILIES[family]
    if window is not None:
        q_lo, q_hi = q_interval(window, "window", "--window")
        return hkl, q_lo, q_hi
    q0 = float(q_of(np.array(hkl), a_nominal))
    return hkl, q0 * lo, q0 * hi


@dataclass(frozen=True)
class LineProfile:
    """Values of a map sampled along a segment (Fig. 3b,c, S7b).

    ``distance_um`` along the segment from the start, ``frame`` the nearest scan point of
    each sample, ``x_um``/``y_um`` its position, and ``values`` a dict of the sampled arrays.
    """

    distance_um: np.ndarray
    frame: np.ndarray
    x_um: np.ndarray
    y_um: np.ndarray
    values: dict


def line_profile(positions_um: np.ndarray, values: dict, start_xy_um: tuple[float, float],
                 end_xy_um: tuple[float, float], step_um: float | None = None) -> LineProfile:
    """Sample per-point values along the segment from ``start`` to ``end``.

    Parameters
    ----------
    positions_um
        Scan positions, shape ``(N, 2)``: column 0 slow (y), column 1 fast (x), micrometres.
    values
        Name -> array of shape ``(N,)``.
    start_xy_um, end_xy_um
        ``(x, y)`` of the segment ends, micrometres.
    step_um
        Sampling step; default the smallest positive spacing of the scan positions.

    Returns
    -------
    LineProfile
        One sample per step (nearest scan point, repeated points dropped).

    Raises
    ------
    ValueError
        If the segment has zero length or the ends lie more than two steps outside the scan.

    Notes
    -----
    Nearest-neighbour sampling (scipy.spatial.cKDTree). Validation: a diagonal of a raster
    visits the diagonal points in order (tests).
    """
    from scipy.spatial import cKDTree

    pos = np.asarray(positions_um, float)
    xy = np.stack([pos[:, 1], pos[:, 0]], axis=1)
    a, b = np.asarray(start_xy_um, float), np.asarray(end_xy_um, float)
    length = float(np.linalg.norm(b - a))
    if not np.isfinite(length) or length == 0:
        raise ValueError(f"the line from {tuple(a)} to {tuple(b)} um has zero length; give two different "
                         f"points as --from X0,Y0 --to X1,Y1 (micrometres, x fast, y slow).")
    if step_um is None:
        steps = [np.diff(np.unique(xy[:, i])) for i in (0, 1)]
        steps = np.concatenate([s[s > 0] for s in steps] + [np.array([length / 100])])
        step_um = float(steps.min())
    lo, hi = xy.min(axis=0) - 2 * step_um, xy.max(axis=0) + 2 * step_um
    for name, p in (("start", a), ("end", b)):
        if np.any(p < lo) or np.any(p > hi):
            raise ValueError(f"the line's {name} {tuple(p)} um lies outside the scan (x {xy[:, 0].min():g}.."
                             f"{xy[:, 0].max():g}, y {xy[:, 1].min():g}..{xy[:, 1].max():g} um).")
    t = np.linspace(0.0, 1.0, int(np.ceil(length / step_um)) + 1)
    pts = a[None, :] + t[:, None] * (b - a)[None, :]
    _, frame = cKDTree(xy).query(pts)
    keep = np.r_[True, frame[1:] != frame[:-1]]
    frame = frame[keep]
    dist = (xy[frame] - a) @ (b - a) / length
    return LineProfile(dist, frame, xy[frame, 0], xy[frame, 1],
                       {k: np.asarray(v)[frame] for k, v in values.items()})


def _map_figure(path: Path, center: np.ndarray, scan, shape: tuple[int, int], family: str) -> Path:
    """``qmap_<family>.png``: the family's q over the scan (um where positions are known), NaN white."""
    from xmodel.figures import save_figure
    from xmodel.maps import plot_map

    if scan.grid is not None:
        image, shape = scan.map_image(center), scan.grid.shape
        axes = scan.axes_um()
    else:
        image, axes = np.asarray(center, float).reshape(shape), None
    x_um, y_um = axes if axes is not None else (None, None)
    fig = plot_map(image, shape, title=f"q_{family} (SL) map", label="q (1/Å)", cmap="viridis",
                   x_um=x_um, y_um=y_um)
    return save_figure(fig, path)


def _line_figure(path: Path, line: LineProfile, family: str) -> Path:
    """``qmap_<family>_line.png``: q and d_100 = a along the line."""
    from xmodel.figures import new_axes, save_figure

    fig, ax = new_axes(figsize=(5, 3.6))
    v = line.values
    ax.errorbar(line.distance_um, v["q"], yerr=v["q_err"], fmt="o-", ms=3)
    ax.set_xlabel("distance along the line (µm)")
    ax.set_ylabel(f"q_{family} (1/Å)")
    ax2 = ax.twinx()
    ax2.plot(line.distance_um, v["d100"], "s--", color="tab:red", ms=3)
    ax2.set_ylabel("d_100 = a (Å)", color="tab:red")
    return save_figure(fig, path)


def fitted_lattice_constant(fits_file: str | Path, n: int, with_errors: bool = False
                            ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(n,) SL lattice constants (A) of the model fits in ``/entry/fits`` of ``fits_file``; NaN
    where the fit's status is not ok or the frame is not done. ``with_errors``: also their
    standard errors (A; NaN where unknown).

    Raises
    ------
    FileNotFoundError, ValueError
        If the file is missing, has no ``/entry/fits``, or holds another number of frames.
    """
    path = Path(fits_file)
    if not path.exists():
        raise FileNotFoundError(f"fits file {str(path)!r} does not exist; run `xmodel fit RESULTS --out FILE` first.")
    with h5py.File(path, "r") as f:
        if "/entry/fits/lattice_constant" not in f or "/entry/fits/status" not in f:
            raise ValueError(f"{str(path)!r} has no /entry/fits/lattice_constant and status; pass the file "
                             f"written by `xmodel fit`.")
        a = f["/entry/fits/lattice_constant"][()].astype(float)
        a_err = (f["/entry/fits/lattice_constant_stderr"][()].astype(float)
                 if "/entry/fits/lattice_constant_stderr" in f else np.full(a.shape, np.nan))
        st = read_status(f["/entry/fits/status"])
        done = int(f["/entry/fits"].attrs.get("frames_done", a.size))
    if a.size != n:
        raise ValueError(f"{str(path)!r} holds fits of {a.size} frames but the reduced scan has {n}; pass the "
                         f"fits of the same scan.")
    ok = (st == FitStatus.OK.code) & (np.arange(n) < done)
    if with_errors:
        return np.where(ok, a, np.nan), np.where(ok, a_err, np.nan)
    return np.where(ok, a, np.nan)


def qmap_scan(results: str | Path, family: str, *, a_nominal: float = 150.0,
              window: tuple[float, float] | None = None, background: str = "linear",
              line: tuple[tuple[float, float], tuple[float, float]] | None = None,
              figures: str | Path | None = None, batch: int = 4096,
              a_range: tuple[float, float] = (127.5, 156.0),
              sl_q_range: tuple[float, float] = (0.055, 0.2), fits_file: str | Path | None = None) -> dict:
    """Fit every radial profile of a reduced scan; write maps, an optional line and figures.

    Parameters
    ----------
    results
        Reduced scan HDF5 (``/entry/reduction/radial``, ``q``, optional ``positions``,
        ``scan_shape``); the results go to ``/entry/qmap/<family>/`` of the same file.
    family
        ``"200"`` or ``"311"``.
    a_nominal, window, background
        As `family_window` and `fit_profiles`.
    line
        ``((x0, y0), (x1, y1))`` um for a line profile (needs positions).
    figures
        Folder for ``qmap_<family>.png`` and ``qmap_<family>_line.png``; default beside
        ``results``.
    batch
        Profiles fitted at once (polar images: ``batch // 16`` frames at once).
    a_range
        Lattice constants searched by the joint fcc comb, Angstrom (`fit_lattice_comb`).
    sl_q_range
        q range of the superlattice shells used by the comb, 1/A.
    fits_file
        A results file with ``/entry/fits`` of the same scan (`fits.scan.driver.fit_scan`, ``xmodel
        fit``): its lattice constants (status ok only) decide the points whose spots alone are
        ambiguous (`fit_lattice_comb` ``prior_lattice_constant``; ``decided_by_prior``), and give
        ``a`` (status FROM_MODEL_FIT) where the spots show no peak or stay ambiguous.

    Returns
    -------
    dict
        ``fits``: ``center``, ``center_err`` (the family's q from the joint lattice constant,
        1/A), ``lattice_constant``, ``lattice_constant_err``, ``status`` (`fits.status.FitStatus`
        codes of `fits.status.LATTICE_OUTCOMES`: NaN with NO_PEAK or AMBIGUOUS rather than a
        wrong shell; NaN with NO_PEAK where the family's q lies outside the window, ``in_window``
        False), ``alias_lattice_constant``,
        ``score``, ``evidence``, ``n_shells``, ``decided_by_angles``; the family's own Gaussian of the radial profile
        (``peak_center``, ``peak_center_err``, ``sigma``, ``amplitude``, ... as `fit_profiles`,
        NaN where it is not the peak the joint lattice predicts) and its ``peak_status``;
        ``scan_shape``, ``window``, ``line`` (LineProfile or None), ``figures`` (paths).

    Notes
    -----
    ``a`` from all visible fcc shells at once (`fit_lattice_comb`, spots from the polar images
    when the file has them, else peaks of the radial profile; with ``/entry/reduction/chi`` also
    the angles between the Friedel pairs, `fits.analyses.shell_comb.friedel_spots`),
    ``q_family = 2 pi sqrt(h^2+k^2+l^2) / a``, ``d_100 = a``, ``d_hkl = 2 pi / q`` (Table S1).

    Validation: a synthetic compressed boundary is recovered within 0.5 % and a lone 111/200
    alias is flagged (tests/fits/analyses/test_qmap.py); demo twin (`xmodel demo`,
    configs/demo.toml, 114 in-domain points): 68 within 0.5 % (interior 34 of 37, boundary 34
    of 77), 3 wrong by 0.6-1 %, 43 flagged; 2 of the 68 decided by the pair angles,
    none wrongly; no empty point gets a value. Most flagged points show one pair, or only
    parallel 111 || 222 pairs (= 200 || 400 of a 15.5 % larger a), which no angle decides.
    """
    path = Path(results)
    if not path.exists():
        raise FileNotFoundError(f"results file {str(path)!r} does not exist; run `xmodel reduce` first.")
    hkl, lo, hi = family_window(family, a_nominal, window)
    batch = positive_int(batch, "batch", "--batch", example="4096")
    a_range = interval(a_range, "a_range", unit="A", lower=0.0, example="127.5,156")
    sl_q_range = q_interval(sl_q_range, "sl_q_range", example="0.055,0.2")
    with h5py.File(path, "r") as f:
        if "/entry/reduction/radial" not in f:
            raise ValueError(f"{str(path)!r} has no /entry/reduction/radial; it is not a reduced scan "
                             f"(run `xmodel reduce MASTER OUT` and pass OUT).")
        q = f["/entry/reduction/q"][()]
        radial = f["/entry/reduction/radial"]
        n = radial.shape[0]
        parts = [fit_profiles(q, radial[s:s + batch], (lo, hi), background=background)
                 for s in range(0, n, batch)]
        sl = (q >= sl_q_range[0]) & (q <= sl_q_range[1])
        if np.count_nonzero(sl) < 16:
            raise ValueError(f"sl_q_range {tuple(sl_q_range)} 1/A holds {np.count_nonzero(sl)} q bins of "
                             f"{str(path)!r} (need >= 16; the reduction spans {q.min():.3g}..{q.max():.3g} 1/A).")
        cols = np.nonzero(sl)[0]
        axes = None
        if "/entry/reduction/polar" in f and "/entry/reduction/counts" in f:
            npix = f["/entry/reduction/counts"][:, cols[0]:cols[-1] + 1]
            polar = f["/entry/reduction/polar"]
            step = max(1, batch // 16)
            spot_source = "polar"
            if "/entry/reduction/chi" in f:     # with the azimuths: the angles between pairs too
                chi_deg = f["/entry/reduction/chi"][()]
                parts_sp = [friedel_spots(polar[s:s + step, :, cols[0]:cols[-1] + 1], npix,
                                          q[cols[0]:cols[-1] + 1], chi_deg) for s in range(0, n, step)]
                spots = np.concatenate([p[0] for p in parts_sp])
                axes = [ax for p in parts_sp for ax in p[1]]
            else:
                spots = np.concatenate([spot_profiles(polar[s:s + step, :, cols[0]:cols[-1] + 1], npix)
                                        for s in range(0, n, step)])
        else:
            spots = np.concatenate([radial_spot_profiles(radial[s:s + batch, cols[0]:cols[-1] + 1])
                                    for s in range(0, n, batch)])
            spot_source = "radial"
        positions = f["/entry/reduction/positions"][()] if "/entry/reduction/positions" in f else None
        shape = tuple(int(x) for x in f["/entry/reduction/scan_shape"][()]) \
            if "/entry/reduction/scan_shape" in f else (1, n)
    peak = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    prior = prior_err = None
    if fits_file is not None:
        prior, prior_err = fitted_lattice_constant(fits_file, n, with_errors=True)
    comb = fit_lattice_comb(q[cols[0]:cols[-1] + 1], spots, a_range=a_range, axes=axes,
                            prior_lattice_constant=prior)
    if prior is not None:
        # where the spots decide nothing (no peak found by the comb, or still ambiguous) the model
        # fit of the whole 2D pattern gives a and its standard error from /entry/fits
        take = np.isin(comb["status"], (FitStatus.NO_PEAK.code, FitStatus.AMBIGUOUS.code)) & np.isfinite(prior)
        comb["lattice_constant"] = np.where(take, prior, comb["lattice_constant"])
        comb["lattice_constant_err"] = np.where(take, prior_err, comb["lattice_constant_err"])
        comb["status"] = np.where(take, FitStatus.FROM_MODEL_FIT.code, comb["status"]).astype(np.int8)
    n_f = float(np.sum(np.array(hkl) ** 2))
    center = 2 * np.pi * np.sqrt(n_f) / comb["lattice_constant"]
    # the window holds everywhere: a family q outside it is no peak in the window, whatever the comb found
    outside = np.isfinite(center) & ((center < lo) | (center > hi))
    if outside.any():
        for k in ("lattice_constant", "lattice_constant_err"):
            comb[k] = np.where(outside, np.nan, comb[k])
        comb["status"] = np.where(outside, FitStatus.NO_PEAK.code, comb["status"]).astype(np.int8)
        center = np.where(outside, np.nan, center)
    fits = {"center": center, "in_window": ~outside}
    fits["center_err"] = fits["center"] * comb["lattice_constant_err"] / comb["lattice_constant"]
    # the family's own Gaussian counts only where it is the peak the joint lattice predicts
    same = np.abs(peak["center"] / fits["center"] - 1) < 0.011
    for k in ("sigma", "sigma_err", "fwhm", "amplitude", "amplitude_err", "height", "intercept", "slope", "redchi"):
        fits[k] = np.where(same, peak[k], np.nan)
    fits["peak_center"] = np.where(same, peak["center"], np.nan)
    fits["peak_center_err"] = np.where(same, peak["center_err"], np.nan)
    fits["peak_status"] = peak["status"]
    fits["status"] = comb["status"]
    for k in ("lattice_constant", "lattice_constant_err", "alias_lattice_constant", "score", "evidence", "n_shells",
              "decided_by_angles", "decided_by_prior"):
        fits[k] = comb[k]
    if int(np.prod(shape)) != n:
        shape = (1, n)
    prof = None
    if line is not None:
        if positions is None:
            raise ValueError(f"{str(path)!r} has no /entry/reduction/positions, so --from/--to (um) cannot "
                             f"be placed; reduce a scan whose master file holds positions.")
        prof = line_profile(positions, {"q": fits["center"], "q_err": fits["center_err"],
                                        "lattice_constant": fits["lattice_constant"],
                                        "status": fits["status"]}, line[0], line[1])
        prof.values["d_spacing"] = 2 * np.pi / prof.values["q"]
        prof.values["d100"] = prof.values["lattice_constant"]
    try:
        scan = open_reduced(path)
    except NotReducedError:                 # radial profiles only: the maps go per frame
        scan = PER_FRAME
    attrs = {"family": family, "hkl": np.array(hkl), "q_window": np.array([lo, hi]), "q_window_units": "1/angstrom",
             "a_nominal": a_nominal, "a_nominal_units": "angstrom", "background": background,
             "scan_shape": np.array(shape), "spot_source": spot_source, "a_range": np.array(a_range),
             "a_range_units": "angstrom"}
    parameters = {"family": family, "a_nominal": a_nominal, "window": [lo, hi], "background": background,
                  "a_range": list(a_range), "sl_q_range": list(sl_q_range), "batch": batch,
                  "fits_file": None if fits_file is None else str(Path(fits_file).resolve()),
                  "line": None if line is None else [list(line[0]), list(line[1])]}
    write_qmap(path, family, fits, scan=scan, attrs=attrs, parameters=parameters, line=prof, line_ends=line)
    outdir = Path(figures) if figures is not None else path.parent
    outdir.mkdir(parents=True, exist_ok=True)
    paths = [_map_figure(outdir / f"qmap_{family}.png", fits["center"], scan, shape, family)]
    if prof is not None:
        paths.append(_line_figure(outdir / f"qmap_{family}_line.png", prof, family))
    return {"fits": fits, "scan_shape": shape, "window": (lo, hi), "line": prof, "figures": paths}
