"""How far the polar-grid model's bin-centre evaluation moves a fit, in units of the Cramer-Rao bound.

Usage: python benchmarks/study_binning.py [--domains green,orange] [--tilt1-deg 0]

A scan fit compares reduced polar images (the mean of the detector pixels whose centres fall in
each (chi, q) bin) with the model evaluated at the bin centres (`fits.study.grid`). For each
domain at the twin's counts (benchmarks/study_mc.py) this script simulates the noise-free
full-detector pattern, reduces it with the scan's bins (500 log q x 360 chi,
`xmodel.reduction.build_bin_map`) and fits it from the truth with the scan refinement
(`fits.batch.fit_batch`, no noise). The offset of the fit from the truth is the bias the
binning alone gives every frame; it is printed in units of the marginal Cramer-Rao bound of the
polar grid, i.e. as the pull it adds to a noise-free frame. The same fit with the model
evaluated at the pixel centroid of each bin (mean |q| and circular-mean chi of its pixel
centres) shows how much of the offset that cheaper fix removes.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from benchmarks.study_mc import twin_overrides
from fits.study.problem import StudyProblem
from xmodel.config import CONFIG_DIR, EXPERIMENT_TOML, load_config


def binning_offsets(cfg) -> tuple[StudyProblem, np.ndarray, np.ndarray, np.ndarray]:
    """(problem, fitted - truth of the reduced noise-free pattern with the model at the bin
    centres, the same with the model at the bins' pixel centroids, CRLB), edge units."""
    import jax.numpy as jnp

    from fits.batch import fit_batch
    from fits.study.scan_link import FitSettings
    from xmodel.pattern import PatternModel
    from xmodel.pixels import PixelSet, weight_at
    from xmodel.reduction import build_bin_map, default_bins
    from xmodel.simulate import Simulation

    problem = StudyProblem.from_config(cfg, grid="polar")
    fa = problem.fisher()
    sim = Simulation.from_config(cfg, binning=1, dtype=jnp.float64)
    image = np.asarray(sim.expected(), np.float64)
    g = problem.grid
    geo, mask = g.experiment.geometry, g.experiment.mask
    bins = default_bins(geo, mask, n_q=g.q.size, n_chi=g.chi_deg.size, q_spacing="log")
    bmap = build_bin_map(geo.q(), geo.chi(), mask, bins)
    sums = bmap.matrix.astype(np.float64) @ image.reshape(-1)
    mean = sums.reshape(-1)[g.index] / g.weight
    s = FitSettings()
    a0 = float(cfg.superlattice.lattice_constant)
    f = fit_batch(mean[None], g.weight[None], problem.model, problem.truth, problem.names,
                  bounds={"lattice_constant": (s.a_range_rel[0] * a0, s.a_range_rel[1] * a0)},
                  max_iter=50, tol=1e-10)
    fitted = np.array([f.values[n][0] for n in problem.names])
    # the same fit with the model at the pixel centroid of each bin instead of its centre
    m = bmap.matrix.astype(np.float64)
    q_c = (m @ geo.q().reshape(-1)).reshape(-1)[g.index] / g.weight
    chi = np.radians(geo.chi().reshape(-1))
    chi_c = np.degrees(np.arctan2((m @ np.sin(chi))[g.index], (m @ np.cos(chi))[g.index]))
    q_lab = geo.q_lab_from_polar(q_c, chi_c).reshape(-1, 3)
    rows, cols = geo.pixel_from_q_lab(q_lab)
    px = PixelSet(q_lab, weight_at(geo, q_lab, rows, cols, g.experiment.polarization_factor),
                  np.ones(q_c.size, bool), (q_c.size,), "list")
    model_c = PatternModel(px, problem.model.structure, problem.truth, dtype=jnp.float64,
                           lattice_constant_range=(0.98 * a0, 1.02 * a0), width_factor=1.5)
    fc = fit_batch(mean[None], g.weight[None], model_c, problem.truth, problem.names,
                   bounds={"lattice_constant": (s.a_range_rel[0] * a0, s.a_range_rel[1] * a0)},
                   max_iter=50, tol=1e-10)
    fitted_c = np.array([fc.values[n][0] for n in problem.names])
    return problem, fitted - problem.values, fitted_c - problem.values, fa.crlb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", default="green,orange")
    ap.add_argument("--tilt1-deg", type=float, default=None, help="override the SL tilt about e1 (deg)")
    args = ap.parse_args(argv)
    sets = twin_overrides()
    if args.tilt1_deg is not None:
        sets.append(f"superlattice.tilt1_deg={args.tilt1_deg:g}")
    rows = ["| domain | parameter | unit | CRLB | offset, model at bin centres | / CRLB "
            "| offset, model at bin pixel centroids | / CRLB |", "|---|---|---|---|---|---|---|---|"]
    for name in args.domains.split(","):
        t = time.perf_counter()
        cfg = load_config([EXPERIMENT_TOML, CONFIG_DIR / "domains" / f"{name}.toml"], sets)
        problem, off, off_c, crlb = binning_offsets(cfg)
        for j, p in enumerate(problem.names):
            rows.append(f"| {name} | {p} | {problem.units[j]} | {crlb[j]:.3g} | {off[j]:.3g} | {off[j] / crlb[j]:.1f} "
                        f"| {off_c[j]:.3g} | {off_c[j] / crlb[j]:.1f} |")
        print(f"{name}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    print("\n".join(rows))
    print(f"\nbenchmark: python benchmarks/study_binning.py {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
