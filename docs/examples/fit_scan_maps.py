"""Synthesise a small scan of a digital twin, reduce it, fit every frame and plot the maps.

Run as ``python docs/examples/fit_scan_maps.py [OUT_DIR]`` or cell by cell in a notebook (the
figure is returned, not saved, until you call ``fig.savefig``). The scan: one domain of the
paper and its edge under a 3 x 4 um map (12 full Eiger 4M frames); ``xmodel synth``, ``xmodel
reduce`` and ``xmodel fit`` do the same from the command line (docs/user_guide.md).
"""
from __future__ import annotations

import sys
from pathlib import Path

from matplotlib.figure import Figure

from fits.scan.driver import fit_scan
from fits.scan.results import read_fits
from fits.scan.settings import FitSettings
from fits.scan.truth import compare_to_truth
from xmodel.config import CONFIG_DIR, default_paths, load_config
from xmodel.maps import plot_map
from xmodel.positions import read_positions
from xmodel.reduced import open_reduced
from xmodel.reduction import reduce_scan
from xmodel.synth import synthesize

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output")
out.mkdir(parents=True, exist_ok=True)
for old in (out / "results.h5", out / "fits.h5"):     # results of an earlier run belong to another scan
    old.unlink(missing_ok=True)

# 1. the twin: the red domain of the paper (configs/domains/red.toml) as a disc whose edge
#    compresses and tilts the superlattice, scanned on 3 x 4 points at 1 um steps (the twin's
#    keys: configs/twin.toml); the scan is written as a Dectris master + data file, a P10 .fio
#    scan file with the motor positions, and the twin's truth.h5
twin = out / "twin.toml"
twin.write_text(f"""
name = "small"
seed = 3
experiment = "{CONFIG_DIR / 'experiment' / 'p10_eiger4m.toml'}"
[scan]
shape = [3, 4]
step_um = 1.0
[boundary]
roughness = 0.0
[[domain]]
file = "{CONFIG_DIR / 'domains' / 'red.toml'}"
center_um = [1.0, 0.5]
radius_um = 2.6
width_um = 1.0
tilt_deg = 8.0
shrink = 0.08
""")
master = synthesize([twin], out / "scan", progress=False)

# 2. the reduction: polar images (q, chi) and radial profiles of every frame; the positions
#    from the scan file place the frames on the map
positions = read_positions(out / "scan" / "small.fio", n_frames=12)
results = reduce_scan(master, out / "results.h5", positions_um=positions, progress=False)

# 3. the scan fit of every frame (orientation, lattice constant, disorder, configuration), with
#    the red domain's config as the starting model, without the neighbour passes (a small map)
settings = FitSettings.of(neighbour_passes=0, cache_dir=str(out / "cache"))
fits_h5 = fit_scan(results, load_config(default_paths("red")), out / "fits.h5", settings, progress=False)

# 4. the maps: each frame at its scan position (um), white where a frame has no fit
fits = read_fits(fits_h5)
scan = open_reduced(results)
x_um, y_um = scan.axes_um()
fig = Figure(figsize=(11, 4), layout="constrained")
for ax, (key, label) in zip(fig.subplots(1, 2), (("lattice_constant", "a (Å)"), ("tilt_deg", "tilt (deg)"))):
    plot_map(scan.map_image(fits[key]), scan.grid.shape, ax=ax, title=key.replace("_", " "), label=label,
             cmap="viridis", x_um=x_um, y_um=y_um)
fig.savefig(out / "maps.png", dpi=90)

# 5. against the twin's truth: median errors over the points inside the domain
table = compare_to_truth(fits_h5, out / "scan" / "truth.h5")
print(f"{fits_h5}: {table['n_in_domain']} of 12 points inside the domain; median orientation error "
      f"{table['orientation']['median']:.2f} deg, median lattice-constant error "
      f"{table['lattice_constant']['median']:.2f} %; the maps: {out / 'maps.png'}")
