"""Fit the noiseless (expected) frames of twin points, reduced as the scan was: what is left is
the fit model's bias against the twin, not noise.

Usage: python benchmarks/model_bias.py TWIN.toml RESULTS.h5 --points 36 37 29 [--set KEY=VALUE ...]
       [--domain red] [--chi-subdivide K] [--centroid-only]

Renders the expected counts of the given scan points (`xmodel.synth.expected_frames`, no Poisson
noise) on the detector, reduces them on the bins of RESULTS.h5 (``/entry/reduction/q_edges``,
``chi_edges``; `xmodel.reduction.reduce_frames`), fits them with `fits.scan.frames.fit_frames`
and the default settings, and prints per point the error of the lattice constant against the
truth, its stored standard error, their ratio (the pull a noiseless frame already has) and the
dispersion (Pearson X^2 per degree of freedom: here the model mismatch alone; a noisy frame has
about 1 plus this), then the noiseless pulls of every stored parameter. ``--chi-subdivide K``
reduces and fits on chi bins K times finer. ``--centroid-only`` fits with each peak at its bin's
centroid (first order: the bins' q spreads dropped, `xmodel.pixels.PixelSet.spread`). Figures: docs/performance.md ("Calibrated
uncertainties").
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import shlex
import sys

import h5py
import numpy as np

from fits.scan.frames import fit_frames
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup, setup_from_reduction
from fits.scan.truth import orientation_errors
from xmodel.config import default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.reduced import open_reduced
from xmodel.reduction import PolarBins, build_bin_map, reduce_frames
from xmodel.synth import domain_models, expected_frames
from xmodel.twin import components, load_twin, point_truth


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("twin", help="the twin TOML the scan was synthesised from")
    ap.add_argument("results", help="its reduction (/entry/reduction)")
    ap.add_argument("--points", type=int, nargs="+", required=True, help="scan points to render and fit")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="the synth's --set values")
    ap.add_argument("--domain", default="red", help="domain config of the fit (as xmodel fit's --config)")
    ap.add_argument("--chi-subdivide", type=int, default=1, metavar="K",
                    help="reduce and fit on the scan's chi bins split into K (the second-order bin term shrinks as 1/K^2)")
    ap.add_argument("--centroid-only", action="store_true",
                    help="model each bin by the peaks at its pixels' centroid, without the bin's q spread (first order)")
    args = ap.parse_args(argv)
    print("command: python benchmarks/model_bias.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    sample = load_twin(args.twin, args.overrides)
    if max(args.points) >= sample.n_points or min(args.points) < 0:
        raise SystemExit(f"--points must lie in 0..{sample.n_points - 1} (the twin has {sample.n_points} points)")
    exp = Experiment.from_config(sample.domains[0].config)
    pixels = exp.pixels()
    comps = components(sample)
    truth = point_truth(sample, comps)
    frames = {}
    for i, fr in enumerate(expected_frames(sample, pixels, comps, domain_models(sample, pixels, comps))):
        if i in args.points:
            frames[i] = np.asarray(fr, np.float64).reshape(tuple(pixels.shape))
        if len(frames) == len(set(args.points)):
            break
    with h5py.File(args.results, "r") as f:
        q_edges, chi_edges = f["entry/reduction/q_edges"][()], f["entry/reduction/chi_edges"][()]
    k = max(1, int(args.chi_subdivide))
    if k > 1:
        chi_edges = np.concatenate([np.linspace(a, b, k + 1)[:-1] for a, b in itertools.pairwise(chi_edges)]
                                   + [chi_edges[-1:]])
    bins = PolarBins(q_edges=q_edges, chi_edges=chi_edges)
    bin_map = build_bin_map(exp.geometry.q(), exp.geometry.chi(), exp.mask, bins)
    polar, _ = reduce_frames(np.stack([frames[i] for i in args.points]), bin_map)
    cfg = load_config(default_paths(args.domain))
    if k == 1:
        setup = setup_from_reduction(open_reduced(args.results), cfg)
    else:
        setup = FitSetup.build(cfg, 0.5 * (q_edges[1:] + q_edges[:-1]), 0.5 * (chi_edges[1:] + chi_edges[:-1]),
                               bin_map.counts, FitSettings(), q_edges=q_edges, chi_edges=chi_edges, mask=exp.mask)
    if args.centroid_only:
        setup = dataclasses.replace(setup, model=setup.model_on(dataclasses.replace(setup.model.pixels, spread=None)))
    out = fit_frames(np.asarray(polar), setup, FitSettings())
    print("| point | a error (A) | a stderr (A) | noiseless pull | dispersion | status |")
    print("|---|---|---|---|---|---|")
    for j, i in enumerate(args.points):
        err = out["lattice_constant"][j] - truth["lattice_constant"][i]
        s = out["lattice_constant_stderr"][j]
        print(f"| {i} | {err:+.4f} | {s:.4f} | {err / s:+.1f} | {out['dispersion'][j]:.3f} | "
              f"{out['message'][j].split(' (')[0]} |")
    # the noiseless pulls of every stored parameter (angles resolved on the reported axes)
    pts = np.asarray(args.points)
    ang = orientation_errors(out["orientation_matrix"], truth["orientation_matrix"][pts], out["tilt1_deg"],
                             out["tilt2_deg"])
    err = {"lattice_constant": out["lattice_constant"] - truth["lattice_constant"][pts],
           "disorder_deg": out["disorder_deg"] - truth["disorder_deg"][pts],
           "tilt1_deg": ang[:, 0], "tilt2_deg": ang[:, 1], "inplane_deg": ang[:, 2]}
    print("\n| point | tilt (deg) | " + " | ".join(f"{k} pull" for k in err) + " |")
    print("|---|---|" + "---|" * len(err))
    for j, i in enumerate(args.points):
        print(f"| {i} | {out['tilt_deg'][j]:.1f} | " + " | ".join(
            f"{err[k][j] / out[k + '_stderr'][j]:+.2f}" for k in err) + " |")
    rms = {k: float(np.sqrt(np.nanmean((err[k] / out[k + "_stderr"]) ** 2))) for k in err}
    print("\nroot mean square noiseless pull (a noisy frame's pull has variance 1 + this squared): "
          + ", ".join(f"{k} {v:.2f}" for k, v in rms.items()))


if __name__ == "__main__":
    main()
