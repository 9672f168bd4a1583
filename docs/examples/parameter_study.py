"""How precisely does one pattern determine a few parameters, and where on the detector?

Cramer-Rao bounds of the Poisson likelihood (docs/studies.md) for the green domain's lattice
constant, tilt and NC disorder, their correlations, the bounds at a longer exposure, and the
sensitivity map of the tilt. Run as ``python docs/examples/parameter_study.py [OUT_DIR] [BINNING]``
or cell by cell in a notebook (the figure is returned, not saved, until ``fig.savefig``);
``xmodel study`` does the same from the command line.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm, SymLogNorm
from matplotlib.figure import Figure

from fits.study import study
from fits.study.problem import StudyProblem
from fits.study.result import result_of
from fits.study.sensitivity import sensitivity_maps
from xmodel.config import default_paths, load_config

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("example-output")
binning = int(sys.argv[2]) if len(sys.argv) > 2 else 8
out.mkdir(parents=True, exist_ok=True)

# 1. the study: the green domain at the config's counts (0.3 s exposure) on the binned detector
#    (every block of binning x binning pixels is one point; a bound is given the other studied
#    parameters, the rest of the model is fixed at the truth)
cfg = load_config(default_paths("green"), [f"detector.binning={binning}"])
names = ["lattice_constant", "tilt1_deg", "disorder_deg"]
problem = StudyProblem.from_config(cfg, names, grid="binned")
result = result_of(problem)
print(result.table())
for name, bound in result.crlb.items():
    print(f"{name}: +- {bound:.3g} (marginal), +- {result.crlb_conditional[name]:.3g} with the others known")
print("correlations:\n", np.array2string(result.fisher.correlation, precision=2))

# 2. the bounds fall as 1 / sqrt(exposure): ten times longer gives sqrt(10) times smaller bounds
longer = study(cfg, names, grid="binned", exposure_s=3.0)
print("3 s / 0.3 s exposure:", {n: round(longer.crlb[n] / result.crlb[n], 3) for n in names})

# 3. where the tilt is measured: the share of its Fisher information carried by each detector
#    block (it sums to 1), beside how the pattern changes when the tilt moves by its bound
maps = sensitivity_maps(problem, ["tilt1_deg"])
fig = Figure(figsize=(11, 4.5), layout="constrained")
ax_change, ax_share = fig.subplots(1, 2)
change, share = maps.change[0], maps.fisher_fraction[0]
lim = float(np.nanmax(np.abs(change)))
im = ax_change.imshow(change, cmap="RdBu_r", norm=SymLogNorm(lim * 1e-3, vmin=-lim, vmax=lim),
                      interpolation="nearest")
fig.colorbar(im, ax=ax_change, label="counts per pixel")
ax_change.set_title(f"dI/d(tilt1) x CRLB ({maps.sigma[0]:.3g} deg)")
positive = share[np.isfinite(share) & (share > 0)]
im = ax_share.imshow(np.where(share > 0, share, np.nan), cmap="viridis", interpolation="nearest",
                     norm=LogNorm(positive.max() * 1e-4, positive.max()))
fig.colorbar(im, ax=ax_share, label="share of the information")
ax_share.set_title("Fisher information of tilt1 per detector block")
for ax in (ax_change, ax_share):
    ax.set_xlabel(f"column (blocks of {binning} pixels)")
    ax.set_ylabel(f"row (blocks of {binning} pixels)")
fig.savefig(out / "sensitivity_tilt1.png", dpi=90)
print(f"share of the tilt's information in the 1 % most informative blocks: "
      f"{np.sort(positive)[::-1][:max(1, positive.size // 100)].sum():.0%}; figure {out / 'sensitivity_tilt1.png'}")
