"""How often the template search puts the true orientation first, and among its candidates, per domain.

Usage: python benchmarks/search_candidates.py [--draws 6] [--n-best 4] [--tol-deg 5]
           [--sl-scale 900 3000] [--seed 11] [--set model.sl_peak_shape=crystal ...]

The scan fit refines a frame from the template search's candidates (`fits.scan.search`), so a
frame whose true orientation is among none of them cannot be fitted right whatever the later
stages do. For each of the five domains this renders ``--draws`` frames with the forward model of
the domain's config (``--set`` overrides applied to every config, e.g. the model's peak shape or
size weighting), each at a random in-plane angle (+-20 deg), tilt (+-1.5 deg on each axis) and SL
peak scale (uniform over ``--sl-scale``), with Poisson noise, on the polar grid of
tests/fits/scan/test_search.py (2 deg chi bins); searches them with `search_orientations` and
`refine_matches` against the template bank the scan fit builds for that model
(`fits.scan.setup`: the "crystal" shape widens the low shells' templates); and prints per domain
how many frames hold signal for the search (its ring significance; the scan fit flags the others
no_signal), and of those how many have the best match within ``--tol-deg`` of the truth
(misorientation), how many have one of the ``--n-best`` candidates there, and the best match's
median error.

The search is coarse (1.5 deg templates): red, tilted 7 deg, is 4-5 deg off at best, so its
"within 5 deg" counts are borderline by construction; a candidate 20-60 deg off is a shell alias.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from fits.scan.search import build_template_bank, refine_matches, search_orientations
from fits.scan.settings import SearchSettings
from xmodel import orientation
from xmodel.config import DOMAINS, default_paths, load_config
from xmodel.experiment import Experiment
from xmodel.noise import poisson_counts
from xmodel.parameters import params_from_config, structure_from_config
from xmodel.pattern import SIZE_SHAPES, PatternModel

CHI = np.arange(180) * 2.0 - 179.0
Q = np.concatenate([np.linspace(0.05, 0.22, 110), np.linspace(1.75, 2.25, 30)])


def domain_frames(domain: str, overrides: list[str], draws: int, sl_scale: tuple[float, float],
                  rng: np.random.Generator, seed: int):
    """``draws`` noisy polar frames (draws, C, Q) of ``domain``, their true parameters, and the template bank."""
    cfg = load_config(default_paths(domain), overrides)
    exp = Experiment.from_config(cfg)
    px = exp.polar_pixels(Q, CHI)
    base = params_from_config(cfg)
    a0 = float(cfg.superlattice.lattice_constant)
    a_range = (0.85 * a0, 1.05 * a0)
    structure = structure_from_config(cfg, a_range)
    model = PatternModel(px, structure, base, orientation_margin_deg=None, lattice_constant_range=a_range,
                         width_factor=1.5)
    imgs, truth = [], []
    for k in range(draws):
        p = base.replace(inplane=base.inplane + np.radians(rng.uniform(-20, 20)),
                         tilt1=base.tilt1 + np.radians(rng.uniform(-1.5, 1.5)),
                         tilt2=base.tilt2 + np.radians(rng.uniform(-1.5, 1.5)),
                         sl_scale=float(rng.uniform(*sl_scale)), diffuse_scale=45.0, al_scale=4.5, background=0.045)
        img = poisson_counts(np.asarray(model.image(p), float), seed=seed + k).astype(np.float64)
        imgs.append(np.where(px.valid.reshape(img.shape), img, np.nan))
        truth.append(p)
    size_sigma = float(base.sl_radial_width) if structure.sl_peak_shape in SIZE_SHAPES else 0.0
    bank = build_template_bank(CHI, wavelength_A=float(exp.geometry.wavelength) * 1e10, lattice_constant=a0,
                               step_deg=SearchSettings.step_deg, mosaic_deg=float(np.degrees(base.sl_mosaic)),
                               size_sigma=size_sigma)
    return np.stack(imgs), truth, bank, a_range


def search_errors(imgs: np.ndarray, truth: list, bank, a_range: tuple[float, float],
                  n_best: int) -> tuple[np.ndarray, np.ndarray]:
    """(draws, n_best) misorientation (deg) of each candidate of each frame from its true SL
    orientation, and (draws,) whether the search saw signal in the frame (a frame without is not
    correlated: the scan fit flags it no_signal, and its candidates mean nothing)."""
    res = search_orientations(imgs, Q, bank, a_range=a_range, n_best=n_best)
    res = refine_matches(imgs, Q, res, bank, n_refine=n_best)
    out = np.full((len(truth), res.orientation.shape[1]), np.inf)
    for i, p in enumerate(truth):
        R = np.asarray(p.sl_orientation(), float)
        out[i] = [np.degrees(orientation.misorientation_angle(R, res.orientation[i, k]))
                  for k in range(res.orientation.shape[1])]
    return out, np.asarray(res.has_signal, bool)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=6, help="frames per domain")
    ap.add_argument("--n-best", type=int, default=SearchSettings.n_candidates, help="candidates kept (fit.search.n_candidates)")
    ap.add_argument("--tol-deg", type=float, default=5.0, help="a candidate this close to the truth is right (deg)")
    ap.add_argument("--sl-scale", type=float, nargs=2, default=(900.0, 3000.0),
                    help="range of the SL peak scale of the frames (counts)")
    ap.add_argument("--seed", type=int, default=11, help="seed of the random orientations and of the noise")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every domain, e.g. model.sl_peak_shape=crystal (repeatable)")
    args = ap.parse_args(argv)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
          f"load average {load}")
    print(f"overrides: {args.set or 'none (the defaults)'}\n")
    print(f"| domain | frames | with signal | best match within {args.tol_deg:g} deg | one of {args.n_best} "
          f"within {args.tol_deg:g} deg | best match median error (deg) |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    tot = np.zeros(4, int)
    for d in DOMAINS:
        imgs, truth, bank, a_range = domain_frames(d, args.set, args.draws, tuple(args.sl_scale), rng, 100 * args.seed)
        err, signal = search_errors(imgs, truth, bank, a_range, args.n_best)
        err = err[signal]
        first = int(np.sum(err[:, 0] < args.tol_deg))
        anyn = int(np.sum(err.min(axis=1) < args.tol_deg))
        tot += (len(truth), signal.sum(), first, anyn)
        median = f"{np.median(err[:, 0]):.1f}" if err.size else "-"
        print(f"| {d} | {len(truth)} | {signal.sum()} | {first} | {anyn} | {median} |", flush=True)
    print(f"| all | {tot[0]} | {tot[1]} | {tot[2]} | {tot[3]} | |")
    print(f"\n{time.perf_counter() - t0:.0f} s wall")


if __name__ == "__main__":
    main()
