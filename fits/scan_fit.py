"""Fit every frame of a scan: template search, configuration, gradient refinement; resumable.

Per batch of reduced polar images (``/entry/reduction/polar``):

1. `fits.search.search_orientations` + `refine_matches`: SL lattice constant, zone axis and
   in-plane angle; frames without SL peaks get `FitStatus.NO_SIGNAL` and no fit.
2. `linear_scales`: with the orientation fixed the model is linear in (sl_scale, diffuse_scale,
   al_scale, background); a non-negative weighted least squares gives the starting scales, once
   with the Conf1 and once with the Conf2 relationship. The one with the lower Poisson deviance
   (`fits.objective.poisson_deviance`) is the configuration (the WAXS part decides, since only
   the AL term differs).
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

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import nnls

from fits.search import (SearchResult, TemplateBank, build_template_bank, refine_matches,
                         search_orientations)
from fits.status import FitStatus
from xmodel import orientation
from xmodel.parameters import FWHM_PER_SIGMA, ModelParams
from xmodel.pattern import PatternModel

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
    "sl_scale": ("counts", "SL peak height at P(q) = 1 per pixel at unit solid angle"),
    "diffuse_scale": ("counts", "isotropic diffuse SAXS scale"),
    "al_scale": ("counts", "200 AL peak height per pixel at unit solid angle"),
    "background": ("counts", "constant background per pixel at unit solid angle"),
    "objective": ("", "Poisson deviance of the fit (sum over valid bins)"),
    "search_score": ("", "cosine similarity of the best template match (0..1)"),
    "significance": ("", "largest SL ring peak significance (peak over robust noise)"),
    "status": ("", "fits.status.FitStatus code: 0 ok, 1 no signal, 2 not converged, 3 bad data, "
                   "4 at bound, 5 failed"),
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
    min_significance : SL ring peak significance below which a frame has no signal.
    n_candidates : best template matches ranked by the deviance of their linear-scale fit.
    cache_dir : template bank cache folder (None: no cache).
    """

    step_deg: float = 1.5
    a_range_rel: tuple[float, float] = (0.85, 1.05)
    vary: tuple[str, ...] = DEFAULT_VARY
    batch: int = 16
    max_iter: int = 30
    min_significance: float = 8.0
    n_candidates: int = 2
    cache_dir: str | None = None
    zones: tuple = field(default=DEFAULT_ZONES)


def _poisson_deviance_np(mu: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    mu = np.maximum(mu, 1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0) - (y - mu)
    return 2.0 * np.sum(np.where(valid, t, 0.0), axis=-1)


def component_images(model: PatternModel, params: ModelParams) -> np.ndarray:
    """(B, 4, P) model components with unit scales: SL peaks, diffuse, AL, background.

    ``params`` is a stacked batch; each component is the model with its own scale 1 and the
    other three 0 (the model is linear in them, `xmodel.pattern`).
    """
    z = jnp.zeros_like(params.sl_scale)
    o = jnp.ones_like(params.sl_scale)
    f = jax.vmap(model)
    comps = [f(params.replace(sl_scale=o, diffuse_scale=z, al_scale=z, background=z)),
             f(params.replace(sl_scale=z, diffuse_scale=o, al_scale=z, background=z)),
             f(params.replace(sl_scale=z, diffuse_scale=z, al_scale=o, background=z)),
             f(params.replace(sl_scale=z, diffuse_scale=z, al_scale=z, background=o))]
    return np.stack([np.asarray(c, np.float64) for c in comps], axis=1)


def linear_scales(components: np.ndarray, observed: np.ndarray, valid: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative scales (B, 4) and the Poisson deviance (B,) of ``sum_j c_j component_j``.

    Notes
    -----
    Weighted least squares with the Pearson weight ``1 / max(y, 1)`` (Poisson variance ~ y),
    solved by NNLS (Lawson & Hanson, doi:10.1137/1.9781611971217); the deviance is
    ``2 sum [y log(y/mu) - (y - mu)]``.
    """
    B = observed.shape[0]
    scales = np.zeros((B, components.shape[1]))
    for b in range(B):
        v = valid[b]
        y = observed[b, v]
        w = 1.0 / np.sqrt(np.maximum(y, 1.0))
        A = components[b][:, v].T * w[:, None]
        norm = np.maximum(np.linalg.norm(A, axis=0), 1e-30)
        x, _ = nnls(A / norm, y * w, maxiter=200)
        scales[b] = x / norm
    mu = np.einsum("bj,bjp->bp", scales, components)
    return scales, _poisson_deviance_np(mu, np.nan_to_num(observed), valid)


# --------------------------------------------------------------------------- one batch


def _stack(params: list[ModelParams]) -> ModelParams:
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *params)


def fit_frames(polar: np.ndarray, q: np.ndarray, model: PatternModel, template: ModelParams,
               bank: TemplateBank, settings: FitSettings = FitSettings(),
               relationships: dict[str, np.ndarray] | None = None,
               pixel_counts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Search, choose the configuration and refine a batch of polar frames.

    Parameters
    ----------
    polar : (B, C, Q) polar images (mean counts per bin, NaN where no valid pixel), on the
        grid of ``model`` (its `PixelSet.from_polar` with the same q and chi).
    q : (Q,) q bin centres (1/A).
    model : `PatternModel` on that grid, built with ``orientation_margin_deg=None`` and a
        ``lattice_constant_range`` covering ``settings.a_range_rel``.
    template : `ModelParams` of the sample (config values: widths, radius, disorder).
    bank : template bank on the chi grid.
    pixel_counts : (C, Q) detector pixels per bin (``/entry/reduction/counts``), the weight of
        each bin's mean in the Poisson objective; default 1.

    Returns
    -------
    dict of per-frame arrays, keys of `FIT_DATASETS` plus ``<name>_stderr``.
    """
    from fits.batch import fit_batch

    polar = np.asarray(polar, np.float64)
    B = polar.shape[0]
    a0 = float(template.lattice_constant)
    a_range = (settings.a_range_rel[0] * a0, settings.a_range_rel[1] * a0)
    obs = polar.reshape(B, -1)
    valid = np.isfinite(obs) & np.asarray(model.pixels.valid)[None, :]
    bad = np.any(np.where(np.isfinite(obs), obs, 0.0) < 0, axis=1) | (valid.sum(axis=1) == 0)
    res = search_orientations(polar, q, bank, a_range=a_range, n_best=max(1, settings.n_candidates),
                              min_significance=settings.min_significance)
    res = refine_matches(polar, q, res, bank)
    out = _empty_results(B)
    out["search_score"][:] = res.score[:, 0]
    out["significance"][:] = res.significance
    out["status"][:] = FitStatus.NO_SIGNAL.code
    out["message"][:] = FitStatus.NO_SIGNAL.value
    out["status"][bad] = FitStatus.BAD_DATA.code
    out["message"][bad] = FitStatus.BAD_DATA.value
    todo = np.flatnonzero(res.has_signal & ~bad)
    if todo.size == 0:
        return out
    rels = relationships or {c: orientation.orientation_relationship(c) for c in CONFIGURATIONS}
    y = np.where(valid, obs, 0.0)[todo]
    v = valid[todo]
    a_est = np.clip(res.lattice_constant[todo], *a_range)
    # candidates ranked by the deviance of their linear fit (first configuration)
    best_rot = res.orientation[todo, 0]
    if res.orientation.shape[1] > 1:
        devs = []
        for t in range(res.orientation.shape[1]):
            p = _stack([template.replace(base_orientation=res.orientation[i, t], inplane=0.0, tilt1=0.0,
                                         tilt2=0.0, lattice_constant=a_est[j])
                        for j, i in enumerate(todo)])
            devs.append(linear_scales(component_images(model, p), y, v)[1])
        pick = np.argmin(np.stack(devs, 1), axis=1)
        best_rot = res.orientation[todo, pick]
    # configuration by the WAXS part
    fits_by_conf = {}
    for conf, rel in rels.items():
        p = _stack([template.replace(base_orientation=best_rot[j], inplane=0.0, tilt1=0.0, tilt2=0.0,
                                     lattice_constant=a_est[j], relationship=rel) for j in range(todo.size)])
        fits_by_conf[conf] = (p,) + linear_scales(component_images(model, p), y, v)
    names = list(fits_by_conf)
    wt = v * (1.0 if pixel_counts is None else np.asarray(pixel_counts, float).reshape(1, -1))
    refined = []
    for conf in names:   # refine under each relationship; the lower deviance decides (WAXS part)
        p0, scales, _ = fits_by_conf[conf]
        s = np.maximum(scales, [1e-3, 1e-3, 1e-3, 1e-4])
        init = p0.replace(sl_scale=s[:, 0], diffuse_scale=s[:, 1], al_scale=s[:, 2], background=s[:, 3])
        refined.append(fit_batch(y.astype(np.float32), wt.astype(np.float32), model, init,
                                 list(settings.vary), bounds={"lattice_constant": a_range},
                                 max_iter=settings.max_iter))
    obj = np.stack([np.where(np.isfinite(f.objective), f.objective, np.inf) for f in refined], 1)
    choice = np.argmin(obj, axis=1)
    pick = lambda x: np.stack([np.asarray(x[c])[j] for j, c in enumerate(choice)])  # noqa: E731
    fit_params = jax.tree_util.tree_map(lambda *xs: pick(xs), *[f.params for f in refined])
    status = [refined[c].status[j] for j, c in enumerate(choice)]
    messages = [refined[c].messages[j] for j, c in enumerate(choice)]
    stderr = {k: pick([f.stderr[k] for f in refined]) for k in refined[0].stderr}
    objective = pick([f.objective for f in refined])
    rot = np.asarray(jax.vmap(lambda p: p.sl_orientation())(fit_params), np.float64)
    ang = decompose_orientation(rot, list(settings.zones))
    out["orientation_matrix"][todo] = rot
    for k in ("zone_axis", "tilt_deg", "tilt1_deg", "tilt2_deg", "inplane_deg"):
        out[k][todo] = ang[k]
    pd = fit_params
    out["lattice_constant"][todo] = np.asarray(pd.lattice_constant, float)
    out["disorder_deg"][todo] = np.degrees(np.asarray(pd.disorder, float)) * FWHM_PER_SIGMA
    for k in ("sl_scale", "diffuse_scale", "al_scale", "background"):
        out[k][todo] = np.asarray(getattr(pd, k), float)
    out["configuration"][todo] = [names[c] for c in choice]
    out["objective"][todo] = np.asarray(objective, float)
    out["status"][todo] = [s.code for s in status]
    out["message"][todo] = [m if m else s.value for s, m in zip(status, messages)]
    for k in STDERR_OF:
        if k in stderr:
            out[k + "_stderr"][todo] = np.asarray(stderr[k], float)
    return out


def _empty_results(n: int) -> dict[str, np.ndarray]:
    out = {k: np.full(n, np.nan) for k in FIT_DATASETS}
    out["orientation_matrix"] = np.full((n, 3, 3), np.nan)
    out["zone_axis"] = np.full((n, 3), np.nan)
    out["configuration"] = np.array([""] * n, dtype=object)
    out["message"] = np.array([""] * n, dtype=object)
    out["status"] = np.full(n, FitStatus.FAILED.code, np.int32)
    for k in STDERR_OF:
        out[k + "_stderr"] = np.full(n, np.nan)
    return out


# --------------------------------------------------------------------------- scans


@dataclass(frozen=True, eq=False)
class FitSetup:
    """What a scan fit needs besides the frames: model, sample template, template bank, q, chi."""

    model: PatternModel
    template: ModelParams
    bank: TemplateBank
    q: np.ndarray
    chi_deg: np.ndarray
    pixel_counts: np.ndarray | None = None


def setup_from_reduction(path: str | Path, cfg, settings: FitSettings = FitSettings(),
                         dtype=jnp.float32) -> FitSetup:
    """Model on the polar grid of ``/entry/reduction`` of ``path`` for the sample of ``cfg``.

    The polar grid's points lie at the bin centres on the Ewald sphere with the geometry and mask
    of the config (`xmodel.experiment.Experiment`); the model is orientation-free and covers the
    allowed lattice constants and 1.5x wider peaks.
    """
    from xmodel.experiment import Experiment
    from xmodel.parameters import params_from_config, structure_from_config

    with h5py.File(path, "r") as f:
        if "entry/reduction/polar" not in f:
            raise ValueError(f"{path} has no /entry/reduction/polar; pass a Dectris master file (it is "
                             f"reduced first) or a file written by xmodel reduce.")
        q = np.asarray(f["entry/reduction/q"], float)
        chi = np.asarray(f["entry/reduction/chi"], float)
        counts = np.asarray(f["entry/reduction/counts"], float) if "entry/reduction/counts" in f else None
    exp = Experiment.from_config(cfg)
    template = params_from_config(cfg, dtype=dtype)
    a0 = float(template.lattice_constant)
    a_range = (settings.a_range_rel[0] * a0, settings.a_range_rel[1] * a0)
    structure = structure_from_config(cfg, a_range)
    pixels = exp.polar_pixels(q, chi)
    model = PatternModel(pixels, structure, template, dtype=dtype, orientation_margin_deg=None,
                         lattice_constant_range=a_range, width_factor=1.5)
    bank = build_template_bank(chi, wavelength_A=float(exp.geometry.wavelength) * 1e10,
                               lattice_constant=a0, step_deg=settings.step_deg,
                               mosaic_deg=float(np.degrees(template.sl_mosaic)), cache_dir=settings.cache_dir)
    return FitSetup(model=model, template=template, bank=bank, q=q, chi_deg=chi, pixel_counts=counts)


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
            shape = (n, 3, 3) if k == "orientation_matrix" else (n, 3) if k == "zone_axis" else (n,)
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
        return out
    setup = setup or setup_from_reduction(results, cfg, settings)
    t0, batches = time.perf_counter(), 0
    for start in range(done, n, settings.batch):
        stop = min(start + settings.batch, n)
        with h5py.File(results, "r") as f:
            polar = np.asarray(f["entry/reduction/polar"][start:stop], np.float64)
        try:
            r = fit_frames(polar, setup.q, setup.model, setup.template, setup.bank, settings,
                           pixel_counts=setup.pixel_counts)
        except Exception as exc:  # one bad batch never stops the scan
            r = _empty_results(stop - start)
            r["message"][:] = f"{FitStatus.FAILED.value}: {type(exc).__name__}: {exc}"
        with h5py.File(out, "a") as f:
            g = f["entry/fits"]
            for k, v in r.items():
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
    return out


def read_fits(path: str | Path) -> dict[str, np.ndarray]:
    """Every dataset of ``/entry/fits`` as numpy arrays (strings decoded)."""
    with h5py.File(path, "r") as f:
        if "entry/fits" not in f:
            raise ValueError(f"{path} has no /entry/fits; run xmodel fit first.")
        out = {}
        for k, ds in f["entry/fits"].items():
            v = ds[()]
            if v.dtype.kind in "OS":
                v = np.array([x.decode() if isinstance(x, bytes) else str(x) for x in v])
            out[k] = v
        out["frames_done"] = int(f["entry/fits"].attrs["frames_done"])
    return out
