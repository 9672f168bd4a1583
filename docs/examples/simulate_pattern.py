"""Simulate one pattern, look at it next to a tilted variant, and save it as NeXus.

Run as ``python docs/examples/simulate_pattern.py [OUT_DIR] [BINNING]`` or cell by cell in a
notebook (the figures are returned, not saved, until you call ``fig.savefig``).
"""
from __future__ import annotations

import sys
from pathlib import Path

import h5py
from matplotlib.figure import Figure

from xmodel.config import default_paths, load_config
from xmodel.experiment import beam_center_px
from xmodel.figures import plot_pattern
from xmodel.simulate import Simulation, simulate_counts, write_pattern

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output")
binning = int(sys.argv[2]) if len(sys.argv) > 2 else 4
out.mkdir(parents=True, exist_ok=True)

# the yellow domain of the paper, and the same domain tilted by 5 degrees about the second axis
panels = {}
for name, overrides in (("yellow", []), ("yellow, tilt2 = 5 deg", ["superlattice.tilt2_deg=5"])):
    cfg = load_config(default_paths("yellow"), overrides)
    sim = Simulation.from_config(cfg, binning=binning)
    counts = simulate_counts(sim.expected(), ~sim.experiment.mask, counts=3e6, seed=1)
    panels[name] = (sim, counts)

# two patterns side by side: each plotting function draws into the axes it is given
fig = Figure(figsize=(14, 7), layout="constrained")
for ax, (name, (sim, counts)) in zip(fig.subplots(1, 2), panels.items()):
    plot_pattern(counts, sim.experiment.mask, beam_center_px(sim.experiment.geometry), ax=ax,
                 q=sim.experiment.geometry.q(), reflections=sim.reflections(include_all=True), title=name)
fig.savefig(out / "yellow_tilt.png", dpi=90)

# the pattern as a NeXus file: silx view and h5web open /entry/pattern as an image
sim, counts = panels["yellow"]
path = write_pattern(out / "yellow.h5", counts, sim, noisy=True, seed=1, counts=3e6)
with h5py.File(path, "r") as f:
    plot = f[f.attrs["default"]]
    plot = plot[plot.attrs["default"]]
    print(f"{path}: default plot {plot.name}, signal {plot.attrs['signal']}, axes {list(plot.attrs['axes'])}")
