"""Amortised time per frame of the scan fit (search + refinement), banded vs dense model.

Usage: python benchmarks/fit.py RESULTS.h5 [--domain red] [--frames 32] [--batch 16]

Fits the first ``--frames`` frames of ``/entry/reduction/polar`` (fewer if the file holds fewer) twice with `fits.scan.frames.fit_frames`
(the first pass compiles; the second is timed) on the model restricted to the SL and AL q-bands
(`fits.scan.setup.fit_point_index`, the default) and on the dense model (every valid polar bin),
and prints seconds per frame and per stage, divided by the frames actually read, with the first
(compiling) pass's time separately, the machine (cores, CPU model, jax version) and the command
line. Figures: docs/performance.md ("Fits").
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shlex
import sys
import time

import numpy as np

from fits.scan.frames import fit_frames
from xmodel.reduced import open_reduced
from fits.scan.settings import FitSettings
from fits.scan.setup import FitSetup
from xmodel.config import default_paths, load_config


def run(path: str, domain: str, n_frames: int, batch: int, dense: bool) -> dict:
    cfg = load_config(default_paths(domain))
    settings = FitSettings.of(batch=batch, cache_dir=os.path.expanduser("~/.cache/xmodel"))
    scan = open_reduced(path)
    q, chi, counts = scan.q, scan.chi, scan.pixel_counts
    polar = scan.polar(slice(0, n_frames))
    n_frames = polar.shape[0]              # the frames read, which the file may make fewer
    setup = FitSetup.build(cfg, q, chi, counts, settings)
    if dense:
        from xmodel.experiment import Experiment
        px = Experiment.from_config(cfg).polar_pixels(q, chi)
        idx = np.flatnonzero(np.asarray(px.valid).reshape(-1) & (counts.reshape(-1) > 0))
        model = setup.model_on(px.subset(idx))
        setup = dataclasses.replace(setup, model=model, index=idx, weight=counts.reshape(-1)[idx].astype(float))
    out = {}
    for rep in range(2):
        tm = {}
        t0, c0 = time.perf_counter(), time.process_time()
        for s in range(0, n_frames, batch):
            fit_frames(polar[s:s + batch], setup, settings, timings=tm)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if rep == 0:
            first = wall
            continue
        out = {"frames": n_frames, "seconds_per_frame": wall / n_frames, "cpu_per_frame": cpu / n_frames,
               "first_pass_s": first, "points": int(setup.index.size),
               **{k: v / n_frames for k, v in tm.items()}}
    return out


def machine() -> str:
    """Cores, CPU model, load and library versions, for the record."""
    import jax

    model = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (f"{len(os.sched_getaffinity(0))} cores usable ({os.cpu_count()} online), {model}, load average {load}; "
            f"jax {jax.__version__} ({jax.default_backend()}), numpy {np.__version__}, Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--domain", default="red")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--no-dense", action="store_true")
    a = ap.parse_args()
    print("command:", shlex.join([os.path.basename(sys.executable)] + sys.argv))
    print("machine:", machine())
    for dense in ((False,) if a.no_dense else (False, True)):
        r = run(a.results, a.domain, a.frames, a.batch, dense)
        name = "dense (all valid bins)" if dense else "banded (SL + AL q-bands)"
        stages = ", ".join(f"{k} {v:.3f}" for k, v in r.items()
                           if k not in ("frames", "seconds_per_frame", "cpu_per_frame", "first_pass_s", "points"))
        print(f"{name}: {r['frames']} frames, {r['points']} points, {r['seconds_per_frame']:.3f} s per frame "
              f"amortised, warm ({r['cpu_per_frame']:.3f} CPU-s per frame; per stage, s per frame: {stages}); "
              f"first pass incl. compiling {r['first_pass_s']:.1f} s")
    print("machine at the end:", machine())


if __name__ == "__main__":
    main()
