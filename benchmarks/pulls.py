"""Pull statistics of a scan fit on the digital twin: are the stored standard errors calibrated?

Usage:
    python benchmarks/pulls.py FITS.h5 TRUTH.h5 [--misfit-deg DEG]
        [--recompute RESULTS.h5 [--config TOML ...]]
    python benchmarks/pulls.py FITS.h5 TRUTH.h5 --refit RESULTS.h5 [--refit ...]
    python benchmarks/pulls.py --line-mc N [--seed S]

Prints the command and the table of `fits.scan.truth.pull_table`: per stored parameter the
pulls ``(fitted - true) / stderr`` over the in-domain ok frames, their mean, standard deviation
and robust standard deviation (1.4826 MAD); calibrated uncertainties give std ~1. With the
frames' dispersion (``/entry/fits/dispersion``) its median and range follow.

``--recompute RESULTS.h5`` also computes the standard errors afresh at the stored fits of the
in-domain ok frames (`fits.batch.covariance_at` on the reduction's frames, the parameters of
each stored row, the angles' errors on their reported axes, `fits.scan.angles.angle_covariance`)
and prints the table with them: what a fit with this version's error code would store, without
refitting (``--config``: the configs the fit ran with, default the P10 experiment and the red
domain, as ``xmodel fit``; the settings are the stored ones).

``--refit RESULTS.h5`` refits the interior and every 5th boundary in-domain ok frame by the
main pass on that reduction of the same master (e.g. ``xmodel reduce --chi-bins 1440``) and
prints their pulls: how the bins change the calibration.

``--line-mc N``: the propagated errors of a boundary line (`fits.scan.boundary.fit_line`:
rotation to the bulk and compression) against the scatter of N Poisson replicates of a
four-point line (three bulk points of the red domain and one tilted by 6 deg and compressed by
5 %, 2e6 counts per frame on a 180 x 104 polar grid), each refitted from the truth.

The figures of docs/performance.md ("Calibrated uncertainties") were made with

    xmodel synth configs/twin.toml --set "scan.shape=[31,31]" --set scan.step_um=1.0 --out twin31
    xmodel reduce twin31/twin_master.h5 --positions twin31/twin.fio --monitor twin31/twin.fio:monitor \
        --out results.h5
    xmodel fit results.h5 configs/experiment/p10_eiger4m.toml configs/domains/red.toml --out fits.h5
    python benchmarks/pulls.py fits.h5 twin31/truth.h5 --misfit-deg 5 --recompute results.h5
    xmodel reduce twin31/twin_master.h5 --positions twin31/twin.fio --monitor twin31/twin.fio:monitor \
        --chi-bins 1440 --out results1440.h5
    python benchmarks/pulls.py fits.h5 twin31/truth.h5 --refit results.h5 --refit results1440.h5
    python benchmarks/pulls.py --line-mc 32
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np

from fits.scan.results import read_fits, read_settings
from fits.scan.truth import format_pull_table, pull_table, read_truth
from fits.status import FitStatus


def recompute_stderr(fits_h5: str, results_h5: str, configs: list[str], frames: np.ndarray,
                     chunk: int = 16, overrides: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Standard errors at the stored fits of ``frames`` with this version's rules, as
    `fits.scan.truth.pull_table`'s ``stderr`` (NaN for the other frames).

    The covariance of the refined parameters at each stored row (`fits.batch.covariance_at`,
    the dispersion-scaled inverse Fisher information), its orientation block turned into the lab
    rotation covariance (the row's parameters have zero tilts about the stored orientation) and
    onto the reported angles' axes (`fits.scan.angles.angle_covariance`).
    """
    from fits.batch import covariance_at
    from fits.scan.angles import (
        ORIENTATION_PARAMETERS,
        angle_covariance,
        lab_rotation_covariance,
    )
    from fits.scan.settings import FitSettings, settings_from_config
    from fits.scan.setup import setup_from_reduction
    from fits.scan.starts import frame_checks, params_from_row, stack_params
    from xmodel.config import load_config
    from xmodel.reduced import open_reduced

    cfg = load_config(configs, overrides)
    # the stored settings, then --set fit.KEY=VALUE (e.g. fit.error_tile_q=inf: the errors without
    # the cluster-robust widening)
    settings = settings_from_config(cfg, FitSettings.of(source=f"{fits_h5} settings", **read_settings(fits_h5)))
    fit = read_fits(fits_h5)
    n = fit["status"].shape[0]
    scan = open_reduced(results_h5)
    setup = setup_from_reduction(scan, cfg, settings)
    vary = list(settings.refine.vary)
    names = [k + "_stderr" for k in ("lattice_constant", "disorder_deg") + ORIENTATION_PARAMETERS]
    out = {k: np.full(n, np.nan) for k in names + ["orientation_stderr_deg"]}
    j = [vary.index(k) for k in ORIENTATION_PARAMETERS]
    t0 = time.perf_counter()
    for c0 in range(0, frames.size, chunk):
        rows = np.asarray(frames[c0:c0 + chunk], int)
        # hot pixels out, as the fit took them out (`fits.scan.setup.FitSetup.mask_spikes`)
        obs = setup.mask_spikes(scan.polar(rows), settings.search).reshape(rows.size, -1)[:, setup.index]
        valid, bad = frame_checks(obs, setup.weight)
        w = np.where(valid & ~bad[:, None], setup.weight[None, :], 0.0)
        p = stack_params([params_from_row(fit, int(i), setup, settings) for i in rows])
        c = covariance_at(np.where(valid, obs, 0.0), w, setup.model, p, vary, prior=settings.refine.prior(),
                          clusters=setup.error_clusters(settings.refine))
        out["lattice_constant_stderr"][rows] = c.stderr["lattice_constant"]
        out["disorder_deg_stderr"][rows] = np.where(np.isfinite(fit["disorder_deg"][rows]),
                                                    c.stderr["disorder_deg"], np.nan)
        lab = lab_rotation_covariance(c.covariance[:, j][:, :, j], np.zeros(rows.size), np.zeros(rows.size))
        out["orientation_stderr_deg"][rows] = np.sqrt(np.trace(lab, axis1=1, axis2=2))
        rep = angle_covariance(lab, fit["tilt1_deg"][rows], fit["tilt2_deg"][rows])
        for m, k in enumerate(ORIENTATION_PARAMETERS):
            out[k + "_stderr"][rows] = np.sqrt(rep[:, m, m])
        print(f"  recomputed {min(c0 + chunk, frames.size)} of {frames.size} frames, "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


def refit_subset(fits_h5: str, truth_h5: str, results_h5: str, configs: list[str], step: int = 5,
                 chunk: int = 16) -> tuple[dict[str, dict], np.ndarray]:
    """Main-pass refits (`fits.scan.frames.fit_frames`, the stored settings) of the in-domain ok
    frames of a scan fit, on the frames of ``results_h5`` (the same master reduced on other bins):
    every interior frame (``/truth/boundary_s`` 0) and every ``step``-th boundary frame.

    Returns the pull table of the refits (`pull_table`'s layout, over their ok frames) and the
    frames refitted.
    """
    from fits.scan.frames import fit_frames
    from fits.scan.settings import FitSettings
    from fits.scan.setup import setup_from_reduction
    from fits.scan.truth import pull_table_of
    from xmodel.config import load_config
    from xmodel.reduced import open_reduced

    fit, tr = read_fits(fits_h5), read_truth(truth_h5)
    inside = (np.asarray(tr["label"]) >= 0) & ~np.asarray(tr["empty"], bool) & ~np.asarray(tr["mixed"], bool)
    ok = inside & (np.asarray(fit["status"]) == FitStatus.OK.code)
    s = np.asarray(tr["boundary_s"], float)
    frames = np.sort(np.concatenate([np.flatnonzero(ok & (s == 0)), np.flatnonzero(ok & (s > 0))[::step]]))
    settings = FitSettings.of(source=f"{fits_h5} settings", **read_settings(fits_h5))
    scan = open_reduced(results_h5)
    setup = setup_from_reduction(scan, load_config(configs), settings)
    parts = []
    t0 = time.perf_counter()
    for c0 in range(0, frames.size, chunk):
        parts.append(fit_frames(scan.polar(frames[c0:c0 + chunk]), setup, settings))
        print(f"  refitted {min(c0 + chunk, frames.size)} of {frames.size} frames, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr, flush=True)
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    sub = {k: np.asarray(v)[frames] for k, v in tr.items() if np.ndim(v) >= 1 and np.shape(v)[0] == s.size}
    return pull_table_of(out, sub, misfit_deg=5.0), frames


def line_monte_carlo(n: int, seed: int = 0) -> str:
    """Propagated standard errors of `fits.scan.boundary.fit_line` against the scatter of ``n``
    Poisson replicates of a four-point line (see the module docstring); a markdown table."""
    from fits.scan.boundary import fit_line
    from fits.scan.settings import FitSettings
    from fits.scan.setup import FitSetup
    from xmodel.config import default_paths, load_config
    from xmodel.parameters import params_from_config

    chi = np.arange(180) * 2.0 - 179.0
    q = np.concatenate([np.geomspace(0.06, 0.24, 80), np.geomspace(1.72, 2.3, 24)])
    settings = FitSettings.of(batch=1, max_iter=30, tol=1e-7, min_significance=np.inf)
    cfg = load_config(default_paths("red"))
    setup = FitSetup.build(cfg, q, chi, None, settings)
    p0 = params_from_config(cfg).replace(sl_scale=3000.0, diffuse_scale=45.0, al_scale=20.0, background=0.05)
    points = [p0, p0, p0, p0.replace(tilt1=p0.tilt1 + np.radians(6.0),
                                     lattice_constant=0.95 * p0.lattice_constant)]
    scale = [2e6 / float(np.asarray(setup.model(p), float).sum()) for p in points]    # 2e6 counts a frame
    mu = [np.asarray(setup.model(p), float) * s for p, s in zip(points, scale)]
    rows = {"orientation_matrix": np.stack([np.asarray(p.sl_orientation(), float) for p in points]),
            "lattice_constant": np.array([float(p.lattice_constant) for p in points]),
            "sl_scale": np.array([float(p.sl_scale) * s for p, s in zip(points, scale)]),
            "diffuse_scale": np.array([float(p.diffuse_scale) * s for p, s in zip(points, scale)]),
            "al_scale": np.array([float(p.al_scale) * s for p, s in zip(points, scale)]),
            "background": np.array([float(p.background) * s for p, s in zip(points, scale)]),
            "disorder_deg": np.full(4, np.nan), "relationship": np.full((4, 3, 3), np.nan)}
    rng = np.random.default_rng(seed)
    keys = ("rotation_deg", "compression_pct", "lattice_constant")
    vals = {k: [] for k in keys}
    errs = {k: [] for k in keys}
    t0 = time.perf_counter()
    for r in range(n):
        polar = np.full((4, chi.size * q.size), np.nan)
        polar[:, setup.index] = rng.poisson(np.stack(mu)).astype(float)
        res = fit_line(polar.reshape(4, chi.size, q.size), setup, settings, scan_fit=rows)
        if not np.all(res["status"] == FitStatus.OK.code):
            print(f"  replicate {r}: statuses {res['status'].tolist()}, left out", file=sys.stderr)
            continue
        for k in keys:
            vals[k].append(res[k])
            errs[k].append(res[k + "_stderr"])
        if (r + 1) % 8 == 0:
            print(f"  {r + 1} of {n} replicates, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    lines = [(f"{len(vals['rotation_deg'])} replicates (seed {seed}); point 3 is the boundary point (true "
              "rotation 6 deg, compression 5 %), points 0-2 the bulk."), "",
             "| quantity | point | mean | scatter (std) | propagated stderr (median) | ratio |", "|---|---|---|---|---|---|"]
    for k in keys:
        v, e = np.array(vals[k]), np.array(errs[k])
        for pt in (0, 3):
            s, m = np.std(v[:, pt], ddof=1), np.median(e[:, pt])
            lines.append(f"| {k} | {pt} | {np.mean(v[:, pt]):.4f} | {s:.4f} | {m:.4f} | {m / s:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fits", nargs="?", help="results file with /entry/fits")
    ap.add_argument("truth", nargs="?", help="the twin's truth.h5")
    ap.add_argument("--misfit-deg", type=float, default=None,
                    help="also the table without frames further than this from the true orientation (deg)")
    ap.add_argument("--recompute", metavar="RESULTS", default=None,
                    help="the reduction the fits were made from: recompute the standard errors at the stored fits")
    ap.add_argument("--config", action="append", default=None,
                    help="configs of the fit (default: configs/experiment/p10_eiger4m.toml configs/domains/red.toml)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for --recompute, as xmodel fit's --set (model.*, fit.*; repeatable)")
    ap.add_argument("--reference", default="auto", choices=("auto", "domain", "grains"),
                    help="true orientation and lattice constant: the grains in the beam where the truth has them "
                         "(auto, the realistic twin) or the domain's")
    ap.add_argument("--refit", metavar="RESULTS", action="append", default=[],
                    help="refit the interior and every 5th boundary in-domain ok frame by the main pass on this "
                         "reduction of the same master (e.g. on other bins) and print their pulls (repeatable)")
    ap.add_argument("--line-mc", type=int, default=0, metavar="N", help="Monte Carlo check of a boundary line")
    ap.add_argument("--seed", type=int, default=0, help="seed of --line-mc")
    args = ap.parse_args(argv)
    print("command: python benchmarks/pulls.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    if args.line_mc:
        print(line_monte_carlo(args.line_mc, args.seed))
        if args.fits is None:
            return
    if args.fits is None or args.truth is None:
        ap.error("give FITS.h5 and TRUTH.h5 (or --line-mc N alone)")
    print(format_pull_table(pull_table(args.fits, args.truth, reference=args.reference)))
    if args.misfit_deg is not None:
        t = pull_table(args.fits, args.truth, misfit_deg=args.misfit_deg, reference=args.reference)
        print(f"\nWithout the {t['lattice_constant']['misfits']} frames more than {args.misfit_deg:g} deg off "
              "(a wrong orientation):")
        print(format_pull_table(t))
    fit = read_fits(args.fits)
    if "dispersion" in fit:
        phi = np.asarray(fit["dispersion"], float)
        phi = phi[np.isfinite(phi)]
        if phi.size:
            print(f"dispersion (Pearson X^2 / degrees of freedom) over {phi.size} fitted frames: median "
                  f"{np.median(phi):.3f}, range {phi.min():.3f} - {phi.max():.3f}")
    if args.recompute:
        from xmodel.config import default_paths

        tr = read_truth(args.truth)
        inside = (np.asarray(tr["label"]) >= 0) & ~np.asarray(tr["empty"], bool) & ~np.asarray(tr["mixed"], bool)
        frames = np.flatnonzero(inside & (np.asarray(fit["status"]) == FitStatus.OK.code))
        configs = args.config or [str(p) for p in default_paths("red")]
        stderr = recompute_stderr(args.fits, args.recompute, configs, frames, overrides=tuple(args.overrides))
        print(f"\nStandard errors recomputed at the stored fits ({frames.size} frames; angles on their reported axes):")
        print(format_pull_table(pull_table(args.fits, args.truth, stderr=stderr, reference=args.reference)))
        if args.misfit_deg is not None:
            print(f"\nThe same without the frames more than {args.misfit_deg:g} deg off:")
            print(format_pull_table(pull_table(args.fits, args.truth, misfit_deg=args.misfit_deg, stderr=stderr,
                                                reference=args.reference)))
    for results in args.refit:
        from xmodel.config import default_paths

        table, frames = refit_subset(args.fits, args.truth, results,
                                     args.config or [str(p) for p in default_paths("red")])
        print(f"\nMain-pass refits of {frames.size} frames on {results} (ok frames, without misfits > 5 deg):")
        print(format_pull_table(table))


if __name__ == "__main__":
    main()
