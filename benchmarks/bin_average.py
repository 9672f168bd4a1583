"""Cost of the bin-averaged model (second order in each bin's q spread) against the centroid model.

Usage: python benchmarks/bin_average.py RESULTS.h5 EXPERIMENT.toml SAMPLE.toml [--batch 16] [--repeat 5]

Builds the scan fit's model on the reduction's polar grid (`fits.scan.setup.setup_from_reduction`:
points at the centroids of the bins' pixels, each with the covariance of its pixels' q-vectors),
and the same model without the spreads (`xmodel.pixels.PixelSet.spread` = None: each peak at the
centroid), then times, after compiling, the unit-scale components of a batch of parameter sets
(the search and linear stages, `fits.scan.linear.component_images`), the value and gradient of a
Poisson deviance (the refinement) and the forward-mode Jacobian of the model (the covariance),
and prints seconds per call and the ratio binned / centroid. Figures: docs/performance.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from fits.scan.setup import setup_from_reduction
from xmodel.config import load_config


def _best(fn, repeat: int) -> float:
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)


def timings(model, params, batch: int, repeat: int) -> dict:
    rng = np.random.default_rng(0)
    stacked = jax.tree_util.tree_map(lambda x: jnp.stack([jnp.asarray(x)] * batch), params)
    stacked = stacked.replace(inplane=stacked.inplane + jnp.asarray(rng.uniform(-0.5, 0.5, batch), stacked.inplane.dtype))
    comps = jax.jit(jax.vmap(model.components(), in_axes=(None, 0)))
    y = jnp.asarray(rng.poisson(np.maximum(np.asarray(model(params)), 0.0) + 1.0), model.arrays["weight"].dtype)
    vg = model.value_and_grad(lambda mu, p, y: jnp.sum(mu - y * jnp.log(jnp.maximum(mu, 1e-6))))
    jac = model.jacobian()
    return {"components_batch": _best(lambda: comps(model.arrays, stacked), repeat),
            "value_and_grad": _best(lambda: vg(params, y), repeat),
            "jacobian": _best(lambda: jax.tree_util.tree_leaves(jac(params)), repeat)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("configs", nargs="+", help="experiment TOML, then the sample TOML")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    print("command: python benchmarks/bin_average.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, jax {jax.__version__}")
    setup = setup_from_reduction(args.results, load_config(args.configs))
    binned = setup.model
    pixels = binned.pixels
    if pixels.spread is None:
        raise SystemExit(f"{args.results} stores no bin edges: its model has no bin spreads to time")
    centroid = setup.model_on(dataclasses.replace(pixels, spread=None))
    params = setup.template
    print(f"points {pixels.size}, (point, reflection) pairs {binned.support.n_pairs}")
    a = timings(centroid, params, args.batch, args.repeat)
    b = timings(binned, params, args.batch, args.repeat)
    print("| call | centroid (s) | bin-averaged (s) | ratio |\n|---|---|---|---|")
    for k in a:
        print(f"| {k} | {a[k]:.4f} | {b[k]:.4f} | {b[k] / a[k]:.2f} |")


if __name__ == "__main__":
    main()
