"""Refits of Poisson replicates of single realistic frames: are the error bars the refits' scatter?

Usage: python benchmarks/replicate_pulls.py RESULTS.h5 CONFIG.toml [CONFIG.toml ...] --twin TWIN.toml
           --points 186,90 [--replicates 16] [--seed 0] [--misfit-deg 5] [--set TABLE.KEY=VALUE ...]

Each scan point of the realistic twin ``--twin`` (e.g. configs/twin_realistic.toml) is rendered
once (`xmodel.realspace.single.render_point`: its expected counts, the frame's grains, NCs and
nuisances fixed), ``--replicates`` Poisson copies of those expected counts are drawn, reduced onto
the polar grid of ``RESULTS.h5`` (`xmodel.demo.reduce_like`) and fitted together by the scan fit's
per-frame code (`fits.scan.frames.fit_frames`, the experiment ``CONFIG`` files and ``--set``
overrides, as `benchmarks/frame_tilts.py`). Per point and parameter it prints:

* ``scatter``: the standard deviation of the fitted values over the replicates (ok fits within
  ``--misfit-deg`` of the grains' mean orientation; the others, another basin, are counted
  apart), the error a fit of this frame has from its counting noise;
* ``stderr``: the median of the stored standard errors of those fits (cluster-robust,
  `fits.robust`);
* ``scatter / stderr``: 1 where the error bars are the refits' scatter (Poisson noise of the same
  frame), the standard of docs/validation.md;
* ``bias``: the replicates' mean minus the truth (angles from the mean orientation of the frame's
  grains, `fits.scan.truth.orientation_errors`; the lattice constant from the grains' in the plane
  normal to the beam), and ``bias / stderr``: the error that is the frame's own, the same in every
  replicate, which no error bar computed from the frame's counts can contain.

The pulls of a whole scan against the truth (`benchmarks/pulls.py`) mix both; this separates them.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

#: the parameters compared: stored key, key of the stored error, unit
PARAMETERS = (("lattice_constant", "lattice_constant_stderr", "A"),
              ("tilt1_deg", "tilt1_deg_stderr", "deg"),
              ("tilt2_deg", "tilt2_deg_stderr", "deg"),
              ("inplane_deg", "inplane_deg_stderr", "deg"),
              ("disorder_deg", "disorder_deg_stderr", "deg"))


def replicate_errors(rows: dict, truth: dict) -> dict[str, np.ndarray]:
    """Signed errors of each replicate's fit against the frame's truth, per parameter.

    Parameters
    ----------
    rows : `fits.scan.frames.fit_frames` output over the replicates (leading axis R).
    truth : the frame's truth row (`xmodel.realspace.single.RealisticFrame.truth`).

    Returns
    -------
    dict parameter -> (R,) fitted minus true (A or deg); the angles about the fit's reported
    axes (`fits.scan.truth.orientation_errors`) from the grains' mean orientation.
    """
    from fits.scan.truth import orientation_errors
    from xmodel.realspace.engine import GRAIN_LATTICE

    R = np.asarray(rows["orientation_matrix"], float)
    n = R.shape[0]
    R_true = np.repeat(np.asarray(truth["grain_orientation_matrix"], float)[None], n, axis=0)
    angles = orientation_errors(R, R_true, np.asarray(rows["tilt1_deg"], float), np.asarray(rows["tilt2_deg"], float))
    return {"lattice_constant": np.asarray(rows["lattice_constant"], float) - float(truth[GRAIN_LATTICE]),
            "tilt1_deg": angles[:, 0], "tilt2_deg": angles[:, 1], "inplane_deg": angles[:, 2],
            "disorder_deg": np.asarray(rows["disorder_deg"], float) - float(truth["disorder_deg"])}


def main(argv: list[str] | None = None) -> None:
    from fits.scan.frames import fit_frames
    from fits.scan.settings import settings_from_config
    from fits.scan.setup import setup_from_reduction
    from fits.status import FitStatus
    from xmodel.config import load_config
    from xmodel.demo import reduce_like
    from xmodel.orientation import misorientation_angle
    from xmodel.realspace.single import render_point
    from xmodel.reduced import open_reduced
    from xmodel.reduction import PolarBins

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a reduced realistic scan (/entry/reduction: the polar grid and mask)")
    ap.add_argument("configs", nargs="+", help="experiment config TOML files, merged in order")
    ap.add_argument("--twin", required=True, help="realistic-twin TOML")
    ap.add_argument("--points", required=True, help="scan points, comma-separated")
    ap.add_argument("--replicates", type=int, default=16, help="Poisson copies per point (default 16)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the copies (default 0)")
    ap.add_argument("--misfit-deg", type=float, default=5.0,
                    help="replicates further from the grains' mean orientation are another basin (default 5)")
    ap.add_argument("--set", action="append", default=[], help="config override TABLE.KEY=VALUE (repeatable)")
    args = ap.parse_args(argv)
    if args.replicates < 3:
        ap.error(f"--replicates {args.replicates}: at least 3 copies are needed for a scatter")

    cfg = load_config(args.configs, args.set)
    settings = settings_from_config(cfg)
    setup = setup_from_reduction(args.results, cfg, settings)
    scan = open_reduced(args.results)
    bins, mask = PolarBins(scan.q_edges, scan.chi_edges), scan.mask
    print("command: python benchmarks/replicate_pulls.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]))
    print("| point | domain | true tilt from the zone (deg) | parameter | ok fits (other basins) | scatter | "
          "stderr (median) | scatter / stderr | bias | bias / stderr |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(args.seed)
    for point in (int(p) for p in args.points.split(",")):
        t0 = time.perf_counter()
        frame = render_point(args.twin, point)
        mu = np.asarray(frame.expected, float)
        polar = np.stack([reduce_like(rng.poisson(mu).astype(np.float64), frame.experiment.geometry, bins, mask)[0]
                          for _ in range(args.replicates)])
        rows = fit_frames(polar, setup, settings)
        ok = np.asarray(rows["status"]) == FitStatus.OK.code
        R_g = np.asarray(frame.truth["grain_orientation_matrix"], float)
        off = np.array([np.degrees(float(misorientation_angle(R_g, R))) if np.all(np.isfinite(R)) else np.inf
                        for R in np.asarray(rows["orientation_matrix"], float)])
        other = int(np.sum(ok & (off > args.misfit_deg)))
        ok &= off <= args.misfit_deg
        errors = replicate_errors(rows, frame.truth)
        name = frame.truth["label_name"] or "empty"
        tilt = float(frame.truth["tilt_deg"])
        for key, err_key, unit in PARAMETERS:
            e = errors[key][ok]
            se = np.asarray(rows[err_key], float)[ok]
            e, se = e[np.isfinite(e) & np.isfinite(se)], se[np.isfinite(e) & np.isfinite(se)]
            if e.size < 3:
                print(f"| {point} | {name} | {tilt:.1f} | {key} | {e.size} ({other}) | | | | | |")
                continue
            scatter, stderr, bias = float(np.std(e, ddof=1)), float(np.median(se)), float(np.mean(e))
            print(f"| {point} | {name} | {tilt:.1f} | {key} ({unit}) | {e.size} ({other}) | {scatter:.3g} | {stderr:.3g} | "
                  f"{scatter / stderr:.2f} | {bias:+.3g} | {bias / stderr:+.1f} |", flush=True)
        status = np.unique(np.asarray(rows["status"]), return_counts=True)
        print(f"<!-- point {point}: {args.replicates} replicates in {time.perf_counter() - t0:.0f} s; statuses "
              + ", ".join(f"{FitStatus.from_code(int(c)).name.lower()} {k}" for c, k in zip(*status)) + " -->", flush=True)


if __name__ == "__main__":
    main()
